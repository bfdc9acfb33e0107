"""oracle.probe: device and library detection on this (CPU) machine; import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

from oracle import Device, Environment
from oracle.probe import DISTRIBUTIONS, detect_device, detect_environment
from oracle.platforms import LIBRARIES, Version, parse_version


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout


def _has_cuda() -> bool:
    torch = pytest.importorskip("torch")
    return torch.cuda.is_available()


def test_detect_device_cpu_machine():
    if _has_cuda():
        pytest.skip("this machine has a GPU")
    assert detect_device() == Device("cpu", "cpu")
    assert detect_device() == Device.parse("cpu")


def test_detect_device_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    assert detect_device() == Device("cpu", "cpu")


class _FakeCuda:
    def __init__(self, cap=(9, 0), arch="gfx942:sramecc+:xnack-"):
        self.cap, self.arch = cap, arch

    def is_available(self):
        return True

    def current_device(self):
        return 0

    def get_device_capability(self, idx=0):
        return self.cap

    def get_device_properties(self, idx=0):
        return type("P", (), {"gcnArchName": self.arch})()


@pytest.mark.parametrize("cap,want", [((9, 0), "sm90"), ((10, 0), "sm100"), ((10, 3), "sm103"),
                                      ((12, 1), "sm121"), ((8, 6), "sm86")])
def test_detect_device_cuda_capability(monkeypatch, cap, want):
    fake = type(sys)("torch")
    fake.cuda = _FakeCuda(cap)
    fake.version = type("V", (), {"hip": None})()
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert detect_device() == Device.parse(want)


@pytest.mark.parametrize("arch,want", [("gfx942:sramecc+:xnack-", "gfx942"), ("gfx950", "gfx950"),
                                       ("GFX1250:xnack+", "gfx1250")])
def test_detect_device_rocm_arch(monkeypatch, arch, want):
    fake = type(sys)("torch")
    fake.cuda = _FakeCuda(arch=arch)
    fake.version = type("V", (), {"hip": "6.2"})()
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert detect_device() == Device("rocm", want)


def test_detect_device_xpu(monkeypatch):
    fake = type(sys)("torch")
    fake.cuda = type("C", (), {"is_available": staticmethod(lambda: False)})()
    fake.xpu = type("X", (), {"is_available": staticmethod(lambda: True)})()
    fake.version = type("V", (), {"hip": None})()
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert detect_device() == Device("xpu", "xpu")


def test_detect_environment_reads_metadata():
    env = detect_environment()
    assert isinstance(env, Environment) and not env.all_present
    assert env.has("flashinfer")
    assert env.version("flashinfer").release[:3] == (0, 7, 2)
    assert env.version("flashinfer") == parse_version(metadata.version("flashinfer-python"))
    assert env.has("torch")
    assert env.version("torch") == parse_version(metadata.version("torch"))
    for name, _ in env.libraries:
        assert name in LIBRARIES


def test_distribution_map_targets_known_libraries():
    assert set(DISTRIBUTIONS.values()) <= set(LIBRARIES)
    assert set(LIBRARIES) <= set(DISTRIBUTIONS.values())


def test_detect_environment_imports_no_library():
    out = _run(
        "import sys, json\n"
        "from oracle.probe import detect_environment\n"
        "env = detect_environment()\n"
        "print(json.dumps({'env': env.describe(), 'mods': sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('flashinfer', 'torch', 'triton', 'vllm', 'triton_kernels', "
        "'deep_gemm', 'aiter', 'cutlass', 'cuda'))}))\n")
    got = json.loads(out)
    assert "flashinfer=0.7.2" in got["env"]
    assert got["mods"] == []


def test_import_oracle_is_pure():
    out = _run(
        "import sys, json, oracle\n"
        "from oracle import select, SelectionRequest, Device\n"
        "select(SelectionRequest(device=Device.parse('sm90')))\n"
        "print(json.dumps(sorted(m for m in ('torch', 'flashinfer', 'oracle.probe', "
        "'oracle.kernels') if m in sys.modules)))\n")
    assert json.loads(out) == []


def test_detect_environment_maps_distributions(monkeypatch):
    import oracle.probe as probe
    monkeypatch.setattr(probe, "_installed", lambda: {
        "flashinfer-python": "0.7.2.post1", "deep-gemm": "2.1.0", "amd-aiter": "weird",
        "intel-extension-for-pytorch": "2.5.0", "vllm-xpu-kernels": "2.7", "vllm": "0.11.0rc1",
        "triton-kernels": "1.0", "nvidia-cutlass-dsl": "4.2", "cuda-tile": "1.0", "b12x": "0.1",
        "humming": "0.2", "torch": "2.13.0+cpu", "amd-quark": "0.10", "unrelated": "9"})
    env = probe.detect_environment()
    assert env.version("flashinfer") == Version("0.7.2.post1")
    assert env.version("deep_gemm") == Version("2.1.0")
    assert env.has("aiter") and env.version("aiter") is None  # present, version unknown
    assert env.version("intel_xpu") == Version("2.7")  # the higher of the two providers
    assert env.version("vllm_ops") == Version("0.11.0rc1") < Version("0.11.0")  # PEP 440
    assert env.version("torch") == Version("2.13.0+cpu")
    assert {n for n, _ in env.libraries} == set(LIBRARIES)


def test_distribution_names_are_normalised():
    from oracle.probe import _normalize
    assert _normalize("deep_gemm") == _normalize("Deep-GEMM") == "deep-gemm"
    assert _normalize("triton_kernels") == "triton-kernels"


def test_select_for_group_needs_an_initialized_group():
    dist = pytest.importorskip("torch.distributed")
    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already initialized")
    from oracle import OracleError, SelectionRequest
    from oracle.group import select_for_group
    with pytest.raises(OracleError, match="init_process_group"):
        select_for_group(SelectionRequest())
