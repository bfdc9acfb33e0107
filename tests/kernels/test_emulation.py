"""EMULATION as a backend: dequantize once + BF16 (or float32) GEMMs, with the QDQ of each activation key."""

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

import oracle.keys as K  # noqa: E402
from oracle import LayerSpec  # noqa: E402
from oracle.errors import ConfigError, KernelInputError  # noqa: E402
from oracle.kernels.checkpoint import random_gpt_oss_layer  # noqa: E402
from oracle.kernels.emulation import EmulationMoE  # noqa: E402
from oracle.kernels.moe import EMULATED_ACTIVATIONS, build_moe  # noqa: E402
from oracle.kernels.mxfp4 import fake_quant_fp8_per_token, fake_quant_mxfp4, quantize_mxfp4, dequantize_mxfp4  # noqa: E402
from oracle.kernels.reference import GPT_OSS_SWIGLU, SILU_SWIGLU, moe_reference, moe_reference_naive_f64  # noqa: E402

E, H, I, TOP = 4, 64, 96, 2
KEYS = [(None, None), (K.kMxfp8Dynamic, "mxfp8"), (K.kFp8DynamicTensorSym, "fp8_per_tensor"),
        (K.kFp8StaticTensorSym, "fp8_per_tensor"), (K.kFp8DynamicTokenSym, "fp8_per_token"),
        (K.kMxfp4Dynamic, "mxfp4"), (K.kMxfp4Static, "mxfp4")]


@pytest.fixture(scope="module")
def weights():
    return random_gpt_oss_layer(E, H, I, seed=11)


def inputs(m=5, k=TOP, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, H, generator=g).to(torch.bfloat16)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(m)]).to(torch.int32)
    w = torch.softmax(torch.randn(m, k, generator=g), -1)
    return x, ids, w


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("key, act_quant", KEYS, ids=lambda v: K.canonical_name(v) if not isinstance(v, str) else v)
def test_every_activation_key_matches_the_reference(weights, key, act_quant):
    x, ids, w = inputs()
    moe = build_moe(SimpleNamespace(backend="EMULATION", activation=key), weights, LayerSpec(top_k=TOP))
    assert isinstance(moe, EmulationMoE) and moe.act_quant == act_quant
    ref = moe_reference(x.float(), weights, ids, w, act_quant=act_quant)
    out = moe(x, ids, w)
    assert out.dtype == torch.bfloat16 and out.shape == (5, H)
    assert rel(out, ref) < 2.5e-2  # BF16 GEMM inputs (and the MXFP4 QDQ of bf16-rounded products)
    # float32 GEMMs: the reference's arithmetic, bit for bit
    exact = build_moe(SimpleNamespace(backend="EMULATION", activation=key), weights, None,
                      compute_dtype=torch.float32)
    torch.testing.assert_close(exact(x.float(), ids, w), ref.float(), rtol=0, atol=0)


@pytest.mark.parametrize("act_quant", [None, "fp8_per_token", "mxfp4"])
def test_reference_agrees_with_the_naive_float64_loop(weights, act_quant):
    x, ids, w = inputs(m=3, seed=4)
    ref = moe_reference(x.float(), weights, ids, w, act_quant=act_quant)
    naive = moe_reference_naive_f64(x.float(), weights, ids, w, act_quant=act_quant)
    assert rel(ref, naive) < 1e-5


def test_plain_swiglu_and_repeated_experts(weights):
    x, ids, w = inputs()
    ids[:, 1] = ids[:, 0]  # a token routed twice to the same expert gets its output twice
    for act, fn in ((GPT_OSS_SWIGLU, "swiglu_oai"), (SILU_SWIGLU, "swiglu")):
        moe = build_moe(SimpleNamespace(backend="EMULATION", activation=None), weights,
                        LayerSpec(activation_fn=fn), compute_dtype=torch.float32)
        torch.testing.assert_close(moe(x.float(), ids, w), moe_reference(x.float(), weights, ids, w, activation=act),
                                   rtol=0, atol=0)


def test_empty_batch_and_options(weights):
    x, ids, w = inputs()
    moe = build_moe(SimpleNamespace(backend="EMULATION", activation=None), weights, None)
    assert moe(x[:0], ids[:0], w[:0]).shape == (0, H)
    with pytest.raises(KernelInputError) as err:
        build_moe(SimpleNamespace(backend="EMULATION", activation=None), weights, None, compute_dtype=torch.int8)
    assert err.value.tensor == "compute_dtype"
    with pytest.raises(ConfigError):
        build_moe(SimpleNamespace(backend="EMULATION", activation=K.kNvfp4Dynamic), weights, None)
    with pytest.raises(KernelInputError):
        EmulationMoE(weights, GPT_OSS_SWIGLU, act_quant="fp16")
    assert set(EMULATED_ACTIVATIONS.values()) == {"mxfp8", "fp8_per_tensor", "fp8_per_token", "mxfp4"}


def test_activation_quantizers():
    x = torch.randn(3, 64, dtype=torch.float32) * torch.tensor([[1.0], [100.0], [0.0]])
    q = fake_quant_fp8_per_token(x)
    assert torch.equal(q[2], torch.zeros(64))
    for r in range(2):  # each row's max maps to 448 * scale exactly; per-row scales
        assert float(q[r].abs().max()) == pytest.approx(float(x[r].abs().max()), rel=1e-6)
    assert rel(q[:2], x[:2]) < 0.05
    m = fake_quant_mxfp4(x)
    b, s = quantize_mxfp4(x, name="x")
    assert torch.equal(m, dequantize_mxfp4(b, s))
    assert torch.equal(fake_quant_mxfp4(m), m)  # idempotent: representable values come back unchanged
    with pytest.raises(KernelInputError) as err:
        fake_quant_mxfp4(torch.randn(2, 33))
    assert err.value.tensor == "x"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_cuda_matches_reference(weights):
    wc = weights.to("cuda")
    x, ids, w = (t.cuda() for t in inputs(m=33))
    for key, act_quant in KEYS:
        moe = build_moe(SimpleNamespace(backend="EMULATION", activation=key), wc, None)
        ref = moe_reference(x.float(), wc, ids, w, act_quant=act_quant)
        assert rel(moe(x, ids, w), ref) < 2.5e-2


def test_every_key_the_emulation_row_applies_has_a_qdq_here():
    # The matrix says which activation keys EMULATION applies; the kernel must implement each.
    from oracle.kernels.moe import EMULATED_ACTIVATIONS
    from oracle.matrix import MATRIX
    row = MATRIX.by_name["EMULATION"]
    assert row.requested_activations and "any" not in row.requested_activations
    assert set(row.requested_activations) <= set(EMULATED_ACTIVATIONS)
