"""HUMMING: a fused-MoE adapter around the humming-kernels GEMMs (optional extra ``humming``).

humming-kernels (the library behind vLLM's HUMMING MXFP4 backend) is a JIT GEMM
library, not a fused MoE.  This adapter builds the MoE around two of its *indexed*
(gathered-row) grouped GEMMs::

    routing    topk_ids -> sorted (token, slot) ids padded per expert to the GEMM's
               block M, one expert id per block, the padded row count     (torch, on device)
    GEMM1      x[M, H] -> gate_up[M*k, 2I]   (+ bias; rows as in the checkpoint: gate, up interleaved)
    SwiGLU-OAI gate_up -> a[M*k, I]          (humming's process-input kernel with a binary
               interleaved activation; the FP8 modes quantize in the same kernel)
    GEMM2      a -> y[M*k, H]                (+ bias, per (token, slot) row)
    reduction  out[m] = sum_j w[m, j] * y[m*k + j]   (float32, cast to bf16)

Weights go in checkpoint-native: ``HummingLayer`` with the ``gpt_oss_mxfp4`` weight
schema takes the uint8 E2M1 blocks and E8M0 scales as they are and repacks them
(``transform``) for the device.  N and K are padded to the matrix row's alignments
(humming pads the weights; inputs and outputs stay unpadded).

Activations: BF16 (the row's), or an FP8 e4m3 mode -- ``kFp8DynamicTokenSym``
(humming's ``dynamic_token`` mode: one amax/448 scale per row of each GEMM input) or
``kFp8DynamicTensorSym`` / ``kFp8StaticTensorSym`` (``static_tensor`` with a scale
computed on the device per call, amax/448 of each GEMM input); ``build_moe`` passes a
selection's key through when the row says the kernel quantizes to it
(``requested_activations``), and ``HummingAdapter(activation_key=...)`` takes any of them.
``kMxfp8Dynamic`` (a key the row lists) is refused with humming's own reason: it has no SM90
schedule for E8M0 group-scaled activations (seen on an H200).

JIT: each (GEMM, token bucket) compiles once (2-4 s each on an H200); token counts are
bucketed to powers of two, and :meth:`HummingAdapter.warmup` compiles the buckets of
given token counts ahead (``prepared.jit_seconds`` records the time per bucket).  After
warm-up ``run`` is CUDA-graph capturable (no host sync) once built with
``check_finite=False, check_expert_ids=False``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from oracle.errors import KernelInputError
from oracle.keys import kFp8DynamicTensorSym, kFp8DynamicTokenSym, kFp8StaticTensorSym, kMxfp8Dynamic

from .adapters import (
    KernelUnavailable,
    PreparedMoE,
    _check_routing,
    _check_values,
    _RowAdapter,
    check_hidden_states,
    round_up,
)
from .checkpoint import MoEWeights
from .reference import GPT_OSS_SWIGLU, ActivationSpec

__all__ = ["HummingAdapter", "PreparedHumming", "align_routing", "swiglu_expression", "HUMMING_OVERRIDES"]

#: Activation key -> the humming input mode this adapter's run code implements for it.
_MODES = {None: "bf16", kFp8DynamicTokenSym: "fp8_per_token", kFp8DynamicTensorSym: "fp8_per_tensor",
          kFp8StaticTensorSym: "fp8_per_tensor"}
#: Keys the matrix row says the kernel quantizes to but humming-kernels 0.1.19 cannot run here,
#: with the library's own refusal (seen on an NVIDIA H200, gpt-oss-20b shapes).
_REFUSED = {kMxfp8Dynamic: "humming-kernels 0.1.19 has no SM90 schedule for E8M0 group-scaled (MXFP8) "
                           "activations: 'WGMMA input scales must use float32 storage, got float8e8m0'"}
#: The keys besides BF16 (``activation_key=``).
HUMMING_OVERRIDES = tuple(k for k in _MODES if k is not None)
#: humming's SM90 tile rule: block N >= 4 warps x 32 columns for 16-bit activations
#: (humming/tune/sm90_policies.py, build_sm90_seed_config), and block N | N -- so N and K
#: are padded to a multiple of 128 besides the row's alignment.
_HUMMING_TILE = 128
_FP8_MAX = 448.0
_COMPUTE = json.dumps({"gemm_type": "indexed"})
_ONE_HOT_LIMIT = 1 << 15  # (M * top_k) * E below which align_routing takes the sort-free path


def _json(cfg: Any) -> str:
    return json.dumps(cfg, default=lambda o: getattr(o, "value", str(o)))


def _import_humming():
    try:
        import humming  # noqa: F401
        from humming import ops
        from humming.layer import HummingLayer
        from humming.tune import get_heuristics_config
    except Exception as e:  # pragma: no cover - environment
        raise KernelUnavailable("HUMMING", "humming-kernels importable (pip install 'mxfp4-oracle[humming]')",
                                f"{type(e).__name__}: {e}") from e
    return humming, ops, HummingLayer, get_heuristics_config


def swiglu_expression(activation: ActivationSpec) -> str:
    """The CUDA expression of the gated activation for humming's process-input kernel.

    ``a`` is the gate and ``b`` the up value of one (gate, up) pair -- the even and odd
    GEMM1 columns for the interleaved gpt-oss layout, the two halves for plain SwiGLU.
    """
    if activation.kind == "swiglu":
        return "a / (1.0f + __expf(-a)) * b"
    lim, alpha = float(activation.limit), float(activation.alpha)
    if math.isinf(lim):
        g, u = "a", "b"
    else:
        g, u = f"fminf(a, {lim!r}f)", f"fminf(fmaxf(b, {-lim!r}f), {lim!r}f)"
    return f"({u} + 1.0f) * {g} / (1.0f + __expf({-alpha!r}f * {g}))"


def align_routing(topk_ids: torch.Tensor, num_experts: int, block_m: int):
    """(sorted_ids, expert_ids, num_tokens_padded) for an indexed GEMM with row blocks of ``block_m``.

    ``sorted_ids`` int32 [cap]: the flat (token * k + slot) indices grouped by expert,
    each expert's run padded to a multiple of ``block_m`` with the sentinel ``M * k``;
    ``expert_ids`` int32 [cap / block_m]: the expert of each block (blocks past the
    padded total repeat the last expert and are never read); ``num_tokens_padded``
    int32 [1].  ``cap = M*k + min(E, M*k) * (block_m - 1)`` rounded up to ``block_m``:
    fixed for a given M, so it is CUDA-graph capturable; no host sync.
    """
    flat = topk_ids.reshape(-1)
    n = flat.numel()
    dev = flat.device
    fl = flat.long()
    cap = round_up(n + min(num_experts, n) * (block_m - 1), block_m)
    if n * num_experts <= _ONE_HOT_LIMIT:
        # Few launches (decode and small prefill): a running count per expert gives each
        # (token, slot) its rank among the expert's rows; no sort.
        cs = (torch.arange(num_experts, device=dev).unsqueeze(1) == fl).cumsum(1, dtype=torch.int32)  # [E, n]
        counts = cs[:, -1]
        padded = (counts + (block_m - 1)) // block_m * block_m
        ends = torch.cumsum(padded, 0, dtype=torch.int32)
        pos = (ends - padded).gather(0, fl) + cs.gather(0, fl.unsqueeze(0)).squeeze(0) - 1
        src = torch.arange(n, device=dev, dtype=torch.int32)
    else:
        counts = torch.zeros(num_experts, dtype=torch.int64, device=dev).scatter_add_(0, fl, torch.ones_like(fl))
        padded = (counts + block_m - 1) // block_m * block_m
        ends = torch.cumsum(padded, 0)
        order = torch.argsort(fl, stable=True)
        sorted_e = fl[order]
        first = torch.cumsum(counts, 0) - counts
        pos = (ends - padded)[sorted_e] + (torch.arange(n, device=dev) - first[sorted_e])
        src = order.to(torch.int32)
    sorted_ids = torch.full((cap,), n, dtype=torch.int32, device=dev)
    sorted_ids[pos.long()] = src
    blocks = torch.arange(0, cap, block_m, device=dev, dtype=ends.dtype)
    expert_ids = torch.searchsorted(ends, blocks, right=True).clamp_max_(num_experts - 1).to(torch.int32)
    return sorted_ids, expert_ids, ends[-1:].to(torch.int32)


@dataclass
class _Plan:
    """Per token bucket: the tuning config of each GEMM (JSON) and its block M."""

    tuning1: str
    tuning2: str
    block1: int
    block2: int


@dataclass(kw_only=True)
class PreparedHumming(PreparedMoE):
    """Two repacked ``HummingLayer``s (GEMM1, GEMM2) plus the per-bucket plans."""

    backend: str = "HUMMING"
    gemm1: Any
    gemm2: Any
    mode: str                                     # "bf16" | "fp8_per_token" | "fp8_per_tensor"
    activation: ActivationSpec
    act_expr: str
    plans: dict[int, _Plan] = field(default_factory=dict, repr=False)
    jit_seconds: dict[int, float] = field(default_factory=dict)
    prepare_seconds: float = 0.0


def _prepare_humming_repacked(adapter: HummingAdapter, weights: MoEWeights, device: torch.device) -> PreparedHumming:
    """Layout ``humming_repacked``: checkpoint blocks/scales -> two transformed ``HummingLayer``s."""
    _, _, HummingLayer, _ = _import_humming()
    t0 = time.perf_counter()
    e, h, i = weights.num_experts, weights.hidden_size, weights.intermediate_size
    w = weights.to(device)
    if adapter.activation.interleaved:
        w13, s13 = w.w13_blocks.reshape(e, 2 * i, h // 2), w.w13_scales
        b13 = w.w13_bias
    else:  # [gate; up] halves -> interleaved rows, so one process-input kernel serves both kinds
        def inter(t):
            g, u = t[:, :i], t[:, i:]
            return torch.stack((g, u), dim=2).flatten(1, 2)
        w13 = inter(w.w13_blocks.reshape(e, 2 * i, h // 2))
        s13 = inter(w.w13_scales)
        b13 = None if w.w13_bias is None else inter(w.w13_bias)
    if adapter.mode == "bf16":
        input_config = None
    else:
        input_config = {"quant_method": "humming", "a_dtype": "float8e4m3",
                        "input_quant_mode": "dynamic_token" if adapter.mode == "fp8_per_token" else "static_tensor"}

    def layer(n: int, k: int, blocks, scales, bias, pad_n: int, pad_k: int):
        lay = HummingLayer(shape_n=n, shape_k=k, weight_config={"quant_method": "gpt_oss_mxfp4"},
                           input_config=None if input_config is None else dict(input_config),
                           pad_n_to_multiple=pad_n, pad_k_to_multiple=pad_k, num_experts=e,
                           has_bias=bias is not None, torch_dtype=torch.bfloat16).to(device)
        tensors = {"weight": blocks.contiguous(), "weight_scale": scales.contiguous()}
        if bias is not None:
            tensors["bias"] = bias.to(torch.bfloat16).contiguous()
        if hasattr(lay, "input_scale"):
            tensors["input_scale"] = torch.ones_like(lay.input_scale)  # replaced per call
        lay.load_from_tensors(tensors)
        lay.transform()
        return lay

    ha = math.lcm(adapter.hidden_alignment, _HUMMING_TILE)
    ia = math.lcm(adapter.intermediate_alignment, _HUMMING_TILE)
    with torch.cuda.device(device):
        g1 = layer(2 * i, h, w13, s13, b13, ia, ha)
        g2 = layer(h, i, w.w2_blocks.reshape(e, h, i // 2), w.w2_scales, w.w2_bias, ha, ia)
    torch.cuda.synchronize(device)
    return PreparedHumming(device=device, num_experts=e, hidden_size=h, intermediate_size=i,
                           hidden_pad=round_up(h, ha), inter_pad=round_up(i, ia), gemm1=g1, gemm2=g2,
                           mode=adapter.mode, activation=adapter.activation,
                           act_expr=swiglu_expression(adapter.activation),
                           prepare_seconds=time.perf_counter() - t0)


class HummingAdapter(_RowAdapter):
    """HUMMING: MXFP4-weight MoE on humming-kernels GEMMs (BF16 or FP8 activations).

    ``activation_key``: None (BF16, the row's), ``kFp8DynamicTokenSym`` or an FP8
    per-tensor key (see the module docstring).  ``max_num_tokens``: the largest M
    ``run`` accepts.  ``check_finite`` / ``check_expert_ids``: the value checks every
    adapter does (one device sync per call together; off for CUDA graphs).
    """

    backend = "HUMMING"
    layouts = {"humming_repacked": _prepare_humming_repacked}
    activation_formats = dict(_MODES)

    def __init__(self, *, activation: ActivationSpec = GPT_OSS_SWIGLU, device: torch.device | str | None = None,
                 activation_key: Any = None, max_num_tokens: int = 8192, check_finite: bool = True,
                 check_expert_ids: bool = True) -> None:
        self._init_row(activation, device, check_finite, check_expert_ids)
        if activation_key in _REFUSED:
            from oracle.keys import canonical_name

            raise KernelUnavailable(self.backend, "activations it runs: bf16, "
                                    + ", ".join(sorted({canonical_name(k) for k in HUMMING_OVERRIDES})),
                                    f"{canonical_name(activation_key)}: {_REFUSED[activation_key]}",
                                    "request bf16 or an FP8 per-token/per-tensor key, or use EMULATION")
        if activation_key is not None:
            if activation_key not in HUMMING_OVERRIDES:
                from oracle.keys import canonical_name

                raise KernelInputError("activation_key", "None (bf16) or one of "
                                       + ", ".join(canonical_name(k) for k in HUMMING_OVERRIDES),
                                       canonical_name(activation_key))
            self.activation_key = activation_key
        self.mode = _MODES[self.activation_key]
        if not isinstance(max_num_tokens, int) or isinstance(max_num_tokens, bool) or max_num_tokens < 1:
            raise KernelInputError("max_num_tokens", "a positive int", repr(max_num_tokens)[:40])
        self.max_num_tokens = max_num_tokens

    # ---- plans (tuning configs per token bucket; compiling happens at the first launch)
    @staticmethod
    def bucket(m: int) -> int:
        return 1 << max(0, (m - 1).bit_length())

    def _plan(self, p: PreparedHumming, m: int, k: int) -> _Plan:
        b = self.bucket(m)
        plan = p.plans.get(b)
        if plan is None:
            _, _, _, heuristics = _import_humming()
            cfgs = []
            for lay in (p.gemm1, p.gemm2):
                cfg = heuristics(lay.humming_config, shape_m=b * k, gemm_type="indexed", device=p.device)
                cfgs.append(cfg)
            plan = _Plan(_json(cfgs[0]), _json(cfgs[1]), int(cfgs[0]["block_shape"][0]),
                         int(cfgs[1]["block_shape"][0]))
            p.plans[b] = plan
        return plan

    def warmup(self, prepared: PreparedHumming, token_counts: list[int], top_k: int, seed: int = 0) -> dict[int, float]:
        """Compile (JIT) the kernels of each token count's bucket; returns seconds per new bucket."""
        g = torch.Generator(device=prepared.device).manual_seed(seed)
        new = {}
        for m in sorted(set(token_counts)):
            b = self.bucket(m)
            if b in prepared.jit_seconds:
                continue
            x = torch.randn(m, prepared.hidden_size, device=prepared.device, generator=g).to(torch.bfloat16)
            ids = torch.stack([torch.randperm(prepared.num_experts, device=prepared.device, generator=g)[:top_k]
                               for _ in range(m)]).to(torch.int32)
            w = torch.softmax(torch.randn(m, top_k, device=prepared.device, generator=g), -1)
            torch.cuda.synchronize(prepared.device)
            t = time.perf_counter()
            self._forward(prepared, x, ids, w)
            torch.cuda.synchronize(prepared.device)
            new[b] = prepared.jit_seconds[b] = time.perf_counter() - t
        return new

    # ---- run
    def check_run_inputs(self, prepared: Any, hidden_states: Any, topk_ids: Any, topk_weights: Any) -> tuple[int, int]:
        if not isinstance(prepared, PreparedHumming):
            raise KernelInputError("prepared", "the result of HummingAdapter.prepare", type(prepared).__name__)
        x = check_hidden_states(hidden_states, prepared.hidden_size, prepared.device)
        if x.shape[0] > self.max_num_tokens:
            raise KernelInputError("hidden_states", f"at most max_num_tokens={self.max_num_tokens} rows",
                                   x.shape[0], "build the adapter with a larger max_num_tokens")
        k = _check_routing(x, topk_ids, topk_weights, device=prepared.device, num_experts=prepared.num_experts)
        if self.check_finite or self.check_expert_ids:
            _check_values(x, topk_ids, topk_weights, prepared.num_experts, finite=self.check_finite,
                          expert_ids=self.check_expert_ids)
        return x.shape[0], k

    def run(self, prepared: PreparedHumming, hidden_states: torch.Tensor, topk_ids: torch.Tensor,
            topk_weights: torch.Tensor) -> torch.Tensor:
        m, k = self.check_run_inputs(prepared, hidden_states, topk_ids, topk_weights)
        if m == 0:
            return hidden_states.new_zeros(0, prepared.hidden_size)
        b = self.bucket(m)
        if b not in prepared.jit_seconds and not torch.cuda.is_current_stream_capturing():
            torch.cuda.synchronize(prepared.device)
            t = time.perf_counter()
            out = self._forward(prepared, hidden_states, topk_ids, topk_weights)
            torch.cuda.synchronize(prepared.device)
            prepared.jit_seconds[b] = time.perf_counter() - t  # first call of the bucket: JIT + run
            return out
        return self._forward(prepared, hidden_states, topk_ids, topk_weights)

    def routing(self, prepared: PreparedHumming, topk_ids: torch.Tensor) -> tuple:
        """The routing metadata of both GEMMs (shared when their block M agree)."""
        m, k = topk_ids.shape
        plan = self._plan(prepared, m, k)
        r1 = align_routing(topk_ids, prepared.num_experts, plan.block1)
        r2 = r1 if plan.block2 == plan.block1 else align_routing(topk_ids, prepared.num_experts, plan.block2)
        return plan, r1, r2

    def _forward(self, p: PreparedHumming, x: torch.Tensor, ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        plan, r1, r2 = self.routing(p, ids)
        return self.gemms(p, plan, r1, r2, x, w)

    def gemms(self, p: PreparedHumming, plan: _Plan, r1: tuple, r2: tuple, x: torch.Tensor,
              w: torch.Tensor) -> torch.Tensor:
        """GEMM1 -> SwiGLU (+ FP8 quantization) -> GEMM2 -> top-k weighting and reduction."""
        _, ops, _, _ = _import_humming()
        m, k = w.shape
        s1 = s2 = None
        if p.mode == "fp8_per_tensor":
            s1 = (x.abs().amax().float() / _FP8_MAX).clamp_min(1e-30).reshape(1)
        gate_up = p.gemm1(x, input_scale=s1, sorted_ids=r1[0], expert_ids=r1[1], num_tokens_padded=r1[2],
                          top_k=k, compute_config=_COMPUTE, tuning_config=plan.tuning1)
        act_kw = dict(activation_type="binary_interleaved", activation_impl=p.act_expr)
        if p.mode == "bf16":
            a, _, _ = ops.process_input(gate_up, **act_kw)
        elif p.mode == "fp8_per_token":
            a, _, s2 = ops.process_input(gate_up, quant_mode="dynamic_token", quant_dtype="float8e4m3", **act_kw)
        else:
            a16, _, _ = ops.process_input(gate_up, **act_kw)
            s2 = (a16.abs().amax().float() / _FP8_MAX).clamp_min(1e-30).reshape(1)
            a, _, _ = ops.process_input(a16, quant_mode="static_tensor", quant_dtype="float8e4m3", token_scales=s2)
        y = p.gemm2(a, input_scale=s2, sorted_ids=r2[0], expert_ids=r2[1], num_tokens_padded=r2[2],
                    top_k=1, compute_config=_COMPUTE, tuning_config=plan.tuning2)
        out = (y.view(m, k, -1).float() * w.unsqueeze(-1)).sum(1)
        return out.to(torch.bfloat16)
