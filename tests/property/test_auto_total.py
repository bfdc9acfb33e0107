"""auto never fails while some candidate is eligible; explain and select agree."""

from hypothesis import given
from hypothesis import strategies as st

from oracle import Environment, NoEligibleBackend, OracleError, SelectionRequest, explain, select
from oracle.keys import kMxfp4Static
from oracle.matrix import ARCHS_IN_SCOPE
from oracle.request import Device
from strategies import any_requests, requests


@given(st.one_of(any_requests.map(lambda r: r.with_(moe_backend="auto")),
                 requests(moe_backend=st.just("auto"))))
def test_auto_succeeds_iff_explain_has_an_eligible_candidate(request):
    try:
        verdicts = explain(request)
    except OracleError:
        return  # malformed request: nothing to cross-check
    usable = [v for v in verdicts if v.verdict != "rejected"]
    try:
        sel = select(request)
    except NoEligibleBackend:
        assert not usable, [v.backend for v in usable]
        return
    assert usable
    selected = [v for v in verdicts if v.verdict == "selected"]
    assert len(selected) == 1
    assert selected[0].backend == sel.backend
    assert sel.selected_by == "auto"


@given(any_requests)
def test_exactly_one_selected_whenever_something_is_eligible(request):
    try:
        verdicts = explain(request)
    except OracleError:
        return
    kinds = [v.verdict for v in verdicts]
    assert set(kinds) <= {"selected", "eligible", "rejected"}
    if "eligible" in kinds or "selected" in kinds:
        assert kinds.count("selected") == 1
    for v in verdicts:
        assert (v.reason is None) == (v.verdict != "rejected")


@given(st.sampled_from(ARCHS_IN_SCOPE))
def test_auto_is_total_on_in_scope_archs(arch):
    sel = select(SelectionRequest(weight=kMxfp4Static, device=Device.parse(arch),
                                  environment=Environment.assume_all()))
    assert sel.selected_by == "auto"
