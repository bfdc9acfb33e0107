"""Smoke test: the harness really runs vLLM's own MXFP4 MoE selection.

Every expectation here is a fact about vLLM (the README of this folder cites the
source lines); if one fails, the harness -- not the oracle -- is suspect.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import vllm_harness as H
from vllm_harness import (
    ARCHS,
    AXES_VERSIONS,
    UNKNOWN_BACKEND,
    VERSIONS,
    AnswerTable,
    Case,
)


def _no_conflict(a: dict) -> bool:
    """Cases whose override and checkpoint activation do not conflict (vLLM
    resolves that before it looks at the backend name)."""
    c = a["case"]
    return not (c["override"] and c["checkpoint_activation"])


def test_harness_runs_vllms_own_selection(vllm_table):
    t = vllm_table

    # A grid of real size, answered by every version, case for case; the
    # deployment-axes cases only by AXES_VERSIONS, after the common grid.
    assert len(t.cases) >= 5000
    for v in VERSIONS:
        ran = t.cases_for(v)
        assert len(t.answers[v]) == len(ran)
        assert ran[:len(t.cases)] == t.cases
        extra = ran[len(t.cases):]
        assert (len(extra) >= 2000) if v in AXES_VERSIONS else not extra, (v, len(extra))
        assert all(not c.default_deployment for c in extra)
        # the winner's class trace is the head of vLLM's own candidate list
        assert not [a for a in t.answers[v] if a.get("class_trace_mismatch")]

    # Only vLLM's own exceptions come back (a TypeError, ImportError or
    # AttributeError would be the harness failing, not vLLM answering), and no
    # C++ predicate the harness does not model was consulted during a selection.
    for v in VERSIONS:
        for a in t.answers[v]:
            if a["error"]:
                assert a["error"]["type"] in ("ValueError", "NotImplementedError"), (v, a)
            assert not [k for k in a["helper_calls"]
                        if k.startswith("cxx:") and k != "cxx:_C.mxfp4_experts_quant_supported"], a

    # The hardware is faked before vLLM imports: each arch's platform class and
    # capability, and the import-time FP8 flavour (fnuz on gfx942 only).
    for v in VERSIONS:
        meta = t.meta[v]
        assert set(meta) == set(ARCHS)
        assert meta["sm100"]["platform"].endswith("CudaPlatform")
        assert meta["sm100"]["device_capability"] == "DeviceCapability(major=10, minor=0)"
        assert meta["gfx942"]["platform"] == "RocmPlatform"
        assert meta["gfx942"]["device_capability"] == "DeviceCapability(major=9, minor=4)"
        assert meta["gfx942"]["fp8_dtype"] == "torch.float8_e4m3fnuz"
        assert meta["gfx950"]["fp8_dtype"] == "torch.float8_e4m3fn"
        assert meta["xpu"]["platform"] == "XPUPlatform"
        assert meta["cpu"]["platform"] == "CpuPlatform"

    # vLLM 0.33, auto, SM100, every library: a FlashInfer TRT-LLM variant.
    a = t.answer("0.33.0", Case("sm100"))
    assert a["error"] is None, a
    assert a["backend"].startswith("FLASHINFER_TRTLLM_"), a
    assert a["experts_cls"] == "TrtLlmMxfp4ExpertsMonolithic"
    assert a["padded"] == [3072, 2944]

    # An unknown --moe-backend name is refused by map_mxfp4_backend, everywhere.
    for v in VERSIONS:
        for a in t.where(v, moe_backend=UNKNOWN_BACKEND):
            if _no_conflict(a):
                assert a["backend"] is None
                assert a["error"]["type"] == "ValueError"
                assert "is not supported for MXFP4 MoE" in a["error"]["message"], a

    # An explicit backend with an override no variant matches: 0.33 falls back to
    # the BF16 variant and warns; 0.22 keeps only exact matches (plus EMULATION)
    # and raises "does not support activation=...".
    pin = Case("sm100", "flashinfer_trtllm", override="fp8_per_tensor_static")
    new, old = t.answer("0.33.0", pin), t.answer("0.22.0", pin)
    assert new["backend"] == "FLASHINFER_TRTLLM_MXFP4_BF16", new
    assert any("Falling back to 'FLASHINFER_TRTLLM_MXFP4_BF16' with BF16 activations" in w
               for w in new["warnings"]), new["warnings"]
    assert old["backend"] is None, old
    assert old["error"]["type"] == "ValueError"
    assert "does not support activation=" in old["error"]["message"], old

    # Library sets reach vLLM's helpers: without amd-quark, 0.33's EMULATION
    # is refused with vLLM's own reason and auto falls back to BF16.
    a = t.answer("0.33.0", Case("sm100", override="fp8_per_tensor_static", libraries="no-amd-quark"))
    assert a["backend"] == "FLASHINFER_TRTLLM_MXFP4_BF16", a
    assert any("requires amd-quark" in d for d in a["debug"]), a["debug"]

    # The deployment axes are 0.33's only: 0.22 answers none of them.
    axis = Case("sm100", ep=True, dp=2, all2all="deepep_low_latency")
    assert t.answer("0.33.0", axis)["backend"] == "BATCHED_MARLIN"
    for v in VERSIONS:
        if v not in AXES_VERSIONS:
            with pytest.raises(KeyError):
                t.answer(v, axis)
            assert t.where(v, ep=True) == [] and t.where(v, family="deepseek-v4") == []

    # select_deepseek_v4_mxfp4_moe_backend reads no activation override: the
    # stand-in VllmConfig carries it, and no DeepSeek-V4 answer moves with it.
    for v in AXES_VERSIONS:
        ds = {}
        for c, a in t.pairs(v):
            if c.family == "deepseek-v4":
                ds.setdefault(dataclasses.replace(c, override=None), set()).add(
                    (a["backend"], a["experts_cls"], str(a["padded"]),
                     (a["error"] or {}).get("message")))
        assert ds and all(len(x) == 1 for x in ds.values())


# --------------------------------------------------------------------------
# Deployment axes (vLLM 0.33)
# --------------------------------------------------------------------------
_AXIS_FIELDS = ("ep", "dp", "all2all", "eplb", "lora", "routing", "family")


def test_case_defaults_keep_todays_cases():
    old = Case("sm100", "triton", "mxfp8", None, "all", 2)
    assert old == Case("sm100", "triton", "mxfp8", tp=2, ep=False, dp=1, all2all=None,
                       eplb=False, lora=False, routing=None, family="gpt-oss")
    assert hash(old) == hash(dataclasses.replace(old))
    assert old.default_deployment
    assert all(c.default_deployment for c in H.grid(VERSIONS, ["sm100"]))
    assert not Case("sm100", dp=2).default_deployment
    assert not Case("sm100", family="deepseek-v4").default_deployment
    # the checkpoint field defaults to today's behaviour (ask the selector directly)
    assert old == dataclasses.replace(old, checkpoint=None) and old.checkpoint is None
    assert old.job_entry(0)["checkpoint"] is None
    assert not Case("sm100", checkpoint="online-mxfp4").default_deployment
    assert Case("sm100", checkpoint="mxfp4") != Case("sm100")


def test_axes_cases_round_trip_through_job_entry():
    by_libs = {tuple(sorted(v)): k for k, v in H.LIBRARY_SETS.items()}
    cases = H.axes_grid()
    for i, c in enumerate(cases):
        e = c.job_entry(i)
        assert e["id"] == i
        back = Case(arch=c.arch, libraries=by_libs[tuple(e["libraries"])], **{
            f.name: e[f.name] for f in dataclasses.fields(Case)
            if f.name not in ("arch", "libraries")})
        assert back == c
    assert len(set(cases)) == len(cases)


def test_axes_grid_covers_every_listed_dimension():
    cases = H.axes_grid()
    assert len(cases) >= 2000
    gpt = [c for c in cases if c.family == "gpt-oss" and c.routing is None]
    seen = {f: {getattr(c, f) for c in gpt} for f in
            ("arch", "tp", "all2all", "eplb", "lora", "moe_backend", "override")}
    assert seen["arch"] == set(H.AXES_ARCHS) >= {"sm90", "sm100", "sm103", "sm120",
                                                 "gfx942", "gfx950"}
    assert seen["tp"] == {1, 2, 8}
    assert seen["all2all"] == {None, "deepep_low_latency", *H.AXES_OTHER_ALL2ALL}
    assert seen["eplb"] == seen["lora"] == {False, True}
    assert seen["moe_backend"] == set(H.TP_BACKENDS) >= {
        "auto", "flashinfer_trtllm", "flashinfer_cutlass", "triton", "marlin", "humming",
        "aiter", "emulation"}
    assert seen["override"] == {None, "mxfp8"}
    assert {(c.ep, c.dp) for c in gpt} == {(False, 1), (True, 1), (True, 2), (False, 2)}
    # every combination, including those where an axis cannot matter
    combos = {(c.arch, c.tp, c.ep, c.dp, c.all2all, c.eplb, c.lora, c.moe_backend,
               c.override) for c in gpt}
    # plus the other all2all backends under EP with DP 2
    assert len(combos) == len(gpt) == 6 * 3 * 4 * 2 * 2 * 2 * 8 * 2 + \
        6 * len(H.AXES_OTHER_ALL2ALL) * 8 * 2
    routed = [c for c in cases if c.routing is not None]
    assert {c.routing for c in routed} == {"DeepSeekV3"}
    assert {(c.arch, c.moe_backend, c.override) for c in routed} == {
        (a, b, o) for a in H.AXES_ARCHS for b in H.TP_BACKENDS for o in (None, "mxfp8")}
    assert all(c.tp == 1 and c.dp == 1 and not c.ep and c.family == "gpt-oss" for c in routed)
    ds = [c for c in cases if c.family == "deepseek-v4"]
    assert {c.arch for c in ds} == {"sm90", "sm100", "sm103", "sm120", "gfx942", "gfx950",
                                    "xpu", "cpu"}
    assert {c.moe_backend for c in ds} == set(H.TP_BACKENDS) | {"deep_gemm"}
    assert {c.tp for c in ds} == {1, 2}
    assert {(c.ep, c.dp, c.all2all) for c in ds} == {
        (False, 1, None), (True, 2, None), (True, 2, "deepep_low_latency")}
    assert {c.override for c in ds} == {None, "mxfp8"} and {c.lora for c in ds} == {False, True}
    assert not any(c.checkpoint_activation for c in cases)


def test_answer_table_answers_only_what_a_version_ran():
    common, extra = Case("sm100"), Case("sm100", dp=2)
    t = AnswerTable([common], {"0.33.0": [{"n": 0}, {"n": 1}], "0.22.0": [{"n": 2}]},
                    {}, {}, {"0.33.0": [common, extra], "0.22.0": [common]})
    assert t.answer("0.33.0", extra) == {"n": 1}
    assert t.answer("0.22.0", common) == {"n": 2}
    with pytest.raises(KeyError, match="dp=2"):
        t.answer("0.22.0", extra)
    assert t.where("0.33.0", dp=2) == [{"n": 1}]
    assert t.where("0.22.0", dp=2) == []
    assert list(t.pairs("0.22.0")) == [(common, {"n": 2})]
    # the pre-axes constructor: every version ran ``cases``
    legacy = AnswerTable([common], {"0.22.0": [{"n": 3}]}, {}, {})
    assert legacy.answer("0.22.0", common) == {"n": 3}


def test_parallel_probe_keys_are_stable():
    assert {"none", "tp2", "dp2", "ep-tp2", "ep-dp2-allgather_reducescatter",
            "ep-dp2-deepep_high_throughput", "ep-dp2-deepep_low_latency",
            "ep-dp2-flashinfer_nvlink_two_sided", "ep-dp2-flashinfer_nvlink_one_sided",
            "ep-dp2-naive", "ep-tp2-eplb", "ep-dp2-eplb"} <= set(H.PROBE_PARALLEL)
    for flags in H.PROBE_PARALLEL.values():
        assert set(flags) == {"tp", "dp", "ep", "all2all", "eplb"}


def test_axes_cases_are_refused_for_a_version_without_them():
    old = [v for v in VERSIONS if v not in AXES_VERSIONS]
    for v in old:
        with pytest.raises(ValueError, match="no deployment axes"):
            H.vllm_answers(v, [Case("sm100", ep=True, tp=2)])


#: Deployment cases answered by vLLM 0.33 on SM100.
AXES_SPOT = {
        "dp2": Case("sm100", dp=2),
        "ll-marlin": Case("sm100", "marlin", ep=True, dp=2, all2all="deepep_low_latency"),
        "ll-auto": Case("sm100", ep=True, dp=2, all2all="deepep_low_latency"),
        "trtllm-lora": Case("sm100", "flashinfer_trtllm", lora=True),
        "eplb-no-ep": Case("sm100", tp=2, eplb=True),
        "eplb-ep": Case("sm100", tp=2, ep=True, eplb=True),
        "dsv4": Case("sm100", family="deepseek-v4"),
        "dsv4-mxfp8": Case("sm100", override="mxfp8", family="deepseek-v4"),
}


@pytest.fixture(scope="module")
def spot_answers():
    """vLLM 0.33's answers to AXES_SPOT and CHECKPOINT_SPOT, in one harness run (one
    vLLM import per arch)."""
    from conftest import _in_ci, _unavailable

    if os.environ.get("MXFP4_ORACLE_SKIP_CONFORMANCE") == "1" and not _in_ci():
        pytest.skip("MXFP4_ORACLE_SKIP_CONFORMANCE=1")
    cases = {**AXES_SPOT, **CHECKPOINT_SPOT}
    try:
        answers = H.vllm_answers("0.33.0", list(cases.values()))
    except H.HarnessUnavailable as e:
        _unavailable(str(e))
    return dict(zip(cases, answers))


@pytest.fixture(scope="module")
def axes_spot(spot_answers):
    return {name: spot_answers[name] for name in AXES_SPOT}


def test_dp_without_ep_shards_tp_and_drops_the_monolithic_kernel(axes_spot):
    a = axes_spot["dp2"]
    assert a["error"] is None, a
    assert a["backend"] == "FLASHINFER_TRTLLM_MXFP4_BF16"
    assert a["experts_cls"] == "TrtLlmMxfp4ExpertsModular"
    assert a["parallel"]["tp_size"] == 2 and a["parallel"]["dp_size"] == 2
    assert a["parallel"]["use_ep"] is False
    first = a["class_trace"][0]
    assert first[0] == "TrtLlmMxfp4ExpertsMonolithic"
    assert "parallel config" in first[1]
    assert a["class_trace"][-1] == ["TrtLlmMxfp4ExpertsModular", None]
    assert a["padded"][1] == 1536  # 2880 // 2 = 1440, TRT-LLM-padded


def test_deepep_low_latency_batches_marlin_and_rounds_hidden(axes_spot):
    for name in ("ll-marlin", "ll-auto"):
        a = axes_spot[name]
        assert a["error"] is None, a
        assert a["backend"] == "BATCHED_MARLIN", a
        assert a["experts_cls"] == "BatchedMarlinExperts"
        assert a["parallel"]["use_batched_activation_format"] is True
        assert a["hidden_rounded"] == 3072  # DeepEP LL's supported sizes
        assert a["padded"][0] == 3072


def test_lora_eplb_and_deepseek_v4(axes_spot):
    a = axes_spot["trtllm-lora"]
    assert a["experts_cls"] == "TrtLlmMxfp4LoRAExperts", a
    assert a["class_trace"] == [["TrtLlmMxfp4LoRAExperts", None]]
    a = axes_spot["eplb-no-ep"]
    assert a["error"]["phase"] == "parallel_config", a
    assert a["error"]["type"] == "ValueError"
    assert "enable_expert_parallel must be True" in a["error"]["message"]
    a = axes_spot["eplb-ep"]
    assert a["error"]["phase"] == "eplb", a
    assert a["error"]["type"] == "NotImplementedError"
    assert a["backend"] is not None  # selected in the quant method's __init__ first
    a = axes_spot["dsv4"]
    assert a["error"] is None, a
    assert a["routing_method"] == "DeepseekV4"
    assert a["backend"] == "FLASHINFER_TRTLLM_MXFP4_MXFP8"
    b = axes_spot["dsv4-mxfp8"]  # select_deepseek_v4 reads no override
    assert (b["backend"], b["experts_cls"], b["padded"]) == (
        a["backend"], a["experts_cls"], a["padded"])


# --------------------------------------------------------------------------
# Checkpoint families (vLLM 0.33): the layer's real quant method
# --------------------------------------------------------------------------
def _matrix_checkpoints() -> dict[str, dict]:
    """matrix/vllm.toml's ``[release."0.33.0".checkpoint.NAME]`` records (read as data)."""
    import tomllib
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "matrix" / "vllm.toml"
    return tomllib.loads(path.read_text())["release"]["0.33.0"]["checkpoint"]


def test_checkpoint_names_are_the_matrix_records():
    assert set(H.CHECKPOINTS) == set(_matrix_checkpoints())


def test_checkpoint_cases_round_trip_through_job_entry():
    by_libs = {tuple(sorted(v)): k for k, v in H.LIBRARY_SETS.items()}
    cases = H.checkpoint_grid()
    for i, c in enumerate(cases):
        e = c.job_entry(i)
        assert e["checkpoint"] == c.checkpoint in H.CHECKPOINTS
        back = Case(arch=c.arch, libraries=by_libs[tuple(e["libraries"])], **{
            f.name: e[f.name] for f in dataclasses.fields(Case)
            if f.name not in ("arch", "libraries")})
        assert back == c and hash(back) == hash(c)
    assert len(set(cases)) == len(cases)


def test_checkpoint_grid_covers_every_listed_dimension():
    cases = H.checkpoint_grid()
    assert len(cases) == len(H.CHECKPOINTS) * 9 * 10 * 2 == 1620
    assert {c.checkpoint for c in cases} == set(H.CHECKPOINTS)
    assert {c.arch for c in cases} == {"sm80", "sm90", "sm100", "sm103", "sm120", "gfx942",
                                       "gfx950", "xpu", "cpu"}
    assert {c.moe_backend for c in cases} == {
        "auto", "flashinfer_trtllm", "flashinfer_cutlass", "triton", "marlin", "humming",
        "aiter", "emulation", "b12x", "flashinfer_moe_ep_cutedsl"}
    assert {c.override for c in cases} == {None, "mxfp8"}
    for c in cases:
        assert c.family == ("deepseek-v4" if c.checkpoint in ("mxfp4", "deepseek-v4-fp8")
                            else "gpt-oss"), c
        assert (c.tp, c.dp, c.ep, c.all2all, c.eplb, c.lora, c.routing, c.libraries,
                c.checkpoint_activation) == (1, 1, False, None, False, False, None, "all", None)
    assert H.checkpoint_grid(["sm100"]) == [c for c in cases if c.arch == "sm100"]
    assert not set(cases) & set(H.grid(VERSIONS)) and not set(cases) & set(H.axes_grid())


def test_checkpoint_cases_are_refused_where_they_cannot_run():
    old = [v for v in VERSIONS if v not in AXES_VERSIONS]
    for v in old:
        with pytest.raises(ValueError, match="no deployment axes and no checkpoint"):
            H.vllm_answers(v, [Case("sm100", checkpoint="gpt-oss-mxfp4")])
    with pytest.raises(ValueError, match="unknown checkpoint"):
        H.vllm_answers("0.33.0", [Case("sm100", checkpoint="no-such-checkpoint")])
    with pytest.raises(ValueError, match="not checkpoint_activation"):
        H.vllm_answers("0.33.0", [Case("sm100", checkpoint_activation="kMxfp4Dynamic",
                                       checkpoint="online-mxfp4")])


#: Checkpoint cases answered by vLLM 0.33 on SM100 and SM90.
CHECKPOINT_SPOT = {
        "ct-sm100": Case("sm100", checkpoint="compressed-tensors-mxfp4"),
        "ct-sm90": Case("sm90", checkpoint="compressed-tensors-mxfp4"),
        "ct-sm100-triton": Case("sm100", "triton", checkpoint="compressed-tensors-mxfp4"),
        "ct-sm100-b12x": Case("sm100", "b12x", checkpoint="compressed-tensors-mxfp4"),
        "online-sm100": Case("sm100", checkpoint="online-mxfp4"),
        "quark-a-mxfp4-sm100": Case("sm100", checkpoint="quark-w-mxfp4-a-mxfp4"),
        "direct-a-mxfp4-sm100": Case("sm100", checkpoint_activation="kMxfp4Dynamic"),
}


@pytest.fixture(scope="module")
def checkpoint_spot(spot_answers):
    return {name: spot_answers[name] for name in CHECKPOINT_SPOT}


def test_compressed_tensors_mxfp4_picks_its_own_kernel(checkpoint_spot):
    # SM100: CutlassExpertsMxfp4._supports_current_device() (cutlass_moe.py:1034-1040, the
    # modelled _C predicate) -> the method takes CutlassExpertsMxfp4 itself and never asks
    # the oracle; its mxfp4_backend attribute stays at the MARLIN it was initialised to
    # (compressed_tensors_moe_w4a4_mxfp4.py:56, 69-71) -- the kernel is the experts class.
    a = checkpoint_spot["ct-sm100"]
    assert a["error"] is None, a
    assert (a["method"], a["method_built"]) == ("CompressedTensorsW4A4Mxfp4MoEMethod", True)
    assert a["experts_cls"] == "CutlassExpertsMxfp4"
    assert a["backend"] == "MARLIN"
    assert a["method_flags"]["use_cutlass_mxfp4"] is True
    assert a["selector_calls"] == [] and a["class_trace"] is None
    # no maybe_roundup_sizes of its own: FusedMoEMethodBase's all2all round-up only
    assert a["padding_from"] == "FusedMoEMethodBase" and a["padded"] == [2880, 2880]
    assert a["supports_eplb"] is False  # only with a FlashInfer MoE-EP backend (:81-82)
    # --moe-backend triton is not read: the same answer
    b = checkpoint_spot["ct-sm100-triton"]
    assert (b["backend"], b["experts_cls"], b["padded"]) == (a["backend"], a["experts_cls"],
                                                             a["padded"])
    # b12x goes through select_mxfp4_moe_backend, which refuses the biased layer
    b = checkpoint_spot["ct-sm100-b12x"]
    assert b["error"]["phase"] == "method" and b["error"]["type"] == "ValueError", b
    assert "expert biases" in b["error"]["message"]
    assert [c["fn"] for c in b["selector_calls"]] == ["select_mxfp4_moe_backend"]
    # SM90: neither CUTLASS nor XPU -> MarlinExperts
    a = checkpoint_spot["ct-sm90"]
    assert a["error"] is None, a
    assert (a["backend"], a["experts_cls"]) == ("MARLIN", "MarlinExperts")
    assert a["method_flags"]["use_cutlass_mxfp4"] is False


def test_online_and_quark_w4a4_are_the_selector_with_kmxfp4dynamic(checkpoint_spot):
    direct = checkpoint_spot["direct-a-mxfp4-sm100"]
    for name, method in (("online-sm100", "Mxfp4OnlineMoEMethod"),
                         ("quark-a-mxfp4-sm100", "QuarkOCP_MX_MoEMethod")):
        a = checkpoint_spot[name]
        assert a["error"] is None, a
        assert (a["method"], a["method_built"], a["method_key"]) == (method, True,
                                                                     "kMxfp4Dynamic")
        assert (a["backend"], a["experts_cls"], a["padded"]) == (
            "CUTLASS_MXFP4_MXFP4", "CutlassExpertsMxfp4", [2944, 2944]), a
        assert a["selector_calls"] == [{"fn": "select_mxfp4_moe_backend",
                                        "activation_key": "kMxfp4Dynamic",
                                        "backend": "CUTLASS_MXFP4_MXFP4",
                                        "experts_cls": "CutlassExpertsMxfp4"}]
        assert a["supports_eplb"] is True and a["padding_from"] == method
        # the same selection as asking select_mxfp4_moe_backend directly
        assert (a["backend"], a["experts_cls"], a["padded"], a["class_trace"]) == (
            direct["backend"], direct["experts_cls"], direct["padded"], direct["class_trace"])


#: checkpoint -> (family, checkpoint_activation) of the direct-selector case asking the
#: same question (the method's one selector call; compressed-tensors W4A8 calls the
#: DeepSeek-V4 selector on the gpt-oss layer, compressed-tensors W4A4 mostly none).
_DIRECT_TWIN = {
    "gpt-oss-mxfp4": ("gpt-oss", None),
    "quark-w-mxfp4": ("gpt-oss", None),
    "quark-w-mxfp4-a-fp8": ("gpt-oss", "kFp8StaticTensorSym"),
    "quark-w-mxfp4-a-mxfp4": ("gpt-oss", "kMxfp4Dynamic"),
    "online-mxfp4": ("gpt-oss", "kMxfp4Dynamic"),
    "mxfp4": ("deepseek-v4", None),
    "deepseek-v4-fp8": ("deepseek-v4", None),
}


def test_checkpoint_answers_come_from_the_real_methods(vllm_table):
    t = vllm_table
    matrix = _matrix_checkpoints()
    for v in VERSIONS:
        ran = [c for c in t.cases_for(v) if c.checkpoint is not None]
        assert (len(ran) == len(H.checkpoint_grid())) if v in AXES_VERSIONS else not ran
    twins = 0
    for v in AXES_VERSIONS:
        for c, a in t.pairs(v):
            if c.checkpoint is None:
                continue
            assert a["method"] == matrix[c.checkpoint]["moe_method"], (c, a["method"])
            assert a["method_built"] is True, c
            if a["error"] is None:
                assert a["supports_eplb"] == matrix[c.checkpoint]["supports_eplb"] or (
                    c.checkpoint == "compressed-tensors-mxfp4"
                    and c.moe_backend.startswith("flashinfer_moe_ep")), (c, a)
            family, key = _DIRECT_TWIN.get(c.checkpoint, (None, None))
            if family is None:
                continue
            try:
                d = t.answer(v, Case(c.arch, c.moe_backend, c.override, key, family=family))
            except KeyError:
                continue  # no direct-selector twin in the table (e.g. sm80 DeepSeek-V4)
            twins += 1
            assert len(a["selector_calls"]) == 1, (c, a["selector_calls"])
            assert (a["backend"], a["experts_cls"], a["padded"]) == (
                d["backend"], d["experts_cls"], d["padded"]), (c, a, d)
            assert (a["error"] or {}).get("message") == (d["error"] or {}).get("message"), c
    assert twins >= 800
