"""Shared fixtures of the kernel tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load_tool(name: str):
    """A script under the top-level tools/ folder (lab tooling, not in the package), by path."""
    if str(TOOLS) not in sys.path:  # tools import their siblings (jit_research) by name
        sys.path.insert(0, str(TOOLS))
    spec = importlib.util.spec_from_file_location(f"oracle_tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def device_check():
    """tools/device_check.py, the GPU-machine job (its report and debug aids run anywhere)."""
    return load_tool("device_check")
