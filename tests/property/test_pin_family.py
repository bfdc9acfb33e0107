"""A pin never substitutes: the winner is always one of the pinned name's variants."""

from hypothesis import given
from hypothesis import strategies as st

from oracle import NoEligibleBackend, OracleError, explain, select
from oracle.selector import resolve_backend_name
from strategies import any_requests, fitting_requests, pinned_names, spellings


@st.composite
def pinned_requests(draw):
    """(request, the name it pins): mostly the name of a row that fits the request."""
    request = draw(st.one_of(fitting_requests(), any_requests))
    name = request.moe_backend.strip().lower()
    if name == "auto" or draw(st.integers(0, 3)) == 0:
        name = draw(pinned_names)
    return request.with_(moe_backend=draw(spellings(name))), name


@given(pinned_requests())
def test_pin_stays_in_its_family(case):
    request, name = case
    allowed = resolve_backend_name(name)
    assert allowed and resolve_backend_name(request.moe_backend) == allowed
    try:
        sel = select(request)
    except NoEligibleBackend as err:
        assert [r.backend for r in err.rejected] == list(allowed)
        return
    except OracleError:
        return
    assert sel.backend in allowed
    assert set(sel.eligible) <= set(allowed)
    assert sel.selected_by == "pinned"


@given(pinned_requests())
def test_explain_lists_exactly_the_pinned_variants(case):
    request, name = case
    try:
        verdicts = explain(request)
    except OracleError:
        return
    assert tuple(v.backend for v in verdicts) == resolve_backend_name(name)
