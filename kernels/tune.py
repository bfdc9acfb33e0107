"""Measure the MXFP4 MoE kernels that run here and write a profile for ``rank="measured"``.

::

    python -m oracle.kernels.tune --out PROFILE.toml [--experts 32 128] [--tokens 1 4 16 64 256 1024 4096]

On a GPU, per backend ``build_moe`` can run here (:func:`default_backends`: every backend
with a kernel adapter plus the activation overrides of :data:`OVERRIDES`; on an H200 that is
FlashInfer CUTLASS W4A16, FlashInfer CUTLASS MXFP4 x FP8 humming, HUMMING with BF16 and with
FP8 per-token activations, EMULATION -- the SM100 kernels are reported as not measured)
x experts x tokens: the CUDA-graph median (omitted where graphs do
not work), the eager median, the relative error against the float reference and the
backend's first-call build / JIT seconds.  The problem is a gpt-oss MoE layer (H = I = 2880,
top-4, random MXFP4 weights, biases, SwiGLU-OAI) -- as far as each backend's matrix row
allows: a row that runs no biases or only plain SwiGLU is measured on that (the profile's
header comment says which).  Timing follows the project's method: input sets rotated so
that the bytes they touch exceed the L2 several times (:func:`rotation_count`), CUDA events,
medians; value checks off, as under CUDA graphs.

The profile schema (read by :mod:`oracle.profile`)::

    schema = 1, device, arch, driver, cuda, date, command, [libraries] (PEP 440 versions),
    [[measurement]] backend, activation ("None" = bf16, else a QuantKey constant name),
    experts, hidden, intermediate, top_k, tokens, graph_us (omitted if graphs failed),
    eager_us, rel_error, build_s

The pure parts (:func:`render_profile`, :func:`median`, :func:`rotation_count`,
:func:`iterations_for`) need no GPU; :func:`main` needs one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from oracle.keys import constant_name
from oracle.profile import Measurement  # the profile row: one definition, read and written

__all__ = ["OVERRIDES", "default_backends", "parse_label", "Measurement", "render_profile", "median", "rotation_count", "iterations_for",
           "canonical_arch", "time_graph_ms", "run", "main"]

#: Activation overrides measured besides each row's own key: (row, QuantKey constant name) --
#: keys the row says its kernel quantizes to itself (``requested_activations``).
OVERRIDES: tuple[tuple[str, str], ...] = (("HUMMING", "kFp8DynamicTokenSym"),)


def parse_label(label: str) -> tuple[str, str | None]:
    """``"ROW"`` or ``"ROW+KEY"`` (a requested activation key) -> (row name, key name or None)."""
    row, _, key = label.partition("+")
    return row, key or None


def default_backends() -> tuple[str, ...]:
    """Every backend ``build_moe`` has a kernel for, plus :data:`OVERRIDES` (labels for ``--backends``).

    Those that cannot run on this device (another arch) are reported as not measured.
    """
    from .moe import IMPLEMENTED_BACKENDS

    return tuple(IMPLEMENTED_BACKENDS) + tuple(f"{r}+{k}" for r, k in OVERRIDES)
DEFAULT_EXPERTS = (32, 128)
DEFAULT_TOKENS = (1, 4, 16, 64, 256, 1024, 4096)
GPT_OSS = {"hidden": 2880, "intermediate": 2880, "top_k": 4}


@dataclass
class Header:
    device: str
    arch: str
    driver: str
    cuda: str
    date: str
    command: str
    libraries: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- pure helpers


def median(values: Iterable[float]) -> float:
    """The median of ``values`` (a ValueError when there are none or one is NaN)."""
    vals = list(values)
    if not vals:
        raise ValueError("median of no values")
    if any(math.isnan(v) for v in vals):
        raise ValueError("median of values with NaN")
    return float(statistics.median(vals))


def rotation_count(bytes_per_set: float, l2_bytes: float, *, factor: float = 3.0, lo: int = 2, hi: int = 8) -> int:
    """How many input sets to rotate so that the sets together touch ``factor`` x the L2.

    ``bytes_per_set``: the bytes one call reads (active experts' weights + activations);
    at least ``lo`` sets (a call never follows itself) and at most ``hi``.
    """
    if bytes_per_set <= 0 or l2_bytes <= 0:
        raise ValueError("bytes_per_set and l2_bytes must be positive")
    return int(min(hi, max(lo, math.ceil(factor * l2_bytes / bytes_per_set))))


def iterations_for(call_s: float, *, budget_s: float = 0.25, lo: int = 10, hi: int = 200) -> int:
    """Timed calls for one point: about ``budget_s`` of device time, within [lo, hi]."""
    if call_s <= 0 or math.isnan(call_s):
        return hi
    return int(min(hi, max(lo, budget_s / call_s)))


def canonical_arch(major: int, minor: int) -> str:
    """Compute capability -> the project's arch name (``(9, 0)`` -> ``"sm90"``)."""
    return f"sm{major}{minor}"


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _toml_num(v: float) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"not a finite number: {v!r}")
    if isinstance(v, int):
        return str(v)
    return repr(round(float(v), 1) if abs(v) >= 10 else float(f"{v:.4g}"))


def render_profile(header: Header, rows: Sequence[Measurement]) -> str:
    """The profile TOML of ``rows`` (schema 1); comment lines of ``header.comments`` on top."""
    out = [f"# {c}" if c else "#" for c in header.comments]
    out += ["schema = 1", f"device = {_toml_str(header.device)}", f"arch = {_toml_str(header.arch)}",
            f"driver = {_toml_str(header.driver)}", f"cuda = {_toml_str(header.cuda)}",
            f"date = {_toml_str(header.date)}", f"command = {_toml_str(header.command)}", "", "[libraries]"]
    out += [f"{k} = {_toml_str(v)}" for k, v in sorted(header.libraries.items())]
    for r in rows:
        if not isinstance(r.rel_error, (int, float)) or not math.isfinite(r.rel_error):
            raise ValueError(f"{r.backend} M={r.tokens}: rel_error {r.rel_error!r} is not finite")
        out += ["", "[[measurement]]", f"backend = {_toml_str(r.backend)}",
                f"activation = {_toml_str(constant_name(r.activation))}"]
        out += [f"{k} = {int(getattr(r, k))}" for k in ("experts", "hidden", "intermediate", "top_k", "tokens")]
        if r.graph_us is not None:
            out.append(f"graph_us = {_toml_num(r.graph_us)}")
        out.append(f"eager_us = {_toml_num(r.eager_us)}")
        out.append(f"rel_error = {float(r.rel_error):.3e}".replace("e-0", "e-").replace("e+0", "e+"))
        if r.build_s is not None:
            out.append(f"build_s = {_toml_num(r.build_s)}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- device side


def _log(msg: str) -> None:
    print(f"[tune {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        return out[0].strip() if out else ""
    except Exception:
        return ""


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    libs = {"torch": torch.__version__}
    for name, dist in (("flashinfer", "flashinfer-python"), ("humming", "humming-kernels")):
        try:
            libs[name] = version(dist)
        except PackageNotFoundError:
            pass
    return libs


def _time_eager(fn: Callable[[Any], Any], sets: Sequence[Any], iters: int, cuda: bool = True) -> float:
    """Median ms per call, CUDA events around each call (host clock off CUDA), input sets rotated."""
    import torch

    for s in sets:
        fn(s)
    if not cuda:
        times = []
        for i in range(iters):
            t = time.perf_counter()
            fn(sets[i % len(sets)])
            times.append((time.perf_counter() - t) * 1e3)
        return median(times)
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for i, (a, b) in enumerate(ev):
        a.record()
        fn(sets[i % len(sets)])
        b.record()
    torch.cuda.synchronize()
    return median(a.elapsed_time(b) for a, b in ev)


def time_graph_ms(fn: Callable[[Any], Any], sets: Sequence[Any], iters: int) -> float:
    """Median ms per replay of one CUDA graph per input set (raises when capture fails)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for s in sets:
            fn(s)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graphs = []
    for s in sets:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn(s)
        graphs.append(g)
    for g in graphs:
        g.replay()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for i, (a, b) in enumerate(ev):
        a.record()
        graphs[i % len(graphs)].replay()
        b.record()
    torch.cuda.synchronize()
    t = median(a.elapsed_time(b) for a, b in ev)
    del graphs
    return t


def random_layer_cuda(e: int, h: int, i: int, seed: int, *, bias: bool = True, device: Any = "cuda"):
    """A gpt-oss-layout random MXFP4 layer drawn on the GPU (as ``random_gpt_oss_layer``, faster)."""
    import torch

    from .checkpoint import MoEWeights

    g = torch.Generator(device=device).manual_seed(seed)

    def packed(n: int, k: int):
        c = 127 - round(0.5 * math.log2(k))
        blocks = torch.randint(0, 256, (e, n, k // 32, 16), generator=g, device=device, dtype=torch.uint8)
        scales = torch.randint(c - 2, c + 1, (e, n, k // 32), generator=g, device=device, dtype=torch.uint8)
        return blocks, scales

    w13, s13 = packed(2 * i, h)
    w2, s2 = packed(h, i)
    b13 = (torch.randn(e, 2 * i, generator=g, device=device) * 0.5).to(torch.bfloat16) if bias else None
    b2 = (torch.randn(e, h, generator=g, device=device) * 0.5).to(torch.bfloat16) if bias else None
    return MoEWeights(w13, s13, b13, w2, s2, b2).validate()


def routing(m: int, e: int, k: int, gen, device: Any = "cuda") -> tuple[Any, Any]:
    import torch

    logits = torch.randn(m, e, device=device, generator=gen)
    top = logits.topk(k, dim=-1)
    return top.indices.to(torch.int32).contiguous(), torch.softmax(top.values, -1).float().contiguous()


@dataclass
class _Selection:  # what build_moe reads of an oracle Selection
    backend: str
    activation: Any


def _key(name: str | None):
    if name is None:
        return None
    from oracle.keys import KEY_CONSTANTS

    return KEY_CONSTANTS[name]


def _layer_for(row_name: str, e: int, geo: dict[str, int] | None = None):
    """The gpt-oss LayerSpec, narrowed to what the backend's matrix row runs (bias, activation)."""
    from oracle.matrix import MATRIX
    from oracle.request import LayerSpec

    g = dict(GPT_OSS, **(geo or {}))
    fns = ("swiglu_oai", "swiglu") if row_name == "EMULATION" else tuple(MATRIX.by_name[row_name].activation_fns)
    bias = True if row_name == "EMULATION" else bool(MATRIX.by_name[row_name].bias)
    common = dict(hidden_size=g["hidden"], intermediate_size=g["intermediate"], num_experts=e, top_k=g["top_k"],
                  has_bias=bias)
    if "swiglu_oai" in fns:
        layer = LayerSpec(activation_fn="swiglu_oai", swiglu_alpha=1.702, swiglu_limit=7.0, **common)
    else:
        layer = LayerSpec(activation_fn="swiglu", **common)
    return layer, bias


def _ran_key(row_name: str, requested: str | None, module: Any) -> Any:
    """The QuantKey the kernel ran with (None = bf16)."""
    from oracle.matrix import MATRIX

    adapter = getattr(module, "adapter", None)
    ran = getattr(adapter, "kernel_activation_key", None)
    if ran is None:
        ran = getattr(adapter, "activation_key", None) if adapter is not None else None
    if ran is None and row_name != "EMULATION":
        ran = _key(requested) if requested else MATRIX.by_name[row_name].activation
    return ran


def _act_quant_of(key: Any) -> str | None:
    from .moe import EMULATED_ACTIVATIONS

    return None if key is None else EMULATED_ACTIVATIONS[key]


def _sm90_flashinfer() -> set[str]:
    """The backends served by the trimmed SM90 FlashInfer module (the adapters naming a spec)."""
    from .adapters import ADAPTERS

    return {b for b, f in ADAPTERS.items() if isinstance(f, type) and getattr(f, "spec_name", None)}



def build_flashinfer(progress: Callable[[str], None] = _log) -> float:
    """Build (or load) the trimmed module holding both FlashInfer SM90 specs; returns its seconds."""
    from .jit import sm90

    t = time.perf_counter()
    try:
        sm90.build_trimmed_sm90((sm90.W4A16, sm90.FP8_HUMMING), progress=progress)
    except Exception as e:  # the union failed: keep W4A16 (FP8_HUMMING will report its error)
        progress(f"union build failed ({type(e).__name__}: {str(e)[:300]}); building W4A16 alone")
        sm90.build_trimmed_sm90((sm90.W4A16,), progress=progress)
    return time.perf_counter() - t


def run(*, experts: Sequence[int] = DEFAULT_EXPERTS, tokens: Sequence[int] = DEFAULT_TOKENS,
        backends: Sequence[str] | None = None, seed: int = 0, autotune: bool = True,
        prebuilt_s: float | None = None, on_row: Callable[[Measurement], None] | None = None,
        notes: list[str] | None = None, device: str = "cuda", shape: dict[str, int] | None = None
        ) -> list[Measurement]:
    """Measure ``backends`` x ``experts`` x ``tokens`` on the current GPU (see the module docstring).

    ``prebuilt_s``: the FlashInfer module's build seconds when it was built earlier in this
    process (:func:`build_flashinfer`).  ``on_row`` is called with each measurement as it is
    made; ``notes`` collects one line per backend that was refused or narrowed.  ``device="cpu"``
    and a small ``shape`` ({hidden, intermediate, top_k}) are for tests (EMULATION; host clock).
    """
    import torch

    from oracle.matrix import MATRIX

    from oracle.errors import OracleError

    from .moe import activation_from_layer, build_moe
    from .reference import moe_reference

    notes = notes if notes is not None else []
    backends = tuple(default_backends() if backends is None else backends)
    rows: list[Measurement] = []
    cuda = torch.device(device).type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    l2 = float(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 50 << 20) if cuda else 32e6
    geo = dict(GPT_OSS, **(shape or {}))
    h, i, k = geo["hidden"], geo["intermediate"], geo["top_k"]
    fi_build_s = prebuilt_s
    build_s: dict[str, float] = {}
    fi_rows = _sm90_flashinfer()
    if fi_build_s is None and cuda and any(parse_label(b)[0] in fi_rows for b in backends) \
            and torch.cuda.get_device_capability(0) == (9, 0):
        fi_build_s = build_flashinfer()
    for e in experts:
        weights = random_layer_cuda(e, h, i, seed + e, device=device)
        plain = None
        expert_bytes = (3 * i * h) // 2 + (3 * i * h) // 32 + 2 * (3 * i)  # blocks + scales + biases
        for label in backends:
            row_name, requested = parse_label(label)
            layer, bias = _layer_for(row_name, e, geo)
            w = weights
            if not bias:
                if plain is None:
                    from .checkpoint import MoEWeights

                    plain = MoEWeights(weights.w13_blocks, weights.w13_scales, None, weights.w2_blocks,
                                       weights.w2_scales, None)
                w = plain
            if (not bias or layer.activation_fn != "swiglu_oai") and e == experts[0]:
                notes.append(f"{label}: measured as its matrix row allows: activation {layer.activation_fn}, "
                             f"{'with' if bias else 'no'} biases")
            # the row's own key unless a key the row quantizes to itself is requested (HUMMING + FP8)
            sel = _Selection(row_name, _key(requested) if requested or row_name == "EMULATION"
                             else MATRIX.by_name[row_name].activation)
            sync()
            t0 = time.perf_counter()
            try:
                kw = {} if row_name == "EMULATION" else {"max_num_tokens": max(tokens)}
                mod = build_moe(sel, w, layer, check_finite=False, check_expert_ids=False, **kw)
            except (OracleError, RuntimeError) as ex:
                if e == experts[0]:
                    notes.append(f"{label}: not measured: {type(ex).__name__}: {str(ex)[:300]}")
                _log(f"{label} E={e}: build_moe failed: {type(ex).__name__}: {str(ex)[:300]}")
                continue
            sync()
            t_build = time.perf_counter() - t0
            ran = _ran_key(row_name, requested, mod)
            adapter = getattr(mod, "adapter", None)
            prepared = getattr(mod, "prepared", None)
            t1 = time.perf_counter()
            try:
                if hasattr(adapter, "warmup"):  # HUMMING: JIT of every token bucket
                    adapter.warmup(prepared, list(tokens), k)
                elif autotune and hasattr(adapter, "tune"):  # FlashInfer: its autotuner over the Ms
                    adapter.tune(prepared, list(tokens), k)
            except Exception as ex:
                _log(f"{label} E={e}: warm-up/tune failed: {type(ex).__name__}: {str(ex)[:300]}")
            sync()
            t_warm = time.perf_counter() - t1
            if label not in build_s:
                if row_name in fi_rows:
                    build_s[label] = float(fi_build_s or 0.0) + t_build
                else:
                    build_s[label] = t_build + (t_warm if hasattr(adapter, "warmup") else 0.0)
            _log(f"{label} E={e}: built in {t_build:.1f}s, warm-up/tune {t_warm:.1f}s "
                 f"(ran {constant_name(ran)})")
            act_quant = _act_quant_of(ran)
            for m in tokens:
                g = torch.Generator(device=device).manual_seed(seed * 7919 + e * 131 + m)
                active = min(e, m * k)
                n_sets = rotation_count(active * expert_bytes + m * h * 4, l2)
                sets = []
                for _ in range(n_sets):
                    x = torch.randn(m, h, device=device, generator=g).to(torch.bfloat16)
                    ids, tw = routing(m, e, k, g, device)
                    sets.append((x, ids, tw))
                try:
                    y = mod(*sets[0])
                    x0, ids0, tw0 = sets[0]
                    ref = moe_reference(x0.float(), w, ids0, tw0, activation=activation_from_layer(layer),
                                        act_quant=act_quant)
                    rel = float((y.double() - ref.double()).norm() / ref.double().norm())
                    del ref, y
                    fn = _caller(mod)
                    sync()
                    t_est = time.perf_counter()
                    fn(sets[0])
                    sync()
                    iters = iterations_for(time.perf_counter() - t_est)
                    eager = _time_eager(fn, sets, iters, cuda) * 1e3
                    graph = None
                    if row_name != "EMULATION" and cuda:  # EMULATION syncs per call: not capturable by design
                        try:
                            graph = time_graph_ms(fn, sets, iters) * 1e3
                        except Exception as ex:
                            _log(f"{label} E={e} M={m}: graph capture failed: {type(ex).__name__}: {str(ex)[:200]}")
                            sync()
                except Exception as ex:
                    _log(f"{label} E={e} M={m}: failed: {type(ex).__name__}: {str(ex)[:300]}")
                    traceback.print_exc()
                    sync()
                    continue
                r = Measurement(label.split("+")[0], ran, e, h, i, k, m, eager, rel, graph, build_s.get(label))
                rows.append(r)
                _log(f"{label:38s} E={e:3d} M={m:5d} sets={n_sets} graph={_fmt(graph)} eager={_fmt(eager)} "
                     f"rel={rel:.2e}")
                if on_row:
                    on_row(r)
                del sets
            mod = adapter = prepared = None
            if cuda:
                torch.cuda.empty_cache()
        del weights, plain
        if cuda:
            torch.cuda.empty_cache()
    return rows


def _caller(mod: Any) -> Callable[[Any], Any]:
    def call(s: Any) -> Any:
        return mod(*s)

    return call


def _fmt(v: float | None) -> str:
    return "    n/a" if v is None else f"{v:8.1f}"


def header_for(command: str, comments: Sequence[str] = ()) -> Header:
    import torch

    name = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    return Header(device=name, arch=canonical_arch(major, minor), driver=_driver(), cuda=torch.version.cuda or "",
                  date=time.strftime("%Y-%m-%d"), command=command, libraries=_versions(),
                  comments=list(comments))


def command_line(argv: Sequence[str]) -> str:
    """``python -m oracle.kernels.tune`` + the arguments, as a shell line."""
    import shlex

    return "python -m oracle.kernels.tune " + " ".join(shlex.quote(a) for a in argv)


def main(argv: Sequence[str] | None = None, *, prebuilt_s: float | None = None,
         extra_comments: Sequence[str] = ()) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m oracle.kernels.tune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the profile TOML to write (rewritten after every backend)")
    ap.add_argument("--experts", type=int, nargs="+", default=list(DEFAULT_EXPERTS))
    ap.add_argument("--tokens", type=int, nargs="+", default=list(DEFAULT_TOKENS))
    ap.add_argument("--backends", nargs="+", default=None,
                    help="labels ROW or ROW+KEY (default: every backend build_moe has a kernel for, and "
                         + ", ".join(f"{r}+{k}" for r, k in OVERRIDES) + ")")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-autotune", action="store_true", help="skip FlashInfer's autotuner (default tactic)")
    args = ap.parse_args(argv)
    for name, vals in (("--experts", args.experts), ("--tokens", args.tokens)):
        if any(v < 1 for v in vals):
            ap.error(f"{name} takes positive ints")
    import torch

    if not torch.cuda.is_available():
        print("python -m oracle.kernels.tune measures kernels: it needs a CUDA GPU", file=sys.stderr)
        return 2
    command = command_line(argv)
    rows: list[Measurement] = []
    notes: list[str] = []
    start = time.strftime("%Y-%m-%d %H:%M:%S")

    def write() -> None:
        comments = [(f"Measured kernel profile, written by oracle.kernels.tune ({start} - "
                     f"{time.strftime('%H:%M:%S')})."), f"Command: {command}",
                    ("Problem: gpt-oss MoE layer (H = I = 2880, top-4), random MXFP4 weights; times in "
                     "microseconds (medians, inputs rotated past the L2);"),
                    ("rel_error = |out - ref| / |ref| against the float reference with the activation QDQ "
                     "of the key the kernel ran with."),
                    *extra_comments, *notes]
        text = render_profile(header_for(command, comments), rows) if rows else ""
        if text:
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, args.out)

    def on_row(r: Measurement) -> None:
        rows.append(r)
        write()

    run(experts=args.experts, tokens=args.tokens, backends=args.backends, seed=args.seed,
        autotune=not args.no_autotune, prebuilt_s=prebuilt_s, on_row=on_row, notes=notes)
    write()
    _log(f"wrote {len(rows)} measurements to {args.out}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())

