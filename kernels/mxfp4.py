"""MXFP4 / MXFP8 / FP8 number formats in plain torch (CPU or CUDA).

Why this module exists: every kernel adapter and the reference MoE must agree,
bit for bit, on what a checkpoint byte means. Keeping the format in one small
place lets the tests pin it down once, against hand-written bytes.

Format (OCP Microscaling v1.0, as used by gpt-oss):

* An MXFP4 block is 32 consecutive values along the reduction (K) axis that
  share one E8M0 scale byte ``s``: value = e2m1(code) * 2**(s - 127).
  ``s == 255`` is NaN in the OCP spec and is decoded as NaN here.
* E2M1 codes are 4 bits (sign, 2 exponent bits, 1 mantissa bit); magnitudes
  0, 0.5, 1, 1.5, 2, 3, 4, 6. Two codes per byte, the LOW nibble holds the
  even K index, the high nibble the odd one.
* Tensors are stored as ``blocks`` uint8 [..., N, K/32, 16] and ``scales``
  uint8 [..., N, K/32] — the weight is [N, K] in nn.Linear (out, in) order.

Verified against public sources (read through the code-search tool, 2026-11):

* openai/gpt-oss ``gpt_oss/torch/weights.py``: ``FP4_VALUES`` is exactly
  :data:`E2M1_VALUES` (codes 0-7 positive, 8-15 the same magnitudes negated,
  code 8 = -0.0); ``_get_mxfp4_tensor`` writes ``lut[blk & 0x0F]`` to the even
  positions and ``lut[blk >> 4]`` to the odd ones (low nibble first), and
  applies ``ldexp(value, scale - 127)``; blocks are ``[*prefix, G, 16]`` with
  scales ``[*prefix, G]`` and the dequantized tensor is ``[*prefix, G*32]``.
* The same decode appears in huggingface/transformers
  ``models/gpt_oss/convert_gpt_oss_weights_to_hf.py`` (``convert_moe_packed_tensors``),
  which copies ``*.blocks``/``*.scales`` into the HF checkpoint unchanged.
* openai/gpt-oss ``gpt_oss/torch/model.py``: ``mlp1_weight`` is
  [E, 2*I, H] and ``mlp2_weight`` [E, H, I] (einsum ``"beck,bk->bec"``), i.e.
  the packed K axis is the input (reduction) axis of each expert GEMM.

Quantizers choose the smallest shared exponent for which the block maximum
fits the element format without saturation, ``e = ceil(log2(amax / elem_max))``
— the same "scale = amax / elem_max, rounded up to a power of two" rule that
the TensorRT-LLM/FlashInfer MX quantizers implement (``cvt.rp`` to ue8m0), so
emulated activation quantization matches what those kernels do on device.
Element rounding is round-to-nearest, ties to even.
"""

from __future__ import annotations

import torch

from oracle.errors import KernelInputError

__all__ = [
    "E2M1_VALUES",
    "E2M1_MAX",
    "E4M3_MAX",
    "MX_BLOCK",
    "unpack_fp4",
    "pack_fp4",
    "e8m0_to_float",
    "dequantize_mxfp4",
    "quantize_mxfp4",
    "fake_quant_mxfp8",
    "fake_quant_fp8_per_tensor",
    "fake_quant_fp8_per_token",
    "fake_quant_mxfp4",
]

MX_BLOCK = 32
"""Values sharing one E8M0 scale (OCP MX block size)."""

E2M1_VALUES: tuple[float, ...] = (
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
)
"""E2M1 value of each 4-bit code (bit 3 = sign)."""

E2M1_MAX = 6.0
E4M3_MAX = 448.0
_E8M0_BIAS = 127
_E8M0_NAN = 255

# Decision points between consecutive positive E2M1 magnitudes (midpoints).
# Entry i separates code i from code i+1; a tie goes to the even code, so a
# value exactly on the midpoint moves up only when code i+1 is even.
_E2M1_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def _lut(values, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def unpack_fp4(blocks: torch.Tensor) -> torch.Tensor:
    """Split packed bytes [..., K/2] into 4-bit codes uint8 [..., K] (low nibble first)."""
    if blocks.dtype != torch.uint8:
        raise KernelInputError("blocks", "uint8 (two E2M1 codes per byte)", blocks.dtype,
                               "pass the checkpoint's *_blocks tensor unchanged")
    lo = blocks & 0x0F
    hi = blocks >> 4
    return torch.stack((lo, hi), dim=-1).flatten(-2)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`unpack_fp4`: codes uint8 [..., K] (K even) -> bytes [..., K/2]."""
    if codes.shape[-1] % 2:
        raise KernelInputError("codes", "an even number of codes on the last axis",
                               tuple(codes.shape), "pad K to a multiple of 32")
    pairs = codes.to(torch.uint8).unflatten(-1, (-1, 2))
    return (pairs[..., 0] & 0x0F) | ((pairs[..., 1] & 0x0F) << 4)


def e8m0_to_float(scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode E8M0 bytes to 2**(s-127) (255 -> NaN).

    A 256-entry table built in float64 keeps 2**-127 exact (a float32 subnormal)
    on every device instead of trusting exp2 on subnormals.
    """
    if scales.dtype != torch.uint8:
        raise KernelInputError("scales", "uint8 (E8M0 exponents)", scales.dtype,
                               "pass the checkpoint's *_scales tensor unchanged")
    table = torch.ldexp(torch.ones(256, dtype=torch.float64),
                        torch.arange(256, dtype=torch.float64) - _E8M0_BIAS)
    table[_E8M0_NAN] = float("nan")
    return table.to(device=scales.device, dtype=dtype)[scales.long()]


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """blocks uint8 [..., N, K/32, 16] + scales uint8 [..., N, K/32] -> [..., N, K].

    Computed in float32 (float64 when asked for float64) and cast at the end:
    every E2M1 value times a power of two is exact there, so the result is the
    correctly rounded value in ``dtype``.
    """
    if blocks.dim() < 2 or blocks.shape[-1] != MX_BLOCK // 2:
        raise KernelInputError("blocks", f"[..., K/32, {MX_BLOCK // 2}] uint8",
                               tuple(blocks.shape), "pass the checkpoint's *_blocks tensor")
    if tuple(scales.shape) != tuple(blocks.shape[:-1]):
        raise KernelInputError("scales", f"shape {tuple(blocks.shape[:-1])} (blocks without the last axis)",
                               tuple(scales.shape), "pair each *_blocks with its own *_scales")
    work = torch.float64 if dtype == torch.float64 else torch.float32
    codes = unpack_fp4(blocks)                                   # [..., N, G, 32]
    values = _lut(E2M1_VALUES, blocks.device, work)[codes.long()]
    values = values * e8m0_to_float(scales, work).unsqueeze(-1)
    return values.flatten(-2).to(dtype)


def _shared_exponent(amax: torch.Tensor, elem_max: float) -> torch.Tensor:
    """Smallest integer e in [-127, 127] with amax / 2**e <= elem_max (0 for amax == 0).

    log2 gives a first guess; one exact float64 check in each direction fixes
    any rounding of the logarithm, so the result does not depend on libm.
    """
    a = amax.to(torch.float64)
    safe = torch.where(a > 0, a, torch.ones_like(a))
    e = torch.ceil(torch.log2(safe / elem_max))
    e = torch.where(safe / torch.exp2(e) > elem_max, e + 1, e)
    e = torch.where(safe / torch.exp2(e - 1) <= elem_max, e - 1, e)
    e = torch.where(a > 0, e, torch.zeros_like(e))
    return e.clamp(-_E8M0_BIAS, _E8M0_BIAS)


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise KernelInputError(name, "finite (no inf/NaN)", "non-finite values",
                               "fix the upstream computation; MX scales cannot encode inf")


def _blocked(name: str, x: torch.Tensor) -> torch.Tensor:
    """View [..., K] as [..., K/32, 32]; K must be a multiple of the MX block."""
    if x.dim() == 0 or x.shape[-1] % MX_BLOCK:
        raise KernelInputError(name, f"a last axis that is a multiple of {MX_BLOCK}",
                               tuple(x.shape), "pad K (hidden / intermediate size) to a multiple of 32")
    if not x.is_floating_point():
        raise KernelInputError(name, "a floating-point tensor", x.dtype, "convert to float32 or bfloat16")
    return x.unflatten(-1, (-1, MX_BLOCK))


def _round_e2m1_codes(scaled: torch.Tensor) -> torch.Tensor:
    """Round |scaled| <= 6 to the nearest E2M1 code (ties to even), sign in bit 3."""
    mag = scaled.abs()
    code = torch.zeros(scaled.shape, dtype=torch.uint8, device=scaled.device)
    for i, mid in enumerate(_E2M1_MIDPOINTS):
        up_on_tie = (i + 1) % 2 == 0
        code += (mag >= mid if up_on_tie else mag > mid).to(torch.uint8)
    return code | (torch.signbit(scaled).to(torch.uint8) << 3)


def quantize_mxfp4(w: torch.Tensor, *, name: str = "w") -> tuple[torch.Tensor, torch.Tensor]:
    """w float [..., N, K] -> (blocks uint8 [..., N, K/32, 16], scales uint8 [..., N, K/32]).

    Per 32-block the exponent is the smallest one for which the block maximum
    fits in E2M1 (<= 6) — nothing saturates — then each value is rounded to the
    nearest E2M1 code, ties to even. Values already representable with a shared
    exponent whose block contains a +-6 code come back bit-identical.
    """
    x = _blocked(name, w)
    _check_finite(name, w)
    work = torch.float64 if w.dtype == torch.float64 else torch.float32
    x = x.to(work)
    e = _shared_exponent(x.abs().amax(dim=-1), E2M1_MAX)         # [..., N, G]
    scaled = x / torch.exp2(e).to(work).unsqueeze(-1)
    codes = _round_e2m1_codes(scaled)                            # [..., N, G, 32]
    blocks = pack_fp4(codes)                                     # [..., N, G, 16]
    scales = (e + _E8M0_BIAS).to(torch.uint8)
    return blocks.contiguous(), scales.contiguous()


def _fp8_round(x: torch.Tensor) -> torch.Tensor:
    """Round to float8_e4m3fn and back, saturating at +-448 (torch on CUDA may give NaN)."""
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(x.dtype)


def fake_quant_mxfp8(x: torch.Tensor) -> torch.Tensor:
    """Emulate MXFP8 activation quantization: e4m3 values, one E8M0 scale per 32 along the last axis.

    Returns dequantized values in ``x.dtype`` (computed in float32/float64), so
    a GEMM on the result sees exactly what an MXFP8 kernel sees.
    """
    blocks = _blocked("x", x)
    _check_finite("x", x)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    blocks = blocks.to(work)
    scale = torch.exp2(_shared_exponent(blocks.abs().amax(dim=-1), E4M3_MAX)).to(work).unsqueeze(-1)
    return (_fp8_round(blocks / scale) * scale).flatten(-2).to(x.dtype)


def fake_quant_fp8_per_tensor(x: torch.Tensor, scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """Emulate FP8 e4m3 per-tensor quantization: q = sat(round(x / scale)), returns q * scale.

    ``scale=None`` is the dynamic variant (scale = amax / 448, so the largest
    value maps to 448 exactly); a given scale is the static variant and values
    beyond 448 * scale saturate as in the kernels.
    """
    if not x.is_floating_point():
        raise KernelInputError("x", "a floating-point tensor", x.dtype, "convert to float32 or bfloat16")
    _check_finite("x", x)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(work)
    if scale is None:
        amax = xf.abs().amax() if xf.numel() else torch.zeros((), dtype=work, device=x.device)
        s = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    else:
        s = torch.as_tensor(scale, dtype=work, device=x.device)
        if s.numel() != 1 or not bool(s.reshape(()) > 0) or not bool(torch.isfinite(s).all()):
            raise KernelInputError("scale", "one positive finite number", scale,
                                   "pass None for a dynamic scale")
        s = s.reshape(())
    return (_fp8_round(xf / s) * s).to(x.dtype)


def fake_quant_fp8_per_token(x: torch.Tensor) -> torch.Tensor:
    """Emulate dynamic FP8 e4m3 per-token quantization: one scale per row (last axis), amax / 448.

    A row of zeros keeps scale 1 (it quantizes to zeros).  Returns ``q * scale`` in ``x.dtype``.
    """
    if not x.is_floating_point() or x.dim() == 0:
        raise KernelInputError("x", "a floating-point tensor with a last (hidden) axis", x.dtype,
                               "convert to float32 or bfloat16")
    _check_finite("x", x)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(work)
    if xf.shape[-1] == 0:
        return x.clone()
    amax = xf.abs().amax(dim=-1, keepdim=True)
    s = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    return (_fp8_round(xf / s) * s).to(x.dtype)


def fake_quant_mxfp4(x: torch.Tensor) -> torch.Tensor:
    """Emulate MXFP4 activation quantization: E2M1 values, one E8M0 scale per 32 along the last axis.

    The same rule as the weight quantizer (:func:`quantize_mxfp4`: smallest shared
    exponent that does not saturate, round to nearest E2M1, ties to even), then
    dequantized back to ``x.dtype``.
    """
    blocks, scales = quantize_mxfp4(x, name="x")
    return dequantize_mxfp4(blocks, scales, torch.float64 if x.dtype == torch.float64 else torch.float32
                            ).to(x.dtype)
