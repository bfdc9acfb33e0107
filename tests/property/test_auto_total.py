"""auto never fails while some candidate is eligible; explain and select agree."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracle import Device, Environment, NoEligibleBackend, SelectionRequest, explain, select
from oracle.keys import kMxfp4Static
from oracle.matrix import ARCHS_IN_SCOPE
from strategies import NonTrivial, any_requests, requests

# Both strategies give well-formed requests (known backend names, no activation
# conflict): explain() must not raise on them, and select() only NoEligibleBackend.


def test_auto_succeeds_iff_explain_has_an_eligible_candidate():
    selected_hits = NonTrivial("auto selected and explain agreed", 0.1)
    failed_hits = NonTrivial("auto raised NoEligibleBackend and explain had none", 0.15)

    @given(st.one_of(any_requests.map(lambda r: r.with_(moe_backend="auto")),
                     requests(moe_backend=st.just("auto"))))
    def check(request):
        verdicts = explain(request)
        usable = [v for v in verdicts if v.verdict != "rejected"]
        try:
            sel = select(request)
        except NoEligibleBackend as exc:
            assert not usable, [v.backend for v in usable]
            assert [(r.backend, r.reason) for r in exc.rejected] == \
                [(v.backend, v.reason) for v in verdicts]
            failed_hits.add()
            return
        assert usable
        selected = [v for v in verdicts if v.verdict == "selected"]
        assert len(selected) == 1
        assert selected[0].backend == sel.backend
        assert sel.selected_by == "auto"
        selected_hits.add()

    check()
    selected_hits.check()
    failed_hits.check()


def test_exactly_one_selected_whenever_something_is_eligible():
    hits = NonTrivial("some candidate usable", 0.15)

    @given(any_requests)
    def check(request):
        verdicts = explain(request)
        kinds = [v.verdict for v in verdicts]
        assert set(kinds) <= {"selected", "eligible", "rejected"}
        for v in verdicts:
            assert (v.reason is None) == (v.verdict != "rejected")
        if "eligible" in kinds or "selected" in kinds:
            assert kinds.count("selected") == 1
            hits.add()
        else:
            assert kinds.count("selected") == 0

    check()
    hits.check()


@pytest.mark.parametrize("arch", ARCHS_IN_SCOPE)
def test_auto_is_total_on_in_scope_archs(arch):
    sel = select(SelectionRequest(weight=kMxfp4Static, device=Device.parse(arch),
                                  environment=Environment.assume_all()))
    assert sel.selected_by == "auto"
