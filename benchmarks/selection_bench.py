"""Selection cost against FlashInfer (issue 6, CPU half).

One command::

    python benchmarks/selection_bench.py [--json PATH] [--quick]

What it measures (all on the CPU, no GPU needed); results in docs/performance.md:

* ``select()`` / ``explain()`` latency per call, median and p99, on a seeded mix of
  requests drawn from the matrix: every in-scope arch plus unknown ones, every
  ``--moe-backend`` name, activation requests (none, strict BF16, quantized
  overrides, checkpoint-declared, with the opt-in fallback, conflicting), several
  environments, with and without a LayerSpec.  Three paths:

  - *warm*: the realistic loader path -- caches primed, then the same request
    (a new but equal object) asked once per layer: a cache hit;
  - *uncached*: the evaluation itself, ``oracle.selector._select(request, MATRIX)``
    (``explain`` likewise) with the selector's result caches cleared before every
    call; the matrix's lazily built indexes stay, as in a running process;
  - *cold*: those indexes cleared too, i.e. the first call a process makes.

  Answered requests and requests that raise (``NoEligibleBackend`` and friends)
  are also reported separately: the mix is mostly failures, a loader's calls are not.
* the exhaustive enumeration of every (weight key, activation request, backend
  name, arch) combination from cold caches (time, count), and
  ``oracle.docs.render_support_matrix()`` from cold caches.
* cold ``import oracle`` in fresh processes (median of N; ``perf_counter`` around
  the import inside the child, and ``python -X importtime`` cumulative totals),
  the first ``select()`` after it, the same with the stdlib modules a loader has
  already imported, and the bundled table's load via its parse cache vs tomllib;
  side by side with cold ``import flashinfer`` measured the same way.  One untimed
  import per module runs first with bytecode writing on, so ``.pyc`` files are
  current (the measurement is the import, not recompiling edited sources).
* FlashInfer's own CPU-side filtering,
  ``flashinfer.fused_moe.BackendOptions(candidates=...).valid_for(arch)``, per call
  (warm), on the FlashInfer MXFP4 configs the matrix names.

Per-call latencies are timed one call at a time with ``time.perf_counter_ns`` (GC
disabled while timing); the median cost of an empty timed region (the timer's own
overhead) is subtracted from every sample.  Targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATE = "2026-11-25"

#: Targets (not tests): name -> (limit, unit, comparison).
TARGETS = {
    "select_warm_answered_median_us": (5.0, "µs", "<="),
    "enumeration_plus_docs_s": (1.0, "s", "<="),
    "import_oracle_ms": (50.0, "ms", "<="),
    "import_ratio_flashinfer_over_oracle": (20.0, "x", ">="),
}

#: Archs no matrix row mentions: valid inputs, covered by no row.
UNKNOWN_ARCHS = ("sm87", "sm101", "sm130", "gfx1200")


# ------------------------------------------------------------------ helpers

def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[k]


def summarize_ns(samples_ns: Sequence[int | float]) -> dict[str, float]:
    """Median / p99 / min / mean (µs) of per-call samples in ns."""
    s = sorted(samples_ns)
    return {
        "calls": len(s),
        "median_us": statistics.median(s) / 1e3 if s else float("nan"),
        "p99_us": _quantile(s, 0.99) / 1e3,
        "min_us": s[0] / 1e3 if s else float("nan"),
        "mean_us": statistics.fmean(s) / 1e3 if s else float("nan"),
    }


def timer_overhead_ns(n: int = 20_000) -> float:
    """Median cost of an empty ``perf_counter_ns`` pair (subtracted from samples)."""
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        t0 = clock()
        t1 = clock()
        out.append(t1 - t0)
    return float(statistics.median(out))


def time_each(fn: Callable[[Any], Any], args: Sequence[Any], *, before: Callable[[], Any] | None = None,
              overhead_ns: float = 0.0) -> list[float]:
    """Time ``fn(arg)`` once per element of ``args``; exceptions count as calls.

    ``before`` (untimed) runs before each call, e.g. to clear caches.
    """
    clock = time.perf_counter_ns
    samples: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for a in args:
            if before is not None:
                before()
            t0 = clock()
            try:
                fn(a)
            except Exception:  # noqa: BLE001 - the error path is part of what we time
                pass
            t1 = clock()
            samples.append(max(0.0, (t1 - t0) - overhead_ns))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def clear_selector_caches(indexes: bool = True) -> None:
    """Clear every functools cache in the selector (select/explain/evaluate results);
    with ``indexes``, also what the loader and the bundled matrix build lazily (auto
    order per arch, per-device facts, ...), so the next call is fully cold."""
    import oracle.matrix.loader as loader
    import oracle.selector as selector
    from oracle.matrix import MATRIX
    for module in (selector, loader) if indexes else (selector,):
        for name, obj in list(vars(module).items()):
            clear = getattr(obj, "cache_clear", None)
            if callable(clear) and (indexes or name.endswith("_cached")):
                clear()
    if indexes:
        for name in ("_order_cache", "_memo"):
            lazy = getattr(MATRIX, name, None)
            if isinstance(lazy, dict):
                lazy.clear()


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        nproc = os.cpu_count() or 0
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = None
    return {
        "date": DATE,
        "nproc": nproc,
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "torch": version("torch"),
        "flashinfer": version("flashinfer-python"),
        "mxfp4_oracle": version("mxfp4-oracle"),
        "loadavg_at_start": load,
    }


# ------------------------------------------------------------------ the request mix

def request_dimensions() -> dict[str, list[Any]]:
    """The axes the request mix is drawn from (all derived from the matrix)."""
    from oracle import BF16, Device, Environment, LayerSpec
    from oracle.keys import KEY_CONSTANTS
    from oracle.matrix import ARCHS_IN_SCOPE, MATRIX

    row_weights = list(dict.fromkeys(r.weight for r in MATRIX.rows))
    other_weights = [k for k in KEY_CONSTANTS.values() if k not in row_weights][:3]
    row_acts = [a for a in dict.fromkeys(r.activation for r in MATRIX.rows) if a is not None]
    activations: list[tuple[Any, Any, bool]] = [(None, None, False), (BF16, None, False)]
    activations += [(a, None, False) for a in row_acts]      # user override (strict)
    activations += [(None, a, False) for a in row_acts[:2]]  # declared by the checkpoint
    activations += [(a, None, True) for a in row_acts[:2]]   # override + opt-in BF16 fallback
    activations += [(row_acts[0], row_acts[0], False)]       # both set, equal
    if len(row_acts) > 1:
        activations += [(row_acts[0], row_acts[1], False)]   # both set, different: conflict
    backends = list(MATRIX.backend_names())
    backends += ["FlashInfer-Cutlass", "not_a_backend"]      # case/dash spelling, unknown name
    return {
        "device": [Device.parse(a) for a in (*ARCHS_IN_SCOPE, *UNKNOWN_ARCHS)],
        "moe_backend": backends,
        "activation": activations,
        "environment": [
            Environment.assume_all(), Environment.none(),
            Environment.parse("flashinfer=0.7.2,triton_kernels,torch"),
            Environment.parse("flashinfer=0.4.0,torch"),
            Environment.parse("aiter,torch"),
        ],
        "layer": [
            None,
            LayerSpec(hidden_size=2880, intermediate_size=2880, num_experts=32, top_k=4,
                      activation_fn="swiglu_oai", swiglu_alpha=1.702, swiglu_limit=7.0,
                      has_bias=True, ep_size=1, tp_size=1),                       # gpt-oss-20b
            LayerSpec(hidden_size=2880, intermediate_size=2880, num_experts=128, top_k=4,
                      activation_fn="swiglu_oai", swiglu_alpha=1.702, swiglu_limit=7.0,
                      has_bias=True, ep_size=8, tp_size=1),                       # 120b, EP=8
            LayerSpec(hidden_size=2000, intermediate_size=1000, activation_fn="swiglu",
                      has_bias=False),                                            # unaligned
        ],
        "weight": row_weights * 6 + other_weights,  # mostly the matrix's weights
    }


def request_mix(n: int = 1024, seed: int = 0) -> list[Any]:
    """``n`` distinct requests drawn (seeded) from :func:`request_dimensions`.

    Half the draws use ``moe_backend="auto"`` (the default a loader sends).
    """
    from oracle import SelectionRequest

    dims = request_dimensions()
    rng = random.Random(seed)
    seen: dict[Any, None] = {}
    tries = 0
    while len(seen) < n and tries < n * 50:
        tries += 1
        act, ckpt, fallback = rng.choice(dims["activation"])
        backend = "auto" if rng.random() < 0.5 else rng.choice(dims["moe_backend"])
        req = SelectionRequest(
            weight=rng.choice(dims["weight"]), activation=act, checkpoint_activation=ckpt,
            moe_backend=backend, device=rng.choice(dims["device"]),
            environment=rng.choice(dims["environment"]), layer=rng.choice(dims["layer"]),
            allow_activation_fallback=fallback)
        seen[req] = None
    return list(seen)


def split_by_outcome(requests: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """(requests select() answers, requests it raises an OracleError for)."""
    from oracle import OracleError, select

    ok, err = [], []
    for r in requests:
        try:
            select(r)
        except OracleError:
            err.append(r)
        else:
            ok.append(r)
    return ok, err


# ------------------------------------------------------------------ select / explain

def bench_calls(requests: Sequence[Any], *, layers: int = 12, uncached_passes: int = 10,
                overhead_ns: float = 0.0) -> dict[str, Any]:
    """Latencies of select()/explain() per call on ``requests``, three ways.

    * ``warm``: caches primed, then each request asked ``layers`` times in a row (as a
      loader asks once per MoE layer), each time with a new but equal request object;
    * ``uncached``: the selector's result caches cleared before every call
      (``select`` goes through ``oracle.selector._select(request, MATRIX)``); the
      matrix's own lazily built indexes stay (built once per process and device);
    * ``cold``: those indexes cleared too -- the first call a process makes.
    """
    from oracle import explain, select
    from oracle.matrix import MATRIX
    from oracle.selector import _select

    ok, err = split_by_outcome(requests)
    results: dict[str, Any] = {"mix": {"distinct_requests": len(requests), "select_ok": len(ok),
                                       "select_raises": len(err), "layers_per_request": layers}}

    def per_layer(reqs: Sequence[Any]) -> list[Any]:
        return [r.with_() for r in reqs for _ in range(layers)]  # equal, not identical

    def select_uncached(r: Any) -> Any:
        return _select(r, MATRIX)

    def clear_results() -> None:
        clear_selector_caches(indexes=False)

    groups = {"all": list(requests), "ok": ok, "raises": err}
    plan = [("select", select, select_uncached, ("all", "ok", "raises"), ("all", "ok", "raises"),
             ("all",)),
            ("explain", explain, explain, ("all", "ok", "raises"), ("all",), ("all",))]
    for name, fn, uncached_fn, warm_labels, uncached_labels, cold_labels in plan:
        for label in warm_labels:
            reqs = groups[label]
            if not reqs:
                continue
            clear_selector_caches()
            for r in reqs:  # prime: the warm path is the cache hit a loader sees per layer
                try:
                    fn(r)
                except Exception:  # noqa: BLE001
                    pass
            results[f"{name}_warm_{label}"] = summarize_ns(
                time_each(fn, per_layer(reqs), overhead_ns=overhead_ns))
        for label in uncached_labels:
            reqs = groups[label]
            if not reqs:
                continue
            clear_selector_caches()
            results[f"{name}_uncached_{label}"] = summarize_ns(
                time_each(uncached_fn, list(reqs) * uncached_passes, before=clear_results,
                          overhead_ns=overhead_ns))
        for label in cold_labels:
            reqs = groups[label]
            if reqs:
                results[f"{name}_cold_{label}"] = summarize_ns(
                    time_each(uncached_fn, list(reqs), before=clear_selector_caches,
                              overhead_ns=overhead_ns))
    clear_selector_caches()
    return results


# ------------------------------------------------------------------ enumeration and docs

def enumeration_space() -> tuple[list[Any], list[tuple[str, Any]], list[str], list[str]]:
    """(weight keys, activation requests, backend names, archs) of the enumeration.

    Weight keys and quantized activation keys are the ones the matrix has rows for;
    activation requests add "no override" and strict BF16; backend names are every
    accepted ``--moe-backend`` value; archs are the archs in scope.
    """
    from oracle import BF16
    from oracle.keys import canonical_name
    from oracle.matrix import ARCHS_IN_SCOPE, MATRIX

    weights = list(dict.fromkeys(r.weight for r in MATRIX.rows))
    acts: list[tuple[str, Any]] = [("none", None), ("bf16", BF16)]
    acts += [(canonical_name(a), a) for a in dict.fromkeys(r.activation for r in MATRIX.rows)
             if a is not None]
    return weights, acts, list(MATRIX.backend_names()), list(ARCHS_IN_SCOPE)


def bench_enumeration(limit: int | None = None) -> dict[str, Any]:
    """select() over every combination, from cold caches, all libraries assumed.

    ``limit`` keeps only the first ``limit`` backend names and archs (smoke tests).
    """
    from oracle import Device, Environment, OracleError, SelectionRequest, select

    weights, acts, backends, archs = enumeration_space()
    if limit is not None:
        backends, archs = backends[:limit], archs[:limit]
    env = Environment.assume_all()
    devices = [Device.parse(a) for a in archs]
    clear_selector_caches()
    ok = err = 0
    t0 = time.perf_counter()
    for w in weights:
        for _label, act in acts:
            for b in backends:
                for dev in devices:
                    req = SelectionRequest(weight=w, activation=act, checkpoint_activation=None,
                                           moe_backend=b, device=dev, environment=env, layer=None)
                    try:
                        select(req)
                        ok += 1
                    except OracleError:
                        err += 1
    seconds = time.perf_counter() - t0
    clear_selector_caches()
    return {"seconds": seconds, "combinations": ok + err, "selected": ok, "raised": err,
            "weights": len(weights), "activation_requests": len(acts),
            "backend_names": len(backends), "archs": len(archs)}


def bench_docs(repeat: int = 3) -> dict[str, Any]:
    """``oracle.docs.render_support_matrix()`` from cold caches (best and median of runs)."""
    try:
        from oracle.docs import render_support_matrix
    except ImportError as exc:
        return {"skipped": f"oracle.docs.render_support_matrix unavailable ({exc})"}
    times = []
    size = 0
    for _ in range(max(1, repeat)):
        clear_selector_caches()
        t0 = time.perf_counter()
        page = render_support_matrix()
        times.append(time.perf_counter() - t0)
        size = len(page)
    clear_selector_caches()
    return {"seconds_median": statistics.median(times), "seconds_min": min(times),
            "runs": len(times), "chars": size}


# ------------------------------------------------------------------ cold imports

_CHILD = ("{preload}import time; t0 = time.perf_counter(); import {mod}; "
          "t1 = time.perf_counter(); {extra}print('BENCH', (t1 - t0) * 1e3, {extra_value})")
#: The stdlib modules the decision code uses that a loader process (vLLM, anything
#: that imports torch) has long imported: preloading them gives oracle's own share.
LOADER_PRELOAD = ("dataclasses", "typing", "json", "hashlib")
_FIRST_SELECT = ("from oracle import SelectionRequest, Device, select; "
                 "t2 = time.perf_counter(); select(SelectionRequest(device=Device.parse('sm90'))); "
                 "t3 = time.perf_counter(); ")
_IMPORTTIME_RE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def _child_env(write_bytecode: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONIMPORTTIME", None)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    if write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def prime_imports(module: str) -> None:
    """One untimed import of ``module`` in a fresh process with bytecode writing on,
    so that the measured processes find current ``.pyc`` files (and the matrix's
    parse cache), as after ``pip install`` or any earlier import: the measurement is
    the import, not compiling sources edited since the last one."""
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd="/", check=True,
                   capture_output=True, env=_child_env(write_bytecode=True))


_TABLE_LOAD = """import time, oracle.matrix.loader as L
t0 = time.perf_counter(); L.parse_matrix(L._bundled_document()); t1 = time.perf_counter()
text = L._read_bundled()[0].decode("utf-8")
t2 = time.perf_counter(); L.parse_matrix(L._parse_toml(text)); t3 = time.perf_counter()
print("BENCH", (t1 - t0) * 1e3, (t3 - t2) * 1e3)
"""


def table_load_ms(runs: int = 10) -> dict[str, Any]:
    """Loading + validating the bundled table in a fresh process (after ``import
    oracle``): through the parse cache, and through tomllib (its first import
    included), which is what every import pays where the cache cannot be written
    (read-only install with no cache, ``PYTHONDONTWRITEBYTECODE`` and an edited table)."""
    cached, parsed = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _TABLE_LOAD], capture_output=True, text=True,
                             cwd="/", env=_child_env(), check=True).stdout
        _, a, b = next(l for l in out.splitlines() if l.startswith("BENCH ")).split()
        cached.append(float(a))
        parsed.append(float(b))
    return {"runs": runs, "cached_median_ms": statistics.median(cached),
            "tomllib_median_ms": statistics.median(parsed)}


def cold_import_ms(module: str, runs: int = 10, *, first_select: bool = False,
                   preload: Sequence[str] = ()) -> dict[str, Any]:
    """Median in-child ``perf_counter`` time of ``import module`` over fresh processes.

    Each run is a new interpreter started from / (so the repository is not on
    sys.path; the installed package is what gets imported).  With
    ``first_select`` the child also times its first ``select()`` after the import;
    ``preload`` modules are imported (untimed) before.
    """
    extra = _FIRST_SELECT if first_select else ""
    extra_value = "(t3 - t2) * 1e3" if first_select else "0"
    code = _CHILD.format(mod=module, extra=extra, extra_value=extra_value,
                         preload="".join(f"import {m}; " for m in preload))
    imports, selects = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd="/", env=_child_env(), check=True).stdout
        line = next(l for l in out.splitlines() if l.startswith("BENCH "))
        _, a, b = line.split()
        imports.append(float(a))
        selects.append(float(b))
    res: dict[str, Any] = {"runs": runs, "median_ms": statistics.median(imports),
                           "min_ms": min(imports), "max_ms": max(imports)}
    if first_select:
        res["first_select_median_ms"] = statistics.median(selects)
    return res


def parse_importtime(stderr: str, module: str) -> tuple[float, list[tuple[str, float, float]]]:
    """(cumulative µs of ``module``, [(name, self µs, cumulative µs)] of its subtree)."""
    lines = [m for m in map(_IMPORTTIME_RE.match, stderr.splitlines()) if m]
    total = float("nan")
    top = -1
    for i, m in enumerate(lines):
        if m.group(4) == module and len(m.group(3)) <= 1:
            total, top = float(m.group(2)), i
    entries: list[tuple[str, float, float]] = []
    if top >= 0:
        # children are printed before their parent; walk back while nested deeper
        j = top - 1
        while j >= 0 and len(lines[j].group(3)) > len(lines[top].group(3)):
            m = lines[j]
            entries.append((m.group(4), float(m.group(1)), float(m.group(2))))
            j -= 1
    return total, entries


def importtime_ms(module: str, runs: int = 10) -> dict[str, Any]:
    """Median ``python -X importtime`` cumulative total of ``module`` (site excluded)."""
    totals = []
    self_times: dict[str, list[float]] = {}
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                              capture_output=True, text=True, cwd="/", env=_child_env(),
                              check=True)
        total, entries = parse_importtime(proc.stderr, module)
        totals.append(total / 1e3)
        for name, self_us, _cum in entries:
            self_times.setdefault(name, []).append(self_us / 1e3)
    top = sorted(((statistics.median(v), k) for k, v in self_times.items()), reverse=True)[:8]
    return {"runs": runs, "median_ms": statistics.median(totals), "min_ms": min(totals),
            "top_self_ms": [[k, round(v, 2)] for v, k in top]}


# ------------------------------------------------------------------ FlashInfer valid_for

def flashinfer_candidates() -> tuple[Any, list[str]]:
    """BackendOptions over the FlashInfer MXFP4 configs the matrix names."""
    import flashinfer.fused_moe as fm

    from oracle.matrix import MATRIX

    names = list(dict.fromkeys(r.flashinfer_config for r in MATRIX.rows if r.flashinfer_config))
    names += [n for n in ("CutlassW4A16Config", "CutlassMxfp8Mxfp4Config", "TrtllmFp4Config",
                          "CutlassHummingConfig", "CuTileMxfp4Bf16Config") if n not in names]
    configs = [getattr(fm, n)() for n in names if hasattr(fm, n)]
    return fm.BackendOptions(candidates=tuple(configs)), [type(c).__name__ for c in configs]


def bench_valid_for(calls: int = 20_000, overhead_ns: float = 0.0) -> dict[str, Any]:
    """``BackendOptions.valid_for(arch)`` per call, warm, over the CUDA archs in scope."""
    try:
        opts, names = flashinfer_candidates()
    except ImportError as exc:
        return {"skipped": f"flashinfer not importable ({exc})"}
    from oracle.matrix import ARCHS_IN_SCOPE

    archs = [int(a[2:]) for a in ARCHS_IN_SCOPE if a.startswith("sm")]
    for a in archs:  # warm
        opts.valid_for(a)
    args = [archs[i % len(archs)] for i in range(calls)]
    res = summarize_ns(time_each(opts.valid_for, args, overhead_ns=overhead_ns))
    res["candidates"] = names
    return res


# ------------------------------------------------------------------ driver

def run(*, quick: bool = False, import_runs: int | None = None, mix: int | None = None,
        layers: int | None = None, uncached_passes: int | None = None,
        valid_for_calls: int | None = None, flashinfer: bool = True,
        imports: bool = True) -> dict[str, Any]:
    """Run every measurement; returns the JSON-able result dict."""
    import_runs = import_runs if import_runs is not None else (3 if quick else 10)
    mix = mix if mix is not None else (128 if quick else 1024)
    layers = layers if layers is not None else (2 if quick else 12)
    uncached_passes = uncached_passes if uncached_passes is not None else (1 if quick else 10)
    valid_for_calls = valid_for_calls if valid_for_calls is not None else (
        1000 if quick else 20_000)

    out: dict[str, Any] = {"machine": machine_info(), "command": _command_line()}
    if imports:
        prime_imports("oracle")
        out["import_oracle"] = cold_import_ms("oracle", import_runs, first_select=True)
        out["importtime_oracle"] = importtime_ms("oracle", import_runs)
        out["import_oracle_in_loader"] = cold_import_ms("oracle", import_runs, first_select=True,
                                                        preload=LOADER_PRELOAD)
        out["import_oracle_in_loader"]["preload"] = list(LOADER_PRELOAD)
        try:
            out["table_load"] = table_load_ms(import_runs)
        except (subprocess.CalledProcessError, StopIteration) as exc:  # e.g. an older loader
            out["table_load"] = {"skipped": f"table load not measurable here ({exc})"}
    import oracle  # noqa: F401  (the in-process measurements)

    overhead = timer_overhead_ns()
    out["timer_overhead_ns"] = overhead
    out["calls"] = bench_calls(request_mix(mix), layers=layers, uncached_passes=uncached_passes,
                               overhead_ns=overhead)
    out["enumeration"] = bench_enumeration()
    out["docs"] = bench_docs(1 if quick else 3)
    if flashinfer:
        if imports:
            prime_imports("flashinfer")
            out["import_flashinfer"] = cold_import_ms("flashinfer", import_runs)
            out["importtime_flashinfer"] = importtime_ms("flashinfer", import_runs)
        out["valid_for"] = bench_valid_for(valid_for_calls, overhead)
    out["ratios"] = ratios(out)
    out["targets"] = targets(out)
    return out


def _command_line() -> str:
    args = " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == "selection_bench.py" else ""
    return ("python benchmarks/selection_bench.py " + args).strip()


def ratios(out: dict[str, Any]) -> dict[str, float]:
    r: dict[str, float] = {}
    if "import_flashinfer" in out and "import_oracle" in out:
        r["import_flashinfer_over_oracle"] = (out["import_flashinfer"]["median_ms"]
                                              / out["import_oracle"]["median_ms"])
    if "importtime_flashinfer" in out and "importtime_oracle" in out:
        r["importtime_flashinfer_over_oracle"] = (out["importtime_flashinfer"]["median_ms"]
                                                  / out["importtime_oracle"]["median_ms"])
    vf = out.get("valid_for", {})
    calls = out.get("calls", {})
    if "median_us" in vf:
        for key in ("select_warm_ok", "select_warm_all", "select_uncached_ok"):
            if key in calls and calls[key]["median_us"] > 0:
                r[f"valid_for_over_{key}"] = vf["median_us"] / calls[key]["median_us"]
    return r


def targets(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    values: dict[str, float | None] = {
        # the loader path: a request that is answered, asked again for every layer
        "select_warm_answered_median_us": out.get("calls", {}).get("select_warm_ok", {}).get("median_us"),
        "enumeration_plus_docs_s": None,
        "import_oracle_ms": out.get("import_oracle", {}).get("median_ms"),
        "import_ratio_flashinfer_over_oracle":
            out.get("ratios", {}).get("import_flashinfer_over_oracle"),
    }
    docs = out.get("docs", {})
    if "enumeration" in out and "seconds_median" in docs:
        values["enumeration_plus_docs_s"] = out["enumeration"]["seconds"] + docs["seconds_median"]
    res = {}
    for name, (limit, unit, op) in TARGETS.items():
        v = values[name]
        met = None if v is None else (v <= limit if op == "<=" else v >= limit)
        res[name] = {"value": v, "limit": limit, "unit": unit, "op": op, "met": met}
    return res


def format_report(out: dict[str, Any]) -> str:
    from tabulate import tabulate

    m = out["machine"]
    lines = [f"machine: {m['nproc']} cores, {m['cpu']}; Python {m['python']}; "
             f"torch {m['torch']}; flashinfer {m['flashinfer']}; load {m['loadavg_at_start']}",
             f"date: {m['date']}    command: {out['command']}", ""]
    rows: list[list[Any]] = []

    def fmt(x: float, nd: int = 2) -> str:
        return f"{x:,.{nd}f}"

    calls = out.get("calls", {})
    labels = {"all": "whole mix", "ok": "answered", "raises": "raises OracleError"}
    paths = {"warm": "warm (cached, per layer)", "uncached": "uncached",
             "cold": "cold (+ matrix indexes)"}
    for key, st in calls.items():
        if key == "mix":
            continue
        fn, path, label = key.split("_", 2)
        what = f"{fn}() {paths[path]}, {labels[label]}"
        rows.append([what, f"{st['calls']:,} calls", fmt(st["median_us"]), fmt(st["p99_us"]),
                     "µs"])
    if "valid_for" in out:
        vf = out["valid_for"]
        if "skipped" in vf:
            rows.append(["FlashInfer BackendOptions.valid_for(arch)", vf["skipped"], "", "", ""])
        else:
            rows.append([f"FlashInfer BackendOptions.valid_for(arch), {len(vf['candidates'])} "
                         "configs", f"{vf['calls']:,} calls", fmt(vf["median_us"]),
                         fmt(vf["p99_us"]), "µs"])
    en = out.get("enumeration")
    if en:
        rows.append([f"enumeration: {en['weights']} weight x {en['activation_requests']} "
                     f"activation x {en['backend_names']} backend x {en['archs']} arch, cold",
                     f"{en['combinations']:,} combos ({en['selected']:,} selected)",
                     fmt(en["seconds"] * 1e3, 1), "", "ms"])
    docs = out.get("docs", {})
    if "skipped" in docs:
        rows.append(["docs: render_support_matrix()", docs["skipped"], "", "", ""])
    elif docs:
        rows.append(["docs: render_support_matrix(), cold caches", f"{docs['runs']} runs",
                     fmt(docs["seconds_median"] * 1e3, 1), "", "ms"])
    for mod in ("oracle", "flashinfer"):
        if f"import_{mod}" in out:
            st = out[f"import_{mod}"]
            rows.append([f"cold `import {mod}` (perf_counter in child)", f"{st['runs']} processes",
                         fmt(st["median_ms"], 1), f"min {fmt(st['min_ms'], 1)}", "ms"])
            if "first_select_median_ms" in st:
                rows.append(["  first select() after the cold import", f"{st['runs']} processes",
                             fmt(st["first_select_median_ms"], 2), "", "ms"])
            loader = out.get(f"import_{mod}_in_loader")
            if loader:
                rows.append([f"  `import {mod}`, {', '.join(loader['preload'])} already loaded",
                             f"{loader['runs']} processes", fmt(loader["median_ms"], 1),
                             f"min {fmt(loader['min_ms'], 1)}", "ms"])
                rows.append(["    first select() after it", f"{loader['runs']} processes",
                             fmt(loader["first_select_median_ms"], 2), "", "ms"])
        if mod == "oracle" and "tomllib_median_ms" in out.get("table_load", {}):
            tl = out["table_load"]
            rows.append(["  table load + validation, via the parse cache", f"{tl['runs']} processes",
                         fmt(tl["cached_median_ms"], 2), "", "ms"])
            rows.append(["  table load + validation, via tomllib (no usable cache)",
                         f"{tl['runs']} processes", fmt(tl["tomllib_median_ms"], 2), "", "ms"])
        if f"importtime_{mod}" in out:
            st = out[f"importtime_{mod}"]
            rows.append([f"cold `import {mod}` (-X importtime total)", f"{st['runs']} processes",
                         fmt(st["median_ms"], 1), f"min {fmt(st['min_ms'], 1)}", "ms"])
    lines.append(tabulate(rows, headers=["measurement", "n", "median", "p99 (calls) or min (imports)", "unit"],
                          tablefmt="github", disable_numparse=True))
    lines.append("")
    lines.append(f"timer overhead subtracted per call: {out.get('timer_overhead_ns', 0):.0f} ns")
    if out.get("ratios"):
        lines.append("ratios (same run):")
        for k, v in out["ratios"].items():
            lines.append(f"  {k}: {v:,.3g}x")
    lines.append("targets:")
    for k, t in out.get("targets", {}).items():
        state = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        val = "n/a" if t["value"] is None else f"{t['value']:,.3g} {t['unit']}"
        lines.append(f"  {k} {t['op']} {t['limit']:g} {t['unit']}: {val} -> {state}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true",
                   help="small counts (a smoke run, numbers not meaningful)")
    p.add_argument("--import-runs", type=int, help="fresh processes per import measurement "
                   "(default 10)")
    p.add_argument("--mix", type=int, help="distinct requests in the mix (default 1024)")
    p.add_argument("--layers", type=int, help="warm repeats of each request (default 12)")
    p.add_argument("--no-flashinfer", action="store_true", help="skip every FlashInfer "
                   "measurement")
    p.add_argument("--no-imports", action="store_true", help="skip the cold-import measurements")
    args = p.parse_args(argv)
    out = run(quick=args.quick, import_runs=args.import_runs, mix=args.mix, layers=args.layers,
              flashinfer=not args.no_flashinfer, imports=not args.no_imports)
    print(format_report(out))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n",
                                   encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
