"""Run vLLM's OWN MXFP4 MoE backend selection on CPU, with only the hardware faked.

This module is the parent side of the conformance harness:

* :func:`ensure_vllm_sources` -- ``pip download vllm==VER`` (the ordinary way,
  pinned), keep only ``vllm/**/*.py`` in ``$MXFP4_ORACLE_CACHE/vllm-VER/``
  (default ``~/.cache/mxfp4-oracle``), delete the wheel.  Nothing of vLLM is
  copied into this repository.
* :func:`ensure_deps` -- install the pinned CPU-safe requirements from
  ``deps/vllm-VER.txt`` into ``$MXFP4_ORACLE_CACHE/deps-VER-<pytag>/`` (the
  project venv stays clean).
* :func:`vllm_answers` -- run ``_vllm_worker.py`` once per arch, in parallel
  subprocesses with a bounded timeout, and return vLLM's answer for each case.
* :func:`grid` -- the conformance grid (archs x backend names x override x
  checkpoint activation x library sets), answered by every version;
* :func:`axes_grid` -- the deployment-axes cases (expert / data parallelism,
  all2all backend, EPLB, LoRA, routing method, the DeepSeek-V4 layer), answered
  by :data:`AXES_VERSIONS` (vLLM 0.33) only;
* :func:`checkpoint_grid` -- the checkpoint-family cases (``Case.checkpoint``: the
  layer's real quant method built as vLLM builds it for that checkpoint), also
  :data:`AXES_VERSIONS` only.

Only the sources and the dependency install are cached; answers are recomputed
by vLLM's code on every call.  See README.md in this folder.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_vllm_worker.py"
DEPS_DIR = HERE / "deps"

#: vLLM releases the suite runs (newest first).
VERSIONS: tuple[str, ...] = ("0.33.0", "0.22.0")

#: Seconds allowed for each external step; every subprocess is bounded.
DOWNLOAD_TIMEOUT_S = int(os.environ.get("MXFP4_ORACLE_DOWNLOAD_TIMEOUT", "600"))
INSTALL_TIMEOUT_S = int(os.environ.get("MXFP4_ORACLE_INSTALL_TIMEOUT", "600"))
WORKER_TIMEOUT_S = int(os.environ.get("MXFP4_ORACLE_WORKER_TIMEOUT", "300"))

#: An unknown ``--moe-backend`` name (vLLM must reject it).
UNKNOWN_BACKEND = "no_such_moe_backend"

#: User overrides (``--quantization-config '{"moe": {"activation": NAME}}'``).
OVERRIDES: tuple[str | None, ...] = (
    None, "mxfp8", "fp8_per_tensor_static", "fp8_per_block_dynamic", "mxfp4")

#: Checkpoint-declared MoE activation keys (names in vLLM's quant_utils).
CHECKPOINT_ACTIVATIONS: tuple[str | None, ...] = (None, "kMxfp4Dynamic", "kFp8StaticTensorSym")

#: The library vocabulary; each name drives vLLM's own availability helpers
#: (``_vllm_worker.LIBRARY_HELPERS``).
LIBRARIES: tuple[str, ...] = (
    "flashinfer", "triton_kernels", "amd-quark", "aiter", "deep_gemm", "humming")

#: Named library sets used by the grid.
LIBRARY_SETS: dict[str, frozenset[str]] = {
    "all": frozenset(LIBRARIES),
    "no-amd-quark": frozenset(LIBRARIES) - {"amd-quark"},
    "no-triton_kernels": frozenset(LIBRARIES) - {"triton_kernels"},
}

#: The tensor-parallel part of the grid.
TP_ARCHS: tuple[str, ...] = ("sm90", "sm100", "sm103", "sm120", "gfx942", "gfx950")
TP_BACKENDS: tuple[str, ...] = ("auto", "flashinfer_trtllm", "flashinfer_cutlass", "triton",
                                "marlin", "humming", "aiter", "emulation")
TP_SIZES: tuple[int, ...] = (2, 8)

#: Library sets the per-variant probe asks about: all, and each library alone
#: removed (so every library a variant's classes consult shows up).
PROBE_LIBRARY_SETS: dict[str, frozenset[str]] = {
    "all": frozenset(LIBRARIES),
    **{f"no-{lib}": frozenset(LIBRARIES) - {lib} for lib in LIBRARIES},
}

#: The faked devices.  CUDA: compute capability and a representative product
#: name; ROCm: the gfx target amdsmi reports (vLLM derives the capability from
#: it); XPU / CPU: the platform class (CPU = x86-64 with AMX).
ARCHS: dict[str, dict] = {
    "sm75": {"kind": "cuda", "cc": [7, 5], "device_name": "Tesla T4"},
    "sm80": {"kind": "cuda", "cc": [8, 0], "device_name": "NVIDIA A100-SXM4-80GB"},
    "sm86": {"kind": "cuda", "cc": [8, 6], "device_name": "NVIDIA A10"},
    "sm89": {"kind": "cuda", "cc": [8, 9], "device_name": "NVIDIA L40S"},
    "sm90": {"kind": "cuda", "cc": [9, 0], "device_name": "NVIDIA H100 80GB HBM3"},
    "sm100": {"kind": "cuda", "cc": [10, 0], "device_name": "NVIDIA B200"},
    "sm103": {"kind": "cuda", "cc": [10, 3], "device_name": "NVIDIA B300 SXM6 AC"},
    "sm107": {"kind": "cuda", "cc": [10, 7], "device_name": "NVIDIA sm_107 device"},
    "sm110": {"kind": "cuda", "cc": [11, 0], "device_name": "NVIDIA Jetson AGX Thor"},
    "sm120": {"kind": "cuda", "cc": [12, 0], "device_name": "NVIDIA GeForce RTX 5090"},
    "sm121": {"kind": "cuda", "cc": [12, 1], "device_name": "NVIDIA GB10"},
    "gfx942": {"kind": "rocm", "gfx": "gfx942", "device_name": "AMD Instinct MI300X",
               "device_id": "0x74a1"},
    "gfx950": {"kind": "rocm", "gfx": "gfx950", "device_name": "AMD Instinct MI355X",
               "device_id": "0x75a3"},
    "gfx1250": {"kind": "rocm", "gfx": "gfx1250", "device_name": "AMD gfx1250 device",
                "device_id": "0x0000"},
    "xpu": {"kind": "xpu", "device_name": "Intel(R) Data Center GPU Max 1550"},
    "cpu": {"kind": "cpu", "machine": "x86_64", "amx": True},
}

#: Compiled modules a build for that platform ships but the (CUDA) PyPI wheel
#: does not; stubbed like the wheel's own .so files (import only).
PLATFORM_EXTRA_STUBS: dict[str, tuple[str, ...]] = {
    "cuda": (),
    "rocm": ("vllm._C", "vllm._rocm_C", "vllm._moe_C"),
    "xpu": (),
    "cpu": ("vllm._C",),
}

#: The gpt-oss-20b MoE layer (its config.json: hidden_size 2880,
#: intermediate_size 2880, num_local_experts 32, num_experts_per_tok 4; vLLM's
#: gpt_oss.py builds the layer with renormalize=True, has_bias=True,
#: activation="swigluoai" and the default softmax scoring).
GPT_OSS_20B_LAYER: dict = {
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_experts": 32,
    "top_k": 4,
    "activation": "swigluoai",
    "scoring_func": "softmax",
    "renormalize": True,
    "has_bias": True,
    "dtype": "bfloat16",
    "swiglu_alpha": 1.702,
    "swiglu_limit": 7.0,
}


#: Layers the per-variant probe asks about: gpt-oss-20b's, and the same sizes
#: with plain SiLU-gated experts and no biases (which variants refuse gpt-oss for
#: its activation or its biases, and where they would run otherwise).
PROBE_LAYERS: dict[str, dict] = {
    "gpt-oss": GPT_OSS_20B_LAYER,
    "silu-no-bias": dict(GPT_OSS_20B_LAYER, activation="silu", has_bias=False,
                         swiglu_alpha=None, swiglu_limit=None),
}


#: The DeepSeek-V4-Flash MoE layer (hidden 4096, moe_intermediate_size 2048, 256
#: routed experts, top-6, SiLU-gated experts without biases, "sqrtsoftplus"
#: scoring with renormalisation -> vLLM's RoutingMethodType.DeepseekV4,
#: fused_moe/config.py:135-146).  Its MXFP4 experts take Mxfp4MoEMethod
#: (models/deepseek_v4/quant_config.py:227), whose __init__ calls
#: select_deepseek_v4_mxfp4_moe_backend(moe) (quantization/mxfp4.py:577-580).
#: Not modelled (the brief's layer): the model's swiglu_limit, float32 router
#: logits and the hash-routed first layers (models/deepseek_v4/nvidia/model.py:424-447).
DEEPSEEK_V4_FLASH_LAYER: dict = {
    "hidden_size": 4096,
    "intermediate_size": 2048,
    "num_experts": 256,
    "top_k": 6,
    "activation": "silu",
    "scoring_func": "sqrtsoftplus",
    "renormalize": True,
    "has_bias": False,
    "dtype": "bfloat16",
    "swiglu_alpha": None,
    "swiglu_limit": None,
}

#: Model families a case can name: the layer, and the selection entry point
#: vLLM's quant method calls for it (the worker dispatches on the name).
FAMILIES: dict[str, dict] = {
    "gpt-oss": GPT_OSS_20B_LAYER,            # GptOssMxfp4MoEMethod -> select_mxfp4_moe_backend
    "deepseek-v4": DEEPSEEK_V4_FLASH_LAYER,  # Mxfp4MoEMethod -> select_deepseek_v4_mxfp4_moe_backend
}

#: vLLM releases whose harness runs the deployment axes (Case.ep / dp / all2all /
#: eplb / lora / routing / family): ParallelConfig validation, vLLM's own
#: FusedMoEParallelConfig.make(), the quant method's maybe_roundup_sizes.  Other
#: versions answer only the default deployment (today's grid).
AXES_VERSIONS: tuple[str, ...] = ("0.33.0",)

#: Named parallel configurations the class probe asks every experts class's
#: ``_supports_parallel_config`` about; the worker builds each with vLLM's
#: ``FusedMoEParallelConfig.make(tp_size_=tp, pcp_size_=1, dp_size_=dp,
#: sp_size_=1, ...)`` from these raw flags (no ParallelConfig validation: vLLM's
#: ParallelConfig would rewrite "naive" to "allgather_reducescatter",
#: config/parallel.py:536-542).  all2all None = vLLM's default
#: ("allgather_reducescatter").  Keys are stable: the comparison side rebuilds
#: each config from its flags.
PROBE_PARALLEL: dict[str, dict] = {
    "none": {"tp": 1, "dp": 1, "ep": False, "all2all": None, "eplb": False},
    "tp2": {"tp": 2, "dp": 1, "ep": False, "all2all": None, "eplb": False},
    "dp2": {"tp": 1, "dp": 2, "ep": False, "all2all": None, "eplb": False},
    "ep-tp2": {"tp": 2, "dp": 1, "ep": True, "all2all": None, "eplb": False},
    "ep-dp2-allgather_reducescatter": {"tp": 1, "dp": 2, "ep": True,
                                       "all2all": "allgather_reducescatter", "eplb": False},
    "ep-dp2-deepep_high_throughput": {"tp": 1, "dp": 2, "ep": True,
                                      "all2all": "deepep_high_throughput", "eplb": False},
    "ep-dp2-deepep_low_latency": {"tp": 1, "dp": 2, "ep": True,
                                  "all2all": "deepep_low_latency", "eplb": False},
    "ep-dp2-flashinfer_nvlink_two_sided": {"tp": 1, "dp": 2, "ep": True,
                                           "all2all": "flashinfer_nvlink_two_sided",
                                           "eplb": False},
    "ep-dp2-flashinfer_nvlink_one_sided": {"tp": 1, "dp": 2, "ep": True,
                                           "all2all": "flashinfer_nvlink_one_sided",
                                           "eplb": False},
    "ep-dp2-naive": {"tp": 1, "dp": 2, "ep": True, "all2all": "naive", "eplb": False},
    "ep-tp2-eplb": {"tp": 2, "dp": 1, "ep": True, "all2all": None, "eplb": True},
    "ep-dp2-eplb": {"tp": 1, "dp": 2, "ep": True, "all2all": None, "eplb": True},
}

#: The deployment-axes grid (vLLM 0.33 only, :func:`axes_grid`).
AXES_ARCHS: tuple[str, ...] = TP_ARCHS
AXES_TP_SIZES: tuple[int, ...] = (1, 2, 8)
#: (enable_expert_parallel, data_parallel_size)
AXES_PARALLEL: tuple[tuple[bool, int], ...] = ((False, 1), (True, 1), (True, 2), (False, 2))
AXES_ALL2ALL: tuple[str | None, ...] = (None, "deepep_low_latency")
AXES_OVERRIDES: tuple[str | None, ...] = (None, "mxfp8")
AXES_ROUTING: tuple[str, ...] = ("DeepSeekV3",)
DSV4_ARCHS: tuple[str, ...] = ("sm90", "sm100", "sm103", "sm120", "gfx942", "gfx950",
                               "xpu", "cpu")
DSV4_BACKENDS: tuple[str, ...] = TP_BACKENDS + ("deep_gemm",)
DSV4_TP_SIZES: tuple[int, ...] = (1, 2)
#: (enable_expert_parallel, data_parallel_size, all2all_backend)
DSV4_PARALLEL: tuple[tuple[bool, int, str | None], ...] = (
    (False, 1, None), (True, 2, None), (True, 2, "deepep_low_latency"))

#: Checkpoint families (``Case.checkpoint``, vLLM 0.33 only: :data:`AXES_VERSIONS`) --
#: the records of matrix/vllm.toml ``[release."0.33.0".checkpoint.NAME]``.  For such a
#: case the worker builds the layer's REAL quant method (a FusedMoEMethodBase
#: subclass) the way vLLM 0.33 does for that checkpoint and reads its
#: ``mxfp4_backend`` / ``experts_cls`` (``_vllm_worker.CHECKPOINT_METHODS`` says how):
#:
#: ============================  ==============================================================
#: gpt-oss-mxfp4                 GptOssMxfp4Config()._make_moe_method(moe) -> GptOssMxfp4MoEMethod
#:                               (quantization/mxfp4.py:147-158)
#: mxfp4                         Mxfp4Config()._make_moe_method(moe) -> Mxfp4MoEMethod(moe)
#:                               (quantization/mxfp4.py:86-89, 549-580)
#: deepseek-v4-fp8               Mxfp4MoEMethod(moe, activation_key=kMxfp8Dynamic), as
#:                               models/deepseek_v4/quant_config.py:227 builds it
#: quark-w-mxfp4(-a-fp8|-a-mxfp4) QuarkConfig.from_config(<checkpoint quantization_config>)
#:                               .get_quant_method_target(prefix, RoutedExperts) ->
#:                               QuarkMoEMethod.get_moe_method(...) -> QuarkOCP_MX_MoEMethod
#:                               (quark/quark.py:240-265, quark_moe.py:221-242, 292-297, 1582-1675)
#: online-mxfp4                  Mxfp4OnlineMoEMethod(moe=moe) (online/base.py:402,
#:                               online/mxfp4.py:143-157)
#: compressed-tensors-mxfp4      CompressedTensorsW4A4Mxfp4MoEMethod(moe)
#:                               (compressed_tensors_moe.py:76-81; ..._w4a4_mxfp4.py:53-79)
#: compressed-tensors-w4a8-fp8   CompressedTensorsW4A8Mxfp4MoEMethod(moe, activation_key=
#:                               CompressedTensorsConfig._fp8_dynamic_input_key(<per-token
#:                               dynamic FP8 QuantizationArgs>)) (compressed_tensors_moe.py:66-74)
#: ============================  ==============================================================
CHECKPOINTS: tuple[str, ...] = (
    "gpt-oss-mxfp4", "mxfp4", "deepseek-v4-fp8", "quark-w-mxfp4", "quark-w-mxfp4-a-fp8",
    "quark-w-mxfp4-a-mxfp4", "online-mxfp4", "compressed-tensors-mxfp4",
    "compressed-tensors-w4a8-fp8")
#: The layer family :func:`checkpoint_grid` gives each checkpoint (default gpt-oss-20b).
CHECKPOINT_FAMILIES: dict[str, str] = {"mxfp4": "deepseek-v4", "deepseek-v4-fp8": "deepseek-v4"}
CHECKPOINT_ARCHS: tuple[str, ...] = ("sm80", "sm90", "sm100", "sm103", "sm120", "gfx942",
                                     "gfx950", "xpu", "cpu")
CHECKPOINT_BACKENDS: tuple[str, ...] = TP_BACKENDS + ("b12x", "flashinfer_moe_ep_cutedsl")
CHECKPOINT_OVERRIDES: tuple[str | None, ...] = (None, "mxfp8")


class HarnessUnavailable(RuntimeError):
    """vLLM's sources or dependencies could not be fetched (e.g. no network).

    The conftest turns this into a skip locally and a failure in CI."""


class HarnessError(RuntimeError):
    """The harness itself failed (worker crash, timeout, bad output)."""


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    arch: str
    moe_backend: str = "auto"
    override: str | None = None
    checkpoint_activation: str | None = None
    libraries: str = "all"  # a LIBRARY_SETS key
    tp: int = 1  # --tensor-parallel-size
    # Deployment axes (vLLM 0.33 only; the defaults are today's deployment):
    ep: bool = False  # --enable-expert-parallel
    dp: int = 1  # --data-parallel-size
    all2all: str | None = None  # --all2all-backend (None: vLLM's default)
    eplb: bool = False  # --enable-eplb
    lora: bool = False  # --enable-lora (FusedMoEConfig.is_lora_enabled)
    routing: str | None = None  # RoutingMethodType name overriding the layer's
    family: str = "gpt-oss"  # a FAMILIES key
    # A CHECKPOINTS name (vLLM 0.33 only): build the layer's real quant method the way
    # vLLM does for that checkpoint family and read its choice; None = ask the
    # family's selector directly (today's behaviour).
    checkpoint: str | None = None

    @property
    def default_deployment(self) -> bool:
        """True when no deployment axis departs from its default and no checkpoint
        family is named (what every version answers)."""
        return (not self.ep and self.dp == 1 and self.all2all is None and not self.eplb
                and not self.lora and self.routing is None and self.family == "gpt-oss"
                and self.checkpoint is None)

    def job_entry(self, idx: int) -> dict:
        return {
            "id": idx,
            "moe_backend": self.moe_backend,
            "override": self.override,
            "checkpoint_activation": self.checkpoint_activation,
            "libraries": sorted(LIBRARY_SETS[self.libraries]),
            "tp": self.tp,
            "ep": self.ep,
            "dp": self.dp,
            "all2all": self.all2all,
            "eplb": self.eplb,
            "lora": self.lora,
            "routing": self.routing,
            "family": self.family,
            "checkpoint": self.checkpoint,
        }


# --------------------------------------------------------------------------
# Cache locations
# --------------------------------------------------------------------------
def cache_root() -> Path:
    root = os.environ.get("MXFP4_ORACLE_CACHE") or "~/.cache/mxfp4-oracle"
    return Path(root).expanduser()


def _py_tag() -> str:
    return f"py{sys.version_info.major}{sys.version_info.minor}"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], timeout: int, what: str, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False, **kw)
    except subprocess.TimeoutExpired as e:
        raise HarnessUnavailable(f"{what} timed out after {timeout}s: {' '.join(cmd)}") from e


# --------------------------------------------------------------------------
# vLLM sources
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sources:
    version: str
    root: Path  # contains vllm/
    manifest: dict

    @property
    def stub_modules(self) -> list[str]:
        return list(self.manifest["compiled_modules"])


def _wheel_compiled_modules(names: Iterable[str]) -> list[str]:
    mods = []
    for n in names:
        if n.startswith("vllm/") and (n.endswith(".so") or ".so." in n):
            stem = n[: n.index(".so")]
            mod = stem.replace("/", ".")
            # foo.abi3 / foo.cpython-312-x86_64-linux-gnu -> foo
            last = mod.rsplit(".", 1)
            if len(last) == 2 and (last[1].startswith("abi3") or last[1].startswith("cpython")):
                mod = last[0]
            mods.append(mod)
    return sorted(set(mods))


def _vendored_triton_kernels_api(src: Path) -> str | None:
    """The API generation vLLM's get_triton_kernels_version() would report for
    the triton_kernels copy vendored in this wheel: "3.8" without matmul_ogs,
    "3.5.1" without tensor.SparseMatrix, else "3.6" (probe order of
    vllm/utils/import_utils.py::get_triton_kernels_version)."""
    tk = src / "vllm" / "third_party" / "triton_kernels"
    if not tk.is_dir():
        return None
    if not (tk / "matmul_ogs.py").exists() and not (tk / "matmul_ogs").is_dir():
        return "3.8"
    tensor = tk / "tensor.py"
    if not tensor.exists() or "class SparseMatrix" not in tensor.read_text():
        return "3.5.1"
    return "3.6"


def _extract(wheel: Path, dest: Path, version: str) -> dict:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        py = [n for n in names if n.startswith("vllm/") and n.endswith(".py")]
        for n in py:
            z.extract(n, dest)
        meta_name = f"vllm-{version}.dist-info/METADATA"
        requires = []
        if meta_name in names:
            for line in z.read(meta_name).decode().splitlines():
                if line.startswith("Requires-Dist:"):
                    requires.append(line.split(":", 1)[1].strip())
    sha = hashlib.sha256()
    with open(wheel, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return {
        "version": version,
        "wheel": wheel.name,
        "wheel_sha256": sha.hexdigest(),
        "python_files": len(py),
        "compiled_modules": _wheel_compiled_modules(names),
        "requires_dist": requires,
        "vendored_triton_kernels_api": _vendored_triton_kernels_api(dest),
    }


def ensure_vllm_sources(version: str) -> Sources:
    """vLLM ``version``'s Python sources, downloaded once and cached."""
    root = cache_root() / f"vllm-{version}"
    manifest_path = root / "MANIFEST.json"
    if manifest_path.exists():
        return Sources(version, root, json.loads(manifest_path.read_text()))
    with _locked(cache_root() / f".vllm-{version}.lock"):
        if manifest_path.exists():
            return Sources(version, root, json.loads(manifest_path.read_text()))
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".vllm-{version}-", dir=cache_root()))
        try:
            wheel = _find_local_wheel(version)
            owned = wheel is None
            if wheel is None:
                dl = tmp / "wheel"
                cmd = [sys.executable, "-m", "pip", "download", f"vllm=={version}",
                       "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                       "--platform", "manylinux_2_28_x86_64", "--disable-pip-version-check",
                       "-d", str(dl)]
                proc = _run(cmd, DOWNLOAD_TIMEOUT_S, f"pip download vllm=={version}")
                wheels = sorted(dl.glob(f"vllm-{version}-*.whl"))
                if proc.returncode != 0 or not wheels:
                    raise HarnessUnavailable(
                        f"pip download vllm=={version} failed (rc={proc.returncode}):\n"
                        f"{proc.stderr.strip()[-2000:]}")
                wheel = wheels[0]
            t_dl = time.monotonic() - t0
            src = tmp / "src"
            manifest = _extract(wheel, src, version)
            if owned:
                wheel.unlink()  # the 336 MB wheel is not kept
            manifest["download_seconds"] = round(t_dl, 1)
            manifest["extract_seconds"] = round(time.monotonic() - t0 - t_dl, 1)
            manifest["source"] = "pip download" if owned else f"local wheel {wheel}"
            (src / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
            if root.exists():
                shutil.rmtree(root)
            os.replace(src, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Sources(version, root, json.loads(manifest_path.read_text()))


def _find_local_wheel(version: str) -> Path | None:
    """An already-downloaded wheel in $MXFP4_ORACLE_WHEELHOUSE (optional, for
    offline development); it is read, never deleted."""
    house = os.environ.get("MXFP4_ORACLE_WHEELHOUSE")
    if not house:
        return None
    found = sorted(Path(house).expanduser().glob(f"vllm-{version}-*.whl"))
    return found[0] if found else None


# --------------------------------------------------------------------------
# Dependencies
# --------------------------------------------------------------------------
def deps_file(version: str) -> Path:
    return DEPS_DIR / f"vllm-{version}.txt"


def pinned_deps(version: str) -> list[str]:
    """The pinned requirement lines (comments stripped) for ``version``."""
    out = []
    for line in deps_file(version).read_text().splitlines():
        req = line.split("#", 1)[0].strip()
        if req:
            out.append(req)
    return out


def ensure_deps(version: str) -> Path:
    """Install the pinned dependencies for ``version`` (once; keyed by the pin
    file's content and the interpreter) and return the target directory."""
    pins = deps_file(version)
    if not pins.exists():
        raise HarnessError(f"no pinned dependency list {pins}")
    digest = hashlib.sha256(pins.read_bytes()).hexdigest()[:16]
    target = cache_root() / f"deps-{version}-{_py_tag()}"
    marker = target / ".installed"
    if marker.exists() and json.loads(marker.read_text()).get("pins") == digest:
        return target
    with _locked(cache_root() / f".deps-{version}.lock"):
        if marker.exists() and json.loads(marker.read_text()).get("pins") == digest:
            return target
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".deps-{version}-", dir=cache_root()))
        try:
            cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile",
                   "--disable-pip-version-check", "--no-warn-script-location",
                   "--target", str(tmp / "t"), "-r", str(pins)]
            proc = _run(cmd, INSTALL_TIMEOUT_S, f"pip install (vLLM {version} deps)")
            if proc.returncode != 0:
                raise HarnessUnavailable(
                    f"installing vLLM {version}'s pinned dependencies failed "
                    f"(rc={proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
            info = {"pins": digest, "seconds": round(time.monotonic() - t0, 1),
                    "python": sys.version.split()[0], "requirements": pinned_deps(version)}
            (tmp / "t" / ".installed").write_text(json.dumps(info, indent=1))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp / "t", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def install_info(version: str) -> dict:
    """Timings recorded when the sources and deps were fetched."""
    src = ensure_vllm_sources(version)
    deps = ensure_deps(version)
    return {"sources": src.manifest, "deps": json.loads((deps / ".installed").read_text())}


# --------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------
def moe_backend_names(version: str) -> list[str]:
    """The keys of vLLM's ``map_mxfp4_backend`` mapping (the ``--moe-backend``
    names that map to MXFP4 variants), read from the extracted source as data."""
    src = ensure_vllm_sources(version)
    path = src.root / "vllm" / "model_executor" / "layers" / "fused_moe" / "oracle" / "mxfp4.py"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "map_mxfp4_backend":
            for sub in ast.walk(node):
                value = getattr(sub, "value", None)
                target = getattr(sub, "target", None) or (getattr(sub, "targets", None) or [None])[0]
                if isinstance(sub, (ast.Assign, ast.AnnAssign)) and isinstance(value, ast.Dict) \
                        and getattr(target, "id", None) == "mapping":
                    return [k.value for k in value.keys if isinstance(k, ast.Constant)]
    raise HarnessError(f"map_mxfp4_backend's mapping not found in {path}")


def grid(versions: Sequence[str] = VERSIONS, archs: Iterable[str] = ARCHS) -> list[Case]:
    """archs x (auto + every map_mxfp4_backend key of any version + an unknown
    name) x overrides x checkpoint activations x library sets.  The backend
    names are the union over ``versions`` so every version answers the same
    cases (a name a version does not know is its "not supported" error)."""
    names: list[str] = []
    for v in versions:
        for n in moe_backend_names(v):
            if n not in names:
                names.append(n)
    backends = ["auto", *names, UNKNOWN_BACKEND]
    archs = list(archs)
    cases = [Case(a, b, o, c, lib) for a, b, o, c, lib in itertools.product(
        archs, backends, OVERRIDES, CHECKPOINT_ACTIVATIONS, LIBRARY_SETS)]
    # Tensor parallelism: the per-rank intermediate size (1440 at TP 2, 360 at TP 8) on the
    # main archs and backends.
    cases += [Case(a, b, o, None, "all", tp) for a, b, o, tp in itertools.product(
        [a for a in TP_ARCHS if a in archs], TP_BACKENDS, (None, "mxfp8"), TP_SIZES)]
    return cases


#: all2all backends asked once more under EP with DP 2 (beyond AXES_ALL2ALL).
AXES_OTHER_ALL2ALL: tuple[str, ...] = ("deepep_high_throughput", "flashinfer_nvlink_two_sided",
                                       "flashinfer_nvlink_one_sided", "naive")


def axes_grid(archs: Iterable[str] = ARCHS) -> list[Case]:
    """The deployment-axes cases (vLLM 0.33 only, :data:`AXES_VERSIONS`), library
    set "all", no checkpoint activation:

    * gpt-oss-20b: AXES_ARCHS x TP {1, 2, 8} x (EP, DP) {(off, 1), (on, 1), (on, 2),
      (off, 2)} x all2all {default, deepep_low_latency} x EPLB {off, on} x LoRA
      {off, on} x TP_BACKENDS x override {none, mxfp8} -- every combination, also
      those where an axis cannot matter (all2all without EP, EPLB without EP):
      vLLM's answer proves it does not;
    * routing DeepSeekV3 on the gpt-oss layer: AXES_ARCHS x TP_BACKENDS x override
      (TP 1, DP 1, no EP);
    * DeepSeek-V4-Flash: DSV4_ARCHS x (auto + TP_BACKENDS + deep_gemm) x TP {1, 2} x
      (no EP / EP DP 2 / EP DP 2 deepep_low_latency) x override x LoRA.

    ``archs`` filters (an arch outside these lists adds nothing)."""
    archs = set(archs)
    out: list[Case] = []
    gpt = [a for a in AXES_ARCHS if a in archs]
    for a, tp, (ep, dp), a2a, eplb, lora, b, o in itertools.product(
            gpt, AXES_TP_SIZES, AXES_PARALLEL, AXES_ALL2ALL, (False, True), (False, True),
            TP_BACKENDS, AXES_OVERRIDES):
        out.append(Case(a, b, o, tp=tp, ep=ep, dp=dp, all2all=a2a, eplb=eplb, lora=lora))
    for a, b, o, rm in itertools.product(gpt, TP_BACKENDS, AXES_OVERRIDES, AXES_ROUTING):
        out.append(Case(a, b, o, routing=rm))
    # The other all2all backends where they act (EP, DP 2): DeepEP high-throughput rounds
    # the hidden size, the FlashInfer NVLink ones are refused by some classes, and the
    # removed naive is replaced by the default.
    for a, a2a, b, o in itertools.product(gpt, AXES_OTHER_ALL2ALL, TP_BACKENDS, AXES_OVERRIDES):
        out.append(Case(a, b, o, ep=True, dp=2, all2all=a2a))
    dsv4 = [a for a in DSV4_ARCHS if a in archs]
    for a, b, tp, (ep, dp, a2a), o, lora in itertools.product(
            dsv4, DSV4_BACKENDS, DSV4_TP_SIZES, DSV4_PARALLEL, AXES_OVERRIDES, (False, True)):
        out.append(Case(a, b, o, tp=tp, ep=ep, dp=dp, all2all=a2a, lora=lora,
                        family="deepseek-v4"))
    return list(dict.fromkeys(out))


def checkpoint_grid(archs: Iterable[str] = ARCHS) -> list[Case]:
    """The checkpoint-family cases (vLLM 0.33 only, :data:`AXES_VERSIONS`): every
    :data:`CHECKPOINTS` name x :data:`CHECKPOINT_ARCHS` x :data:`CHECKPOINT_BACKENDS` x
    override {none, mxfp8}, library set "all", TP 1, no EP; the gpt-oss-20b layer, the
    DeepSeek-V4-Flash layer (``family="deepseek-v4"``) for "mxfp4" and "deepseek-v4-fp8"
    (:data:`CHECKPOINT_FAMILIES`).  ``archs`` filters."""
    archs = set(archs)
    return [Case(a, b, o, family=CHECKPOINT_FAMILIES.get(k, "gpt-oss"), checkpoint=k)
            for k, a, b, o in itertools.product(
                CHECKPOINTS, [a for a in CHECKPOINT_ARCHS if a in archs], CHECKPOINT_BACKENDS,
                CHECKPOINT_OVERRIDES)]


# --------------------------------------------------------------------------
# Running vLLM
# --------------------------------------------------------------------------
def _clean_env(pythonpath: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")}
    env.update({
        "PYTHONPATH": pythonpath,
        "PYTHONHASHSEED": "0",
        "PYTHONNOUSERSITE": "1",
        "VLLM_CONFIGURE_LOGGING": "0",  # the worker attaches its own handler
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    })
    return env


def _job(version: str, arch: str, cases: list[dict], src: Sources, deps: Path,
         layer: dict, meta_only: bool = False, probe: bool = False) -> dict:
    spec = dict(ARCHS[arch], name=arch)
    stubs = sorted(set(src.stub_modules) | set(PLATFORM_EXTRA_STUBS[spec["kind"]]))
    humming = deps / "humming"
    return {
        "version": version,
        "arch": spec,
        "stub_modules": stubs,
        "libraries": list(LIBRARIES),
        "cases": cases,
        "layer": layer,
        "trace": True,
        "meta_only": meta_only,
        "humming_dir": str(humming) if humming.is_dir() else None,
        # humming.layer (imported at module level by vLLM 0.22's
        # fused_humming_moe) needs triton; an import-only placeholder serves.
        "humming_stub_submodules": ["humming.layer"],
        "vendored_triton_kernels_api": src.manifest.get("vendored_triton_kernels_api"),
        "probe_classes": probe,
        "deployment_axes": version in AXES_VERSIONS,
        "family_layers": {k: v for k, v in FAMILIES.items() if k != "gpt-oss"},
        "probe_parallel": PROBE_PARALLEL,
        "probe_layers": PROBE_LAYERS,
        "probe_library_sets": [{"name": k, "libraries": sorted(v)}
                               for k, v in PROBE_LIBRARY_SETS.items()],
    }


def default_jobs() -> int:
    env = os.environ.get("MXFP4_ORACLE_CONFORMANCE_JOBS")
    if env:
        return max(1, int(env))
    return max(1, min(os.cpu_count() or 2, 4))


def _run_jobs(version: str, jobs: list[dict], src: Sources, deps: Path,
              parallel: int | None = None) -> dict[str, dict]:
    """Run the per-arch jobs of one vLLM version: one zygote process imports the
    common third-party modules and forks one child per arch (``parallel`` at a
    time); every child imports vLLM fresh under its arch's fakes.  Returns
    {arch: payload}; raises HarnessError on any crash, timeout or bad output."""
    parallel = parallel or default_jobs()
    with tempfile.TemporaryDirectory(prefix="vllm-conformance-") as tmp:
        workdir = Path(tmp)
        pairs = []
        for job in jobs:
            arch = job["arch"]["name"]
            job_path = workdir / f"job-{arch}.json"
            job_path.write_text(json.dumps(job))
            pairs.append([str(job_path), str(workdir / f"out-{arch}.json")])
        spec = workdir / "zygote.json"
        spec.write_text(json.dumps({"jobs": pairs, "parallel": parallel,
                                    "timeout": WORKER_TIMEOUT_S}))
        budget = WORKER_TIMEOUT_S * (-(-len(jobs) // parallel)) + 120
        cmd = [sys.executable, "-X", "faulthandler", str(WORKER), "--zygote", str(spec)]
        env = _clean_env(os.pathsep.join([str(src.root), str(deps)]))
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=budget,
                                  cwd=workdir, stdin=subprocess.DEVNULL, check=False,
                                  start_new_session=True)
        except subprocess.TimeoutExpired as e:
            raise HarnessError(
                f"vLLM {version} harness timed out after {budget}s ({len(jobs)} arch jobs); "
                f"stderr tail:\n{_tail(e.stderr)}") from e
        wall = round(time.monotonic() - t0, 2)
        out: dict[str, dict] = {}
        for job, (_, out_path) in zip(jobs, pairs):
            arch = job["arch"]["name"]
            path = Path(out_path)
            if not path.exists():
                raise HarnessError(
                    f"vLLM {version} worker for {arch} left no output (zygote rc="
                    f"{proc.returncode}); stderr tail:\n{_tail(proc.stderr)}")
            payload = json.loads(path.read_text())
            if not payload.get("ok"):
                raise HarnessError(
                    f"vLLM {version} worker for {arch} failed: {payload.get('error')}\n"
                    f"{payload.get('traceback', '')[-4000:]}\nstderr tail:\n{_tail(proc.stderr)}")
            payload["meta"]["version_wall_seconds"] = wall
            out[arch] = payload
        return out


def _tail(text, n: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def vllm_answers(version: str, cases: Sequence[Case], *, layer: dict | None = None,
                 jobs: int | None = None, meta: dict | None = None) -> list[dict]:
    """vLLM ``version``'s answer for each case, in order.

    Each answer: ``case`` (the Case as a dict), ``backend`` (the
    ``Mxfp4MoeBackend`` member name or None), ``experts_cls``, ``activation_key``
    (the chosen variant's activation QuantKey name), ``padded``
    (``[hidden, intermediate]`` from vLLM's padding function for the chosen
    backend), ``error`` (``{"type", "message", "phase"}`` when vLLM raised),
    ``warnings`` / ``infos`` / ``debug`` (vLLM's log records during that
    selection), ``helper_calls`` (which availability helpers vLLM consulted),
    ``kernel_config_error`` (None if vLLM's ``KernelConfig`` accepts the
    ``--moe-backend`` name, else its error -- the oracle runs either way),
    ``routing_method`` (the RoutingMethodType name the FusedMoEConfig carried),
    ``parallel`` (the FusedMoEParallelConfig: ``tp_size``, ``dp_size``,
    ``ep_size``, ``use_ep``, ``all2all_backend``, ``enable_eplb``,
    ``use_all2all_kernels``, ``use_batched_activation_format``),
    ``class_trace`` (for the winning backend, ``[experts_class, reason or None]``
    per class vLLM's is_supported_config was asked, in order, up to and including
    the winner; None when vLLM raised before a backend stood), ``hidden_rounded``
    (0.33: the hidden size after vLLM's all2all round-up, before MXFP4 padding --
    3072 for 2880 under DeepEP low-latency; None on 0.22 and on errors).
    On :data:`AXES_VERSIONS` also ``num_local_experts`` (vLLM's ExpertMapManager),
    ``parallel_config_logs`` (ParallelConfig / expert-map log lines, kept out of
    ``warnings`` / ``infos`` / ``debug``), ``supports_eplb`` (when EPLB is on and
    a backend was selected).  ``error.phase`` is one of config, parallel_config,
    moe_config, select, padding, eplb; ``error.wrapped_in`` names the pydantic
    ValidationError vLLM's ParallelConfig wrapped the ValueError in.  An
    ``eplb`` refusal keeps the backend the quant method had selected.
    A case with ``checkpoint`` (0.33 only) is answered by the real quant method vLLM
    builds for that checkpoint family: ``backend`` = its ``mxfp4_backend.name``,
    ``experts_cls`` = ``experts_cls.__name__``, ``padded`` = its own
    ``maybe_roundup_sizes``, and also ``method`` (the FusedMoEMethodBase subclass's
    name), ``method_built`` (True: the class was constructed through the code path
    vLLM uses, its ``__init__`` ran -- whether it returned or raised), ``method_key``
    (the activation key the method was constructed with, or None),
    ``selector_calls`` (each call the method's ``__init__`` made to
    ``select_mxfp4_moe_backend`` / ``select_deepseek_v4_mxfp4_moe_backend``:
    ``{"fn", "activation_key", "backend", "experts_cls"}`` -- ``backend`` None when it
    raised), ``method_flags`` (the method's own flags that steer its kernel beside
    ``mxfp4_backend``, e.g. ``use_cutlass_mxfp4``, ``ocp_mx_scheme``),
    ``padding_from`` (the class whose ``maybe_roundup_sizes`` ran: the base class
    ``FusedMoEMethodBase`` = the all2all round-up only, no MXFP4 padding) and
    ``supports_eplb`` (always).  ``class_trace`` is that of the selector call when the
    method made exactly one, else None.  ``error.phase`` "method": the method's
    ``__init__`` raised (a selector's own error included).
    ``meta`` (optional dict) receives per-arch worker metadata and timings.
    """
    src = ensure_vllm_sources(version)
    deps = ensure_deps(version)
    layer = dict(GPT_OSS_20B_LAYER if layer is None else layer)
    by_arch: dict[str, list[tuple[int, Case]]] = {}
    for i, c in enumerate(cases):
        if c.arch not in ARCHS:
            raise ValueError(f"unknown arch {c.arch!r}; known: {sorted(ARCHS)}")
        if c.libraries not in LIBRARY_SETS:
            raise ValueError(f"unknown library set {c.libraries!r}; known: {sorted(LIBRARY_SETS)}")
        if c.family not in FAMILIES:
            raise ValueError(f"unknown family {c.family!r}; known: {sorted(FAMILIES)}")
        if not c.default_deployment and version not in AXES_VERSIONS:
            raise ValueError(f"vLLM {version}'s harness runs no deployment axes and no "
                             f"checkpoint families (AXES_VERSIONS={AXES_VERSIONS}): {c}")
        if c.family != "gpt-oss" and c.checkpoint_activation is not None:
            raise ValueError(f"{c.family} takes no checkpoint activation "
                             f"(select_deepseek_v4_mxfp4_moe_backend has none): {c}")
        if c.checkpoint is not None:
            if c.checkpoint not in CHECKPOINTS:
                raise ValueError(f"unknown checkpoint {c.checkpoint!r}; known: {CHECKPOINTS}")
            if c.checkpoint_activation is not None:
                raise ValueError(f"a checkpoint case takes its activation key from the "
                                 f"checkpoint's quant method, not checkpoint_activation: {c}")
        by_arch.setdefault(c.arch, []).append((i, c))
    job_list = [_job(version, arch, [c.job_entry(i) for i, c in items], src, deps, layer)
                for arch, items in by_arch.items()]
    answers: list[dict | None] = [None] * len(cases)
    for arch, payload in _run_jobs(version, job_list, src, deps, jobs).items():
        if meta is not None:
            meta[arch] = payload["meta"]
        verdicts = payload["meta"].get("kernel_config", {})
        for r in payload["results"]:
            idx = r.pop("id")
            r["case"] = dataclasses.asdict(cases[idx])
            # vLLM's KernelConfig verdict on the --moe-backend name (None =
            # accepted); the oracle's answer above is computed regardless.
            r["kernel_config_error"] = verdicts.get(cases[idx].moe_backend)
            answers[idx] = r
    missing = [i for i, a in enumerate(answers) if a is None]
    if missing:
        raise HarnessError(f"no answer for {len(missing)} case(s), e.g. {cases[missing[0]]}")
    return answers  # type: ignore[return-value]


@dataclasses.dataclass
class AnswerTable:
    """vLLM's answers, per version.

    ``cases`` is the common grid (every version ran it, in this order);
    ``version_cases[v]`` is what version ``v`` ran -- ``cases`` first, then (on
    :data:`AXES_VERSIONS`) the deployment-axes cases and the checkpoint cases -- and ``answers[v][i]``
    answers ``version_cases[v][i]`` (so ``zip(cases, answers[v])`` pairs the common
    grid).  ``meta[v][arch]``: per-arch worker metadata."""

    cases: list[Case]
    answers: dict[str, list[dict]]
    meta: dict[str, dict[str, dict]]
    seconds: dict[str, float]
    version_cases: dict[str, list[Case]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for v in self.answers:
            self.version_cases.setdefault(v, list(self.cases))
        self._index = {v: {c: i for i, c in enumerate(cs)}
                       for v, cs in self.version_cases.items()}

    def cases_for(self, version: str) -> list[Case]:
        """Every case ``version`` ran, in answer order."""
        return self.version_cases[version]

    def pairs(self, version: str) -> Iterator[tuple[Case, dict]]:
        """(case, answer) for every case ``version`` ran."""
        return zip(self.version_cases[version], self.answers[version])

    def answer(self, version: str, case: Case) -> dict:
        try:
            return self.answers[version][self._index[version][case]]
        except KeyError:
            raise KeyError(f"no vLLM {version} answer for {case}") from None

    def where(self, version: str, **fields) -> list[dict]:
        """Answers of ``version`` whose case matches every ``field=value`` given."""
        return [a for c, a in zip(self.version_cases[version], self.answers[version])
                if all(getattr(c, k) == v for k, v in fields.items())]


def answer_table(versions: Sequence[str] = VERSIONS,
                 cases: Sequence[Case] | None = None,
                 axes_cases: Sequence[Case] | None = None,
                 checkpoint_cases: Sequence[Case] | None = None) -> AnswerTable:
    """Run vLLM (every version in ``versions``) on ``cases`` (default: the full
    :func:`grid`), plus, on :data:`AXES_VERSIONS` only, ``axes_cases`` (default:
    :func:`axes_grid`; pass ``[]`` for none) and then ``checkpoint_cases`` (default:
    :func:`checkpoint_grid`; ``[]`` for none), less those already in ``cases``."""
    cases = list(grid(versions) if cases is None else cases)
    axes = list(axes_grid() if axes_cases is None else axes_cases)
    axes += list(checkpoint_grid() if checkpoint_cases is None else checkpoint_cases)
    common = set(cases)
    axes = [c for c in dict.fromkeys(axes) if c not in common]
    answers, meta, seconds, version_cases = {}, {}, {}, {}
    for v in versions:
        t0 = time.monotonic()
        meta[v] = {}
        version_cases[v] = cases + (axes if v in AXES_VERSIONS else [])
        answers[v] = vllm_answers(v, version_cases[v], meta=meta[v])
        seconds[v] = round(time.monotonic() - t0, 1)
    return AnswerTable(cases, answers, meta, seconds, version_cases)


def vllm_meta(version: str, arch: str) -> dict:
    """Import vLLM for one arch and report what it sees (platform class,
    capability, fp8 dtype, map_mxfp4_backend keys), without running cases."""
    src = ensure_vllm_sources(version)
    deps = ensure_deps(version)
    job = _job(version, arch, [], src, deps, dict(GPT_OSS_20B_LAYER), meta_only=True)
    return _run_jobs(version, [job], src, deps, 1)[arch]["meta"]


def class_probe(version: str, archs: Iterable[str] = ARCHS) -> dict[str, dict]:
    """Per arch: every Mxfp4MoeBackend member's experts classes asked directly
    (``is_supported_config`` per library set and activation key) and its padding
    -- vLLM's per-variant facts, which the matrix's vLLM columns must equal."""
    src = ensure_vllm_sources(version)
    deps = ensure_deps(version)
    jobs = [_job(version, a, [], src, deps, dict(GPT_OSS_20B_LAYER), meta_only=True, probe=True)
            for a in archs]
    return {a: p["meta"]["class_probe"] for a, p in _run_jobs(version, jobs, src, deps).items()}


def main(argv: Sequence[str] | None = None) -> int:
    """``python vllm_harness.py [VERSION ...] [--arch A ...] [--out FILE]``: run
    the grid and write vLLM's answers as JSON (for inspection; nothing reads it
    back -- the suite recomputes answers every session)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("versions", nargs="*", default=list(VERSIONS))
    p.add_argument("--out", default=None)
    p.add_argument("--arch", action="append", default=None)
    p.add_argument("--no-axes", action="store_true",
                   help="no deployment-axes cases")
    p.add_argument("--no-checkpoints", action="store_true",
                   help="no checkpoint-family cases")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    installs = {v: install_info(v) for v in args.versions}
    archs = args.arch or list(ARCHS)
    cases = grid(VERSIONS, archs)
    ckpt = [] if args.no_checkpoints else checkpoint_grid(archs)
    table = answer_table(args.versions, cases, [] if args.no_axes else axes_grid(archs), ckpt)
    for v in args.versions:
        n = len(table.cases_for(v))
        k = len(ckpt) if v in AXES_VERSIONS else 0
        print(f"vLLM {v}: {n} cases ({n - len(cases) - k} deployment-axes, {k} checkpoint) "
              f"in {table.seconds[v]:.1f}s", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({
            v: {"answers": table.answers[v], "meta": table.meta[v], "install": installs[v],
                "seconds": table.seconds[v]} for v in args.versions}))
    print(f"total {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
