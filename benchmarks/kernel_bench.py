#!/usr/bin/env python3
"""Kernel benchmark: every MXFP4 MoE kernel that runs here, side by side, at gpt-oss shapes.

FlashInfer CUTLASS W4A16 (adapter and raw), HUMMING (bf16, fp8 per token, fp8 per tensor; adapter
and library calls alone) and EMULATION, on the same inputs, printed as one table of times and
ratios to FlashInfer (``tools/device_check.py``'s ``run_side`` / ``run_bench``).

Measures, in one process on one GPU:

* the two ceilings first -- device-to-device copy bandwidth (bytes read + written)
  and an 8192^3 bf16 matmul rate;
* for gpt-oss-20b (E=32) and gpt-oss-120b (E=128) experts (top-4, H = I = 2880)
  and M in {1, 4, 16, 64, 256, 1024, 4096}: median time with CUDA events
  (warm-up, several input sets so the weights do not sit in L2), eager and CUDA
  graph; bytes moved (active experts' packed weights + scales + biases, plus
  activations in/out) as a fraction of the copy bandwidth; useful FLOPs as a
  fraction of the bf16 rate; ratios vs the torch reference on the GPU and vs
  raw FlashInfer (``cutlass_fused_moe`` on pre-padded tensors, no adapter).

Needs an SM90 GPU, nvcc and flashinfer-python 0.7.2.post1; builds (or reuses)
the trimmed JIT module first.  The numbers recorded on an H100 are in
docs/performance.md ("## Kernel").  ``python tools/device_check.py start`` runs the
same code as a detached job (results in $OUT).

    python benchmarks/kernel_bench.py [--experts 32 128] [--tokens 1 4 16 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

# The device job is lab tooling under tools/ (not in the installed package): load it by path.
_DEVICE_CHECK = Path(__file__).resolve().parents[1] / "tools" / "device_check.py"
_spec = importlib.util.spec_from_file_location("oracle_device_check", _DEVICE_CHECK)
dc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experts", type=int, nargs="+", default=list(dc.BENCH_ES))
    ap.add_argument("--tokens", type=int, nargs="+", default=list(dc.BENCH_MS))
    ap.add_argument("--json", type=Path, default=None, help="write the raw result here")
    ap.add_argument("--no-build", action="store_true", help="use whatever module FlashInfer's loader returns")
    ap.add_argument("--backends", nargs="+", default=list(dc.ALL_BACKENDS), choices=dc.ALL_BACKENDS,
                    help="kernels to time side by side (HUMMING needs humming-kernels)")
    args = ap.parse_args(argv)
    dc.bootstrap()
    result: dict = {"env": dc.env_info()}
    side = [b for b in args.backends if b in dc.SIDE_BACKENDS]
    if side:
        dc.run_side(result, names=tuple(side), es=tuple(args.experts), ms=tuple(args.tokens))
    if "FLASHINFER_CUTLASS_MXFP4_BF16" in args.backends:
        if not args.no_build:
            dc.run_build(result)
        dc.run_bench(result, es=tuple(args.experts), ms=tuple(args.tokens))
    print(dc.summary_text(result))  # ends with the side-by-side table: times and ratios to FlashInfer
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
