"""oracle.select / oracle.explain on the vLLM behaviours the issue names (design §4)."""

from __future__ import annotations

import pytest

from oracle import (BF16, ActivationConflict, ConfigError, Device, Environment, LayerSpec,
                    NoEligibleBackend, OracleError, Reason, Selection, SelectionRequest,
                    UnknownBackend, explain, select)
from oracle.keys import (kFp8DynamicTokenSym, kFp8StaticTensorSym, kMxfp4Dynamic, kMxfp4Static,
                         kMxfp8Dynamic)
from oracle.matrix import MATRIX
from oracle.selector import resolve_activation, resolve_backend_name

ALL = Environment.assume_all()


def req(device="sm90", moe_backend="auto", **kw) -> SelectionRequest:
    kw.setdefault("environment", ALL)
    return SelectionRequest(weight=kw.pop("weight", kMxfp4Static), device=Device.parse(device),
                            moe_backend=moe_backend, **kw)


def rejected_reasons(err_or_sel) -> dict[str, Reason]:
    return {r.backend: r.reason for r in err_or_sel.rejected}


def no_eligible(request: SelectionRequest) -> NoEligibleBackend:
    with pytest.raises(NoEligibleBackend) as info:
        select(request)
    return info.value


# ------------------------------------------------------------------ pinned vendor names


def test_trtllm_on_sm100_takes_bf16():
    sel = select(req("sm100", "flashinfer_trtllm"))
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_BF16"
    assert sel.activation is None
    assert sel.selected_by == "pinned"
    assert sel.activation_fallback is False


def test_trtllm_with_mxfp8_override():
    sel = select(req("sm100", "flashinfer_trtllm", activation=kMxfp8Dynamic))
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_MXFP8"
    assert sel.activation == kMxfp8Dynamic
    assert sel.activation_fallback is False


def test_trtllm_with_mxfp8_from_the_checkpoint():
    sel = select(req("sm100", "flashinfer_trtllm", checkpoint_activation=kMxfp8Dynamic))
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_MXFP8"


def test_cutlass_on_sm90_takes_bf16():
    sel = select(req("sm90", "flashinfer_cutlass"))
    assert sel.backend == "FLASHINFER_CUTLASS_MXFP4_BF16"
    assert sel.activation is None
    assert sel.activation_fallback is False


def test_cutlass_on_sm100_falls_back_to_mxfp8_and_says_so():
    sel = select(req("sm100", "flashinfer_cutlass"))
    assert sel.backend == "FLASHINFER_CUTLASS_MXFP4_MXFP8"
    assert sel.activation == kMxfp8Dynamic
    assert sel.activation_fallback is True
    assert sel.notes
    assert rejected_reasons(sel) == {"FLASHINFER_CUTLASS_MXFP4_BF16": Reason.ARCH_UNSUPPORTED}
    assert sel.to_dict()["activation_fallback"] is True


def test_triton_with_mxfp8_is_refused():
    err = no_eligible(req("sm90", "triton", activation=kMxfp8Dynamic))
    assert rejected_reasons(err) == {"TRITON": Reason.ACTIVATION_MISMATCH}
    assert err.rejected[0].detail
    assert "TRITON" in str(err)


def test_unknown_backend_suggests():
    with pytest.raises(UnknownBackend) as info:
        select(req("sm90", "flashinfer_trtlm"))
    err = info.value
    assert isinstance(err, OracleError) and isinstance(err, ValueError)
    assert err.suggestion == "flashinfer_trtllm"
    assert "flashinfer_trtllm" in err.choices
    assert set(MATRIX.backend_names()) <= set(err.choices)
    assert err.name == "flashinfer_trtlm"


def test_unknown_backend_without_close_match():
    with pytest.raises(UnknownBackend) as info:
        resolve_backend_name("qqqqqqqqqqqqqqqq")
    assert info.value.suggestion is None
    assert info.value.choices


@pytest.mark.parametrize("spelling", ["FLASHINFER_TRTLLM", "flashinfer-trtllm", "FlashInfer-TRTLLM",
                                      "  flashinfer_trtllm  "])
def test_backend_names_are_case_insensitive_and_accept_dashes(spelling):
    assert resolve_backend_name(spelling) == resolve_backend_name("flashinfer_trtllm")
    sel = select(req("sm100", spelling))
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_BF16"


@pytest.mark.parametrize("spelling", ["AUTO", "auto", "Auto"])
def test_auto_spellings(spelling):
    assert resolve_backend_name(spelling) is None
    assert select(req("sm90", spelling)).selected_by == "auto"


def test_member_names_pin_one_variant():
    assert resolve_backend_name("flashinfer_trtllm_mxfp4_mxfp8") == ("FLASHINFER_TRTLLM_MXFP4_MXFP8",)
    assert resolve_backend_name("FLASHINFER-CUTLASS-MXFP4-BF16") == ("FLASHINFER_CUTLASS_MXFP4_BF16",)


@pytest.mark.parametrize("family, member", [("flashinfer_trtllm_afp8", "FLASHINFER_TRTLLM_MXFP4_MXFP8"),
                                            ("flashinfer_cutlass_afp8",
                                             "FLASHINFER_CUTLASS_MXFP4_MXFP8")])
def test_afp8_names_reach_only_mxfp8(family, member):
    assert resolve_backend_name(family) == (member,)
    sel = select(req("sm100", family))
    assert sel.backend == member
    assert sel.activation == kMxfp8Dynamic
    # with a BF16 override nothing in the family qualifies
    err = no_eligible(req("sm100", family, activation=BF16))
    assert rejected_reasons(err) == {member: Reason.ACTIVATION_MISMATCH}
    # and on sm90 they do not degrade to the BF16 variant
    err = no_eligible(req("sm90", family))
    assert [r.backend for r in err.rejected] == [member]


# ------------------------------------------------------------------ activation resolution


def test_checkpoint_and_override_conflict():
    with pytest.raises(ActivationConflict) as info:
        select(req("sm100", "flashinfer_trtllm", activation=kMxfp8Dynamic,
                   checkpoint_activation=kMxfp4Dynamic))
    err = info.value
    assert isinstance(err, OracleError)
    assert err.checkpoint == "mxfp4_dynamic"
    assert err.override == "mxfp8"


def test_bf16_override_conflicts_with_a_quantized_checkpoint():
    with pytest.raises(ActivationConflict):
        select(req("sm100", activation=BF16, checkpoint_activation=kMxfp8Dynamic))


def test_explain_also_raises_on_conflict():
    with pytest.raises(ActivationConflict):
        explain(req("sm100", activation=kMxfp8Dynamic, checkpoint_activation=kFp8StaticTensorSym))


def test_same_key_on_both_sides_is_fine():
    sel = select(req("sm100", "flashinfer_trtllm", activation=kMxfp8Dynamic,
                     checkpoint_activation=kMxfp8Dynamic))
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_MXFP8"
    assert resolve_activation(req(activation=BF16, checkpoint_activation=BF16)) == (True, None)


def test_resolve_activation():
    assert resolve_activation(req()) == (False, None)
    assert resolve_activation(req(activation=BF16)) == (True, None)
    assert resolve_activation(req(activation=kMxfp8Dynamic)) == (True, kMxfp8Dynamic)
    assert resolve_activation(req(checkpoint_activation=kMxfp8Dynamic)) == (True, kMxfp8Dynamic)


@pytest.mark.parametrize("allow", [False, True])
def test_bf16_marker_is_strict(allow):
    err = no_eligible(req("sm100", "flashinfer_cutlass", activation=BF16,
                          allow_activation_fallback=allow))
    reasons = rejected_reasons(err)
    assert reasons["FLASHINFER_CUTLASS_MXFP4_BF16"] == Reason.ARCH_UNSUPPORTED
    assert reasons["FLASHINFER_CUTLASS_MXFP4_MXFP8"] == Reason.ACTIVATION_MISMATCH


def test_bf16_marker_selects_bf16_where_it_exists():
    sel = select(req("sm100", "flashinfer_trtllm", activation=BF16))
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_BF16"
    assert sel.activation_fallback is False


def test_explicit_fallback_is_opt_in_and_reported():
    sel = select(req("sm90", "triton", activation=kMxfp8Dynamic, allow_activation_fallback=True))
    assert sel.backend == "TRITON"
    assert sel.activation is None
    assert sel.activation_fallback is True
    assert sel.notes


def test_override_without_fallback_never_lands_on_bf16():
    sel = select(req("sm100", activation=kMxfp8Dynamic))
    assert sel.activation == kMxfp8Dynamic
    assert sel.activation_fallback is False


# ------------------------------------------------------------------ auto order


def test_auto_sm90_all_libraries_is_triton():
    sel = select(req("sm90"))
    assert sel.backend == "TRITON"
    assert sel.selected_by == "auto"


def test_auto_sm90_without_triton_kernels():
    env = Environment.parse("flashinfer,vllm_ops,humming,torch")
    sel = select(req("sm90", environment=env))
    assert sel.backend == "FLASHINFER_CUTLASS_MXFP4_BF16"
    assert rejected_reasons(sel)["TRITON"] == Reason.LIBRARY_MISSING


def test_auto_sm90_humming_before_marlin():
    env = Environment.parse("vllm_ops,humming,torch")
    sel = select(req("sm90", environment=env))
    assert sel.backend == "HUMMING"
    assert sel.eligible.index("HUMMING") < sel.eligible.index("MARLIN")


def test_auto_sm100_marlin_before_humming():
    env = Environment.parse("vllm_ops,humming,torch")
    sel = select(req("sm100", environment=env))
    assert sel.backend == "MARLIN"
    assert sel.eligible.index("MARLIN") < sel.eligible.index("HUMMING")


@pytest.mark.parametrize("device", ["sm120", "sm121"])
def test_auto_sm12x_triton_after_batched_marlin(device):
    sel = select(req(device))
    assert sel.backend == "MARLIN"
    order = [v.backend for v in explain(req(device))]
    assert order.index("TRITON") == order.index("BATCHED_MARLIN") + 1


def test_auto_sm100_is_trtllm_bf16():
    assert select(req("sm100")).backend == "FLASHINFER_TRTLLM_MXFP4_BF16"


def test_sm110_triton_is_known_bad():
    sel = select(req("sm110"))
    assert rejected_reasons(sel)["TRITON"] == Reason.KNOWN_BAD
    assert sel.backend != "TRITON"
    err = no_eligible(req("sm110", "triton"))
    assert rejected_reasons(err) == {"TRITON": Reason.KNOWN_BAD}


def test_library_version_gate():
    err = no_eligible(req("sm90", "flashinfer_cutlass_humming", activation=kFp8DynamicTokenSym,
                          environment=Environment.parse("flashinfer=0.6.0")))
    assert rejected_reasons(err) == {"FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING": Reason.LIBRARY_VERSION}


def test_library_version_gate_passes_new_enough():
    sel = select(req("sm90", "flashinfer_cutlass_humming", activation=kFp8DynamicTokenSym,
                     environment=Environment.parse("flashinfer=0.7.2")))
    assert sel.backend == "FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING"


def test_library_missing_gate():
    err = no_eligible(req("sm100", "flashinfer_trtllm", environment=Environment.none()))
    assert set(rejected_reasons(err).values()) == {Reason.LIBRARY_MISSING}


def test_pinned_opt_in_row_is_selectable_but_not_auto():
    sel = select(req("sm100", "deep_gemm", activation=None))
    assert sel.backend == "DEEPGEMM_MXFP4"
    assert rejected_reasons(select(req("sm100")))["DEEPGEMM_MXFP4"] == Reason.NOT_AUTO_SELECTABLE


# ------------------------------------------------------------------ layer gates


def test_b12x_rejects_unaligned_hidden():
    err = no_eligible(req("sm120", "b12x", layer=LayerSpec(hidden_size=2880)))
    assert set(rejected_reasons(err).values()) == {Reason.SHAPE_UNALIGNED}
    assert set(rejected_reasons(err)) == {"B12X_MXFP4_MXFP8", "B12X_MXFP4_BF16"}


def test_trtllm_pads_unaligned_hidden():
    sel = select(req("sm100", "flashinfer_trtllm", layer=LayerSpec(hidden_size=2880)))
    assert sel.backend == "FLASHINFER_TRTLLM_MXFP4_BF16"
    assert any("pad" in n for n in sel.notes)
    assert any("2880" in n for n in sel.notes)


def test_gpt_oss_swiglu_rejects_b12x():
    err = no_eligible(req("sm120", "b12x", layer=LayerSpec(activation_fn="swiglu_oai")))
    assert set(rejected_reasons(err).values()) == {Reason.ACTIVATION_FN_UNSUPPORTED}


def test_plain_swiglu_is_fine_on_b12x():
    sel = select(req("sm120", "b12x", layer=LayerSpec(activation_fn="swiglu", hidden_size=4096)))
    assert sel.backend == "B12X_MXFP4_BF16"


def test_bias_rejects_rows_without_bias():
    err = no_eligible(req("sm120", "b12x", layer=LayerSpec(has_bias=True)))
    assert set(rejected_reasons(err).values()) == {Reason.BIAS_UNSUPPORTED}


def test_ep_rejects_rows_without_ep():
    sel = select(req("sm120", layer=LayerSpec(ep_size=8)))
    for name, reason in rejected_reasons(sel).items():
        if not MATRIX.by_name[name].expert_parallel and reason not in (
                Reason.PLATFORM_UNSUPPORTED, Reason.ARCH_UNSUPPORTED, Reason.ACTIVATION_MISMATCH):
            assert reason == Reason.PARALLELISM_UNSUPPORTED, name
    err = no_eligible(req("cpu", "cpu", layer=LayerSpec(ep_size=8)))
    assert rejected_reasons(err) == {"CPU": Reason.PARALLELISM_UNSUPPORTED}
    err = no_eligible(req("sm120", "b12x", layer=LayerSpec(ep_size=8)))
    assert set(rejected_reasons(err).values()) == {Reason.PARALLELISM_UNSUPPORTED}


def test_ep_required_rows_need_ep():
    err = no_eligible(req("sm100", "flashinfer_moe_ep_cutedsl", layer=LayerSpec(ep_size=1)))
    assert rejected_reasons(err) == {"FLASHINFER_MOE_EP_CUTEDSL": Reason.PARALLELISM_UNSUPPORTED}
    sel = select(req("sm100", "flashinfer_moe_ep_cutedsl", layer=LayerSpec(ep_size=8)))
    assert sel.backend == "FLASHINFER_MOE_EP_CUTEDSL"


def test_unknown_layer_fields_abstain():
    for device in ("sm90", "sm100", "sm120", "cpu"):
        for backend in ("auto", "b12x", "flashinfer_moe_ep_cutedsl", "cpu"):
            base = [(v.backend, v.verdict, v.reason) for v in explain(req(device, backend))]
            blank = [(v.backend, v.verdict, v.reason)
                     for v in explain(req(device, backend, layer=LayerSpec()))]
            assert blank == base, (device, backend)


def test_layer_from_dict_ignores_unknown_fields():
    layer = LayerSpec.from_dict({"hidden_size": 2880, "routing": "renormalize", "foo": 1})
    assert layer == LayerSpec(hidden_size=2880)


# ------------------------------------------------------------------ errors and reports


def test_no_eligible_names_every_candidate():
    request = req("sm130")
    err = no_eligible(request)
    names = [r.backend for r in err.rejected]
    assert names == [r.name for r in MATRIX.auto_order("sm130")]
    assert len(names) == len(set(names)) == len(MATRIX.rows)
    message = str(err)
    for name in names:
        assert name in message
    assert err.to_dict()["error"] == "NoEligibleBackend"
    assert len(err.to_dict()["rejected"]) == len(names)
    assert all(r.detail for r in err.rejected)


def test_no_eligible_points_at_working_archs_or_alternatives():
    err = no_eligible(req("sm90", "flashinfer_trtllm"))
    assert err.alternatives  # auto would work here
    assert err.pinned == "flashinfer_trtllm"
    err = no_eligible(req("sm90", weight=kMxfp4Dynamic))
    assert set(rejected_reasons(err).values()) <= {Reason.WEIGHT_MISMATCH,
                                                   Reason.PLATFORM_UNSUPPORTED,
                                                   Reason.ARCH_UNSUPPORTED}


@pytest.mark.parametrize("device, backend", [("sm90", "auto"), ("sm100", "auto"), ("sm120", "auto"),
                                             ("sm100", "flashinfer_cutlass"), ("gfx950", "aiter"),
                                             ("cpu", "auto"), ("sm110", "marlin")])
def test_explain_agrees_with_select(device, backend):
    request = req(device, backend)
    verdicts = explain(request)
    sel = select(request)
    assert [v.position for v in verdicts] == list(range(1, len(verdicts) + 1))
    if backend == "auto":
        assert [v.backend for v in verdicts] == [r.name for r in MATRIX.auto_order(
            request.device.name)]
    else:
        assert tuple(v.backend for v in verdicts) == resolve_backend_name(backend)
    selected = [v for v in verdicts if v.verdict == "selected"]
    assert len(selected) == 1
    assert selected[0].backend == sel.backend
    assert {v.backend for v in verdicts if v.verdict != "rejected"} == set(sel.eligible)
    assert [(v.backend, v.reason) for v in verdicts if v.verdict == "rejected"] == \
        [(r.backend, r.reason) for r in sel.rejected]


def test_explain_never_raises_for_nothing_eligible():
    verdicts = explain(req("sm130"))
    assert verdicts
    assert all(v.verdict == "rejected" and v.reason is not None for v in verdicts)


def test_selection_to_dict_contract():
    sel = select(req("sm90"))
    d = sel.to_dict()
    assert {"backend", "weight", "activation", "selected_by", "eligible", "rejected",
            "request"} <= set(d)
    assert d["backend"] == "TRITON"
    assert d["weight"] == "mxfp4_static"
    assert d["activation"] == "bf16"
    assert d["selected_by"] == "auto"
    assert d["eligible"][0] == "TRITON"
    for r in d["rejected"]:
        assert set(r) == {"backend", "reason", "detail"}
        assert Reason(r["reason"])
    assert isinstance(d["request"], dict)
    assert isinstance(sel, Selection)
    assert sel.describe()


def test_selection_to_dict_names_quantized_activation():
    d = select(req("sm100", "flashinfer_trtllm", activation=kMxfp8Dynamic)).to_dict()
    assert d["activation"] == "mxfp8"
    assert d["selected_by"] == "pinned"
    assert d["request"]["activation"] == "mxfp8"


def test_to_dict_is_json_serialisable():
    import json
    json.dumps(select(req("sm100", "flashinfer_cutlass",
                          layer=LayerSpec(hidden_size=2880))).to_dict())
    json.dumps(no_eligible(req("sm130")).to_dict())


# ------------------------------------------------------------------ devices


@pytest.mark.parametrize("text, platform, name", [
    ("sm90", "cuda", "sm90"), ("sm100", "cuda", "sm100"), ("sm103", "cuda", "sm103"),
    ("sm120", "cuda", "sm120"), ("9.0", "cuda", "sm90"), ("10.0", "cuda", "sm100"),
    ("12.1", "cuda", "sm121"), ("gfx950", "rocm", "gfx950"), ("xpu", "xpu", "xpu"),
    ("cpu", "cpu", "cpu"), ("SM90", "cuda", "sm90"),
])
def test_device_parse(text, platform, name):
    dev = Device.parse(text)
    assert dev.platform == platform
    assert dev.name == name
    assert Device.parse(dev) == dev
    assert Device.parse(dev.name) == dev


@pytest.mark.parametrize("junk", ["", "   ", "sm", "sm9", "9", "banana", "10.0.1", "gfx", "gfxzz",
                                  "sm 90", "cuda", "gpu", None, 90, 9.0])
def test_device_parse_rejects_junk(junk):
    with pytest.raises(ConfigError) as info:
        Device.parse(junk)
    assert info.value.path == "device"
    assert str(info.value)


def test_unmentioned_arch_is_valid_input_but_covered_by_no_row():
    err = no_eligible(req("sm101"))
    assert set(rejected_reasons(err).values()) <= {Reason.ARCH_UNSUPPORTED,
                                                   Reason.PLATFORM_UNSUPPORTED}


# ------------------------------------------------------------------ last resort


def test_gfx1250_lands_on_the_aiter_triton_w4a16_kernel_like_vllm():
    # vLLM 0.33's gpt-oss list has AITER_TRITON_MXFP4_BF16 4th (oracle/mxfp4.py:409).
    sel = select(req("gfx1250"))
    assert sel.backend == "AITER_TRITON_MXFP4_BF16"
    assert sel.activation_fallback is False
    assert sel.eligible[-1] == "EMULATION"
    # Without it (no aiter), no real kernel is left: EMULATION.
    assert select(req("gfx1250", environment=Environment({"torch": None}))).backend == "EMULATION"


def test_emulation_is_the_last_resort():
    for device in ("sm90", "sm100", "sm120", "gfx950", "gfx1250", "cpu", "sm75"):
        sel = select(req(device))
        assert sel.eligible[-1] == "EMULATION", device
    assert select(req("sm75")).backend == "MARLIN"  # the kernel runs from capability 7.5
