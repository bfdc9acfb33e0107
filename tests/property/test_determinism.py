"""Determinism: the same request gives the same answer, cached or recomputed."""

from hypothesis import given
from packaging.version import Version

from oracle import Environment, NoEligibleBackend
from strategies import FRESH_MATRIX, NonTrivial, any_requests, outcome, requests, verdicts

# outcome() catches only select()'s documented errors and verdicts() only explain()'s:
# anything else propagates and fails the property.  The counters make sure that a
# good share of the examples compared real answers (a Selection, or a NoEligibleBackend
# listing rejections; a verdict list), not just the same malformed-request error twice.


def _evaluated(result) -> bool:
    """A Selection, or a NoEligibleBackend with its rejections: the gates really ran."""
    return result[0] == "ok" or (result[1] is NoEligibleBackend and bool(result[2]))


def test_same_request_same_outcome():
    hits = NonTrivial("a selection compared", 0.1)

    @given(any_requests)
    def check(request):
        first = outcome(request)
        assert outcome(request) == first
        # a recomputation on an equal (uncached) matrix agrees with the cached answer
        assert outcome(request, FRESH_MATRIX) == first
        assert outcome(request, FRESH_MATRIX) == first
        if first[0] == "ok":
            hits.add()

    check()
    hits.check()


def test_same_request_same_error_or_selection():
    hits = NonTrivial("a selection or rejection list compared", 0.3)

    @given(requests(conflicts=True))
    def check(request):
        first = outcome(request, FRESH_MATRIX)
        assert outcome(request, FRESH_MATRIX) == first
        if _evaluated(first):
            hits.add()

    check()
    hits.check()


def test_explain_is_deterministic():
    hits = NonTrivial("a verdict list compared", 0.9)

    @given(any_requests)
    def check(request):
        first = verdicts(request)
        assert verdicts(request) == first
        assert verdicts(request, FRESH_MATRIX) == first
        if isinstance(first, tuple) and first:
            hits.add()

    check()
    hits.check()


def _respelled(version: Version) -> str:
    """Another spelling of an equal version: ``0.6.17rc1`` -> ``0.6.17.0rc1``."""
    text = str(version)
    head = (f"{version.epoch}!" if version.epoch else "") + ".".join(map(str, version.release))
    assert text.startswith(head), text
    return f"{head}.0{text[len(head):]}"


def _respell(env: Environment) -> Environment:
    return Environment({name: None if v is None else _respelled(v) for name, v in env.libraries},
                       all_present=env.all_present)


def test_equal_requests_rebuilt_agree():
    """Equal requests -- rebuilt, or with library versions spelled another way
    (``0.6.17`` / ``0.6.17.0``, equal under PEP 440) -- get the same answer, whichever
    of them the cache saw first."""
    hits = NonTrivial("a selection compared", 0.1)

    @given(any_requests)
    def check(request):
        rebuilt = request.with_()
        assert rebuilt == request and rebuilt is not request
        first = outcome(request)
        assert outcome(rebuilt, FRESH_MATRIX) == first
        respelled = request.with_(environment=_respell(request.environment))
        assert respelled == request and hash(respelled) == hash(request)
        assert outcome(respelled, FRESH_MATRIX) == first
        assert outcome(respelled) == first
        if first[0] == "ok":
            assert outcome(respelled)[1].fingerprint == first[1].fingerprint
            hits.add()

    check()
    hits.check()
