"""tools/ep_check.py, the two-GPU expert-parallel script: its CPU dry run (2 gloo ranks, EMULATION).

The script spawns its ranks with torch.multiprocessing and bounds them with a deadline;
here it runs as a subprocess with its own timeout on top.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "ep_check.py"


def test_dry_run_on_gloo_passes_and_writes_the_table(tmp_path):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path / "ep_check.md"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, str(SCRIPT), "--backend", "gloo", "--device", "cpu",
                               "--ms", "1,16", "--iters", "1", "--warmup", "0", "--timeout", "45",
                               "--out", str(out)], capture_output=True, text=True, timeout=90, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("tools/ep_check.py dry run did not finish within 90 s")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = out.read_text()
    assert text in proc.stdout
    assert "## Expert parallelism (2 ranks, gloo" in text and "**Result: PASS.**" in text
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["pass"] and res["decision"]["same_on_every_rank"]
    hidden = res["decision"]["hidden_library"]
    assert hidden["pass"] and all(r["names_rank_1"] for r in hidden["ranks"])
    timed = [b for b in res["ep"]["backends"] if b.get("timed")]
    assert len(timed) == 1 and timed[0]["backend"] == res["decision"]["backend"]
    rows = timed[0]["rows"]
    assert [r["M"] for r in rows] == [1, 16] and rows[0]["M_ranks"] == [1, 0]  # rank 1 with no tokens
    assert all(r["rel_vs_ep1"] <= 1e-3 and r["pass"] for r in rows)
    t = timed[0]["timing"]
    assert [r["M"] for r in t] == [1, 16]
    assert all(r["dispatch_s"] > 0 and r["combine_s"] > 0 and r["ep_step_s"] > 0 for r in t)
    assert "| M per rank |" in text and "comm share" in text
