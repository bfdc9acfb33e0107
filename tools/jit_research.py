"""Research on the SM90 fused-MoE JIT build: timings, full-build estimates, the K512 tile set.

Lab code for ``tools/device_check.py`` (not part of the installed package); the
product build is :func:`oracle.kernels.jit.build_cutlass_w4a16_sm90`.

* :func:`object_seconds` -- per-object compile seconds of a build, from its ``.ninja_log``;
* :func:`full_module_census` -- what FlashInfer's full ``fused_moe_90`` compiles;
* :func:`estimate_full_build` -- upper-bound estimate of the full build from measured objects;
* :func:`probe_full_objects` -- compile sample objects of the full module to measure them;
* :data:`K512_TILES` -- the experimental decode tile set (H and I padded to 512).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oracle.kernels.jit.cutlass_w4a16_sm90 import (
    DEFAULT_TILES,
    KEEP_SOURCES,
    Tile,
    TrimmedBuild,
    _fi,
    _ninja_edges,
    check_toolchain,
    parse_generated_file,
)

__all__ = ["K512_TILES", "ninja_log_durations", "object_seconds", "full_module_census",
           "estimate_full_build", "probe_full_objects"]

#: Experimental decode set: with H and I padded to a multiple of 512 (2880 -> 3072) the
#: K-tile 256/512 configs become legal (K % tile_k == 0); FlashInfer's W4A16 filter
#: still drops K-tile 512 for tile N >= 128.  Used by the device check's variant run
#: (``CutlassW4A16Sm90Adapter(alignment=512, tiles=K512_TILES)``).
K512_TILES: tuple[Tile, ...] = DEFAULT_TILES + (
    Tile(64, 16, 256, "Pingpong"), Tile(64, 16, 512, "Pingpong"),
    Tile(64, 32, 256, "Pingpong"), Tile(64, 32, 512, "Pingpong"),
    Tile(64, 64, 256, "Pingpong"),
    Tile(128, 16, 256, "Cooperative"), Tile(128, 16, 512, "Cooperative"),
    Tile(128, 32, 256, "Cooperative"), Tile(128, 32, 512, "Cooperative"),
)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ninja_log_durations(build_dir: Path) -> dict[str, float]:
    """output path -> seconds of its last build step, from ``build_dir/.ninja_log``."""
    log = Path(build_dir) / ".ninja_log"
    out: dict[str, float] = {}
    if not log.exists():
        return out
    for line in log.read_text().splitlines():
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) >= 4:
            try:
                out[parts[3]] = (int(parts[1]) - int(parts[0])) / 1000.0
            except ValueError:
                continue
    return out


def object_seconds(build: TrimmedBuild) -> dict[str, float]:
    """Object file name -> compile seconds, for the objects of ``build``.

    Read from the build directory's ``.ninja_log``, so a build reused from the JIT
    cache reports the times of the run that compiled it.
    """
    build_dir = Path(build.spec.build_dir)
    wanted = set(_ninja_edges(Path(build.spec.ninja_path)))
    return {Path(o).name: s for o, s in ninja_log_durations(build_dir).items() if o in wanted}


def full_module_census() -> dict[str, int]:
    """Sizes of FlashInfer's full ``fused_moe_90``: objects, generated files and their instantiations."""
    _, _, fi_fused_moe = _fi()
    full = fi_fused_moe.gen_cutlass_fused_moe_sm90_module()
    generated = [Path(s) for s in full.sources if str(s).endswith(".generated.cu")]
    instantiations = sum(len(parse_generated_file(g)[1]) for g in generated)
    return {"objects": len(full.sources), "generated_files": len(generated),
            "non_generated_files": len(full.sources) - len(generated),
            "generated_instantiations": instantiations}


def estimate_full_build(obj_seconds: dict[str, float], census: dict[str, int], *,
                        cores: int) -> dict[str, float]:
    """Upper-bound estimate of the full ``fused_moe_90`` build from the objects measured here.

    (The measured estimate is :func:`probe_full_objects`, which compiles sample
    objects of the full module itself; this one needs no extra compilation.)

    Each generated GEMM instantiation of the full build is charged the mean measured
    time of one of our single-instantiation GEMM objects (an upper-ish bound: header
    parsing is counted per instantiation); each non-generated source the mean of the
    non-generated objects measured here.  Wall time = CPU-seconds / cores (perfect
    packing, a lower bound for the real schedule).
    """
    gemm = [v for k, v in obj_seconds.items() if "w4a16_gemm_" in k]
    other = [v for k, v in obj_seconds.items() if "w4a16_gemm_" not in k]
    if not gemm or not other:
        return {}
    per_inst = sum(gemm) / len(gemm)
    per_other = sum(other) / len(other)
    n_other = census["non_generated_files"]
    cpu_full = census["generated_instantiations"] * per_inst + n_other * per_other
    return {
        "per_gemm_instantiation_s": per_inst,
        "per_non_generated_object_s": per_other,
        "full_generated_files": census["generated_files"],
        "full_non_generated_files": n_other,
        "full_generated_instantiations": census["generated_instantiations"],
        "full_cpu_seconds_est": cpu_full,
        "full_wall_seconds_est": cpu_full / cores,
        "trimmed_cpu_seconds": sum(obj_seconds.values()),
        "trimmed_critical_path_s": max(obj_seconds.values()),
    }


def probe_full_objects(*, timeout_s: float = 300.0, jobs: int | None = None,
                       progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Compile a sample of the *full* module's objects to measure their cost (no link).

    One generated file of each family FlashInfer emits for ``fused_moe_90``
    (fpA_intB GEMM, SM80 grouped, SM90 TMA-WS grouped, SM90 mixed-input grouped)
    plus the dropped heavy non-generated sources.  Objects still compiling after
    ``timeout_s`` are reported as lower bounds.  Returns per-object seconds, the
    family sizes and the sampled files.
    """
    progress = progress or _stderr
    tools = check_toolchain()
    _, jit_env, fi_fused_moe = _fi()
    full = fi_fused_moe.gen_cutlass_fused_moe_sm90_module()
    gen = [Path(s) for s in full.sources if str(s).endswith(".generated.cu")]
    fams: dict[str, list[Path]] = {}
    for g in gen:
        fam = g.parent.parent.name + "/" + g.parent.name + ("/mixed" if "Mixed" in g.name else "")
        fams.setdefault(fam, []).append(g)
    sample = {fam: sorted(v)[len(v) // 2] for fam, v in fams.items()}
    csrc = Path(jit_env.FLASHINFER_CSRC_DIR).resolve()
    dropped_heavy = [Path(s) for s in full.sources if not str(s).endswith(".generated.cu")
                     and Path(s).resolve().relative_to(csrc).as_posix() not in KEEP_SOURCES]
    heavy = [s for s in dropped_heavy if s.suffix == ".cu"]
    srcs = list(sample.values()) + heavy
    spec = dataclasses.replace(full, name="oracle_probe_" + full.name, sources=srcs)
    build_dir = Path(spec.build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    spec.write_ninja()
    edges = _ninja_edges(Path(spec.ninja_path))
    cmd = [tools["ninja"], "-C", str(build_dir), "-f", str(spec.ninja_path), "-k", "0"]
    if jobs:
        cmd += ["-j", str(jobs)]
    progress(f"[jit research] probing {len(srcs)} objects of the full module (timeout {timeout_s:.0f}s)")
    t0 = time.time()
    with open(build_dir / "oracle_probe.log", "w") as log:
        proc = subprocess.Popen(cmd + list(edges), stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(build_dir), start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the ninja job this function started
            proc.wait()
    wall = time.time() - t0
    dur = ninja_log_durations(build_dir)
    per = {}
    for obj, src in edges.items():
        per[Path(src).name] = {"seconds": dur.get(obj, wall), "finished": obj in dur,
                               "family": next((f for f, p in sample.items() if str(p.resolve()) == src),
                                              "non-generated")}
    return {"families": {f: len(v) for f, v in fams.items()}, "samples": {f: p.name for f, p in sample.items()},
            "objects": per, "wall_s": wall, "timeout_s": timeout_s,
            "non_generated_dropped": [p.name for p in dropped_heavy]}
