"""NoEligibleBackend names every candidate exactly once, in candidate order."""

from collections import Counter

from hypothesis import assume, given

from oracle import NoEligibleBackend, Reason, explain, select
from oracle.matrix import MATRIX
from oracle.selector import resolve_backend_name
from strategies import NonTrivial, requests


def test_no_eligible_names_every_candidate_once():
    hits = NonTrivial("select raised NoEligibleBackend", 0.8)

    @given(requests())
    def check(request):
        # requests() are well formed (known backend names, no activation conflict):
        # NoEligibleBackend is the only error select may raise, anything else fails.
        try:
            select(request)
        except NoEligibleBackend as err:
            exc = err
        else:
            assume(False)  # a selection: not the case this clause is about
        names = [r.backend for r in exc.rejected]
        pinned = resolve_backend_name(request.moe_backend)
        if pinned is None:
            expected = [r.name for r in MATRIX.auto_order(request.device.name)]
        else:
            expected = list(pinned)
        assert names == expected
        assert all(n == 1 for n in Counter(names).values())
        assert all(isinstance(r.reason, Reason) for r in exc.rejected)
        verdicts = explain(request)
        assert [v.backend for v in verdicts] == names
        assert all(v.verdict == "rejected" for v in verdicts)
        assert [(v.backend, v.reason) for v in verdicts] == \
            [(r.backend, r.reason) for r in exc.rejected]
        message = str(exc)
        assert message
        for name in names:
            assert name in message
        d = exc.to_dict()
        assert d["error"] == "NoEligibleBackend"
        assert [r["backend"] for r in d["rejected"]] == names
        assert [r["reason"] for r in d["rejected"]] == [r.reason.value for r in exc.rejected]
        hits.add()

    check()
    hits.check()
