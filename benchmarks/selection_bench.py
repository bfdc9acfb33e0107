"""What choosing a kernel costs on the CPU, side by side in one run.

    python benchmarks/selection_bench.py [--json PATH] [--quick] [--runs N]

1. ``import oracle`` in fresh processes, then ``import flashinfer`` the same way, and
   their ratio;  2. warm ``select`` (a cache hit: an equal but new request, as a loader
   asks once per MoE layer);  3. cold ``select``: the first
   call after ``import oracle`` in the child;  4. every request in scope through
   ``select`` after ``oracle.selector.cache_clear()``, plus ``render_support_matrix()``;
   5. uncached ``select`` per call (cache cleared before each call), as information.

Public names of the oracle only.  Imports: ``perf_counter`` around the import statement
in a child started from ``/``, after one untimed import with bytecode writing on (so
``.pyc`` files are current).  Calls: ``perf_counter_ns`` each, GC off, the timer's median
overhead subtracted.  Targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import oracle
import oracle.docs
import oracle.selector
from oracle import BF16, Device, Environment, LayerSpec, OracleError, SelectionRequest, select
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX

UNKNOWN_ARCHS = ("sm101", "sm130", "gfx1200")  # well-formed archs that no row covers
LOADER_PINS = ("auto", "flashinfer_trtllm", "flashinfer_cutlass", "triton", "aiter")
GPT_OSS_20B = {"hidden_size": 2880, "intermediate_size": 2880, "num_experts": 32, "top_k": 4,
               "activation_fn": "swiglu_oai", "swiglu_alpha": 1.702, "swiglu_limit": 7.0,
               "has_bias": True}
#: What is reported: label, result key, its value, target (comparison, limit, unit) or
#: None (information), then the median / spread / n cells of the table.
ROWS = (
    ("`import oracle`", "import_oracle", "median_ms", ("<=", 50.0, "ms"),
     "{median_ms:.1f} ms", "min {min_ms:.1f} ms", "{runs} processes"),
    ("`import flashinfer`", "import_flashinfer", "median_ms", None,
     "{median_ms:,.1f} ms", "min {min_ms:,.1f} ms", "{runs} processes"),
    ("`import flashinfer` / `import oracle`", "import_ratio", "x", (">=", 20.0, "x"),
     "{x:.1f}x", "of the medians", ""),
    ("`select` warm (cache hit, equal new request)", "select_warm", "median_us",
     ("<=", 5.0, "µs"), "{median_us:.2f} µs", "p99 {p99_us:.2f} µs", "{calls:,} calls"),
    ("`select` cold (first call after `import oracle`)", "select_cold", "median_ms",
     ("<=", 2.0, "ms"), "{median_ms:.2f} ms", "min {min_ms:.2f} ms", "{runs} processes"),
    ("enumeration + docs", "enumeration", "total_s", ("<=", 1.0, "s"), "{total_s:.3f} s",
     "build {build_s:.3f} + select {select_s:.3f} + docs {docs_s:.3f} s",
     "{requests:,} requests ({answered:,} answered)"),
    ("`select` uncached (cache_clear before each)", "select_uncached", "median_us", None,
     "{median_us:.1f} µs", "p99 {p99_us:.1f} µs", "{calls:,} calls"),
)

# The child times its own import; the oracle's child then times its first select().
CHILD = """import time
t0 = time.perf_counter()
import {module}
ms = [(time.perf_counter() - t0) * 1e3]
if {cold_select}:
    req = oracle.SelectionRequest(device=oracle.Device.parse("sm90"),
                                  layer=oracle.LayerSpec(**{layer!r}))
    t2 = time.perf_counter()
    oracle.select(req)
    ms.append((time.perf_counter() - t2) * 1e3)
print("BENCH", *ms)
"""


def child(module: str, cold_select: bool = False, write_bytecode: bool = False) -> list[float]:
    """Run CHILD in a fresh interpreter from / (so the installed package is imported)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONIMPORTTIME", "PYTHONPROFILEIMPORTTIME")}
    if write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    code = CHILD.format(module=module, cold_select=cold_select, layer=GPT_OSS_20B)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                         env=env, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    return [float(x) for x in line.split()[1:]]


def imports(runs: int) -> dict[str, Any]:
    """``import oracle`` (+ its first select), then ``import flashinfer``, ``runs`` each.

    In blocks, the oracle's first: right after a flashinfer child exits, an oracle
    import measures about 2x slower for a few seconds on a small machine."""
    res: dict[str, Any] = {}
    samples: dict[str, list[float]] = {"import_oracle": [], "select_cold": [],
                                       "import_flashinfer": []}
    for mod in ("oracle", "flashinfer"):
        try:
            child(mod, cold_select=mod == "oracle", write_bytecode=True)  # untimed warm-up
        except subprocess.CalledProcessError as exc:
            res[f"import_{mod}"] = {"skipped": f"import {mod} failed: "
                                    + (exc.stderr.strip().splitlines() or ["?"])[-1]}
            continue
        for _ in range(runs):
            ms = child(mod, cold_select=mod == "oracle")
            samples[f"import_{mod}"].append(ms[0])
            samples["select_cold"] += ms[1:]
    for name, values in samples.items():
        if values:
            res[name] = {"runs": len(values), "median_ms": statistics.median(values),
                         "min_ms": min(values), "samples_ms": [round(v, 3) for v in values]}
    return res


def timer_overhead_ns(n: int = 20_000) -> float:
    clock, pairs = time.perf_counter_ns, []
    for _ in range(n):
        t0 = clock()
        pairs.append(clock() - t0)
    return float(statistics.median(pairs))


def time_calls(requests: list[Any], overhead: float, clear: bool = False) -> dict[str, Any]:
    """select() once per request, each call timed; ``clear``: cache_clear() before each."""
    clock, samples = time.perf_counter_ns, []
    hits = oracle.selector.cache_info().hits
    gc.disable()
    try:
        for r in requests:
            if clear:
                oracle.selector.cache_clear()
            t0 = clock()
            try:
                select(r)
            except OracleError:
                pass
            samples.append(max(0.0, clock() - t0 - overhead))
    finally:
        gc.enable()
    samples.sort()
    return {"calls": len(samples), "median_us": statistics.median(samples) / 1e3,
            "p99_us": samples[round(0.99 * (len(samples) - 1))] / 1e3,
            "cache_hits": oracle.selector.cache_info().hits - hits if not clear else 0}


def enumeration_requests() -> list[SelectionRequest]:
    """Every (weight key, activation request, fallback flag, backend name, arch)."""
    weights = list(dict.fromkeys(r.weight for r in MATRIX.rows))
    acts = [None, BF16, *dict.fromkeys(r.activation for r in MATRIX.rows
                                         if r.activation is not None)]
    devices = [Device.parse(a) for a in (*ARCHS_IN_SCOPE, *UNKNOWN_ARCHS)]
    env = Environment.assume_all()
    return [SelectionRequest(weight=w, activation=a, moe_backend=b, device=d, environment=env,
                             allow_activation_fallback=fallback)
            for w in weights for a in acts for fallback in (False, True)
            for b in MATRIX.backend_names() for d in devices]


def answers(request: SelectionRequest) -> bool:
    try:
        select(request)
        return True
    except OracleError:
        return False


def enumeration() -> dict[str, Any]:
    oracle.selector.cache_clear()
    t0 = time.perf_counter()
    requests = enumeration_requests()
    t1 = time.perf_counter()
    answered = sum(map(answers, requests))
    t2 = time.perf_counter()
    page = oracle.docs.render_support_matrix()
    t3 = time.perf_counter()
    return {"requests": len(requests), "answered": answered, "build_s": t1 - t0,
            "select_s": t2 - t1, "docs_s": t3 - t2, "docs_chars": len(page), "total_s": t3 - t0}


def loader_requests() -> list[SelectionRequest]:
    """Answered requests as a loader sends them (gpt-oss-20b layer, every arch, a few
    pins); asking each once here also puts it in the decision cache."""
    requests = [SelectionRequest(device=Device.parse(a), moe_backend=b,
                                 layer=LayerSpec(**GPT_OSS_20B))
                for a in ARCHS_IN_SCOPE for b in LOADER_PINS]
    return [r for r in requests if answers(r)]


def machine() -> dict[str, Any]:
    cpu = Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""
    versions = {}
    for dist in ("flashinfer-python", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"nproc": len(os.sched_getaffinity(0)), "machine": platform.machine(),
            "cpu": next((x.split(":", 1)[1].strip() for x in cpu.splitlines()
                         if x.startswith("model name")), "?"),
            "python": platform.python_version(), "platform": platform.platform(),
            "matrix_version": MATRIX.version, "loadavg": os.getloadavg(), **versions}


def run(quick: bool = False, runs: int | None = None, command: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "command": command}
    out.update(imports(runs or (3 if quick else 15)))
    overhead = out["timer_overhead_ns"] = timer_overhead_ns()
    loader = loader_requests()
    layers = 20 if quick else 200
    out["select_warm"] = time_calls([r.with_() for r in loader for _ in range(layers)], overhead)
    out["select_warm"]["distinct_requests"] = len(loader)
    out["enumeration"] = enumeration()
    out["select_uncached"] = time_calls(enumeration_requests()[::20 if quick else 1], overhead,
                                        clear=True)
    oracle.selector.cache_clear()
    if "median_ms" in out["import_flashinfer"] and "median_ms" in out["import_oracle"]:
        out["import_ratio"] = {"x": out["import_flashinfer"]["median_ms"]
                               / out["import_oracle"]["median_ms"]}
    out["targets"] = {}
    for _, key, value, target, *_ in ROWS:
        if target is not None:
            (op, limit, unit), v = target, out.get(key, {}).get(value)
            out["targets"][f"{key}.{value}"] = {
                "value": v, "op": op, "limit": limit, "unit": unit,
                "met": None if v is None else v <= limit if op == "<=" else v >= limit}
    return out


def report(out: dict[str, Any]) -> str:
    """A GitHub-style table: measurement, median, spread, n, target, met/missed."""
    from tabulate import tabulate

    rows = []
    for label, key, value, target, *cells in ROWS:
        res = out.get(key) or {"skipped": "not measured"}
        verdict = ["(information)", ""]
        if target is not None:
            met = out["targets"][f"{key}.{value}"]["met"]
            verdict = [f"{target[0]} {target[1]:g} {target[2]}",
                       "n/a" if met is None else "met" if met else "MISSED"]
        rows.append([label, res["skipped"], "", "", *verdict] if "skipped" in res
                    else [label, *(c.format(**res) for c in cells), *verdict])
    m = out["machine"]
    return (f"{m['nproc']} cores {m['machine']} ({m['cpu']}), Python {m['python']}, flashinfer "
            f"{m['flashinfer-python']}, load {' '.join(f'{x:.1f}' for x in m['loadavg'])}\n"
            f"command: {out['command']}\n" + tabulate(
                rows, headers=["measurement", "median", "spread", "n", "target", "status"],
                tablefmt="github", disable_numparse=True)
            + f"\ntimer overhead subtracted per call: {out['timer_overhead_ns']:.0f} ns")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true", help="small counts (numbers not meaningful)")
    p.add_argument("--runs", type=int, help="fresh processes per import (default 15, quick 3)")
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/selection_bench.py",
                        *(sys.argv[1:] if argv is None else argv)])
    out = run(quick=args.quick, runs=args.runs, command=command)
    print(report(out))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
