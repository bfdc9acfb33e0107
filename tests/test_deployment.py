"""Deployment axes: parallelism, all2all, EPLB, LoRA, routing, model families.

Examples pin what vLLM 0.33's experts classes do on each axis (the conformance suite
proves the same against vLLM's code); the properties hold for any deployment.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracle import (ConfigError, Deployment, Device, Environment, LayerSpec, NoEligibleBackend,
                    Reason, SelectionRequest, explain, select)
from oracle.matrix import RELEASES
from oracle.model import select_for_model
from oracle.vllm_rules import routing_for

GPT_OSS = LayerSpec(hidden_size=2880, intermediate_size=2880, num_experts=32, top_k=4,
                    activation_fn="swiglu_oai", swiglu_alpha=1.702, swiglu_limit=7.0,
                    has_bias=True)


def req(arch: str, backend: str = "auto", policy: str = "vllm-0.33", **deployment) -> SelectionRequest:
    routing = deployment.pop("routing", None)
    override = deployment.pop("activation", None)
    layer = GPT_OSS if routing is None else LayerSpec(**{**GPT_OSS.to_dict(),
                                                         "routing_method": routing})
    return SelectionRequest(device=Device.parse(arch), moe_backend=backend, policy=policy,
                            environment=Environment.assume_all(), layer=layer,
                            activation=override, deployment=Deployment(**deployment))


# ------------------------------------------------------------------ the Deployment value

def test_vllm_flattens_tp_across_dp_without_ep_and_gives_whole_experts_with_it():
    plain = Deployment(tensor_parallel_size=2, data_parallel_size=2)
    assert (plain.use_ep, plain.moe_tp_size, plain.ep_size) == (False, 4, 1)
    ep = Deployment(tensor_parallel_size=2, data_parallel_size=2, enable_expert_parallel=True)
    assert (ep.use_ep, ep.moe_tp_size, ep.ep_size, ep.use_all2all_kernels) == (True, 1, 4, True)
    one_gpu = Deployment(enable_expert_parallel=True)  # EP needs more than one GPU
    assert (one_gpu.use_ep, one_gpu.moe_tp_size) == (False, 1)


def test_only_deepep_low_latency_all2all_switches_to_the_batched_format():
    ll = Deployment(data_parallel_size=2, enable_expert_parallel=True,
                    all2all_backend="deepep_low_latency")
    assert ll.batched_format and ll.holds("batched")
    ht = Deployment(data_parallel_size=2, enable_expert_parallel=True,
                    all2all_backend="deepep_high_throughput")
    assert not ht.batched_format and ht.holds("deepep_ht")
    # Without dp > 1 there is no all2all dispatch at all, whatever the flag says.
    assert not Deployment(tensor_parallel_size=2, enable_expert_parallel=True,
                          all2all_backend="deepep_low_latency").batched_format


@pytest.mark.parametrize("kwargs, field", [
    ({"enable_eplb": True}, "enable_eplb"),
    ({"enable_eplb": True, "enable_expert_parallel": True}, "enable_eplb"),  # one GPU
    ({"all2all_backend": "deepep"}, "all2all_backend"),
    ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
    ({"data_parallel_size": True}, "data_parallel_size"),
    ({"enable_lora": "yes"}, "enable_lora"),
])
def test_a_deployment_vllm_refuses_is_a_config_error(kwargs, field):
    with pytest.raises(ConfigError) as err:
        Deployment(**kwargs)
    assert err.value.what == field


def test_a_layer_that_disagrees_with_the_deployment_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        SelectionRequest(layer=LayerSpec(tp_size=2),
                         deployment=Deployment(tensor_parallel_size=8))
    assert err.value.what == "layer.tp_size"
    synced = SelectionRequest(layer=LayerSpec(intermediate_size=2880),
                              deployment=Deployment(tensor_parallel_size=2,
                                                    data_parallel_size=2))
    assert synced.layer.tp_size == 4 and synced.layer.per_rank_intermediate == 720


# ------------------------------------------------------------------ kernel class, per axis

@pytest.mark.parametrize("policy", ["vllm-0.33", "strict"])
def test_dp_builds_the_modular_trtllm_class_and_says_why(policy):
    sel = select(req("sm100", policy=policy, data_parallel_size=2))
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_BF16"
    assert sel.kernel_class == "TrtLlmMxfp4ExpertsModular"
    assert sel.kernel_class_notes and "TrtLlmMxfp4ExpertsMonolithic" in sel.kernel_class_notes[0]
    assert sel.to_dict()["kernel_class"] == "TrtLlmMxfp4ExpertsModular"
    assert "kernel class: TrtLlmMxfp4ExpertsModular" in sel.describe()
    # the layer is sharded tp * dp ways without EP: 1440 per rank, padded to 1536
    assert sel.padded == (3072, 1536)


def test_aiter_triton_has_no_modular_class_and_drops_out_under_dp():
    one = select(req("gfx942", "aiter_triton_mxfp4_bf16"))
    assert one.kernel_class == "AiterW4A16ExpertsMonolithic"
    with pytest.raises(NoEligibleBackend) as err:
        select(req("gfx942", "aiter_triton_mxfp4_bf16", data_parallel_size=2))
    assert {r.reason for r in err.value.rejected} == {Reason.PARALLELISM_UNSUPPORTED}


def test_deepep_low_latency_turns_a_marlin_pin_into_batched_marlin_under_vllm():
    kwargs = dict(data_parallel_size=2, enable_expert_parallel=True,
                  all2all_backend="deepep_low_latency")
    sel = select(req("sm90", "marlin", **kwargs))
    assert (sel.backend, sel.kernel_class) == ("BATCHED_MARLIN", "BatchedMarlinExperts")
    assert select(req("sm100", **kwargs)).backend == "BATCHED_MARLIN"
    # strict: a pin is a pin -- MARLIN's standard-format class refuses, and the report
    # says what vLLM would run instead
    with pytest.raises(NoEligibleBackend) as err:
        select(req("sm90", "marlin", policy="strict", **kwargs))
    assert [r.reason for r in err.value.rejected] == [Reason.PARALLELISM_UNSUPPORTED]
    assert "BATCHED_MARLIN" in (err.value.vllm or "")


def test_lora_keeps_only_lora_capable_classes():
    sel = select(req("sm100", enable_lora=True))
    assert (sel.backend, sel.kernel_class) == ("MARLIN", "MarlinExperts")
    refused = {v.backend: v.reason for v in explain(req("sm100", enable_lora=True))
               if v.reason is not None}
    assert refused["FLASHINFER_TRTLLM_MXFP4_BF16"] is Reason.LORA_UNSUPPORTED


def test_a_trtllm_pin_with_lora_builds_the_bf16_lora_class_and_refuses_mxfp8():
    sel = select(req("sm100", "flashinfer_trtllm", enable_lora=True))
    assert (sel.backend, sel.kernel_class) == ("FLASHINFER_TRTLLM_MXFP4_BF16",
                                               "TrtLlmMxfp4LoRAExperts")
    sel = select(req("sm100", "flashinfer_trtllm", enable_lora=True, activation="mxfp8"))
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_BF16" and sel.activation_fallback
    refused = {r.backend: r.reason for r in sel.rejected}
    assert refused["FLASHINFER_TRTLLM_MXFP4_MXFP8"] is Reason.LORA_UNSUPPORTED
    with pytest.raises(NoEligibleBackend) as err:  # strict names the variant itself
        select(req("sm100", "flashinfer_trtllm_mxfp4_mxfp8", policy="strict", enable_lora=True))
    assert [r.reason for r in err.value.rejected] == [Reason.LORA_UNSUPPORTED]


def test_grouped_topk_routing_passes_the_trtllm_monolithic_class_not_the_triton_one():
    trt = select(req("sm100", "flashinfer_trtllm", routing="DeepSeekV3"))
    assert trt.kernel_class == "TrtLlmMxfp4ExpertsMonolithic"
    tri = select(req("sm100", "triton", routing="DeepSeekV3"))
    assert tri.kernel_class == "OAITritonExperts"
    assert "routing method DeepSeekV3" in tri.kernel_class_notes[0]


def test_eplb_fails_the_gpt_oss_quant_method_in_vllm_and_strict_reports_it():
    kwargs = dict(tensor_parallel_size=2, enable_expert_parallel=True, enable_eplb=True)
    with pytest.raises(ConfigError) as err:
        select(req("sm90", **kwargs))
    assert err.value.what == "enable_eplb"
    sel = select(req("sm90", policy="strict", **kwargs))
    assert sel.vllm and "refuse" in sel.vllm
    with pytest.raises(ConfigError):
        select(req("cpu", **kwargs))  # vLLM's ParallelConfig: CUDA / ROCm / XPU only


def test_vllm_022_rules_do_not_guess_beyond_tensor_parallelism():
    assert select(req("sm90", policy="vllm-0.22", tensor_parallel_size=2)).backend
    with pytest.raises(ConfigError) as err:
        select(req("sm90", policy="vllm-0.22", data_parallel_size=2))
    assert err.value.what == "deployment"


# ------------------------------------------------------------------ model families

def test_deepseek_v4_follows_its_own_selector_and_ignores_the_override_in_vllm():
    sel = select_for_model("deepseek-v4-flash", device="sm100", policy="vllm-0.33",
                           environment=Environment.assume_all(),
                           quantization_config={"moe": {"activation": "mxfp8"}}).selection
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_MXFP8"
    assert sel.request.family == "deepseek-v4"
    assert any("ignores the activation override" in n for n in sel.notes)
    # DeepseekV4 routing is not one the monolithic TRT-LLM class routes itself
    assert sel.kernel_class == "TrtLlmMxfp4ExpertsModular"
    hopper = select_for_model("deepseek-v4-flash", device="sm90", policy="vllm-0.33",
                              environment=Environment.assume_all()).selection
    assert hopper.backend == "HUMMING"  # prioritize_humming on SM90
    strict = select_for_model("deepseek-v4-flash", device="sm100",
                              environment=Environment.assume_all(),
                              quantization_config={"moe": {"activation": "mxfp8"}}).selection
    assert strict.activation is not None and strict.activation.dtype == "fp8_e4m3"


def test_the_family_comes_from_model_type_or_the_flag():
    ds = select_for_model("deepseek-v4-flash", device="sm100",
                          environment=Environment.assume_all()).request
    assert ds.family == "deepseek-v4" and ds.layer.routing_method == "DeepseekV4"
    assert ds.layer.intermediate_size == 2048 and ds.layer.has_bias is False
    forced = select_for_model("gpt-oss-20b", device="sm100", model_family="deepseek-v4",
                              environment=Environment.assume_all()).request
    assert forced.family == "deepseek-v4"
    assert SelectionRequest(family="deepseek_v4").family == "deepseek-v4"  # model_type spelling
    with pytest.raises(ConfigError) as err:
        select_for_model("gpt-oss-20b", device="sm100", model_family="llama")
    assert err.value.what == "model_family"


# ------------------------------------------------------------------ properties

_deployments = st.builds(
    lambda tp, dp, ep, a2a, lora: Deployment(tensor_parallel_size=tp, data_parallel_size=dp,
                                             enable_expert_parallel=ep, all2all_backend=a2a,
                                             enable_lora=lora),
    st.sampled_from((1, 2, 8)), st.sampled_from((1, 2)), st.booleans(),
    st.sampled_from(("allgather_reducescatter", "deepep_low_latency", "deepep_high_throughput",
                     "flashinfer_nvlink_two_sided", "naive")), st.booleans())
_archs = st.sampled_from(("sm90", "sm100", "sm103", "sm120", "gfx942", "gfx950", "xpu", "cpu"))
_backends = st.sampled_from(("auto", "flashinfer_trtllm", "flashinfer_cutlass", "triton",
                             "marlin", "humming", "aiter", "emulation"))


@given(_archs, _backends, _deployments, st.sampled_from(("vllm-0.33", "strict")))
def test_the_reported_kernel_class_accepts_the_deployment(arch, backend, dep, policy):
    request = SelectionRequest(device=Device.parse(arch), moe_backend=backend, policy=policy,
                               environment=Environment.assume_all(),
                               layer=LayerSpec(**{**GPT_OSS.to_dict(), "tp_size": None}),
                               deployment=dep)
    try:
        sel = select(request)
    except NoEligibleBackend:
        return
    release = RELEASES["0.33.0"]
    if sel.kernel_class is None:
        assert sel.backend not in release.variant
        return
    variant = release.variant[sel.backend]
    assert sel.kernel_class in (*variant.pinned_lora_classes, *variant.experts)
    record = release.experts_class[sel.kernel_class]
    assert not any(dep.holds(c) for c in record.refuses)
    assert record.format == ("batched" if dep.batched_format else "standard")
    assert record.lora or not dep.enable_lora
    assert not record.routing or routing_for(request, release) in record.routing


@given(_archs, _backends, _deployments)
def test_turning_lora_off_never_removes_an_eligible_candidate(arch, backend, dep):
    def eligible(d: Deployment) -> set[str]:
        r = SelectionRequest(device=Device.parse(arch), moe_backend=backend, policy="vllm-0.33",
                             environment=Environment.assume_all(), deployment=d,
                             layer=LayerSpec(**{**GPT_OSS.to_dict(), "tp_size": None}))
        return {v.backend for v in explain(r) if v.reason is None}

    on = Deployment(**{**dep.to_dict(), "enable_lora": True})
    off = Deployment(**{**dep.to_dict(), "enable_lora": False})
    if backend == "flashinfer_trtllm":  # the pinned LoRA class is an addition, not a subset
        return
    assert eligible(on) <= eligible(off)


# ------------------------------------------------------------------ the CLI spellings

def _run(argv, capsys):
    from oracle.cli import main
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_vllms_flag_spellings_reach_the_request(capsys):
    import json
    rc, out, _ = _run(["select", "--device", "sm100", "--libraries", "all", "--policy",
                       "vllm-0.33", "-dp", "2", "-ep", "--all2all-backend",
                       "deepep_low_latency", "--json"], capsys)
    data = json.loads(out)
    assert rc == 0 and data["backend"] == "BATCHED_MARLIN"
    assert data["request"]["deployment"] == {
        "tensor_parallel_size": 1, "data_parallel_size": 2, "enable_expert_parallel": True,
        "all2all_backend": "deepep_low_latency", "enable_eplb": False, "enable_lora": False}
    assert data["kernel_class"] == "BatchedMarlinExperts"
    rc, out, _ = _run(["explain", "--device", "sm100", "--libraries", "all", "--enable-lora",
                       "--json"], capsys)
    assert rc == 0 and json.loads(out)["kernel_class"] == "MarlinExperts"


@pytest.mark.parametrize("argv, field", [
    (["--all2all-backend", "deepep"], "--all2all-backend"),
    (["-dp", "two"], "--data-parallel-size"),
    (["--routing-method", "grouped"], "--routing-method"),
    (["--model-family", "llama"], "model_family"),
    (["--enable-eplb"], "enable_eplb"),
])
def test_an_unknown_flag_value_is_a_config_error_listing_the_choices(argv, field, capsys):
    import json
    rc, out, _ = _run(["select", "--device", "sm100", "--json", *argv], capsys)
    assert rc == 2
    data = json.loads(out)
    assert data["error"] == "ConfigError" and field in data["message"]


def test_preflight_needs_a_target_device_and_reports_the_kernel_class(capsys):
    import json
    rc, _, err = _run(["preflight", "--model", "gpt-oss-20b"], capsys)
    assert rc == 2 and "--device" in err
    rc, out, _ = _run(["preflight", "--model", "gpt-oss-120b", "--device", "B200", "-dp", "2",
                       "--policy", "vllm-0.33", "--json"], capsys)
    data = json.loads(out)
    assert rc == 0 and data["moe"]["kernel_class"] == "TrtLlmMxfp4ExpertsModular"
    assert data["moe"]["floor_us"]
