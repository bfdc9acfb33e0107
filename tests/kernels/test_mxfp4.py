"""MXFP4 / MXFP8 / FP8 format helpers: pinned against hand-written bytes and exact bounds."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle.errors import KernelInputError
from oracle.kernels.mxfp4 import (
    E2M1_VALUES,
    dequantize_mxfp4,
    e8m0_to_float,
    fake_quant_fp8_per_tensor,
    fake_quant_mxfp8,
    pack_fp4,
    quantize_mxfp4,
    unpack_fp4,
)


def test_e2m1_table_matches_ocp_encoding():
    # Decode each 4-bit code from first principles: s | e1 e0 | m, bias 1, subnormal at e == 0.
    for code in range(16):
        sign = -1.0 if code & 8 else 1.0
        exp, man = (code >> 1) & 3, code & 1
        mag = man * 0.5 if exp == 0 else (1 + man / 2) * 2.0 ** (exp - 1)
        assert E2M1_VALUES[code] == sign * mag
        assert math.copysign(1.0, E2M1_VALUES[code]) == sign  # code 8 is -0.0
    assert E2M1_VALUES[:8] == (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def test_unpack_low_nibble_first():
    blocks = torch.tensor([[0x21, 0xF7, 0x80]], dtype=torch.uint8)
    assert unpack_fp4(blocks).tolist() == [[1, 2, 7, 15, 0, 8]]
    assert pack_fp4(unpack_fp4(blocks)).tolist() == blocks.tolist()


def test_dequantize_hand_bytes():
    blocks = torch.zeros(2, 1, 16, dtype=torch.uint8)
    blocks[0, 0, 0] = 0x21          # K0 = code 1 (0.5), K1 = code 2 (1.0)
    blocks[0, 0, 15] = 0xF7         # K30 = code 7 (6.0), K31 = code 15 (-6.0)
    blocks[1, 0, 0] = 0x9B          # K0 = code 11 (-1.5), K1 = code 9 (-0.5)
    scales = torch.tensor([[127], [129]], dtype=torch.uint8)  # 2**0 and 2**2
    out = dequantize_mxfp4(blocks, scales)
    assert out.shape == (2, 32)
    assert out[0, :2].tolist() == [0.5, 1.0] and out[0, 30:].tolist() == [6.0, -6.0]
    assert out[0, 2:30].abs().sum() == 0
    assert out[1, :2].tolist() == [-6.0, -2.0]
    assert dequantize_mxfp4(blocks, scales, torch.bfloat16).dtype == torch.bfloat16


def test_e8m0_extremes():
    s = e8m0_to_float(torch.tensor([0, 1, 126, 127, 128, 254, 255], dtype=torch.uint8))
    assert s[:6].tolist() == [2.0 ** -127, 2.0 ** -126, 0.5, 1.0, 2.0, 2.0 ** 127]
    assert math.isnan(s[6])


def test_dequantize_leading_dims_and_shape_errors():
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (3, 5, 2, 16), generator=g, dtype=torch.uint8)
    scales = torch.randint(120, 130, (3, 5, 2), generator=g, dtype=torch.uint8)
    full = dequantize_mxfp4(blocks, scales)
    assert full.shape == (3, 5, 64)
    assert torch.equal(full[1, 4, 32:], dequantize_mxfp4(blocks[1, 4, 1:], scales[1, 4, 1:]).flatten())
    with pytest.raises(KernelInputError) as err:
        dequantize_mxfp4(blocks, scales[:, :, :1])
    assert err.value.tensor == "scales"
    with pytest.raises(KernelInputError) as err:
        dequantize_mxfp4(blocks.float(), scales)
    assert err.value.tensor == "blocks"


def _on_grid_blocks(seed: int, shape=(4, 6, 3)):
    """Random codes/scales where every block holds a +-6 code, so the chosen scale must be the same."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (*shape, 32), generator=g, dtype=torch.uint8)
    pos = torch.randint(0, 32, shape, generator=g)
    sign = torch.randint(0, 2, shape, generator=g, dtype=torch.uint8) << 3
    codes.scatter_(-1, pos.unsqueeze(-1), (7 | sign).unsqueeze(-1))
    scales = torch.randint(100, 160, shape, generator=g, dtype=torch.uint8)
    return pack_fp4(codes), scales


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_round_trip_is_bit_exact_on_grid(dtype):
    blocks, scales = _on_grid_blocks(seed=1)
    w = dequantize_mxfp4(blocks, scales, dtype)
    b2, s2 = quantize_mxfp4(w)
    assert torch.equal(s2, scales)
    assert torch.equal(b2, blocks)  # including -0.0 (code 8)


def test_round_trip_exact_values_when_block_max_is_small():
    # Block max 1.5: the quantizer picks a 4x finer scale, values must still come back exactly.
    w = torch.tensor([1.5, -1.0, 0.5, 0.0] * 8).reshape(1, 32)
    b, s = quantize_mxfp4(w)
    assert s.item() == 127 - 2
    assert torch.equal(dequantize_mxfp4(b, s), w)


def test_ties_round_to_even():
    mids = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    expect = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    row = torch.tensor(mids + [-m for m in mids] + [6.0] + [0.0] * 17).reshape(1, 32)
    b, s = quantize_mxfp4(row)
    assert s.item() == 127
    out = dequantize_mxfp4(b, s)[0]
    assert out[:7].tolist() == expect
    assert out[7:14].tolist() == [-v for v in expect]


def test_scale_is_smallest_that_fits():
    row = torch.zeros(3, 32)
    row[0, 0], row[1, 0], row[2, 0] = 6.0, 6.0001, 12.0
    _, s = quantize_mxfp4(row)
    assert s.flatten().tolist() == [127, 128, 128]
    zero_b, zero_s = quantize_mxfp4(torch.zeros(1, 32))
    assert torch.equal(dequantize_mxfp4(zero_b, zero_s), torch.zeros(1, 32))


def test_quantize_rejects_bad_inputs():
    with pytest.raises(KernelInputError) as err:
        quantize_mxfp4(torch.zeros(2, 48))
    assert err.value.tensor == "w"
    with pytest.raises(KernelInputError):
        quantize_mxfp4(torch.full((1, 32), float("inf")))


_finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.data())
def test_quantization_error_within_mxfp4_bound(rows, groups, data):
    vals = data.draw(st.lists(_finite, min_size=rows * groups * 32, max_size=rows * groups * 32))
    x = torch.tensor(vals, dtype=torch.float32).reshape(rows, groups * 32)
    b, s = quantize_mxfp4(x)
    y = dequantize_mxfp4(b, s)
    xb, yb = x.reshape(rows, groups, 32).double(), y.reshape(rows, groups, 32).double()
    amax = xb.abs().amax(-1, keepdim=True)
    scale = e8m0_to_float(s, torch.float64).unsqueeze(-1)
    # Scale choice: smallest power of two with amax / scale <= 6 (so > 3 unless amax underflows).
    assert bool((amax <= 6 * scale).all())
    assert bool(((amax > 3 * scale) | (amax == 0) | (scale == 2.0 ** -127)).all())
    # Element error: half the E2M1 gap at that magnitude = max(scale/4, |x|/4).
    bound = torch.maximum(scale / 4, xb.abs() / 4)
    assert bool(((yb - xb).abs() <= bound).all())
    # Nearest grid point: no representable value in this block is closer.
    grid = torch.tensor(E2M1_VALUES, dtype=torch.float64) * scale.unsqueeze(-1)
    best = (xb.unsqueeze(-1) - grid).abs().amin(-1)
    assert torch.equal((yb - xb).abs(), best)


def test_fake_quant_mxfp8_properties():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 96, generator=g) * torch.logspace(-3, 3, 96)
    q = fake_quant_mxfp8(x)
    assert q.dtype == x.dtype and q.shape == x.shape
    assert torch.equal(fake_quant_mxfp8(q), q)            # idempotent
    xb, qb = x.reshape(5, 3, 32), q.reshape(5, 3, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    scale = torch.exp2(torch.ceil(torch.log2(amax / 448)))
    # Values are e4m3 numbers times the block scale, and nothing saturates.
    assert torch.equal((qb / scale).to(torch.float8_e4m3fn).float(), qb / scale)
    qmax = qb.abs().amax(-1, keepdim=True)
    assert bool((qmax <= 448 * scale).all()) and bool((qmax >= 224 * scale).all())  # smallest fitting scale
    normal = (xb / scale).abs() >= 2.0 ** -6
    assert bool(((qb - xb).abs() <= xb.abs() * 2.0 ** -4)[normal].all())  # 3 mantissa bits
    with pytest.raises(KernelInputError):
        fake_quant_mxfp8(torch.zeros(2, 33))


def test_fake_quant_mxfp8_hand_values():
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 1], x[0, 2] = 500.0, 17.0, 1.0
    q = fake_quant_mxfp8(x)
    # amax 500 -> scale 2 (500/2 = 250 <= 448); 250 rounds to 256 (e4m3 spacing 16 in [128, 256)),
    # 17/2 = 8.5 is a tie between 8 and 9 and goes to the even mantissa, 8.
    assert q[0, :3].tolist() == [512.0, 16.0, 1.0]


def test_fake_quant_fp8_per_tensor():
    x = torch.tensor([[1.0, -2.0, 100.0, 0.3]])
    dyn = fake_quant_fp8_per_tensor(x)
    assert dyn[0, 2].item() == pytest.approx(100.0, rel=1e-6)  # amax maps to 448 exactly
    stat = fake_quant_fp8_per_tensor(x, 0.1)                      # 100/0.1 = 1000 saturates at 448
    assert stat[0, 2].item() == pytest.approx(44.8, rel=1e-6)
    assert stat[0, 0].item() == pytest.approx(1.0, rel=1e-6)
    assert stat[0, 3].item() == pytest.approx(0.3, rel=2 ** -4)
    assert torch.equal(fake_quant_fp8_per_tensor(torch.zeros(3)), torch.zeros(3))
    with pytest.raises(KernelInputError) as err:
        fake_quant_fp8_per_tensor(x, -1.0)
    assert err.value.tensor == "scale"
