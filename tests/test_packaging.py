"""The distribution: one import namespace, a wheel that works from outside the repo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: What a loader needs at model init: the packages, the matrix TOML and the model JSONs.
WHEEL_PACKAGES = {"oracle": "oracle", "oracle/models": "oracle/models", "oracle/matrix": "matrix",
                  "oracle/kernels": "kernels", "oracle/kernels/jit": "kernels/jit"}
#: Data-only folders inside a package (package data, no modules).
WHEEL_DATA = {"oracle/matrix/profiles": "matrix/profiles"}
WHEEL_SUFFIXES = {".py", ".toml", ".json"}


def check_wheel_contents(names: list[str]) -> None:
    """The wheel holds the product modules only: no device job, no tools/, tests, docs or benchmarks."""
    payload = [n for n in names if not n.split("/")[0].endswith(".dist-info") and not n.endswith("/")]
    assert not [n for n in names if "device_check" in n]
    assert not [n for n in names if "tools/" in n or n.startswith(("tests/", "benchmarks/", "docs/"))]
    for n in payload:
        path = PurePosixPath(n)
        assert str(path.parent) in WHEEL_PACKAGES or (
            str(path.parent) in WHEEL_DATA and path.suffix == ".toml"), n
        assert path.suffix in WHEEL_SUFFIXES, n
    # every shipped module is one of the repo's package modules (and all of them are shipped)
    shipped = {n for n in payload if n.endswith(".py")}
    expected = {f"{pkg}/{f.name}" for pkg, src in WHEEL_PACKAGES.items() for f in (ROOT / src).glob("*.py")}
    assert shipped == expected
    assert "oracle/matrix/mxfp4_moe.toml" in payload


def test_import_oracle_pulls_in_neither_torch_nor_flashinfer():
    code = ("import sys, oracle; oracle.select; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'flashinfer', 'kernels', 'matrix') or m == 'oracle.probe')))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], check=True,
                         capture_output=True, text=True, cwd="/").stdout
    assert json.loads(out) == []


def test_packages_list_names_no_tool_package():
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(p.replace(".", "/") for p in packages) == sorted(WHEEL_PACKAGES)
    assert not (ROOT / "kernels" / "tools").exists() and (ROOT / "tools" / "device_check.py").is_file()


def test_wheel_content_check_rejects_lab_files():
    good = sorted(f"{pkg}/{f.name}" for pkg, src in WHEEL_PACKAGES.items() for f in (ROOT / src).glob("*.py"))
    good += ["oracle/matrix/mxfp4_moe.toml", "oracle/matrix/vllm.toml",
             "oracle/matrix/profiles/h200-sm90.toml", "mxfp4_oracle-0.1.0.dist-info/RECORD"]
    check_wheel_contents(good)
    for extra in ("oracle/kernels/tools/device_check.py", "tools/jit_research.py", "oracle/kernels/notes.md",
                  "oracle/matrix/profiles/helper.py",
                  "benchmarks/kernel_bench.py", "oracle/kernels/jit/probe.py"):
        with pytest.raises(AssertionError):
            check_wheel_contents(good + [extra])


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
    with zipfile.ZipFile(wheels[0]) as zf:
        check_wheel_contents(zf.namelist())
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
    # The exact command: sm90 is not this (CPU) machine, so the answer is for a deployment
    # with every kernel library -- vLLM's sm90 answer, TRITON -- and stderr says so.
    res = subprocess.run([cli, "select", "--device", "sm90", "--json"], cwd=outside,
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["backend"] == "TRITON"
    assert "--libraries" in res.stderr
    # The fresh venv itself holds no kernel library (not even torch): described as it
    # is, the honest answer is the aggregated error, as contract JSON with exit status 2.
    res = subprocess.run([cli, "select", "--device", "sm90", "--libraries", "none", "--json"],
                         cwd=outside, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    err = json.loads(res.stdout)
    assert err["error"] == "NoEligibleBackend"
    assert {r["reason"] for r in err["rejected"]} >= {"library_missing"}
    # The wheel must not install top-level `kernels` or `matrix` packages.
    listing = subprocess.run([str(py), "-c", "import importlib.util as u; "
                              "print(u.find_spec('kernels'), u.find_spec('matrix'))"],
                             cwd=outside, capture_output=True, text=True, env=env).stdout
    assert listing.split() == ["None", "None"]
