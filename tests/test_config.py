"""oracle.config: shorthands, slot parsing and the field-level merge."""

from __future__ import annotations

import pytest

from oracle.config import (SHORTHANDS, QuantizationConfigArgs, QuantSpec,
                           resolve_quantization_config)
from oracle.errors import ConfigError, UnknownQuantKey
from oracle.keys import (BF16, kFp8Static128BlockSym, kFp8StaticChannelSym, kFp8StaticTensorSym,
                         kInt8StaticChannelSym, kMxfp4Static, kMxfp8Dynamic, kNvfp4Static)
from oracle.keys import UNSET

DESUGAR = {
    "fp8_per_tensor": (kFp8StaticTensorSym, kFp8StaticTensorSym),
    "fp8_per_block": (kFp8Static128BlockSym, kFp8Static128BlockSym),
    "fp8_per_channel": (kFp8StaticChannelSym, kFp8StaticChannelSym),
    "mxfp8": (kMxfp8Dynamic, kMxfp8Dynamic),
    "mxfp4": (kMxfp4Static, kMxfp4Static),
    "int8_per_channel_weight_only": (None, kInt8StaticChannelSym),
    "nvfp4_per_token": (None, kNvfp4Static),
}


@pytest.mark.parametrize("name", sorted(DESUGAR))
def test_every_shorthand_desugars_into_its_slots(name):
    linear_w, moe_w = DESUGAR[name]
    cfg = resolve_quantization_config(name)
    if linear_w is None:
        assert cfg.linear is None
    else:
        assert cfg.linear == QuantSpec(weight=linear_w)
    assert cfg.moe == QuantSpec(weight=moe_w)
    assert cfg.moe.activation is UNSET


def test_shorthand_table_is_exactly_the_documented_set():
    assert set(SHORTHANDS) == set(DESUGAR)


def test_field_level_merge_keeps_the_shorthand_weight():
    # vLLM replaces the whole slot here and drops the MoE weight; we keep it.
    cfg = resolve_quantization_config("fp8_per_block", {"moe": {"activation": "mxfp8"}})
    assert cfg.moe == QuantSpec(weight=kFp8Static128BlockSym, activation=kMxfp8Dynamic)
    assert cfg.linear == QuantSpec(weight=kFp8Static128BlockSym)


def test_explicit_null_slot_beats_the_shorthand():
    cfg = resolve_quantization_config("fp8_per_tensor", {"linear": None})
    assert cfg.linear is None
    assert cfg.moe == QuantSpec(weight=kFp8StaticTensorSym)


def test_explicit_null_field_clears_it():
    cfg = resolve_quantization_config("mxfp4", {"moe": {"weight": None}})
    assert cfg.moe == QuantSpec(weight=None)


def test_bare_string_slot_is_shorthand_first_then_key_name():
    assert resolve_quantization_config(None, {"moe": "mxfp4"}).moe == QuantSpec(kMxfp4Static)
    assert resolve_quantization_config(None, {"moe": "mxfp8_static"}).moe.weight.scale.static


def test_shorthand_without_that_slot_is_an_error():
    with pytest.raises(ConfigError) as exc:
        resolve_quantization_config(None, {"linear": "nvfp4_per_token"})
    assert exc.value.path == "linear"


def test_bf16_activation_is_the_strict_marker():
    cfg = resolve_quantization_config(None, {"moe": {"activation": "bf16"}})
    assert cfg.moe.activation is BF16


def test_json_string_equals_dict():
    a = resolve_quantization_config(None, '{"moe": {"activation": "mxfp8"}}')
    b = resolve_quantization_config(None, {"moe": {"activation": "mxfp8"}})
    assert a == b


@pytest.mark.parametrize("value, path", [
    ({"moe": {"activation": "mxfp9"}}, "moe.activation"),
    ({"moe": {"activaton": "mxfp8"}}, "moe.activaton"),
    ({"mo": {}}, "quantization_config.mo"),
    ({"moe": 3}, "moe"),
    ({"moe": {"weight": 3}}, "moe.weight"),
    ({"ignore": 5}, "ignore"),
    ({"ignore": ["re:("]}, "ignore[0]"),
    ("{not json", "quantization_config"),
    ("[1, 2]", "quantization_config"),
])
def test_errors_name_the_field_path(value, path):
    with pytest.raises(ConfigError) as exc:
        resolve_quantization_config(None, value)
    assert exc.value.path == path


def test_unknown_key_name_suggests_the_close_one():
    with pytest.raises(UnknownQuantKey) as exc:
        resolve_quantization_config(None, {"moe": {"activation": "MXFP8"}})
    assert exc.value.suggestion == "mxfp8"
    assert exc.value.path == "moe.activation"
    assert "mxfp8" in exc.value.choices


def test_unknown_shorthand_is_a_config_error():
    with pytest.raises(ConfigError) as exc:
        resolve_quantization_config("fp8-per-block")
    assert exc.value.path == "quantization"


def test_ignore_patterns_exact_regex_glob():
    cfg = QuantizationConfigArgs(ignore=("lm_head", "re:.*\\.router", "model.layers.*.self_attn"))
    assert cfg.is_ignored("lm_head")
    assert cfg.is_ignored("model.layers.3.mlp.router")
    assert cfg.is_ignored("model.layers.11.self_attn")
    assert not cfg.is_ignored("model.layers.3.mlp.experts")


def test_to_dict_round_trip():
    cfg = resolve_quantization_config("fp8_per_block", {"moe": {"activation": "mxfp8"},
                                                        "ignore": ["lm_head"]})
    assert resolve_quantization_config(None, cfg.to_dict()) == cfg
