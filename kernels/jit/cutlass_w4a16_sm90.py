"""Trimmed build of FlashInfer's SM90 CUTLASS fused-MoE JIT module for W4A16.

FlashInfer's ``gen_cutlass_fused_moe_sm90_module()`` compiles 248 translation
units (every dtype pair, every tile shape x cluster x schedule) -- 75-100 minutes
on 16 cores.  The MXFP4-weight x BF16-activation path (``CutlassW4A16Runner``) needs a small part of it:

* the non-generated sources that hold the binding, the heuristics, the
  interleave kernels and the ``MoeGemmRunner<bf16, fp4>`` dispatch
  (:data:`KEEP_SOURCES`);
* one ``CutlassMoeFCRunner<__nv_bfloat16, Fp4Type>`` instantiation instead of
  FlashInfer's ``cutlass_fused_moe_instantiation.cu`` (which instantiates 24
  runner types);
* a handful of the generated ``sm90_generic_mixed_moe_gemm_kernelLauncher``
  instantiations for ``__nv_bfloat16, SafeFP4`` -- the tiles that can run the
  gpt-oss shapes (see :data:`DEFAULT_TILES`) plus the one FlashInfer calls to
  size its workspace -- one per translation unit so they compile in parallel.

Everything else the kept code references is closed with generated stubs that
throw a clear error (:mod:`oracle.kernels.jit.stubs`), so the module loads and a
dropped configuration fails loudly instead of with ``undefined symbol``.

The build uses FlashInfer's own JIT machinery throughout: the ``JitSpec`` from
``gen_cutlass_fused_moe_sm90_module`` (same flags, include paths, ninja rules,
cache root ``FLASHINFER_JIT_DIR``), trimmed with ``dataclasses.replace``; the
module is loaded with ``JitSpec.build_and_load`` once :func:`install` points
FlashInfer's CUTLASS MoE loader at it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oracle.kernels.jit import stubs as _stubs
from oracle.kernels.jit.errors import KernelBuildError

__all__ = [
    "GENERATOR_VERSION", "DEFAULT_TILES", "WORKSPACE_TILE", "KEEP_SOURCES", "Tile",
    "Instantiation", "TrimmedBuild", "build_cutlass_w4a16_sm90", "install", "uninstall",
    "installed_module_name", "check_toolchain", "parse_generated_file", "cache_key",
]

#: Bumped whenever the trimming logic changes what gets built (part of the cache key).
GENERATOR_VERSION = 1

_MIXED_LAUNCHER = "sm90_generic_mixed_moe_gemm_kernelLauncher"
_SMALL_K_LAUNCHER = "sm90_generic_mixed_moe_small_k_kernelLauncher"
_W4A16_TYPES = ("__nv_bfloat16", "SafeFP4", "__nv_bfloat16")

#: Non-generated FlashInfer sources the W4A16 path needs (relative to FLASHINFER_CSRC_DIR).
KEEP_SOURCES: tuple[str, ...] = (
    "nv_internal/tensorrt_llm/kernels/cutlass_kernels/moe_gemm/moe_gemm_tma_warp_specialized_input.cu",
    "nv_internal/tensorrt_llm/kernels/cutlass_kernels/moe_gemm/moe_gemm_kernels_bf16_fp4.cu",
    "nv_internal/tensorrt_llm/kernels/cutlass_kernels/moe_gemm/moe_gemm_mixed_utils.cu",
    "fused_moe/cutlass_backend/flashinfer_cutlass_fused_moe_binding.cu",
    "fused_moe/cutlass_backend/deepgemm_jit_setup.cu",
    "nv_internal/cpp/common/envUtils.cpp",
    "nv_internal/cpp/common/logger.cpp",
    "nv_internal/cpp/common/stringUtils.cpp",
    "nv_internal/cpp/common/tllmException.cpp",
    "nv_internal/cpp/common/memoryUtils.cu",
    "nv_internal/tensorrt_llm/kernels/preQuantScaleKernel.cu",
    "nv_internal/tensorrt_llm/kernels/cutlass_kernels/cutlass_heuristic.cpp",
    "nv_internal/tensorrt_llm/kernels/lora/lora.cpp",
)
#: FlashInfer's all-types runner instantiation, replaced by a W4A16-only one.
_RUNNER_INSTANTIATION = "fused_moe/cutlass_backend/cutlass_fused_moe_instantiation.cu"
#: The runner types the W4A16 binding path constructs (template arguments, verbatim).
RUNNER_TYPES: tuple[str, ...] = ("__nv_bfloat16, Fp4Type",)
FINALIZE_TYPES: tuple[str, ...] = ("__nv_bfloat16, __nv_bfloat16, __nv_bfloat16",)


@dataclass(frozen=True, order=True)
class Tile:
    """One CUTLASS config of the mixed-input grouped GEMM: CTA tile, cluster, mainloop."""

    m: int
    n: int
    k: int
    schedule: str  # "Cooperative" | "Pingpong"
    cluster: tuple[int, int, int] = (1, 1, 1)

    def __str__(self) -> str:
        c = "x".join(map(str, self.cluster))
        return f"{self.m}x{self.n}x{self.k}_{self.schedule[:4].lower()}_c{c}"


# The SM90 weight-only grouped candidates FlashInfer enumerates use PINGPONG for
# 64-row tiles and COOPERATIVE for 128-row tiles (cutlass_heuristic.cpp,
# get_candidate_configs_sm90); the mixed-input path always swaps A/B, so the tile's
# M runs along the weight's N and its N along the tokens.  gpt-oss padded to a
# multiple of 128 (H = I = 2944) only admits K-tile 128 (K % tile_k == 0) and
# N % tile_m == 0 for N in {2944, 5888}, so 256-row tiles are out.  The first
# candidate (64x16x128 pingpong, 1x1x1) is FlashInfer's default tactic.
DEFAULT_TILES: tuple[Tile, ...] = (
    Tile(64, 16, 128, "Pingpong"),
    Tile(64, 32, 128, "Pingpong"),
    Tile(64, 64, 128, "Pingpong"),
    Tile(64, 128, 128, "Pingpong"),
    Tile(128, 16, 128, "Cooperative"),
    Tile(128, 32, 128, "Cooperative"),
    Tile(128, 64, 128, "Cooperative"),
    Tile(128, 128, 128, "Cooperative"),
    Tile(128, 256, 128, "Cooperative"),
)
#: calcMaxWorkspaceSizeTmaWarpSpecializedMixedInput sizes the workspace with this
#: instantiation (K-tile 256 for FP4 weights); it must be real, never a stub.
WORKSPACE_TILE = Tile(128, 64, 256, "Cooperative")


@dataclass(frozen=True)
class Instantiation:
    """One explicit instantiation statement of a FlashInfer-generated file."""

    launcher: str
    types: tuple[str, ...]
    tile: Tile | None
    statement: str
    source: Path
    args: tuple[str, ...] = ()  # every template argument, whitespace-normalized

    @property
    def is_w4a16(self) -> bool:
        return self.launcher == _MIXED_LAUNCHER and self.types == _W4A16_TYPES and self.scale_mode is None

    @property
    def scale_mode(self) -> str | None:
        """The ``MixedInputScaleMode`` template argument (``kPreMmaE8M0``...), None when absent."""
        for a in self.args:
            if "MixedInputScaleMode::" in a:
                return a.rsplit("::", 1)[1]
        return None

    @property
    def mainloop_type(self) -> str | None:
        """The ``MainloopScheduleType`` argument of a small-K launcher (``SINGLE_WARPGROUP_ROLLING``...)."""
        for a in self.args:
            if "MainloopScheduleType::" in a:
                return a.rsplit("::", 1)[1]
        return None


@dataclass
class TrimmedBuild:
    """What :func:`build_cutlass_w4a16_sm90` built, and how long it took."""

    name: str
    key: str
    flashinfer_version: str
    spec: Any  # flashinfer.jit.core.JitSpecNvcc
    library_path: Path
    kept_sources: list[str]
    kept_tiles: list[str]
    stubbed_symbols: int
    full_object_count: int
    phase_seconds: dict[str, float] = field(default_factory=dict)
    built_now: int = 0
    unresolved_c_symbols: list[str] = field(default_factory=list)
    specs: tuple[str, ...] = ("w4a16",)   # the oracle.kernels.jit.sm90 specs the module holds
    compiled_now: int | None = None       # objects compiled in this run (0: all from the JIT cache)

    @property
    def object_count(self) -> int:
        return len(self.spec.sources)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "key": self.key, "flashinfer_version": self.flashinfer_version,
            "library_path": str(self.library_path), "kept_sources": self.kept_sources,
            "kept_tiles": self.kept_tiles, "stubbed_symbols": self.stubbed_symbols,
            "object_count": self.object_count, "full_object_count": self.full_object_count,
            "phase_seconds": self.phase_seconds,
            "built_now": self.built_now, "unresolved_c_symbols": self.unresolved_c_symbols,
            "specs": list(self.specs), "compiled_now": self.compiled_now,
        }


# --------------------------------------------------------------------------- toolchain


def _fi():
    try:
        import flashinfer  # noqa: F401
        from flashinfer.jit import env as jit_env
        from flashinfer.jit import fused_moe as fi_fused_moe
    except Exception as e:  # pragma: no cover - depends on the environment
        raise KernelBuildError("flashinfer", "importable (pip install flashinfer-python==0.7.2.post1)",
                               f"{type(e).__name__}: {e}", "install the pinned FlashInfer") from e
    return flashinfer, jit_env, fi_fused_moe


def check_toolchain() -> dict[str, str]:
    """Paths/versions of nvcc, ninja, the host compiler and binutils, or KernelBuildError."""
    _, jit_env, _ = _fi()
    from flashinfer.jit import cpp_ext

    try:
        cuda_home = cpp_ext.get_cuda_path()
    except Exception as e:
        raise KernelBuildError("nvcc", "on PATH or under CUDA_HOME (CUDA toolkit >= 12.8)",
                               "not found", "install the CUDA toolkit or set CUDA_HOME") from e
    nvcc = os.environ.get("FLASHINFER_NVCC", os.path.join(cuda_home, "bin", "nvcc"))
    if not os.path.exists(nvcc):
        raise KernelBuildError("nvcc", "on PATH or under CUDA_HOME (CUDA toolkit >= 12.8)",
                               f"missing {nvcc}", "install the CUDA toolkit or set CUDA_HOME")
    try:
        ver = subprocess.run([nvcc, "--version"], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    except Exception as e:
        raise KernelBuildError("nvcc", "runnable", f"{nvcc}: {e}", "check the CUDA install") from e
    m = re.search(r"release (\d+)\.(\d+)", ver)
    if not m or (int(m.group(1)), int(m.group(2))) < (12, 8):
        raise KernelBuildError("nvcc", "CUDA 12.8 or newer (sm_90a CUTLASS MoE kernels)",
                               m.group(0) if m else ver.strip()[-80:], "install CUDA >= 12.8")
    tools = {"nvcc": nvcc, "nvcc_version": m.group(0), "cuda_home": cuda_home}
    cxx = os.environ.get("CXX", "c++")
    for name, exe in (("ninja", "ninja"), ("cxx", cxx), ("nm", "nm"), ("c++filt", "c++filt")):
        path = shutil.which(exe)
        if path is None:
            fix = "pip install ninja" if name == "ninja" else "install gcc/g++ and binutils"
            raise KernelBuildError(name, f"available on PATH ({exe})", "not found", fix)
        tools[name] = path
    return tools


# ------------------------------------------------------------------- generated sources

_STMT_RE = re.compile(r"template\s+void\s+(\w+)\s*<(.*?)>\s*\((.*?)\)\s*;", re.S)


def _split_args(text: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur).strip())
    return [" ".join(a.split()) for a in out]


def _shape(arg: str) -> tuple[int, ...] | None:
    nums = re.findall(r"Int<(\d+)>", arg)
    return tuple(int(n) for n in nums) if nums and "Shape" in arg else None


def parse_generated_file(path: Path) -> tuple[str, list[Instantiation], str]:
    """(preamble, statements, postamble) of a FlashInfer ``*.generated.cu`` file."""
    text = Path(path).read_text()
    stmts = list(_STMT_RE.finditer(text))
    if not stmts:
        return text, [], ""
    # Keep includes and namespace openers; drop preprocessor conditionals that
    # would be left unbalanced once statements are picked one by one.
    preamble = "\n".join(line for line in text[: stmts[0].start()].splitlines()
                         if not line.strip().startswith(("#if", "#endif", "#else", "#elif")))
    preamble += "\n"
    postamble = text[stmts[-1].end():]
    # Keep the namespace closers only (statements may sit inside #if blocks).
    postamble = "\n".join(line for line in postamble.splitlines() if line.strip().startswith("}"))
    out = []
    for s in stmts:
        args = _split_args(s.group(2))
        tile = None
        if s.group(1) in (_MIXED_LAUNCHER, _SMALL_K_LAUNCHER) and len(args) >= 7:
            cta, cl = _shape(args[4]), _shape(args[5])
            sched = "Cooperative" if "Cooperative" in args[6] else (
                "Pingpong" if "Pingpong" in args[6] else args[6])
            if cta and cl and len(cta) == 3 and len(cl) == 3:
                tile = Tile(cta[0], cta[1], cta[2], sched, tuple(cl))  # type: ignore[arg-type]
        out.append(Instantiation(s.group(1), tuple(args[:3]), tile, s.group(0), Path(path), tuple(args)))
    return preamble, out, postamble


def _write_if_different(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != content:
        path.write_text(content)


def _runner_instantiation_source() -> str:
    lines = [
        "// Generated by oracle.kernels.jit -- do not edit.",
        "// The CutlassMoeFCRunner types the MXFP4 x BF16 (W4A16) path constructs; replaces",
        "// FlashInfer's cutlass_fused_moe_instantiation.cu (all dtype pairs) in the trimmed build.",
        '#include "fused_moe/cutlass_backend/cutlass_fused_moe_kernels.cuh"',
        '#include "moe_kernels.h"',
        "",
        "namespace tensorrt_llm::kernels::cutlass_kernels {",
    ]
    lines += [f"template class CutlassMoeFCRunner<{t}>;" for t in RUNNER_TYPES]
    lines += [f"INSTANTIATE_FINALIZE_MOE_ROUTING({t});" for t in FINALIZE_TYPES]
    lines += ["}  // namespace tensorrt_llm::kernels::cutlass_kernels", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------ cache key


def cache_key(*, flashinfer_version: str, base_name: str, nvcc_version: str,
              cuda_cflags: Sequence[str], cflags: Sequence[str], ldflags: Sequence[str],
              kept_sources: Sequence[str], kept_statements: Sequence[str],
              specs: Sequence[Any] | None = None) -> str:
    """sha256 over everything that changes the built module.

    ``specs``: the module specs' own descriptions (:meth:`oracle.kernels.jit.sm90.ModuleSpec.key_payload`);
    None for the W4A16-only module built by :func:`build_cutlass_w4a16_sm90`'s original key.
    """
    payload: dict[str, Any] = {
        "generator": GENERATOR_VERSION,
        "flashinfer": flashinfer_version,
        "base": base_name,
        "nvcc": nvcc_version,
        "cuda_cflags": list(cuda_cflags),
        "cflags": list(cflags),
        "ldflags": list(ldflags),
        "kept_sources": sorted(kept_sources),
        "kept_statements": sorted(" ".join(s.split()) for s in kept_statements),
        "runner_types": list(RUNNER_TYPES),
        "finalize_types": list(FINALIZE_TYPES),
        "stub_prefixes": list(_stubs.STUB_PREFIXES),
    }
    if specs is not None:
        payload["specs"] = list(specs)
        payload.pop("runner_types")
        payload.pop("finalize_types")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------ ninja runner


def _ninja_edges(ninja_file: Path) -> dict[str, str]:
    """object path -> source path for every compile edge of a FlashInfer ninja file."""
    edges = {}
    for line in ninja_file.read_text().splitlines():
        m = re.match(r"build (\S+): (cuda_compile|compile) (\S+)", line)
        if m:
            edges[m.group(1)] = m.group(3)
    return edges


def _run_ninja(ninja: str, build_dir: Path, ninja_file: Path, targets: Sequence[str], *,
               jobs: int | None, label: str, progress: Callable[[str], None],
               heartbeat_s: float = 30.0) -> int:
    """Run ninja for ``targets`` with a progress display; returns the number of edges run."""
    base = [ninja, "-C", str(build_dir), "-f", str(ninja_file)]
    if jobs:
        base += ["-j", str(jobs)]
    dry = subprocess.run(base + ["-n"] + list(targets), capture_output=True, text=True)
    todo = [ln for ln in dry.stdout.splitlines() if re.match(r"\[\d+/\d+\]", ln)]
    total = len(todo)
    if total == 0:
        progress(f"[oracle jit] {label}: up to date")
        return 0
    watched = [t for t in targets if Path(t).suffix == ".o"]
    start = time.time()
    before = {t: (Path(t).stat().st_mtime if Path(t).exists() else 0.0) for t in watched}
    log_path = build_dir / f"oracle_ninja_{label.replace(' ', '_')}.log"
    progress(f"[oracle jit] {label}: {total} steps to run, log {log_path}")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(base + ["-v"] + list(targets), stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(build_dir))
        done: set[str] = set()
        last_print = start
        while True:
            rc = proc.poll()
            for t in watched:
                if t in done:
                    continue
                p = Path(t)
                if p.exists() and p.stat().st_mtime > before[t] and p.stat().st_mtime >= start - 1:
                    done.add(t)
                    progress(f"[oracle jit] {label} [{len(done):3d}/{total}] "
                             f"{time.time() - start:7.1f}s  built {p.name}")
                    last_print = time.time()
            if rc is not None:
                break
            if time.time() - last_print >= heartbeat_s:
                progress(f"[oracle jit] {label} [{len(done):3d}/{total}] "
                         f"{time.time() - start:7.1f}s  compiling...")
                last_print = time.time()
            time.sleep(1.0)
    if rc != 0:
        tail = log_path.read_text()[-6000:]
        errors = [ln for ln in tail.splitlines() if "error" in ln.lower()][:12]
        progress(tail)
        raise KernelBuildError(f"ninja ({label})", "a successful build", f"exit code {rc}",
                               f"see {log_path}; first errors: " + " | ".join(errors)[:1500],
                               log=tail)
    progress(f"[oracle jit] {label}: done in {time.time() - start:.1f}s")
    return total


# ------------------------------------------------------------------------------ build


def _system_libraries(cuda_home: str) -> list[Path]:
    libs = [Path(cuda_home) / "lib64" / n for n in ("libcudart.so", "libnvrtc.so")]
    libs.append(Path(cuda_home) / "lib64" / "stubs" / "libcuda.so")
    cxx = os.environ.get("CXX", "c++")
    for name in ("libstdc++.so.6", "libm.so.6", "libgcc_s.so.1", "libc.so.6",
                 "ld-linux-x86-64.so.2", "libpthread.so.0", "libdl.so.2", "librt.so.1"):
        try:
            p = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True,
                               text=True, timeout=30).stdout.strip()
        except Exception:
            continue
        if p and os.path.isabs(p) and os.path.exists(p):
            libs.append(Path(p))
    return libs


def _tvm_ffi_library() -> list[Path]:
    try:
        import tvm_ffi

        return [Path(tvm_ffi.libinfo.find_libtvm_ffi())]
    except Exception:
        return []


def build_cutlass_w4a16_sm90(*, tiles: Iterable[Tile] = DEFAULT_TILES,
                             jobs: int | None = None,
                             progress: Callable[[str], None] | None = None,
                             install_module: bool = True) -> TrimmedBuild:
    """Build (or reuse) the trimmed ``fused_moe_90`` module for MXFP4 x BF16 MoE.

    The W4A16 spec (:data:`oracle.kernels.jit.sm90.W4A16`) alone, with ``tiles`` as its
    mixed-input GEMM configs for ``__nv_bfloat16 x SafeFP4`` (the workspace-sizing config
    :data:`WORKSPACE_TILE` is always added); see :func:`oracle.kernels.jit.sm90.build_trimmed_sm90`
    for the other arguments and for modules holding several kernels.
    """
    from oracle.kernels.jit.sm90 import W4A16, build_trimmed_sm90

    return build_trimmed_sm90((W4A16.with_tiles(tiles),), jobs=jobs, progress=progress,
                              install_module=install_module)


# ------------------------------------------------------------------------- install

_INSTALLED: dict[str, Any] = {}


def install(build: TrimmedBuild) -> None:
    """Make FlashInfer's SM90 CUTLASS MoE loader use the trimmed module.

    ``flashinfer.fused_moe.core.get_cutlass_fused_moe_module("90")`` -- behind
    ``cutlass_fused_moe``, ``CutlassW4A16Runner`` and the SM90 interleave helpers --
    builds ``gen_cutlass_fused_moe_sm90_module()``; this swaps that generator for
    one returning the trimmed JitSpec (loaded with its own ``build_and_load``) and
    clears the loader's cache.  Idempotent.
    """
    from flashinfer.fused_moe import core

    if _INSTALLED.get("name") == build.name:
        return
    spec = build.spec

    def gen_trimmed_sm90(use_fast_build: bool = False):
        return spec

    gen_trimmed_sm90.__doc__ = f"oracle trimmed module {build.name} ({', '.join(build.specs)})"
    _INSTALLED.setdefault("original", core.gen_cutlass_fused_moe_sm90_module)
    core.gen_cutlass_fused_moe_sm90_module = gen_trimmed_sm90
    core.get_cutlass_fused_moe_module.cache_clear()
    _INSTALLED["name"] = build.name
    _INSTALLED["specs"] = tuple(build.specs)


def uninstall() -> None:
    """Give FlashInfer's SM90 CUTLASS MoE loader its own generator back (the stock module)."""
    original = _INSTALLED.get("original")
    if original is None:
        return
    from flashinfer.fused_moe import core

    core.gen_cutlass_fused_moe_sm90_module = original
    core.get_cutlass_fused_moe_module.cache_clear()
    _INSTALLED.pop("name", None)
    _INSTALLED.pop("specs", None)


def installed_module_name() -> str | None:
    """Name of the trimmed module FlashInfer's loader serves now, or None."""
    return _INSTALLED.get("name")
