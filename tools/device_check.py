#!/usr/bin/env python3
"""GPU-machine job: build the trimmed W4A16 module, check it against the torch reference,
and benchmark it -- in one background job.  Lab tooling, not part of the installed package.

Usage on the GPU machine (repo root; optional wheels under ``.whl/``)::

    python3 tools/device_check.py start --deadline 560   # first call: installs + launches
    python3 tools/device_check.py wait  --deadline 570   # next calls: follow until done

``start`` installs the wheels under ``.whl/`` into ``/tmp/site`` (once), launches
``all`` detached (``setsid``) so it survives between calls of a remote shell, and
then follows its log like ``wait``.  ``wait`` prints new log lines until the job
finishes or the deadline passes, and copies results to ``$OUT`` when it is set
(``device_check.json``, ``summary.txt``, ``device_check.log``, ``kernel_bench.png``,
``oracle_build.json``).  ``all`` runs the pipeline in the foreground.  Everything
is also importable (``run_checks``, ``run_bench``, ``summary_text``) for
benchmarks/kernel_bench.py and the tests.

The research parts (full-build estimates and probe, the K512 tile set) live in
``tools/jit_research.py``; the debug aids (NaN-poisoned outputs, swapped gate/up
rows) are here, as hooks around the product adapter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
WORK = Path(os.environ.get("ORACLE_DC_DIR", "/tmp/oracle_dc"))
SITE = Path(os.environ.get("ORACLE_DC_SITE", "/tmp/site"))
LOG = WORK / "device_check.log"
RESULT = WORK / "device_check.json"
SUMMARY = WORK / "summary.txt"
PLOT = WORK / "kernel_bench.png"
SIDE_PLOT = WORK / "kernel_side.png"
DONE = WORK / "done"

GPT_OSS = {"hidden": 2880, "intermediate": 2880, "top_k": 4}
CHECK_MS = (1, 16, 256, 2048)
BENCH_MS = (1, 4, 16, 64, 256, 1024, 4096)
BENCH_ES = (32, 128)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- environment


def install_wheels() -> None:
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    marker = SITE / ".oracle_installed"
    if marker.exists() or not wheels:
        return
    log(f"installing {len(wheels)} wheels from .whl/ into {SITE}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(SITE), *map(str, wheels)], check=True)
    marker.write_text("ok\n")


def bootstrap() -> None:
    """Make flashinfer (installed, or from .whl/), oracle.kernels (this checkout) and
    tools/jit_research.py importable."""
    os.environ.setdefault("FLASHINFER_WORKSPACE_BASE", "/tmp")
    if SITE.is_dir() and str(SITE) not in sys.path:
        sys.path.insert(0, str(SITE))
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    try:
        import oracle.kernels  # noqa: F401  (installed: oracle.kernels -> kernels/, oracle.matrix -> matrix/)
        import oracle.matrix  # noqa: F401
    except ImportError:
        # A bare checkout (the device machine): map the package the way pyproject's
        # package-dir does -- oracle/ plus the repo root, so oracle.kernels and
        # oracle.matrix resolve to kernels/ and matrix/.
        import importlib.util

        for name in [m for m in sys.modules if m == "oracle" or m.startswith("oracle.")]:
            del sys.modules[name]
        spec = importlib.util.spec_from_file_location(
            "oracle", REPO / "oracle" / "__init__.py",
            submodule_search_locations=[str(REPO / "oracle"), str(REPO)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["oracle"] = mod
        spec.loader.exec_module(mod)
        import oracle.kernels  # noqa: F401


def env_info() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__}
    try:
        import flashinfer

        info["flashinfer"] = flashinfer.__version__
    except Exception as e:  # pragma: no cover
        info["flashinfer"] = f"unavailable: {e}"
    try:
        from importlib.metadata import version

        info["humming_kernels"] = version("humming-kernels")
    except Exception as e:  # pragma: no cover
        info["humming_kernels"] = f"unavailable: {type(e).__name__}"
    if torch.cuda.is_available():
        info["driver_cuda"] = torch.version.cuda
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1),
                    l2_mib=round(getattr(p, "L2_cache_size", 0) / 2**20, 1))
    info["cpus"] = os.cpu_count()
    try:
        info["nvcc"] = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except Exception:
        info["nvcc"] = "not found"
    return info


# --------------------------------------------------------------------------- timing helpers


def _median_events(fn, n: int) -> float:
    import torch

    times = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def measure_ceilings() -> dict:
    """Device-to-device copy bandwidth (read + write bytes) and a large bf16 matmul rate."""
    import torch

    n = 2 << 30  # 2 GiB
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = _median_events(lambda: dst.copy_(src), 20)
    copy_bw = 2 * n / (ms * 1e-3)
    del src, dst
    s = 8192
    a = torch.randn(s, s, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(s, s, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ms_mm = _median_events(lambda: a @ b, 20)
    rate = 2 * s ** 3 / (ms_mm * 1e-3)
    del a, b
    torch.cuda.empty_cache()
    return {"copy_bytes": 2 * n, "copy_ms": ms, "copy_GBps": copy_bw / 1e9,
            "matmul_shape": [s, s, s], "matmul_ms": ms_mm, "matmul_TFLOPs": rate / 1e12}


def time_eager(fn, sets, iters: int, warmup: int = 3) -> float:
    """Median per-call time (ms) with CUDA events around each call, rotating input sets."""
    import torch

    for i in range(warmup):
        fn(sets[i % len(sets)])
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for i, (a, b) in enumerate(ev):
        s = sets[i % len(sets)]
        a.record()
        fn(s)
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ev)


_GRAPHS_OK: dict[str, bool] = {}


def time_graph(fn, sets, iters: int, key: str = "flashinfer") -> float | None:
    """Median replay time (ms) of one CUDA graph per input set; None if capture fails.

    After one failed capture graphs are not tried again for the same ``key`` (a failed
    capture can leave state behind that would disturb the following measurements).
    """
    import torch

    if not _GRAPHS_OK.get(key, True):
        return None
    try:
        from oracle.kernels.tune import time_graph_ms  # the one graph-timing loop
        return time_graph_ms(fn, sets, iters)
    except Exception as e:
        _GRAPHS_OK[key] = False
        log(f"  graph capture failed, graphs disabled for {key}: {type(e).__name__}: {str(e)[:200]}")
        try:
            torch.cuda.synchronize()
        except Exception:
            pass
        return None


# --------------------------------------------------------------------------- inputs


def routing(m: int, e: int, k: int, gen, device="cuda"):
    import torch

    logits = torch.randn(m, e, device=device, generator=gen)
    top = logits.topk(k, dim=-1)
    return top.indices.to(torch.int32).contiguous(), torch.softmax(top.values, -1).float().contiguous()


def gpt_oss_selection(e: int, k: int):
    """The oracle's pick for gpt-oss on sm90 with --moe-backend flashinfer_cutlass (select -> build_moe)."""
    from oracle import Device, Environment, LayerSpec, SelectionRequest, select
    from oracle.keys import kMxfp4Static

    layer = LayerSpec(hidden_size=GPT_OSS["hidden"], intermediate_size=GPT_OSS["intermediate"], num_experts=e,
                      top_k=k, activation_fn="swiglu_oai", swiglu_alpha=1.702, swiglu_limit=7.0, has_bias=True)
    sel = select(SelectionRequest(weight=kMxfp4Static, activation=None, moe_backend="flashinfer_cutlass",
                                  device=Device.parse("sm90"), environment=Environment.assume_all(), layer=layer))
    return sel, layer


# --------------------------------------------------------------------------- debug aids


def poison_outputs(adapter) -> None:
    """Debug aid: NaN-fill every output buffer of ``adapter`` before the kernel writes it.

    Wraps the FlashInfer call of a :class:`CutlassW4A16Sm90Adapter` instance, so rows
    the kernel leaves unwritten show up as NaN instead of stale memory.
    """
    real = adapter._fi_moe()

    def poisoned(*args, output, **kwargs):
        output.fill_(float("nan"))
        return real(*args, output=output, **kwargs)

    adapter._fi_moe = lambda: poisoned


@contextlib.contextmanager
def swapped_gate_up():
    """Diagnostic: prepare GEMM1 rows as ``[gate; up]`` instead of FlashInfer's ``[up; gate]``."""
    import torch

    from oracle.kernels import adapters as A

    real = A.cutlass_sm90_host_layout

    def swap(t):
        return None if t is None else torch.cat(t.chunk(2, dim=1)[::-1], dim=1).contiguous()

    def swapped(*args, **kwargs):
        fc1, s1, fc2, s2, b1, b2 = real(*args, **kwargs)
        return swap(fc1), swap(s1), fc2, s2, swap(b1), b2

    A.cutlass_sm90_host_layout = swapped
    try:
        yield
    finally:
        A.cutlass_sm90_host_layout = real


# --------------------------------------------------------------------------- build


def run_build(result: dict) -> object:
    import jit_research as jr

    from oracle.kernels.jit import build_cutlass_w4a16_sm90

    t = time.time()
    b = build_cutlass_w4a16_sm90(progress=log)
    info = result["build"] = b.to_dict()
    info["wall_s"] = time.time() - t
    from oracle.kernels.jit.sm90 import compiled_everything

    info["cached"] = b.built_now == 0  # reused from the JIT cache: nothing compiled in this run
    info["from_scratch"] = compiled_everything(b)  # every object compiled now: a build time to compare
    info["object_seconds"] = secs = jr.object_seconds(b)
    info["full_module"] = census = jr.full_module_census()
    est = jr.estimate_full_build(secs, census, cores=os.cpu_count() or 16)
    info["full_build_estimate"] = est
    how = "reused from the JIT cache" if info["cached"] else (
        f"compile {b.phase_seconds.get('compile', 0):.0f}s, total {b.phase_seconds.get('total', 0):.0f}s")
    log(f"build: {b.object_count} objects, {how}")
    if est:
        log(f"full fused_moe_90 estimate {est['full_wall_seconds_est'] / 60:.0f} min on {os.cpu_count()} cores "
            f"({est['full_generated_instantiations']} GEMM instantiations x "
            f"{est['per_gemm_instantiation_s']:.0f}s + {est['full_non_generated_files']} x "
            f"{est['per_non_generated_object_s']:.0f}s)")
    return b


# --------------------------------------------------------------------------- correctness


def run_checks(result: dict, ms=CHECK_MS, e: int = 32, seed: int | None = None) -> bool:
    import torch

    from oracle.kernels import build_moe
    from oracle.kernels.checkpoint import random_gpt_oss_layer
    from oracle.kernels.reference import moe_reference

    seed = int(time.time() * 1000) % (2 ** 31) if seed is None else seed
    k, h, i = GPT_OSS["top_k"], GPT_OSS["hidden"], GPT_OSS["intermediate"]
    sel, layer = gpt_oss_selection(e, k)
    log(f"check: oracle selected {sel.backend} ({sel.selected_by}); seed {seed}")
    weights = random_gpt_oss_layer(e, h, i, seed=seed, device="cuda")
    moe = build_moe(sel, weights, layer)
    poison_outputs(moe.adapter)
    rows, ok = [], True
    for m in ms:
        g = torch.Generator(device="cuda").manual_seed(seed + 7919 * m)
        x = torch.randn(m, h, device="cuda", generator=g).to(torch.bfloat16)
        ids, w = routing(m, e, k, g)
        out = moe(x, ids, w)
        torch.cuda.synchronize()
        ref = moe_reference(x.float(), weights, ids, w)
        d = out.double() - ref.double()
        rel = float(d.norm() / ref.double().norm())
        nan = int(torch.isnan(out).sum())
        passed = nan == 0 and rel <= 1e-2 and out.shape == (m, h)
        ok &= passed
        rows.append({"M": m, "rel_err": rel, "max_abs_err": float(d.abs().max()), "nan": nan,
                     "ref_rms": float(ref.double().pow(2).mean().sqrt()), "pass": passed})
        log(f"check M={m:5d}: rel err {rel:.3e}, max abs {rows[-1]['max_abs_err']:.3e}, NaN {nan} -> "
            f"{'PASS' if passed else 'FAIL'}")
    result["check"] = {"backend": sel.backend, "selected_by": sel.selected_by, "seed": seed, "E": e,
                       "H": h, "I": i, "top_k": k, "rows": rows, "pass": ok, "tolerance": 1e-2,
                       "poisoned_output": True}
    if not ok:
        result["check"]["diagnostics"] = diagnose(weights, moe.adapter, seed, e, k)
    return ok


def diagnose(weights, adapter, seed: int, e: int, k: int) -> list[dict]:
    """On a failed check: which variant of the layout/semantics would match the reference?"""
    import torch

    from oracle.kernels.adapters import CutlassW4A16Sm90Adapter
    from oracle.kernels.reference import SILU_SWIGLU, ActivationSpec, moe_reference

    h = weights.hidden_size
    g = torch.Generator(device="cuda").manual_seed(seed + 1)
    x = torch.randn(16, h, device="cuda", generator=g).to(torch.bfloat16)
    ids, w = routing(16, e, k, g)
    out = []
    variants = [("gate_up rows", swapped_gate_up, None),
                ("ref without clamp", contextlib.nullcontext,
                 ActivationSpec("swiglu_oai", alpha=1.702, limit=math.inf)),
                ("ref plain silu, halves", contextlib.nullcontext, SILU_SWIGLU)]
    for name, context, ref_act in variants:
        try:
            ad = CutlassW4A16Sm90Adapter()
            with context():
                p = ad.prepare(weights)
            y = ad.run(p, x, ids, w)
            ref = moe_reference(x.float(), weights, ids, w, **({"activation": ref_act} if ref_act else {}))
            rel = float((y.double() - ref.double()).norm() / ref.double().norm())
        except Exception as ex:  # keep diagnosing
            rel = f"{type(ex).__name__}: {str(ex)[:200]}"
        out.append({"variant": name, "rel_err": rel})
        log(f"diagnose {name}: {rel}")
    return out


# --------------------------------------------------------------------------- benchmark


def _prepared_bytes(prepared) -> int:
    """Bytes of a PreparedCutlassW4A16's tensors as the kernel reads them (padded)."""
    ts = [prepared.fc1_weights, prepared.fc2_weights, *prepared.quant_scales]
    ts += [t for t in (prepared.fc1_bias, prepared.fc2_bias) if t is not None]
    return sum(t.numel() * t.element_size() for t in ts)


def _expert_bytes(prepared) -> float:
    return _prepared_bytes(prepared) / prepared.num_experts


def run_bench(result: dict, es=BENCH_ES, ms=BENCH_MS, seed: int = 1234, n_sets: int = 8,
              ref_max_m: int = 4096, adapter_kwargs: dict | None = None, key: str = "bench") -> list[dict]:
    import torch

    from oracle.kernels.adapters import CutlassW4A16Sm90Adapter
    from oracle.kernels.checkpoint import random_gpt_oss_layer
    from oracle.kernels.reference import moe_reference
    from flashinfer.fused_moe import cutlass_fused_moe

    ceil = result.get("ceilings") or measure_ceilings()
    result["ceilings"] = ceil
    log(f"ceilings: copy {ceil['copy_GBps']:.0f} GB/s (read+write), bf16 matmul {ceil['matmul_TFLOPs']:.0f} TFLOP/s")
    k, h, i = GPT_OSS["top_k"], GPT_OSS["hidden"], GPT_OSS["intermediate"]
    rows = []
    for e in es:
        t0 = time.time()
        weights = random_gpt_oss_layer(e, h, i, seed=seed + e, device="cuda")
        # Timing measures the kernel: the default per-call value checks (a device sync
        # each) are off here, as on a CUDA-graph hot path.
        adapter = CutlassW4A16Sm90Adapter(**{"check_finite": False, "check_expert_ids": False,
                                             **(adapter_kwargs or {})})
        prep = adapter.prepare(weights)
        log(f"bench E={e}: prepared {_prepared_bytes(prep) / 2**30:.2f} GiB in {time.time() - t0:.1f}s")
        t1 = time.time()
        try:
            adapter.tune(prep, list(ms), k)
            tuned = True
            log(f"bench E={e}: FlashInfer autotune over M={list(ms)} took {time.time() - t1:.1f}s")
        except Exception as ex:
            tuned = False
            log(f"bench E={e}: autotune failed ({type(ex).__name__}: {str(ex)[:300]}); default tactics")
        per_expert = _expert_bytes(prep)
        kw = prep.flashinfer_kwargs()
        for m in ms:
            g = torch.Generator(device="cuda").manual_seed(seed + 31 * m + e)
            nset = n_sets if m <= 256 else max(2, n_sets // 2)
            sets = []
            for _ in range(nset):
                x = torch.randn(m, h, device="cuda", generator=g).to(torch.bfloat16)
                ids, w = routing(m, e, k, g)
                xp = torch.nn.functional.pad(x, (0, prep.hidden_pad - h))
                outp = torch.empty(m, prep.hidden_pad, dtype=torch.bfloat16, device="cuda")
                sets.append({"x": x, "xp": xp, "ids": ids, "w": w, "outp": outp,
                             "ws": adapter.workspace(prep, m, k)})
            active = statistics.mean(float(torch.unique(s["ids"]).numel()) for s in sets)
            bytes_moved = active * per_expert + m * h * 2 * 2  # experts read + activations in/out
            flops = 2.0 * m * k * 3 * h * i

            def f_adapter(s):
                return adapter.run(prep, s["x"], s["ids"], s["w"])

            def f_adapter_padded(s):
                return adapter.run(prep, s["xp"], s["ids"], s["w"])

            def f_raw(s):
                return cutlass_fused_moe(s["xp"], s["ids"], s["w"], output=s["outp"], workspace_buffer=s["ws"],
                                         use_fused_finalize=adapter.use_fused_finalize, **kw)

            # correctness of the raw path vs the adapter on one set (same kernel, same tactic)
            a_out = f_adapter(sets[0]).float()
            r_out = f_raw(sets[0])
            r_out = (r_out[0] if isinstance(r_out, (list, tuple)) else r_out)[:, :h].float()
            same = float((a_out - r_out).abs().max())
            probe = time_eager(f_raw, sets, iters=5, warmup=2)
            iters = int(min(200, max(15, 400.0 / max(probe, 1e-3))))
            t_raw = time_eager(f_raw, sets, iters)
            t_ad = time_eager(f_adapter, sets, iters)
            t_adp = time_eager(f_adapter_padded, sets, iters)
            t_raw2 = time_eager(f_raw, sets, iters)  # repeat: spread of the baseline itself
            g_raw = time_graph(f_raw, sets, iters)
            g_ad = time_graph(f_adapter, sets, iters)
            g_adp = time_graph(f_adapter_padded, sets, iters)
            t_ref = None
            if m <= ref_max_m:
                rsets = sets[:2]
                t_ref = time_eager(lambda s: moe_reference(s["x"], weights, s["ids"], s["w"]), rsets,
                                   iters=3 if m >= 1024 else 5, warmup=1)
            best = g_ad if g_ad is not None else t_ad
            row = {
                "E": e, "M": m, "active_experts": active, "bytes_moved": bytes_moved, "flops": flops,
                "adapter_ms": t_ad, "adapter_prepadded_ms": t_adp, "raw_ms": t_raw, "raw_repeat_ms": t_raw2,
                "adapter_graph_ms": g_ad, "adapter_prepadded_graph_ms": g_adp, "raw_graph_ms": g_raw,
                "reference_ms": t_ref,
                "adapter_prepadded_vs_raw_graph": (g_adp / g_raw - 1.0) if (g_adp and g_raw) else None,
                "adapter_vs_raw": t_ad / t_raw - 1.0, "adapter_prepadded_vs_raw": t_adp / t_raw - 1.0,
                "adapter_vs_raw_graph": (g_ad / g_raw - 1.0) if (g_ad and g_raw) else None,
                "raw_spread": abs(t_raw2 / t_raw - 1.0),
                "speedup_vs_reference": (t_ref / t_ad) if t_ref else None,
                "timing_for_fractions": "graph" if g_ad is not None else "eager",
                "bw_fraction": bytes_moved / (best * 1e-3) / (ceil["copy_GBps"] * 1e9),
                "flop_fraction": flops / (best * 1e-3) / (ceil["matmul_TFLOPs"] * 1e12),
                "adapter_raw_max_abs_diff": same, "tuned": tuned, "input_sets": nset, "iters": iters,
            }
            rows.append(row)
            log(f"bench E={e:3d} M={m:5d}: adapter {t_ad * 1e3:8.1f} us (graph "
                f"{(g_ad or float('nan')) * 1e3:8.1f}), raw {t_raw * 1e3:8.1f} us (graph "
                f"{(g_raw or float('nan')) * 1e3:8.1f}), ref {(t_ref or float('nan')) * 1e3:9.1f} us, "
                f"BW {row['bw_fraction'] * 100:5.1f}%, FLOP {row['flop_fraction'] * 100:5.1f}%")
            sets = None
        prep = weights = None  # free the layer before the next E (the closures above are done)
        torch.cuda.empty_cache()
    result[key] = rows
    return rows


# --------------------------------------------------------------------------- side by side

#: Backends timed side by side by run_side: name -> (matrix row, activation key name, reference act_quant).
SIDE_BACKENDS = {
    "HUMMING": ("HUMMING", None, None),
    "HUMMING+fp8_per_token": ("HUMMING", "kFp8DynamicTokenSym", "fp8_per_token"),
    "HUMMING+fp8_per_tensor": ("HUMMING", "kFp8DynamicTensorSym", "fp8_per_tensor"),
    "EMULATION": ("EMULATION", None, None),
}
ALL_BACKENDS = ("FLASHINFER_CUTLASS_MXFP4_BF16", *SIDE_BACKENDS)


def _weight_bytes_per_expert(weights) -> float:
    ts = [weights.w13_blocks, weights.w13_scales, weights.w2_blocks, weights.w2_scales]
    ts += [t for t in (weights.w13_bias, weights.w2_bias) if t is not None]
    return sum(t.numel() * t.element_size() for t in ts) / weights.num_experts


def run_side(result: dict, names=tuple(SIDE_BACKENDS), es=(32,), ms=BENCH_MS, check_ms=CHECK_MS,
             seed: int = 4321, n_sets: int = 8) -> list[dict]:
    """HUMMING (bf16 / fp8 per token / fp8 per tensor) and EMULATION: check + time, same inputs.

    Per backend: prepare time, first-call JIT time per token bucket, rel. error against
    the float reference (with the backend's activation QDQ, and against bf16 activations),
    and per M the eager and CUDA-graph medians over rotated input sets; for HUMMING also
    the library calls alone (routing metadata precomputed) -- the adapter's overhead.
    """
    import types

    import torch

    import oracle.keys as K
    from oracle.kernels import build_moe
    from oracle.kernels.checkpoint import random_gpt_oss_layer
    from oracle.kernels.reference import moe_reference

    ceil = result.get("ceilings") or measure_ceilings()
    result["ceilings"] = ceil
    k, h, i = GPT_OSS["top_k"], GPT_OSS["hidden"], GPT_OSS["intermediate"]
    rows = result.setdefault("side", [])
    checks = result.setdefault("side_checks", [])
    builds = result.setdefault("side_builds", [])
    for e in es:
        weights = random_gpt_oss_layer(e, h, i, seed=seed + e, device="cuda")
        per_expert = _weight_bytes_per_expert(weights)
        from oracle import LayerSpec

        layer = LayerSpec(hidden_size=h, intermediate_size=i, num_experts=e, top_k=k, activation_fn="swiglu_oai",
                          swiglu_alpha=1.702, swiglu_limit=7.0, has_bias=True)
        # inputs shared by every backend (rotated sets, bigger than L2 together with the weights)
        inputs = {}
        for m in ms:
            g = torch.Generator(device="cuda").manual_seed(seed + 31 * m + e)
            nset = n_sets if m <= 256 else max(2, n_sets // 2)
            inputs[m] = []
            for _ in range(nset):
                x = torch.randn(m, h, device="cuda", generator=g).to(torch.bfloat16)
                ids, w = routing(m, e, k, g)
                inputs[m].append({"x": x, "ids": ids, "w": w})
        refs = {}
        for m in check_ms:
            g = torch.Generator(device="cuda").manual_seed(seed + 7919 * m + e)
            x = torch.randn(m, h, device="cuda", generator=g).to(torch.bfloat16)
            ids, w = routing(m, e, k, g)
            refs[m] = {"x": x, "ids": ids, "w": w, None: moe_reference(x.float(), weights, ids, w).double()}
        for name in names:
            row_name, key_name, act_quant = SIDE_BACKENDS[name]
            sel = types.SimpleNamespace(backend=row_name, activation=getattr(K, key_name) if key_name else None)
            t0 = time.time()
            try:
                if row_name == "HUMMING" and key_name:  # an FP8 mode the adapter runs (not only requested keys)
                    from oracle.kernels.adapters import adapter_for
                    from oracle.kernels.moe import MoEModule

                    ad = adapter_for("HUMMING", activation_key=sel.activation, check_finite=False,
                                     check_expert_ids=False)
                    moe = MoEModule("HUMMING", ad, ad.prepare(weights), k)
                else:
                    moe = build_moe(sel, weights, layer, check_finite=False, check_expert_ids=False)
                torch.cuda.synchronize()
                prep_s = time.time() - t0
                jit = {}
                if row_name == "HUMMING":
                    t1 = time.time()
                    jit = moe.adapter.warmup(moe.prepared, sorted(set(ms) | set(check_ms)), k)
                    log(f"side {name} E={e}: prepared in {prep_s:.1f}s, JIT {len(jit)} buckets in "
                        f"{time.time() - t1:.1f}s ({', '.join(f'{b}: {v:.1f}s' for b, v in sorted(jit.items()))})")
                else:
                    log(f"side {name} E={e}: prepared in {prep_s:.1f}s")
                builds.append({"backend": name, "E": e, "prepare_s": prep_s,
                               "jit_s": {str(b): v for b, v in sorted(jit.items())}})
            except Exception as ex:
                log(f"side {name} E={e}: build failed: {type(ex).__name__}: {str(ex)[:400]}")
                log(traceback.format_exc())
                builds.append({"backend": name, "E": e, "error": f"{type(ex).__name__}: {ex}"})
                continue
            # correctness
            for m, r in refs.items():
                try:
                    out = moe(r["x"], r["ids"], r["w"]).double()
                    torch.cuda.synchronize()
                    if act_quant not in r:
                        r[act_quant] = moe_reference(r["x"].float(), weights, r["ids"], r["w"],
                                                     act_quant=act_quant).double()
                    ref_q, ref = r[act_quant], r[None]
                    rel_q = float((out - ref_q).norm() / ref_q.norm())
                    rel = float((out - ref).norm() / ref.norm())
                    nan = int(torch.isnan(out).sum())
                    checks.append({"backend": name, "E": e, "M": m, "rel_err": rel_q, "rel_err_vs_bf16": rel,
                                   "nan": nan, "pass": nan == 0 and rel_q <= 3e-2})
                    log(f"side check {name} E={e} M={m}: rel err {rel_q:.3e} (vs bf16 activations {rel:.3e}), "
                        f"NaN {nan}")
                except Exception as ex:
                    checks.append({"backend": name, "E": e, "M": m, "error": f"{type(ex).__name__}: {ex}"})
                    log(f"side check {name} E={e} M={m} failed: {type(ex).__name__}: {str(ex)[:400]}")
            # timing
            for m in ms:
                sets = inputs[m]
                active = statistics.mean(float(torch.unique(st["ids"]).numel()) for st in sets)
                floor_ms = active * per_expert / (ceil["copy_GBps"] * 1e9) * 1e3  # as device.md: bytes / copy BW

                def f(st):
                    return moe(st["x"], st["ids"], st["w"])

                try:
                    probe = time_eager(f, sets, iters=3, warmup=1)
                    iters = int(min(200, max(10, 300.0 / max(probe, 1e-3))))
                    if row_name == "EMULATION":
                        iters = min(iters, 20)
                    t_e = time_eager(f, sets, iters)
                    t_g = None if row_name == "EMULATION" else time_graph(f, sets, iters, key=name)
                    t_raw = t_raw_g = None
                    if row_name == "HUMMING":
                        ad, pr = moe.adapter, moe.prepared
                        for st in sets:
                            st["_plan"] = ad.routing(pr, st["ids"])

                        def f_raw(st):
                            plan, r1, r2 = st["_plan"]
                            return ad.gemms(pr, plan, r1, r2, st["x"], st["w"])

                        t_raw = time_eager(f_raw, sets, iters)
                        t_raw_g = time_graph(f_raw, sets, iters, key=name + "/raw")
                        for st in sets:
                            st.pop("_plan", None)
                except Exception as ex:
                    log(f"side time {name} E={e} M={m} failed: {type(ex).__name__}: {str(ex)[:400]}")
                    rows.append({"backend": name, "E": e, "M": m, "error": f"{type(ex).__name__}: {ex}"})
                    continue
                best = t_g if t_g is not None else t_e
                row = {"backend": name, "E": e, "M": m, "active_experts": active, "floor_ms": floor_ms,
                       "eager_ms": t_e, "graph_ms": t_g, "lib_eager_ms": t_raw, "lib_graph_ms": t_raw_g,
                       "floor_fraction": floor_ms / best, "iters": iters, "input_sets": len(sets)}
                rows.append(row)
                log(f"side time {name:24s} E={e:3d} M={m:5d}: eager {t_e * 1e3:9.1f} us, graph "
                    f"{(t_g or float('nan')) * 1e3:9.1f} us, library-only graph {(t_raw_g or float('nan')) * 1e3:8.1f}"
                    f" us, floor {floor_ms * 1e3:6.1f} us ({row['floor_fraction'] * 100:5.1f}%)")
            moe = None
            torch.cuda.empty_cache()
        weights = inputs = refs = None
        torch.cuda.empty_cache()
    return rows


def side_table(result: dict) -> list[str]:
    """One line per (E, M): every backend's best time (graph, else eager) and ratios to FlashInfer."""
    fi = {(r["E"], r["M"]): r for r in result.get("bench") or []}
    side = [r for r in result.get("side") or [] if "error" not in r]
    if not side and not fi:
        return []
    names = [n for n in SIDE_BACKENDS if any(r["backend"] == n for r in side)]
    by = {(r["backend"], r["E"], r["M"]): r for r in side}
    keys = sorted({(r["E"], r["M"]) for r in side} | set(fi))
    short = {"HUMMING": "HUM", "HUMMING+fp8_per_token": "HUMfp8tok", "HUMMING+fp8_per_tensor": "HUMfp8ten",
             "HUMMING+mxfp8": "HUMmxfp8", "EMULATION": "EMU(eager)"}
    head = f"{'E':>3} {'M':>5} {'floor':>7} {'FI_bf16':>8}" + "".join(f" {short[n]:>10}" for n in names)
    head += "".join(f" {short[n] + '/FI':>13}" for n in names if n != "EMULATION")
    head += f" {'HUM lib-only':>12}"
    lines = ["side by side (us, CUDA graph; EMULATION eager; floor = active experts' weight bytes / copy BW):",
             head]
    for e, m in keys:
        f = fi.get((e, m))
        fi_t = (f.get("adapter_graph_ms") or f.get("adapter_ms")) if f else None
        floor = next((by[(n, e, m)]["floor_ms"] for n in names if (n, e, m) in by), None)
        cells = []
        for n in names:
            r = by.get((n, e, m))
            cells.append((r.get("graph_ms") or r.get("eager_ms")) if r else None)
        line = f"{e:3d} {m:5d} {_fmt(floor, 1e3, '7.1f')} {_fmt(fi_t, 1e3, '8.1f')}"
        line += "".join(f" {_fmt(c, 1e3, '10.1f')}" for c in cells)
        line += "".join(f" {_fmt((c / fi_t) if (c and fi_t) else None, 1, '13.2f')}"
                        for n, c in zip(names, cells) if n != "EMULATION")
        h = by.get(("HUMMING", e, m))
        line += f" {_fmt(h.get('lib_graph_ms') if h else None, 1e3, '12.1f')}"
        lines.append(line)
    ch = result.get("side_checks") or []
    if ch:
        lines.append("rel. error vs the float reference with the backend's activation QDQ (vs bf16 activations):")
        for n in names:
            rs = [c for c in ch if c["backend"] == n]
            lines.append(f"  {n}: " + ", ".join(
                (f"E={c['E']} M={c['M']}: {c['rel_err']:.2e} ({c['rel_err_vs_bf16']:.2e})" if "error" not in c
                 else f"E={c['E']} M={c['M']}: ERROR {c['error'][:80]}") for c in rs))
    for b in result.get("side_builds") or []:
        if "error" in b:
            lines.append(f"  build {b['backend']} E={b['E']}: ERROR {b['error'][:200]}")
        else:
            lines.append(f"  build {b['backend']} E={b['E']}: prepare {b['prepare_s']:.1f}s"
                         + (", first-call JIT per bucket " + ", ".join(f"{k}: {v:.1f}s" for k, v in b["jit_s"].items())
                            if b["jit_s"] else ""))
    return lines


# --------------------------------------------------------------------------- experiments


def run_variant(result: dict) -> None:
    """Decode experiment: H, I padded to 512 so K-tile 256/512 configs are legal (own module)."""
    import torch

    from jit_research import K512_TILES

    from oracle.kernels.adapters import CutlassW4A16Sm90Adapter
    from oracle.kernels.checkpoint import random_gpt_oss_layer
    from oracle.kernels.jit import build_cutlass_w4a16_sm90
    from oracle.kernels.reference import moe_reference

    t = time.time()
    b = build_cutlass_w4a16_sm90(tiles=K512_TILES, progress=log)
    v = {"build": {"name": b.name, "object_count": b.object_count, "built_now": b.built_now,
                   "phase_seconds": b.phase_seconds, "tiles": b.kept_tiles}, "build_wall_s": time.time() - t}
    e, k, h, i = 32, GPT_OSS["top_k"], GPT_OSS["hidden"], GPT_OSS["intermediate"]
    w = random_gpt_oss_layer(e, h, i, seed=99, device="cuda")
    ad = CutlassW4A16Sm90Adapter(alignment=512, tiles=K512_TILES)
    poison_outputs(ad)
    p = ad.prepare(w)
    g = torch.Generator(device="cuda").manual_seed(5)
    x = torch.randn(16, h, device="cuda", generator=g).to(torch.bfloat16)
    ids, tw = routing(16, e, k, g)
    y = ad.run(p, x, ids, tw)
    ref = moe_reference(x.float(), w, ids, tw)
    v["check_rel_err_M16"] = float((y.double() - ref.double()).norm() / ref.double().norm())
    log(f"variant K512: rel err at M=16 {v['check_rel_err_M16']:.3e}")
    del p, w
    torch.cuda.empty_cache()
    result["variant_k512"] = v
    run_bench(result, es=BENCH_ES, ms=(1, 4, 16, 64), adapter_kwargs={"alignment": 512, "tiles": K512_TILES},
              key="variant_k512_bench", ref_max_m=0)


def run_probe(result: dict, timeout_s: float = 300.0) -> None:
    """Measure sample objects of the full fused_moe_90 build; estimate its wall time."""
    from jit_research import probe_full_objects

    pr = probe_full_objects(timeout_s=timeout_s, progress=log)
    cores = os.cpu_count() or 16
    objs = pr["objects"]
    fam_t = {fam: next(o["seconds"] for n, o in objs.items() if n == name) for fam, name in pr["samples"].items()}
    gen_cpu = sum(pr["families"][f] * fam_t[f] for f in pr["families"])
    kept = (result.get("build") or {}).get("object_seconds", {})
    kept_nongen = [t for n, t in kept.items() if "w4a16_" not in n]
    dropped_nongen = [o["seconds"] for o in objs.values() if o["family"] == "non-generated"]
    cpu = gen_cpu + sum(kept_nongen) + sum(dropped_nongen)
    longest = max([o["seconds"] for o in objs.values()] + kept_nongen)
    unfinished = [n for n, o in objs.items() if not o["finished"]]
    pr.update(family_seconds=fam_t, full_cpu_s=cpu, full_wall_est_s=max(cpu / cores, longest),
              longest_object_s=longest, cores=cores, unfinished=unfinished,
              lower_bound=bool(unfinished))
    build = result.get("build") or {}
    trimmed = build.get("phase_seconds", {}).get("total")
    if trimmed and _from_scratch(build):  # a cached or partly cached build's time is no build time
        pr["ratio_full_over_trimmed"] = pr["full_wall_est_s"] / trimmed
    result["full_build_probe"] = pr
    log(f"probe: families {pr['families']}, per-object seconds {fam_t}; full build ~{cpu / 60:.0f} CPU-min "
        f"-> ~{pr['full_wall_est_s'] / 60:.1f} min on {cores} cores"
        + (f" (lower bound: {len(unfinished)} objects unfinished at {timeout_s:.0f}s)" if unfinished else ""))


# --------------------------------------------------------------------------- report


def _fmt(v, scale=1.0, spec="8.1f"):
    return format(v * scale, spec) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else "     n/a"


def _cached(build: dict) -> bool:
    """Whether the build came from the JIT cache (nothing compiled in this run)."""
    return bool(build.get("cached", build.get("built_now") == 0))


def _from_scratch(build: dict) -> bool:
    """Whether every object of the build was compiled in this run (only then is its time a build time).

    A cached build, or one that relinked or recompiled only some objects, took seconds: comparing
    that with a full build gave ratios like "trimmed 0.0 min -> ratio 9048.5x".
    """
    if "from_scratch" in build:
        return bool(build["from_scratch"])
    from oracle.kernels.jit.sm90 import compiled_everything

    return compiled_everything(build)


def summary_text(result: dict) -> str:
    lines = ["== oracle device check ==", json.dumps(result.get("env", {}))]
    b = result.get("build")
    if b:
        est = b.get("full_build_estimate") or {}
        total = b.get("phase_seconds", {}).get("total", 0)
        cached = _cached(b)
        how = (f"cached (reused from the JIT cache, {total:.1f}s)" if cached else
               f"compile {b['phase_seconds'].get('compile', 0):.0f}s, total {total:.0f}s; "
               f"built now {b['built_now']}")
        lines.append(f"build: {b['name']} {b['object_count']} objects (full module {b['full_object_count']}), "
                     f"{b['stubbed_symbols']} dropped symbols stubbed; {how}")
        if est:
            compiled = b.get("compiled_now")
            trimmed = (f"trimmed {total / 60:.1f} min -> ratio {est['full_wall_seconds_est'] / total:.1f}x"
                       if _from_scratch(b) and total > 0 else
                       "trimmed: cached, no build time to compare" if cached else
                       f"trimmed: {compiled if compiled is not None else '?'} of {b['object_count']} objects "
                       "compiled now, no build time to compare")
            lines.append(f"full fused_moe_90 upper-bound estimate ({est['full_generated_instantiations']} "
                         f"instantiations x single-instantiation TU time): "
                         f"{est['full_wall_seconds_est'] / 60:.1f} min wall on "
                         f"{result.get('env', {}).get('cpus')} cores ({est['full_cpu_seconds_est'] / 60:.0f} CPU-min); "
                         + trimmed)
    c = result.get("check")
    if c:
        lines.append(f"check ({c['backend']}, E={c['E']}, seed {c['seed']}): " + ", ".join(
            f"M={r['M']}: {r['rel_err']:.2e}{'' if r['pass'] else ' FAIL'}" for r in c["rows"])
                     + f" -> {'PASS' if c['pass'] else 'FAIL'}")
    ce = result.get("ceilings")
    if ce:
        lines.append(f"ceilings: copy {ce['copy_GBps']:.0f} GB/s, bf16 matmul {ce['matmul_TFLOPs']:.0f} TFLOP/s")
    rows = result.get("bench") or []
    if rows:
        lines.append("  E     M  act  adapter_us  graph_us  raw_us  rawgraph_us  ad/raw%  pad/raw%  gr-ad/raw%  gr-pad/raw%  ref_us  ref/ad  BW%   FLOP%")
        for r in rows:
            lines.append(
                f"{r['E']:3d} {r['M']:5d} {r['active_experts']:4.1f} {_fmt(r['adapter_ms'], 1e3, '10.1f')} "
                f"{_fmt(r['adapter_graph_ms'], 1e3, '9.1f')} {_fmt(r['raw_ms'], 1e3, '7.1f')} "
                f"{_fmt(r['raw_graph_ms'], 1e3, '11.1f')} {_fmt(r['adapter_vs_raw'], 100, '8.1f')} "
                f"{_fmt(r['adapter_prepadded_vs_raw'], 100, '8.1f')} {_fmt(r.get('adapter_vs_raw_graph'), 100, '11.1f')} "
                f"{_fmt(r.get('adapter_prepadded_vs_raw_graph'), 100, '12.1f')} {_fmt(r['reference_ms'], 1e3, '8.0f')} "
                f"{_fmt(r['speedup_vs_reference'], 1, '7.1f')} {_fmt(r['bw_fraction'], 100, '5.1f')} "
                f"{_fmt(r['flop_fraction'], 100, '5.1f')}")
        dec = [r for r in rows if r["M"] <= 16]
        lines.append("targets: decode BW>=60%: " + ("met" if dec and all(r["bw_fraction"] >= 0.6 for r in dec) else "MISSED")
                     + f" (min {min(r['bw_fraction'] for r in dec) * 100:.1f}%)" if dec else "")
        sp = [r["speedup_vs_reference"] for r in rows if r["speedup_vs_reference"]]
        if sp:
            lines.append(f"targets: >=10x reference: {'met' if min(sp) >= 10 else 'MISSED'} (min {min(sp):.1f}x)")
        ov = [r["adapter_vs_raw"] for r in rows]
        lines.append(f"targets: adapter within 3% of raw (eager, host-bound at small M): "
                     f"{'met' if max(ov) <= 0.03 else 'MISSED'} (max {max(ov) * 100:.1f}%; pre-padded input max "
                     f"{max(r['adapter_prepadded_vs_raw'] for r in rows) * 100:.1f}%; raw-vs-raw spread max "
                     f"{max(r.get('raw_spread', 0) for r in rows) * 100:.1f}%)")
        og = [r.get("adapter_vs_raw_graph") for r in rows if r.get("adapter_vs_raw_graph") is not None]
        op = [r.get("adapter_prepadded_vs_raw_graph") for r in rows
              if r.get("adapter_prepadded_vs_raw_graph") is not None]
        if og:
            lines.append(f"targets: adapter within 3% of raw (CUDA graph, GPU time): "
                         f"{'met' if max(og) <= 0.03 else 'MISSED'} (max {max(og) * 100:.1f}%"
                         + (f"; pre-padded input max {max(op) * 100:.1f}%)" if op else ")"))
    lines += side_table(result)
    pr = result.get("full_build_probe")
    if pr:
        lines.append(f"full-build probe: per-object s {json.dumps({k: round(v) for k, v in pr['family_seconds'].items()})} "
                     f"x files {json.dumps(pr['families'])}; full ~{pr['full_cpu_s'] / 60:.0f} CPU-min -> "
                     f"~{pr['full_wall_est_s'] / 60:.1f} min on {pr['cores']} cores"
                     + (f" (ratio {pr['ratio_full_over_trimmed']:.1f}x the trimmed build)" if pr.get('ratio_full_over_trimmed') else "")
                     + (" [lower bound]" if pr.get("lower_bound") else ""))
    v = result.get("variant_k512")
    vr = result.get("variant_k512_bench") or []
    if v:
        lines.append(f"variant K512 (pad 3072): {v['build']['object_count']} objects, built in {v['build_wall_s']:.0f}s, "
                     f"rel err M=16 {v.get('check_rel_err_M16', float('nan')):.2e}")
    for r in vr:
        lines.append(f"  variant E={r['E']:3d} M={r['M']:4d}: adapter graph {_fmt(r['adapter_graph_ms'], 1e3, '7.1f')} us, "
                     f"raw graph {_fmt(r['raw_graph_ms'], 1e3, '7.1f')} us, BW {r['bw_fraction'] * 100:5.1f}%")
    for err in result.get("experiment_errors", []):
        lines.append("experiment error: " + err)
    if result.get("error"):
        lines.append("ERROR: " + result["error"])
    return "\n".join(lines)


def plot_side(result: dict) -> None:
    """Time vs M, one line per kernel (graph; EMULATION eager), the physical floor dashed."""
    side = [r for r in result.get("side") or [] if "error" not in r]
    fi = result.get("bench") or []
    if not side and not fi:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return
    es = sorted({r["E"] for r in side} | {r["E"] for r in fi})
    fig, axes = plt.subplots(1, len(es), figsize=(6.5 * len(es), 4.5), squeeze=False)
    for ax, e in zip(axes[0], es):
        rs = sorted((r for r in fi if r["E"] == e), key=lambda r: r["M"])
        if rs:
            ax.loglog([r["M"] for r in rs], [(r["adapter_graph_ms"] or r["adapter_ms"]) * 1e3 for r in rs], "o-",
                      label="FLASHINFER_CUTLASS_MXFP4_BF16")
        for n in SIDE_BACKENDS:
            rs = sorted((r for r in side if r["E"] == e and r["backend"] == n), key=lambda r: r["M"])
            if rs:
                ax.loglog([r["M"] for r in rs], [(r["graph_ms"] or r["eager_ms"]) * 1e3 for r in rs], "o-",
                          label=n + (" (eager)" if n == "EMULATION" else ""))
        fl = sorted({(r["M"], r["floor_ms"]) for r in side if r["E"] == e})
        if fl:
            ax.loglog([m for m, _ in fl], [f * 1e3 for _, f in fl], "k--", label="floor (weights / copy BW)")
        ax.set_title(f"E = {e}, top-4, H = I = 2880")
        ax.set_xlabel("tokens M")
        ax.set_ylabel("median time (us)")
        ax.legend(fontsize=7)
    fig.suptitle(f"MXFP4 MoE kernels side by side, {result.get('env', {}).get('device', '')}")
    fig.tight_layout()
    fig.savefig(SIDE_PLOT, dpi=110)


def plot(result: dict) -> None:
    plot_side(result)
    rows = result.get("bench") or []
    if not rows:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for e in sorted({r["E"] for r in rows}):
        rs = [r for r in rows if r["E"] == e]
        m = [r["M"] for r in rs]
        g = all(r.get("adapter_graph_ms") and r.get("raw_graph_ms") for r in rs)
        kind = "graph" if g else "eager"
        axes[0].loglog(m, [(r["adapter_graph_ms"] if g else r["adapter_ms"]) * 1e3 for r in rs], "o-",
                       label=f"adapter E={e} ({kind})")
        axes[0].loglog(m, [(r["raw_graph_ms"] if g else r["raw_ms"]) * 1e3 for r in rs], "x--",
                       label=f"raw FlashInfer E={e} ({kind})")
        axes[0].loglog([r["M"] for r in rs if r["reference_ms"]], [r["reference_ms"] * 1e3 for r in rs if r["reference_ms"]],
                       "s:", label=f"torch reference E={e}")
        axes[1].semilogx(m, [r["bw_fraction"] * 100 for r in rs], "o-", label=f"copy-BW % E={e}")
        axes[1].semilogx(m, [r["flop_fraction"] * 100 for r in rs], "s--", label=f"bf16-rate % E={e}")
    axes[0].set_xlabel("tokens M")
    axes[0].set_ylabel("median time (us)")
    axes[0].legend(fontsize=7)
    axes[1].axhline(60, color="gray", lw=0.5)
    axes[1].set_xlabel("tokens M")
    axes[1].set_ylabel("% of measured ceiling")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"FlashInfer CUTLASS W4A16 MoE, gpt-oss shapes, {result.get('env', {}).get('device', '')}")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def save(result: dict) -> None:
    RESULT.write_text(json.dumps(result, indent=1, default=str))
    SUMMARY.write_text(summary_text(result) + "\n")


# --------------------------------------------------------------------------- modes


def mode_all(args) -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    result: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "phases": {}}
    rc = 0
    try:
        bootstrap()
        result["env"] = env_info()
        log("env: " + json.dumps(result["env"]))
        side = [b for b in args.backends if b in SIDE_BACKENDS]
        if side:
            t = time.time()
            try:
                run_side(result, names=tuple(side), es=tuple(args.experts), ms=tuple(args.tokens))
            except Exception as e:  # keep going: FlashInfer below
                result.setdefault("experiment_errors", []).append(f"run_side: {type(e).__name__}: {e}")
                log(traceback.format_exc())
                rc = 1
            result["phases"]["side_s"] = time.time() - t
            save(result)
            print("\n".join(side_table(result)), flush=True)
        if "FLASHINFER_CUTLASS_MXFP4_BF16" in args.backends:
            t = time.time()
            run_build(result)
            result["phases"]["build_s"] = time.time() - t
            save(result)
            if not args.no_check:
                t = time.time()
                ok = run_checks(result)
                result["phases"]["check_s"] = time.time() - t
                save(result)
                if not ok:
                    rc = 1
            if not args.no_bench:
                t = time.time()
                run_bench(result, es=tuple(args.experts), ms=tuple(args.tokens))
                result["phases"]["bench_s"] = time.time() - t
                save(result)
        for flag, fn, name in ((args.variant, run_variant, "variant_s"), (args.probe, run_probe, "probe_s")):
            if not flag:
                continue
            t = time.time()
            try:
                fn(result)
            except Exception as e:  # an experiment must not lose the main results
                result.setdefault("experiment_errors", []).append(f"{fn.__name__}: {type(e).__name__}: {e}")
                log(traceback.format_exc())
            result["phases"][name] = time.time() - t
            save(result)
    except BaseException as e:  # record and report any failure
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
        log(result["traceback"])
        rc = 2
    finally:
        save(result)
        try:
            plot(result)
        except Exception as e:
            log(f"plot failed: {e}")
        print(summary_text(result), flush=True)
        DONE.write_text(str(rc))
    return rc


def _copy_out() -> None:
    out = os.environ.get("OUT")
    if not out:
        return
    for p in (RESULT, SUMMARY, LOG, PLOT, SIDE_PLOT):
        if p.exists():
            shutil.copy(p, Path(out) / p.name)
    for j in Path(os.environ.get("FLASHINFER_WORKSPACE_BASE", "/tmp")).glob(".cache/flashinfer/*/*/cached_ops/oracle_*/oracle_build.json"):
        shutil.copy(j, Path(out) / "oracle_build.json")


def follow(log_path: Path, done: Path, deadline_s: float, name: str, copy_out, poll_s: float) -> int:
    """Stream a detached job's log until it is done or the deadline passes (then say so);
    copy its results out either way.  Shared by the device jobs in tools/."""
    deadline = time.time() + deadline_s
    pos = 0
    while True:
        if log_path.exists():
            with open(log_path) as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        if done.exists():
            copy_out()
            print(f"[{name}] job finished (rc {done.read_text().strip()})", flush=True)
            return 0
        if time.time() >= deadline:
            copy_out()
            print(f"[{name}] still running; run `tools/{name}.py wait` again", flush=True)
            return 0
        time.sleep(poll_s)


def mode_wait(args) -> int:
    return follow(LOG, DONE, args.deadline, "device_check", _copy_out, 5)


def mode_start(args) -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    if args.fresh:  # forget a finished/failed job (the JIT build cache under /tmp stays)
        for p in (WORK / "pid", DONE, RESULT, SUMMARY, PLOT, SIDE_PLOT):
            p.unlink(missing_ok=True)
    install_wheels()
    pidf = WORK / "pid"
    if not pidf.exists() and not DONE.exists():
        env = dict(os.environ, PYTHONUNBUFFERED="1", FLASHINFER_WORKSPACE_BASE=os.environ.get(
            "FLASHINFER_WORKSPACE_BASE", "/tmp"))
        extra = []
        if args.no_bench:
            extra.append("--no-bench")
        if args.no_check:
            extra.append("--no-check")
        if args.variant:
            extra.append("--variant")
        if args.probe:
            extra.append("--probe")
        extra += ["--experts", *map(str, args.experts), "--tokens", *map(str, args.tokens),
                  "--backends", *args.backends]
        with open(LOG, "ab") as lf:
            p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "all", *extra], stdout=lf,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=str(REPO),
                                 start_new_session=True)
        pidf.write_text(str(p.pid))
        print(f"[device_check] launched job pid {p.pid}; log {LOG}", flush=True)
    return mode_wait(args)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("start", "wait", "all"))
    ap.add_argument("--deadline", type=float, default=540.0, help="seconds to follow the job (start/wait)")
    ap.add_argument("--fresh", action="store_true", help="start: launch a new job even if one ran before")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--variant", action="store_true", help="also run the K-tile 256/512 decode experiment")
    ap.add_argument("--probe", action="store_true", help="also time sample objects of the full module")
    ap.add_argument("--experts", type=int, nargs="+", default=list(BENCH_ES))
    ap.add_argument("--tokens", type=int, nargs="+", default=list(BENCH_MS))
    ap.add_argument("--backends", nargs="+", default=list(ALL_BACKENDS), choices=ALL_BACKENDS,
                    help="what to build, check and time (FlashInfer W4A16 through run_build/run_bench)")
    args = ap.parse_args(argv)
    if args.mode == "all":
        return mode_all(args)
    if args.mode == "start":
        return mode_start(args)
    return mode_wait(args)


if __name__ == "__main__":
    sys.exit(main())
