"""Fuzz oracle.config: arbitrary nested JSON and strings for resolve_quantization_config.

Property: a QuantizationConfigArgs comes back (and survives a round trip through
to_dict), or a ConfigError is raised whose message names the field path and shows
the offending value (or a part of the input).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _fuzz_common import check_error_names_offender

config = pytest.importorskip("oracle.config")
from oracle import ConfigError  # noqa: E402
from oracle.errors import escape  # noqa: E402
from oracle.keys import QUANT_KEY_NAMES  # noqa: E402

SHORTHANDS = list(getattr(config, "SHORTHANDS", ()))
_KEYS = ["linear", "moe", "ignore", "weight", "activation", "Moe", "moe ", "", "activations",
         "quant_method"]
_NAMES = [*QUANT_KEY_NAMES, *SHORTHANDS, "bf16", "BF16", "mxfp4 ", "kMxfp4Static", "", "null",
          "re:.*", "re:(", "lm_head", "*", "\u00e9", "\ud800"]

_scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(_NAMES), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)
json_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=6)), children,
                        max_size=4),
    ),
    max_leaves=8,
)
# Shaped like a real quantization_config most of the time, so deep paths get reached.
_spec = st.one_of(
    st.none(), st.sampled_from(_NAMES),
    st.fixed_dictionaries({}, optional={"weight": st.one_of(st.sampled_from(_NAMES), json_values),
                                        "activation": st.one_of(st.sampled_from(_NAMES),
                                                                json_values)}),
    json_values,
)
shaped = st.fixed_dictionaries({}, optional={
    "linear": _spec, "moe": _spec,
    "ignore": st.one_of(st.lists(st.sampled_from(_NAMES), max_size=3), json_values),
})
config_values = st.one_of(
    shaped, json_values,
    shaped.map(json.dumps), json_values.map(lambda v: json.dumps(v)),
    st.tuples(shaped, st.integers(0, 200)).map(lambda t: json.dumps(t[0])[:t[1]]),
    st.text(max_size=40),
    st.sampled_from(["[" * 50_000, "{" * 3, '{"moe": {"activation": "mxfp8"}}', "null", "",
                     '{"moe": null}', "NaN", "1e999", '{"moe": {"weight": 1e999}}']),
)
quantizations = st.one_of(st.none(), st.sampled_from([*SHORTHANDS, "MXFP4", "", "fp8", "none"]),
                          st.text(max_size=12), st.sampled_from([0, 1.5, ["mxfp4"], {"a": 1},
                                                                 b"mxfp4", True]))


def _atoms(obj, depth: int = 0) -> list:
    """The input and every key/leaf inside it (what an error message may show)."""
    out = [obj]
    if depth > 20:
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += [k, *_atoms(v, depth + 1)]
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out += _atoms(v, depth + 1)
    elif isinstance(obj, str) and obj[:1] in ("{", "["):
        try:
            out += _atoms(json.loads(obj), depth + 1)
        except (ValueError, RecursionError):
            pass
    return out


def _check_error(exc: BaseException, quantization, quantization_config) -> None:
    # a malformed quantization / quantization_config is exactly a ConfigError (an
    # UnknownQuantKey for a key name no key has)
    assert isinstance(exc, ConfigError), f"{type(exc).__name__} escaped: {exc!r}"
    path = getattr(exc, "path", None)
    if path is not None:
        # messages show non-printable characters escaped (oracle.errors.escape)
        assert escape(path) in str(exc), f"path {path!r} not in message {str(exc)!r}"
    check_error_names_offender(exc, _atoms(quantization) + _atoms(quantization_config),
                               [path] if path else [])


def _from_value(value) -> None:
    try:
        args = config.QuantizationConfigArgs.from_value(value)
    except Exception as exc:  # noqa: BLE001 - the property decides
        _check_error(exc, None, value)
        return
    assert isinstance(args, config.QuantizationConfigArgs)
    assert config.QuantizationConfigArgs.from_value(args.to_dict()).to_dict() == args.to_dict()


@given(quantizations, config_values)
def test_resolve_quantization_config_and_from_value(quantization, quantization_config):
    """Both entry points on every example (one generation, two properties)."""
    _from_value(quantization_config)
    try:
        args = config.resolve_quantization_config(quantization, quantization_config)
    except Exception as exc:  # noqa: BLE001 - the property decides
        _check_error(exc, quantization, quantization_config)
        return
    assert isinstance(args, config.QuantizationConfigArgs)
    again = config.QuantizationConfigArgs.from_value(args.to_dict())
    assert again.to_dict() == args.to_dict()
    for module in ("lm_head", "model.layers.0.mlp.experts", ""):
        assert args.is_ignored(module) in (True, False)
