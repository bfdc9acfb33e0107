"""Determinism: the same request gives the same answer, cached or recomputed."""

from hypothesis import given

from strategies import FRESH_MATRIX, any_requests, outcome, requests, verdicts


@given(any_requests)
def test_same_request_same_outcome(request):
    first = outcome(request)
    assert outcome(request) == first
    # a recomputation on an equal (uncached) matrix agrees with the cached answer
    assert outcome(request, FRESH_MATRIX) == first
    assert outcome(request, FRESH_MATRIX) == first


@given(requests(conflicts=True))
def test_same_request_same_error_or_selection(request):
    assert outcome(request, FRESH_MATRIX) == outcome(request, FRESH_MATRIX)


@given(any_requests)
def test_explain_is_deterministic(request):
    first = verdicts(request)
    assert verdicts(request) == first
    assert verdicts(request, FRESH_MATRIX) == first


@given(any_requests)
def test_equal_requests_rebuilt_agree(request):
    rebuilt = request.with_()
    assert rebuilt == request and rebuilt is not request
    assert outcome(rebuilt, FRESH_MATRIX) == outcome(request)
