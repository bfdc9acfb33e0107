"""Fixtures of the hostile-input fuzz suites (Hypothesis profiles live in tests/conftest.py)."""

from __future__ import annotations

import shutil

import pytest

from _hostile import fast_tmp


@pytest.fixture
def scratch(tmp_path):
    """A scratch folder, in memory where possible (see _hostile.fast_tmp), removed after."""
    folder = fast_tmp(tmp_path)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def module_scratch(tmp_path_factory):
    folder = fast_tmp(tmp_path_factory.mktemp("scratch"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def hermetic_probe(monkeypatch):
    """``main`` probes the machine when --device / --libraries are absent: answer fast and
    fixed (a CPU machine with every library), as tests/fuzz/test_fuzz_cli.py does."""
    import oracle.probe as probe
    from oracle import Device, Environment

    monkeypatch.setattr(probe, "detect_device", lambda *a, **k: Device("cpu", "cpu"))
    monkeypatch.setattr(probe, "detect_environment", lambda: Environment.assume_all())


@pytest.fixture
def memo_render(monkeypatch):
    """``render_support_matrix`` memoised for the test: a pure function of the matrix that
    costs ~13 ms, where the path handling under test costs ~0.1 ms.  Returns the page."""
    import oracle.docs as docs

    real = docs.render_support_matrix
    cache: dict[int, str] = {}

    def render(matrix=docs.MATRIX):
        key = id(matrix)
        if key not in cache:
            cache[key] = real(matrix)
        return cache[key]

    monkeypatch.setattr(docs, "render_support_matrix", render)
    return render()
