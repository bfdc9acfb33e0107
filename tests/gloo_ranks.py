"""Run a test file as a group of ranks (one process each, gloo over a file rendezvous).

Used by the CPU tests of the group decision (tests/test_group.py) and of expert
parallelism (tests/kernels/test_ep_gloo.py): the script is started once per rank as
``script RANK WORLD INIT_FILE OUT_DIR`` and writes ``OUT_DIR/rank{RANK}.json``.  Every
wait is bounded; a rank that fails or hangs fails the test with its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def run_ranks(script: str, tmp_path: Path, world: int, timeout_s: float,
              what: str = "group") -> list[dict]:
    """Each rank's JSON result, in rank order."""
    init_file = tmp_path / "rendezvous"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    procs = [subprocess.Popen([sys.executable, script, str(r), str(world), str(init_file),
                               str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=env, text=True)
             for r in range(world)]
    deadline = time.monotonic() + timeout_s
    logs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            logs.append(out)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"{what} of {world} ranks did not finish within {timeout_s}s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} exited {p.returncode}:\n{logs[r]}"
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
