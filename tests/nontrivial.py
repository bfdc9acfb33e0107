"""A floor on the examples that reached a property's real assertion (shared by
tests/property and tests/fuzz): a strategy that silently stops reaching the path
fails instead of passing."""

from __future__ import annotations

from hypothesis import settings

__all__ = ["NonTrivial"]


class NonTrivial:
    """Counts the examples of one property where its real assertion ran.

    A property that ``assume()``s away (or otherwise skips) the cases it is not about
    could pass having checked nothing.  Each test builds its own counter, runs its
    ``@given`` inner function once and then calls :meth:`check`, so the count covers
    exactly that run (no state shared between tests, no reliance on test order)::

        def test_something():
            hits = NonTrivial("winner checked", 0.5)

            @given(any_requests)
            def check(request):
                ...              # assume() / assertions
                hits.add()       # only on the path where the property was asserted

            check()
            hits.check()

    ``fraction`` is of the active profile's ``max_examples`` (100 under ``dev``,
    10 000 under ``ci``): the floor scales with the profile.
    """

    def __init__(self, what: str, fraction: float) -> None:
        assert 0 < fraction <= 1
        self.what = what
        self.fraction = fraction
        self.count = 0

    @property
    def minimum(self) -> int:
        return max(1, int(settings().max_examples * self.fraction))

    def add(self) -> None:
        self.count += 1

    def check(self) -> None:
        assert self.count >= self.minimum, (
            f"only {self.count} non-trivial examples ({self.what}); need at least "
            f"{self.minimum} = {self.fraction:.0%} of max_examples={settings().max_examples}")
