"""The loader entry point (select_for_model) and the CLI round trip."""

from __future__ import annotations

import json

import pytest

from oracle import select_for_model
from oracle.cli import main, parse_argv
from oracle.errors import ActivationConflict, ConfigError, NoEligibleBackend, UnknownBackend
from oracle.keys import BF16, kMxfp4Static, kMxfp8Dynamic
from oracle.model import build_request, checkpoint_quant, layer_from_config, load_model_config
from oracle.keys import UNSET
from oracle.request import Environment

ALL = Environment.assume_all()


def test_bundled_gpt_oss_20b_geometry():
    _, cfg = load_model_config("gpt-oss-20b")
    layer = layer_from_config(cfg)
    assert (layer.num_experts, layer.top_k, layer.hidden_size, layer.intermediate_size) == \
        (32, 4, 2880, 2880)
    assert layer.activation_fn == "swiglu_oai" and layer.swiglu_limit == 7.0 and layer.has_bias
    ck = checkpoint_quant(cfg)
    assert ck.weight == kMxfp4Static and ck.activation is UNSET
    assert "lm_head" in ck.modules_to_not_convert


def test_bundled_gpt_oss_120b_has_128_experts():
    _, cfg = load_model_config("gpt-oss-120b")
    assert layer_from_config(cfg).num_experts == 128


@pytest.mark.parametrize("device, backend, act, expected", [
    ("sm100", "flashinfer_trtllm", None, "FLASHINFER_TRTLLM_MXFP4_BF16"),
    ("sm100", "flashinfer_trtllm", "mxfp8", "FLASHINFER_TRTLLM_MXFP4_MXFP8"),
    ("sm90", "flashinfer_cutlass", None, "FLASHINFER_CUTLASS_MXFP4_BF16"),
    ("sm100", "flashinfer_cutlass", None, "FLASHINFER_CUTLASS_MXFP4_MXFP8"),
    ("sm90", "auto", None, "TRITON"),
])
def test_select_for_model_vllm_behaviours(device, backend, act, expected):
    qc = {"moe": {"activation": act}} if act else None
    ms = select_for_model("gpt-oss-20b", device=device, moe_backend=backend,
                          quantization_config=qc, environment=ALL)
    assert ms.selection.backend == expected


def test_activation_override_reaches_the_oracle_on_an_mxfp4_checkpoint():
    req, *_ = build_request("gpt-oss-20b", device="sm100",
                            quantization_config={"moe": {"activation": "mxfp8"}}, environment=ALL)
    assert req.activation == kMxfp8Dynamic and req.weight == kMxfp4Static


def _write(tmp_path, cfg):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_checkpoint_vs_override_conflict(tmp_path):
    _, cfg = load_model_config("gpt-oss-20b")
    cfg["quantization_config"]["activation_scheme"] = "mxfp8"
    folder = _write(tmp_path, cfg)
    with pytest.raises(ActivationConflict) as exc:
        select_for_model(folder, device="sm100",
                         quantization_config={"moe": {"activation": "fp8_per_tensor_static"}},
                         environment=ALL)
    assert exc.value.checkpoint == "mxfp8"
    # Same key on both sides is fine.
    ms = select_for_model(folder, device="sm100", environment=ALL,
                          quantization_config={"moe": {"activation": "mxfp8"}})
    assert ms.selection.activation == kMxfp8Dynamic


def test_compressed_tensors_mxfp4_checkpoint_declares_bf16(tmp_path):
    _, cfg = load_model_config("gpt-oss-20b")
    cfg["quantization_config"] = {"quant_method": "compressed-tensors", "config_groups": {
        "group_0": {"weights": {"num_bits": 4, "type": "float", "group_size": 32},
                    "input_activations": None}}}
    req, *_ = build_request(_write(tmp_path, cfg), device="sm100", environment=ALL)
    assert req.checkpoint_activation is BF16


def test_moe_weight_override_conflicts_with_the_checkpoint():
    with pytest.raises(ConfigError) as exc:
        build_request("gpt-oss-20b", device="sm90", quantization="fp8_per_block", environment=ALL)
    assert exc.value.path == "quantization_config.moe.weight"


def test_unquantized_model_needs_online_mxfp4(tmp_path):
    _, cfg = load_model_config("gpt-oss-20b")
    del cfg["quantization_config"]
    folder = _write(tmp_path, cfg)
    with pytest.raises(ConfigError):
        build_request(folder, device="sm90", environment=ALL)
    req, *_ = build_request(folder, device="sm90", quantization="mxfp4", environment=ALL)
    assert req.weight == kMxfp4Static


@pytest.mark.parametrize("mutate, path_suffix", [
    (lambda c: c.pop("hidden_size"), "hidden_size"),
    (lambda c: c.__setitem__("num_local_experts", "32"), "num_local_experts"),
    (lambda c: c.__setitem__("num_experts_per_tok", 10**12), "num_experts_per_tok"),
    (lambda c: c.__setitem__("swiglu_limit", float("nan")), "swiglu_limit"),
    (lambda c: c["quantization_config"].__setitem__("quant_method", "awq"), "quant_method"),
])
def test_malformed_configs_name_file_and_key(tmp_path, mutate, path_suffix):
    _, cfg = load_model_config("gpt-oss-20b")
    mutate(cfg)
    folder = _write(tmp_path, cfg)
    with pytest.raises(ConfigError) as exc:
        build_request(folder, device="sm90", environment=ALL)
    assert str(folder) in exc.value.path and exc.value.path.endswith(path_suffix)


def test_truncated_json_and_missing_file(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 28')
    with pytest.raises(ConfigError) as exc:
        build_request(tmp_path, device="sm90", environment=ALL)
    assert "config.json" in exc.value.path
    with pytest.raises(ConfigError):
        build_request(tmp_path / "nope", device="sm90", environment=ALL)


# ------------------------------------------------------------------------------ CLI

def test_dotted_flag_equals_json_flag():
    a = parse_argv(["select", "--quantization-config.moe.activation", "mxfp8"])
    b = parse_argv(["select", "--quantization-config", '{"moe": {"activation": "mxfp8"}}'])
    c = parse_argv(["select", "--quantization_config.moe.activation=mxfp8"])
    assert a.quantization_config == b.quantization_config == c.quantization_config == \
        {"moe": {"activation": "mxfp8"}}


def test_later_flag_wins_and_duplicates_warn():
    a = parse_argv(["--quantization-config.moe.activation", "mxfp8",
                    "--quantization-config.moe.activation", "null"])
    assert a.quantization_config == {"moe": {"activation": None}}
    assert a.warnings


def test_bad_flag_is_a_config_error():
    with pytest.raises(ConfigError):
        parse_argv(["select", "--no-such-flag"])
    with pytest.raises(ConfigError):
        parse_argv(["select", "--quantization-config.moe.activation"])


def test_cli_select_json_contract(capsys):
    rc = main(["select", "--device", "sm100", "--moe-backend", "flashinfer_trtllm",
               "--quantization-config.moe.activation", "mxfp8", "--libraries", "all", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert {"backend", "weight", "activation", "selected_by", "eligible", "rejected",
            "request"} <= set(out)
    assert out["backend"] == "FLASHINFER_TRTLLM_MXFP4_MXFP8"
    assert out["activation"] == "mxfp8" and out["weight"] == "mxfp4_static"
    assert out["selected_by"] == "pinned"
    assert out["rejected"][0] == {"backend": "FLASHINFER_TRTLLM_MXFP4_BF16",
                                  "reason": "activation_mismatch",
                                  "detail": out["rejected"][0]["detail"]}


def test_cli_failure_json_and_exit_2(capsys):
    rc = main(["select", "--device", "sm90", "--moe-backend", "FlashInfer-TRTLLM",
               "--libraries", "all", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 2
    assert out["error"] == "NoEligibleBackend"
    assert {r["backend"] for r in out["rejected"]} == {"FLASHINFER_TRTLLM_MXFP4_BF16",
                                                       "FLASHINFER_TRTLLM_MXFP4_MXFP8"}


def test_cli_unknown_backend(capsys):
    assert main(["select", "--device", "sm90", "--moe-backend", "flashinfer_trtlm",
                 "--libraries", "all", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == UnknownBackend.__name__


def test_cli_explain_lists_every_candidate(capsys):
    rc = main(["explain", "--device", "sm100", "--moe-backend", "flashinfer_cutlass",
               "--libraries", "all", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [c["backend"] for c in out["candidates"]] == ["FLASHINFER_CUTLASS_MXFP4_BF16",
                                                         "FLASHINFER_CUTLASS_MXFP4_MXFP8"]
    assert [c["verdict"] for c in out["candidates"]] == ["rejected", "selected"]


@pytest.mark.parametrize("cmd", [["matrix"], ["matrix", "--device", "sm90", "--json"], ["keys"],
                                 ["keys", "--json"]])
def test_cli_tables(cmd, capsys):
    assert main(cmd) == 0
    assert capsys.readouterr().out.strip()


def test_no_eligible_is_exit_2_in_text_mode(capsys):
    assert main(["select", "--device", "sm130", "--libraries", "all"]) == 2
    assert NoEligibleBackend.__name__ in capsys.readouterr().err
