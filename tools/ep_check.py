#!/usr/bin/env python3
"""Expert parallelism on two GPUs, in one run: the group decision, EP correctness, EP timing.

Lab tooling, not part of the installed package.  On a 2-GPU machine (repo root)::

    python3 tools/ep_check.py --out "$OUT/ep_check.md"                       # spawns 2 NCCL ranks
    python3 tools/ep_check.py --moe-backend flashinfer_cutlass --out ...    # pin the request's backend
    NCCL_NVLS_ENABLE=0 torchrun --nproc-per-node 2 tools/ep_check.py --out ep_check.md   # the same

CPU dry run (gloo, EMULATION, small shapes; what the tests run)::

    python3 tools/ep_check.py --backend gloo --device cpu

Each rank probes its own device and libraries.  Steps, every rank:

1. ``select_for_group`` over the group for gpt-oss-120b's MoE layer with ``ep_size`` =
   the world size: one decision, the same fingerprint on every rank.  Then the same
   request pinned to the agreed backend with the first library of its matrix row
   hidden from rank 1: every rank must raise NoEligibleBackend / GroupDivergence
   naming rank 1, within the process-group timeout (never a hang).
2. For the agreed backend and every other backend with a kernel here whose matrix
   row allows expert parallelism (and that the group can select on these devices):
   ``build_ep_moe`` (ep_size = world, E / world experts per rank) against
   ``build_moe`` with ep_size = 1 on all experts on the same GPU, and the float32
   reference ``moe_reference``, at each M (uneven: rank r has M >> r tokens, so
   M = 1 leaves rank 1 with none).  Pass: ||EP - ep1|| / ||ep1|| <= 1e-3 and
   ||EP - ref|| / ||ref|| <= 1e-2.
3. Timing of the agreed backend (or, when it has no kernel here, the first of the
   group's eligible backends that has one) at each M (M tokens per rank): the EP step (the
   slowest rank's median; agree + dispatch, compute and combine separately, from
   the module's timing hook) against one GPU running all experts on M tokens and on
   world x M tokens (the group's batch).

Rank 0 prints a markdown section for docs/performance.md (and writes it to
``--out``, with the raw results as JSON next to it); the exit status is 0 when
every check passed.  NVLink multicast stays off (``NCCL_NVLS_ENABLE=0`` is set
before the process group starts).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

GPT_OSS_120B = {"experts": 128, "hidden": 2880, "intermediate": 2880, "top_k": 4}
SMALL = {"experts": 8, "hidden": 64, "intermediate": 64, "top_k": 4}
MS = (1, 16, 256, 2048)
TOL_EP1, TOL_REF = 1e-3, 1e-2


def log(rank: int, msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] rank {rank}: {msg}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("nccl", "gloo"), default=None, help="process group (default: nccl "
                    "with --device cuda, gloo with --device cpu)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None,
                    help="default: cuda when a GPU is visible, else cpu")
    ap.add_argument("--nprocs", type=int, default=2, help="ranks to spawn when not started by torchrun")
    ap.add_argument("--model", default="gpt-oss-120b", help="the model whose MoE request is decided")
    ap.add_argument("--moe-backend", default="auto", help="--moe-backend of the request (default auto)")
    ap.add_argument("--ms", default=",".join(map(str, MS)), help="token counts M per rank")
    ap.add_argument("--shape", choices=("gpt-oss-120b", "small"), default=None,
                    help="MoE shape (default: gpt-oss-120b on cuda, small on cpu)")
    ap.add_argument("--iters", type=int, default=None, help="timed calls per M (default 30 on cuda, 3 on cpu)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls per M (default 5 on cuda, 1 on cpu)")
    ap.add_argument("--tune", action="store_true", help="run the adapter's autotuner first (if it has one)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds: process-group timeout; the launcher stops the ranks 30 s later "
                    "(default 500 cuda, 60 cpu)")
    ap.add_argument("--out", default=None, help="write the markdown section here (and the JSON next to it)")
    args = ap.parse_args(argv)
    if args.device is None:
        try:
            import torch

            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            args.device = "cpu"
    cuda = args.device == "cuda"
    args.backend = args.backend or ("nccl" if cuda else "gloo")
    args.shape = args.shape or ("gpt-oss-120b" if cuda else "small")
    args.iters = args.iters if args.iters is not None else (30 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    args.timeout = args.timeout if args.timeout is not None else (500.0 if cuda else 60.0)
    args.ms = tuple(int(m) for m in str(args.ms).split(",") if m.strip())
    if args.backend == "nccl" and not cuda:
        ap.error("--backend nccl needs --device cuda")
    if args.nprocs < 2:
        ap.error("--nprocs must be at least 2 (rank 1 is the one whose library is hidden)")
    return args


# --------------------------------------------------------------------------- helpers


def _rel(a, b) -> float:
    if b.numel() == 0:
        return 0.0 if a.numel() == 0 else math.inf
    return float((a.double() - b.double()).norm() / b.double().norm())


def _inputs(m: int, e: int, h: int, k: int, seed: int, device):
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(m, h, generator=g).to(torch.bfloat16)
    top = torch.randn(m, e, generator=g).topk(k, dim=-1)
    ids, w = top.indices.to(torch.int32), torch.softmax(top.values, -1).float()
    return x.to(device).contiguous(), ids.to(device).contiguous(), w.to(device).contiguous()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(fn, args, iters: int, warmup: int, device) -> float:
    """Median seconds of ``fn(*args)``: CUDA events on a GPU, perf_counter on the CPU."""
    import torch

    for _ in range(warmup):
        fn(*args)
    _sync(device)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn(*args)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _adapter_takes(backend: str, name: str) -> bool:
    import inspect

    from oracle.kernels.adapters import ADAPTERS

    factory = ADAPTERS.get(backend)
    if factory is None:
        return False
    target = getattr(factory, "func", factory)  # functools.partial
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _all_ok(dist, flag: bool, group=None) -> list[bool]:
    flags: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(flags, bool(flag), group=group)
    return flags


# --------------------------------------------------------------------------- steps


def step_decision(args, rank: int, world: int) -> tuple[dict, object, object]:
    """1. One decision for the EP request; then a library hidden from rank 1."""
    import torch.distributed as dist
    from oracle.matrix import MATRIX

    from oracle import Environment, GroupDivergence, NoEligibleBackend, OracleError
    from oracle.group import select_for_group
    from oracle.model import build_request

    req = build_request(args.model, moe_backend=args.moe_backend)[0]  # probes this rank's device, libraries
    req = req.with_(layer=dataclasses.replace(req.layer, ep_size=world))
    t = time.perf_counter()
    sel = select_for_group(req)
    took = time.perf_counter() - t
    mine = {"backend": sel.backend, "fingerprint": sel.fingerprint, "device": str(req.device),
            "libraries": req.environment.describe()}
    every: list = [None] * world
    dist.all_gather_object(every, mine)
    same = all(e["backend"] == every[0]["backend"] and e["fingerprint"] == every[0]["fingerprint"]
               for e in every)
    out = {"ranks": every, "same_on_every_rank": same, "seconds": took, "backend": sel.backend,
           "fingerprint": sel.fingerprint, "selected_by": sel.selected_by, "eligible": list(sel.eligible)}

    row = MATRIX.by_name[sel.backend]
    lib = row.libraries[0]
    env = req.environment
    hidden = Environment({n: v for n, v in env.libraries if n != lib}) if rank == 1 else None
    pinned = req.with_(moe_backend=sel.backend)
    t = time.perf_counter()
    try:
        got = select_for_group(pinned, environment=hidden)
        result = {"raised": None, "backend": got.backend}
    except (NoEligibleBackend, GroupDivergence) as exc:
        result = {"raised": type(exc).__name__, "names_rank_1": "rank 1" in str(exc), "message": str(exc)}
    except OracleError as exc:
        result = {"raised": type(exc).__name__, "names_rank_1": "rank 1" in str(exc), "message": str(exc),
                  "unexpected": True}
    result.update(seconds=time.perf_counter() - t, hidden_library=lib, hidden_from_rank=1,
                  pinned=sel.backend, env_all_present=env.all_present)
    every_h: list = [None] * world
    dist.all_gather_object(every_h, result)
    out["hidden_library"] = {
        "ranks": every_h,
        "pass": all(r["raised"] in ("NoEligibleBackend", "GroupDivergence") and r.get("names_rank_1")
                    and not r.get("unexpected") for r in every_h)
        and len({r["message"] for r in every_h}) == 1,
        "max_seconds": max(r["seconds"] for r in every_h),
    }
    out["pass"] = same and out["hidden_library"]["pass"]
    return out, req, sel


def _backends(args, req, sel, world: int) -> list[tuple[str, object | None, str, bool]]:
    """(backend, group selection or None, why not, timed) for every backend with a kernel here whose
    matrix row allows expert parallelism: the agreed one first (timed), or -- when it has no kernel
    here -- the first of the group's eligible backends that has one."""
    from oracle.kernels.moe import IMPLEMENTED_BACKENDS
    from oracle.matrix import MATRIX

    from oracle import NoEligibleBackend, OracleError
    from oracle.group import select_for_group

    impl = set(IMPLEMENTED_BACKENDS)
    timed = sel.backend if sel.backend in impl else next((b for b in sel.eligible if b in impl), None)
    out: list[tuple[str, object | None, str, bool]] = []
    if sel.backend not in impl:
        out.append((sel.backend, None, "no kernel for it in oracle.kernels", False))
    names = [timed] if timed else []
    names += [n for n in IMPLEMENTED_BACKENDS if n not in names and MATRIX.by_name.get(n) is not None
              and MATRIX.by_name[n].expert_parallel]
    for name in names:
        if name == sel.backend:
            out.append((name, sel, "", True))
            continue
        try:  # a collective: every rank gets the same answer
            out.append((name, select_for_group(req.with_(moe_backend=name)), "", name == timed))
        except NoEligibleBackend as exc:
            why = "; ".join(r.detail.split(";")[0] for r in exc.rejected if r.backend == name)
            out.append((name, None, "not eligible here: " + (why or str(exc).splitlines()[0])[:140], False))
        except OracleError as exc:
            out.append((name, None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:140]}", False))
    return out


def step_ep(args, rank: int, world: int, device, shape: dict, req, sel) -> dict:
    """2 + 3. EP vs ep_size = 1 vs the float reference; timing of the agreed backend."""
    import torch
    import torch.distributed as dist
    from oracle.kernels import build_moe
    from oracle.kernels.checkpoint import random_gpt_oss_layer
    from oracle.kernels.ep import build_ep_moe
    from oracle.kernels.reference import moe_reference

    from oracle import OracleError

    e, h, i, k = shape["experts"], shape["hidden"], shape["intermediate"], shape["top_k"]
    layer1 = dataclasses.replace(req.layer, num_experts=e, hidden_size=h, intermediate_size=i, top_k=k,
                                 ep_size=None)
    layer_ep = dataclasses.replace(layer1, ep_size=world)
    t = time.perf_counter()
    full = random_gpt_oss_layer(e, h, i, seed=args.seed, device=device)  # the same layer on every rank
    log(rank, f"weights E={e} H={h} I={i} in {time.perf_counter() - t:.1f}s")
    results: dict = {"shape": shape, "backends": []}
    max_tokens = world * max(args.ms) * k
    for name, bsel, why, timed in _backends(args, req, sel, world):
        entry: dict = {"backend": name, "agreed": name == sel.backend, "timed": timed, "rows": []}
        results["backends"].append(entry)
        if bsel is None:
            entry["skipped"] = why
            continue
        kw = {"max_num_tokens": max(max_tokens, world * max(args.ms))} if _adapter_takes(name, "max_num_tokens") \
            else {}
        err = ""
        try:
            if device.type == "cuda" and rank != 0:
                dist.barrier()  # rank 0 builds/loads any JIT module first
            single = build_moe(bsel, full, layer1, **kw)
            ep = build_ep_moe(bsel, full, layer_ep, timing=True, **kw)
            unfused = None
            if _adapter_takes(name, "use_fused_finalize"):
                unfused = build_moe(bsel, full, layer1, use_fused_finalize=False, **kw)
        except OracleError as exc:
            err = f"{type(exc).__name__}: {str(exc)[:200]}"
        except Exception as exc:  # noqa: BLE001 - reported; the other rank must not wait forever
            err = f"{type(exc).__name__}: {str(exc)[:200]}"
        finally:
            if device.type == "cuda" and rank == 0:
                dist.barrier()
        if not all(_all_ok(dist, not err)):
            entry["skipped"] = f"build failed on some rank: {err or 'see the other rank'}"
            log(rank, f"{name}: {entry['skipped']}")
            continue
        log(rank, f"{name}: built ({ep.extra_repr()})")
        if args.tune and hasattr(getattr(single, "adapter", None), "tune"):
            single.adapter.tune(single.prepared, sorted({*args.ms, *(world * m for m in args.ms)}), top_k=k)
            ep.local.adapter.tune(ep.local.prepared, sorted({m * k for m in args.ms}), top_k=1)
        # correctness: rank r has M >> r tokens
        for m in args.ms:
            mr = m >> rank
            x, ids, w = _inputs(mr, e, h, k, args.seed + 7919 * m + 104729 * rank, device)
            out = ep(x, ids, w)
            one = single(x, ids, w)
            ref = moe_reference(x.float(), full, ids, w)
            row = {"M": m, "M_rank": mr, "rel_vs_ep1": _rel(out, one), "rel_vs_ref": _rel(out, ref),
                   "ep1_rel_vs_ref": _rel(one, ref), "nan": int(torch.isnan(out).sum()),
                   "shape_ok": tuple(out.shape) == (mr, h)}
            if unfused is not None:
                u = unfused(x, ids, w)
                row["rel_vs_ep1_unfused"] = _rel(out, u)
                row["ep1_fused_vs_unfused"] = _rel(one, u)
            every: list = [None] * world
            dist.all_gather_object(every, row)
            worst = {"M": m, "M_ranks": [r["M_rank"] for r in every],
                     "rel_vs_ep1": max(r["rel_vs_ep1"] for r in every),
                     "rel_vs_ref": max(r["rel_vs_ref"] for r in every),
                     "ep1_rel_vs_ref": max(r["ep1_rel_vs_ref"] for r in every),
                     "nan": sum(r["nan"] for r in every), "shape_ok": all(r["shape_ok"] for r in every)}
            for key in ("rel_vs_ep1_unfused", "ep1_fused_vs_unfused"):
                if key in row:
                    worst[key] = max(r[key] for r in every)
            worst["pass"] = (worst["rel_vs_ep1"] <= TOL_EP1 and worst["rel_vs_ref"] <= TOL_REF
                             and worst["nan"] == 0 and worst["shape_ok"])
            entry["rows"].append(worst)
            log(rank, f"{name} M={m}: EP vs ep1 {worst['rel_vs_ep1']:.2e}, vs ref {worst['rel_vs_ref']:.2e} "
                      f"-> {'PASS' if worst['pass'] else 'FAIL'}")
        entry["pass"] = all(r["pass"] for r in entry["rows"])
        if timed:
            entry["timing"] = _timing(args, rank, world, device, ep, single, e, h, k)
        del single, ep, unfused
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["pass"] = all(b.get("pass", True) for b in results["backends"]) and \
        any(b.get("pass") for b in results["backends"] if b["timed"])
    return results


def _timing(args, rank: int, world: int, device, ep, single, e: int, h: int, k: int) -> list[dict]:
    import torch.distributed as dist

    rows = []
    for m in args.ms:
        x, ids, w = _inputs(m, e, h, k, args.seed + 31 * m + rank, device)
        xg, idsg, wg = _inputs(world * m, e, h, k, args.seed + 37 * m, device)
        for _ in range(args.warmup):
            ep(x, ids, w)
        steps = []
        for _ in range(args.iters):
            _sync(device)
            dist.barrier()
            ep(x, ids, w)
            steps.append(ep.last_timing)
        med = {f: statistics.median(getattr(t, f) for t in steps)
               for f in ("dispatch_s", "compute_s", "combine_s", "total_s")}
        one_m = _time_call(single, (x, ids, w), args.iters, args.warmup, device)
        one_g = _time_call(single, (xg, idsg, wg), args.iters, args.warmup, device)
        mine = {"M": m, **med, "rows": steps[-1].rows, "one_gpu_M_s": one_m, "one_gpu_group_batch_s": one_g}
        every: list = [None] * world
        dist.all_gather_object(every, mine)
        slow = max(every, key=lambda r: r["total_s"])
        row = {"M": m, "ep_step_s": slow["total_s"], "dispatch_s": slow["dispatch_s"],
               "compute_s": slow["compute_s"], "combine_s": slow["combine_s"],
               "compute_s_max": max(r["compute_s"] for r in every),
               "rows_per_rank": [r["rows"] for r in every],
               "one_gpu_M_s": statistics.median(r["one_gpu_M_s"] for r in every),
               "one_gpu_group_batch_s": statistics.median(r["one_gpu_group_batch_s"] for r in every),
               "per_rank": every}
        rows.append(row)
        log(rank, f"timing M={m}: EP step {row['ep_step_s'] * 1e6:.0f} us (comm "
                  f"{(row['dispatch_s'] + row['combine_s']) * 1e6:.0f} us), one GPU {one_m * 1e6:.0f} us "
                  f"/ {world}M {one_g * 1e6:.0f} us")
    return rows


# --------------------------------------------------------------------------- report


def _us(s: float) -> str:
    return f"{s * 1e6:.1f}"


def markdown(res: dict) -> str:
    d, ep, world = res["decision"], res.get("ep", {}), res["world"]
    shape = ep.get("shape", {})
    lines = [f"## Expert parallelism ({world} ranks, {res['process_group']}, {res['device_name']})", "",
             f"**Command:** `{res['command']}` ({res['date']}; torch {res['torch']}, "
             f"flashinfer {res.get('flashinfer', 'n/a')}).", "",
             f"**Group decision.** `select_for_group` for {res['model']} with ep_size = {world}: "
             f"**{d['backend']}** ({d['selected_by']}), fingerprint `{d['fingerprint']}` on "
             f"{'every rank' if d['same_on_every_rank'] else 'NOT every rank'} "
             "(" + ", ".join(f"rank {i}: {r['device']}" for i, r in enumerate(d["ranks"])) + ").  "]
    hl = d["hidden_library"]
    r1 = hl["ranks"][0]
    lines[-1] += (f"Pinned to it with `{r1['hidden_library']}` hidden from rank 1: every rank raised "
                  f"{', '.join(sorted({r['raised'] or 'nothing' for r in hl['ranks']}))} naming rank 1 in "
                  f"{hl['max_seconds']:.2f} s -- {'PASS' if hl['pass'] else 'FAIL'}.")
    lines += ["", f"**Correctness** (E = {shape.get('experts')}, top-{shape.get('top_k')}, "
              f"H = {shape.get('hidden')}, I = {shape.get('intermediate')}; rank r has M >> r tokens; the "
              "worst rank; all-gather + reduce-scatter, routed rows per rank as top-1 calls of the local "
              "module, float32 combine):", "",
              "| backend | M | tokens per rank | EP vs ep_size=1 | EP vs ep_size=1 (unfused finalize) | "
              "ep_size=1 fused vs unfused | EP vs float ref | ep_size=1 vs float ref | pass |",
              "|---|---|---|---|---|---|---|---|---|"]
    for b in ep.get("backends", []):
        if "skipped" in b:
            lines.append(f"| {b['backend']} | - | - | not run: {b['skipped']} | | | | | |")
            continue
        for r in b["rows"]:
            opt = [f"{r[key]:.2e}" if key in r else "-" for key in ("rel_vs_ep1_unfused", "ep1_fused_vs_unfused")]
            lines.append(f"| {b['backend']} | {r['M']} | {'/'.join(map(str, r['M_ranks']))} | "
                         f"{r['rel_vs_ep1']:.2e} | {opt[0]} | {opt[1]} | {r['rel_vs_ref']:.2e} | "
                         f"{r['ep1_rel_vs_ref']:.2e} | {'PASS' if r['pass'] else 'FAIL'} |")
    timed = [b for b in ep.get("backends", []) if b.get("timing")]
    for b in timed:
        lines += ["", f"**Timing** ({b['backend']}; M tokens per rank; medians of {res['iters']} calls; the "
                  "slowest rank's step and its phases; communication = agree + dispatch (all-gathers) and "
                  "combine (reduce-scatter), from the module's timing hook, including waits for the other "
                  "rank; the 1-device columns run all experts on one device):", "",
                  f"| M per rank | 1 device, M tokens µs | 1 device, {world}M tokens µs | EP={world} step µs | "
                  f"dispatch µs | compute µs | combine µs | comm share | 1 device {world}M / EP step | "
                  "rows per rank |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for t in b["timing"]:
            comm = t["dispatch_s"] + t["combine_s"]
            lines.append(f"| {t['M']} | {_us(t['one_gpu_M_s'])} | {_us(t['one_gpu_group_batch_s'])} | "
                         f"{_us(t['ep_step_s'])} | {_us(t['dispatch_s'])} | {_us(t['compute_s'])} | "
                         f"{_us(t['combine_s'])} | {comm / t['ep_step_s'] * 100:.0f} % | "
                         f"{t['one_gpu_group_batch_s'] / t['ep_step_s']:.2f}x | "
                         f"{'/'.join(map(str, t['rows_per_rank']))} |")
    flags = res.get("matrix_flags", {})
    if flags:
        lines += ["", "**Matrix expert-parallel flags exercised:** " + ", ".join(
            f"{n} (expert_parallel = {str(v['flag']).lower()}: {v['result']})" for n, v in flags.items()) + "."]
    lines += ["", f"**Result: {'PASS' if res['pass'] else 'FAIL'}.**", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- ranks and launch


def run_rank(rank: int, world: int, args, init_method: str | None, result_path: str | None) -> bool:
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    import device_check

    device_check.bootstrap()
    import torch
    import torch.distributed as dist

    cuda = args.device == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        device = torch.device("cpu")
    kw = dict(backend=args.backend, timeout=timedelta(seconds=args.timeout), rank=rank, world_size=world)
    if init_method:
        kw["init_method"] = init_method
    if cuda and args.backend == "nccl":
        kw["device_id"] = device
    dist.init_process_group(**kw)
    ok = False
    res: dict = {"world": world, "process_group": args.backend, "model": args.model, "iters": args.iters,
                 "command": " ".join(["python3", "tools/ep_check.py", *sys.argv[1:]]),
                 "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    try:
        res["device_name"] = (f"{world} x {torch.cuda.get_device_name(device)}" if cuda
                              else f"{world} CPU processes")
        try:
            import flashinfer

            res["flashinfer"] = flashinfer.__version__
        except Exception:  # noqa: BLE001
            pass
        res["decision"], req, sel = step_decision(args, rank, world)
        log(rank, f"decision {sel.backend} {sel.fingerprint}; hidden library "
                  f"{'PASS' if res['decision']['hidden_library']['pass'] else 'FAIL'}")
        shape = GPT_OSS_120B if args.shape == "gpt-oss-120b" else SMALL
        res["ep"] = step_ep(args, rank, world, device, shape, req, sel)
        from oracle.matrix import MATRIX

        res["matrix_flags"] = {b["backend"]: {"flag": MATRIX.by_name[b["backend"]].expert_parallel,
                                              "result": "skipped" if "skipped" in b else
                                              ("confirmed" if b.get("pass") else "FAILED")}
                               for b in res["ep"]["backends"]}
        ok = res["pass"] = bool(res["decision"]["pass"] and res["ep"]["pass"])
    except Exception as exc:  # noqa: BLE001 - reported in the result, exit status 1
        res["error"] = f"{type(exc).__name__}: {exc}"
        res["traceback"] = traceback.format_exc()
        res["pass"] = False
        log(rank, res["traceback"])
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass
    if rank == 0:
        text = markdown(res) if "error" not in res else f"## Expert parallelism: FAILED\n\n{res['error']}\n"
        print(text, flush=True)
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
        if result_path:
            Path(result_path).write_text(json.dumps({"pass": ok}))
    return ok


def _spawned(rank: int, world: int, args, init_method: str, result_path: str) -> None:
    if not run_rank(rank, world, args, init_method, result_path):
        raise SystemExit(1)


def main(argv=None) -> int:
    args = parse_args(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if args.device == "cuda" and int(os.environ.get("LOCAL_RANK", rank)) == 0:
            import device_check

            device_check.install_wheels()
        else:  # let local rank 0 finish installing
            _wait_installed(args)
        return 0 if run_rank(rank, world, args, None, None) else 1
    if args.device == "cuda":
        import device_check

        device_check.install_wheels()
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="ep_check_") as tmp:
        init = f"file://{tmp}/rendezvous"
        result = f"{tmp}/result.json"
        ctx = mp.start_processes(_spawned, args=(args.nprocs, args, init, result), nprocs=args.nprocs,
                                 join=False, start_method="spawn")
        deadline = time.monotonic() + args.timeout + 30
        try:
            while not ctx.join(timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
                if time.monotonic() > deadline:
                    print(f"ep_check: ranks did not finish within {args.timeout + 30:.0f}s; stopping them",
                          file=sys.stderr, flush=True)
                    return 124
        except Exception as exc:  # noqa: BLE001 - a rank failed
            print(f"ep_check: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        try:
            return 0 if json.loads(Path(result).read_text())["pass"] else 1
        except (OSError, ValueError, KeyError):
            return 1


def _wait_installed(args) -> None:
    if args.device != "cuda":
        return
    import device_check

    marker = device_check.SITE / ".oracle_installed"
    wheels = list((device_check.REPO / ".whl").glob("*.whl"))
    deadline = time.monotonic() + 300
    while wheels and not marker.exists() and time.monotonic() < deadline:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
