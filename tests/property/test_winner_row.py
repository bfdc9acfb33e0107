"""The winner is a row of the matrix that covers the device and takes the request's weight."""

from hypothesis import given

from oracle import OracleError, select
from oracle.matrix import MATRIX
from strategies import any_requests


@given(any_requests)
def test_winner_row_exists_and_fits(request):
    try:
        sel = select(request)
    except OracleError:
        return
    row = MATRIX.by_name[sel.backend]
    assert request.device.name in row.archs
    assert request.device.platform in row.platforms
    assert row.weight == request.weight
    assert sel.weight == request.weight
    assert sel.activation == row.activation
    assert sel.eligible[0] == sel.backend
    assert sel.backend not in {r.backend for r in sel.rejected}
    assert sel.request == request
    assert row.status_on(request.device.name).status != "known_bad"


@given(any_requests)
def test_eligible_and_rejected_partition_the_candidates(request):
    try:
        sel = select(request)
    except OracleError:
        return
    eligible = list(sel.eligible)
    rejected = [r.backend for r in sel.rejected]
    assert len(eligible) == len(set(eligible))
    assert not set(eligible) & set(rejected)
    if sel.selected_by == "auto":
        expected = {r.name for r in MATRIX.auto_order(request.device.name)}
    else:
        from oracle.selector import resolve_backend_name
        expected = set(resolve_backend_name(request.moe_backend))
    assert set(eligible) | set(rejected) == expected
    assert len(eligible) + len(rejected) == len(expected)
    for name in eligible:
        assert request.device.name in MATRIX.by_name[name].archs
