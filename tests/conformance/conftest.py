"""Session fixtures for the vLLM conformance suite (see README.md here).

``vllm_table`` runs vLLM's own MXFP4 MoE selection (every version in
``vllm_harness.VERSIONS``) on the whole ``vllm_harness.grid()`` once per pytest
session and hands out the :class:`vllm_harness.AnswerTable`.

Fetching vLLM's sources or its pinned dependencies can fail for want of a
network: locally that skips the suite with the reason; in CI (``CI`` set) it is a
test failure, never a silent skip.  ``MXFP4_ORACLE_SKIP_CONFORMANCE=1`` skips the
suite on purpose, outside CI only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vllm_harness


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


def _unavailable(reason: str):
    if _in_ci():
        pytest.fail(f"vLLM conformance harness unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"vLLM conformance harness unavailable (no network?): {reason}")


@pytest.fixture(scope="session")
def vllm_table() -> vllm_harness.AnswerTable:
    """vLLM's answers for the full conformance grid, every pinned version."""
    if os.environ.get("MXFP4_ORACLE_SKIP_CONFORMANCE") == "1" and not _in_ci():
        pytest.skip("MXFP4_ORACLE_SKIP_CONFORMANCE=1")
    try:
        for v in vllm_harness.VERSIONS:
            vllm_harness.ensure_vllm_sources(v)
            vllm_harness.ensure_deps(v)
        return vllm_harness.answer_table()
    except vllm_harness.HarnessUnavailable as e:
        _unavailable(str(e))


@pytest.fixture(scope="session")
def vllm_class_probe() -> dict[str, dict]:
    """Per version and arch: every variant's experts classes asked directly."""
    if os.environ.get("MXFP4_ORACLE_SKIP_CONFORMANCE") == "1" and not _in_ci():
        pytest.skip("MXFP4_ORACLE_SKIP_CONFORMANCE=1")
    try:
        return {v: vllm_harness.class_probe(v) for v in vllm_harness.VERSIONS}
    except vllm_harness.HarnessUnavailable as e:
        _unavailable(str(e))


#: Lines the suite prints at the end of the run (its agreement table).
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if REPORT:
        terminalreporter.section("vLLM conformance")
        for line in REPORT:
            terminalreporter.write_line(line)
