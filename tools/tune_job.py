#!/usr/bin/env python3
"""GPU-machine job: FP8-humming checks, then ``oracle.kernels.tune`` -- one detached job.

Lab tooling (not part of the installed package).  On the GPU machine, from the repo root::

    python3 tools/tune_job.py start --deadline 560 -- --experts 32 128 --tokens 1 4 16 64 256 1024 4096
    python3 tools/tune_job.py wait --deadline 560          # next calls, until it says finished

``start`` installs the wheels under ``.whl/`` (``tools/device_check.py``'s installer), launches
``all`` in a new session so it survives between calls, and follows its log; ``wait`` follows
it and copies the results to ``$OUT`` (``tune_job.log``, ``h200-sm90.toml`` -- the profile,
rewritten after every measurement -- and ``humming_fp8.json``).  ``all``:

1. builds the trimmed FlashInfer module holding both SM90 specs (W4A16 and FP8 humming);
2. FP8 humming checks (:func:`humming_checks`): what the matrix row refuses on gpt-oss
   weights; rel. error with the row's semantics (plain SwiGLU, no bias) and with biases +
   SwiGLU-OAI (a row object with those facts); the loss of the per-expert E8M0 range clamp
   (``max_range = 11``) on weights whose scale bytes span 2 to 24 binades;
3. ``python -m oracle.kernels.tune --out WORK/h200-sm90.toml`` with the arguments after ``--``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
WORK = Path(os.environ.get("ORACLE_TUNE_DIR", "/tmp/oracle_tune"))
LOG = WORK / "tune_job.log"
PROFILE = WORK / "h200-sm90.toml"
CHECKS = WORK / "humming_fp8.json"
DONE = WORK / "done"
CHECK_MS = (1, 16, 256, 2048)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _rel(y, ref) -> float:
    return float((y.double() - ref.double()).norm() / ref.double().norm())


def humming_checks(result: dict) -> None:
    """FP8 humming: refusals, rel. errors (row semantics and biases + SwiGLU-OAI), E8M0 clamp loss."""
    import torch

    from oracle.kernels.adapters import CutlassHummingSm90Adapter, humming_clamp_dequant
    from oracle.kernels.checkpoint import MoEWeights
    from oracle.kernels.reference import GPT_OSS_SWIGLU, ActivationSpec, moe_reference
    from oracle.kernels.tune import random_layer_cuda, routing
    from oracle.matrix import MATRIX

    backend = "FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING"
    e, h, i, k = 32, 2880, 2880, 4
    w = random_layer_cuda(e, h, i, seed=11)
    plain_w = MoEWeights(w.w13_blocks, w.w13_scales, None, w.w2_blocks, w.w2_scales, None)
    swiglu = ActivationSpec("swiglu")
    off = dict(check_finite=False, check_expert_ids=False)
    refusals = {}
    for name, kw, weights in (("swiglu_oai", dict(activation=GPT_OSS_SWIGLU), w),
                              ("bias", dict(activation=swiglu), w)):
        try:
            CutlassHummingSm90Adapter(**kw, **off).prepare(weights)
            refusals[name] = "accepted"
        except Exception as ex:
            refusals[name] = f"{type(ex).__name__}: {ex}"
        log(f"humming refusal {name}: {refusals[name][:300]}")
    result["refusals"] = refusals

    def errors(adapter, weights, activation, label):
        p = adapter.prepare(weights)
        g = torch.Generator(device="cuda").manual_seed(3)
        rows = []
        for m in CHECK_MS:
            x = torch.randn(m, h, device="cuda", generator=g).to(torch.bfloat16)
            ids, tw = routing(m, e, k, g)
            y = adapter.run(p, x, ids, tw)
            torch.cuda.synchronize()
            r_tok = moe_reference(x.float(), weights, ids, tw, activation=activation, act_quant="fp8_per_token")
            r_bf = moe_reference(x.float(), weights, ids, tw, activation=activation)
            rows.append({"M": m, "rel_fp8_token": _rel(y, r_tok), "rel_bf16": _rel(y, r_bf),
                         "nan": bool(torch.isnan(y).any())})
            log(f"humming {label} M={m}: rel vs fp8-per-token ref {rows[-1]['rel_fp8_token']:.3e}, "
                f"vs bf16 ref {rows[-1]['rel_bf16']:.3e}, nan {rows[-1]['nan']}")
        del p
        return rows

    t = time.time()
    result["row_semantics"] = errors(CutlassHummingSm90Adapter(activation=swiglu, **off), plain_w, swiglu,
                                     "swiglu, no bias")
    proposed = dataclasses.replace(MATRIX.by_name[backend], activation_fns=("swiglu_oai", "swiglu"), bias=True)
    result["bias_swiglu_oai"] = errors(CutlassHummingSm90Adapter(activation=GPT_OSS_SWIGLU, row=proposed, **off),
                                       w, GPT_OSS_SWIGLU, "biases + swiglu_oai")
    result["errors_s"] = time.time() - t
    del w, plain_w
    torch.cuda.empty_cache()

    # E8M0 clamp loss: scale bytes uniform over [c - span, c] per expert (c ~ 1/sqrt(K)), and a
    # tail case (2 % of the blocks 20 binades below the others).
    from flashinfer.fused_moe.prepare import preprocess_moe_weights_for_sm90_mixed_gemm_humming as pre

    ec = 4
    g = torch.Generator(device="cuda").manual_seed(5)
    clamp = []
    for span in (2, 8, 11, 12, 14, 17, 20, 24, "tail20"):
        def layer(n: int, kk: int):
            c = 127 - round(0.5 * torch.log2(torch.tensor(float(kk))).item())
            blocks = torch.randint(0, 256, (ec, n, kk // 32, 16), generator=g, device="cuda", dtype=torch.uint8)
            if span == "tail20":
                sc = torch.randint(c - 2, c + 1, (ec, n, kk // 32), generator=g, device="cuda")
                tail = torch.rand(sc.shape, generator=g, device="cuda") < 0.02
                sc = torch.where(tail, sc - 20, sc)
            else:
                sc = torch.randint(c - span, c + 1, (ec, n, kk // 32), generator=g, device="cuda")
            return blocks, sc.to(torch.uint8)

        b13, s13 = layer(2 * i, h)
        b2, s2 = layer(h, i)
        ww = MoEWeights(b13, s13, None, b2, s2, None)
        entry: dict = {"span": span}
        for name, blk, sc, dense in (("w13", b13, s13, ww.dense_w13()), ("w2", b2, s2, ww.dense_w2())):
            packed = blk.reshape(ec, blk.shape[1], -1)
            cl = humming_clamp_dequant(packed, sc)
            entry[f"{name}_rel"] = _rel(cl, dense)
            flat = sc.reshape(ec, -1).int()
            floor = flat.amax(1, keepdim=True) - 11
            entry[f"{name}_clamped_blocks"] = float((flat < floor).float().mean())
            del cl, dense
        if span == 17:  # FlashInfer's own preparation agrees with humming_clamp_dequant
            pw, off_s, res = pre(b2.reshape(ec, h, -1), s2, 11, interleave=False)
            lut = torch.tensor([0.0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], device="cuda")
            codes = torch.stack([pw & 15, pw >> 4], -1).reshape(ec, h, -1).long()
            fi = lut[codes] * (res.view(-1, 1, 1) * torch.exp2(off_s.float())).repeat_interleave(32, -1)
            mine = humming_clamp_dequant(b2.reshape(ec, h, -1), s2)
            entry["flashinfer_vs_ours_max_abs"] = float((fi - mine).abs().max())
            del fi, mine, pw
        ad = CutlassHummingSm90Adapter(activation=swiglu, **off)
        p = ad.prepare(ww)
        x = torch.randn(64, h, device="cuda", generator=g).to(torch.bfloat16)
        ids = torch.arange(ec, device="cuda", dtype=torch.int32).repeat(64, 1).contiguous()
        tw = torch.softmax(torch.randn(64, ec, device="cuda", generator=g), -1).float().contiguous()
        y = ad.run(p, x, ids, tw)
        entry["moe_rel_fp8_token"] = _rel(y, moe_reference(x.float(), ww, ids, tw, activation=swiglu,
                                                           act_quant="fp8_per_token"))
        log("clamp " + json.dumps(entry))
        clamp.append(entry)
        del p, ww, b13, s13, b2, s2
        torch.cuda.empty_cache()
    result["clamp"] = clamp


def mode_all(args) -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(TOOLS))
    import device_check as dc

    dc.bootstrap()
    result: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    rc = 0
    try:
        result["env"] = dc.env_info()
        log("env: " + json.dumps(result["env"]))
        from oracle.kernels import tune

        t = time.time()
        build_s = tune.build_flashinfer(progress=log)
        result["flashinfer_build_s"] = build_s
        log(f"flashinfer trimmed module ready in {build_s:.1f}s")
        if not args.no_checks:
            try:
                humming_checks(result)
            except Exception as ex:  # the tune run must still happen
                result["checks_error"] = f"{type(ex).__name__}: {ex}"
                log(traceback.format_exc())
                rc = 1
            CHECKS.write_text(json.dumps(result, indent=1, default=str))
        result["checks_s"] = time.time() - t - build_s
        tune_args = ["--out", str(PROFILE), *args.tune_args]
        rc = tune.main(tune_args, prebuilt_s=build_s) or rc
    except BaseException as ex:
        result["error"] = f"{type(ex).__name__}: {ex}"
        log(traceback.format_exc())
        rc = 2
    finally:
        CHECKS.write_text(json.dumps(result, indent=1, default=str))
        DONE.write_text(str(rc))
    return rc


def _copy_out() -> None:
    out = os.environ.get("OUT")
    if out:
        for p in (LOG, PROFILE, CHECKS):
            if p.exists():
                shutil.copy(p, Path(out) / p.name)


def mode_wait(args) -> int:
    sys.path.insert(0, str(TOOLS))
    import device_check as dc

    return dc.follow(LOG, DONE, args.deadline, "tune_job", _copy_out, 3)


def mode_start(args) -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(TOOLS))
    import device_check as dc

    dc.install_wheels()
    if not (WORK / "pid").exists():
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   FLASHINFER_WORKSPACE_BASE=os.environ.get("FLASHINFER_WORKSPACE_BASE", "/tmp"))
        if dc.SITE.is_dir():
            env["PYTHONPATH"] = str(dc.SITE) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, str(Path(__file__).resolve()), "all"] + (["--no-checks"] if args.no_checks else [])
        with open(LOG, "ab") as lf:
            p = subprocess.Popen(cmd + ["--", *args.tune_args], stdout=lf, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, cwd=str(REPO), start_new_session=True)
        (WORK / "pid").write_text(str(p.pid))
        print(f"[tune_job] launched pid {p.pid}; log {LOG}", flush=True)
    return mode_wait(args)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tune_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, tune_args = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("start", "wait", "all"))
    ap.add_argument("--deadline", type=float, default=540.0)
    ap.add_argument("--no-checks", action="store_true")
    args = ap.parse_args(argv)
    args.tune_args = tune_args
    return {"start": mode_start, "wait": mode_wait, "all": mode_all}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
