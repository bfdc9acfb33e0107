"""The distribution: one import namespace, a wheel that works from outside the repo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_oracle_pulls_in_neither_torch_nor_flashinfer():
    code = ("import sys, oracle; oracle.select; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'flashinfer', 'kernels', 'matrix') or m == 'oracle.probe')))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], check=True,
                         capture_output=True, text=True, cwd="/").stdout
    assert json.loads(out) == []


def test_subpackages_are_served_under_oracle():
    import oracle.kernels
    import oracle.matrix
    assert Path(oracle.matrix.__file__).parent.name == "matrix"
    assert Path(oracle.kernels.__file__).parent.name == "kernels"


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_outside_the_repo(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    wheels = list(dist.glob("mxfp4_oracle-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheels[0])], check=True,
                   capture_output=True, timeout=600)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}:{env['PATH']}"
    cli = str(env_dir / "bin" / "mxfp4-oracle")
    # The exact command: the fresh venv holds no kernel library (not even torch), so the
    # honest answer is the aggregated error, as contract JSON with exit status 2.
    res = subprocess.run([cli, "select", "--device", "sm90", "--json"], cwd=outside,
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    err = json.loads(res.stdout)
    assert err["error"] == "NoEligibleBackend"
    assert {r["reason"] for r in err["rejected"]} >= {"library_missing"}
    # With every library assumed present, the answer for sm90 is vLLM's: TRITON.
    res = subprocess.run([cli, "select", "--device", "sm90", "--libraries", "all", "--json"],
                         cwd=outside, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["backend"] == "TRITON"
    # The wheel must not install top-level `kernels` or `matrix` packages.
    listing = subprocess.run([str(py), "-c", "import importlib.util as u; "
                              "print(u.find_spec('kernels'), u.find_spec('matrix'))"],
                             cwd=outside, capture_output=True, text=True, env=env).stdout
    assert listing.split() == ["None", "None"]
