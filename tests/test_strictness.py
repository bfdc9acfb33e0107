"""Strictness: nothing but the request decides, and nothing degrades silently.

* A poisoned process environment (VLLM_*, FLASHINFER_*, CUDA_VISIBLE_DEVICES junk)
  changes no decision: the same sweep of requests gives byte-identical answers in a
  clean and in a poisoned subprocess (import-time effects included), also via the CLI.
* An explicit backend is a pin: its winner is always one of the family's variants
  (over every name and every arch in scope), or NoEligibleBackend — never a substitute.
* With an activation override (or a checkpoint-declared activation) the winner has
  exactly that activation, unless allow_activation_fallback=True, and then the
  fallback is in the report (activation_fallback=True plus a note).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest

from oracle import (BF16, Device, Environment, NoEligibleBackend, SelectionRequest, explain,
                    select)
from oracle.keys import canonical_name
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX
from oracle.keys import UNSET
from oracle.selector import resolve_backend_name

PINS = [n for n in MATRIX.backend_names() if n != "auto"]
DEVICES = [Device.parse(a) for a in ARCHS_IN_SCOPE]
#: Every activation a row takes, plus the strict BF16 marker and "no override".
ACTIVATIONS = [UNSET, BF16, *dict.fromkeys(r.activation for r in MATRIX.rows
                                           if r.activation is not None)]
ENVIRONMENTS = [Environment.assume_all(), Environment.parse("flashinfer,torch"),
                Environment.parse("flashinfer=0.6.0,vllm_ops,triton_kernels,torch")]

POISON = {
    "VLLM_MXFP4_USE_MARLIN": "1",
    "VLLM_USE_FLASHINFER_MOE_MXFP4_BF16": "1",
    "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8": "1",
    "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8_CUTLASS": "1",
    "VLLM_MOE_BACKEND": "marlin",
    "VLLM_USE_TRITON_KERNELS": "0",
    "VLLM_ROCM_USE_AITER": "1",
    "VLLM_TARGET_DEVICE": "rocm",
    "FLASHINFER_MOE_BACKEND": "trtllm",
    "FLASHINFER_CUDA_ARCH_LIST": "9.0a 12.0f",
    "FLASHINFER_DISABLE_VERSION_CHECK": "1",
    "FLASHINFER_JIT_VERBOSE": "junk",
    "CUDA_VISIBLE_DEVICES": "junk,-1,GPU-xyz",
    "HIP_VISIBLE_DEVICES": "7",
    "TORCH_CUDA_ARCH_LIST": "8.0;9.0a",
    "MXFP4_ORACLE_BACKEND": "emulation",
}

_SWEEP = r"""
import json, sys
from oracle import Device, Environment, OracleError, SelectionRequest, select
from oracle.keys import BF16
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX
from oracle.keys import UNSET
acts = [UNSET, BF16, *dict.fromkeys(r.activation for r in MATRIX.rows if r.activation is not None)]
out = {}
for arch in ARCHS_IN_SCOPE:
    for name in MATRIX.backend_names():
        for i, act in enumerate(acts):
            for allow in (False, True):
                req = SelectionRequest(device=Device.parse(arch), moe_backend=name, activation=act,
                                       environment=Environment.assume_all(),
                                       allow_activation_fallback=allow)
                try:
                    s = select(req)
                    out[f"{arch}|{name}|{i}|{allow}"] = [s.backend, s.fingerprint, list(s.notes)]
                except OracleError as e:
                    out[f"{arch}|{name}|{i}|{allow}"] = [type(e).__name__, str(e)]
json.dump(out, sys.stdout, sort_keys=True)
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("VLLM_", "FLASHINFER_", "MXFP4_ORACLE_"))
            and k not in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "TORCH_CUDA_ARCH_LIST")}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_poisoned_environment_changes_no_decision():
    clean = _run(["-c", _SWEEP], _clean_env())
    poisoned = _run(["-c", _SWEEP], {**_clean_env(), **POISON})
    assert clean.returncode == 0, clean.stderr
    assert poisoned.returncode == 0, poisoned.stderr
    a, b = json.loads(clean.stdout), json.loads(poisoned.stdout)
    assert len(a) == len(ARCHS_IN_SCOPE) * len(MATRIX.backend_names()) * len(ACTIVATIONS) * 2
    diff = [k for k in a if a[k] != b.get(k)]
    assert not diff, f"{len(diff)} decisions changed, e.g. {diff[0]}: {a[diff[0]]} -> {b[diff[0]]}"


@pytest.mark.parametrize("argv", [
    ["select", "--device", "sm100", "--libraries", "all", "--json"],
    ["select", "--device", "sm90", "--libraries", "flashinfer,torch", "--json"],
    ["select", "--device", "sm120", "--moe-backend", "flashinfer_trtllm", "--libraries", "all",
     "--json"],
    ["explain", "--device", "sm100", "--libraries", "all", "--quantization-config.moe.activation",
     "mxfp8", "--json"],
])
def test_poisoned_environment_changes_no_cli_answer(argv):
    code = ["-c", "import sys; from oracle.cli import main; sys.exit(main(sys.argv[1:]))", *argv]
    clean = _run(code, _clean_env())
    poisoned = _run(code, {**_clean_env(), **POISON})
    assert clean.returncode in (0, 2), clean.stderr
    assert (poisoned.returncode, poisoned.stdout) == (clean.returncode, clean.stdout)


def test_poisoned_environment_probe_still_cpu(monkeypatch):
    from oracle.probe import detect_device, detect_environment
    clean = detect_environment()
    for k, v in POISON.items():
        monkeypatch.setenv(k, v)
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        pytest.skip("GPU visible")
    assert detect_device() == Device("cpu", "cpu")
    assert detect_environment() == clean


def _requests(pins=PINS, envs=ENVIRONMENTS, wheres=("override", "checkpoint")):
    for dev, name, act, env, allow, where in itertools.product(
            DEVICES, pins, ACTIVATIONS, envs, (False, True), wheres):
        if where == "override":
            yield SelectionRequest(device=dev, moe_backend=name, activation=act, environment=env,
                                   allow_activation_fallback=allow)
        else:
            yield SelectionRequest(device=dev, moe_backend=name, checkpoint_activation=act,
                                   environment=env, allow_activation_fallback=allow)


def test_pinned_backend_never_degrades():
    """Every name × every arch × activations × library sets: winner in the family or raise."""
    checked = ok = 0
    for req in _requests(envs=ENVIRONMENTS[:2], wheres=("override",)):
        family = resolve_backend_name(req.moe_backend)
        assert family is not None
        checked += 1
        try:
            sel = select(req)
        except NoEligibleBackend as exc:
            assert [r.backend for r in exc.rejected] == list(family)
            assert exc.pinned == req.moe_backend
            assert all(v.verdict == "rejected" for v in explain(req))
            continue
        ok += 1
        assert sel.backend in family, (req, sel.backend)
        assert set(sel.eligible) <= set(family)
        assert sel.selected_by == "pinned"
    assert ok and checked > ok  # both outcomes are exercised


def test_activation_override_is_exact_without_allow():
    """A set activation (override or checkpoint) is honoured exactly unless fallback is allowed;
    an allowed fallback is reported."""
    fallbacks = 0
    for req in _requests([*PINS, "auto"], envs=ENVIRONMENTS[:1]):
        act = next((a for a in (req.activation, req.checkpoint_activation)
                    if a is not None and a is not UNSET), None)
        if act is None:
            continue
        want = None if act is BF16 else act
        try:
            sel = select(req)
        except NoEligibleBackend:
            continue
        if sel.activation == want:
            assert not sel.activation_fallback
            continue
        # Only the explicit opt-in gets here, only to BF16, and it is in the report.
        assert req.allow_activation_fallback, (req, sel.backend)
        assert sel.activation is None
        assert sel.activation_fallback
        assert any("fallback" in n and canonical_name(want) in n for n in sel.notes), sel.notes
        assert "fallback" in sel.describe()
        assert sel.to_dict()["activation_fallback"] is True
        fallbacks += 1
    assert fallbacks  # the opt-in path exists and was exercised


def test_allowed_fallback_prefers_the_exact_activation():
    """allow_activation_fallback only adds BF16 as a last resort: where the requested
    activation is eligible, it still wins."""
    from oracle.keys import kMxfp8Dynamic
    for dev in DEVICES:
        for name in [*PINS, "auto"]:
            strict = SelectionRequest(device=dev, moe_backend=name, activation=kMxfp8Dynamic)
            try:
                exact = select(strict)
            except NoEligibleBackend:
                continue
            loose = select(strict.with_(allow_activation_fallback=True))
            assert loose.backend == exact.backend
            assert not loose.activation_fallback


def test_documented_fallback_example():
    """sm90 has no MXFP8-activation CUTLASS variant: strict fails, the opt-in reports BF16."""
    from oracle.keys import kMxfp8Dynamic
    req = SelectionRequest(device=Device.parse("sm90"), moe_backend="flashinfer_cutlass",
                           activation=kMxfp8Dynamic)
    with pytest.raises(NoEligibleBackend):
        select(req)
    sel = select(req.with_(allow_activation_fallback=True))
    assert sel.backend == "FLASHINFER_CUTLASS_MXFP4_BF16"
    assert sel.activation is None and sel.activation_fallback
    assert any("fallback" in n for n in sel.notes)
