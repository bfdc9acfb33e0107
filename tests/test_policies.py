"""The three policies on one matrix: strict, vllm-0.33, vllm-0.22.

Part 1 pins the vLLM facts the fidelity work fixed (each was a wrong fact or rule
here before; tests/conformance proves them against vLLM's own code).  Part 2 has one
test per class of "Where strict differs from vLLM" (docs/guide.md): each shows the
strict answer and vLLM 0.33's side by side.  These run without vLLM installed.
"""

from __future__ import annotations

import pytest

from oracle import (ActivationConflict, ConfigError, Device, Environment, LayerSpec,
                    NoEligibleBackend, Reason, SelectionRequest, UnknownBackend, select)
from oracle.keys import kFp8Dynamic128Sym, kFp8DynamicTokenSym, kMxfp4Dynamic, kMxfp8Dynamic
from oracle.matrix import MATRIX, RELEASES

GPT_OSS = LayerSpec(hidden_size=2880, intermediate_size=2880, num_experts=32, top_k=4,
                    activation_fn="swiglu_oai", has_bias=True)
VLLM_LIBS = ("flashinfer", "triton_kernels", "amd_quark", "aiter", "deep_gemm", "humming",
             "vllm_ops", "torch", "intel_xpu")


def env(*drop: str) -> Environment:
    return Environment({lib: None for lib in VLLM_LIBS if lib not in drop})


def req(device: str, policy: str = "strict", moe_backend: str = "auto", *, drop=(),
        **kw) -> SelectionRequest:
    kw.setdefault("layer", GPT_OSS)
    return SelectionRequest(device=Device.parse(device), moe_backend=moe_backend,
                            environment=env(*drop), policy=policy, **kw)


def winner(request: SelectionRequest) -> str:
    return select(request).backend


def refusal(request: SelectionRequest) -> NoEligibleBackend:
    with pytest.raises(NoEligibleBackend) as info:
        select(request)
    return info.value


def reasons(err: NoEligibleBackend) -> dict[str, Reason]:
    return {r.backend: r.reason for r in err.rejected}


# ------------------------------------------------------------------ the policy field


def test_policy_names_are_validated_and_normalised():
    assert req("sm90", "VLLM_0.33").policy == "vllm-0.33"
    assert req("sm90", "vllm-0.33.0").policy == "vllm-0.33"
    with pytest.raises(ConfigError) as info:
        req("sm90", "lenient")
    assert "strict, vllm-0.33, vllm-0.22" in str(info.value)
    with pytest.raises(ConfigError) as info:
        req("sm90", "vllm-0.5")
    assert "vllm-0.33, vllm-0.22" in info.value.constraint


def test_policy_changes_rules_not_data():
    # One matrix: every vLLM variant is a row of it, with the same name.
    for release in RELEASES.values():
        assert set(release.variant) <= set(MATRIX.by_name)


# ------------------------------------------------------------------ part 1: fixed facts


def test_vllms_mega_deep_gemm_name():
    for policy in ("strict", "vllm-0.33"):
        err = refusal(req("sm100", policy, "flashinfer_moe_ep_mega_deep_gemm"))
        assert set(reasons(err)) == {"FLASHINFER_MOE_EP_DEEP_GEMM"}
    # vLLM 0.33 has no vendor name flashinfer_moe_ep_deep_gemm (only strict's member name).
    with pytest.raises(UnknownBackend):
        select(req("sm100", "vllm-0.33", "flashinfer_moe_ep_deep_gemm"))


def test_cutlass_is_not_an_mxfp4_name():
    for policy in ("strict", "vllm-0.33", "vllm-0.22"):
        with pytest.raises(UnknownBackend):
            select(req("sm100", policy, "cutlass"))


def test_aiter_family_has_vllms_five_variants_in_order():
    assert MATRIX.names["aiter"] == RELEASES["0.33.0"].names["aiter"] == (
        "AITER_MXFP4_BF16", "AITER_TRITON_MXFP4_BF16", "AITER_MXFP4_FP8", "AITER_MXFP4_MXFP4",
        "AITER_TRITON_MXFP4_MXFP4")
    assert MATRIX.names["marlin"] == ("MARLIN",)


def test_cutlass_w4a4_is_refused_for_biases_by_strict_and_run_by_vllm():
    request = dict(activation=kMxfp4Dynamic)
    err_or_sel = select(req("sm100", "strict", **request))
    assert reasons(err_or_sel)["CUTLASS_MXFP4_MXFP4"] is Reason.BIAS_UNSUPPORTED
    sel = select(req("sm100", "vllm-0.33", **request))
    assert sel.backend == "CUTLASS_MXFP4_MXFP4" and sel.padded == (2944, 2944)
    assert any("biases are dropped" in n for n in sel.notes)
    # Without biases strict runs it too (it is in the auto list on 100 <= cc < 120).
    plain = LayerSpec(hidden_size=2880, intermediate_size=2880, activation_fn="swiglu_oai",
                      has_bias=False)
    assert winner(req("sm110", "strict", layer=plain, drop=("humming", "torch"),
                      **request)) == "CUTLASS_MXFP4_MXFP4"


def test_aiter_triton_w4a16_is_vllms_rocm_auto_pick():
    for arch in ("gfx942", "gfx1250"):
        assert winner(req(arch, "vllm-0.33")) == "AITER_TRITON_MXFP4_BF16"
        assert winner(req(arch, "strict")) == "AITER_TRITON_MXFP4_BF16"
    assert winner(req("gfx950", "vllm-0.33")) == "AITER_MXFP4_BF16"
    assert MATRIX.by_name["AITER_TRITON_MXFP4_MXFP4"].archs == {"gfx1250"}
    assert MATRIX.by_name["AITER_MXFP4_MXFP4"].auto


def test_triton_runs_on_sm107_and_sm110_in_vllm():
    assert MATRIX.by_name["TRITON"].archs >= {"sm107", "sm110", "gfx942", "gfx950"}
    assert winner(req("sm110", "vllm-0.33")) == "TRITON"
    assert winner(req("sm107", "vllm-0.33", drop=("flashinfer",))) == "TRITON"


def test_emulation_applies_any_key_and_needs_amd_quark_in_vllm_033():
    sel = select(req("sm90", "vllm-0.33", activation=kMxfp8Dynamic))
    assert sel.backend == "EMULATION" and sel.activation == kMxfp8Dynamic
    assert not sel.activation_fallback
    sel = select(req("sm90", "vllm-0.33", activation=kMxfp8Dynamic, drop=("amd_quark",)))
    assert sel.activation_fallback  # BF16 stand-in, with vLLM's warning
    assert sel.backend != "EMULATION"


def test_humming_honours_the_override_in_vllm_033():
    sel = select(req("sm90", "vllm-0.33", "humming", activation=kMxfp8Dynamic))
    assert sel.backend == "HUMMING" and sel.activation == kMxfp8Dynamic
    assert not sel.activation_fallback
    # A checkpoint key is filtered the same way, but vLLM warns it falls back.
    sel = select(req("sm90", "vllm-0.33", "humming", checkpoint_activation=kMxfp8Dynamic))
    assert sel.activation_fallback


def test_marlin_and_humming_run_from_capability_75():
    for policy in ("strict", "vllm-0.33", "vllm-0.22"):
        assert winner(req("sm75", policy, "marlin")) == "MARLIN"
    assert "sm75" in MATRIX.by_name["HUMMING"].archs


def test_vllm_padding_per_release_and_platform():
    assert select(req("sm100", "vllm-0.33")).padded == (3072, 2944)
    assert select(req("sm100", "vllm-0.22")).padded == (3072, 3072)
    assert select(req("sm90", "vllm-0.33", "humming")).padded == (2880, 2880)
    assert select(req("xpu", "vllm-0.33")).padded == (2880, 2880)
    sel = select(req("gfx950", "vllm-0.33", "aiter", activation=kMxfp4Dynamic))
    assert sel.backend == "AITER_MXFP4_MXFP4" and sel.padded == (3072, 2944)
    assert select(req("gfx950", "vllm-0.33", "triton_unfused")).padded == (3072, 3072)


def test_vllm_033_falls_back_to_bf16_and_022_raises():
    sel = select(req("sm90", "vllm-0.33", "marlin", activation=kMxfp8Dynamic))
    assert sel.backend == "MARLIN" and sel.activation_fallback and sel.activation is None
    err = refusal(req("sm90", "vllm-0.22", "marlin", activation=kMxfp8Dynamic))
    assert set(reasons(err).values()) == {Reason.ACTIVATION_MISMATCH}


def test_names_vllms_kernel_config_refuses_fail_before_the_activation_conflict():
    # --moe-backend is validated when vLLM is configured, before any layer is built.
    conflicting = dict(activation=kMxfp8Dynamic, checkpoint_activation=kMxfp4Dynamic)
    with pytest.raises(UnknownBackend) as info:
        select(req("sm100", "vllm-0.33", "flashinfer_trtllm_afp8", **conflicting))
    assert "flashinfer_trtllm" in info.value.choices
    with pytest.raises(ActivationConflict):
        select(req("sm100", "vllm-0.33", "flashinfer_trtllm", **conflicting))
    with pytest.raises(UnknownBackend):
        select(req("gfx1250", "vllm-0.22", "aiter_triton_mxfp4_bf16"))


def test_vllm_022_retries_the_platform_variant_ignoring_the_key():
    sel = select(req("cpu", "vllm-0.22", activation=kMxfp8Dynamic))
    assert sel.backend == "CPU" and not sel.activation_fallback
    assert any("last try" in n for n in sel.notes)
    with pytest.raises(NoEligibleBackend):
        select(req("sm80", "vllm-0.22", activation=kMxfp8Dynamic))


def test_strict_reports_what_vllm_033_would_run():
    sel = select(req("sm103", "strict"))
    assert sel.backend == "TRITON"
    assert sel.vllm and "FLASHINFER_TRTLLM_MXFP4_BF16" in sel.vllm and "known_bad" in sel.vllm
    assert sel.to_dict()["vllm"] == sel.vllm and sel.vllm in sel.describe()
    assert select(req("sm90", "strict")).vllm is None  # same answer: nothing to say
    assert select(req("sm103", "vllm-0.33")).vllm is None
    err = refusal(req("sm80", "strict", "marlin", activation=kMxfp8Dynamic))
    assert err.vllm and "MARLIN" in err.vllm and err.to_dict()["vllm"] == err.vllm


# ------------------------------------------------------------------ part 2: divergences


def test_divergence_strict_only_names():
    assert winner(req("sm100", "strict", "flashinfer_trtllm_afp8")) == \
        "FLASHINFER_TRTLLM_MXFP4_MXFP8"
    with pytest.raises(UnknownBackend):
        select(req("sm100", "vllm-0.33", "flashinfer_trtllm_afp8"))
    refusal(req("sm120", "strict", "flashinfer_cutile"))  # a name strict knows
    with pytest.raises(UnknownBackend):
        select(req("sm120", "vllm-0.33", "flashinfer_cutile"))


def test_divergence_known_bad():
    assert winner(req("sm103", "vllm-0.33")) == "FLASHINFER_TRTLLM_MXFP4_BF16"
    assert winner(req("sm103", "strict")) == "TRITON"
    assert winner(req("sm110", "vllm-0.33")) == "TRITON"
    assert reasons(select(req("sm110", "strict")))["TRITON"] is Reason.KNOWN_BAD


def test_divergence_biases_dropped():
    assert winner(req("sm100", "vllm-0.33", activation=kMxfp4Dynamic)) == "CUTLASS_MXFP4_MXFP4"
    assert winner(req("sm100", "strict", activation=kMxfp4Dynamic)) != "CUTLASS_MXFP4_MXFP4"


def test_divergence_emulation_everywhere():
    assert winner(req("cpu", "strict", "emulation")) == "EMULATION"
    assert reasons(refusal(req("cpu", "vllm-0.33", "emulation"))) == {
        "EMULATION": Reason.PLATFORM_UNSUPPORTED}
    assert winner(req("sm90", "strict", "emulation", drop=("amd_quark",))) == "EMULATION"
    assert reasons(refusal(req("sm90", "vllm-0.33", "emulation", drop=("amd_quark",)))) == {
        "EMULATION": Reason.LIBRARY_MISSING}


def test_divergence_wider_runner_archs():
    assert winner(req("sm110", "strict", "flashinfer_cutlass", activation=kMxfp8Dynamic)) == \
        "FLASHINFER_CUTLASS_MXFP4_MXFP8"
    refusal(req("sm110", "vllm-0.33", "flashinfer_cutlass", activation=kMxfp8Dynamic))


def test_divergence_quantized_pick_reported():
    sel = select(req("sm100", "strict", "flashinfer_cutlass"))
    assert sel.backend == "FLASHINFER_CUTLASS_MXFP4_MXFP8" and sel.activation_fallback
    err = refusal(req("sm100", "vllm-0.33", "flashinfer_cutlass"))
    assert reasons(err) == {"FLASHINFER_CUTLASS_MXFP4_BF16": Reason.ACTIVATION_MISMATCH,
                            "FLASHINFER_CUTLASS_MXFP4_MXFP8": Reason.ACTIVATION_MISMATCH}


def test_divergence_humming_applies_the_key():
    # Strict: HUMMING applies FP8 per token itself (the project's adapter runs it) ...
    sel = select(req("sm90", "strict", activation=kFp8DynamicTokenSym))
    assert sel.backend == "HUMMING" and sel.activation == kFp8DynamicTokenSym
    assert winner(req("sm90", "vllm-0.33", activation=kFp8DynamicTokenSym)) == "EMULATION"
    # ... but not MXFP8 (no SM90 schedule in humming-kernels 0.1.19); vLLM honours any override.
    refusal(req("sm90", "strict", "humming", activation=kMxfp8Dynamic))
    assert winner(req("sm90", "vllm-0.33", "humming", activation=kMxfp8Dynamic)) == "HUMMING"


def test_divergence_no_silent_bf16_fallback():
    refusal(req("sm90", "strict", "marlin", activation=kMxfp8Dynamic))
    assert select(req("sm90", "vllm-0.33", "marlin", activation=kMxfp8Dynamic)).activation_fallback
    assert select(req("sm90", "strict", "marlin", activation=kMxfp8Dynamic,
                      allow_activation_fallback=True)).activation_fallback


def test_divergence_emulation_implemented_keys():
    assert winner(req("sm90", "vllm-0.33", activation=kFp8Dynamic128Sym)) == "EMULATION"
    err = refusal(req("sm90", "strict", activation=kFp8Dynamic128Sym))
    assert reasons(err)["EMULATION"] is Reason.ACTIVATION_MISMATCH


def test_divergence_both_refuse():
    strict = reasons(refusal(req("sm75", "strict", "b12x")))
    theirs = reasons(refusal(req("sm75", "vllm-0.33", "b12x")))
    assert strict["B12X_MXFP4_BF16"] is Reason.ARCH_UNSUPPORTED
    assert theirs["B12X_MXFP4_BF16"] is Reason.BIAS_UNSUPPORTED  # B12X asks biases first


def test_a_gpt_oss_checkpoint_needs_capability_80_under_the_vllm_policies():
    from oracle import select_for_model
    kw = dict(device="sm75", environment=env())
    assert select_for_model("gpt-oss-20b", **kw).selection.backend == "MARLIN"  # strict
    for policy in ("vllm-0.33", "vllm-0.22"):
        with pytest.raises(ConfigError) as info:
            select_for_model("gpt-oss-20b", policy=policy, **kw)
        assert info.value.path == "device" and "8.0" in info.value.constraint
        assert select_for_model("gpt-oss-20b", policy=policy, device="sm80",
                                environment=env()).selection.backend == "MARLIN"


def test_online_mxfp4_reaches_the_oracle_from_capability_75():
    from oracle import select_for_model
    from oracle.model import load_model_config
    _, cfg = load_model_config("gpt-oss-20b")
    cfg = {k: v for k, v in cfg.items() if k != "quantization_config"}  # a BF16 checkpoint
    # vLLM 0.33's online MXFP4 is W4A4: it hands the oracle kMxfp4Dynamic
    # (quantization/online/mxfp4.py:143-157), so the variant that quantizes activations to
    # any key runs first on sm75; 0.22 has no online MXFP4 method (weight-only path).
    for policy, backend in (("vllm-0.33", "EMULATION"), ("vllm-0.22", "MARLIN")):
        ms = select_for_model(cfg, device="sm75", quantization="mxfp4", policy=policy,
                              environment=env())
        assert ms.selection.backend == backend
        assert ms.request.checkpoint == "online-mxfp4"
        with pytest.raises(ConfigError):
            select_for_model(cfg, device="sm70", quantization="mxfp4", policy=policy,
                             environment=env())


def test_tensor_parallelism_pads_and_gates_the_per_rank_intermediate_size():
    # gpt-oss-120b at TP 8: 2880 // 8 = 360 per rank (vLLM pads that, not the whole layer).
    layer = LayerSpec(hidden_size=2880, intermediate_size=2880, num_experts=128, top_k=4,
                      activation_fn="swiglu_oai", has_bias=True, tp_size=8)
    for policy in ("strict", "vllm-0.33"):
        sel = select(req("sm90", policy, "marlin", layer=layer))
        assert sel.padded == (3072, 384)
        assert any("360 -> 384" in n for n in sel.notes)
    # EMULATION pads to multiples of 32 under both: 360 is not one, 384 is.
    for policy in ("strict", "vllm-0.33"):
        assert select(req("sm90", policy, "emulation", layer=layer)).padded == (2880, 384)


def test_cli_tensor_parallel_size_is_vllms_flag(capsys):
    import json

    from oracle.cli import main
    for flag in ("--tensor-parallel-size", "-tp"):
        assert main(["select", "--model", "gpt-oss-120b", "--device", "sm90", "--libraries",
                     "all", "--moe-backend", "marlin", flag, "8", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["padded"] == [3072, 384] and data["request"]["layer"]["tp_size"] == 8
    assert main(["select", "-tp", "0"]) == 2
    assert "--tensor-parallel-size" in capsys.readouterr().err
