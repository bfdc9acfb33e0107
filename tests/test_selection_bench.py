"""Smoke test of benchmarks/selection_bench.py: every measurement runs (tiny counts) and
the JSON is written, so the script cannot rot.  No timing is asserted -- the numbers
live in docs/performance.md.  And the script uses public oracle names only."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from oracle.matrix import ARCHS_IN_SCOPE, MATRIX

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "selection_bench.py"
MEASUREMENTS = ("import_oracle", "import_flashinfer", "import_ratio", "select_warm",
                "select_cold", "enumeration", "select_uncached")


def test_quick_run_measures_everything_and_writes_json(tmp_path):
    target = tmp_path / "out" / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--runs", "1", "--json",
                           str(target)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(target.read_text(encoding="utf-8"))
    assert data["command"] == f"python benchmarks/selection_bench.py --quick --runs 1 --json {target}"
    for key in MEASUREMENTS:
        assert key in data, key
    for key in ("import_oracle", "import_flashinfer", "select_cold"):
        assert data[key]["runs"] == 1 and data[key]["median_ms"] >= 0
    warm = data["select_warm"]
    assert warm["calls"] == 20 * warm["distinct_requests"] > 0
    assert warm["cache_hits"] == warm["calls"]  # the warm path is a cache hit, every call
    assert data["select_uncached"]["calls"] > 0
    en = data["enumeration"]
    weights = len({r.weight for r in MATRIX.rows})
    acts = 2 + len({r.activation for r in MATRIX.rows if r.activation is not None})
    archs = len(ARCHS_IN_SCOPE) + 3
    assert en["requests"] == weights * acts * 2 * len(MATRIX.backend_names()) * archs
    assert 0 < en["answered"] < en["requests"] and en["docs_chars"] > 0
    assert set(data["targets"]) == {"import_oracle.median_ms", "import_ratio.x",
                                    "select_warm.median_us", "select_cold.median_ms",
                                    "enumeration.total_s"}
    assert all(isinstance(t["met"], bool) for t in data["targets"].values())
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(MEASUREMENTS)  # header + one row per measurement
    assert sum(("| met " in line) or ("| MISSED " in line) for line in table) == 5


def test_script_uses_no_private_oracle_name():
    source = SCRIPT.read_text(encoding="utf-8")
    assert not re.search(r"\boracle(\.\w+)*\._", source)
    assert not re.search(r"from\s+oracle[\w.]*\s+import\s+[^\n]*\b_\w", source)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):  # any private attribute, whatever its owner
            assert not node.attr.startswith("_"), f"line {node.lineno}: .{node.attr}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("oracle"):
            names = [node.module, *(a.name for a in node.names)]
            assert not any(p.startswith("_") for n in names for p in n.split(".")), node.lineno
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("oracle")]
            assert not any(p.startswith("_") for n in names for p in n.split(".")), node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # getattr(obj, "_x") and code strings run in a child
            assert not re.match(r"_[a-z]", node.value), f"line {node.lineno}: {node.value!r}"
            assert not re.search(r"\.\s*_[a-z]\w*", node.value), f"line {node.lineno}"
