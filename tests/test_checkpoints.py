"""Checkpoint families: what each quant method hands vLLM's MXFP4 MoE oracle.

The records live in matrix/vllm.toml (``checkpoint``); the loader names the family a
config.json belongs to, and the vLLM policies follow its quant method: the key it passes,
the selector it calls, or -- compressed-tensors MXFP4 -- its own choice.
"""

from __future__ import annotations

import pytest

from oracle import ConfigError, Environment, LayerSpec, SelectionRequest, select
from oracle.errors import MatrixError
from oracle.keys import (BF16, UNSET, kFp8DynamicTokenSym, kFp8StaticTensorSym, kMxfp4Dynamic,
                         kMxfp4Static, kMxfp8Dynamic)
from oracle.matrix import RELEASES
from oracle.model import CheckpointQuant, checkpoint_family, load_model_config, select_for_model
from oracle.platforms import Device

GPT_OSS = LayerSpec(hidden_size=2880, intermediate_size=2880, num_experts=32, top_k=4,
                    activation_fn="swiglu_oai", has_bias=True)


def ck(method, act=UNSET):
    return CheckpointQuant(method, kMxfp4Static, act, ())


@pytest.mark.parametrize("quant, family, expected", [
    (ck("mxfp4"), "gpt-oss", "gpt-oss-mxfp4"),
    (ck("mxfp4"), "deepseek-v4", "mxfp4"),
    (ck("deepseek_v4_fp8"), "deepseek-v4", "deepseek-v4-fp8"),
    (ck("quark", BF16), "gpt-oss", "quark-w-mxfp4"),
    (ck("quark", kFp8StaticTensorSym), "gpt-oss", "quark-w-mxfp4-a-fp8"),
    (ck("quark", kMxfp4Dynamic), "gpt-oss", "quark-w-mxfp4-a-mxfp4"),
    (ck("quark", kMxfp8Dynamic), "gpt-oss", None),  # no QuarkOCP_MX selection branch
    (ck("compressed-tensors", BF16), "gpt-oss", "compressed-tensors-mxfp4"),
    (ck("compressed-tensors", kMxfp4Dynamic), "gpt-oss", "compressed-tensors-mxfp4"),
    (ck("compressed-tensors", kFp8DynamicTokenSym), "gpt-oss", "compressed-tensors-w4a8-fp8"),
    (CheckpointQuant(None, None, UNSET, ()), "gpt-oss", "online-mxfp4"),
])
def test_the_loader_names_the_checkpoint_family_as_vllm_tells_them_apart(quant, family, expected):
    assert checkpoint_family(quant, family) == expected
    if expected is not None:
        assert expected in RELEASES["0.33.0"].checkpoint


def req(arch, checkpoint, backend="auto", **kw):
    return SelectionRequest(device=Device.parse(arch), moe_backend=backend, policy="vllm-0.33",
                            environment=Environment.assume_all(), layer=GPT_OSS,
                            checkpoint=checkpoint, **kw)


@pytest.mark.parametrize("arch, backend, cls", [
    ("sm100", "CUTLASS_MXFP4_MXFP4", "CutlassExpertsMxfp4"),
    ("sm90", "MARLIN", "MarlinExperts"),
    ("xpu", "XPU", "XPUExpertsMxFp4"),
    ("gfx950", "MARLIN", "MarlinExperts"),
])
def test_compressed_tensors_mxfp4_picks_its_kernel_itself(arch, backend, cls):
    sel = select(req(arch, "compressed-tensors-mxfp4", "triton"))
    assert (sel.backend, sel.kernel_class) == (backend, cls)
    assert any("--moe-backend triton is ignored" in n for n in sel.notes)


def test_compressed_tensors_mxfp4_still_asks_the_oracle_for_b12x_and_moe_ep_names():
    silu = LayerSpec(hidden_size=4096, intermediate_size=2048, num_experts=64, top_k=4,
                     activation_fn="swiglu", has_bias=False)
    sel = select(SelectionRequest(device=Device.parse("sm120"), moe_backend="b12x",
                                  policy="vllm-0.33", environment=Environment.assume_all(),
                                  checkpoint="compressed-tensors-mxfp4", layer=silu))
    assert sel.backend.startswith("B12X")


def test_the_key_the_method_hands_over_is_what_vllm_filters_by():
    # quark W4A8 with static input scales: kFp8StaticTensorSym first (AITER FP8 on gfx950)
    assert select(req("gfx950", "quark-w-mxfp4-a-fp8")).backend == "AITER_MXFP4_FP8"
    # online MXFP4 is W4A4: CUTLASS W4A4 on sm100
    assert select(req("sm100", "online-mxfp4")).backend == "CUTLASS_MXFP4_MXFP4"
    # the gpt-oss method hands over nothing, whatever the checkpoint file says
    sel = select(req("sm100", "gpt-oss-mxfp4", checkpoint_activation="mxfp8"))
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_BF16"


def test_eplb_follows_the_quant_methods_support():
    kwargs = dict(tensor_parallel_size=2, enable_expert_parallel=True, enable_eplb=True)
    from oracle import Deployment
    ok = select(req("sm90", "quark-w-mxfp4", deployment=Deployment(**kwargs)))
    assert ok.backend
    with pytest.raises(ConfigError) as err:
        select(req("sm90", "compressed-tensors-mxfp4", deployment=Deployment(**kwargs)))
    assert err.value.what == "enable_eplb"


def test_compressed_tensors_mxfp4_supports_eplb_with_a_moe_ep_backend_only():
    from oracle import Deployment
    silu = LayerSpec(hidden_size=4096, intermediate_size=2048, num_experts=64, top_k=4,
                     activation_fn="swiglu", has_bias=False)
    eplb = Deployment(tensor_parallel_size=2, enable_expert_parallel=True, enable_eplb=True)
    sel = select(SelectionRequest(device=Device.parse("sm100"), policy="vllm-0.33",
                                  moe_backend="flashinfer_moe_ep_cutedsl", layer=silu,
                                  environment=Environment.assume_all(), deployment=eplb,
                                  checkpoint="compressed-tensors-mxfp4"))
    assert sel.backend == "FLASHINFER_MOE_EP_CUTEDSL"
    assert "FLASHINFER_MOE_EP_CUTEDSL" in RELEASES["0.33.0"].checkpoint[
        "compressed-tensors-mxfp4"].eplb_variants


def test_an_unknown_checkpoint_family_is_a_config_error_listing_them():
    with pytest.raises(ConfigError) as err:
        select(req("sm90", "nvfp4"))
    assert err.value.what == "checkpoint"


def test_a_bundled_model_carries_its_checkpoint_family():
    for name, family in (("gpt-oss-20b", "gpt-oss-mxfp4"), ("deepseek-v4-flash",
                                                           "deepseek-v4-fp8")):
        ms = select_for_model(name, device="sm100", environment=Environment.assume_all())
        assert ms.request.checkpoint == family
        assert ms.to_dict()["request"]["checkpoint"] == family


def test_a_compressed_tensors_gpt_oss_checkpoint_end_to_end():
    _, cfg = load_model_config("gpt-oss-20b")
    cfg = dict(cfg, quantization_config={
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {
            "weights": {"type": "float", "num_bits": 4, "group_size": 32},
            "input_activations": {"type": "float", "num_bits": 4, "group_size": 32}}}})
    ms = select_for_model(cfg, device="sm100", policy="vllm-0.33",
                          environment=Environment.assume_all())
    assert ms.request.checkpoint == "compressed-tensors-mxfp4"
    assert ms.selection.backend == "CUTLASS_MXFP4_MXFP4"


def test_checkpoint_records_are_validated_at_load():
    import tomllib
    from pathlib import Path

    from oracle.matrix import MATRIX, load_releases
    from oracle.matrix.releases import parse_releases
    text = (Path(__file__).resolve().parents[1] / "matrix" / "vllm.toml").read_text()
    doc = tomllib.loads(text)
    doc["release"]["0.33.0"]["checkpoint"]["online-mxfp4"]["selector"] = "own"
    with pytest.raises(MatrixError):
        parse_releases(doc, MATRIX.by_name)
    assert load_releases(rows=MATRIX.by_name)["0.33.0"].checkpoint
