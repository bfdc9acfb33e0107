"""Child process of the vLLM conformance harness: runs vLLM's OWN MXFP4 MoE selection.

Started by ``vllm_harness`` as ``python _vllm_worker.py --zygote SPEC.json`` (or
``python _vllm_worker.py JOB.json OUT.json`` for one job) with
``PYTHONPATH=<extracted vLLM sources>:<pinned deps>`` and the project venv's
interpreter (which supplies CPU torch).  One process per (vLLM version, arch),
forked from a zygote that has imported only third-party modules: the arch is
faked before vLLM is imported, so import-time facts (``_GCN_ARCH``, FP8 fnuz on
gfx942, ``functools.cache``d capability helpers) come out as on that GPU.

What is faked, and nothing else:

* compiled extensions shipped in the wheel (``vllm/*.so``; the list is recorded at
  extraction time) and ``vllm_xpu_kernels`` become empty import-only stubs;
* the hardware queries: the CUDA platform class's ``get_device_capability`` /
  ``get_device_name`` (and the same ``torch.cuda`` queries), ``amdsmi``'s ASIC info
  (ROCm's gfx target, read by vLLM at import), the XPU device name, and the CPU's
  AMX flag;
* library presence: vLLM's own availability helpers (``has_flashinfer``,
  ``has_triton_kernels``, ``has_quark``, ... -- see ``LIBRARY_HELPERS``) answer from
  the case's library set; real third-party accelerator packages that happen to
  be installed in the venv are hidden so they cannot leak into the answer;
* the one C++ predicate on an MXFP4 gate, ``_C::mxfp4_experts_quant_supported``,
  registered as a torch op with the condition transcribed from vLLM's CUDA
  source (see ``_cxx_mxfp4_experts_quant_supported``).

vLLM's selection logic itself (``select_mxfp4_moe_backend``, the experts classes'
``is_supported_config``, ``mxfp4_round_up_hidden_size_and_intermediate_size``,
``resolve_quantization_config``) is imported and called unchanged.

The job file is JSON::

    {"version": "0.33.0", "arch": {...ARCHS entry...}, "stub_modules": [...],
     "libraries": [...universe...], "layer": {...gpt-oss layer...},
     "family_layers": {"deepseek-v4": {...}}, "deployment_axes": true,
     "probe_parallel": {name: {"tp", "dp", "ep", "all2all", "eplb"}},
     "cases": [{"id": 0, "moe_backend": "auto", "override": null,
                "checkpoint_activation": null, "libraries": [...], "tp": 1,
                "ep": false, "dp": 1, "all2all": null, "eplb": false,
                "lora": false, "routing": null, "family": "gpt-oss",
                "checkpoint": null}, ...]}

With ``deployment_axes`` (vLLM 0.33) a case is run the way vLLM builds a MoE
layer: vLLM's ``ParallelConfig`` validates the parallel flags, vLLM's own
``FusedMoEParallelConfig.make()`` (ranks answered as 0) and ``ExpertMapManager``
shape the layer, the family's selection runs, the family's quant method's own
``maybe_roundup_sizes`` pads (incl. the DeepEP low-latency hidden round-up) and
EPLB is refused where the quant method's ``supports_eplb`` is false.  Without it
(vLLM 0.22) only today's TP-only deployment runs, as before.

A case with ``checkpoint`` (0.33 only; ``CHECKPOINT_METHODS``) builds the layer's REAL
quant method (a FusedMoEMethodBase subclass) through the path vLLM takes for that
checkpoint family (``_build_checkpoint_method``: the quantization config's own
factory where it has one -- ``Mxfp4Config`` / ``GptOssMxfp4Config._make_moe_method``,
``QuarkConfig.from_config(...).get_quant_method_target`` + ``QuarkMoEMethod.get_moe_method``
-- else the constructor call vLLM makes, with the activation key vLLM passes) and
reads the method's ``mxfp4_backend`` / ``experts_cls``, its own ``maybe_roundup_sizes``
and ``supports_eplb``.  The selectors the method modules bound at import are wrapped
in those modules' namespaces to *record* each call (activation key passed, result);
vLLM's result is returned unchanged.

The output file is JSON: ``{"ok": true, "results": [...], "meta": {...}}`` or
``{"ok": false, "error": "...", "traceback": "..."}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import time
import traceback
import types
from typing import Any

# ----------------------------------------------------------------------------
# Library vocabulary: which of vLLM's own availability helpers each library
# drives.  (module, function) pairs that do not exist in a version are skipped.
# A helper listed here answers ``library in case.libraries``.
# ----------------------------------------------------------------------------
LIBRARY_HELPERS: dict[str, list[tuple[str, str]]] = {
    "flashinfer": [
        ("vllm.utils.flashinfer", "has_flashinfer"),
        ("vllm.utils.flashinfer", "has_flashinfer_cubin"),
        ("vllm.utils.flashinfer", "has_flashinfer_moe"),
        ("vllm.utils.flashinfer", "has_flashinfer_cutlass_fused_moe"),
        ("vllm.utils.flashinfer", "has_flashinfer_trtllm_fused_moe"),
        ("vllm.utils.flashinfer", "has_flashinfer_cutedsl"),
        ("vllm.utils.flashinfer", "has_flashinfer_comm"),
        ("vllm.utils.flashinfer", "has_flashinfer_b12x_moe"),
        ("vllm.utils.flashinfer", "has_flashinfer_b12x_gemm"),
        ("vllm.utils.flashinfer", "has_flashinfer_nvlink_two_sided"),
        ("vllm.utils.flashinfer", "has_flashinfer_nvlink_one_sided"),
        ("vllm.model_executor.layers.quantization.utils.flashinfer_utils",
         "has_flashinfer_situ_activation"),
    ],
    "triton_kernels": [
        ("vllm.utils.import_utils", "has_triton_kernels"),
    ],
    "amd-quark": [
        ("vllm.utils.import_utils", "has_quark"),
    ],
    "aiter": [
        ("vllm.utils.import_utils", "has_aiter"),
        ("vllm._aiter_ops", "is_aiter_found"),
    ],
    "deep_gemm": [
        ("vllm.utils.import_utils", "has_deep_gemm"),
    ],
    "humming": [
        ("vllm.utils.import_utils", "has_humming"),
    ],
}
# Not modelled: b12x (B12xExperts probes the b12x package itself and is
# unreachable for a layer with expert biases: vllm 0.33 b12x.py:448-449 rejects
# biases before its device gate) -- the hidden package simply reads as absent.

# Top-level packages that may be installed in the interpreter running us (the
# project venv has FlashInfer, cuda-python, nvidia-cutlass-dsl, ...).  They are
# hidden (``sys.modules[name] = None``): vLLM's answer must come from the case's
# library set through LIBRARY_HELPERS, never from what this machine has.
HIDDEN_PACKAGES = (
    "flashinfer", "flashinfer_cubin", "flashinfer_jit_cache", "triton", "triton_kernels",
    "cutlass", "cuda", "deep_gemm", "deep_ep", "aiter", "quark", "b12x",
    "mori", "nixl", "pplx_kernels", "fbgemm_gpu", "tilelang", "helion", "amdsmi",
    "intel_extension_for_pytorch", "vllm_xpu_kernels", "libtpu", "tpu_inference",
    "nvidia", "cupy", "pynvml", "zentorch", "quack", "tokenspeed_mla",
    "vllm.third_party.triton_kernels", "vllm.third_party.deep_gemm",
)

# State of the library fakes: the originals replaced, the current case's set,
# and the helper calls counted during the current case.
_ORIGINALS: dict[tuple[str, str], object] = {}
_CURRENT_LIBS: set[str] = set()
_HELPER_CALLS: dict[str, int] = {}
_TRACE = False


# ----------------------------------------------------------------------------
# Import machinery: stubs for compiled modules, post-exec patch hooks.
# ----------------------------------------------------------------------------
class _StubModule(types.ModuleType):
    """An import-only stand-in for a compiled extension (no attributes)."""


class _PermissiveStub(types.ModuleType):
    """Import-only stand-in whose attributes are inert placeholders (for packages
    whose names vLLM imports at module level but only calls at kernel run time)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        placeholder = type(name, (), {"__module__": self.__name__})
        setattr(self, name, placeholder)
        return placeholder


class _StubLoader(importlib.abc.Loader):
    def __init__(self, permissive: bool, package: bool):
        self.permissive = permissive
        self.package = package

    def create_module(self, spec):
        cls = _PermissiveStub if self.permissive else _StubModule
        mod = cls(spec.name)
        mod.__doc__ = "conformance-harness stub (import only)"
        if self.package:
            mod.__path__ = []
        return mod

    def exec_module(self, module):
        pass


class _HarnessFinder(importlib.abc.MetaPathFinder):
    """First on sys.meta_path: serves stubs, and wraps real loaders so that
    ``_POST_EXEC[name]`` runs right after a module body executes (before anyone
    can ``from name import helper``)."""

    def __init__(self, stubs: set[str], permissive_roots: set[str]):
        self.stubs = stubs
        self.permissive_roots = permissive_roots
        self._busy: set[str] = set()

    def find_spec(self, fullname, path=None, target=None):
        root = fullname.split(".")[0]
        if fullname in self.stubs or root in self.permissive_roots:
            permissive = root in self.permissive_roots
            package = permissive or any(s.startswith(fullname + ".") for s in self.stubs)
            spec = importlib.machinery.ModuleSpec(
                fullname, _StubLoader(permissive, package), is_package=package)
            return spec
        if fullname in _POST_EXEC and fullname not in self._busy:
            self._busy.add(fullname)
            try:
                spec = importlib.util.find_spec(fullname)
            finally:
                self._busy.discard(fullname)
            if spec is None or spec.loader is None:
                return spec
            spec.loader = _PatchingLoader(spec.loader, fullname)
            return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner, name):
        self.inner = inner
        self.name = name

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        for hook in _POST_EXEC.get(self.name, ()):
            hook(module)


_POST_EXEC: dict[str, list] = {}
_LRU_WRAPPER = type(functools.lru_cache(maxsize=None)(lambda: None))


def _on_import(name: str, hook) -> None:
    _POST_EXEC.setdefault(name, []).append(hook)
    if name in sys.modules and sys.modules[name] is not None:
        hook(sys.modules[name])


# ----------------------------------------------------------------------------
# Library helpers
# ----------------------------------------------------------------------------
def _make_helper(lib: str, module: str, name: str, original):
    def helper(*args, **kwargs):
        _HELPER_CALLS[f"{module}.{name}"] = _HELPER_CALLS.get(f"{module}.{name}", 0) + 1
        return lib in _CURRENT_LIBS

    helper.__name__ = name
    helper.__qualname__ = name
    helper.__wrapped_original__ = original
    helper.cache_clear = lambda: None  # callers sometimes clear vLLM's memo
    return helper


def _install_library_helpers() -> None:
    by_module: dict[str, list[tuple[str, str]]] = {}
    for lib, pairs in LIBRARY_HELPERS.items():
        for module, name in pairs:
            by_module.setdefault(module, []).append((lib, name))

    for module, items in by_module.items():
        def hook(mod, items=items, module=module):
            for lib, name in items:
                if hasattr(mod, name) and (module, name) not in _ORIGINALS:
                    _ORIGINALS[(module, name)] = getattr(mod, name)
                    setattr(mod, name, _make_helper(lib, module, name, getattr(mod, name)))
            if _TRACE:
                _trace_module(mod, module)
        _on_import(module, hook)

    # triton_kernels API generation: vLLM infers it by probing the package; with
    # triton_kernels "present" report the generation of the copy vendored in
    # this vLLM wheel (vllm/third_party/triton_kernels), recorded by the parent.
    def tk_version_hook(mod):
        if hasattr(mod, "get_triton_kernels_version"):
            vendored = _JOB.get("vendored_triton_kernels_api")

            def get_triton_kernels_version():
                _HELPER_CALLS["vllm.utils.import_utils.get_triton_kernels_version"] = (
                    _HELPER_CALLS.get("vllm.utils.import_utils.get_triton_kernels_version", 0) + 1)
                return vendored if "triton_kernels" in _CURRENT_LIBS else None

            get_triton_kernels_version.cache_clear = lambda: None
            mod.get_triton_kernels_version = get_triton_kernels_version
    _on_import("vllm.utils.import_utils", tk_version_hook)

    # AITER: vLLM computes IS_AITER_FOUND once at import (vllm/_aiter_ops.py) and
    # reads VLLM_ROCM_USE_AITER* into class attributes; _apply_libraries()
    # refreshes both through vLLM's own refresh_env_variables().


def _trace_module(mod, module_name: str) -> None:
    """Discovery aid (job["trace"]): count calls of every other has_* helper."""
    for attr, fn in list(vars(mod).items()):
        if not callable(fn) or not attr.startswith(("has_", "is_")) or \
                (module_name, attr) in _ORIGINALS or getattr(fn, "__module__", None) != module_name:
            continue

        def traced(*a, __fn=fn, __key=f"{module_name}.{attr}", **k):
            _HELPER_CALLS[__key] = _HELPER_CALLS.get(__key, 0) + 1
            return __fn(*a, **k)
        setattr(mod, attr, functools.wraps(fn)(traced))


# ----------------------------------------------------------------------------
# Hardware fakes
# ----------------------------------------------------------------------------
def _cxx_mxfp4_experts_quant_supported(cuda_device_capability: int) -> bool:
    # Transcribed from vLLM csrc/quantization/fp4/mxfp4_experts_quant.cu,
    # mxfp4_experts_quant_sm_supported(): CUDART >= 12.9 builds return
    # ``cuda_device_capability >= 100 && cuda_device_capability < 120``.
    return 100 <= int(cuda_device_capability) < 120


# C++ capability predicates that vLLM calls through torch.ops.  Only the one on
# an MXFP4 gate is modelled (transcribed); the others are registered so that
# module-level calls (e.g. w8a8_utils.CUTLASS_BLOCK_FP8_SUPPORTED) import, answer
# False, and are reported per case in ``helper_calls`` as ``cxx:...`` so a call
# during an MXFP4 selection cannot go unnoticed.
_CXX_PREDICATES = {
    ("_C", "mxfp4_experts_quant_supported"): _cxx_mxfp4_experts_quant_supported,
    ("_C", "cutlass_scaled_mm_supports_fp4"): None,
    ("_C", "cutlass_scaled_mm_supports_fp8"): None,
    ("_C", "cutlass_scaled_mm_supports_block_fp8"): None,
    ("_C", "cutlass_group_gemm_supported"): None,
}
_TORCH_LIBS: list = []


def _register_cxx_predicates() -> None:
    import torch

    libs: dict[str, object] = {}
    for (ns, op), impl in _CXX_PREDICATES.items():
        key = f"cxx:{ns}.{op}"

        def kernel(cap, __impl=impl, __key=key):
            _HELPER_CALLS[__key] = _HELPER_CALLS.get(__key, 0) + 1
            return bool(__impl(cap)) if __impl is not None else False

        lib = libs.get(ns)
        if lib is None:
            lib = libs[ns] = torch.library.Library(ns, "FRAGMENT")
            _TORCH_LIBS.append(lib)
        lib.define(f"{op}(int cuda_device_capability) -> bool")
        lib.impl(op, kernel, "CompositeExplicitAutograd")


def _fake_amdsmi(arch: dict) -> types.ModuleType:
    import enum

    m = types.ModuleType("amdsmi")
    m.__doc__ = "conformance-harness fake of amdsmi (ASIC info of one GPU)"

    class AmdSmiException(Exception):
        pass

    class AmdSmiMemoryType(enum.IntEnum):
        VRAM = 0
        VIS_VRAM = 1
        GTT = 2

    asic = {
        "target_graphics_version": arch["gfx"],
        "market_name": arch["device_name"],
        "device_id": arch.get("device_id", "0x0000"),
        "vendor_id": "0x1002",
    }
    m.AmdSmiException = AmdSmiException
    m.AmdSmiMemoryType = AmdSmiMemoryType
    m.amdsmi_init = lambda *a, **k: None
    m.amdsmi_shut_down = lambda *a, **k: None
    m.amdsmi_get_processor_handles = lambda: ["gpu0"]
    m.amdsmi_get_gpu_asic_info = lambda h: dict(asic)
    m.amdsmi_get_gpu_device_uuid = lambda h: "GPU-00000000-0000-0000-0000-000000000000"
    m.amdsmi_get_gpu_memory_total = lambda h, t=None: arch.get("memory", 192 << 30)
    m.amdsmi_topo_get_link_type = lambda a, b: {"hops": 1, "type": 2}
    m.amdsmi_topo_get_numa_node_number = lambda h: 0
    m.amdsmi_get_gpu_kfd_info = lambda h: {"kfd_id": 0, "node_id": 0}
    return m


def _patch_platform(arch: dict) -> None:
    """Point vLLM's platform resolution at the arch's platform class and fake
    that class's hardware queries."""
    import torch

    kind = arch["kind"]
    qualname = {
        "cuda": "vllm.platforms.cuda.CudaPlatform",
        "rocm": "vllm.platforms.rocm.RocmPlatform",
        "xpu": "vllm.platforms.xpu.XPUPlatform",
        "cpu": "vllm.platforms.cpu.CpuPlatform",
    }[kind]

    if kind == "cuda":
        major, minor = arch["cc"]
        torch.version.cuda = arch.get("cuda_runtime", "13.0")
        torch.cuda.get_device_capability = lambda device=None: (major, minor)
        torch.cuda.get_device_name = lambda device=None: arch["device_name"]

        def cuda_hook(mod):
            from vllm.platforms.interface import DeviceCapability

            cap = DeviceCapability(major=major, minor=minor)
            for cls_name in ("NvmlCudaPlatform", "NonNvmlCudaPlatform"):
                cls = getattr(mod, cls_name, None)
                if cls is None:
                    continue
                cls.get_device_capability = classmethod(lambda c, device_id=0: cap)
                cls.get_device_name = classmethod(lambda c, device_id=0: arch["device_name"])
                cls.get_device_total_memory = classmethod(
                    lambda c, device_id=0: arch.get("memory", 80 << 30))
                # The node's GPU count: vLLM's ParallelConfig refuses a world size
                # above it (0.33 config/parallel.py:1066-1077, CUDA only).
                cls.device_count = classmethod(lambda c: int(arch.get("device_count", 8)))
        _on_import("vllm.platforms.cuda", cuda_hook)
    elif kind == "rocm":
        sys.modules["amdsmi"] = _fake_amdsmi(arch)
        torch.version.hip = arch.get("hip_runtime", "7.0.0")
        torch.version.cuda = None

        def rocm_hook(mod):
            mod.RocmPlatform.device_count = classmethod(
                lambda c: int(arch.get("device_count", 8)))
        _on_import("vllm.platforms.rocm", rocm_hook)
    elif kind == "xpu":
        def xpu_hook(mod):
            cls = mod.XPUPlatform
            cls.get_device_name = classmethod(lambda c, device_id=0: arch["device_name"])
            cls.get_device_total_memory = classmethod(
                lambda c, device_id=0: arch.get("memory", 64 << 30))
        _on_import("vllm.platforms.xpu", xpu_hook)
    elif kind == "cpu":
        import platform as _platform

        _platform.machine = lambda: arch.get("machine", "x86_64")
        torch.cpu._is_amx_tile_supported = lambda: bool(arch.get("amx", True))

    def platforms_hook(mod):
        mod.resolve_current_platform_cls_qualname = lambda: qualname
    _on_import("vllm.platforms", platforms_hook)


# ----------------------------------------------------------------------------
# Logging capture
# ----------------------------------------------------------------------------
class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


_CAPTURE = _Capture()


def _install_logging() -> None:
    vllm_logger = logging.getLogger("vllm")
    vllm_logger.handlers[:] = [_CAPTURE]
    vllm_logger.setLevel(logging.DEBUG)
    vllm_logger.propagate = False


def _clear_once_caches() -> None:
    import vllm.logger as vlog

    for name in ("_print_debug_once", "_print_info_once", "_print_warning_once",
                 "_print_error_once"):
        fn = getattr(vlog, name, None)
        if fn is not None and hasattr(fn, "cache_clear"):
            fn.cache_clear()


# ----------------------------------------------------------------------------
# The selection
# ----------------------------------------------------------------------------
_JOB: dict = {}


_UTIL_CACHES: list = []
_CACHED_UTIL_PREFIXES = ("vllm.utils", "vllm.model_executor.layers.quantization.utils")


def _apply_libraries(libs: list[str]) -> None:
    """Switch the library set: helpers read _CURRENT_LIBS; vLLM's own memoised
    state that depends on it is recomputed through vLLM's own code."""
    # Memoised helpers that call the patched ones (vLLM keeps @cache wrappers
    # around some has_* results, e.g. vllm.utils.deep_gemm): every functools
    # cache in vLLM's utility modules is cleared before each case, so a case
    # sees exactly what a fresh process with its library set would see.
    if set(libs) != _CURRENT_LIBS or not _UTIL_CACHES:
        _UTIL_CACHES[:] = [
            attr
            for name, mod in list(sys.modules.items())
            if mod is not None and name.startswith(_CACHED_UTIL_PREFIXES)
            for attr in list(vars(mod).values())
            if isinstance(attr, _LRU_WRAPPER)
        ]
    for fn in _UTIL_CACHES:
        fn.cache_clear()
    if set(libs) == _CURRENT_LIBS and _CURRENT_LIBS:
        return
    _CURRENT_LIBS.clear()
    _CURRENT_LIBS.update(libs)
    aiter_ops = sys.modules.get("vllm._aiter_ops")
    if aiter_ops is not None:
        # vLLM computes IS_AITER_FOUND once at import and AITER MoE is gated by
        # VLLM_ROCM_USE_AITER (default off); "aiter present" means installed and
        # enabled the documented way (VLLM_ROCM_USE_AITER=1).
        if "aiter" in _CURRENT_LIBS:
            os.environ["VLLM_ROCM_USE_AITER"] = "1"
        else:
            os.environ.pop("VLLM_ROCM_USE_AITER", None)
        aiter_ops.IS_AITER_FOUND = "aiter" in _CURRENT_LIBS
        ops_cls = getattr(aiter_ops, "rocm_aiter_ops", None)
        if ops_cls is not None and hasattr(ops_cls, "refresh_env_variables"):
            ops_cls.refresh_env_variables()


def _setup(job: dict):
    """Import vLLM under the fakes; return a namespace of vLLM objects."""
    global _TRACE
    _TRACE = bool(job.get("trace"))
    arch = job["arch"]

    for name in HIDDEN_PACKAGES:
        sys.modules.setdefault(name, None)
    for name in job.get("hidden_extra", []):
        sys.modules.setdefault(name, None)
    stubs = set(job["stub_modules"])
    permissive = set(job.get("permissive_stub_roots", []))
    if arch["kind"] == "xpu":
        permissive.add("vllm_xpu_kernels")
        sys.modules.pop("vllm_xpu_kernels", None)
    for s in list(stubs) + [p for p in permissive]:
        sys.modules.pop(s, None)
    sys.meta_path.insert(0, _HarnessFinder(stubs, permissive))

    # Humming: the real package (pinned in the deps dir) supplies GemmType; its
    # __init__ imports triton-backed ops, so the package object is created
    # without running __init__ and submodules load from the real files.
    hum_dir = job.get("humming_dir")
    if hum_dir:
        hum = types.ModuleType("humming")
        hum.__path__ = [hum_dir]
        hum.__spec__ = importlib.machinery.ModuleSpec("humming", None, is_package=True)
        hum.__spec__.submodule_search_locations = [hum_dir]
        hum.__doc__ = "real humming-kernels package, __init__ not executed"
        sys.modules["humming"] = hum
        for sub in job.get("humming_stub_submodules", []):
            # triton-backed submodules vLLM imports at module level but only
            # calls at kernel run time: import-only placeholders.
            sys.modules[sub] = _PermissiveStub(sub)

    _install_library_helpers()
    _patch_platform(arch)
    _apply_libraries([])

    import torch

    _register_cxx_predicates()

    import vllm.logger  # noqa: F401
    _install_logging()

    import vllm.model_executor.layers.fused_moe.oracle.mxfp4 as oracle
    from vllm.config import set_current_vllm_config
    from vllm.config.quantization import resolve_quantization_config
    from vllm.model_executor.layers.fused_moe.activation import MoEActivation
    from vllm.model_executor.layers.fused_moe.config import (
        FusedMoEConfig,
        FusedMoEParallelConfig,
        get_routing_method_type,
    )
    from vllm.model_executor.layers.quantization.utils import quant_utils
    from vllm.platforms import current_platform

    # Import every experts module the oracle can reach now, with no library
    # present, so no module is first imported in the middle of some case (the
    # only import-time library probes in these modules are triton_kernels'
    # get_triton_kernels_version()/has_triton_kernels(), which import kernel
    # symbols for execution and do not enter any selection gate).
    kernel_import_errors = {}
    for member in {m.value: m for m in oracle.Mxfp4MoeBackend}.values():
        if member.name == "NONE":
            continue
        try:
            oracle.backend_to_kernel_cls(member)
        except Exception as e:  # noqa: BLE001 - reported in meta; the case then sees vLLM raise it
            kernel_import_errors[member.name] = f"{type(e).__name__}: {e}"

    from vllm.model_executor.layers.fused_moe import config as moe_config_module
    from vllm.model_executor.layers.fused_moe.config import RoutingMethodType

    ns = types.SimpleNamespace(
        kernel_import_errors=kernel_import_errors,
        oracle=oracle, platform=current_platform,
        set_current_vllm_config=set_current_vllm_config,
        resolve_quantization_config=resolve_quantization_config,
        MoEActivation=MoEActivation, FusedMoEConfig=FusedMoEConfig,
        FusedMoEParallelConfig=FusedMoEParallelConfig,
        get_routing_method_type=get_routing_method_type, quant_utils=quant_utils,
        torch=torch, moe_config_module=moe_config_module,
        RoutingMethodType=RoutingMethodType,
        deployment_axes=bool(job.get("deployment_axes")),
        setup_notes={},
    )
    ns.lora_experts_cls = _lora_experts_cls(ns)
    _install_supported_config_recorder(ns)
    if ns.deployment_axes:
        _setup_deployment(ns)
        if any(c.get("checkpoint") for c in job.get("cases", ())):
            _setup_checkpoints(ns)
    return ns


def _lora_experts_cls(ns):
    """vLLM 0.33's TrtLlmMxfp4LoRAExperts (what _requested_kernel_cls puts first
    for a pinned TRT-LLM backend under LoRA, oracle/mxfp4.py:571-594), or None."""
    try:
        mod = importlib.import_module(
            "vllm.model_executor.layers.fused_moe.experts.trtllm_lora_moe")
    except Exception as e:  # noqa: BLE001 - absent in this version
        ns.setup_notes["trtllm_lora_moe"] = f"{type(e).__name__}: {e}"
        return None
    return getattr(mod, "TrtLlmMxfp4LoRAExperts", None)


def _setup_deployment(ns) -> None:
    """vLLM objects the deployment axes need (vLLM 0.33): ParallelConfig (the
    --enable-expert-parallel / --data-parallel-size / --all2all-backend /
    --enable-eplb validation), ExpertMapManager (the local expert count the
    factory passes, layer.py:291-302), the quant methods whose maybe_roundup_sizes
    and supports_eplb RoutedExperts.__init__ consults (routed_experts.py:164-199)."""
    from vllm.config import ParallelConfig
    from vllm.model_executor.layers.fused_moe.expert_map_manager import ExpertMapManager
    from vllm.model_executor.layers.fused_moe.fused_moe_method_base import (
        FusedMoEMethodBase,
    )
    from vllm.model_executor.layers.quantization import mxfp4 as quant_mxfp4

    ns.ParallelConfig = ParallelConfig
    ns.ExpertMapManager = ExpertMapManager
    ns.FusedMoEMethodBase = FusedMoEMethodBase
    ns.quant_methods = {
        # gpt-oss checkpoints: GptOssMxfp4Config._make_moe_method (quantization/mxfp4.py:148-149)
        "gpt-oss": quant_mxfp4.GptOssMxfp4MoEMethod,
        # DeepSeek-V4 MXFP4 experts: models/deepseek_v4/quant_config.py:227
        "deepseek-v4": quant_mxfp4.Mxfp4MoEMethod,
    }
    _install_deepep_prepare_finalize(ns)


def _install_deepep_prepare_finalize(ns) -> None:
    """A deployment that asks for a DeepEP all2all backend has deep_ep installed
    (the CUDA communicator asserts it, distributed/device_communicators/all2all.py:207).
    vLLM then imports DeepEP's prepare/finalize classes into all2all_utils at
    module level -- on CUDA-alike platforms only (fused_moe/all2all_utils.py:111-117) --
    and maybe_roundup_layer_hidden_size (all2all_utils.py:148-187) reads them.  The
    harness hides deep_ep (no library leaks in), so it imports those two vLLM
    modules once with an import-only deep_ep stub (they need deep_ep for kernel
    run time only) and binds them into all2all_utils as that import block would.
    On XPU / CPU nothing is bound, exactly as vLLM."""
    a2a = importlib.import_module("vllm.model_executor.layers.fused_moe.all2all_utils")
    ns.all2all_utils = a2a
    if not ns.platform.is_cuda_alike():
        ns.setup_notes["deep_ep"] = "not bound: all2all_utils imports DeepEP on CUDA-alike only"
        return
    saved = sys.modules.get("deep_ep")
    sys.modules["deep_ep"] = _PermissiveStub("deep_ep")
    try:
        pf = "vllm.model_executor.layers.fused_moe.prepare_finalize."
        ht = importlib.import_module(pf + "deepep_ht")
        ll = importlib.import_module(pf + "deepep_ll")
    finally:
        sys.modules["deep_ep"] = saved
    a2a.DeepEPHTPrepareAndFinalize = ht.DeepEPHTPrepareAndFinalize
    a2a.DeepEPLLPrepareAndFinalize = ll.DeepEPLLPrepareAndFinalize
    a2a.DEEPEP_QUANT_BLOCK_SHAPE = ll.DEEPEP_QUANT_BLOCK_SHAPE
    ns.setup_notes["deep_ep"] = "DeepEP HT/LL prepare-finalize bound into all2all_utils"


# ----------------------------------------------------------------------------
# is_supported_config recorder: the (class, verdict) of every outermost call
# vLLM's selection makes, in order (nested calls -- an override calling its
# base's is_supported_config -- are not recorded).
# ----------------------------------------------------------------------------
_ISC_CALLS: list[tuple[type, bool, Any]] = []
_ISC_DEPTH = [0]


def _recording(fn):
    def is_supported_config(cls, *args, **kwargs):
        _ISC_DEPTH[0] += 1
        try:
            res = fn(cls, *args, **kwargs)
        finally:
            _ISC_DEPTH[0] -= 1
        if _ISC_DEPTH[0] == 0:
            ok, why = res
            _ISC_CALLS.append((cls, bool(ok), why))
        return res

    is_supported_config.__wrapped__ = fn
    is_supported_config.__conformance_recorder__ = True
    return staticmethod(is_supported_config)


def _reachable_classes(ns) -> list[type]:
    """Every experts class any Mxfp4MoeBackend member maps to
    (backend_to_kernel_cls), plus TrtLlmMxfp4LoRAExperts, in first-seen order."""
    seen: dict[type, None] = {}
    for member in {m.value: m for m in ns.oracle.Mxfp4MoeBackend}.values():
        if member.name == "NONE":
            continue
        try:
            for cls in ns.oracle.backend_to_kernel_cls(member):
                seen.setdefault(cls, None)
        except Exception:  # noqa: BLE001, S110 - reported in kernel_import_errors
            pass
    if ns.lora_experts_cls is not None:
        seen.setdefault(ns.lora_experts_cls, None)
    return list(seen)


def _install_supported_config_recorder(ns) -> None:
    for cls in _reachable_classes(ns):
        for klass in cls.__mro__:
            raw = vars(klass).get("is_supported_config")
            if raw is None or getattr(getattr(raw, "__func__", raw),
                                      "__conformance_recorder__", False):
                continue
            if isinstance(raw, (classmethod, property)):
                continue  # not how vLLM declares it; left alone
            fn = raw.__func__ if isinstance(raw, staticmethod) else raw
            klass.is_supported_config = _recording(fn)


def _make_moe_config(ns, layer: dict, moe_backend: str, tp: int = 1, *,
                     parallel=None, lora: bool = False, routing: str | None = None,
                     num_local_experts: int | None = None):
    """A real FusedMoEConfig for the layer, with the arguments vLLM's FusedMoE
    layer passes (vllm/model_executor/layers/fused_moe/layer.py: 0.33 builds it
    in its factory with ``intermediate_size``, layer.py:361-396; 0.22 in
    FusedMoE.__init__ with ``intermediate_size_per_partition`` and
    ``is_act_and_mul``).  Only fields the version's dataclass declares are passed.

    ``parallel``: the FusedMoEParallelConfig (vLLM's make() result, see
    _make_parallel); None = today's TP-only config (make_no_parallel with tp_size
    set).  0.33's FusedMoEConfig derives intermediate_size_per_partition =
    intermediate_size // moe_parallel_config.tp_size itself (config.py:1350-1353),
    so DP without EP shards it dp*tp ways and EP keeps it whole.
    ``lora``: --enable-lora (the factory passes is_lora_enabled=lora_config is not
    None, layer.py:376).  ``routing``: a RoutingMethodType member name replacing
    the layer's own routing method."""
    torch = ns.torch
    fields = getattr(ns.FusedMoEConfig, "__dataclass_fields__", {})
    activation = ns.MoEActivation.from_str(layer["activation"])
    if parallel is None:
        # Tensor parallelism alone: vLLM's no-parallel config with tp_size set (EP off,
        # DP 1); the layer holds intermediate // tp per rank.
        parallel = dataclasses.replace(ns.FusedMoEParallelConfig.make_no_parallel(), tp_size=tp)
    if routing is None:
        routing_method = ns.get_routing_method_type(
            scoring_func=layer["scoring_func"], top_k=layer["top_k"],
            renormalize=layer["renormalize"], num_expert_group=None,
            has_e_score_bias=False)
    else:
        routing_method = ns.RoutingMethodType[routing]
    kwargs = {
        "num_experts": layer["num_experts"],
        "experts_per_token": layer["top_k"],
        "hidden_dim": layer["hidden_size"],
        "num_local_experts": (layer["num_experts"] if num_local_experts is None
                              else num_local_experts),
        "num_logical_experts": layer["num_experts"],
        "activation": activation,
        "device": ns.platform.device_type or "cpu",
        "routing_method": routing_method,
        "moe_parallel_config": parallel,
        "in_dtype": getattr(torch, layer["dtype"]),
        "moe_backend": moe_backend,
        "has_bias": layer["has_bias"],
    }
    if lora:
        if "is_lora_enabled" not in fields:
            raise RuntimeError("this vLLM's FusedMoEConfig has no is_lora_enabled")
        kwargs["is_lora_enabled"] = True
    if "intermediate_size" in fields:
        kwargs["intermediate_size"] = layer["intermediate_size"]
    else:
        per_rank = layer["intermediate_size"] // parallel.tp_size
        kwargs["intermediate_size_per_partition"] = per_rank
        kwargs["intermediate_size_per_partition_unpadded"] = per_rank
        kwargs["hidden_dim_unpadded"] = layer["hidden_size"]
    if "is_act_and_mul" in fields:
        kwargs["is_act_and_mul"] = bool(getattr(activation, "is_gated", True))
    for opt in ("swiglu_alpha", "swiglu_limit", "swiglu_beta"):
        if layer.get(opt) is not None and opt in fields:
            kwargs[opt] = layer[opt]
    return ns.FusedMoEConfig(**kwargs)


class _StandIn:
    """A vLLM object holding only the attributes the harness models; reading any other
    is an AttributeError naming it, so a vLLM release that reads more fails loudly
    instead of answering from a default."""

    _what = "object"

    def __init__(self, **attrs):
        self.__dict__.update(attrs)

    def __getattr__(self, name):
        raise AttributeError(
            f"conformance stand-in {self._what} has no {name!r}: vLLM read a field the "
            f"harness does not model")


class _StandInParallelArgs(_StandIn):
    """What FusedMoEParallelConfig.make() reads from vLLM's ParallelConfig
    (config.py:1198-1201, 1223-1224, 1243-1244): enable_expert_parallel,
    all2all_backend, enable_eplb -- taken from the validated ParallelConfig."""

    _what = "ParallelConfig"


class _RankZeroGroup:
    def __init__(self, world_size: int):
        self.world_size = world_size
        self.rank_in_group = 0


@contextlib.contextmanager
def _rank_zero(ns, dp: int, pcp: int = 1):
    """make() asks torch.distributed for this process's ranks (config.py:1204-1206,
    1109); the harness answers as rank 0 of every group, patched in the module
    namespace make() reads (vllm.model_executor.layers.fused_moe.config)."""
    mod = ns.moe_config_module
    fakes = {
        "get_dp_group": lambda: _RankZeroGroup(dp),
        "get_pcp_group": lambda: _RankZeroGroup(pcp),
        "get_tensor_model_parallel_rank": lambda: 0,
    }
    saved = {k: getattr(mod, k) for k in fakes if hasattr(mod, k)}
    for k in saved:
        setattr(mod, k, fakes[k])
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(mod, k, v)


def _deployment_flags(case: dict) -> dict:
    return {
        "tp": int(case.get("tp", 1)),
        "dp": int(case.get("dp", 1)),
        "ep": bool(case.get("ep", False)),
        "all2all": case.get("all2all"),
        "eplb": bool(case.get("eplb", False)),
    }


def _validate_parallel(ns, flags: dict):
    """vLLM's own ParallelConfig for the flags (the engine builds it from
    --tensor-parallel-size / --data-parallel-size / --enable-expert-parallel /
    --enable-eplb / --all2all-backend): its validators are the answer
    (config/parallel.py:521-609 -- EPLB needs EP, a CUDA/ROCm/XPU device and
    TP*PCP*DP > 1; 'naive'/'pplx' fall back to allgather_reducescatter -- and
    __post_init__ 962-1135).  A pydantic ValidationError is unwrapped to the
    ValueError vLLM's validator raised."""
    kwargs = {
        "tensor_parallel_size": flags["tp"],
        "data_parallel_size": flags["dp"],
        "enable_expert_parallel": flags["ep"],
        "enable_eplb": flags["eplb"],
    }
    if flags["all2all"] is not None:
        kwargs["all2all_backend"] = flags["all2all"]
    try:
        return ns.ParallelConfig(**kwargs)
    except Exception as e:
        inner = None
        errors = getattr(e, "errors", None)
        if callable(errors):
            try:
                for err in errors():
                    cand = (err.get("ctx") or {}).get("error")
                    if isinstance(cand, BaseException):
                        inner = cand
                        break
            except Exception:  # noqa: BLE001
                inner = None
        if inner is not None:
            inner.__conformance_wrapped_in__ = type(e).__name__
            raise inner from e
        raise


def _make_parallel(ns, flags: dict, validate: bool):
    """vLLM's FusedMoEParallelConfig.make() for the flags, as make_parallel_config
    calls it (layer.py:47-72: tp_size_ = TP world size, dp_size_ = DP world size,
    pcp 1, sp 1); with ``validate`` the flags go through vLLM's ParallelConfig
    first and make() reads the validated values."""
    enable_ep, all2all, eplb = flags["ep"], flags["all2all"], flags["eplb"]
    if all2all is None:
        from vllm.config import ParallelConfig

        all2all = ParallelConfig.__dataclass_fields__["all2all_backend"].default
    if validate:
        pc = _validate_parallel(ns, flags)
        enable_ep, all2all, eplb = pc.enable_expert_parallel, pc.all2all_backend, pc.enable_eplb
    args = _StandInParallelArgs(enable_expert_parallel=enable_ep, all2all_backend=all2all,
                                enable_eplb=eplb)
    with _rank_zero(ns, flags["dp"]):
        return ns.FusedMoEParallelConfig.make(
            tp_size_=flags["tp"], pcp_size_=1, dp_size_=flags["dp"], sp_size_=1,
            vllm_parallel_config=args)


def _parallel_dict(pc) -> dict:
    out = {}
    for k in ("tp_size", "dp_size", "ep_size", "use_ep", "all2all_backend", "enable_eplb",
              "use_all2all_kernels", "use_batched_activation_format"):
        try:
            out[k] = getattr(pc, k)
        except Exception as e:  # noqa: BLE001 - a property this version lacks
            out[k] = f"<{type(e).__name__}>"
    return out


def _local_num_experts(ns, layer: dict, parallel, eplb: bool) -> int:
    """The factory's local expert count: vLLM's ExpertMapManager (layer.py:291-302)
    with the default placement ("linear") and no redundant experts."""
    max_tokens = ns.FusedMoEConfig.__dataclass_fields__["max_num_tokens"].default
    emm = ns.ExpertMapManager(
        max_num_batched_tokens=max_tokens, top_k=layer["top_k"],
        global_num_experts=layer["num_experts"], num_redundant_experts=0,
        num_expert_group=None, moe_parallel_config=parallel,
        placement_strategy=ns.ParallelConfig.__dataclass_fields__[
            "expert_placement_strategy"].default,
        enable_eplb=eplb, num_fused_shared_experts=0,
        rocm_aiter_enabled=bool(_aiter_fused_moe_enabled()))
    return int(emm.local_num_experts)


def _aiter_fused_moe_enabled() -> bool:
    # layer.py:301: rocm_aiter_ops.is_fused_moe_enabled() and is_act_and_mul
    # (both families' activations are gated).
    aiter_ops = sys.modules.get("vllm._aiter_ops")
    ops = getattr(aiter_ops, "rocm_aiter_ops", None)
    return bool(ops is not None and ops.is_fused_moe_enabled())


def _qkey_name(ns, key) -> str | None:
    if key is None:
        return None
    for name, val in vars(ns.quant_utils).items():
        if name.startswith("k") and val is key:
            return name
    for name, val in vars(ns.quant_utils).items():
        if name.startswith("k") and isinstance(val, type(key)) and val == key:
            return name
    return str(key)


class _StandInModelConfig(_StandIn):
    """What the oracle reads from get_current_vllm_config(): only
    ``model_config.quantization_config`` (vLLM's own parsed QuantizationConfigArgs);
    for a checkpoint case also ``model_config.hf_config`` (QuarkOCP_MX_MoEMethod.__init__
    reads its ``model_type``, quark_moe.py:1657-1659)."""

    _what = "ModelConfig"

    def __init__(self, quantization_config, hf_config=None):
        super().__init__(quantization_config=quantization_config,
                         **({} if hf_config is None else {"hf_config": hf_config}))


class _StandInHfConfig(_StandIn):
    """The checkpoint's HF config as far as the quant methods read it: ``model_type``
    (``gpt_oss`` / ``deepseek_v4``, the model_type of the family's config.json)."""

    _what = "hf_config"


class _StandInVllmConfig(_StandIn):
    _what = "VllmConfig"

    def __init__(self, quantization_config, hf_config=None):
        super().__init__(model_config=_StandInModelConfig(quantization_config, hf_config))


def _class_trace(ns, backend, experts_cls, pinned: bool, moe) -> tuple[list, list | None]:
    """The winning backend's is_supported_config verdicts, as vLLM's selection
    made them: the last calls recorded, one per class vLLM tried for that backend,
    up to and including the winner.  Returns (trace, mismatch): ``mismatch`` is
    None when the traced classes are exactly the head of vLLM's own candidate list
    for the backend -- ``_requested_kernel_cls`` for a pinned --moe-backend
    (0.33 oracle/mxfp4.py:571-594, which puts TrtLlmMxfp4LoRAExperts first under
    LoRA), ``backend_to_kernel_cls`` for auto -- else that list's names."""
    requested = getattr(ns.oracle, "_requested_kernel_cls", None)
    if pinned and requested is not None:
        candidates = list(requested(backend, moe))
    else:
        candidates = list(ns.oracle.backend_to_kernel_cls(backend))
    if experts_cls not in candidates:
        return [], [c.__name__ for c in candidates]
    k = candidates.index(experts_cls) + 1
    calls = _ISC_CALLS[-k:]
    trace = [[c.__name__, why] for c, _, why in calls]
    ok = (len(calls) == k and [c for c, _, _ in calls] == candidates[:k]
          and calls[-1][1] and not any(v for _, v, _ in calls[:-1]))
    return trace, None if ok else [c.__name__ for c in candidates]


def _run_case(ns, case: dict, layer: dict) -> dict:
    """One case, in the order vLLM builds a MoE layer: ParallelConfig (engine
    args), FusedMoEParallelConfig.make() and the expert map (FusedMoEFactory,
    layer.py:238-302), the FusedMoEConfig, then RoutedExperts.__init__
    (routed_experts.py:165-199): the quant method's __init__ runs the selection,
    maybe_roundup_sizes pads, and only then is EPLB refused when the quant
    method's supports_eplb is false."""
    out: dict = {"id": case["id"]}
    _apply_libraries(case["libraries"])
    _clear_once_caches()
    _CAPTURE.records.clear()
    _HELPER_CALLS.clear()
    _ISC_CALLS.clear()
    _SELECT_CALLS.clear()
    family = case.get("family", "gpt-oss")
    checkpoint = case.get("checkpoint")
    flags = _deployment_flags(case)
    axes = ns.deployment_axes
    out["routing_method"] = None
    out["parallel"] = None
    out["class_trace"] = None
    out["hidden_rounded"] = None
    phase = "config"
    backend = experts_cls = None
    try:
        override = case.get("override")
        qargs = ns.resolve_quantization_config(
            None, None if override is None else {"moe": {"activation": override}})
        ckpt = case.get("checkpoint_activation")
        ckpt_key = None if ckpt is None else getattr(ns.quant_utils, ckpt)
        tp = flags["tp"]
        if axes:
            phase = "parallel_config"
            validate = flags["ep"] or flags["eplb"] or flags["dp"] > 1 or \
                flags["all2all"] is not None
            parallel = _make_parallel(ns, flags, validate)
            out["parallel"] = _parallel_dict(parallel)
            local = _local_num_experts(ns, layer, parallel, flags["eplb"])
            out["num_local_experts"] = local
            # ParallelConfig / expert-map log lines are kept apart from the selection's.
            out["parallel_config_logs"] = [
                _clip(f"{logging.getLevelName(r.levelno)}: {r.getMessage()}")
                for r in _CAPTURE.records]
            _CAPTURE.records.clear()
            _HELPER_CALLS.clear()  # ExpertMapManager's AITER query is not the selection's
            phase = "moe_config"
            moe = _make_moe_config(ns, layer, case["moe_backend"], parallel=parallel,
                                   lora=bool(case.get("lora")), routing=case.get("routing"),
                                   num_local_experts=local)
        else:
            phase = "moe_config"
            moe = _make_moe_config(ns, layer, case["moe_backend"], tp,
                                   routing=case.get("routing"))
            out["parallel"] = _parallel_dict(moe.moe_parallel_config)
        out["routing_method"] = getattr(moe.routing_method, "name", str(moe.routing_method))
        phase = "select"
        hf_config = None
        if checkpoint is not None:
            if not axes:
                raise RuntimeError("checkpoint families run on the deployment-axes versions only")
            phase = "method"
            out["method"] = CHECKPOINT_METHODS.get(checkpoint)
            out["method_built"] = True
            out["method_key"] = None
            hf_config = _StandInHfConfig(model_type=FAMILY_MODEL_TYPES[family])
        with ns.set_current_vllm_config(_StandInVllmConfig(qargs, hf_config)):
            if checkpoint is not None:
                # The layer's real quant method: its __init__ makes the choice
                # (routed_experts.py:165), exactly as for that checkpoint in vLLM.
                qm = _build_checkpoint_method(ns, checkpoint, moe, out)
                out["method"] = type(qm).__name__
                backend, experts_cls = qm.mxfp4_backend, qm.experts_cls
                out["method_flags"] = _method_flags(qm)
            elif family == "deepseek-v4":
                # Mxfp4MoEMethod.__init__ (quantization/mxfp4.py:549-580): the Kimi-K3
                # SiTU branches need activation SITU, so a SiLU layer reaches
                # select_deepseek_v4_mxfp4_moe_backend(moe) -- no activation key.
                backend, experts_cls = ns.oracle.select_deepseek_v4_mxfp4_moe_backend(moe)
            else:
                backend, experts_cls = ns.oracle.select_mxfp4_moe_backend(
                    moe, activation_key=ckpt_key)
            out["backend"] = backend.name
            out["experts_cls"] = None if experts_cls is None else experts_cls.__name__
            out["activation_key"] = _qkey_name(ns, ns.oracle._backend_activation_key(backend))
            if checkpoint is not None:
                out["selector_calls"] = _selector_calls(ns)
                # the trace of the method's one selector call (None: it chose itself)
                traced = ((_SELECT_CALLS[0]["backend"], _SELECT_CALLS[0]["experts_cls"])
                          if len(_SELECT_CALLS) == 1 else None)
            else:
                traced = (backend, experts_cls)
            if traced is not None:
                trace, mismatch = _class_trace(ns, traced[0], traced[1],
                                               case["moe_backend"] != "auto", moe)
                out["class_trace"] = trace
                if mismatch is not None:
                    out["class_trace_mismatch"] = mismatch
            phase = "padding"
            if checkpoint is not None:
                # the method's own maybe_roundup_sizes (RoutedExperts.__init__,
                # routed_experts.py:173-182) -- inherited from FusedMoEMethodBase
                # (all2all round-up only) where the class defines none
                out["padding_from"] = next(k.__name__ for k in type(qm).__mro__
                                           if "maybe_roundup_sizes" in vars(k))
                out["supports_eplb"] = bool(qm.supports_eplb)
                hidden, ipp = layer["hidden_size"], moe.intermediate_size_per_partition
                rounded, _ = ns.FusedMoEMethodBase.maybe_roundup_sizes(
                    qm, hidden, ipp, moe.in_dtype, moe.moe_parallel_config)
                out["hidden_rounded"] = int(rounded)
                padded = qm.maybe_roundup_sizes(hidden, ipp, moe.in_dtype,
                                                moe.moe_parallel_config)
            elif axes:
                # The quant method's own maybe_roundup_sizes, as RoutedExperts.__init__
                # calls it (routed_experts.py:173-182): the all2all round-up
                # (fused_moe_method_base.py:71-100 -> all2all_utils.py:148-187, 172-175; DeepEP
                # low-latency: prepare_finalize/deepep_ll.py:57-79), then MXFP4 padding.
                # (The factory's EPLB expert-divisibility check, layer.py:271-279,
                # never fires here: 32 and 256 experts divide every EP size.)
                qm = _quant_method(ns, family, moe, backend, experts_cls)
                hidden, ipp = layer["hidden_size"], moe.intermediate_size_per_partition
                rounded, _ = ns.FusedMoEMethodBase.maybe_roundup_sizes(
                    qm, hidden, ipp, moe.in_dtype, moe.moe_parallel_config)
                out["hidden_rounded"] = int(rounded)
                padded = qm.maybe_roundup_sizes(hidden, ipp, moe.in_dtype,
                                                moe.moe_parallel_config)
            else:
                pad_fn = ns.oracle.mxfp4_round_up_hidden_size_and_intermediate_size
                # as the quant method calls it: with the per-rank intermediate size
                padded = pad_fn(backend, layer["hidden_size"], layer["intermediate_size"] // tp)
            out["padded"] = [int(padded[0]), int(padded[1])]
            if axes and moe.moe_parallel_config.enable_eplb:
                phase = "eplb"
                out["supports_eplb"] = bool(qm.supports_eplb)
                if not qm.supports_eplb:
                    # vLLM's refusal, routed_experts.py:186-199 (message transcribed).
                    raise NotImplementedError(
                        f"EPLB is not supported {qm.__class__.__name__}.")
        out["error"] = None
    except Exception as e:  # noqa: BLE001 - vLLM's answer is the exception
        if checkpoint is not None:
            out["selector_calls"] = _selector_calls(ns)
        if phase != "eplb":
            # vLLM refused before a backend stood (the eplb refusal keeps the backend
            # the quant method had selected, for information).
            out["backend"] = None
            out["experts_cls"] = None
            out["activation_key"] = None
            out["padded"] = None
            out["class_trace"] = None
            out["hidden_rounded"] = None
        out["error"] = {"type": type(e).__name__, "message": str(e), "phase": phase}
        wrapped = getattr(e, "__conformance_wrapped_in__", None)
        if wrapped:
            out["error"]["wrapped_in"] = wrapped
        if not isinstance(e, (ValueError, NotImplementedError)):
            out["error"]["traceback"] = traceback.format_exc(limit=8)
    logs = {"warning": [], "info": [], "debug": []}
    for r in _CAPTURE.records:
        try:
            msg = r.getMessage()
        except Exception:  # noqa: BLE001
            msg = str(r.msg)
        level = "warning" if r.levelno >= logging.WARNING else (
            "info" if r.levelno >= logging.INFO else "debug")
        logs[level].append(msg)
    out["warnings"] = logs["warning"]
    out["infos"] = logs["info"]
    out["debug"] = logs["debug"]
    out["helper_calls"] = dict(_HELPER_CALLS)
    return out


def _clip(text: str, n: int = 400) -> str:
    # the expert-map line lists every local expert (256 for DeepSeek-V4)
    return text if len(text) <= n else text[:n] + f"... [{len(text) - n} more chars]"


def _quant_method(ns, family: str, moe, backend, experts_cls):
    """The family's quant method object after its __init__'s selection: vLLM's own
    class, initialised through FusedMoEMethodBase.__init__ (fused_moe_method_base.py:
    29-33), with the two attributes the subclass __init__ sets from the selection
    (quantization/mxfp4.py:158, 578-580) -- so its maybe_roundup_sizes and
    supports_eplb are vLLM's code, not the harness's."""
    cls = ns.quant_methods[family]
    qm = cls.__new__(cls)
    ns.FusedMoEMethodBase.__init__(qm, moe)
    qm.mxfp4_backend = backend
    qm.experts_cls = experts_cls
    return qm


# ----------------------------------------------------------------------------
# Checkpoint families (Case.checkpoint, vLLM 0.33): the layer's REAL quant method
# ----------------------------------------------------------------------------
#: Case.checkpoint -> the FusedMoEMethodBase subclass vLLM 0.33 builds for that
#: checkpoint's MoE layer (= matrix/vllm.toml [release."0.33.0".checkpoint.NAME]
#: moe_method).  How each is built: _build_checkpoint_method.
CHECKPOINT_METHODS: dict[str, str] = {
    "gpt-oss-mxfp4": "GptOssMxfp4MoEMethod",
    "mxfp4": "Mxfp4MoEMethod",
    "deepseek-v4-fp8": "Mxfp4MoEMethod",
    "quark-w-mxfp4": "QuarkOCP_MX_MoEMethod",
    "quark-w-mxfp4-a-fp8": "QuarkOCP_MX_MoEMethod",
    "quark-w-mxfp4-a-mxfp4": "QuarkOCP_MX_MoEMethod",
    "online-mxfp4": "Mxfp4OnlineMoEMethod",
    "compressed-tensors-mxfp4": "CompressedTensorsW4A4Mxfp4MoEMethod",
    "compressed-tensors-w4a8-fp8": "CompressedTensorsW4A8Mxfp4MoEMethod",
}

#: The config.json model_type of each family's checkpoints (the stand-in hf_config).
FAMILY_MODEL_TYPES = {"gpt-oss": "gpt_oss", "deepseek-v4": "deepseek_v4"}

#: Quark checkpoints: the ``quantization_config`` of an AMD-Quark OCP-MX export (the
#: fields vLLM's QuarkConfig reads: export.kv_cache_group / pack_method, quark.py:269-344;
#: global_quant_config weight / input_tensors / output_tensors / bias, quark_moe.py:177-185;
#: layer_quant_config, layer_type_quant_config, exclude, quark.py:764-786, 240-246).
#: Weights: OCP MXFP4 (fp4, per_group 32, e8m0 scales; ocp_mx_utils.py:50-81).
_QUARK_W_MXFP4 = {"dtype": "fp4", "qscheme": "per_group", "group_size": 32, "ch_axis": -1,
                  "scale_format": "e8m0", "is_dynamic": False, "symmetric": None,
                  "round_method": "half_even", "scale_calculation_mode": "even"}
QUARK_INPUT_TENSORS: dict[str, dict | None] = {
    "quark-w-mxfp4": None,  # weight-only (W4A16)
    # static per-tensor symmetric FP8 inputs -> kFp8StaticTensorSym (quark.py:679-686)
    "quark-w-mxfp4-a-fp8": {"dtype": "fp8_e4m3", "qscheme": "per_tensor", "ch_axis": None,
                            "group_size": None, "is_dynamic": False, "symmetric": True,
                            "round_method": "half_even"},
    # dynamic OCP MXFP4 inputs -> kMxfp4Dynamic (quark.py:703-712)
    "quark-w-mxfp4-a-mxfp4": dict(_QUARK_W_MXFP4, is_dynamic=True),
}
#: The routed-experts layer's prefix the Quark config is asked about.
QUARK_EXPERTS_PREFIX = "model.layers.0.mlp.experts"

#: Method attributes reported as ``method_flags`` (those that steer the kernel beside
#: mxfp4_backend / experts_cls), where the method has them.
METHOD_FLAGS = ("use_cutlass_mxfp4", "ocp_mx_scheme", "input_dtype", "weight_dtype",
                "static_input_scales", "is_k3_situ_aiter", "is_k3_situ_int4_gfx942")

_SELECT_CALLS: list[dict] = []
_SELECTORS = ("select_mxfp4_moe_backend", "select_deepseek_v4_mxfp4_moe_backend")


def _quark_config_dict(name: str) -> dict:
    return {
        "quant_method": "quark",
        "export": {"kv_cache_group": [], "pack_method": "reorder", "weight_format": "real_quantized",
                   "weight_merge_groups": None},
        "global_quant_config": {"weight": dict(_QUARK_W_MXFP4),
                                "input_tensors": QUARK_INPUT_TENSORS[name],
                                "output_tensors": None, "bias": None},
        "layer_quant_config": {},
        "layer_type_quant_config": {},
        "exclude": [],
    }


class _StandInRoutedExperts(_StandIn):
    """The layer object QuarkMoEMethod.get_moe_method receives: it reads only
    ``module.moe_config`` for QuarkOCP_MX_MoEMethod (quark_moe.py:292-297)."""

    _what = "RoutedExperts"


def _recording_selector(fn, name: str):
    """Observe (never change) a quant method module's call of an oracle selector:
    the activation key it passes and what came back."""
    def selector(*args, **kwargs):
        key = kwargs.get("activation_key", args[1] if len(args) > 1 else None)
        rec = {"fn": name, "activation_key": key, "backend": None, "experts_cls": None}
        _SELECT_CALLS.append(rec)
        res = fn(*args, **kwargs)
        rec["backend"], rec["experts_cls"] = res
        return res

    selector.__wrapped__ = fn
    selector.__name__ = name
    return selector


def _setup_checkpoints(ns) -> None:
    """Import the quant-method modules of the checkpoint families (vLLM 0.33) and
    observe their selector calls (the modules bind the selectors at import:
    ``from ...oracle.mxfp4 import select_mxfp4_moe_backend``; the wrapper in their
    namespace records each call and returns vLLM's result unchanged)."""
    q = "vllm.model_executor.layers.quantization."
    ct = q + "compressed_tensors."
    modules = {
        "mxfp4": q + "mxfp4",
        "quark": q + "quark.quark",
        "quark_moe": q + "quark.quark_moe",
        "online": q + "online.mxfp4",
        "ct_config": ct + "compressed_tensors",
        "ct_w4a4": ct + "compressed_tensors_moe.compressed_tensors_moe_w4a4_mxfp4",
        "ct_w4a8": ct + "compressed_tensors_moe.compressed_tensors_moe_w4a8_mxfp4",
    }
    ck = types.SimpleNamespace(errors={})
    for key, name in modules.items():
        try:
            setattr(ck, key, importlib.import_module(name))
        except Exception as e:  # noqa: BLE001 - reported; the case then raises it
            ck.errors[key] = f"{type(e).__name__}: {e}"
            setattr(ck, key, None)
    for key in ("mxfp4", "quark_moe", "online", "ct_w4a4", "ct_w4a8"):
        mod = getattr(ck, key)
        for fname in _SELECTORS:
            fn = getattr(mod, fname, None) if mod is not None else None
            if fn is not None and not hasattr(fn, "__wrapped__"):
                setattr(mod, fname, _recording_selector(fn, fname))
    from vllm.model_executor.layers.fused_moe import RoutedExperts

    ck.RoutedExperts = RoutedExperts
    # compressed-tensors: the scheme arguments of each checkpoint, as vLLM parses them
    # (compressed_tensors.QuantizationArgs) -- weights MXFP4 (float, 4 bits, group 32,
    # symmetric); W4A8: per-token dynamic symmetric FP8 inputs; W4A4: dynamic MXFP4 inputs.
    ck.ct_dispatch = None
    if ck.ct_config is not None:
        try:
            from compressed_tensors.quantization import QuantizationArgs

            w = QuantizationArgs(num_bits=4, type="float", strategy="group", group_size=32,
                                 symmetric=True, dynamic=False)
            a8 = QuantizationArgs(num_bits=8, type="float", strategy="token", symmetric=True,
                                  dynamic=True)
            a4 = QuantizationArgs(num_bits=4, type="float", strategy="group", group_size=32,
                                  symmetric=True, dynamic=True)
            cfg = ck.ct_config.CompressedTensorsConfig
            # The branch CompressedTensorsMoEMethod.get_moe_method takes for each
            # (compressed_tensors_moe.py:66-81), asked of vLLM's own predicates.
            ck.ct_dispatch = {
                "compressed-tensors-w4a8-fp8": bool(cfg._is_mxfp4_w4a8_fp8(w, a8)),
                "compressed-tensors-mxfp4": (not cfg._is_mxfp4_w4a8_fp8(w, a4)
                                             and bool(cfg._is_mxfp4(w))),
            }
            ck.ct_w4a8_key = cfg._fp8_dynamic_input_key(a8)
        except Exception as e:  # noqa: BLE001
            ck.errors["ct_args"] = f"{type(e).__name__}: {e}"
    ns.checkpoint = ck
    ns.setup_notes["checkpoint_imports"] = ck.errors or "ok"
    ns.setup_notes["compressed_tensors_dispatch"] = ck.ct_dispatch


def _build_checkpoint_method(ns, name: str, moe, out: dict):
    """The quant method vLLM 0.33 builds for checkpoint ``name``'s MoE layer, built
    through the same code path (see vllm_harness.CHECKPOINTS).  ``out["method"]`` /
    ``out["method_key"]`` are set before the class's ``__init__`` runs, so an
    exception it raises still names them."""
    ck = getattr(ns, "checkpoint", None)
    if ck is None:
        raise RuntimeError("checkpoint families need the 0.33 setup (_setup_checkpoints)")
    needs = {"gpt-oss-mxfp4": "mxfp4", "mxfp4": "mxfp4", "deepseek-v4-fp8": "mxfp4",
             "online-mxfp4": "online", "compressed-tensors-mxfp4": "ct_w4a4",
             "compressed-tensors-w4a8-fp8": "ct_w4a8"}.get(name, "quark_moe")
    if getattr(ck, needs, None) is None or (name.startswith("quark-") and ck.quark is None):
        raise RuntimeError(f"harness could not import the {name} quant method: {ck.errors}")
    qu = ns.quant_utils
    if name == "gpt-oss-mxfp4":
        # GptOssMxfp4Config._make_moe_method (quantization/mxfp4.py:147-148)
        out["method"], out["method_key"] = "GptOssMxfp4MoEMethod", None
        return ck.mxfp4.GptOssMxfp4Config()._make_moe_method(moe)
    if name == "mxfp4":
        # Mxfp4Config._make_moe_method: Mxfp4MoEMethod(moe) (quantization/mxfp4.py:86-89)
        out["method"], out["method_key"] = "Mxfp4MoEMethod", None
        return ck.mxfp4.Mxfp4Config()._make_moe_method(moe)
    if name == "deepseek-v4-fp8":
        # DeepseekV4FP8Config.get_quant_method, expert_dtype fp4 (deepseek_v4/quant_config.py:227)
        out["method"], out["method_key"] = "Mxfp4MoEMethod", "kMxfp8Dynamic"
        return ck.mxfp4.Mxfp4MoEMethod(moe, activation_key=qu.kMxfp8Dynamic)
    if name.startswith("quark-"):
        # QuarkConfig.get_quant_method (quark.py:176-213) for a RoutedExperts layer:
        # get_quant_method_target -> QuarkMoEMethod.get_moe_method
        cfg = ck.quark.QuarkConfig.from_config(_quark_config_dict(name))
        wkey, akey, cls = cfg.get_quant_method_target(QUARK_EXPERTS_PREFIX, ck.RoutedExperts)
        out["method"] = getattr(cls, "__name__", str(cls))
        out["method_key"] = _qkey_name(ns, akey)
        return ck.quark_moe.QuarkMoEMethod.get_moe_method(
            cfg, module=_StandInRoutedExperts(moe_config=moe), method_cls=cls, weight_quant_key=wkey,
            activation_quant_key=akey, layer_name=QUARK_EXPERTS_PREFIX)
    if name == "online-mxfp4":
        # OnlineQuantizationConfig.get_quant_method (online/base.py:400-402)
        cls = ck.online.Mxfp4OnlineMoEMethod
        out["method"] = cls.__name__
        out["method_key"] = _qkey_name(ns, cls.activation_quant_key)
        return cls(moe=moe)
    if ck.ct_dispatch is None or not ck.ct_dispatch.get(name):
        raise RuntimeError(f"compressed-tensors dispatch for {name} is not what the harness "
                           f"assumes: {ck.ct_dispatch} {ck.errors}")
    if name == "compressed-tensors-mxfp4":
        # compressed_tensors_moe.py:76-81
        cls = ck.ct_w4a4.CompressedTensorsW4A4Mxfp4MoEMethod
        out["method"], out["method_key"] = cls.__name__, None
        return cls(moe)
    if name == "compressed-tensors-w4a8-fp8":
        # compressed_tensors_moe.py:66-74
        cls = ck.ct_w4a8.CompressedTensorsW4A8Mxfp4MoEMethod
        out["method"], out["method_key"] = cls.__name__, _qkey_name(ns, ck.ct_w4a8_key)
        return cls(moe, activation_key=ck.ct_w4a8_key)
    raise RuntimeError(f"unknown checkpoint {name!r}")


def _method_flags(method) -> dict:
    out = {}
    for k in METHOD_FLAGS:
        if k in vars(method):
            v = vars(method)[k]
            out[k] = v if isinstance(v, (bool, int, str, type(None))) else str(v)
    return out


def _selector_calls(ns) -> list[dict]:
    return [{"fn": r["fn"], "activation_key": _qkey_name(ns, r["activation_key"]),
             "backend": None if r["backend"] is None else r["backend"].name,
             "experts_cls": None if r["experts_cls"] is None else r["experts_cls"].__name__}
            for r in _SELECT_CALLS]


def run_job(job_path: str, out_path: str) -> int:
    """Run one (version, arch) job in this process and write its output file."""
    with open(job_path) as f:
        job = json.load(f)
    _JOB.update(job)
    t0 = time.monotonic()
    try:
        ns = _setup(job)
        t_import = time.monotonic() - t0
        import_logs = [f"{logging.getLevelName(r.levelno)}: {r.getMessage()}"
                       for r in _CAPTURE.records if r.levelno >= logging.WARNING]
        _CAPTURE.records.clear()
        meta = {
            "platform": type(ns.platform).__name__,
            "device_capability": str(ns.platform.get_device_capability()),
            "fp8_dtype": str(ns.platform.fp8_dtype()),
            "map_mxfp4_backend_keys": _mapping_keys(ns),
            "import_seconds": round(t_import, 3),
            "import_warnings": import_logs,
            "kernel_import_errors": ns.kernel_import_errors,
            "pid": os.getpid(),
        }
        meta["quant_min_capability"] = _quant_min_capabilities()
        meta["kernel_config"] = _kernel_config_verdicts(
            sorted({c["moe_backend"] for c in job["cases"]} | {"auto"}))
        meta["library_helpers"] = {
            lib: [f"{m}.{n}" for m, n in pairs if (m, n) in _ORIGINALS]
            for lib, pairs in LIBRARY_HELPERS.items()}
        try:
            meta["device_name"] = ns.platform.get_device_name()
        except Exception as e:  # noqa: BLE001 - pragma: no cover - informational
            meta["device_name"] = f"<{type(e).__name__}>"
        meta["setup_notes"] = ns.setup_notes
        if job.get("probe_classes"):
            meta["class_probe"] = _probe_classes(ns, job)
        if job.get("meta_only"):
            results = []
        else:
            # Group by library set so vLLM's memoised helpers are reset only
            # when the set changes; answers go back in the job's order.
            order = sorted(job["cases"], key=lambda c: (sorted(c["libraries"]), c["id"]))
            layers = dict(job.get("family_layers") or {}, **{"gpt-oss": job["layer"]})
            by_id = {c["id"]: _run_case(ns, c, layers[c.get("family", "gpt-oss")])
                     for c in order}
            results = [by_id[c["id"]] for c in job["cases"]]
        meta["run_seconds"] = round(time.monotonic() - t0 - t_import, 3)
        payload = {"ok": True, "meta": meta, "results": results}
    except BaseException as e:  # noqa: BLE001
        payload = {"ok": False, "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()}
    _write_json(out_path, payload)
    return 0 if payload["ok"] else 3


#: Activation keys every variant is asked about (quant_utils names; None = BF16).
PROBE_ACTIVATION_KEYS = (None, "kMxfp8Dynamic", "kFp8StaticTensorSym", "kFp8Dynamic128Sym",
                         "kMxfp4Dynamic")


def _probe_classes(ns, job: dict) -> dict:
    """Each Mxfp4MoeBackend member's own experts classes, asked directly: per
    library set and activation key, the first class whose ``is_supported_config``
    accepts the gpt-oss layer (standard activation format) or every class's
    reason, and the member's padding.  vLLM's code answers; nothing is decided here."""
    oracle = ns.oracle
    layer = job["layer"]
    members = [m for m in {m.value: m for m in oracle.Mxfp4MoeBackend}.values()
               if m.name != "NONE"]
    out: dict = {"padding": {}, "padding_per_rank": {}, "layers": {}}
    pad = oracle.mxfp4_round_up_hidden_size_and_intermediate_size
    for m in members:
        try:
            h, i = pad(m, layer["hidden_size"], layer["intermediate_size"])
            out["padding"][m.name] = [int(h), int(i)]
        except Exception as e:  # noqa: BLE001 - vLLM's answer
            out["padding"][m.name] = f"{type(e).__name__}: {e}"
        # Under tensor parallelism the quant method pads the per-rank intermediate size
        # (quantization/mxfp4.py maybe_roundup_sizes; FusedMoEConfig: intermediate // tp).
        for tp in (2, 4, 8):
            try:
                h, i = pad(m, layer["hidden_size"], layer["intermediate_size"] // tp)
                got: Any = [int(h), int(i)]
            except Exception as e:  # noqa: BLE001
                got = f"{type(e).__name__}: {e}"
            out["padding_per_rank"].setdefault(str(tp), {})[m.name] = got
    for name, probe_layer in job["probe_layers"].items():
        out["layers"][name] = _probe_layer(ns, members, probe_layer, job["probe_library_sets"])
    out.update(_probe_class_facts(ns, members, job.get("probe_parallel") or {}))
    return out


def _call(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - vLLM's answer (or the method's absence)
        return f"<{type(e).__name__}: {e}>"


def _probe_class_facts(ns, members: list, probe_parallel: dict) -> dict:
    """Per experts class reachable from any member (plus TrtLlmMxfp4LoRAExperts):
    the static facts is_supported_config combines, asked of the class itself --
    is_monolithic(), activation_format(), supports_lora(),
    _supports_parallel_config() over the named PROBE_PARALLEL configs (each built
    with vLLM's FusedMoEParallelConfig.make() from the raw flags, no ParallelConfig
    validation), and the RoutingMethodType names _supports_routing_method(rm,
    kMxfp4Static, key) accepts, per activation key of the members reaching the
    class (oracle._backend_activation_key).  Library set: all."""
    oracle = ns.oracle
    _apply_libraries(list(_JOB.get("libraries", [])))
    configs: dict = {}
    built: dict = {}
    for name, flags in probe_parallel.items():
        try:
            pc = _make_parallel(ns, _deployment_flags(flags), validate=False)
            built[name] = pc
            configs[name] = _parallel_dict(pc)
        except Exception as e:  # noqa: BLE001
            configs[name] = f"<{type(e).__name__}: {e}>"
    reach: dict[type, list] = {}
    for m in members:
        try:
            for cls in oracle.backend_to_kernel_cls(m):
                reach.setdefault(cls, []).append(m)
        except Exception:  # noqa: BLE001, S110 - in kernel_import_errors
            pass
    lora_cls = ns.lora_experts_cls
    requested = getattr(oracle, "_requested_kernel_cls", None)
    if lora_cls is not None and requested is not None:
        # the members whose pinned LoRA candidate list vLLM starts with it
        lora_moe = _make_moe_config(ns, _JOB["layer"], "auto", lora=True)
        for m in getattr(oracle, "TRTLLM_BACKENDS", ()):
            try:
                if lora_cls in requested(m, lora_moe):
                    reach.setdefault(lora_cls, []).append(m)
            except Exception:  # noqa: BLE001, S110 - e.g. MXFP8 + LoRA is refused
                pass
        reach.setdefault(lora_cls, [])
    routing = list(ns.RoutingMethodType)
    classes: dict = {}
    for cls, via in reach.items():
        fmt = _call(cls.activation_format)
        row: dict = {
            "module": cls.__module__,
            "members": [m.name for m in via],
            "monolithic": _call(cls.is_monolithic),  # is_monolithic()
            "format": getattr(fmt, "name", fmt),  # activation_format().name
            "lora": _call(cls.supports_lora) if hasattr(cls, "supports_lora")
            else None,  # supports_lora()
            "parallel": {name: _call(cls._supports_parallel_config, pc)
                         for name, pc in built.items()},
            "routing_methods": {},  # activation key name -> accepted names
        }
        for m in via:
            key = oracle._backend_activation_key(m)
            key_name = str(_qkey_name(ns, key))
            if key_name in row["routing_methods"]:
                continue
            row["routing_methods"][key_name] = [
                rm.name for rm in routing
                if _call(cls._supports_routing_method, rm, oracle.kMxfp4Static, key) is True]
        # accepted under every activation key that reaches the class (they agree
        # for every 0.33 / 0.22 MXFP4 class); all names for an unreached class
        per_key = list(row["routing_methods"].values())
        row["routing"] = ([rm.name for rm in routing if all(rm.name in x for x in per_key)]
                          if per_key else [rm.name for rm in routing if _call(
                              cls._supports_routing_method, rm, oracle.kMxfp4Static, None)
                              is True])
        classes[cls.__name__] = row
    return {"classes": classes, "parallel_configs": configs}


def _probe_layer(ns, members: list, layer: dict, library_sets: list[dict]) -> dict:
    oracle = ns.oracle
    mk = sys.modules["vllm.model_executor.layers.fused_moe.modular_kernel"]
    moe = _make_moe_config(ns, layer, "auto")
    fmt = mk.FusedMoEActivationFormat.Standard
    verdicts: dict = {}
    for libset in library_sets:
        _apply_libraries(libset["libraries"])
        per: dict = {}
        for m in members:
            try:
                classes = oracle.backend_to_kernel_cls(m)
            except Exception as e:  # noqa: BLE001
                per[m.name] = {"error": f"{type(e).__name__}: {e}"}
                continue
            row: dict = {}
            for key_name in PROBE_ACTIVATION_KEYS:
                key = None if key_name is None else getattr(ns.quant_utils, key_name)
                reasons = []
                chosen = None
                for cls in classes:
                    ok, why = cls.is_supported_config(cls, moe, oracle.kMxfp4Static, key, fmt)
                    if ok:
                        chosen = cls.__name__
                        break
                    reasons.append(f"{cls.__name__}: {why}")
                row[str(key_name)] = {"cls": chosen, "reasons": reasons}
            per[m.name] = row
        verdicts[libset["name"]] = per
    return verdicts


def _write_json(path: str, payload: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, path)


# Third-party modules vLLM imports on every platform; the zygote imports them
# once (after hiding HIDDEN_PACKAGES) and forks one child per arch, so each
# child pays only for vLLM's own modules.  vLLM itself is never imported in the
# zygote: every child imports it fresh, under its own arch's fakes.
PREIMPORT = (
    "torch", "torch._dynamo", "torch._inductor.standalone_compile", "torch.distributed",
    "numpy", "pydantic", "pydantic_core", "msgspec", "regex", "yaml", "cachetools",
    "psutil", "zmq", "cbor2", "cloudpickle", "transformers", "huggingface_hub",
    "tokenizers", "safetensors", "aiohttp", "openai", "openai_harmony", "fastapi",
    "starlette", "xgrammar", "llguidance", "partial_json_parser", "PIL", "prometheus_client",
)


def zygote(spec_path: str) -> int:
    """``--zygote SPEC.json``: SPEC = {"jobs": [[job_path, out_path], ...],
    "parallel": N, "timeout": seconds per job}.  Forks one child per job (at
    most N at a time), kills a child that overruns, and writes an error output
    for any child that died without one."""
    import signal

    with open(spec_path) as f:
        spec = json.load(f)
    for name in HIDDEN_PACKAGES:
        sys.modules.setdefault(name, None)
    t0 = time.monotonic()
    for name in PREIMPORT:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S110
            pass  # the child imports it (or fails) exactly as vLLM would
    preimport_s = round(time.monotonic() - t0, 3)
    pending = list(spec["jobs"])
    running: dict[int, tuple[str, str, float]] = {}
    parallel = max(1, int(spec.get("parallel", 2)))
    timeout = float(spec.get("timeout", 300))
    while pending or running:
        while pending and len(running) < parallel:
            job_path, out_path = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # child
                rc = 1
                try:
                    rc = run_job(job_path, out_path)
                    with open(out_path) as f:
                        payload = json.load(f)
                    if payload.get("ok"):
                        payload["meta"]["zygote_preimport_seconds"] = preimport_s
                        _write_json(out_path, payload)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(rc)
            running[pid] = (job_path, out_path, time.monotonic())
        time.sleep(0.05)
        for pid, (job_path, out_path, started) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0 and time.monotonic() - started > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                _write_json(out_path, {"ok": False, "error": f"timed out after {timeout:.0f}s",
                                       "traceback": ""})
                del running[pid]
            elif done != 0:
                if not os.path.exists(out_path):
                    _write_json(out_path, {"ok": False, "traceback": "",
                                           "error": f"worker exited with status {status} "
                                                    f"and no output"})
                del running[pid]
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--zygote":
        return zygote(argv[2])
    if len(argv) != 3:
        print("usage: _vllm_worker.py JOB.json OUT.json | --zygote SPEC.json", file=sys.stderr)
        return 2
    return run_job(argv[1], argv[2])


def _kernel_config_verdicts(names: list[str]) -> dict[str, str | None]:
    """Whether vLLM's own ``KernelConfig(moe_backend=NAME)`` accepts each name
    (``--moe-backend`` is validated there, against its ``MoEBackend`` literal,
    before any layer reaches the MXFP4 oracle): None, or the error."""
    from vllm.config.kernel import KernelConfig

    out: dict[str, str | None] = {}
    for name in names:
        try:
            KernelConfig(moe_backend=name)
            out[name] = None
        except Exception as e:  # noqa: BLE001 - the verdict is the exception
            text = " | ".join(line.strip() for line in str(e).splitlines() if line.strip())
            out[name] = f"{type(e).__name__}: {text[:400]}"
    return out


_QUANT_CONFIGS = {
    # method name -> (module, class) of the QuantizationConfig that reaches the
    # MXFP4 MoE oracle; imported one by one (get_quantization_config() would
    # import every method, and some need packages the selection does not).
    "mxfp4": ("vllm.model_executor.layers.quantization.mxfp4", "Mxfp4Config"),
    "quark": ("vllm.model_executor.layers.quantization.quark.quark", "QuarkConfig"),
    "compressed-tensors": (
        "vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors",
        "CompressedTensorsConfig"),
    "online": ("vllm.model_executor.layers.quantization.online.base",
               "OnlineQuantizationConfig"),
    "deepseek_v4_fp8": ("vllm.models.deepseek_v4.quant_config", "DeepseekV4FP8Config"),
}


def _quant_min_capabilities() -> dict[str, int | str]:
    """``get_min_capability()`` of the quantization methods that reach the
    MXFP4 MoE oracle (vLLM checks it against the device before building any
    layer), or why the class could not be imported here."""
    out: dict[str, int | str] = {}
    for name, (module, cls_name) in _QUANT_CONFIGS.items():
        try:
            cls = getattr(importlib.import_module(module), cls_name)
            out[name] = int(cls.get_min_capability())
        except Exception as e:  # noqa: BLE001
            out[name] = f"<{type(e).__name__}: {e}>"
    return out


def _mapping_keys(ns) -> list[str]:
    """The ``--moe-backend`` names vLLM maps to MXFP4 variants, read from
    map_mxfp4_backend itself: its error message lists the mapping's keys."""
    try:
        ns.oracle.map_mxfp4_backend("__conformance_probe__")
    except ValueError as e:
        msg = str(e)
        start = msg.find("Expected one of ")
        if start >= 0:
            import ast

            return list(ast.literal_eval(msg[start + len("Expected one of "):].rstrip(".")))
    raise RuntimeError("could not read map_mxfp4_backend's keys")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
