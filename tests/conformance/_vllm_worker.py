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
     "libraries": [...universe...], "cases": [{"id": 0, "moe_backend": "auto",
     "override": null, "checkpoint_activation": null, "libraries": [...]}, ...]}

The output file is JSON: ``{"ok": true, "results": [...], "meta": {...}}`` or
``{"ok": false, "error": "...", "traceback": "..."}``.
"""

from __future__ import annotations

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
from typing import Any
import types

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
        _on_import("vllm.platforms.cuda", cuda_hook)
    elif kind == "rocm":
        sys.modules["amdsmi"] = _fake_amdsmi(arch)
        torch.version.hip = arch.get("hip_runtime", "7.0.0")
        torch.version.cuda = None
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

    ns = types.SimpleNamespace(
        kernel_import_errors=kernel_import_errors,
        oracle=oracle, platform=current_platform,
        set_current_vllm_config=set_current_vllm_config,
        resolve_quantization_config=resolve_quantization_config,
        MoEActivation=MoEActivation, FusedMoEConfig=FusedMoEConfig,
        FusedMoEParallelConfig=FusedMoEParallelConfig,
        get_routing_method_type=get_routing_method_type, quant_utils=quant_utils,
        torch=torch,
    )
    return ns


def _make_moe_config(ns, layer: dict, moe_backend: str, tp: int = 1):
    """A real FusedMoEConfig for the layer, with the arguments vLLM's FusedMoE
    layer passes (vllm/model_executor/layers/fused_moe/layer.py: 0.33 builds it
    in its factory with ``intermediate_size``; 0.22 in FusedMoE.__init__ with
    ``intermediate_size_per_partition`` and ``is_act_and_mul``).  Only fields
    the version's dataclass declares are passed."""
    torch = ns.torch
    fields = getattr(ns.FusedMoEConfig, "__dataclass_fields__", {})
    activation = ns.MoEActivation.from_str(layer["activation"])
    kwargs = {
        "num_experts": layer["num_experts"],
        "experts_per_token": layer["top_k"],
        "hidden_dim": layer["hidden_size"],
        "num_local_experts": layer["num_experts"],
        "num_logical_experts": layer["num_experts"],
        "activation": activation,
        "device": ns.platform.device_type or "cpu",
        "routing_method": ns.get_routing_method_type(
            scoring_func=layer["scoring_func"], top_k=layer["top_k"],
            renormalize=layer["renormalize"], num_expert_group=None,
            has_e_score_bias=False),
        # Tensor parallelism alone: vLLM's no-parallel config with tp_size set (EP off,
        # DP 1); the layer holds intermediate // tp per rank.
        "moe_parallel_config": dataclasses.replace(
            ns.FusedMoEParallelConfig.make_no_parallel(), tp_size=tp),
        "in_dtype": getattr(torch, layer["dtype"]),
        "moe_backend": moe_backend,
        "has_bias": layer["has_bias"],
    }
    if "intermediate_size" in fields:
        kwargs["intermediate_size"] = layer["intermediate_size"]
    else:
        kwargs["intermediate_size_per_partition"] = layer["intermediate_size"] // tp
        kwargs["intermediate_size_per_partition_unpadded"] = layer["intermediate_size"] // tp
        kwargs["hidden_dim_unpadded"] = layer["hidden_size"]
    if "is_act_and_mul" in fields:
        kwargs["is_act_and_mul"] = bool(getattr(activation, "is_gated", True))
    for opt in ("swiglu_alpha", "swiglu_limit", "swiglu_beta"):
        if layer.get(opt) is not None and opt in fields:
            kwargs[opt] = layer[opt]
    return ns.FusedMoEConfig(**kwargs)


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


class _StandInModelConfig:
    """What the oracle reads from get_current_vllm_config(): only
    ``model_config.quantization_config`` (vLLM's own parsed QuantizationConfigArgs)."""

    def __init__(self, quantization_config):
        self.quantization_config = quantization_config


class _StandInVllmConfig:
    def __init__(self, quantization_config):
        self.model_config = _StandInModelConfig(quantization_config)

    def __getattr__(self, name):
        raise AttributeError(
            f"conformance stand-in VllmConfig has no {name!r}: vLLM's selection read "
            f"a config field the harness does not model")


def _run_case(ns, case: dict, layer: dict) -> dict:
    out: dict = {"id": case["id"]}
    _apply_libraries(case["libraries"])
    _clear_once_caches()
    _CAPTURE.records.clear()
    _HELPER_CALLS.clear()
    phase = "config"
    try:
        override = case.get("override")
        qargs = ns.resolve_quantization_config(
            None, None if override is None else {"moe": {"activation": override}})
        ckpt = case.get("checkpoint_activation")
        ckpt_key = None if ckpt is None else getattr(ns.quant_utils, ckpt)
        phase = "moe_config"
        tp = int(case.get("tp", 1))
        moe = _make_moe_config(ns, layer, case["moe_backend"], tp)
        phase = "select"
        with ns.set_current_vllm_config(_StandInVllmConfig(qargs)):
            backend, experts_cls = ns.oracle.select_mxfp4_moe_backend(moe, activation_key=ckpt_key)
            phase = "padding"
            pad_fn = ns.oracle.mxfp4_round_up_hidden_size_and_intermediate_size
            # as the quant method calls it: with the per-rank intermediate size
            padded = pad_fn(backend, layer["hidden_size"], layer["intermediate_size"] // tp)
        out["backend"] = backend.name
        out["experts_cls"] = None if experts_cls is None else experts_cls.__name__
        out["activation_key"] = _qkey_name(ns, ns.oracle._backend_activation_key(backend))
        out["padded"] = [int(padded[0]), int(padded[1])]
        out["error"] = None
    except Exception as e:  # noqa: BLE001 - vLLM's answer is the exception
        out["backend"] = None
        out["experts_cls"] = None
        out["activation_key"] = None
        out["padded"] = None
        out["error"] = {"type": type(e).__name__, "message": str(e), "phase": phase}
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
        if job.get("probe_classes"):
            meta["class_probe"] = _probe_classes(ns, job)
        if job.get("meta_only"):
            results = []
        else:
            # Group by library set so vLLM's memoised helpers are reset only
            # when the set changes; answers go back in the job's order.
            order = sorted(job["cases"], key=lambda c: (sorted(c["libraries"]), c["id"]))
            by_id = {c["id"]: _run_case(ns, c, job["layer"]) for c in order}
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
    return out


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
