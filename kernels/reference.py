"""Pure-torch reference MoE (CPU or CUDA) that every FlashInfer backend is checked against.

Why it looks like this:

* It consumes checkpoint-native MXFP4 (:class:`MoEWeights`) and dequantizes
  exactly (see :mod:`.mxfp4`), so a kernel mismatch can only come from the
  kernel's own arithmetic, not from a second interpretation of the format.
* All arithmetic is float32 with full-precision matmuls (TF32 is switched off
  for the call), and the result is cast to ``hidden.dtype`` once at the end.
  Kernels round intermediate results to bf16; tests compare with tolerances.
* It loops over the experts that are actually routed (not over tokens), so it
  stays usable at gpt-oss sizes, and unrouted experts are never touched.
* ``act_quant`` emulates quantized GEMM inputs the way the MXFP8 / FP8 kernels
  see them: both GEMM inputs (hidden states, and the SwiGLU output) are
  quantized and dequantized before the float32 GEMM.

The gpt-oss SwiGLU (verified in openai/gpt-oss ``gpt_oss/torch/model.py``
``swiglu`` and transformers ``GptOssExperts``): gate = row 2j, up = row 2j+1 of
the fused projection; gate = min(gate, limit); up = clamp(up, -limit, limit);
out = (up + 1) * gate * sigmoid(alpha * gate), alpha = 1.702, limit = 7.0; the
down-projection bias is added before the routing weight is applied.

Input checks (the policy of every path in :mod:`oracle.kernels`, see docs/kernels.md):
shapes, dtypes and devices are always checked; values are checked by default and
rejected with a :class:`~oracle.errors.KernelInputError` naming the tensor --
NaN/inf in ``hidden`` or ``topk_weights``, an E8M0 scale byte 255 (NaN) or a
non-finite bias in a routed expert. ``check_finite=False`` skips the value check
(the result of non-finite input is then unspecified: NaN rows, or an error from an
activation quantizer). Expert ids are always range-checked here: the reference
indexes with them.
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from oracle.errors import ConfigError, KernelInputError, shown

from .checkpoint import MoEWeights
from .mxfp4 import fake_quant_fp8_per_tensor, fake_quant_fp8_per_token, fake_quant_mxfp4, fake_quant_mxfp8

__all__ = [
    "ActivationSpec",
    "GPT_OSS_SWIGLU",
    "SILU_SWIGLU",
    "ACT_QUANT_CHOICES",
    "moe_reference",
    "moe_reference_naive_f64",
]

ACT_QUANT_CHOICES = (None, "mxfp8", "fp8_per_tensor", "fp8_per_token", "mxfp4")
_KINDS = ("swiglu_oai", "swiglu")


_FLOAT32_MAX = 3.4028234663852886e38


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (
        isinstance(value, int) or not math.isnan(value))


@dataclass(frozen=True)
class ActivationSpec:
    """Which gated activation follows the gate/up GEMM, and how its rows are laid out.

    * ``"swiglu_oai"`` (gpt-oss): rows interleaved gate, up, gate, up, ...;
      ``alpha`` defaults to 1.702 and ``limit`` to 7.0 (``math.inf`` = no clamp).
    * ``"swiglu"``: silu(gate) * up with rows as two halves [gate; up]; takes no
      alpha/limit (passing one is an error rather than silently ignored).
    """

    kind: str
    alpha: float | None = None
    limit: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError("activation.kind", "one of " + ", ".join(_KINDS), repr(self.kind),
                              choices=_KINDS)
        if self.kind == "swiglu":
            for name in ("alpha", "limit"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"activation.{name}", "unset for kind 'swiglu' (plain silu(gate) * up)",
                                      getattr(self, name), "use kind 'swiglu_oai' for the clamped gpt-oss variant")
            return
        if self.alpha is None:
            object.__setattr__(self, "alpha", 1.702)
        if self.limit is None:
            object.__setattr__(self, "limit", 7.0)
        # The kernels take these as float32: a value past float32's range would overflow
        # inside torch (RuntimeError) instead of failing here.
        if not (_is_number(self.alpha) and abs(self.alpha) <= _FLOAT32_MAX):
            raise ConfigError("activation.alpha", f"a finite number within ±{_FLOAT32_MAX:.3g}",
                              shown(self.alpha))
        if not (_is_number(self.limit) and self.limit > 0
                and (self.limit == math.inf or self.limit <= _FLOAT32_MAX)):
            raise ConfigError("activation.limit", f"a positive number up to {_FLOAT32_MAX:.3g} "
                              "(math.inf: no clamp)", shown(self.limit))

    @property
    def interleaved(self) -> bool:
        """True when gate/up rows alternate (gpt-oss), False for [gate; up] halves."""
        return self.kind == "swiglu_oai"

    def split(self, gate_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., 2I] GEMM output -> (gate [..., I], up [..., I])."""
        if self.interleaved:
            return gate_up[..., 0::2], gate_up[..., 1::2]
        i = gate_up.shape[-1] // 2
        return gate_up[..., :i], gate_up[..., i:]

    def __call__(self, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = self.split(gate_up)
        if self.kind == "swiglu":
            return torch.nn.functional.silu(gate) * up
        gate = gate.clamp(max=self.limit)
        up = up.clamp(min=-self.limit, max=self.limit)
        return (up + 1) * gate * torch.sigmoid(self.alpha * gate)


GPT_OSS_SWIGLU = ActivationSpec("swiglu_oai", alpha=1.702, limit=7.0)
SILU_SWIGLU = ActivationSpec("swiglu")


# --------------------------------------------------------------------------- input checks


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _scale_ok(s) -> bool:
    """None, a positive finite number, or a one-element floating tensor (checked when used)."""
    if s is None:
        return True
    if isinstance(s, torch.Tensor):
        return s.numel() == 1 and s.is_floating_point()
    if isinstance(s, bool) or not isinstance(s, (int, float)):
        return False
    try:
        return math.isfinite(float(s)) and s > 0
    except OverflowError:  # an int beyond float range
        return False


def _check_act_scales(act_scales, act_quant) -> None:
    if act_scales is None:
        return
    ok = isinstance(act_scales, (tuple, list)) and len(act_scales) == 2 and all(map(_scale_ok, act_scales))
    if not ok:
        raise KernelInputError("act_scales", "a (gemm1, gemm2) pair, each a positive finite number or None",
                               repr(act_scales)[:80], "act_scales=(0.01, None), or drop it")
    if act_quant != "fp8_per_tensor":
        raise ConfigError("act_scales", "a (gemm1, gemm2) pair, only with act_quant='fp8_per_tensor'",
                          act_scales, "drop act_scales, or set act_quant='fp8_per_tensor'")


def _check_inputs(hidden, weights: MoEWeights, topk_ids, topk_weights, activation, act_quant, act_scales,
                  check_finite=True) -> None:
    if not isinstance(weights, MoEWeights):
        raise KernelInputError("weights", "a MoEWeights", type(weights).__name__)
    weights.validate()
    e, h = weights.num_experts, weights.hidden_size
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2 or not hidden.is_floating_point():
        raise KernelInputError("hidden", "a floating-point [M, H] tensor",
                               getattr(hidden, "shape", type(hidden).__name__))
    if hidden.dtype not in _FLOAT_DTYPES:
        raise KernelInputError("hidden", "float16, bfloat16, float32 or float64 (the result has its dtype)",
                               hidden.dtype, "hidden.to(torch.bfloat16)")
    if hidden.shape[1] != h:
        raise KernelInputError("hidden", f"[M, {h}] (the weights' hidden size)", tuple(hidden.shape))
    m = hidden.shape[0]
    if (not isinstance(topk_ids, torch.Tensor) or topk_ids.dim() != 2 or topk_ids.shape[0] != m
            or topk_ids.is_floating_point() or topk_ids.is_complex() or topk_ids.dtype == torch.bool):
        raise KernelInputError("topk_ids", f"an integer [M={m}, k] tensor",
                               (getattr(topk_ids, "dtype", None), tuple(getattr(topk_ids, "shape", ()))))
    if not 1 <= topk_ids.shape[1] <= e:
        raise KernelInputError("topk_ids", f"top_k in [1, {e}] (the weights' num_experts)", topk_ids.shape[1],
                               "route every token to at least one expert")
    if topk_ids.numel() and not bool(((topk_ids >= 0) & (topk_ids < e)).all()):
        raise KernelInputError("topk_ids", f"expert ids in [0, {e})",
                               f"[{int(topk_ids.min())}, {int(topk_ids.max())}]",
                               "map global ids to this layer's local experts first")
    if (not isinstance(topk_weights, torch.Tensor) or tuple(topk_weights.shape) != tuple(topk_ids.shape)
            or topk_weights.dtype not in _FLOAT_DTYPES):
        raise KernelInputError("topk_weights", f"a float16/bfloat16/float32/float64 tensor of shape "
                               f"{tuple(topk_ids.shape)}",
                               (getattr(topk_weights, "dtype", None), tuple(getattr(topk_weights, "shape", ()))))
    for name, t in (("hidden", hidden), ("topk_ids", topk_ids), ("topk_weights", topk_weights)):
        if t.device != weights.device:
            raise KernelInputError(name, f"on {weights.device} like the weights", t.device)
    if not isinstance(activation, ActivationSpec):
        raise KernelInputError("activation", "an ActivationSpec", type(activation).__name__)
    if act_quant not in ACT_QUANT_CHOICES:
        raise ConfigError("act_quant", "one of None, " + ", ".join(repr(c) for c in ACT_QUANT_CHOICES[1:]),
                          repr(act_quant), choices=ACT_QUANT_CHOICES[1:])
    _check_act_scales(act_scales, act_quant)
    if not isinstance(check_finite, bool):
        raise KernelInputError("check_finite", "True or False", repr(check_finite)[:40])
    if check_finite:
        flags = torch.stack([torch.isfinite(hidden).all(), torch.isfinite(topk_weights).all()]).tolist()
        for name, ok in zip(("hidden", "topk_weights"), flags):
            if not ok:
                raise KernelInputError(name, "finite (no NaN/inf)", "non-finite values",
                                       "fix the upstream computation, or pass check_finite=False to skip the check")
        weights.check_finite(torch.unique(topk_ids))


def _quant(x: torch.Tensor, act_quant: str | None, scale) -> torch.Tensor:
    if act_quant is None:
        return x
    if act_quant == "mxfp8":
        return fake_quant_mxfp8(x)
    if act_quant == "fp8_per_token":
        return fake_quant_fp8_per_token(x)
    if act_quant == "mxfp4":
        return fake_quant_mxfp4(x)
    return fake_quant_fp8_per_tensor(x, scale)


@contextmanager
def _full_fp32_matmul() -> Iterator[None]:
    """Disable TF32 for the duration: a reference must not lose mantissa bits on CUDA."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


# --------------------------------------------------------------------------- reference


def moe_reference(hidden: torch.Tensor, weights: MoEWeights, topk_ids: torch.Tensor,
                  topk_weights: torch.Tensor, *, activation: ActivationSpec = GPT_OSS_SWIGLU,
                  act_quant: str | None = None,
                  act_scales: tuple[float | None, float | None] | None = None,
                  check_finite: bool = True) -> torch.Tensor:
    """out[m] = sum_j topk_weights[m, j] * expert_{topk_ids[m, j]}(hidden[m]); returns [M, H] in hidden.dtype.

    expert_e(x) = W2_e · act(W13_e · q(x) + b13_e) quantized by q, + b2_e, in float32.
    ``act_quant``: None (bf16/float activations), ``"mxfp8"`` (per-32 E8M0 +
    e4m3), ``"fp8_per_token"`` (e4m3, one dynamic amax/448 scale per row of each
    GEMM input), ``"mxfp4"`` (per-32 E8M0 + e2m1) or ``"fp8_per_tensor"`` (e4m3,
    one scale per GEMM input). For the
    latter, ``act_scales=(s1, s2)`` gives static scales; a ``None`` entry (or
    no ``act_scales``) means dynamic: amax/448 over the whole GEMM input (all
    tokens for GEMM1, all routed (token, expert) rows for GEMM2).
    A token routed twice to the same expert gets that expert's output twice.
    ``check_finite``: see the module docstring (values are checked by default).
    """
    _check_inputs(hidden, weights, topk_ids, topk_weights, activation, act_quant, act_scales, check_finite)
    s1, s2 = act_scales if act_scales is not None else (None, None)
    m, h = hidden.shape
    out = torch.zeros(m, h, dtype=torch.float32, device=hidden.device)
    if topk_ids.numel() == 0:
        return out.to(hidden.dtype)
    routing = topk_weights.float()
    with _full_fp32_matmul():
        x = _quant(hidden.float(), act_quant, s1)
        stage1 = []  # (expert, token rows, their routing weights, activation output)
        for e in torch.unique(topk_ids).tolist():
            tokens, slots = (topk_ids == e).nonzero(as_tuple=True)
            w13 = weights.dense_w13([e])[0]                        # [2I, H]
            gate_up = x[tokens] @ w13.T
            if weights.w13_bias is not None:
                gate_up = gate_up + weights.w13_bias[e].float()
            stage1.append((e, tokens, routing[tokens, slots], activation(gate_up)))
        if act_quant == "fp8_per_tensor" and s2 is None:
            # A dynamic per-tensor scale sees the whole GEMM2 input, so it needs every expert's rows first.
            s2 = max(float(a.abs().amax()) for *_, a in stage1) / 448.0 or None
        for e, tokens, w, act in stage1:
            w2 = weights.dense_w2([e])[0]                          # [H, I]
            y = _quant(act, act_quant, s2) @ w2.T
            if weights.w2_bias is not None:
                y = y + weights.w2_bias[e].float()
            out.index_add_(0, tokens, y * w[:, None])
    return out.to(hidden.dtype)


def _naive_act(activation: ActivationSpec, gate: float, up: float) -> float:
    """Scalar activation written out independently of ActivationSpec.__call__."""
    if activation.kind == "swiglu":
        return gate / (1.0 + math.exp(-gate)) * up
    g = min(gate, activation.limit)
    u = max(-activation.limit, min(up, activation.limit))
    return (u + 1.0) * g / (1.0 + math.exp(-activation.alpha * g))


def moe_reference_naive_f64(hidden: torch.Tensor, weights: MoEWeights, topk_ids: torch.Tensor,
                            topk_weights: torch.Tensor, *, activation: ActivationSpec = GPT_OSS_SWIGLU,
                            act_quant: str | None = None,
                            act_scales: tuple[float | None, float | None] | None = None,
                            check_finite: bool = True) -> torch.Tensor:
    """Deliberately simple float64 per-(token, slot) loop with scalar activations; for tests only.

    Same contract as :func:`moe_reference` but returns float64 on the CPU. It
    shares only the (separately tested) format helpers with the fast path.
    """
    _check_inputs(hidden, weights, topk_ids, topk_weights, activation, act_quant, act_scales, check_finite)
    s1, s2 = act_scales if act_scales is not None else (None, None)
    cpu = weights.to("cpu")
    w13 = cpu.dense_w13(dtype=torch.float64)
    w2 = cpu.dense_w2(dtype=torch.float64)
    b13 = None if cpu.w13_bias is None else cpu.w13_bias.double()
    b2 = None if cpu.w2_bias is None else cpu.w2_bias.double()
    ids, rw = topk_ids.cpu().tolist(), topk_weights.cpu().double()
    x = _quant(hidden.cpu().double(), act_quant, s1)
    inter = weights.intermediate_size

    rows = []  # (token, expert, routing weight, activation vector)
    for t in range(hidden.shape[0]):
        for j, e in enumerate(ids[t]):
            gu = w13[e] @ x[t] + (b13[e] if b13 is not None else 0.0)
            pairs = ([(float(gu[2 * c]), float(gu[2 * c + 1])) for c in range(inter)] if activation.interleaved
                     else [(float(gu[c]), float(gu[inter + c])) for c in range(inter)])
            act = torch.tensor([_naive_act(activation, g, u) for g, u in pairs], dtype=torch.float64)
            rows.append((t, e, float(rw[t, j]), act))
    if act_quant == "fp8_per_tensor" and s2 is None and rows:
        s2 = max(float(a.abs().max()) for *_, a in rows) / 448.0 or None
    out = torch.zeros(hidden.shape[0], weights.hidden_size, dtype=torch.float64)
    for t, e, r, act in rows:
        a = _quant(act.unsqueeze(0), act_quant, s2)[0]
        out[t] += r * (w2[e] @ a + (b2[e] if b2 is not None else 0.0))
    return out
