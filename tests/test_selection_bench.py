"""Smoke test for benchmarks/selection_bench.py: every measurement runs (tiny counts),
so the script cannot rot.  No timing is asserted -- the numbers live in
docs/performance.md."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from oracle import OracleError, SelectionRequest, select

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "benchmarks" / "selection_bench.py"
    spec = importlib.util.spec_from_file_location("selection_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["selection_bench"] = module  # dataclass/annotation lookups need it registered
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("selection_bench", None)
        module.clear_selector_caches()


def test_request_mix_is_seeded_distinct_and_selectable(bench):
    mix = bench.request_mix(24, seed=3)
    assert len(mix) == 24 == len(set(mix))
    assert mix == bench.request_mix(24, seed=3)
    assert all(isinstance(r, SelectionRequest) for r in mix)
    ok, err = bench.split_by_outcome(mix)
    assert len(ok) + len(err) == 24
    for r in ok:
        select(r)
    for r in err:
        with pytest.raises(OracleError):
            select(r)


def test_call_latencies(bench):
    mix = bench.request_mix(16, seed=0)
    res = bench.bench_calls(mix, layers=2, uncached_passes=1,
                            overhead_ns=bench.timer_overhead_ns(100))
    assert res["mix"]["distinct_requests"] == 16
    for key in ("select_warm_all", "select_uncached_all", "select_cold_all", "explain_warm_all",
                "explain_uncached_all", "explain_cold_all"):
        st = res[key]
        assert st["calls"] > 0
        assert 0 <= st["min_us"] <= st["median_us"] <= st["p99_us"]
    assert res["select_warm_all"]["calls"] == 32


def test_enumeration_and_docs(bench):
    en = bench.bench_enumeration(limit=2)
    weights, acts, _, _ = bench.enumeration_space()
    assert en["combinations"] == len(weights) * len(acts) * 2 * 2
    assert en["combinations"] == en["selected"] + en["raised"]
    docs = bench.bench_docs(1)
    assert "skipped" in docs or docs["chars"] > 0


def test_cold_import_measurements(bench):
    res = bench.cold_import_ms("oracle", 1, first_select=True)
    assert res["runs"] == 1 and res["median_ms"] > 0 and res["first_select_median_ms"] > 0
    res = bench.cold_import_ms("oracle", 1, preload=bench.LOADER_PRELOAD)
    assert res["median_ms"] > 0
    res = bench.importtime_ms("oracle", 1)
    assert res["median_ms"] > 0 and res["top_self_ms"]


def test_parse_importtime(bench):
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        100 | site",
        "import time:        20 |         20 |     b.c",
        "import time:        30 |         50 |   b",
        "import time:        40 |         90 | a",
        "import time:         5 |          5 | other",
    ])
    total, entries = bench.parse_importtime(stderr, "a")
    assert total == 90
    assert [e[0] for e in entries] == ["b", "b.c"]
    total, _ = bench.parse_importtime(stderr, "missing")
    assert math.isnan(total)


def test_report_ratios_and_targets(bench):
    stats = {"calls": 10, "median_us": 2.0, "p99_us": 3.0, "min_us": 1.0, "mean_us": 2.0}
    out = {
        "machine": bench.machine_info(), "command": "python benchmarks/selection_bench.py",
        "timer_overhead_ns": 50.0,
        "calls": {"mix": {}, "select_warm_all": stats, "select_warm_ok": stats,
                  "select_uncached_ok": {**stats, "median_us": 40.0}},
        "enumeration": {"seconds": 0.2, "combinations": 4, "selected": 1, "raised": 3,
                        "weights": 1, "activation_requests": 1, "backend_names": 2, "archs": 2},
        "docs": {"seconds_median": 0.05, "seconds_min": 0.05, "runs": 1, "chars": 10},
        "import_oracle": {"runs": 1, "median_ms": 30.0, "min_ms": 30.0, "max_ms": 30.0,
                          "first_select_median_ms": 1.0},
        "import_oracle_in_loader": {"runs": 1, "median_ms": 20.0, "min_ms": 20.0,
                                    "max_ms": 20.0, "first_select_median_ms": 0.5,
                                    "preload": ["dataclasses"]},
        "importtime_oracle": {"runs": 1, "median_ms": 32.0, "min_ms": 32.0, "top_self_ms": []},
        "import_flashinfer": {"runs": 1, "median_ms": 6000.0, "min_ms": 6000.0,
                              "max_ms": 6000.0},
        "importtime_flashinfer": {"runs": 1, "median_ms": 6400.0, "min_ms": 6400.0,
                                  "top_self_ms": []},
        "valid_for": {**stats, "candidates": ["TrtllmFp4Config"]},
    }
    out["ratios"] = bench.ratios(out)
    out["targets"] = bench.targets(out)
    assert out["ratios"]["import_flashinfer_over_oracle"] == pytest.approx(200.0)
    assert out["ratios"]["valid_for_over_select_warm_ok"] == pytest.approx(1.0)
    assert all(t["met"] for t in out["targets"].values())
    text = bench.format_report(out)
    assert "valid_for" in text and "import flashinfer" in text and "MISSED" not in text
    json.dumps(out)


def test_main_writes_json(bench, tmp_path, monkeypatch, capsys):
    full = bench.bench_enumeration
    monkeypatch.setattr(bench, "bench_enumeration", lambda: full(limit=2))
    target = tmp_path / "out" / "bench.json"
    assert bench.main(["--quick", "--no-flashinfer", "--no-imports", "--mix", "8",
                       "--layers", "1", "--json", str(target)]) == 0
    data = json.loads(target.read_text())
    assert data["calls"]["mix"]["distinct_requests"] == 8
    assert data["enumeration"]["combinations"] > 0
    assert "targets" in data and "import_oracle" not in data
    assert "select()" in capsys.readouterr().out
