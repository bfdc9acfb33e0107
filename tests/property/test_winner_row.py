"""The winner is a row of the matrix that covers the device and takes the request's weight."""

from hypothesis import assume, given

from oracle import NoEligibleBackend, select
from oracle.matrix import MATRIX
from oracle.selector import resolve_backend_name
from strategies import NonTrivial, any_requests

# any_requests are well formed: select() raises NoEligibleBackend at most (no winner:
# not this clause's case, assumed away); any other error fails the property.


def _selection(request):
    try:
        return select(request)
    except NoEligibleBackend:
        assume(False)  # no winner to check


def test_winner_row_exists_and_fits():
    hits = NonTrivial("a winner checked against its row", 0.8)

    @given(any_requests)
    def check(request):
        sel = _selection(request)
        row = MATRIX.by_name[sel.backend]
        assert request.device.name in row.archs
        assert request.device.platform in row.platforms
        assert row.weight == request.weight
        assert sel.weight == request.weight
        # The kernel runs its own activation key, or the requested one it applies itself.
        assert sel.activation == row.activation or row.applies(sel.activation)
        assert sel.eligible[0] == sel.backend
        assert sel.backend not in {r.backend for r in sel.rejected}
        assert sel.request == request
        assert row.status_on(request.device.name).status != "known_bad"
        hits.add()

    check()
    hits.check()


def test_eligible_and_rejected_partition_the_candidates():
    hits = NonTrivial("a selection's candidates partitioned", 0.8)

    @given(any_requests)
    def check(request):
        sel = _selection(request)
        eligible = list(sel.eligible)
        rejected = [r.backend for r in sel.rejected]
        assert len(eligible) == len(set(eligible))
        assert not set(eligible) & set(rejected)
        if sel.selected_by == "auto":
            expected = {r.name for r in MATRIX.auto_order(request.device.name)}
        else:
            expected = set(resolve_backend_name(request.moe_backend))
        assert set(eligible) | set(rejected) == expected
        assert len(eligible) + len(rejected) == len(expected)
        for name in eligible:
            assert request.device.name in MATRIX.by_name[name].archs
        hits.add()

    check()
    hits.check()
