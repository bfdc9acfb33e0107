"""Every rejection carries a Reason from the closed enum and a non-empty detail."""

from hypothesis import given

from oracle import NoEligibleBackend, Reason, explain, select
from strategies import NonTrivial, any_requests

DESIGN_REASONS = {
    "arch_unsupported", "platform_unsupported", "weight_mismatch", "activation_mismatch",
    "library_missing", "library_version", "shape_unaligned", "activation_fn_unsupported",
    "parallelism_unsupported", "known_bad", "not_auto_selectable",
    # Not in the design card's list: a kernel that cannot apply expert biases is a
    # reason of its own (CUTLASS_MXFP4_MXFP4 implements SwiGLU-OAI but drops biases).
    "bias_unsupported",
    # Deployment axes: an experts class that refuses the layer's routing method, or
    # LoRA (vLLM's modular_kernel.py:612-615, 631-632).
    "routing_unsupported", "lora_unsupported",
}

# any_requests are well formed: explain() never raises on them, select() raises
# NoEligibleBackend at most (its rejections are checked too); any other error fails.


def test_reason_enum_is_the_closed_design_set():
    assert {r.value for r in Reason} == DESIGN_REASONS


def _check(rejections) -> int:
    """Checks every rejection; returns how many there were."""
    for r in rejections:
        assert isinstance(r.reason, Reason)
        assert r.reason in set(Reason)
        assert isinstance(r.detail, str) and r.detail.strip()
        assert isinstance(r.backend, str) and r.backend
        d = r.to_dict()
        assert d["reason"] in DESIGN_REASONS
        assert d["detail"] == r.detail
    return len(rejections)


def test_rejections_are_coded():
    hits = NonTrivial("rejections checked", 0.4)

    @given(any_requests)
    def check(request):
        try:
            sel = select(request)
        except NoEligibleBackend as err:
            assert err.rejected  # nothing eligible: at least one candidate turned down
            checked = _check(err.rejected)
        else:
            checked = _check(sel.rejected)
        if checked:
            hits.add()

    check()
    hits.check()


def test_explain_rejections_are_coded():
    hits = NonTrivial("rejected verdicts checked", 0.4)

    @given(any_requests)
    def check(request):
        rejected = 0
        for v in explain(request):
            if v.verdict == "rejected":
                assert isinstance(v.reason, Reason)
                assert v.detail.strip()
                assert v.to_dict()["reason"] in DESIGN_REASONS
                rejected += 1
            else:
                assert v.reason is None
        if rejected:
            hits.add()

    check()
    hits.check()
