"""oracle.keys: the quant-key constants, their user names and the name parser (design §2)."""

from __future__ import annotations

import dataclasses
import copy
import pickle

import pytest

import oracle.keys as keys
from oracle.errors import ConfigError, OracleError, UnknownQuantKey
from oracle.keys import (BF16, KEY_CONSTANTS, QUANT_KEY_NAMES, GroupShape, QuantKey, ScaleDesc,
                         canonical_name, parse_quant_key)

# design.md §2: "Constants at least: ..."
DESIGN_CONSTANTS = (
    "kFp8StaticTensorSym", "kFp8DynamicTensorSym", "kFp8DynamicTokenSym",
    "kFp8StaticChannelSym", "kFp8Static128BlockSym", "kFp8Dynamic128Sym", "kMxfp8Static",
    "kMxfp8Dynamic", "kMxfp4Static", "kMxfp4Dynamic", "kNvfp4Static", "kNvfp4Dynamic",
    "kNvfp4DynamicToken", "kInt8StaticChannelSym", "kInt8DynamicTokenSym", "kInt8Dynamic32Sym",
    "kInt4Static32",
)

# vLLM's user names with vLLM's meaning (note: "mxfp4" is the *dynamic* key there).
VLLM_NAMES = {
    "fp8_per_tensor_static": "kFp8StaticTensorSym",
    "fp8_per_tensor_dynamic": "kFp8DynamicTensorSym",
    "fp8_per_token": "kFp8DynamicTokenSym",
    "fp8_per_channel_static": "kFp8StaticChannelSym",
    "fp8_per_block_static": "kFp8Static128BlockSym",
    "fp8_per_block_dynamic": "kFp8Dynamic128Sym",
    "mxfp8": "kMxfp8Dynamic",
    "mxfp4": "kMxfp4Dynamic",
    "nvfp4_per_token": "kNvfp4DynamicToken",
    "int8_per_channel_static": "kInt8StaticChannelSym",
    "int8_per_group_32": "kInt8Dynamic32Sym",
    "int4_per_group_32": "kInt4Static32",
}

EXTRA_NAMES = {
    "bf16": None,
    "mxfp4_static": "kMxfp4Static",
    "mxfp4_dynamic": "kMxfp4Dynamic",
    "mxfp8_static": "kMxfp8Static",
    "nvfp4_static": "kNvfp4Static",
    "nvfp4_dynamic": "kNvfp4Dynamic",
}

ALL_KEYS = [getattr(keys, n) for n in DESIGN_CONSTANTS]


# ------------------------------------------------------------------ constants


@pytest.mark.parametrize("name", DESIGN_CONSTANTS)
def test_design_constant_exists(name):
    value = getattr(keys, name)
    assert isinstance(value, QuantKey)
    assert KEY_CONSTANTS[name] == value


def test_constants_are_distinct_values():
    assert len(set(ALL_KEYS)) == len(ALL_KEYS)


@pytest.mark.parametrize("key", ALL_KEYS, ids=DESIGN_CONSTANTS)
def test_dtypes_are_short_strings(key):
    assert isinstance(key.dtype, str)
    assert isinstance(key.scale, ScaleDesc)
    assert isinstance(key.scale.dtype, str)
    assert isinstance(key.scale.group_shape, GroupShape)
    assert key.scale2 is None or isinstance(key.scale2, ScaleDesc)


@pytest.mark.parametrize(
    "name, dtype, scale_dtype, static, group",
    [
        ("kMxfp4Static", "fp4_e2m1", "e8m0", True, (1, 32)),
        ("kMxfp4Dynamic", "fp4_e2m1", "e8m0", False, (1, 32)),
        ("kMxfp8Static", "fp8_e4m3", "e8m0", True, (1, 32)),
        ("kMxfp8Dynamic", "fp8_e4m3", "e8m0", False, (1, 32)),
        ("kFp8StaticTensorSym", "fp8_e4m3", "fp32", True, (-1, -1)),
        ("kFp8DynamicTensorSym", "fp8_e4m3", "fp32", False, (-1, -1)),
        ("kFp8DynamicTokenSym", "fp8_e4m3", "fp32", False, (1, -1)),
        ("kFp8StaticChannelSym", "fp8_e4m3", "fp32", True, (-1, 1)),
        ("kFp8Static128BlockSym", "fp8_e4m3", "fp32", True, (128, 128)),
        ("kFp8Dynamic128Sym", "fp8_e4m3", "fp32", False, (1, 128)),
    ],
)
def test_key_layout(name, dtype, scale_dtype, static, group):
    key = getattr(keys, name)
    assert key.dtype == dtype
    assert key.scale.dtype == scale_dtype
    assert key.scale.static is static
    assert (key.scale.group_shape.row, key.scale.group_shape.col) == group


def test_nvfp4_keys_have_a_second_scale():
    for key in (keys.kNvfp4Static, keys.kNvfp4Dynamic, keys.kNvfp4DynamicToken):
        assert key.dtype == "fp4_e2m1"
        assert key.scale.group_shape == GroupShape(1, 16)
        assert key.scale2 is not None


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("user_name, constant", sorted(VLLM_NAMES.items()))
def test_vllm_names_keep_vllm_meaning(user_name, constant):
    assert QUANT_KEY_NAMES[user_name] == getattr(keys, constant)


def test_mxfp4_is_the_dynamic_key_like_vllm():
    assert QUANT_KEY_NAMES["mxfp4"] == keys.kMxfp4Dynamic
    assert QUANT_KEY_NAMES["mxfp4"] != keys.kMxfp4Static


@pytest.mark.parametrize("user_name, constant", sorted(EXTRA_NAMES.items()))
def test_extra_names(user_name, constant):
    expected = None if constant is None else getattr(keys, constant)
    assert user_name in QUANT_KEY_NAMES
    assert QUANT_KEY_NAMES[user_name] == expected


def test_bf16_activation_is_none_named_bf16():
    assert QUANT_KEY_NAMES["bf16"] is None
    assert canonical_name(None) == "bf16"
    assert canonical_name(BF16) == "bf16"
    assert parse_quant_key("bf16") is None


@pytest.mark.parametrize("key", ALL_KEYS, ids=DESIGN_CONSTANTS)
def test_every_key_has_a_user_name(key):
    assert key in QUANT_KEY_NAMES.values()


@pytest.mark.parametrize("key", [*ALL_KEYS, None], ids=[*DESIGN_CONSTANTS, "bf16"])
def test_canonical_name_round_trips(key):
    name = canonical_name(key)
    assert isinstance(name, str) and name
    assert name in QUANT_KEY_NAMES
    assert QUANT_KEY_NAMES[name] == key
    assert parse_quant_key(name) == key


def test_one_canonical_name_per_key():
    keys_ = [*ALL_KEYS, None]
    names = [canonical_name(k) for k in keys_]
    assert len(set(names)) == len(keys_)
    # aliases ("mxfp4" and "mxfp4_dynamic") share one canonical name
    for key in set(QUANT_KEY_NAMES.values()):
        aliases = [n for n, k in QUANT_KEY_NAMES.items() if k == key]
        assert canonical_name(key) in aliases


def test_canonical_name_is_stable_for_equal_values():
    rebuilt = QuantKey("fp4_e2m1", ScaleDesc("e8m0", True, GroupShape(1, 32)))
    assert canonical_name(rebuilt) == canonical_name(keys.kMxfp4Static)


def test_str_of_key_is_its_canonical_name():
    for key in ALL_KEYS:
        assert str(key) == canonical_name(key)


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("name", sorted(QUANT_KEY_NAMES))
def test_parse_every_user_name(name):
    assert parse_quant_key(name) == QUANT_KEY_NAMES[name]


@pytest.mark.parametrize("name", DESIGN_CONSTANTS)
def test_parse_accepts_constant_names(name):
    assert parse_quant_key(name) == getattr(keys, name)


def test_parse_passes_keys_and_none_through():
    assert parse_quant_key(keys.kMxfp8Dynamic) is keys.kMxfp8Dynamic
    assert parse_quant_key(None) is None


@pytest.mark.parametrize(
    "bad, suggestion",
    [("MXFP8", "mxfp8"), ("Mxfp4", "mxfp4"), ("BF16", "bf16"), ("FP8_PER_TOKEN", "fp8_per_token")],
)
def test_parse_is_case_sensitive_and_suggests(bad, suggestion):
    with pytest.raises(UnknownQuantKey) as info:
        parse_quant_key(bad)
    err = info.value
    assert err.name == bad
    assert err.suggestion == suggestion
    assert suggestion in err.choices
    assert set(err.choices) == set(QUANT_KEY_NAMES)
    assert str(err)


def test_unknown_quant_key_is_in_the_error_family():
    with pytest.raises(UnknownQuantKey) as info:
        parse_quant_key("mxfp8_dynamicc")
    err = info.value
    assert isinstance(err, ConfigError)
    assert isinstance(err, OracleError)
    assert isinstance(err, ValueError)
    assert err.suggestion in QUANT_KEY_NAMES


def test_unknown_quant_key_without_close_match():
    with pytest.raises(UnknownQuantKey) as info:
        parse_quant_key("zzzzzzzzzzzz")
    assert info.value.suggestion is None
    assert info.value.choices


def test_parse_carries_the_config_path():
    with pytest.raises(UnknownQuantKey) as info:
        parse_quant_key("MXFP8", path="moe.activation")
    assert info.value.path == "moe.activation"


@pytest.mark.parametrize("bad", [3, 1.5, ["mxfp8"], b"mxfp8"])
def test_parse_rejects_non_strings(bad):
    with pytest.raises(UnknownQuantKey):
        parse_quant_key(bad)


# ------------------------------------------------------------------ value semantics


@pytest.mark.parametrize("key", ALL_KEYS, ids=DESIGN_CONSTANTS)
def test_keys_are_frozen(key):
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.dtype = "int8"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.scale.static = not key.scale.static  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.scale.group_shape.row = 7  # type: ignore[misc]


@pytest.mark.parametrize("key", ALL_KEYS, ids=DESIGN_CONSTANTS)
def test_keys_hash_and_compare_by_value(key):
    clone = QuantKey(
        key.dtype,
        ScaleDesc(key.scale.dtype, key.scale.static,
                  GroupShape(key.scale.group_shape.row, key.scale.group_shape.col)),
        None if key.scale2 is None else ScaleDesc(
            key.scale2.dtype, key.scale2.static,
            GroupShape(key.scale2.group_shape.row, key.scale2.group_shape.col)),
        key.symmetric,
    )
    assert clone is not key
    assert clone == key
    assert hash(clone) == hash(key)
    assert {clone: 1}[key] == 1
    assert pickle.loads(pickle.dumps(key)) == key


def test_keys_differ_by_any_field():
    base = keys.kMxfp4Static
    assert dataclasses.replace(base, dtype="fp8_e4m3") != base
    assert dataclasses.replace(base, symmetric=False) != base
    assert dataclasses.replace(base, scale=dataclasses.replace(base.scale, static=False)) != base
    assert dataclasses.replace(base, scale2=base.scale) != base


def test_bf16_marker_is_a_singleton_that_survives_pickling():
    assert pickle.loads(pickle.dumps(BF16)) is BF16
    assert type(BF16)("bf16") is BF16  # a one-member enum: constructing gives the member
    assert copy.deepcopy(BF16) is BF16 and copy.copy(BF16) is BF16
    assert BF16 is not None
