"""HUMMING adapter: pure pieces on the CPU (routing metadata, activation expression, options);
the kernels themselves on a GPU with humming-kernels installed."""

import importlib.util

import pytest

torch = pytest.importorskip("torch")

import oracle.keys as K  # noqa: E402
from oracle.errors import KernelInputError  # noqa: E402
from oracle.kernels import adapters as A  # noqa: E402
from oracle.kernels import humming as HM  # noqa: E402
from oracle.kernels.checkpoint import random_gpt_oss_layer  # noqa: E402
from oracle.kernels.reference import GPT_OSS_SWIGLU, SILU_SWIGLU, ActivationSpec, moe_reference  # noqa: E402
from oracle.matrix import MATRIX  # noqa: E402

HAVE_HUMMING = importlib.util.find_spec("humming") is not None


def _naive_align(ids, e, b):
    """The routing metadata written out with Python lists."""
    flat = ids.reshape(-1).tolist()
    n = len(flat)
    sorted_ids, experts = [], []
    for x in range(e):
        rows = [i for i, v in enumerate(flat) if v == x]
        if not rows:
            continue
        pad = -len(rows) % b
        sorted_ids += rows + [n] * pad
        experts += [x] * ((len(rows) + pad) // b)
    return sorted_ids, experts


@pytest.mark.parametrize("m, k, e, b", [(1, 4, 32, 16), (3, 2, 4, 4), (64, 4, 32, 64), (513, 4, 8, 128),
                                        (2048, 4, 32, 64)])
@pytest.mark.parametrize("one_hot", [True, False])
def test_align_routing_matches_a_naive_version(m, k, e, b, one_hot, monkeypatch):
    if not one_hot:
        monkeypatch.setattr(HM, "_ONE_HOT_LIMIT", 0)
    g = torch.Generator().manual_seed(m)
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(m)]).to(torch.int32)
    sorted_ids, expert_ids, ntp = HM.align_routing(ids, e, b)
    want_sorted, want_experts = _naive_align(ids, e, b)
    total = len(want_sorted)
    assert int(ntp) == total and ntp.dtype == torch.int32 and expert_ids.dtype == sorted_ids.dtype == torch.int32
    assert sorted_ids[:total].tolist() == want_sorted
    assert (sorted_ids[total:] == m * k).all()  # sentinel past the padded total
    assert expert_ids[:total // b].tolist() == want_experts
    assert sorted_ids.numel() % b == 0 and sorted_ids.numel() >= total
    assert sorted_ids.numel() == expert_ids.numel() * b


def test_swiglu_expression():
    assert HM.swiglu_expression(GPT_OSS_SWIGLU) == (
        "(fminf(fmaxf(b, -7.0f), 7.0f) + 1.0f) * fminf(a, 7.0f) / (1.0f + __expf(-1.702f * fminf(a, 7.0f)))")
    assert HM.swiglu_expression(SILU_SWIGLU) == "a / (1.0f + __expf(-a)) * b"
    assert "fminf" not in HM.swiglu_expression(ActivationSpec("swiglu_oai", alpha=1.0, limit=float("inf")))


def test_adapter_reads_its_row_and_checks_options():
    ad = A.adapter_for("HUMMING")
    row = MATRIX.by_name["HUMMING"]
    assert ad.row is row and ad.layout == row.layout and ad.mode == "bf16"
    assert (ad.hidden_alignment, ad.intermediate_alignment) == (row.hidden_align, row.intermediate_align)
    assert A.adapter_for("HUMMING", activation_key=K.kFp8DynamicTokenSym).mode == "fp8_per_token"
    assert A.adapter_for("HUMMING", activation_key=K.kFp8StaticTensorSym).mode == "fp8_per_tensor"
    with pytest.raises(KernelInputError) as err:
        A.adapter_for("HUMMING", activation_key=K.kNvfp4Dynamic)
    assert err.value.tensor == "activation_key"
    with pytest.raises(A.KernelUnavailable) as err:  # humming has no SM90 E8M0 group-scale schedule
        A.adapter_for("HUMMING", activation_key=K.kMxfp8Dynamic)
    assert "float8e8m0" in str(err.value)
    for bad in (0, True, 2.5):
        with pytest.raises(KernelInputError):
            A.adapter_for("HUMMING", max_num_tokens=bad)
    assert [HM.HummingAdapter.bucket(m) for m in (1, 2, 3, 16, 17, 2048)] == [1, 2, 4, 16, 32, 2048]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_prepare_without_a_gpu_is_kernel_unavailable():
    with pytest.raises(A.KernelUnavailable):
        A.adapter_for("HUMMING").prepare(random_gpt_oss_layer(2, 128, 128, seed=0))


needs_humming = pytest.mark.skipif(not (HAVE_HUMMING and torch.cuda.is_available()),
                                   reason="needs humming-kernels (pip install 'mxfp4-oracle[humming]') and a GPU")


@needs_humming
@pytest.mark.gpu
@pytest.mark.parametrize("key, act_quant, tol", [(None, None, 1e-2), (K.kFp8DynamicTokenSym, "fp8_per_token", 3e-2),
                                                 (K.kFp8DynamicTensorSym, "fp8_per_tensor", 3e-2)])
def test_humming_matches_the_reference(key, act_quant, tol):
    from oracle.kernels.moe import MoEModule

    e, h, i, k = 8, 256, 256, 2
    w = random_gpt_oss_layer(e, h, i, seed=5, device="cuda")
    ad = A.adapter_for("HUMMING", activation_key=key)
    moe = MoEModule("HUMMING", ad, ad.prepare(w), k)
    g = torch.Generator(device="cuda").manual_seed(1)
    for m in (1, 17):
        x = torch.randn(m, h, device="cuda", generator=g).to(torch.bfloat16)
        ids = torch.stack([torch.randperm(e, device="cuda", generator=g)[:k] for _ in range(m)]).to(torch.int32)
        tw = torch.softmax(torch.randn(m, k, device="cuda", generator=g), -1)
        ref = moe_reference(x.float(), w, ids, tw, act_quant=act_quant).double()
        out = moe(x, ids, tw).double()
        assert float((out - ref).norm() / ref.norm()) < tol
    assert moe.prepared.jit_seconds  # first call of each bucket timed
