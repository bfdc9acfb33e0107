"""A set activation (override or checkpoint) is honoured; BF16 only by explicit fallback."""

from hypothesis import given

from oracle import BF16, OracleError, select
from oracle.selector import resolve_activation
from strategies import any_requests


@given(any_requests)
def test_set_activation_is_honoured(request):
    try:
        sel = select(request)
    except OracleError:
        return
    strict, wanted = resolve_activation(request)
    if not strict:
        # nothing asked: BF16 preferred, a quantized winner only as a reported fallback
        assert (sel.activation is not None) == sel.activation_fallback
        if sel.activation_fallback:
            assert sel.notes
        return
    if sel.activation == wanted:
        assert not sel.activation_fallback
        return
    # the only way around a set activation: explicit opt-in, BF16, reported
    assert request.allow_activation_fallback
    assert sel.activation_fallback
    assert sel.activation is None
    assert wanted is not None
    assert sel.notes


@given(any_requests)
def test_override_wins_over_nothing_in_the_checkpoint(request):
    if request.activation is None or request.checkpoint_activation is not None:
        return
    strict, wanted = resolve_activation(request)
    assert strict
    assert wanted == (None if request.activation is BF16 else request.activation)


@given(any_requests)
def test_bf16_marker_never_falls_back(request):
    request = request.with_(activation=BF16, checkpoint_activation=None)
    try:
        sel = select(request)
    except OracleError:
        return
    assert sel.activation is None
    assert not sel.activation_fallback
