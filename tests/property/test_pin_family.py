"""A pin never substitutes: the winner is always one of the pinned name's variants."""

from hypothesis import given
from hypothesis import strategies as st

from oracle import NoEligibleBackend, Reason, explain, select
from oracle.selector import resolve_backend_name
from strategies import NonTrivial, any_requests, fitting_requests, pinned_names, spellings

# pinned_requests() are well formed (a known backend name, no activation conflict):
# explain() never raises on them and select() raises NoEligibleBackend at most.


@st.composite
def pinned_requests(draw):
    """(request, the name it pins): mostly the name of a row that fits the request."""
    request = draw(st.one_of(fitting_requests(), any_requests))
    name = request.moe_backend.strip().lower()
    if name == "auto" or draw(st.integers(0, 3)) == 0:
        name = draw(pinned_names)
    return request.with_(moe_backend=draw(spellings(name))), name


def test_pin_stays_in_its_family():
    won = NonTrivial("the pin had a winner, checked in family", 0.05)
    lost = NonTrivial("the pin raised NoEligibleBackend naming only its family", 0.25)

    @given(pinned_requests())
    def check(case):
        request, name = case
        allowed = resolve_backend_name(name)
        assert allowed and resolve_backend_name(request.moe_backend) == allowed
        try:
            sel = select(request)
        except NoEligibleBackend as err:
            assert [r.backend for r in err.rejected] == list(allowed)
            # a pin is never turned down for being opt-in (that is auto's gate only)
            assert all(isinstance(r.reason, Reason) for r in err.rejected)
            assert Reason.NOT_AUTO_SELECTABLE not in {r.reason for r in err.rejected}
            lost.add()
            return
        assert sel.backend in allowed
        assert set(sel.eligible) <= set(allowed)
        assert sel.selected_by == "pinned"
        assert Reason.NOT_AUTO_SELECTABLE not in {r.reason for r in sel.rejected}
        won.add()

    check()
    won.check()
    lost.check()


def test_explain_lists_exactly_the_pinned_variants():
    hits = NonTrivial("the pinned variants listed", 0.9)

    @given(pinned_requests())
    def check(case):
        request, name = case
        verdicts = explain(request)
        assert tuple(v.backend for v in verdicts) == resolve_backend_name(name)
        hits.add()

    check()
    hits.check()
