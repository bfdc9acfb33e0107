"""oracle.preflight: the MoE report and the decode floor, before any weight download.

The expected bytes are computed here from the config numbers (hidden, intermediate,
top_k, layers) and the padded sizes the selection reports; the expected floors from
matrix/gpus.toml read with tomllib -- neither through the helpers under test.  Errors
are checked by class and fields, never by message text.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle.errors import ConfigError, MatrixError
from oracle.matrix import MATRIX
from oracle.matrix.gpus import GPUS, gpu_key, load_gpus
from oracle.model import BUNDLED_MODELS, load_model_config, select_for_model
from oracle.preflight import PreflightReport, preflight
from oracle.request import Environment

ROOT = Path(__file__).resolve().parents[1]
TABLE = tomllib.loads((ROOT / "matrix" / "gpus.toml").read_text("utf-8"))
BANDWIDTH = {g["name"]: g["bandwidth_tbps"] for g in TABLE["gpu"]}
ARCH = {g["name"]: g["arch"] for g in TABLE["gpu"]}
HAS_TP = "tensor_parallel_size" in inspect.signature(select_for_model).parameters

TOP_KEYS = {"model", "device", "gpu", "gpus", "policy", "deployment", "layers", "unquantized",
            "moe", "notes"}
MOE_KEYS = {"backend", "selected_by", "kernel_class", "kernel_class_notes", "weight",
            "activation", "padded", "ignored_knobs", "decode_bytes_per_rank", "decode",
            "floor_us", "jit_module", "unquantized"}


def config(name: str) -> dict:
    return copy.deepcopy(load_model_config(name)[1])


def expected_bytes(cfg: dict, padded: tuple[int, int], *, bias: bool = True) -> int:
    """top_k x (2·H·I + I·H) parameters at 4.25 bits (MXFP4: 4 + 8/32), plus bf16 biases
    (2·I + H per expert), per MoE layer, times the layers."""
    h, i = padded
    weight_bits = 3 * h * i * 17  # 4.25 bits = 17/4; bytes = params * 17 / 32
    assert weight_bits % 32 == 0
    per_expert = weight_bits // 32 + (2 * (2 * i + h) if bias else 0)
    return cfg["num_hidden_layers"] * cfg["num_experts_per_tok"] * per_expert


# ------------------------------------------------------------------ decode bytes

@pytest.mark.parametrize("model", ["gpt-oss-20b", "gpt-oss-120b"])
@pytest.mark.parametrize("device", ["sm90", "sm100"])
def test_decode_bytes_from_the_config_numbers(model, device):
    cfg = config(model)
    report = preflight(model, device=device)
    selection = report.model_selection.selection
    assert report.moe.backend == selection.backend
    assert report.moe.hidden == (cfg["hidden_size"], selection.padded[0])
    assert report.moe.intermediate_per_rank == (cfg["intermediate_size"], selection.padded[1])
    assert report.moe.decode.bytes_per_rank == expected_bytes(cfg, selection.padded)
    assert report.moe.decode.moe_layers == cfg["num_hidden_layers"]
    assert report.layers[0].kind == "moe"
    assert report.layers[0].count == cfg["num_hidden_layers"]
    assert report.layers[0].indices == ((0, cfg["num_hidden_layers"] - 1),)


# Worked by hand from the bundled configs and the rows' alignments: gpt-oss-120b, 36
# layers, top_k 4; sm90 TRITON keeps 2880 x 2880, sm100 FLASHINFER_TRTLLM_MXFP4_BF16 pads
# hidden to 3072 (256) and intermediate to 2944 (128).
@pytest.mark.parametrize(("device", "backend", "padded", "total"), [
    ("sm90", "TRITON", (2880, 2880), 36 * 4 * (13_219_200 + 17_280)),
    ("sm100", "FLASHINFER_TRTLLM_MXFP4_BF16", (3072, 2944), 36 * 4 * (14_413_824 + 17_920)),
])
def test_gpt_oss_120b_worked_numbers(device, backend, padded, total):
    report = preflight("gpt-oss-120b", device=device)
    assert report.moe.backend == backend
    assert (report.moe.hidden[1], report.moe.intermediate_per_rank[1]) == padded
    assert report.moe.decode.bytes_per_rank == total
    assert report.to_dict()["moe"]["decode_bytes_per_rank"] == total


def test_bits_per_weight_come_from_the_weight_key():
    report = preflight("gpt-oss-20b", device="sm90")
    assert report.moe.weight == "mxfp4_static"
    assert report.moe.decode.bits_per_weight == 4 + 8 / 32
    assert report.to_dict()["moe"]["decode"]["bits_per_weight"] == 4.25


@pytest.mark.skipif(not HAS_TP, reason="select_for_model takes no tensor_parallel_size yet")
@pytest.mark.parametrize("model", ["gpt-oss-20b", "gpt-oss-120b"])
@pytest.mark.parametrize("device", ["sm90", "sm100"])
def test_tensor_parallel_bytes_are_per_rank(model, device):
    cfg = config(model)
    report = preflight(model, device=device, tensor_parallel_size=8)
    selection = report.model_selection.selection
    per_rank = cfg["intermediate_size"] // 8
    assert report.moe.intermediate_per_rank == (per_rank, selection.padded[1])
    assert selection.padded[1] >= per_rank
    assert report.moe.decode.bytes_per_rank == expected_bytes(cfg, selection.padded)
    assert report.moe.decode.tp_size == 8
    assert report.moe.decode.bytes_all_ranks == 8 * report.moe.decode.bytes_per_rank
    assert report.deployment["given"] == {"tensor_parallel_size": 8}
    assert report.deployment["moe_tp_size"] == 8
    single = preflight(model, device=device)
    assert report.moe.decode.bytes_per_rank < single.moe.decode.bytes_per_rank


def test_a_kernel_that_drops_biases_reads_no_bias_bytes():
    """vLLM 0.33's CUTLASS_MXFP4_MXFP4 takes the biases and ignores them (vllm.toml
    drops_bias): the report lists that as an ignored knob and counts no bias bytes."""
    report = preflight("gpt-oss-120b", device="sm100", policy="vllm-0.33",
                       quantization_config={"moe": {"activation": "mxfp4"}})
    if report.moe.backend != "CUTLASS_MXFP4_MXFP4":
        pytest.skip(f"vLLM 0.33 picks {report.moe.backend} here now")
    cfg = config("gpt-oss-120b")
    padded = report.model_selection.selection.padded
    assert report.moe.decode.bias_bytes_per_expert == 0
    assert report.moe.decode.bytes_per_rank == expected_bytes(cfg, padded, bias=False)
    assert [(k.by, k.source) for k in report.moe.ignored_knobs] == \
        [("CUTLASS_MXFP4_MXFP4", "notes")]


# ------------------------------------------------------------------ floors and the GPU table

@pytest.mark.parametrize(("model", "device"), [
    ("gpt-oss-20b", "sm90"), ("gpt-oss-120b", "sm90"), ("gpt-oss-120b", "sm100"),
    ("gpt-oss-20b", "gfx942"),
])
def test_floor_is_bytes_over_the_table_bandwidth(model, device):
    report = preflight(model, device=device)
    want = sorted(n for n, a in ARCH.items() if a == device)
    assert sorted(report.moe.floor_us) == want and want
    assert report.gpu is None
    for name, us in report.moe.floor_us.items():
        bandwidth = BANDWIDTH[name] * 1e12  # bytes per second
        assert us == pytest.approx(report.moe.decode.bytes_per_rank / bandwidth * 1e6)
    assert report.to_dict()["moe"]["floor_us"] == {
        n: round(us, 3) for n, us in report.moe.floor_us.items()}


@pytest.mark.parametrize("spelling", ["H200", "h200", "NVIDIA H200", "h200-sxm", "H200 141GB"])
def test_one_gpu_by_any_common_spelling(spelling):
    report = preflight("gpt-oss-120b", device="sm90", gpu=spelling)
    assert report.gpu == "H200"
    assert list(report.moe.floor_us) == ["H200"]
    assert [g["name"] for g in report.to_dict()["gpus"]] == ["H200"]


def test_a_device_named_by_its_gpu_picks_that_gpu():
    report = preflight("gpt-oss-120b", device="H200")
    assert (report.device, report.gpu, list(report.moe.floor_us)) == ("sm90", "H200", ["H200"])


def test_unknown_gpu_is_a_config_error_listing_the_table():
    with pytest.raises(ConfigError) as info:
        preflight("gpt-oss-20b", device="sm90", gpu="H300")
    assert info.value.path == "gpu"
    assert set(info.value.choices) == set(BANDWIDTH)


def test_gpu_of_another_arch_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        preflight("gpt-oss-20b", device="sm90", gpu="B200")
    assert info.value.path == "gpu"
    assert set(info.value.choices) == {n for n, a in ARCH.items() if a == "sm90"}


def test_an_arch_without_table_gpus_has_no_floor():
    report = preflight("gpt-oss-20b", device="cpu")
    assert report.moe.floor_us == {} and report.to_dict()["gpus"] == []
    assert report.moe.decode.bytes_per_rank > 0


def test_the_table_has_the_datasheet_numbers():
    want = {"H100 SXM": 3.35, "H200": 4.8, "B200": 8.0, "B300": 8.0, "GB200": 8.0,
            "A100 80GB SXM": 2.039, "L40S": 0.864, "RTX 5090": 1.792, "MI300X": 5.3,
            "MI325X": 6.0, "MI355X": 8.0}
    assert {n: BANDWIDTH[n] for n in want} == want
    assert all(g["source"].startswith("https://") for g in TABLE["gpu"])
    assert {g.name: g.bandwidth_tbps for g in GPUS.gpus} == BANDWIDTH
    assert all(GPUS.lookup(g.name) is g for g in GPUS.gpus)


_GOOD = """schema = 1
version = "t"
[[gpu]]
name = "X1"
arch = "sm90"
memory_gb = 80
bandwidth_tbps = 3.0
source = "https://example.com/x1"
"""


@pytest.mark.parametrize(("text", "row", "field"), [
    (_GOOD.replace('arch = "sm90"', 'arch = "sm_90"'), "gpu 'X1'", "arch"),
    (_GOOD.replace('arch = "sm90"', 'arch = "sm999"'), "gpu 'X1'", "arch"),
    (_GOOD.replace("3.0", "-3.0"), "gpu 'X1'", "bandwidth_tbps"),
    (_GOOD.replace("3.0", "nan"), "gpu 'X1'", "bandwidth_tbps"),
    (_GOOD.replace("memory_gb = 80", "memory_gb = true"), "gpu 'X1'", "memory_gb"),
    (_GOOD.replace('source = "https://example.com/x1"', 'source = "datasheet"'), "gpu 'X1'",
     "source"),
    (_GOOD.replace('source = "https://example.com/x1"\n', ""), "gpu 'X1'", "source"),
    (_GOOD + 'colour = "green"\n', "gpu 'X1'", "colour"),
    (_GOOD + _GOOD[_GOOD.index("[[gpu]]"):], "gpu 'X1'", "name"),
    (_GOOD + 'aliases = ["NVIDIA X1"]\n', "gpu 'X1'", "aliases"),
    (_GOOD.replace("schema = 1", "schema = 2"), "<gpus.toml>", "schema"),
    ("schema = 1\nversion = 't'\ngpu = []\n", "<gpus.toml>", "gpu"),
])
def test_a_malformed_gpu_table_names_the_entry_and_field(text, row, field):
    with pytest.raises(MatrixError) as info:
        load_gpus(text)
    assert (info.value.row, info.value.field) == (row, field)


def test_gpu_key_drops_vendor_words_and_punctuation():
    assert gpu_key("NVIDIA GeForce RTX 5090") == gpu_key("rtx-5090") == "rtx5090"
    assert GPUS.lookup("AMD Instinct MI300X").name == "MI300X"
    assert GPUS.lookup("A100-SXM4-80GB").name == "A100 80GB SXM"
    assert GPUS.lookup("H20") is None


# ------------------------------------------------------------------ inputs

def test_unknown_deployment_keyword_is_a_config_error_not_a_type_error():
    with pytest.raises(ConfigError) as info:
        preflight("gpt-oss-20b", device="sm90", tensor_paralel_size=8)
    assert info.value.path == "deployment"
    assert "tensor_paralel_size" in info.value.got
    accepted = set(inspect.signature(select_for_model).parameters) - {
        "model", "device", "moe_backend", "quantization", "quantization_config",
        "environment", "policy"}
    assert set(info.value.choices) == accepted


def test_a_folder_and_a_config_json_path(tmp_path):
    cfg = config("gpt-oss-20b")
    cfg["num_hidden_layers"] = 5
    (tmp_path / "config.json").write_text(json.dumps(cfg), "utf-8")
    by_folder = preflight(tmp_path, device="sm90")
    by_file = preflight(str(tmp_path / "config.json"), device="sm90")
    for report in (by_folder, by_file):
        assert report.layers[0].count == 5
        assert report.model == str(tmp_path / "config.json")
        padded = report.model_selection.selection.padded
        assert report.moe.decode.bytes_per_rank == expected_bytes(cfg, padded)


def test_a_folder_without_config_json_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        preflight(tmp_path, device="sm90")


def test_without_num_hidden_layers_the_report_is_per_moe_layer():
    cfg = config("gpt-oss-20b")
    del cfg["num_hidden_layers"]
    report = preflight(cfg, device="sm90")
    assert report.layers[0].count is None and report.layers[0].indices == ()
    assert report.moe.decode.moe_layers is None
    assert report.to_dict()["moe"]["decode"]["scope"] == "one MoE layer"
    padded = report.model_selection.selection.padded
    assert report.moe.decode.bytes_per_rank == expected_bytes(dict(cfg, num_hidden_layers=1),
                                                               padded)


@pytest.mark.parametrize("value", [0, -3, 2.5, "36", True])
def test_a_bad_num_hidden_layers_is_a_config_error(value):
    cfg = dict(config("gpt-oss-20b"), num_hidden_layers=value)
    with pytest.raises(ConfigError) as info:
        preflight(cfg, device="sm90")
    assert info.value.path.endswith(":num_hidden_layers")


def test_dense_first_layers_are_their_own_kind():
    cfg = config("gpt-oss-20b")
    cfg.update(num_hidden_layers=10, first_k_dense_replace=3)
    report = preflight(cfg, device="sm90")
    kinds = {k.kind: k for k in report.layers}
    assert (kinds["moe"].count, kinds["moe"].indices) == (7, ((3, 9),))
    assert (kinds["dense_mlp"].count, kinds["dense_mlp"].indices) == (3, ((0, 2),))
    assert kinds["dense_mlp"].backend is None
    assert report.moe.decode.moe_layers == 7


@pytest.mark.skipif("deepseek-v4-flash" not in BUNDLED_MODELS,
                    reason="no bundled deepseek-v4-flash config yet")
@pytest.mark.parametrize("device", ["sm90", "sm100"])
def test_bundled_deepseek_v4_flash(device):
    cfg = config("deepseek-v4-flash")
    report = preflight("deepseek-v4-flash", device=device)
    selection = report.model_selection.selection
    h, i = cfg["hidden_size"], cfg.get("moe_intermediate_size", cfg.get("intermediate_size"))
    assert (report.moe.hidden[0], report.moe.intermediate_per_rank[0]) == (h, i)
    hp, ip = selection.padded
    per_expert = 3 * hp * ip * 17 // 32  # no expert biases in DeepSeek-V4
    layers = cfg.get("num_hidden_layers")
    moe_layers = None if layers is None else layers - cfg.get("first_k_dense_replace", 0)
    assert report.moe.decode.moe_layers == moe_layers
    assert report.moe.decode.bias_bytes_per_expert == 0
    assert report.moe.decode.bytes_per_rank == \
        (moe_layers or 1) * cfg["num_experts_per_tok"] * per_expert
    assert max(len(line) for line in report.describe().splitlines()) <= 100


HAS_EP = "enable_expert_parallel" in inspect.signature(select_for_model).parameters


@pytest.mark.skipif(not HAS_EP, reason="select_for_model takes no enable_expert_parallel yet")
def test_expert_parallel_bytes_are_the_worst_case_rank():
    cfg = config("gpt-oss-120b")
    single = preflight("gpt-oss-120b", device="sm100")
    ep = preflight("gpt-oss-120b", device="sm100", tensor_parallel_size=8,
                   enable_expert_parallel=True)
    dec = ep.moe.decode
    assert (dec.tp_size, dec.ep_size) == (1, 8)
    assert ep.moe.intermediate_per_rank[0] == cfg["intermediate_size"]  # whole experts
    # 128 / 8 = 16 experts per rank >= top_k 4: the worst rank holds all four
    assert dec.experts_per_layer == cfg["num_experts_per_tok"]
    assert dec.bytes_per_rank == expected_bytes(cfg, ep.model_selection.selection.padded)
    assert dec.bytes_all_ranks == dec.bytes_per_rank  # read once overall
    if ep.moe.backend == single.moe.backend:
        assert dec.bytes_per_rank == single.moe.decode.bytes_per_rank


@pytest.mark.skipif(not HAS_EP, reason="select_for_model takes no enable_expert_parallel yet")
def test_expert_parallel_caps_the_worst_rank_at_its_local_experts():
    cfg = config("gpt-oss-20b")  # 32 experts over 16 ranks: 2 per rank, top_k 4
    report = preflight("gpt-oss-20b", device="sm100", tensor_parallel_size=2,
                       data_parallel_size=8, enable_expert_parallel=True)
    dec = report.moe.decode
    assert dec.ep_size == 16
    assert dec.experts_per_layer == cfg["num_local_experts"] // 16
    assert dec.bytes_all_ranks == cfg["num_hidden_layers"] * cfg["num_experts_per_tok"] * \
        dec.bytes_per_expert


@pytest.mark.skipif(not HAS_EP, reason="select_for_model takes no enable_expert_parallel yet")
def test_a_flag_without_effect_is_an_ignored_knob():
    report = preflight("gpt-oss-20b", device="sm90", enable_expert_parallel=True)
    assert [(k.by, k.source) for k in report.moe.ignored_knobs] == [("deployment", "deployment")]
    assert report.moe.decode.ep_size == 1


def test_environment_defaults_to_every_library():
    assumed = preflight("gpt-oss-120b", device="sm100")
    explicit = preflight("gpt-oss-120b", device="sm100", environment=Environment.assume_all())
    assert assumed.to_dict() == explicit.to_dict()
    assert assumed.model_selection.request.environment == Environment.assume_all()


# ------------------------------------------------------------------ the report

def test_unquantized_modules_are_listed_with_their_source():
    cfg = config("gpt-oss-120b")
    ckpt = cfg["quantization_config"]["modules_to_not_convert"]
    report = preflight("gpt-oss-120b", device="sm90",
                       quantization_config={"ignore": ["lm_head", "model.layers.0.mlp"]})
    by_pattern = {u.pattern: u for u in report.unquantized}
    assert list(by_pattern) == [*ckpt, "model.layers.0.mlp"]
    assert by_pattern["model.layers.0.mlp"].source.startswith("user")
    assert by_pattern["model.embed_tokens"].source.startswith("checkpoint")
    assert "user" in by_pattern["lm_head"].source and "checkpoint" in by_pattern["lm_head"].source
    assert report.moe.unquantized == tuple(by_pattern)
    assert {u["status"] for u in report.to_dict()["unquantized"]} == {"stays unquantized"}


def test_an_activation_fallback_is_an_ignored_knob():
    report = preflight("gpt-oss-120b", device="sm90", environment="flashinfer",
                       quantization_config={"moe": {"activation": "mxfp8"}},
                       allow_activation_fallback=True)
    selection = report.model_selection.selection
    assert selection.activation_fallback
    assert report.moe.activation == "bf16"
    knobs = report.moe.ignored_knobs
    assert len(knobs) == 1 and knobs[0].source == "notes"
    assert knobs[0].detail in selection.notes  # the selection's own words, not invented


def test_kernel_class_and_jit_module_come_from_the_selection_and_the_row():
    report = preflight("gpt-oss-120b", device="sm100")
    selection = report.model_selection.selection
    assert report.moe.kernel_class == getattr(selection, "kernel_class", None)
    assert report.moe.kernel_class_notes == tuple(getattr(selection, "kernel_class_notes", ()))
    row = MATRIX.by_name[report.moe.backend]
    jit = report.to_dict()["moe"]["jit_module"]
    assert jit["module"] is None  # the matrix names no JIT module
    assert (jit["libraries"], jit["layout"], jit["flashinfer_runner"],
            jit["flashinfer_config"]) == (list(row.libraries), row.layout,
                                          row.flashinfer_runner, row.flashinfer_config)
    if report.moe.kernel_class is None:
        assert "n/a" in report.describe()


@pytest.mark.parametrize(("model", "device", "kwargs"), [
    ("gpt-oss-20b", "sm90", {}), ("gpt-oss-120b", "sm100", {}),
    ("gpt-oss-120b", "sm103", {}), ("gpt-oss-120b", "gfx950", {"policy": "vllm-0.33"}),
    ("gpt-oss-120b", "sm120", {"moe_backend": "marlin"}),
])
def test_to_dict_is_json_with_stable_keys_and_describe_fits_100_columns(model, device, kwargs):
    report = preflight(model, device=device, **kwargs)
    assert isinstance(report, PreflightReport)
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == TOP_KEYS
    assert set(data["moe"]) == MOE_KEYS
    assert data["device"] == device and data["policy"] == report.model_selection.request.policy
    text = report.describe()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert report.moe.backend in text


# ------------------------------------------------------------------ properties

@settings(max_examples=40)
@given(layers=st.integers(1, 200))
def test_decode_bytes_scale_linearly_with_the_layer_count(layers):
    cfg = config("gpt-oss-20b")
    one = preflight(dict(cfg, num_hidden_layers=1), device="sm100").moe.decode.bytes_per_rank
    many = preflight(dict(cfg, num_hidden_layers=layers), device="sm100")
    assert many.moe.decode.bytes_per_rank == layers * one


@settings(max_examples=30)
@given(top_k=st.integers(1, 32), device=st.sampled_from(["sm90", "sm100"]))
def test_decode_bytes_scale_linearly_with_top_k(top_k, device):
    cfg = config("gpt-oss-20b")  # 32 experts
    one = preflight(dict(cfg, num_experts_per_tok=1), device=device)
    k = preflight(dict(cfg, num_experts_per_tok=top_k), device=device)
    assert k.moe.backend == one.moe.backend
    assert k.moe.decode.bytes_per_rank == top_k * one.moe.decode.bytes_per_rank
    assert math.isclose(sum(k.moe.floor_us.values()), top_k * sum(one.moe.floor_us.values()))
