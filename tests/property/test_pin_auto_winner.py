"""Pinning the auto winner by its member name returns the same winner."""

from hypothesis import given
from hypothesis import strategies as st

from oracle import OracleError, select
from strategies import any_requests


@given(any_requests.map(lambda r: r.with_(moe_backend="auto")), st.data())
def test_pinning_the_auto_winner_keeps_it(request, data):
    try:
        auto = select(request)
    except OracleError:
        return
    name = auto.backend
    spelling = data.draw(st.sampled_from((name, name.lower(), name.lower().replace("_", "-"))))
    pinned = select(request.with_(moe_backend=spelling))
    assert pinned.backend == auto.backend
    assert pinned.activation == auto.activation
    assert pinned.activation_fallback == auto.activation_fallback
    assert pinned.selected_by == "pinned"
