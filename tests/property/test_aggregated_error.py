"""NoEligibleBackend names every candidate exactly once, in candidate order."""

from collections import Counter

from hypothesis import given

from oracle import NoEligibleBackend, OracleError, explain, select
from oracle.matrix import MATRIX
from oracle.selector import resolve_backend_name
from strategies import requests


@given(requests())
def test_no_eligible_names_every_candidate_once(request):
    try:
        select(request)
    except NoEligibleBackend as err:
        names = [r.backend for r in err.rejected]
        pinned = resolve_backend_name(request.moe_backend)
        if pinned is None:
            expected = [r.name for r in MATRIX.auto_order(request.device.name)]
        else:
            expected = list(pinned)
        assert names == expected
        assert all(n == 1 for n in Counter(names).values())
        assert [v.backend for v in explain(request)] == names
        assert all(v.verdict == "rejected" for v in explain(request))
        message = str(err)
        assert message
        for name in names:
            assert name in message
        d = err.to_dict()
        assert d["error"] == "NoEligibleBackend"
        assert [r["backend"] for r in d["rejected"]] == names
    except OracleError:
        pass
