"""A set activation (override or checkpoint) is honoured; BF16 only by explicit fallback."""

from hypothesis import assume, given

from oracle import BF16, NoEligibleBackend, select
from oracle.selector import resolve_activation
from strategies import NonTrivial, any_requests

# any_requests are well formed (no activation conflict, known backend names): select()
# raises NoEligibleBackend at most, and that case has no winner to check (assume);
# any other error fails the property.


def _selection(request):
    try:
        return select(request)
    except NoEligibleBackend:
        assume(False)  # nothing eligible: no winner whose activation could be checked


def test_set_activation_is_honoured():
    strict_hits = NonTrivial("a set activation checked against the winner", 0.1)
    free_hits = NonTrivial("no activation set, winner's fallback flag checked", 0.2)

    @given(any_requests)
    def check(request):
        sel = _selection(request)
        strict, wanted = resolve_activation(request)
        if not strict:
            # nothing asked: BF16 preferred, a quantized winner only as a reported fallback
            assert (sel.activation is not None) == sel.activation_fallback
            if sel.activation_fallback:
                assert sel.notes
            free_hits.add()
            return
        if sel.activation == wanted:
            assert not sel.activation_fallback
        else:
            # the only way around a set activation: explicit opt-in, BF16, reported
            assert request.allow_activation_fallback
            assert sel.activation_fallback
            assert sel.activation is None
            assert wanted is not None
            assert sel.notes
        strict_hits.add()

    check()
    strict_hits.check()
    free_hits.check()


def test_override_wins_over_nothing_in_the_checkpoint():
    hits = NonTrivial("an override with nothing in the checkpoint", 0.8)

    @given(any_requests)
    def check(request):
        assume(request.activation is not None)  # no override: nothing to win
        request = request.with_(checkpoint_activation=None)
        strict, wanted = resolve_activation(request)
        assert strict
        assert wanted == (None if request.activation is BF16 else request.activation)
        hits.add()

    check()
    hits.check()


def test_bf16_marker_never_falls_back():
    hits = NonTrivial("a BF16 request with a winner", 0.8)

    @given(any_requests)
    def check(request):
        sel = _selection(request.with_(activation=BF16, checkpoint_activation=None))
        assert sel.activation is None
        assert not sel.activation_fallback
        hits.add()

    check()
    hits.check()
