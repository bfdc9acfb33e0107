"""Reference MoE: against a float64 per-token loop, and against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from oracle.errors import ConfigError, KernelInputError
from oracle.kernels.checkpoint import MoEWeights, random_gpt_oss_layer
from oracle.kernels.reference import (
    GPT_OSS_SWIGLU,
    SILU_SWIGLU,
    ActivationSpec,
    moe_reference,
    moe_reference_naive_f64,
)

E, H, I, K = 4, 64, 64, 2


def _routing(m: int, seed: int, k: int = K):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(m)])
    weights = torch.softmax(torch.randn(m, k, generator=g), dim=-1)
    return ids, weights


def _hidden(m: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, H, generator=g) * 2).to(dtype)  # x2 pushes some pre-activations past the clamp


def _assert_close_to_naive(got: torch.Tensor, want: torch.Tensor, act_quant: str | None) -> None:
    """float32 vs float64 agree to ~1e-6 of the output scale.

    With activation quantization one intermediate value can sit on a rounding
    boundary and round the other way in float32 (one e4m3 step); that moves one
    token's row by up to a few 1e-2. So: every row within 5e-2, and all rows but
    at most one within 2e-6 — a missing or wrong quantization step moves every row.
    """
    scale = float(want.abs().max())
    row_err = (got.double() - want).abs().amax(dim=1) / scale
    assert float(row_err.max()) <= (2e-6 if act_quant is None else 5e-2), row_err
    assert int((row_err > 2e-6).sum()) <= (0 if act_quant is None else 1), row_err


@pytest.mark.parametrize("m", [1, 3, 8])
@pytest.mark.parametrize("activation", [GPT_OSS_SWIGLU, SILU_SWIGLU], ids=["swiglu_oai", "swiglu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("act_quant", [None, "mxfp8", "fp8_per_tensor"])
def test_matches_float64_loop(m, activation, bias, act_quant):
    w = random_gpt_oss_layer(E, H, I, seed=10 + m, bias=bias)
    x = _hidden(m, seed=m)
    ids, tw = _routing(m, seed=100 + m)
    got = moe_reference(x, w, ids, tw, activation=activation, act_quant=act_quant)
    want = moe_reference_naive_f64(x, w, ids, tw, activation=activation, act_quant=act_quant)
    assert got.dtype == torch.float32 and got.shape == (m, H)
    _assert_close_to_naive(got, want, act_quant)


def test_quantized_activations_change_the_result():
    # Guards against act_quant being silently ignored by both implementations.
    w = random_gpt_oss_layer(E, H, I, seed=5)
    x, (ids, tw) = _hidden(8, seed=5), _routing(8, seed=5)
    plain = moe_reference(x, w, ids, tw)
    for mode in ("mxfp8", "fp8_per_tensor"):
        diff = float((moe_reference(x, w, ids, tw, act_quant=mode) - plain).abs().max())
        assert 1e-4 < diff < 0.1 * float(plain.abs().max()), mode


def test_static_fp8_scales_match_naive_and_saturate():
    w = random_gpt_oss_layer(E, H, I, seed=6)
    x, (ids, tw) = _hidden(3, seed=6), _routing(3, seed=6)
    scales = (float(x.abs().max()) / 448, 0.01)  # 0.01 saturates activations above 4.48
    got = moe_reference(x, w, ids, tw, act_quant="fp8_per_tensor", act_scales=scales)
    want = moe_reference_naive_f64(x, w, ids, tw, act_quant="fp8_per_tensor", act_scales=scales)
    _assert_close_to_naive(got, want, "fp8_per_tensor")
    dynamic = moe_reference(x, w, ids, tw, act_quant="fp8_per_tensor")
    assert not torch.allclose(got, dynamic)


def test_bf16_in_bf16_out_and_duplicate_experts():
    w = random_gpt_oss_layer(E, H, I, seed=7)
    x = _hidden(4, seed=7, dtype=torch.bfloat16)
    ids = torch.tensor([[0, 0], [1, 2], [3, 3], [2, 1]])
    tw = torch.tensor([[0.25, 0.75], [0.5, 0.5], [1.0, 1.0], [0.9, 0.1]], dtype=torch.bfloat16)
    got = moe_reference(x, w, ids, tw)
    assert got.dtype == torch.bfloat16
    want = moe_reference_naive_f64(x, w, ids, tw)
    assert torch.allclose(got.double(), want, rtol=1e-2, atol=1e-2 * float(want.abs().max()))
    # Token 0 sends both slots to expert 0: that is expert 0 with weight 1.0.
    single = moe_reference(x[:1].float(), w, torch.tensor([[0]]), torch.tensor([[1.0]]))
    assert torch.allclose(moe_reference(x[:1].float(), w, ids[:1], tw[:1].float()), single, atol=1e-5)


def test_unrouted_experts_are_never_read():
    w = random_gpt_oss_layer(E, H, I, seed=8)
    poisoned = w.w13_scales.clone()
    poisoned[1:] = 255  # E8M0 NaN in every expert but 0
    w_bad = MoEWeights(w.w13_blocks, poisoned, w.w13_bias, w.w2_blocks, w.w2_scales, w.w2_bias)
    x = _hidden(3, seed=8)
    ids, tw = torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1)
    out = moe_reference(x, w_bad, ids, tw)
    assert torch.isfinite(out).all()
    assert torch.equal(out, moe_reference(x, w, ids, tw))
    # Routed to a poisoned expert: refused by default (one policy with the kernels), NaN rows
    # only when the value check is switched off.
    with pytest.raises(KernelInputError) as err:
        moe_reference(x, w_bad, ids + 1, tw)
    assert err.value.tensor == "w13_scales"
    assert torch.isnan(moe_reference(x, w_bad, ids + 1, tw, check_finite=False)).all()


def test_empty_batch():
    w = random_gpt_oss_layer(E, H, I, seed=9)
    out = moe_reference(torch.zeros(0, H), w, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2))
    assert out.shape == (0, H)


# --------------------------------------------------------------------------- hand-computed values


def _oai(gate: float, up: float, alpha=1.702, limit=7.0) -> float:
    g, u = min(gate, limit), max(-limit, min(up, limit))
    return (u + 1) * g / (1 + math.exp(-alpha * g))


def test_gpt_oss_swiglu_hand_values():
    # Interleaved [g0, u0, g1, u1, ...]; covers both clamps and negative gates.
    pairs = [(0.5, 0.25), (8.0, -9.0), (-3.0, 2.0), (7.0, 7.5), (-20.0, -20.0), (0.0, 3.0)]
    gate_up = torch.tensor([v for p in pairs for v in p], dtype=torch.float64)
    got = GPT_OSS_SWIGLU(gate_up).tolist()
    hand = [
        0.5 * 1.25 / (1 + math.exp(-0.851)),          # no clamp
        7.0 * -6.0 / (1 + math.exp(-11.914)),         # gate 8 -> 7, up -9 -> -7
        -3.0 * 3.0 / (1 + math.exp(5.106)),           # negative gate is not clamped
        7.0 * 8.0 / (1 + math.exp(-11.914)),          # up 7.5 -> 7
        -20.0 * -6.0 / (1 + math.exp(34.04)),         # up -20 -> -7; gate passes through
        0.0,
    ]
    assert got == pytest.approx(hand, rel=1e-12, abs=1e-300)
    assert got == pytest.approx([_oai(g, u) for g, u in pairs], rel=1e-12, abs=1e-300)


def test_plain_swiglu_uses_halves():
    gate_up = torch.tensor([1.0, -2.0, 3.0, 4.0], dtype=torch.float64)  # gate [1, -2], up [3, 4]
    got = SILU_SWIGLU(gate_up).tolist()
    assert got == pytest.approx([1 / (1 + math.exp(-1)) * 3, -2 / (1 + math.exp(2)) * 4], rel=1e-12)


def test_activation_spec_validation():
    assert ActivationSpec("swiglu_oai") == GPT_OSS_SWIGLU
    assert ActivationSpec("swiglu_oai", limit=math.inf)(torch.tensor([100.0, 100.0])).item() == pytest.approx(
        101 * 100.0)
    with pytest.raises(ConfigError) as err:
        ActivationSpec("gelu")
    assert err.value.path == "activation.kind"
    with pytest.raises(ConfigError) as err:
        ActivationSpec("swiglu", limit=7.0)
    assert err.value.path == "activation.limit"


def _one_hot_layer(activation: ActivationSpec) -> MoEWeights:
    """H = I = 32, one expert: gate_j = x_j (+ bias), up_j = 0 (+ bias), down = identity.

    Every weight is 0 or 1, so MXFP4 holds it exactly and the layer output is
    the activation itself — a check of row interleaving and orientation that
    does not share code with the dequantizer's consumers.
    """
    n = 32
    w13 = torch.zeros(1, 2 * n, n)
    gate_rows = torch.arange(n) * 2 if activation.interleaved else torch.arange(n)
    w13[0, gate_rows, torch.arange(n)] = 1.0
    b13 = torch.zeros(1, 2 * n)
    up_rows = gate_rows + (1 if activation.interleaved else n)
    b13[0, up_rows] = torch.linspace(-9, 9, n)  # up values, some beyond the clamp
    w2 = torch.eye(n).unsqueeze(0)
    b2 = torch.full((1, n), 0.5)
    return MoEWeights.from_dense(w13, w2, b13, b2)


@pytest.mark.parametrize("activation", [GPT_OSS_SWIGLU, SILU_SWIGLU], ids=["swiglu_oai", "swiglu"])
def test_layer_hand_values(activation):
    w = _one_hot_layer(activation)
    x = torch.linspace(-10, 10, 32).unsqueeze(0)
    out = moe_reference(x, w, torch.tensor([[0]]), torch.tensor([[0.75]]), activation=activation)[0].tolist()
    ups = torch.linspace(-9, 9, 32).tolist()
    for j, (g, u) in enumerate(zip(x[0].tolist(), ups)):
        act = _oai(g, u) if activation.kind == "swiglu_oai" else g / (1 + math.exp(-g)) * u
        assert out[j] == pytest.approx(0.75 * (act + 0.5), rel=1e-5, abs=1e-5), j


def test_input_errors_name_the_tensor():
    w = random_gpt_oss_layer(E, H, I, seed=1)
    x, (ids, tw) = _hidden(2, seed=1), _routing(2, seed=1)
    cases = {
        "hidden": (torch.zeros(2, H + 32), ids, tw),
        "topk_ids": (x, ids + E, tw),
        "topk_weights": (x, ids, tw[:, :1]),
    }
    for name, args in cases.items():
        with pytest.raises(KernelInputError) as err:
            moe_reference(*args[:1], w, *args[1:])
        assert err.value.tensor == name
    with pytest.raises(KernelInputError) as err:
        moe_reference(x, w, ids.float(), tw)
    assert err.value.tensor == "topk_ids"
    with pytest.raises(ConfigError) as err:
        moe_reference(x, w, ids, tw, act_quant="nvfp4")
    assert err.value.path == "act_quant"
    with pytest.raises(ConfigError):
        moe_reference(x, w, ids, tw, act_quant="mxfp8", act_scales=(1.0, 1.0))
