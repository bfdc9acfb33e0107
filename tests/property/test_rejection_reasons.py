"""Every rejection carries a Reason from the closed enum and a non-empty detail."""

from hypothesis import given

from oracle import NoEligibleBackend, OracleError, Reason, explain, select
from strategies import any_requests

DESIGN_REASONS = {
    "arch_unsupported", "platform_unsupported", "weight_mismatch", "activation_mismatch",
    "library_missing", "library_version", "shape_unaligned", "activation_fn_unsupported",
    "parallelism_unsupported", "known_bad", "not_auto_selectable",
}


def test_reason_enum_is_the_closed_design_set():
    assert {r.value for r in Reason} == DESIGN_REASONS


def _check(rejections):
    for r in rejections:
        assert isinstance(r.reason, Reason)
        assert r.reason in set(Reason)
        assert isinstance(r.detail, str) and r.detail.strip()
        assert isinstance(r.backend, str) and r.backend
        d = r.to_dict()
        assert d["reason"] in DESIGN_REASONS
        assert d["detail"] == r.detail


@given(any_requests)
def test_rejections_are_coded(request):
    try:
        sel = select(request)
    except NoEligibleBackend as err:
        _check(err.rejected)
        return
    except OracleError:
        return
    _check(sel.rejected)


@given(any_requests)
def test_explain_rejections_are_coded(request):
    try:
        verdicts = explain(request)
    except OracleError:
        return
    for v in verdicts:
        if v.verdict == "rejected":
            assert isinstance(v.reason, Reason)
            assert v.detail.strip()
            assert v.to_dict()["reason"] in DESIGN_REASONS
        else:
            assert v.reason is None
