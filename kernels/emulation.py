"""EMULATION as a real backend: dequantize MXFP4 once, run the experts as BF16 GEMMs (CPU or CUDA).

What it computes is :func:`oracle.kernels.reference.moe_reference` with the GEMMs in
``compute_dtype`` (BF16 by default) instead of float32::

    gate_up = q(x) @ W13_e^T            (compute_dtype GEMM, result rounded to compute_dtype)
    a       = act(gate_up + b13_e)      (float32)
    y       = q(a) @ W2_e^T + b2_e      (compute_dtype GEMM, float32 bias)
    out[t] += w[t, j] * y               (float32 accumulation; cast to hidden.dtype once)

``q`` is the quantize-dequantize (QDQ) of the requested activation key, exactly as the
reference does it (``act_quant``: None, ``"mxfp8"``, ``"fp8_per_tensor"`` (dynamic:
amax/448 over the whole GEMM input), ``"fp8_per_token"`` or ``"mxfp4"``), so a
quantized-activation kernel can be compared with what its activations allow, and a
model can be run where no kernel exists.  MXFP4 -> BF16 is exact: the only differences
from the float32 reference are the BF16 rounding of the GEMM inputs (hidden states and
SwiGLU output) and of the GEMM outputs; the BLAS accumulates in float32.  ``compute_dtype=float32``
gives the reference's arithmetic (TF32 off), up to summation order.

Dequantized weights are kept (``2 * E * (2I*H + H*I)`` bytes in BF16: 1.6 GB for
gpt-oss-20b's 32 experts); the forward pass sorts the routed (token, slot) pairs by
expert once and runs one GEMM per routed expert, so it needs one device sync per call
(the per-expert row counts) and is not CUDA-graph capturable.

Input checks: the same as the reference (shapes, dtypes, devices; ids always in range;
values unless ``check_finite=False``); the weights' scale bytes and biases are checked
once at construction (every expert) instead of per call.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from oracle.errors import KernelInputError

from .checkpoint import MoEWeights
from .reference import ACT_QUANT_CHOICES, ActivationSpec, _check_inputs, _full_fp32_matmul, _quant

__all__ = ["EmulationMoE", "COMPUTE_DTYPES"]

COMPUTE_DTYPES = (torch.bfloat16, torch.float32)


def _check_top_k(top_k: int | None, topk_ids: Any) -> None:
    if top_k is not None and isinstance(topk_ids, torch.Tensor) and topk_ids.dim() == 2 \
            and topk_ids.shape[1] != top_k:
        raise KernelInputError("topk_ids", f"[M, top_k={top_k}] (the layer's top_k)", tuple(topk_ids.shape))


class EmulationMoE(torch.nn.Module):
    """EMULATION: dequantized-weight GEMMs in ``compute_dtype`` on the weights' device.

    ``forward(hidden_states, topk_ids, topk_weights) -> [M, H]`` in ``hidden_states.dtype``.
    """

    backend = "EMULATION"

    def __init__(self, weights: MoEWeights, activation: ActivationSpec, act_quant: str | None = None,
                 top_k: int | None = None, *, check_finite: bool = True,
                 compute_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        if not isinstance(check_finite, bool):
            raise KernelInputError("check_finite", "True or False", repr(check_finite)[:40])
        if not isinstance(weights, MoEWeights):
            raise KernelInputError("weights", "an oracle.kernels.checkpoint.MoEWeights", type(weights).__name__)
        if not isinstance(activation, ActivationSpec):
            raise KernelInputError("activation", "an oracle.kernels.reference.ActivationSpec",
                                   type(activation).__name__)
        if act_quant not in ACT_QUANT_CHOICES:
            raise KernelInputError("act_quant", "one of " + ", ".join(map(repr, ACT_QUANT_CHOICES)),
                                   repr(act_quant)[:40])
        if compute_dtype not in COMPUTE_DTYPES:
            raise KernelInputError("compute_dtype", "torch.bfloat16 or torch.float32", repr(compute_dtype)[:40])
        weights.validate()
        if check_finite:
            weights.check_finite()
        self.weights = weights
        self.activation = activation
        self.act_quant = act_quant
        self.top_k = top_k
        self.check_finite = check_finite
        self.compute_dtype = compute_dtype
        # Exact dequantization, once (MXFP4 values times powers of two are exact in BF16).
        self.w13 = weights.dense_w13(dtype=compute_dtype).contiguous()   # [E, 2I, H]
        self.w2 = weights.dense_w2(dtype=compute_dtype).contiguous()     # [E, H, I]
        self.b13 = None if weights.w13_bias is None else weights.w13_bias.float()
        self.b2 = None if weights.w2_bias is None else weights.w2_bias.float()

    def extra_repr(self) -> str:
        return f"backend=EMULATION, act_quant={self.act_quant}, compute_dtype={self.compute_dtype}"

    def forward(self, hidden_states: torch.Tensor, topk_ids: torch.Tensor,
                topk_weights: torch.Tensor) -> torch.Tensor:
        _check_top_k(self.top_k, topk_ids)
        w = self.weights
        # The reference's checks (ids always range-checked); the weights were checked at construction.
        _check_inputs(hidden_states, w, topk_ids, topk_weights, self.activation, self.act_quant, None,
                      check_finite=False)
        if self.check_finite:
            flags = torch.stack([torch.isfinite(hidden_states).all(), torch.isfinite(topk_weights).all()]).tolist()
            for name, ok in zip(("hidden", "topk_weights"), flags):
                if not ok:
                    raise KernelInputError(name, "finite (no NaN/inf)", "non-finite values",
                                           "fix the upstream computation, or pass check_finite=False to skip "
                                           "the check")
        m, h = hidden_states.shape
        out = torch.zeros(m, h, dtype=torch.float32, device=hidden_states.device)
        if topk_ids.numel() == 0:
            return out.to(hidden_states.dtype)
        cd = self.compute_dtype
        k = topk_ids.shape[1]
        flat = topk_ids.reshape(-1).long()
        order = torch.argsort(flat, stable=True)                  # routed pairs grouped by expert
        counts = torch.bincount(flat, minlength=w.num_experts).tolist()  # the one sync
        tokens = order // k
        routing = topk_weights.reshape(-1).float()[order]
        ctx = _full_fp32_matmul() if cd == torch.float32 else nullcontext()
        with ctx:
            x = _quant(hidden_states.float(), self.act_quant, None).to(cd)
            act = torch.empty(flat.numel(), w.intermediate_size, dtype=torch.float32, device=out.device)
            spans = []
            start = 0
            for e, c in enumerate(counts):
                if c == 0:
                    continue
                sl = slice(start, start + c)
                gate_up = (x[tokens[sl]] @ self.w13[e].T).float()
                if self.b13 is not None:
                    gate_up += self.b13[e]
                act[sl] = self.activation(gate_up)
                spans.append((e, sl))
                start += c
            # One QDQ over every routed row: a dynamic per-tensor scale sees the whole GEMM2 input
            # (as the reference's); per-token and MX scales are per row anyway.
            aq = _quant(act, self.act_quant, None).to(cd)
            y = torch.empty(flat.numel(), h, dtype=torch.float32, device=out.device)
            for e, sl in spans:
                ye = (aq[sl] @ self.w2[e].T).float()
                if self.b2 is not None:
                    ye += self.b2[e]
                y[sl] = ye
            out.index_add_(0, tokens, y * routing[:, None])
        return out.to(hidden_states.dtype)
