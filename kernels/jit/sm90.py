"""Trimmed builds of FlashInfer's SM90 CUTLASS fused-MoE module, one :class:`ModuleSpec` per kernel.

FlashInfer serves every SM90 CUTLASS MoE path from one JIT module (``fused_moe_90``,
248 translation units).  Each MXFP4 kernel the project runs needs a small part of it,
described here as data -- a :class:`ModuleSpec`:

* the generated GEMM launchers it calls (launcher type triple, scale mode, the tiles,
  and the small-K single-warpgroup launchers where the binding admits them);
* the ``CutlassMoeFCRunner`` / finalize instantiations the binding constructs for it;
* the non-generated sources it needs besides the common ones (:data:`COMMON_SOURCES`).

:data:`W4A16` is MXFP4 weights x BF16 activations (``FLASHINFER_CUTLASS_MXFP4_BF16``);
:data:`FP8_HUMMING` is MXFP4 weights x FP8 activations with Humming-style pre-MMA E8M0
fusion (``FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING``: ``use_wfp4afp8_humming=True``).
:func:`build_trimmed_sm90` builds the module of one or several specs (their union: one
process can run both kernels, since FlashInfer's loader serves one ``fused_moe_90``),
closes the dropped references with throwing stubs (:mod:`oracle.kernels.jit.stubs`) and
checks the link closure; the cache key covers the specs, so each set of specs has its own
module in FlashInfer's JIT cache.  :func:`ensure_specs` is what the adapters call: it makes
FlashInfer's loader serve a module holding at least the specs asked for.

Nothing here needs a GPU until the module is loaded; importing this module imports
neither torch nor flashinfer.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oracle.kernels.jit import stubs as _stubs
from oracle.kernels.jit.cutlass_w4a16_sm90 import (
    _MIXED_LAUNCHER,
    _RUNNER_INSTANTIATION,
    _SMALL_K_LAUNCHER,
    DEFAULT_TILES,
    KEEP_SOURCES,
    WORKSPACE_TILE,
    Instantiation,
    Tile,
    TrimmedBuild,
    _fi,
    _ninja_edges,
    _run_ninja,
    _system_libraries,
    _tvm_ffi_library,
    _write_if_different,
    cache_key,
    check_toolchain,
    parse_generated_file,
)
from oracle.kernels.jit.errors import KernelBuildError

__all__ = [
    "ModuleSpec", "W4A16", "FP8_HUMMING", "SPECS", "COMMON_SOURCES", "SMALL_K_ROLLING",
    "build_trimmed_sm90", "ensure_specs", "installed_specs", "select_statements", "runner_source",
    "compiled_everything",
]

_MOE_GEMM = "nv_internal/tensorrt_llm/kernels/cutlass_kernels/moe_gemm/"
_BF16_FP4 = _MOE_GEMM + "moe_gemm_kernels_bf16_fp4.cu"
_FP8_FP4 = _MOE_GEMM + "moe_gemm_kernels_fp8_fp4.cu"

#: Non-generated sources every trimmed SM90 module keeps: the binding, the heuristics, the
#: interleave/mixed-input utilities, the logging/env helpers (relative to FLASHINFER_CSRC_DIR).
COMMON_SOURCES: tuple[str, ...] = tuple(s for s in KEEP_SOURCES if s != _BF16_FP4)

#: Small-K single-warpgroup launchers the binding admits for FP8 humming (tile 128 x N x 128,
#: cluster 1x1x1, ``gemm_n % 128 == 0``; PREFILL for K <= 384, ROLLING above: the gpt-oss
#: K = 2944 takes ROLLING only -- ``isProfileShapeSupported`` in the binding).
SMALL_K_ROLLING: tuple[Tile, ...] = tuple(Tile(128, n, 128, "Pingpong") for n in (8, 16, 32, 40, 64))


@dataclass(frozen=True)
class ModuleSpec:
    """What one kernel needs from FlashInfer's ``fused_moe_90`` (see the module docstring)."""

    name: str                                  # short, [a-z0-9_] (part of the module name)
    launcher_types: tuple[str, str, str]       # T, WeightType, OutputType of the GEMM launchers
    scale_mode: str | None                     # MixedInputScaleMode argument (None: absent)
    tiles: tuple[Tile, ...]                    # mixed-input GEMM configs (the workspace one is added)
    runner_types: tuple[str, ...]              # CutlassMoeFCRunner<...> template arguments
    finalize_types: tuple[str, ...]            # INSTANTIATE_FINALIZE_MOE_ROUTING(...) arguments
    sources: tuple[str, ...]                   # kept non-generated sources besides COMMON_SOURCES
    small_k: tuple[Tile, ...] = ()             # small-K launcher tiles (128 x N x 128)
    small_k_mainloop: str = "SINGLE_WARPGROUP_ROLLING"

    def with_tiles(self, tiles: Iterable[Tile]) -> ModuleSpec:
        return dataclasses.replace(self, tiles=tuple(tiles))

    def wanted_tiles(self) -> list[Tile]:
        return sorted(set(self.tiles) | {WORKSPACE_TILE})

    def matches(self, s: Instantiation) -> bool:
        """Whether ``s`` is one of this spec's launchers (any tile)."""
        if s.types != self.launcher_types or s.scale_mode != self.scale_mode:
            return False
        if s.launcher == _MIXED_LAUNCHER:
            return True
        return s.launcher == _SMALL_K_LAUNCHER and s.mainloop_type == self.small_k_mainloop

    def key_payload(self) -> dict[str, Any]:
        return {"name": self.name, "types": list(self.launcher_types), "scale_mode": self.scale_mode,
                "tiles": [str(t) for t in self.wanted_tiles()],
                "small_k": [str(t) for t in sorted(self.small_k)], "small_k_mainloop": self.small_k_mainloop,
                "runner_types": list(self.runner_types), "finalize_types": list(self.finalize_types),
                "sources": sorted(self.sources)}


W4A16 = ModuleSpec(
    name="w4a16",
    launcher_types=("__nv_bfloat16", "SafeFP4", "__nv_bfloat16"),
    scale_mode=None,
    tiles=DEFAULT_TILES,
    runner_types=("__nv_bfloat16, Fp4Type",),
    finalize_types=("__nv_bfloat16, __nv_bfloat16, __nv_bfloat16",),
    sources=(_BF16_FP4,),
)

FP8_HUMMING = ModuleSpec(
    name="fp8humming",
    launcher_types=("__nv_fp8_e4m3", "SafeFP4", "__nv_bfloat16"),
    scale_mode="kPreMmaE8M0",
    tiles=DEFAULT_TILES,  # FlashInfer generates the same tile/cluster/schedule grid as for W4A16
    runner_types=("__nv_fp8_e4m3, Fp4Type, __nv_bfloat16, __nv_bfloat16, __nv_bfloat16, false, "
                  "Sm90Wfp4Afp8ScaleMode::kHummingPreMmaE8M0",),
    finalize_types=("__nv_bfloat16, __nv_bfloat16, __nv_bfloat16",),
    sources=(_FP8_FP4,),
    small_k=SMALL_K_ROLLING,
)

#: Spec name -> spec.
SPECS: dict[str, ModuleSpec] = {s.name: s for s in (W4A16, FP8_HUMMING)}


def select_statements(specs: Sequence[ModuleSpec], statements: Iterable[tuple[str, Instantiation, str]]
                      ) -> list[tuple[str, str, Instantiation, str]]:
    """The generated instantiations the specs keep: ``(label, preamble, statement, postamble)``.

    One per (spec, tile) for the mixed launcher and one per small-K tile; a wanted
    tile FlashInfer did not generate is a :class:`KernelBuildError`.
    """
    statements = list(statements)
    out: list[tuple[str, str, Instantiation, str]] = []
    seen: set[str] = set()
    for spec in specs:
        want_mixed = spec.wanted_tiles()
        want_small = sorted(set(spec.small_k))
        mixed: dict[Tile, tuple[str, Instantiation, str]] = {}
        small: dict[Tile, tuple[str, Instantiation, str]] = {}
        for pre, s, post in statements:
            if not spec.matches(s) or s.tile is None:
                continue
            pool, want = (mixed, want_mixed) if s.launcher == _MIXED_LAUNCHER else (small, want_small)
            if s.tile in want and s.tile not in pool:
                pool[s.tile] = (pre, s, post)
        absent = [str(t) for t in want_mixed if t not in mixed] + \
                 [f"small-K {t}" for t in want_small if t not in small]
        if absent:
            raise KernelBuildError(f"{spec.name} tiles",
                                   f"generated by FlashInfer for {', '.join(spec.launcher_types)}"
                                   + (f" ({spec.scale_mode})" if spec.scale_mode else ""), absent,
                                   "choose tiles from the generated set "
                                   "(see parse_generated_file on cutlass_instantiations/90)")
        for kind, pool, want in (("gemm", mixed, want_mixed), ("smallk", small, want_small)):
            for t in want:
                pre, s, post = pool[t]
                if s.statement in seen:
                    continue
                seen.add(s.statement)
                out.append((f"{spec.name}_{kind}_{t}", pre, s, post))
    return out


def runner_source(specs: Sequence[ModuleSpec]) -> str:
    """The runner/finalize instantiations of ``specs`` (replaces FlashInfer's all-types file)."""
    runners = list(dict.fromkeys(t for s in specs for t in s.runner_types))
    finals = list(dict.fromkeys(t for s in specs for t in s.finalize_types))
    lines = [
        "// Generated by oracle.kernels.jit.sm90 -- do not edit.",
        "// The CutlassMoeFCRunner types of the specs " + ", ".join(s.name for s in specs) + "; replaces",
        "// FlashInfer's cutlass_fused_moe_instantiation.cu (all dtype pairs) in the trimmed build.",
        '#include "fused_moe/cutlass_backend/cutlass_fused_moe_kernels.cuh"',
        '#include "moe_kernels.h"',
        "",
        "namespace tensorrt_llm::kernels::cutlass_kernels {",
    ]
    lines += [f"template class CutlassMoeFCRunner<{t}>;" for t in runners]
    lines += [f"INSTANTIATE_FINALIZE_MOE_ROUTING({t});" for t in finals]
    lines += ["}  // namespace tensorrt_llm::kernels::cutlass_kernels", ""]
    return "\n".join(lines)


def compiled_everything(build: Any) -> bool:
    """True when a build compiled all its objects in this run (its time is a from-scratch build time).

    A build reused from the JIT cache, or one that only relinked or recompiled some objects,
    has no build time to compare with another build.
    """
    get = build.get if isinstance(build, dict) else (lambda k, d=None: getattr(build, k, d))
    compiled, objects = get("compiled_now"), get("object_count")
    if compiled is None:  # records without the count: every compile edge plus the link ran
        built = get("built_now")
        compiled = None if built is None else built - 1
    if compiled is None or objects is None:
        return False
    return compiled >= objects > 0


def _progress_default(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_trimmed_sm90(specs: Sequence[ModuleSpec] = (W4A16,), *, jobs: int | None = None,
                       progress: Callable[[str], None] | None = None,
                       install_module: bool = True) -> TrimmedBuild:
    """Build (or reuse) the trimmed ``fused_moe_90`` module holding ``specs``.

    ``jobs``: ninja parallelism (default: ninja's).  ``progress``: one line per event
    (default: stderr).  ``install_module``: point FlashInfer's CUTLASS MoE loader at the
    result (:func:`install`).  On a machine without a GPU set
    ``FLASHINFER_CUDA_ARCH_LIST=9.0a`` before importing flashinfer to cross-build.
    Raises :class:`KernelBuildError` (toolchain, source layout, build, link closure).
    """
    progress = progress or _progress_default
    if not specs or not all(isinstance(s, ModuleSpec) for s in specs):
        raise KernelBuildError("specs", "one or more oracle.kernels.jit.sm90.ModuleSpec", repr(specs)[:80])
    specs = tuple(sorted(set(specs), key=lambda s: s.name))  # one module (and cache entry) per set
    t0 = time.time()
    tools = check_toolchain()
    flashinfer, jit_env, fi_fused_moe = _fi()
    try:
        from flashinfer.jit.core import check_cuda_arch

        check_cuda_arch()
    except Exception as e:
        raise KernelBuildError("CUDA target arch", "detectable (a GPU, or FLASHINFER_CUDA_ARCH_LIST)",
                               str(e)[:200], "set FLASHINFER_CUDA_ARCH_LIST=9.0a before importing "
                               "flashinfer to cross-build for SM90") from e

    full = fi_fused_moe.gen_cutlass_fused_moe_sm90_module()
    csrc = Path(jit_env.FLASHINFER_CSRC_DIR).resolve()
    generated = [Path(s) for s in full.sources if str(s).endswith(".generated.cu")]
    by_rel: dict[str, Path] = {}
    for s in full.sources:
        s = Path(s)
        try:
            by_rel[s.resolve().relative_to(csrc).as_posix()] = s
        except ValueError:
            continue
    kept_rel = list(dict.fromkeys(list(COMMON_SOURCES) + [r for s in specs for r in s.sources]))
    missing = [r for r in kept_rel + [_RUNNER_INSTANTIATION] if r not in by_rel]
    if missing:
        raise KernelBuildError("flashinfer source layout",
                               f"the one of flashinfer-python 0.7.2.post1 ({flashinfer.__version__} here)",
                               f"missing {missing}", "pin flashinfer-python==0.7.2.post1 or update "
                               "oracle.kernels.jit.sm90.COMMON_SOURCES / the specs' sources")
    for r in kept_rel:
        if not by_rel[r].exists():
            raise KernelBuildError("flashinfer sources", "present in the installed wheel",
                                   f"missing file {by_rel[r]}",
                                   "install a wheel that ships flashinfer/data/csrc/nv_internal "
                                   "and flashinfer/data/csrc/fused_moe")

    all_stmts: list[tuple[str, Instantiation, str]] = []
    for g in sorted(generated):
        pre, stmts, post = parse_generated_file(g)
        all_stmts += [(pre, s, post) for s in stmts]
    chosen = select_statements(specs, all_stmts)
    key = cache_key(flashinfer_version=flashinfer.__version__, base_name=full.name,
                    nvcc_version=tools["nvcc_version"], cuda_cflags=full.extra_cuda_cflags or [],
                    cflags=full.extra_cflags or [], ldflags=full.extra_ldflags or [], kept_sources=kept_rel,
                    kept_statements=[c[2].statement for c in chosen],
                    specs=[s.key_payload() for s in specs])
    name = f"oracle_{full.name}_{'_'.join(s.name for s in specs)}_{key[:12]}"
    gen_dir = Path(jit_env.FLASHINFER_GEN_SRC_DIR) / "oracle" / name
    runner_tu = gen_dir / "runner_instantiation.cu"
    _write_if_different(runner_tu, runner_source(specs))
    # Heaviest translation units first: ninja starts edges in manifest order.
    sources: list[Path] = []
    for i, (label, pre, s, post) in enumerate(chosen):
        tu = gen_dir / f"gemm_{i:02d}_{label}.cu"
        _write_if_different(tu, "// Generated by oracle.kernels.jit.sm90 from FlashInfer's "
                                f"{s.source.name} -- do not edit.\n" + pre + s.statement + "\n" + post + "\n")
        sources.append(tu)
    sources.insert(1, runner_tu)
    sources += [by_rel[r] for r in kept_rel]

    spec = dataclasses.replace(full, name=name, sources=sources)
    build_dir = Path(spec.build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    phases: dict[str, float] = {"prepare": time.time() - t0}
    progress(f"[oracle jit] {name}: {len(sources)} translation units ({len(chosen)} GEMM launchers of "
             f"{', '.join(s.name for s in specs)}) instead of {len(full.sources)}; build dir {build_dir}")

    t1 = time.time()
    spec.write_ninja()
    objects = list(_ninja_edges(Path(spec.ninja_path)))
    compiled = _run_ninja(tools["ninja"], build_dir, Path(spec.ninja_path), objects, jobs=jobs,
                          label="compile", progress=progress)
    built = compiled
    phases["compile"] = time.time() - t1

    t2 = time.time()
    missing_syms = _stubs.missing_symbols([Path(o) for o in objects])
    demangled = _stubs.demangle(missing_syms)
    data = [d for d in demangled if not _stubs.is_function(d)]
    if data:
        raise KernelBuildError("link closure", "only functions missing from the trimmed objects",
                               f"{len(data)} data symbols, e.g. {data[:3]}",
                               "keep the source that defines them (the spec's sources)")
    summary = "; ".join(f"{s.name}: CutlassMoeFCRunner<{'; '.join(s.runner_types)}>" for s in specs) + \
        "; launchers " + ", ".join(c[0] for c in chosen)
    stub_cpp = gen_dir / "dropped_symbol_stubs.cpp"
    _write_if_different(stub_cpp, _stubs.render_stub_source(missing_syms, demangled, module=name,
                                                            kept_summary=summary))
    spec = dataclasses.replace(spec, sources=sources + [stub_cpp])
    spec.write_ninja()
    built += _run_ninja(tools["ninja"], build_dir, Path(spec.ninja_path), [], jobs=jobs,
                        label="stubs+link", progress=progress)
    so = Path(spec.jit_library_path)
    libs, at_load = _system_libraries(tools["cuda_home"]), _tvm_ffi_library()
    for _ in range(3):
        unresolved = _stubs.unresolved_dynamic_symbols(so, libs, at_load)
        cxx_unresolved = [u for u in unresolved if u.startswith("_Z")]
        if not cxx_unresolved:
            break
        dem = _stubs.demangle(cxx_unresolved)
        bad = [d for d in dem if not (_stubs.is_function(d) and _stubs.in_project_namespace(d))]
        if bad:
            raise KernelBuildError("link closure", "no unresolved C++ data or library symbols in the trimmed module",
                                   f"{len(bad)} unresolved, e.g. {bad[:3]}",
                                   "keep the source that defines them (the spec's sources)")
        progress(f"[oracle jit] stubbing {len(cxx_unresolved)} more unresolved functions, e.g. {dem[:2]}")
        missing_syms = sorted(set(missing_syms) | set(cxx_unresolved))
        demangled = _stubs.demangle(missing_syms)
        _write_if_different(stub_cpp, _stubs.render_stub_source(missing_syms, demangled, module=name,
                                                                kept_summary=summary))
        built += _run_ninja(tools["ninja"], build_dir, Path(spec.ninja_path), [], jobs=jobs,
                            label="stubs+link", progress=progress)
    else:
        raise KernelBuildError("link closure", "closed after stubbing", f"{len(cxx_unresolved)} still unresolved",
                               "inspect with nm -D --undefined-only " + str(so))
    phases["stubs_link"] = time.time() - t2
    phases["total"] = time.time() - t0

    result = TrimmedBuild(
        name=name, key=key, flashinfer_version=flashinfer.__version__, spec=spec, library_path=so,
        kept_sources=kept_rel + [runner_tu.name], kept_tiles=[c[0] for c in chosen],
        stubbed_symbols=len(missing_syms), full_object_count=len(full.sources), phase_seconds=phases,
        built_now=built, unresolved_c_symbols=[u for u in unresolved if not u.startswith("_Z")][:50],
        specs=tuple(s.name for s in specs), compiled_now=compiled)
    (build_dir / "oracle_build.json").write_text(json.dumps(result.to_dict(), indent=1))
    progress(f"[oracle jit] {name}: {so} ({so.stat().st_size / 2**20:.1f} MiB), "
             f"{len(missing_syms)} dropped symbols stubbed, {compiled} objects compiled now, "
             f"{phases['total']:.1f}s")
    if install_module:
        from oracle.kernels.jit.cutlass_w4a16_sm90 import install

        install(result)
    _LAST[result.name] = result
    return result


_LAST: dict[str, TrimmedBuild] = {}


def installed_specs() -> tuple[str, ...]:
    """Names of the specs the module FlashInfer's loader serves now holds (empty: none installed)."""
    from oracle.kernels.jit.cutlass_w4a16_sm90 import _INSTALLED

    return tuple(_INSTALLED.get("specs", ()))


def ensure_specs(*needed: ModuleSpec, progress: Callable[[str], None] | None = None) -> TrimmedBuild | None:
    """Make FlashInfer's loader serve a trimmed module holding ``needed``; returns the build, or
    None when the installed one already does.

    When a module is installed that lacks one of them, the union of its specs and
    ``needed`` is built (or taken from the JIT cache) and installed instead, so kernels
    prepared earlier keep working in the same process.
    """
    have = installed_specs()
    if all(s.name in have for s in needed):
        return None
    union = [SPECS[n] for n in have if n in SPECS] + [s for s in needed if s.name not in have]
    return build_trimmed_sm90(tuple(union), progress=progress)
