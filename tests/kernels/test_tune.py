"""CPU tests of the tuner's pure parts, the FP8 humming adapter's pre-launch checks, the trimmed-build specs."""

from __future__ import annotations

import dataclasses
import math
import tomllib

import pytest

torch = pytest.importorskip("torch")

from oracle.errors import KernelInputError  # noqa: E402
from oracle.kernels import tune  # noqa: E402
from oracle.keys import kFp8DynamicTokenSym  # noqa: E402
from oracle.kernels.checkpoint import MoEWeights, random_gpt_oss_layer  # noqa: E402
from oracle.kernels.reference import GPT_OSS_SWIGLU, ActivationSpec  # noqa: E402


def _rows():
    return [tune.Measurement("FLASHINFER_CUTLASS_MXFP4_BF16", None, 32, 2880, 2880, 4, 1, 80.123, 3.61e-3,
                             73.24, 134.04),
            tune.Measurement("EMULATION", None, 32, 2880, 2880, 4, 16, 12346.0, 3.5e-3, None, 0.05),
            tune.Measurement("FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING", kFp8DynamicTokenSym, 128, 2880, 2880, 4,
                             4096, 611.0, 1.9e-2, 600.5, 101.5)]


def _header():
    return tune.Header(device="NVIDIA H200", arch="sm90", driver="580.95.05", cuda="13.0", date="2026-12-02",
                       command="python -m oracle.kernels.tune --out x.toml --experts 32 128",
                       libraries={"flashinfer": "0.7.2.post1", "humming": "0.1.19", "torch": "2.11.0+cu130"},
                       comments=["Measured kernel profile.", "note: FP8 humming plain SwiGLU"])


def test_render_profile_schema():
    text = tune.render_profile(_header(), _rows())
    assert text.startswith("# Measured kernel profile.\n# note: FP8 humming plain SwiGLU\nschema = 1\n")
    doc = tomllib.loads(text)
    assert doc["schema"] == 1 and doc["device"] == "NVIDIA H200" and doc["arch"] == "sm90"
    assert doc["driver"] == "580.95.05" and doc["cuda"] == "13.0" and doc["date"] == "2026-12-02"
    assert doc["libraries"] == {"flashinfer": "0.7.2.post1", "humming": "0.1.19", "torch": "2.11.0+cu130"}
    m = doc["measurement"]
    assert len(m) == 3
    assert set(m[0]) == {"backend", "activation", "experts", "hidden", "intermediate", "top_k", "tokens",
                         "graph_us", "eager_us", "rel_error", "build_s"}
    assert m[0]["graph_us"] == 73.2 and m[0]["eager_us"] == 80.1 and m[0]["build_s"] == 134.0
    assert math.isclose(m[0]["rel_error"], 3.61e-3)
    assert "graph_us" not in m[1]  # omitted, not NaN, when graphs failed
    assert m[2]["activation"] == "kFp8DynamicTokenSym" and m[2]["tokens"] == 4096
    for r in m:
        assert all(isinstance(r[k], int) for k in ("experts", "hidden", "intermediate", "top_k", "tokens"))


def test_render_profile_is_read_by_the_oracle_loader():
    profile = pytest.importorskip("oracle.profile")
    p = profile.parse_profile(tune.render_profile(_header(), _rows()), "t")
    assert len(p.measurements) == 3
    assert p.measurements[1].graph_us is None


def test_render_profile_refuses_non_finite():
    bad = dataclasses.replace(_rows()[0], rel_error=float("nan"))
    with pytest.raises(ValueError):
        tune.render_profile(_header(), [bad])
    with pytest.raises(ValueError):
        tune.render_profile(_header(), [dataclasses.replace(_rows()[0], eager_us=float("inf"))])


def test_median_and_iterations():
    assert tune.median([3.0, 1.0, 2.0]) == 2.0
    assert tune.median([1.0, 2.0, 3.0, 10.0]) == 2.5
    with pytest.raises(ValueError):
        tune.median([])
    with pytest.raises(ValueError):
        tune.median([1.0, float("nan")])
    assert tune.iterations_for(1e-5) == 200 and tune.iterations_for(0.1) == 10
    assert tune.iterations_for(0.005) == 50 and tune.iterations_for(0.0) == 200


def test_rotation_count_exceeds_l2():
    l2 = 60 << 20
    # gpt-oss decode: 4 experts of ~13 MB -> 4 sets touch >= 3 x L2
    n = tune.rotation_count(4 * 13.2e6, l2)
    assert n * 4 * 13.2e6 >= 3 * l2 and n <= 8
    assert tune.rotation_count(2e9, l2) == 2  # never one set
    assert tune.rotation_count(1.0, l2) == 8  # bounded
    with pytest.raises(ValueError):
        tune.rotation_count(0, l2)


def test_canonical_arch_and_command():
    assert tune.canonical_arch(9, 0) == "sm90" and tune.canonical_arch(10, 3) == "sm103"
    assert tune.command_line(["--out", "a b.toml", "--experts", "32"]) == \
        "python -m oracle.kernels.tune --out 'a b.toml' --experts 32"


def test_backends_are_matrix_rows():
    from oracle.kernels.moe import IMPLEMENTED_BACKENDS
    from oracle.keys import KEY_CONSTANTS
    from oracle.matrix import MATRIX

    labels = tune.default_backends()
    assert set(IMPLEMENTED_BACKENDS) <= set(labels) and "HUMMING+kFp8DynamicTokenSym" in labels
    for label in labels:
        row, key = tune.parse_label(label)
        assert row in MATRIX.by_name and row in IMPLEMENTED_BACKENDS
        if key is not None:
            assert MATRIX.by_name[row].applies(KEY_CONSTANTS[key])
    assert tune.parse_label("HUMMING") == ("HUMMING", None)
    assert tune._sm90_flashinfer() == {"FLASHINFER_CUTLASS_MXFP4_BF16", "FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING"}


def test_tune_main_without_gpu_says_so(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert tune.main(["--out", str(tmp_path / "p.toml")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


# --------------------------------------------------------------------------- FP8 humming adapter (CPU)


def test_fp8_humming_adapter_reads_its_row():
    from oracle.keys import kFp8DynamicTokenSym
    from oracle.matrix import MATRIX

    from oracle.kernels.adapters import ADAPTERS, CutlassHummingSm90Adapter

    row = MATRIX.by_name["FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING"]
    assert ADAPTERS[row.name] is CutlassHummingSm90Adapter
    kinds = tuple(row.activation_fns)
    act = GPT_OSS_SWIGLU if "swiglu_oai" in kinds else ActivationSpec("swiglu")
    a = CutlassHummingSm90Adapter(activation=act)
    assert a.activation_key == row.activation and a.kernel_activation_key is kFp8DynamicTokenSym
    assert a.alignment % row.hidden_align == 0 and a.archs == (90,)
    if "swiglu_oai" not in kinds:
        with pytest.raises(KernelInputError, match="swiglu_oai"):
            CutlassHummingSm90Adapter(activation=GPT_OSS_SWIGLU)


def test_fp8_humming_refuses_biases_its_row_does_not_run():
    from oracle.kernels.adapters import CutlassHummingSm90Adapter
    from oracle.matrix import MATRIX

    row = MATRIX.by_name["FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING"]
    no_bias = dataclasses.replace(row, bias=False, activation_fns=("swiglu_oai", "swiglu"))
    a = CutlassHummingSm90Adapter(activation=GPT_OSS_SWIGLU, row=no_bias)
    w = random_gpt_oss_layer(2, 64, 64, seed=1)
    with pytest.raises(KernelInputError, match="bias = false"):
        a.prepare(w)
    with_bias = dataclasses.replace(no_bias, bias=True)
    b = CutlassHummingSm90Adapter(activation=GPT_OSS_SWIGLU, row=with_bias)
    from oracle.kernels.adapters import KernelUnavailable

    if not torch.cuda.is_available():
        with pytest.raises(KernelUnavailable):
            b.prepare(w)
    with pytest.raises(KernelInputError, match="row"):
        CutlassHummingSm90Adapter(activation=GPT_OSS_SWIGLU, row=MATRIX.by_name["HUMMING"])
    with pytest.raises(KernelInputError, match="max_range"):
        CutlassHummingSm90Adapter(activation=GPT_OSS_SWIGLU, row=with_bias, max_range=12)
    with pytest.raises(KernelInputError, match="tiles"):
        CutlassHummingSm90Adapter(activation=GPT_OSS_SWIGLU, row=with_bias, tiles=())


def test_humming_clamp_dequant_exact_within_range_and_lossy_beyond():
    pytest.importorskip("flashinfer")
    from oracle.kernels.adapters import humming_clamp_dequant

    w = random_gpt_oss_layer(3, 64, 64, seed=2)  # scale bytes span 3 binades: nothing clamped
    d = humming_clamp_dequant(w.w2_blocks.reshape(3, 64, 32), w.w2_scales)
    assert torch.equal(d, w.dense_w2())
    # one block 14 binades below its expert's largest: clamped to the floor, codes rewritten
    s = w.w2_scales.clone()
    s[0, 0, 0] = s[0].max() - 14
    wide = MoEWeights(w.w13_blocks, w.w13_scales, None, w.w2_blocks, s, None)
    exact = wide.dense_w2()
    d = humming_clamp_dequant(w.w2_blocks.reshape(3, 64, 32), s)
    assert torch.equal(d[0, 0, 32:], exact[0, 0, 32:]) and torch.equal(d[1:], exact[1:])
    blk, ref = d[0, 0, :32], exact[0, 0, :32]
    floor_scale = 2.0 ** (int(s[0].max()) - 11 - 127)
    # the block's values (<= 0.75 x the floor scale) land on the E2M1 grid of the floor scale: step 0.5
    assert not torch.equal(blk, ref) and float((blk - ref).abs().max()) <= 0.25 * floor_scale
    assert torch.all((blk == 0) | (blk.sign() == ref.sign()))
    with pytest.raises(KernelInputError):
        humming_clamp_dequant(w.w2_blocks.reshape(3, 64, 32), s, max_range=12)


def test_host_layout_expert_max_scale_padding():
    from oracle.kernels.adapters import cutlass_sm90_host_layout

    w = random_gpt_oss_layer(2, 96, 96, seed=3)
    fc1, s1, fc2, s2, b1, b2 = cutlass_sm90_host_layout(w, GPT_OSS_SWIGLU, 128, scale_pad="expert_max")
    u1, us1, _, us2, _, _ = cutlass_sm90_host_layout(w, GPT_OSS_SWIGLU, 128)
    assert torch.equal(fc1, u1) and s1.shape == us1.shape == (2, 256, 4)
    for ex in range(2):
        top13, top2 = int(w.w13_scales[ex].max()), int(w.w2_scales[ex].max())
        assert int(s1[ex].max()) == top13 and int(s2[ex].max()) == top2
        for pad in (s1[ex, 96:128], s1[ex, 224:], s1[ex, :, 3]):
            assert int(pad.min()) == int(pad.max()) == top13
        for pad in (s2[ex, 96:], s2[ex, :, 3]):
            assert int(pad.min()) == int(pad.max()) == top2
    assert torch.equal(s1[:, :96, :3], us1[:, :96, :3]) and int(us1[:, 96:128].min()) == 127
    with pytest.raises(KernelInputError):
        cutlass_sm90_host_layout(w, GPT_OSS_SWIGLU, 128, scale_pad="zero")


# --------------------------------------------------------------------------- trimmed-build specs (CPU)


def test_specs_select_their_launchers(tmp_path):
    from oracle.kernels.jit import sm90
    from oracle.kernels.jit.cutlass_w4a16_sm90 import Tile, parse_generated_file
    from oracle.kernels.jit.errors import KernelBuildError

    def stmt(launcher, types, tile, extra=""):
        cta = ", ".join(f"cute::Int<{v}>" for v in tile[:3])
        sched = "Pingpong" if tile[3] == "Pingpong" else "Cooperative"
        return (f"template void {launcher}<{types},\ntensorrt_llm::cutlass_extensions::EpilogueOpDefault, "
                f"cute::Shape<{cta}>, cute::Shape<cute::Int<1>, cute::Int<1>, cute::Int<1>>, "
                f"cutlass::gemm::KernelTmaWarpSpecialized{sched}, cutlass::epilogue::TmaWarpSpecializedCooperative, "
                f"cutlass::WeightOnlyQuantOp::FINEGRAINED_SCALE_ONLY{extra}> (int a);\n")

    mixed, small = "sm90_generic_mixed_moe_gemm_kernelLauncher", "sm90_generic_mixed_moe_small_k_kernelLauncher"
    bf, fp8 = "__nv_bfloat16, SafeFP4, __nv_bfloat16", "__nv_fp8_e4m3, SafeFP4, __nv_bfloat16"
    pre = ", cutlass::gemm::collective::MixedInputScaleMode::kPreMmaE8M0"
    body = "".join([
        stmt(mixed, bf, (64, 16, 128, "Pingpong")), stmt(mixed, bf, (128, 64, 256, "Cooperative")),
        stmt(mixed, fp8, (64, 16, 128, "Pingpong"), pre), stmt(mixed, fp8, (128, 64, 256, "Cooperative"), pre),
        stmt(small, fp8, (128, 8, 128, "Pingpong"),
             pre + ", tensorrt_llm::cutlass_extensions::MainloopScheduleType::SINGLE_WARPGROUP_PREFILL"),
        stmt(small, fp8, (128, 8, 128, "Pingpong"),
             pre + ", tensorrt_llm::cutlass_extensions::MainloopScheduleType::SINGLE_WARPGROUP_ROLLING"),
    ])
    f = tmp_path / "x.generated.cu"
    f.write_text("#include \"l.inl\"\nnamespace tensorrt_llm {\n" + body + "}\n")
    p, stmts, post = parse_generated_file(f)
    assert [s.scale_mode for s in stmts] == [None, None, "kPreMmaE8M0", "kPreMmaE8M0", "kPreMmaE8M0",
                                             "kPreMmaE8M0"]
    assert stmts[5].mainloop_type == "SINGLE_WARPGROUP_ROLLING" and stmts[5].tile == Tile(128, 8, 128, "Pingpong")
    assert stmts[0].is_w4a16 and not stmts[2].is_w4a16
    triples = [(p, s, post) for s in stmts]
    w4 = sm90.W4A16.with_tiles([Tile(64, 16, 128, "Pingpong")])
    fp = dataclasses.replace(sm90.FP8_HUMMING, tiles=(Tile(64, 16, 128, "Pingpong"),),
                             small_k=(Tile(128, 8, 128, "Pingpong"),))
    chosen = sm90.select_statements((w4, fp), triples)
    assert [c[2] for c in chosen] == [stmts[0], stmts[1], stmts[2], stmts[3], stmts[5]]
    assert chosen[-1][0] == "fp8humming_smallk_128x8x128_ping_c1x1x1"
    with pytest.raises(KernelBuildError, match="small-K"):
        sm90.select_statements((dataclasses.replace(fp, small_k=(Tile(128, 16, 128, "Pingpong"),)),), triples)
    src = sm90.runner_source((w4, fp))
    assert "template class CutlassMoeFCRunner<__nv_bfloat16, Fp4Type>;" in src
    assert "Sm90Wfp4Afp8ScaleMode::kHummingPreMmaE8M0>;" in src
    assert src.count("INSTANTIATE_FINALIZE_MOE_ROUTING(") == 1  # shared finalize type once
    assert w4.key_payload() != sm90.W4A16.key_payload() and fp.key_payload()["scale_mode"] == "kPreMmaE8M0"
    assert sm90.FP8_HUMMING.sources[0].endswith("moe_gemm_kernels_fp8_fp4.cu")
    assert not any(s.endswith("bf16_fp4.cu") for s in sm90.COMMON_SOURCES)


def test_compiled_everything():
    from oracle.kernels.jit.sm90 import compiled_everything

    assert compiled_everything({"compiled_now": 30, "object_count": 30})
    assert not compiled_everything({"compiled_now": 0, "object_count": 30})      # from the JIT cache
    assert not compiled_everything({"compiled_now": 2, "object_count": 30})      # partly rebuilt
    assert not compiled_everything({"built_now": 1, "object_count": 30})         # unknown: no comparison
