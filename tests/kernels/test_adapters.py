"""Kernel adapters, build_moe and the trimmed JIT build.

CPU tests cover every validation path with small or fake tensors (nothing is
launched), the host-side weight layout, the stub generator and the cache key.
GPU tests run only on an SM90 GPU with nvcc (the trimmed build takes minutes);
SM100 tests only on the SM100 family -- each skip says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from oracle.errors import ConfigError, KernelInputError, OracleError, UnknownBackend  # noqa: E402
from oracle.kernels import adapters as A  # noqa: E402
from oracle.kernels.checkpoint import MoEWeights, random_gpt_oss_layer  # noqa: E402
from oracle.kernels.jit import stubs  # noqa: E402
from oracle.kernels.jit.errors import KernelBuildError  # noqa: E402
from oracle.kernels.moe import IMPLEMENTED_BACKENDS, EmulationMoE, build_moe  # noqa: E402
from oracle.kernels.reference import GPT_OSS_SWIGLU, SILU_SWIGLU, ActivationSpec, moe_reference  # noqa: E402
from oracle import LayerSpec  # noqa: E402
from oracle.keys import BF16, kMxfp8Dynamic, kMxfp8Static  # noqa: E402

E, H, I, K = 4, 64, 96, 2


class Sel:
    def __init__(self, backend, activation=None):
        self.backend, self.activation = backend, activation


@pytest.fixture(scope="module")
def weights():
    return random_gpt_oss_layer(E, H, I, seed=3)


def fake_prepared(m_max=8, device="cpu", **over):
    """A PreparedCutlassW4A16 with CPU placeholders: enough for every pre-launch check."""
    kw = dict(device=torch.device(device), num_experts=E, hidden_size=H, intermediate_size=I, hidden_pad=128,
              inter_pad=128, fc1_weights=torch.empty(0), fc2_weights=torch.empty(0), quant_scales=[],
              fc1_bias=None, fc2_bias=None, swiglu={}, activation=GPT_OSS_SWIGLU, max_num_tokens=m_max)
    kw.update(over)
    return A.PreparedCutlassW4A16(**kw)


def inputs(m=3, k=K, h=H):
    x = torch.randn(m, h).to(torch.bfloat16)
    ids = torch.stack([torch.randperm(E)[:k] for _ in range(m)]).to(torch.int32)
    w = torch.softmax(torch.randn(m, k), -1)
    return x, ids, w


def expect(exc, tensor, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    if tensor is not None:
        assert info.value.what == tensor, info.value
    assert isinstance(info.value, OracleError)
    return info.value


# --------------------------------------------------------------------------- run-input validation


class TestCutlassRunValidation:
    ad = A.CutlassW4A16Sm90Adapter()

    def test_accepts_valid_and_prepadded(self):
        p = fake_prepared()
        x, ids, w = inputs()
        assert self.ad.check_run_inputs(p, x, ids, w) == (3, K)
        xp = torch.nn.functional.pad(x, (0, 128 - H))
        assert self.ad.check_run_inputs(p, xp, ids, w) == (3, K)

    def test_prepared_type(self):
        x, ids, w = inputs()
        expect(KernelInputError, "prepared", self.ad.check_run_inputs, object(), x, ids, w)

    @pytest.mark.parametrize("bad", ["dtype", "shape", "rank", "noncontig", "misaligned", "notensor", "too_many"])
    def test_hidden_states(self, bad):
        p = fake_prepared()
        x, ids, w = inputs()
        if bad == "dtype":
            x = x.float()
        elif bad == "shape":
            x = torch.zeros(3, H + 32, dtype=torch.bfloat16)
        elif bad == "rank":
            x = x[None]
        elif bad == "noncontig":
            x = torch.zeros(H, 3, dtype=torch.bfloat16).t()
        elif bad == "misaligned":
            base = torch.zeros(3 * H + 1, dtype=torch.bfloat16)
            x = base[1:].view(3, H)
            assert x.is_contiguous() and x.data_ptr() % 16
        elif bad == "notensor":
            x = [[0.0] * H] * 3
        elif bad == "too_many":
            x, ids, w = inputs(m=9)
        e = expect(KernelInputError, "hidden_states", self.ad.check_run_inputs, p, x, ids, w)
        assert e.fix is None or isinstance(e.fix, str)

    def test_device_mismatch(self):
        p = fake_prepared(device="meta")
        x, ids, w = inputs()
        expect(KernelInputError, "hidden_states", self.ad.check_run_inputs, p, x, ids, w)
        xm = torch.empty(3, H, dtype=torch.bfloat16, device="meta")
        expect(KernelInputError, "topk_ids", self.ad.check_run_inputs, p, xm, ids, w)

    @pytest.mark.parametrize("bad", ["int64", "rows", "k_too_big", "noncontig", "rank"])
    def test_topk_ids(self, bad):
        p = fake_prepared()
        x, ids, w = inputs()
        if bad == "int64":
            ids = ids.long()
        elif bad == "rows":
            ids = ids[:2]
        elif bad == "k_too_big":
            ids = torch.zeros(3, E + 1, dtype=torch.int32)
            w = torch.zeros(3, E + 1)
        elif bad == "noncontig":
            ids = torch.zeros(K, 3, dtype=torch.int32).t()
        elif bad == "rank":
            ids = ids.flatten()
        e = expect(KernelInputError, "topk_ids", self.ad.check_run_inputs, p, x, ids, w)
        if bad == "int64":
            assert "int32" in e.fix

    @pytest.mark.parametrize("bad", ["bf16", "shape", "noncontig"])
    def test_topk_weights(self, bad):
        p = fake_prepared()
        x, ids, w = inputs()
        if bad == "bf16":
            w = w.to(torch.bfloat16)
        elif bad == "shape":
            w = w[:, :1]
        elif bad == "noncontig":
            w = torch.zeros(K, 3).t()
        expect(KernelInputError, "topk_weights", self.ad.check_run_inputs, p, x, ids, w)

    def test_out_buffer(self):
        p = fake_prepared()
        x, ids, w = inputs()
        expect(KernelInputError, "out", self.ad.check_run_inputs, p, x, ids, w, torch.empty(3, H))
        expect(KernelInputError, "out", self.ad.check_run_inputs, p, x, ids, w,
               torch.empty(H, 3, dtype=torch.bfloat16).t())

    def test_expert_id_range(self):
        ids = torch.tensor([[0, E]], dtype=torch.int32)
        expect(KernelInputError, "topk_ids", A._check_expert_ids, ids, E)
        A._check_expert_ids(torch.tensor([[0, E - 1]], dtype=torch.int32), E)


def test_adapter_options_validated():
    expect(KernelInputError, "activation", A.CutlassW4A16Sm90Adapter, activation="swiglu")
    expect(KernelInputError, "module", A.CutlassW4A16Sm90Adapter, module="fast")
    expect(KernelInputError, "max_num_tokens", A.CutlassW4A16Sm90Adapter, max_num_tokens=0)
    expect(KernelInputError, "act", A.TrtllmMxfp4Adapter, act="fp8")
    # TRT-LLM W4A16 takes FlashInfer's SwiGLU class, gpt-oss or plain (matrix row
    # activation_fns, as FlashInfer's supported_activation_classes_by_quant says)
    A.TrtllmMxfp4Adapter(act="bf16", activation=SILU_SWIGLU)


def test_prepare_rejects_non_weights():
    expect(KernelInputError, "weights", A.CutlassW4A16Sm90Adapter().prepare, {"w13": 1})


def test_prepare_rejects_malformed_weights(weights):
    bad = MoEWeights(weights.w13_blocks.to(torch.int8), weights.w13_scales, weights.w13_bias,
                     weights.w2_blocks, weights.w2_scales, weights.w2_bias)
    expect(KernelInputError, "w13_blocks", A.CutlassW4A16Sm90Adapter().prepare, bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error; this machine has CUDA")
@pytest.mark.parametrize("backend", sorted(A.ADAPTERS))
def test_prepare_without_cuda_is_unavailable(backend, weights):
    ad = A.adapter_for(backend)
    if not ad.row.bias:  # a row without biases refuses gpt-oss's before looking for a device
        expect(KernelInputError, "weights.w13_bias / weights.w2_bias", ad.prepare, weights)
        from oracle.kernels.checkpoint import MoEWeights

        weights = MoEWeights(weights.w13_blocks, weights.w13_scales, None, weights.w2_blocks, weights.w2_scales, None)
    e = expect(A.KernelUnavailable, None, ad.prepare, weights)
    assert e.backend == backend and "CUDA" in e.constraint


def test_wrong_arch_is_unavailable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "fake A100")
    e = expect(A.KernelUnavailable, None, A._check_arch, "FLASHINFER_CUTLASS_MXFP4_BF16", torch.device("cuda", 0), (90,))
    assert "sm90" in e.constraint and "sm80" in str(e.got)
    e = expect(A.KernelUnavailable, None, A._check_arch, "FLASHINFER_TRTLLM_MXFP4_BF16", torch.device("cuda", 0),
               (100, 107))
    assert "sm100" in e.constraint


def test_sm100_run_validation():
    ad = A.CutlassMxfp8Mxfp4Sm100Adapter()
    p = A.PreparedFlashInferView(ad.backend, torch.device("cpu"), E, H, I, 128, 128, {}, GPT_OSS_SWIGLU)
    x, ids, w = inputs()
    assert ad.check_run_inputs(p, x, ids, w) == (3, K)
    expect(KernelInputError, "hidden_states", ad.check_run_inputs, p, x.float(), ids, w)
    expect(KernelInputError, "topk_ids", ad.check_run_inputs, p, x, ids.long(), w)
    other = A.TrtllmMxfp4Adapter(act="mxfp8")
    expect(KernelInputError, "prepared", other.check_run_inputs, p, x, ids, w)


def test_adapter_registry():
    assert set(IMPLEMENTED_BACKENDS) >= {"FLASHINFER_CUTLASS_MXFP4_BF16", "FLASHINFER_TRTLLM_MXFP4_BF16",
                                         "FLASHINFER_TRTLLM_MXFP4_MXFP8", "FLASHINFER_CUTLASS_MXFP4_MXFP8",
                                         "EMULATION"}
    with pytest.raises(UnknownBackend):
        A.adapter_for("NOPE")


# --------------------------------------------------------------------------- host layout (no GPU)


def _dequant_rows(blocks_u8, scales):
    """[E, N, K/2] packed + [E, N, K/32] -> float [E, N, K] via the reference's own decoder."""
    from oracle.kernels.mxfp4 import dequantize_mxfp4

    e, n, kh = blocks_u8.shape
    return dequantize_mxfp4(blocks_u8.reshape(e, n, kh // 16, 16), scales)


@pytest.mark.parametrize("act", [GPT_OSS_SWIGLU, SILU_SWIGLU])
def test_host_layout_reorders_and_pads_exactly(weights, act):
    fc1, s1, fc2, s2, b1, b2 = A.cutlass_sm90_host_layout(weights, act, 128)
    assert fc1.shape == (E, 256, 64) and s1.shape == (E, 256, 4)
    assert fc2.shape == (E, 128, 64) and s2.shape == (E, 128, 4)
    dense1 = _dequant_rows(fc1, s1)                 # [E, 2Ip, Hp]
    w13 = weights.dense_w13()                       # [E, 2I, H]
    gate, up = act.split(w13.transpose(1, 2))       # split along the 2I axis
    assert torch.equal(dense1[:, :I, :H], up.transpose(1, 2))        # [up; gate]: linear first
    assert torch.equal(dense1[:, 128:128 + I, :H], gate.transpose(1, 2))
    assert not dense1[:, I:128].any() and not dense1[:, 128 + I:].any() and not dense1[:, :, H:].any()
    dense2 = _dequant_rows(fc2, s2)
    assert torch.equal(dense2[:, :H, :I], weights.dense_w2())
    assert not dense2[:, H:].any() and not dense2[:, :, I:].any()
    bg, bu = act.split(weights.w13_bias.float())
    assert torch.equal(b1[:, :I].float(), bu) and torch.equal(b1[:, 128:128 + I].float(), bg)
    assert not b1[:, I:128].any() and not b2[:, H:].any()


def test_host_layout_padded_model_matches_reference(weights):
    """The padded [up; gate] operands, evaluated in torch with FlashInfer's SwigluBias math,
    reproduce the reference: the layout (not the kernel) is what this checks."""
    act = GPT_OSS_SWIGLU
    fc1, s1, fc2, s2, b1, b2 = A.cutlass_sm90_host_layout(weights, act, 128)
    w1, w2 = _dequant_rows(fc1, s1), _dequant_rows(fc2, s2)
    x, ids, w = inputs(m=5)
    xp = torch.nn.functional.pad(x.float(), (0, 128 - H))
    out = torch.zeros(5, 128)
    for t in range(5):
        for j in range(K):
            e = int(ids[t, j])
            g1 = w1[e] @ xp[t] + b1[e].float()
            lin, gate = g1[:128], g1[128:]
            gate = gate.clamp(max=act.limit)
            lin = lin.clamp(-act.limit, act.limit)
            a = gate * torch.sigmoid(act.alpha * gate) * (lin + 1.0)
            out[t] += w[t, j] * (w2[e] @ a + b2[e].float())
    ref = moe_reference(x.float(), weights, ids, w)
    torch.testing.assert_close(out[:, :H], ref, rtol=1e-4, atol=1e-4)


def test_pad_dims_helper():
    t = torch.ones(2, 3, 4)
    p = A._pad_dims(t, {1: 5, 2: 8}, value=7)
    assert p.shape == (2, 5, 8) and p[:, 3:].eq(7).all() and p[:, :3, 4:].eq(7).all() and p[:, :3, :4].eq(1).all()
    assert A._pad_dims(t, {}) is t
    assert A.round_up(2880, 128) == 2944 and A.round_up(2944, 128) == 2944


# --------------------------------------------------------------------------- build_moe


def test_build_moe_emulation_matches_reference(weights):
    layer = LayerSpec(hidden_size=H, intermediate_size=I, num_experts=E, top_k=K, activation_fn="swiglu_oai",
                      has_bias=True)
    moe = build_moe(Sel("EMULATION"), weights, layer)
    assert isinstance(moe, EmulationMoE) and isinstance(moe, torch.nn.Module)
    assert moe.compute_dtype == torch.bfloat16  # dequantize + BF16 GEMM
    x, ids, w = inputs()
    ref = moe_reference(x, weights, ids, w).double()
    assert float((moe(x, ids, w).double() - ref).norm() / ref.norm()) < 1e-2
    exact = build_moe(Sel("EMULATION"), weights, layer, compute_dtype=torch.float32)
    torch.testing.assert_close(exact(x, ids, w), moe_reference(x, weights, ids, w), rtol=0, atol=0)
    expect(KernelInputError, "topk_ids", moe, x, ids[:, :1], w[:, :1])


def test_build_moe_emulation_quantized_activation(weights):
    moe = build_moe(Sel("EMULATION", kMxfp8Dynamic), weights, None, compute_dtype=torch.float32)
    assert moe.act_quant == "mxfp8"
    x, ids, w = inputs()
    torch.testing.assert_close(moe(x, ids, w), moe_reference(x, weights, ids, w, act_quant="mxfp8"))


def test_build_moe_swiglu_constants_from_layer(weights):
    moe = build_moe(Sel("EMULATION"), weights, LayerSpec(swiglu_alpha=1.5, swiglu_limit=5.0))
    assert moe.activation == ActivationSpec("swiglu_oai", alpha=1.5, limit=5.0)
    assert build_moe(Sel("EMULATION"), weights, LayerSpec(activation_fn="swiglu")).activation == SILU_SWIGLU


def test_build_moe_rejections(weights):
    expect(KernelInputError, "selection", build_moe, object(), weights, None)
    expect(KernelInputError, "checkpoint_weights", build_moe, Sel("EMULATION"), {}, None)
    expect(KernelInputError, "layer.hidden_size", build_moe, Sel("EMULATION"), weights, LayerSpec(hidden_size=H * 2))
    expect(KernelInputError, "layer.has_bias", build_moe, Sel("EMULATION"), weights, LayerSpec(has_bias=False))
    expect(KernelInputError, "layer.ep_size", build_moe, Sel("EMULATION"), weights, LayerSpec(ep_size=2))
    expect(ConfigError, "layer.activation_fn", build_moe, Sel("EMULATION"), weights, LayerSpec(activation_fn="gelu"))
    e = expect(A.KernelUnavailable, None, build_moe, Sel("MARLIN"), weights, None)
    assert "EMULATION" in e.constraint
    # backend and activation must come from the same matrix row
    expect(ConfigError, "selection.activation", build_moe, Sel("FLASHINFER_CUTLASS_MXFP4_BF16", kMxfp8Dynamic),
           weights, None)
    expect(ConfigError, "selection.activation", build_moe, Sel("FLASHINFER_TRTLLM_MXFP4_MXFP8"), weights, None)
    # the row's key exactly: the MXFP8 rows consume dynamic MXFP8, not static
    expect(ConfigError, "selection.activation", build_moe, Sel("FLASHINFER_CUTLASS_MXFP4_MXFP8", kMxfp8Static),
           weights, None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error; this machine has CUDA")
def test_build_moe_strict_bf16_marker_matches_a_bf16_row(weights):
    """BF16 (strict request) and None both mean the bf16 rows' activation: past the row check."""
    for act in (None, BF16):
        expect(A.KernelUnavailable, None, build_moe, Sel("FLASHINFER_CUTLASS_MXFP4_BF16", act), weights, None)


def test_import_oracle_stays_light():
    code = textwrap.dedent("""
        import sys, oracle, oracle.kernels, oracle.kernels.jit
        bad = [m for m in ("torch", "flashinfer") if m in sys.modules]
        print(",".join(bad))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


# --------------------------------------------------------------------------- trimmed build pieces (no GPU)


def test_stub_source_and_classification():
    syms = ["_ZN12tensorrt_llm7kernels3fooEv", "_ZNK12tensorrt_llm3Bar3bazEi"]
    src = stubs.render_stub_source(syms, ["tensorrt_llm::kernels::foo()", "tensorrt_llm::Bar::baz(int) const"],
                                   module="m", kept_summary="tiles")
    assert src.count("__asm__(") == 2 and "tensorrt_llm::Bar::baz(int) const" in src
    assert "std::runtime_error" in src and "dropped from the trimmed build" in src
    assert stubs.is_function("tensorrt_llm::Bar::baz(int) const")
    assert not stubs.is_function("vtable for tensorrt_llm::Bar")
    assert not stubs.is_function("tensorrt_llm::kernels::some_table")
    with pytest.raises(ValueError):
        stubs.render_stub_source(["bad name"], ["x"], module="m", kept_summary="k")


@pytest.mark.skipif(not all(map(__import__("shutil").which, ("c++", "nm", "c++filt"))),
                    reason="needs a host C++ compiler and binutils")
def test_stubs_close_an_undefined_reference(tmp_path):
    """A caller of a missing templated function links, loads and gets the stub's exception."""
    (tmp_path / "use.cpp").write_text(textwrap.dedent("""
        #include <stdexcept>
        #include <string>
        namespace tensorrt_llm { template <int N> int launch(float* p, int n); }
        extern "C" int call_it() {
          try { return tensorrt_llm::launch<128>(nullptr, 3); }
          catch (std::runtime_error const& e) { return std::string(e.what()).find("launch<128>") != std::string::npos ? -7 : -1; }
        }
    """))
    subprocess.run(["c++", "-fPIC", "-c", "use.cpp", "-o", "use.o"], cwd=tmp_path, check=True)
    missing = stubs.missing_symbols([tmp_path / "use.o"])
    assert len(missing) == 1 and missing[0].startswith("_ZN12tensorrt_llm6launchILi128EEEiPfi")
    dem = stubs.demangle(missing)
    assert "tensorrt_llm::launch<128>" in dem[0]
    (tmp_path / "stubs.cpp").write_text(stubs.render_stub_source(missing, dem, module="t", kept_summary="none"))
    subprocess.run(["c++", "-shared", "-fPIC", "use.o", "stubs.cpp", "-o", "lib.so"], cwd=tmp_path, check=True)
    import ctypes

    lib = ctypes.CDLL(str(tmp_path / "lib.so"), mode=os.RTLD_NOW)
    assert lib.call_it() == -7
    assert stubs.missing_symbols([tmp_path / "use.o"], prefixes=("_ZN3foo",)) == []


def test_parse_generated_file(tmp_path):
    from oracle.kernels.jit.cutlass_w4a16_sm90 import Tile, parse_generated_file

    f = tmp_path / "x.generated.cu"
    f.write_text(textwrap.dedent("""\
        #include "launcher.inl"
        namespace tensorrt_llm
        {
        namespace kernels
        {
        #if defined(ENABLE_FP4)
        template void sm90_generic_mixed_moe_gemm_kernelLauncher<__nv_bfloat16, SafeFP4, __nv_bfloat16,
        tensorrt_llm::cutlass_extensions::EpilogueOpDefault, cute::Shape<cute::Int<64>, cute::Int<16>, cute::Int<128>>, cute::Shape<cute::Int<1>, cute::Int<1>, cute::Int<1>>, cutlass::gemm::KernelTmaWarpSpecializedPingpong, cutlass::epilogue::TmaWarpSpecializedCooperative, cutlass::WeightOnlyQuantOp::FINEGRAINED_SCALE_ONLY> (
        GroupedGemmInput<__nv_bfloat16, SafeFP4, __nv_bfloat16, __nv_bfloat16>inputs, TmaWarpSpecializedGroupedGemmInput hopper_inputs, int sm_count_, size_t* workspace_size);
        template void other_launcher<half, half> (int a);
        #endif
        } // namespace kernels
        } // namespace tensorrt_llm
    """))
    pre, stmts, post = parse_generated_file(f)
    assert "#if" not in pre and '#include "launcher.inl"' in pre
    assert post.count("}") == 2 and "#endif" not in post
    assert len(stmts) == 2
    assert stmts[0].is_w4a16 and stmts[0].tile == Tile(64, 16, 128, "Pingpong")
    assert not stmts[1].is_w4a16 and stmts[1].tile is None


def test_cache_key_covers_version_and_kept_set():
    from oracle.kernels.jit.cutlass_w4a16_sm90 import cache_key

    base = dict(flashinfer_version="0.7.2.post1", base_name="fused_moe_90", nvcc_version="release 13.0",
                cuda_cflags=["-O3"], cflags=[], ldflags=["-lnvrtc"], kept_sources=["a.cu", "b.cu"],
                kept_statements=["template void f<1>();"])
    k0 = cache_key(**base)
    assert cache_key(**base) == k0
    assert cache_key(**dict(base, kept_sources=["b.cu", "a.cu"])) == k0  # order-insensitive
    for change in (dict(flashinfer_version="0.7.3"), dict(kept_sources=["a.cu"]),
                   dict(kept_statements=["template void f<2>();"]), dict(nvcc_version="release 12.9")):
        assert cache_key(**dict(base, **change)) != k0


def test_build_error_is_oracle_error():
    e = KernelBuildError("nvcc", "on PATH", "not found", "install CUDA")
    assert isinstance(e, OracleError) and isinstance(e, ValueError) and "nvcc" in str(e)


def test_check_toolchain_reports_missing_nvcc(monkeypatch, tmp_path):
    pytest.importorskip("flashinfer")
    from flashinfer.jit import cpp_ext

    from oracle.kernels.jit.cutlass_w4a16_sm90 import check_toolchain

    monkeypatch.setenv("FLASHINFER_NVCC", str(tmp_path / "no-nvcc"))
    monkeypatch.setattr(cpp_ext, "get_cuda_path", lambda: str(tmp_path))
    e = expect(KernelBuildError, "nvcc", check_toolchain)
    assert "CUDA" in e.fix


# --------------------------------------------------------------------------- GPU (SM90 / SM100)


def _sm() -> int | None:
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


_W4A16_ARCHS = A.adapter_for("FLASHINFER_CUTLASS_MXFP4_BF16").archs  # from the matrix row
_SM100_ARCHS = A.adapter_for("FLASHINFER_TRTLLM_MXFP4_MXFP8").archs
needs_sm90 = pytest.mark.skipif(_sm() not in _W4A16_ARCHS,
                                reason="needs an SM90 (Hopper) GPU; the CUTLASS W4A16 kernel is SM90-only")
needs_build = pytest.mark.skipif(os.environ.get("ORACLE_GPU_BUILD") != "1",
                                 reason="set ORACLE_GPU_BUILD=1 to allow the trimmed fused_moe_90 build (~10-20 min "
                                        "on 16 cores; see docs/kernels.md)")
needs_sm100 = pytest.mark.skipif(_sm() not in _SM100_ARCHS,
                                 reason="needs an SM100-family GPU (TRT-LLM-gen / SM100 CUTLASS MXFP4 paths)")


@pytest.mark.gpu
@pytest.mark.slow
@needs_sm90
@needs_build
@pytest.mark.parametrize("m", [1, 16, 256])
def test_cutlass_w4a16_matches_reference_on_gpu(m, device_check):
    from types import SimpleNamespace

    e, h, i, k = 32, 2880, 2880, 4
    w = random_gpt_oss_layer(e, h, i, seed=m, device="cuda")
    moe = build_moe(SimpleNamespace(backend="FLASHINFER_CUTLASS_MXFP4_BF16", activation=None), w,
                    LayerSpec(top_k=k))
    device_check.poison_outputs(moe.adapter)  # NaN-filled outputs: unwritten rows show
    g = torch.Generator(device="cuda").manual_seed(m)
    x = torch.randn(m, h, device="cuda", generator=g).to(torch.bfloat16)
    top = torch.randn(m, e, device="cuda", generator=g).topk(k)
    ids, tw = top.indices.int(), torch.softmax(top.values, -1)
    out = moe(x, ids, tw)
    ref = moe_reference(x.float(), w, ids, tw)
    assert not out.isnan().any()
    assert float((out.double() - ref.double()).norm() / ref.double().norm()) <= 1e-2


@pytest.mark.gpu
@needs_sm90
def test_sm100_adapters_refuse_hopper(weights):
    for backend in ("FLASHINFER_TRTLLM_MXFP4_BF16", "FLASHINFER_CUTLASS_MXFP4_MXFP8"):
        e = expect(A.KernelUnavailable, None, A.adapter_for(backend).prepare, weights.to("cuda"))
        assert "sm90" in str(e.got)


@pytest.mark.gpu
@needs_sm100
def test_trtllm_mxfp4_bf16_matches_reference_on_sm100():
    pytest.skip("SM100 adapters are unverified on hardware (docs/kernels.md)")


# --------------------------------------------------------------------------- tools/device_check.py (no GPU)


def _bench_row():
    return dict(E=32, M=1, active_experts=4.0, adapter_ms=0.05, adapter_graph_ms=None, raw_ms=0.049,
                raw_graph_ms=None, adapter_vs_raw=0.02, adapter_prepadded_vs_raw=0.01, reference_ms=2.0,
                speedup_vs_reference=40.0, bw_fraction=0.5, flop_fraction=0.01)


def _build(**over):
    b = dict(name="oracle_fused_moe_90_w4a16_x", object_count=25, full_object_count=248, stubbed_symbols=277,
             built_now=26, phase_seconds={"compile": 116.0, "total": 118.0},
             full_build_estimate={"full_wall_seconds_est": 9360.0, "full_cpu_seconds_est": 149760.0,
                                  "full_generated_instantiations": 1378})
    b.update(over)
    return b


def test_device_check_summary_renders(device_check):
    """The device script's report renders from a result dict (no GPU needed)."""
    text = device_check.summary_text({"env": {"device": "x", "cpus": 16},
                                      "check": {"backend": "B", "E": 32, "seed": 1, "pass": True,
                                                "rows": [{"M": 1, "rel_err": 3e-3, "pass": True}]},
                                      "bench": [_bench_row()]})
    assert "PASS" in text and "MISSED" in text and "n/a" in text


def test_device_check_summary_of_fresh_and_cached_builds(device_check):
    fresh = device_check.summary_text({"env": {"cpus": 16}, "build": _build()})
    assert "ratio 79.3x" in fresh and "1378 instantiations" in fresh and "cached" not in fresh
    # a build reused from the JIT cache took ~0 s: say so, and compute no ratio from it
    cached = device_check.summary_text({"env": {"cpus": 16}, "build": _build(
        built_now=0, cached=True, phase_seconds={"compile": 0.0, "total": 0.013})})
    assert "cached" in cached and "ratio" not in cached and "0.0 min" not in cached
    # results written before the "cached" flag existed: built_now == 0 means the same
    legacy = device_check.summary_text({"env": {"cpus": 16}, "build": _build(
        built_now=0, phase_seconds={"total": 0.013})})
    assert "ratio" not in legacy and "cached" in legacy
    # relinked only (the stubs changed), objects from the cache: seconds, not a build time
    relinked = device_check.summary_text({"env": {"cpus": 16}, "build": _build(
        built_now=1, compiled_now=0, phase_seconds={"compile": 0.0, "total": 2.1})})
    assert "ratio" not in relinked and "0 of 25 objects compiled now" in relinked
    partly = device_check.summary_text({"env": {"cpus": 16}, "build": _build(
        built_now=3, compiled_now=2, phase_seconds={"compile": 9.0, "total": 11.0})})
    assert "ratio" not in partly and "2 of 25 objects" in partly


def test_device_check_debug_aids_wrap_the_product_adapter(device_check, weights):
    """The NaN-poison hook and the swapped-rows diagnostic live in tools/, around the adapter."""
    seen = {}

    class FakeAdapter:
        def _fi_moe(self):
            def fn(x, ids, w, *, output, **kw):
                seen["nan_before_write"] = bool(output.isnan().all())
                output.zero_()
            return fn

    ad = FakeAdapter()
    device_check.poison_outputs(ad)
    ad._fi_moe()(None, None, None, output=torch.zeros(2, 3), workspace_buffer=None)
    assert seen == {"nan_before_write": True}
    assert not hasattr(A.CutlassW4A16Sm90Adapter(), "poison_output")

    plain = A.cutlass_sm90_host_layout(weights, GPT_OSS_SWIGLU, 128)
    with device_check.swapped_gate_up():
        swapped = A.cutlass_sm90_host_layout(weights, GPT_OSS_SWIGLU, 128)
    assert A.cutlass_sm90_host_layout(weights, GPT_OSS_SWIGLU, 128)[0].equal(plain[0])  # restored
    for k in (0, 1, 4):  # fc1, its scales, its bias: halves exchanged
        assert torch.equal(swapped[k][:, :128], plain[k][:, 128:]) and torch.equal(swapped[k][:, 128:], plain[k][:, :128])
    assert torch.equal(swapped[2], plain[2])


def test_device_job_lives_outside_the_package():
    import importlib.util

    assert importlib.util.find_spec("oracle.kernels.tools") is None
    root = Path(__file__).resolve().parents[2]
    assert (root / "tools" / "device_check.py").is_file()
    assert not list((root / "kernels").rglob("device_check*"))
