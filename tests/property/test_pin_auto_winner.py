"""Pinning the auto winner by its member name returns the same winner."""

from hypothesis import assume, given
from hypothesis import strategies as st

from oracle import NoEligibleBackend, select
from strategies import NonTrivial, any_requests


def test_pinning_the_auto_winner_keeps_it():
    hits = NonTrivial("auto had a winner and it was pinned", 0.8)

    @given(any_requests.map(lambda r: r.with_(moe_backend="auto")), st.data())
    def check(request, data):
        # well-formed requests: NoEligibleBackend is the only error auto may raise
        try:
            auto = select(request)
        except NoEligibleBackend:
            assume(False)  # no auto winner to pin
        name = auto.backend
        spelling = data.draw(st.sampled_from((name, name.lower(),
                                              name.lower().replace("_", "-"))))
        pinned = select(request.with_(moe_backend=spelling))  # must not raise
        assert pinned.backend == auto.backend
        assert pinned.activation == auto.activation
        assert pinned.activation_fallback == auto.activation_fallback
        assert pinned.selected_by == "pinned"
        hits.add()

    check()
    hits.check()
