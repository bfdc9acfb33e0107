"""One input-check policy for every kernel path (adapters, build_moe, the reference).

Values are rejected by default with a KernelInputError naming the tensor: NaN/inf
hidden states, routing weights or biases, an E8M0 scale byte 255 (NaN), expert ids
outside [0, E); ``check_finite=False`` / ``check_expert_ids=False`` opt out.  The
adapters' pre-launch checks run on the CPU with placeholder prepared weights (the
FlashInfer launch itself needs a GPU: these tests check the checks, not the launch).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from oracle import LayerSpec  # noqa: E402
from oracle.errors import ConfigError, KernelInputError  # noqa: E402
from oracle.kernels import adapters as A  # noqa: E402
from oracle.kernels.checkpoint import MoEWeights, random_gpt_oss_layer  # noqa: E402
from oracle.kernels.moe import EmulationMoE, build_moe  # noqa: E402
from oracle.kernels.reference import GPT_OSS_SWIGLU, moe_reference, moe_reference_naive_f64  # noqa: E402

E, H, I, K = 4, 64, 96, 2
NAN, INF = float("nan"), float("inf")
BAD_IDS = {"E": E, "negative": -1, "int32_max": 2 ** 31 - 1}
EMULATION = SimpleNamespace(backend="EMULATION", activation=None)


@pytest.fixture(scope="module")
def weights():
    return random_gpt_oss_layer(E, H, I, seed=3)


def inputs(m=3, k=K):
    g = torch.Generator().manual_seed(m)
    x = torch.randn(m, H, generator=g).to(torch.bfloat16)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(m)]).to(torch.int32)
    w = torch.softmax(torch.randn(m, k, generator=g), -1)
    return x, ids, w


def poisoned(w: MoEWeights, name: str, value) -> MoEWeights:
    fields = {f: getattr(w, f) for f in ("w13_blocks", "w13_scales", "w13_bias", "w2_blocks", "w2_scales", "w2_bias")}
    t = fields[name].clone()
    t[1, 0] = value
    fields[name] = t
    return MoEWeights(**fields)


def cutlass_prepared(device="cpu"):
    return A.PreparedCutlassW4A16(device=torch.device(device), num_experts=E, hidden_size=H, intermediate_size=I,
                                  hidden_pad=128, inter_pad=128, fc1_weights=torch.empty(0),
                                  fc2_weights=torch.empty(0), quant_scales=[], fc1_bias=None, fc2_bias=None,
                                  swiglu={}, activation=GPT_OSS_SWIGLU, max_num_tokens=8)


def humming_fp8_prepared(adapter):
    return A.PreparedCutlassHumming(device=torch.device("cpu"), num_experts=E, hidden_size=H, intermediate_size=I,
                                    hidden_pad=128, inter_pad=128, fc1_weights=torch.empty(0),
                                    fc2_weights=torch.empty(0), quant_scales=[], fc1_bias=None, fc2_bias=None,
                                    swiglu={}, activation=adapter.activation, max_num_tokens=8)


def _fp8_humming_activation():
    """The gated activation FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING's matrix row runs (gpt-oss's when it does)."""
    from oracle.kernels.reference import ActivationSpec
    from oracle.matrix import MATRIX

    fns = MATRIX.by_name["FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING"].activation_fns
    return GPT_OSS_SWIGLU if "swiglu_oai" in fns else ActivationSpec("swiglu")


def sm100_prepared(adapter):
    return A.PreparedFlashInferView(adapter.backend, torch.device("cpu"), E, H, I, 128, 128, {}, GPT_OSS_SWIGLU)


def humming_prepared(adapter):
    from oracle.kernels.humming import PreparedHumming

    return PreparedHumming(device=torch.device("cpu"), num_experts=E, hidden_size=H, intermediate_size=I,
                           hidden_pad=128, inter_pad=128, gemm1=None, gemm2=None, mode=adapter.mode,
                           activation=GPT_OSS_SWIGLU, act_expr="")


# (adapter factory, placeholder prepared weights) for every adapter (FlashInfer, humming-kernels)
ADAPTER_CASES = {
    "humming": (lambda **kw: A.adapter_for("HUMMING", **kw), humming_prepared),
    "cutlass_w4a16": (lambda **kw: A.CutlassW4A16Sm90Adapter(**kw), lambda ad: cutlass_prepared()),
    "cutlass_fp8_humming": (lambda **kw: A.CutlassHummingSm90Adapter(activation=_fp8_humming_activation(), **kw),
                            humming_fp8_prepared),
    "trtllm_bf16": (lambda **kw: A.TrtllmMxfp4Adapter(act="bf16", **kw), sm100_prepared),
    "trtllm_mxfp8": (lambda **kw: A.TrtllmMxfp4Adapter(act="mxfp8", **kw), sm100_prepared),
    "cutlass_mxfp8": (lambda **kw: A.CutlassMxfp8Mxfp4Sm100Adapter(**kw), sm100_prepared),
}
assert {make().backend for make, _ in ADAPTER_CASES.values()} == set(A.ADAPTERS)  # every adapter covered


def _nonfinite(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[1] = value
    return x


# --------------------------------------------------------------------------- adapters: run


@pytest.mark.parametrize("case", sorted(ADAPTER_CASES))
@pytest.mark.parametrize("tensor", ["hidden_states", "topk_weights"])
@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
def test_adapters_reject_non_finite_inputs_before_launch(case, tensor, value):
    make, prep = ADAPTER_CASES[case]
    ad = make()
    p = prep(ad)
    x, ids, w = inputs()
    if tensor == "hidden_states":
        x = _nonfinite(x, value)
    else:
        w = _nonfinite(w, value)
    for call in (ad.check_run_inputs, ad.run):  # run checks before it launches anything
        with pytest.raises(KernelInputError) as err:
            call(p, x, ids, w)
        assert err.value.tensor == tensor
    # the opt-out: the same input passes the checks
    assert make(check_finite=False).check_run_inputs(p, x, ids, w) == (3, K)


@pytest.mark.parametrize("case", sorted(ADAPTER_CASES))
@pytest.mark.parametrize("bad", sorted(BAD_IDS))
def test_adapters_range_check_expert_ids_by_default(case, bad):
    make, prep = ADAPTER_CASES[case]
    ad = make()
    p = prep(ad)
    x, ids, w = inputs()
    ids[1, 0] = BAD_IDS[bad]
    for call in (ad.check_run_inputs, ad.run):
        with pytest.raises(KernelInputError) as err:
            call(p, x, ids, w)
        assert err.value.tensor == "topk_ids" and str(BAD_IDS[bad]) in err.value.got
    assert make(check_expert_ids=False).check_run_inputs(p, x, ids, w) == (3, K)
    both_off = make(check_expert_ids=False, check_finite=False)
    assert both_off.check_run_inputs(p, _nonfinite(x, NAN), ids, w) == (3, K)


@pytest.mark.parametrize("case", sorted(ADAPTER_CASES))
def test_adapters_accept_valid_and_empty_batches(case):
    make, prep = ADAPTER_CASES[case]
    ad = make()
    p = prep(ad)
    assert ad.check_run_inputs(p, *inputs()) == (3, K)
    x, ids, w = inputs()
    assert ad.check_run_inputs(p, x[:0], ids[:0], w[:0]) == (0, K)
    ids[:] = torch.tensor([0, E - 1], dtype=torch.int32)
    assert ad.check_run_inputs(p, x, ids, w) == (3, K)


@pytest.mark.parametrize("case", sorted(ADAPTER_CASES))
def test_adapters_reject_top_k_zero(case):
    make, prep = ADAPTER_CASES[case]
    ad = make()
    x, _, _ = inputs()
    with pytest.raises(KernelInputError) as err:
        ad.check_run_inputs(prep(ad), x, torch.zeros(3, 0, dtype=torch.int32), torch.zeros(3, 0))
    assert err.value.tensor == "topk_ids"


def test_expert_id_helper():
    with pytest.raises(KernelInputError):
        A._check_expert_ids(torch.tensor([[0, 2 ** 31 - 1]], dtype=torch.int32), E)
    A._check_expert_ids(torch.zeros(0, 2, dtype=torch.int32), E)


# --------------------------------------------------------------------------- adapters: prepare / options


@pytest.mark.parametrize("backend", sorted(A.ADAPTERS))
@pytest.mark.parametrize("name, value", [("w13_scales", 255), ("w2_scales", 255), ("w13_bias", NAN),
                                         ("w2_bias", INF)])
def test_prepare_rejects_nan_scales_and_biases_before_touching_a_device(backend, weights, name, value):
    bad = poisoned(weights, name, value)
    with pytest.raises(KernelInputError) as err:
        A.adapter_for(backend).prepare(bad)
    assert err.value.tensor == name
    if not torch.cuda.is_available():  # the opt-out gets past the check, to the missing GPU
        if not A.adapter_for(backend).row.bias:  # ... or to the row's refusal of biases
            with pytest.raises(KernelInputError, match="bias = false"):
                A.adapter_for(backend, check_finite=False).prepare(bad)
        else:
            with pytest.raises(A.KernelUnavailable):
                A.adapter_for(backend, check_finite=False).prepare(bad)


@pytest.mark.parametrize("kwargs, tensor", [
    (dict(max_num_tokens=True), "max_num_tokens"),
    (dict(max_num_tokens=2.5), "max_num_tokens"),
    (dict(check_finite="yes"), "check_finite"),
    (dict(check_expert_ids=1), "check_expert_ids"),
    (dict(use_fused_finalize=None), "use_fused_finalize"),
    (dict(alignment=True), "alignment"),
])
def test_cutlass_adapter_options_are_typed(kwargs, tensor):
    with pytest.raises(KernelInputError) as err:
        A.CutlassW4A16Sm90Adapter(**kwargs)
    assert err.value.tensor == tensor


@pytest.mark.parametrize("backend", sorted(A.ADAPTERS))
def test_every_adapter_takes_the_check_flags(backend):
    ad = A.adapter_for(backend, check_finite=False, check_expert_ids=False)
    assert (ad.check_finite, ad.check_expert_ids) == (False, False)
    assert (A.adapter_for(backend).check_finite, A.adapter_for(backend).check_expert_ids) == (True, True)
    with pytest.raises(KernelInputError):
        A.adapter_for(backend, check_finite=0)


# --------------------------------------------------------------------------- build_moe / EMULATION


@pytest.mark.parametrize("top_k", [0, E + 1, True, 2.0])
def test_build_moe_rejects_top_k_outside_the_experts(weights, top_k):
    for backend in ["EMULATION", *sorted(A.ADAPTERS)]:
        with pytest.raises(KernelInputError) as err:
            build_moe(SimpleNamespace(backend=backend, activation=None), weights, SimpleNamespace(top_k=top_k))
        assert err.value.tensor == "layer.top_k"
    with pytest.raises(KernelInputError):  # LayerSpec cannot know E: top_k > E passes it
        build_moe(EMULATION, weights, LayerSpec(top_k=E + 1))
    with pytest.raises(ConfigError):  # LayerSpec itself refuses 0
        LayerSpec(top_k=0)


def test_build_moe_emulation_follows_the_policy(weights):
    x, ids, w = inputs()
    x = x.float()
    moe = build_moe(EMULATION, weights, LayerSpec(top_k=K))
    assert isinstance(moe, EmulationMoE) and moe.check_finite
    for name, args in (("hidden", (_nonfinite(x, NAN), ids, w)), ("topk_weights", (x, ids, _nonfinite(w, INF)))):
        with pytest.raises(KernelInputError) as err:
            moe(*args)
        assert err.value.tensor == name
    for bad in BAD_IDS.values():
        b = ids.clone()
        b[0, 0] = bad
        for module in (moe, build_moe(EMULATION, weights, None, check_expert_ids=False)):  # ids always checked
            with pytest.raises(KernelInputError) as err:
                module(x, b, w)
            assert err.value.tensor == "topk_ids"
    # weights: refused at build, every expert (as the adapters' prepare)
    for name, value in (("w13_scales", 255), ("w2_bias", NAN)):
        with pytest.raises(KernelInputError) as err:
            build_moe(EMULATION, poisoned(weights, name, value), None)
        assert err.value.tensor == name
    # the opt-out: NaN in, NaN rows out
    off = build_moe(EMULATION, poisoned(weights, "w13_scales", 255), None, check_finite=False)
    out = off(_nonfinite(x, NAN), ids, w)
    assert torch.isnan(out[0]).all()
    with pytest.raises(KernelInputError):
        build_moe(EMULATION, weights, None, check_finite="no")


# --------------------------------------------------------------------------- the reference


@pytest.mark.parametrize("fn", [moe_reference, moe_reference_naive_f64])
def test_reference_rejects_non_finite_values(weights, fn):
    x, ids, w = inputs()
    x = x.float()
    cases = {"hidden": (_nonfinite(x, NAN), ids, w, weights), "topk_weights": (x, ids, _nonfinite(w, -INF), weights)}
    for name, value in (("w13_scales", 255), ("w2_scales", 255), ("w13_bias", NAN), ("w2_bias", INF)):
        cases[name] = (x, torch.ones_like(ids[:, :1]), w[:, :1], poisoned(weights, name, value))  # expert 1
    for name, (xx, ii, ww, wts) in cases.items():
        with pytest.raises(KernelInputError) as err:
            fn(xx, wts, ii, ww)
        assert err.value.tensor == name
        out = fn(xx, wts, ii, ww, check_finite=False)
        assert torch.isnan(out).any() or torch.isinf(out).any(), name
    # a poisoned expert nobody routes to is never read
    fn(x, poisoned(weights, "w13_scales", 255), torch.zeros_like(ids[:, :1]), w[:, :1])


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.complex64, torch.int32])
def test_reference_rejects_float8_and_other_hidden_dtypes(weights, dtype):
    x, ids, w = inputs()
    with pytest.raises(KernelInputError) as err:
        moe_reference(x.float().to(dtype), weights, ids, w)
    assert err.value.tensor == "hidden"
    with pytest.raises(KernelInputError) as err:
        moe_reference(x.float(), weights, ids, w.to(dtype))
    assert err.value.tensor == "topk_weights"


@pytest.mark.parametrize("k", [0, E + 1])
def test_reference_rejects_top_k_outside_1_to_E(weights, k):
    x, _, _ = inputs()
    ids = torch.zeros(3, k, dtype=torch.long)
    with pytest.raises(KernelInputError) as err:
        moe_reference(x.float(), weights, ids, torch.ones(3, k))
    assert err.value.tensor == "topk_ids"
    out = moe_reference(torch.zeros(0, H), weights, torch.zeros(0, K, dtype=torch.long), torch.zeros(0, K))
    assert out.shape == (0, H)  # an empty batch is fine


@pytest.mark.parametrize("scales", [5, "ab", (1.0,), (1.0, 2.0, 3.0), (True, None), (-1.0, None), (NAN, None),
                                    (INF, None), ("a", None), (0, None), (10 ** 400, None), {1: 2}])
def test_reference_act_scales_are_typed(weights, scales):
    x, ids, w = inputs()
    with pytest.raises(KernelInputError) as err:
        moe_reference(x.float(), weights, ids, w, act_quant="fp8_per_tensor", act_scales=scales)
    assert err.value.tensor == "act_scales"
    with pytest.raises(KernelInputError):  # the type comes first, whatever the mode
        moe_reference(x.float(), weights, ids, w, act_scales=scales)


def test_reference_act_scales_valid_forms(weights):
    x, ids, w = inputs()
    for scales in ((0.01, None), [None, 0.02], (1, 2), (torch.tensor(0.01), None)):
        out = moe_reference(x.float(), weights, ids, w, act_quant="fp8_per_tensor", act_scales=scales)
        assert torch.isfinite(out).all()
    with pytest.raises(ConfigError):  # a pair, but for a mode that takes none
        moe_reference(x.float(), weights, ids, w, act_quant="mxfp8", act_scales=(1.0, 1.0))
    with pytest.raises(KernelInputError):
        moe_reference(x.float(), weights, ids, w, check_finite=None)


# --------------------------------------------------------------------------- CUDA graph capture (GPU only)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_value_checks_refuse_cuda_graph_capture_with_a_clear_error():
    x, ids, w = (t.cuda() for t in inputs())
    A._check_values(x, ids, w, E, finite=True, expert_ids=True)  # eager: fine
    g = torch.cuda.CUDAGraph()
    with pytest.raises(KernelInputError) as err:
        with torch.cuda.graph(g):
            A._check_values(x, ids, w, E, finite=True, expert_ids=True)
    assert "capture" in err.value.constraint
    g2 = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g2):  # switched off: nothing to sync, capture works
        A._check_values(x, ids, w, E, finite=False, expert_ids=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("m", [1, 33, 2048])
def test_value_checks_on_cuda_tensors(m):
    """NaN/inf anywhere (first, middle, last element) and out-of-range ids are caught on the device."""
    g = torch.Generator().manual_seed(m)
    x = torch.randn(m, 2880, generator=g).to(torch.bfloat16).cuda()
    ids = torch.randint(0, E, (m, 4), generator=g, dtype=torch.int32).cuda()
    w = torch.softmax(torch.randn(m, 4, generator=g), -1).cuda()
    A._check_values(x, ids, w, E, finite=True, expert_ids=True)
    for value in (NAN, INF, -INF):
        for pos in (0, x.numel() // 2, x.numel() - 1):
            bad = x.clone()
            bad.view(-1)[pos] = value
            with pytest.raises(KernelInputError) as err:
                A._check_values(bad, ids, w, E, finite=True, expert_ids=True)
            assert err.value.tensor == "hidden_states"
        bad = w.clone()
        bad.view(-1)[-1] = value
        with pytest.raises(KernelInputError) as err:
            A._check_values(x, ids, bad, E, finite=True, expert_ids=True)
        assert err.value.tensor == "topk_weights"
    for value in BAD_IDS.values():
        bad = ids.clone()
        bad.view(-1)[-1] = value
        with pytest.raises(KernelInputError) as err:
            A._check_values(x, bad, w, E, finite=True, expert_ids=True)
        assert err.value.tensor == "topk_ids" and str(value) in err.value.got
    A._check_values(x[:0], ids[:0], w[:0], E, finite=True, expert_ids=True)
