"""Shared pytest setup: Hypothesis profiles.

* ``dev`` (default): 100 examples per test, no deadline — fast local runs.
* ``ci``: 10 000 examples per test, derandomized (reproducible), no deadline; the CI
  script sets ``HYPOTHESIS_PROFILE=ci`` for the fuzz suite (tests/fuzz) only.

Select with the environment variable ``HYPOTHESIS_PROFILE`` (``dev`` | ``ci``).
Markers (``gpu``, ``slow``) are registered in pyproject.toml.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=10_000,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
