"""Fuzz the value types with arbitrary values: None, ints (0, negative, 2**63, 10**5000),
floats (nan, inf), bytes, strings (key names, junk, lone surrogates), lists, dicts, bools,
keys, markers and other project values.

* ``QuantSpec(weight=..., activation=...)`` and ``QuantizationConfigArgs(linear=, moe=,
  ignore=)``;
* ``LayerSpec(**fields)``, ``LayerSpec.from_dict(x)``, ``SelectionRequest(**fields)`` then
  ``select(request)``, ``select(x)`` and ``select(request, matrix=x)``.

Property: a value, or a ConfigError naming the field (UnknownQuantKey is a ConfigError);
``select`` on a built request may also raise UnknownBackend, ActivationConflict or
NoEligibleBackend.  Never TypeError, AttributeError, ValueError, OverflowError,
RecursionError, ...
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from _hostile import Floor, expect
from oracle import (ActivationConflict, ConfigError, Device, Environment, LayerSpec,
                    NoEligibleBackend, SelectionRequest, UnknownBackend, select)
from oracle.config import QuantizationConfigArgs, QuantSpec
from oracle.keys import BF16, UNSET, kMxfp4Static, kMxfp8Dynamic
from oracle.matrix import MATRIX
from oracle.selection import Selection

#: Values by name: a failure report shows ``value('10**5000')``, not 5 000 digits.
_VALUES = {
    "None": None, "0": 0, "1": 1, "-1": -1, "4": 4, "2880": 2880, "2**31": 2 ** 31,
    "2**63": 2 ** 63, "-2**63": -2 ** 63, "10**30": 10 ** 30, "10**5000": 10 ** 5000,
    "-10**5000": -10 ** 5000, "True": True, "False": False, "0.0": 0.0, "-0.0": -0.0,
    "1.702": 1.702, "7.0": 7.0, "nan": math.nan, "inf": math.inf, "-inf": -math.inf,
    "1e308": 1e308, "b''": b"", "b'mxfp8'": b"mxfp8", "bytearray(b'x')": bytearray(b"x"),
    "''": "", "' '": " ", "'mxfp8'": "mxfp8", "'mxfp4_static'": "mxfp4_static", "'bf16'": "bf16",
    "'BF16'": "BF16", "'kMxfp4Static'": "kMxfp4Static", "'fp8_per_block'": "fp8_per_block",
    "'nvfp4_per_token'": "nvfp4_per_token", "'mxfp4'": "mxfp4", "'auto'": "auto",
    "'marlin'": "marlin", "'swiglu_oai'": "swiglu_oai", "'\\x00'": "\x00", "'\\ud800'": "\ud800",
    "'\\x1b[31m'": "\x1b[31m", "'lm_head'": "lm_head", "'re:('": "re:(",
    "'re:a{99999999999}'": "re:a{99999999999}", "'re:' + '(' * 5000": "re:" + "(" * 5000,
    "'x' * 10000": "x" * 10000, "[]": [], "['lm_head']": ["lm_head"], "[1]": [1], "[None]": [None],
    "['re:(']": ["re:("], "['']": [""], "[[]]": [[]], "{}": {},
    "{'weight': 'mxfp8'}": {"weight": "mxfp8"},
    "{'activation': 'bf16'}": {"activation": "bf16"}, "{'weight': 5}": {"weight": 5},
    "{'bogus': 1}": {"bogus": 1}, "{1: 2}": {1: 2}, "{'hidden_size': 2880}": {"hidden_size": 2880},
    "(1,)": (1,), "()": (), "('lm_head',)": ("lm_head",), "set()": set(),
    "frozenset({1})": frozenset({1}),
    "1+2j": 1 + 2j, "Ellipsis": Ellipsis, "object()": object(), "kMxfp4Static": kMxfp4Static,
    "kMxfp8Dynamic": kMxfp8Dynamic, "BF16": BF16, "UNSET": UNSET, "QuantSpec()": QuantSpec(),
    "QuantSpec(kMxfp4Static)": QuantSpec(kMxfp4Static), "Device('cuda', 90)": Device("cuda", 90),
    "Device('rocm', 'gfx950')": Device("rocm", "gfx950"),
    "Environment.assume_all()": Environment.assume_all(), "Environment.none()": Environment.none(),
    "LayerSpec()": LayerSpec(), "LayerSpec(top_k=4)": LayerSpec(top_k=4),
    "SelectionRequest()": SelectionRequest(), "MATRIX": MATRIX,
    "QuantizationConfigArgs()": QuantizationConfigArgs(),
}


def _device_huge_arch():
    """Device('cuda', 10**5000), when Device accepts it (refusing is a ConfigError)."""
    try:
        return Device("cuda", 10 ** 5000)
    except ConfigError:
        return None


if _device_huge_arch() is not None:
    _VALUES["Device('cuda', 10**5000)"] = _device_huge_arch()


def value(name: str) -> object:
    """The value named ``name`` (see _VALUES)."""
    return _VALUES[name]


anything = st.one_of(st.sampled_from(sorted(_VALUES)).map(value),
                     st.sampled_from(sorted(_VALUES)).map(value),
                     st.integers(), st.floats(), st.text(max_size=8))

# ------------------------------------------------------------------ quantization config values


def test_quant_spec_and_config_args():
    refused = Floor("a refused value", 0.3)
    accepted = Floor("an accepted value", 0.1)

    @given(anything, anything, anything, anything, anything, st.integers(0, 7))
    def check(weight, activation, linear, moe, ignore, which):
        # which (3 bits): the keyword arguments given (left out: the default, UNSET / ())
        kwargs = {k: v for bit, (k, v) in enumerate((("weight", weight), ("activation", activation)))
                  if which & (1 << bit)}
        try:
            spec = QuantSpec(**kwargs)
        except Exception as exc:  # noqa: BLE001 - the property decides
            expect(exc, ConfigError)
            assert exc.path.startswith("QuantSpec."), exc.path
            refused.add()
        else:
            accepted.add()
            assert QuantSpec(**{k: getattr(spec, k) for k in ("weight", "activation")}) == spec
            spec.to_dict()
        qkw = {k: v for bit, (k, v) in enumerate((("linear", linear), ("moe", moe),
                                                  ("ignore", ignore))) if which & (1 << bit)}
        try:
            args = QuantizationConfigArgs(**qkw)
        except Exception as exc:  # noqa: BLE001
            expect(exc, ConfigError)
            refused.add()
            return
        accepted.add()
        assert QuantizationConfigArgs.from_value(args.to_dict()).to_dict() == args.to_dict()
        for module in ("lm_head", "model.layers.0.mlp.experts", ""):
            assert args.is_ignored(module) in (True, False)

    check()
    refused.check()
    accepted.check()


# ------------------------------------------------------------------ layers, requests, select

_LAYER_FIELDS = ("hidden_size", "intermediate_size", "num_experts", "top_k", "activation_fn",
                 "swiglu_alpha", "swiglu_limit", "has_bias", "ep_size", "tp_size")
_REQUEST_FIELDS = ("weight", "activation", "checkpoint_activation", "moe_backend", "device",
                   "environment", "layer", "allow_activation_fallback")
_SELECT_ERRORS = (ConfigError, UnknownBackend, ActivationConflict, NoEligibleBackend)


def test_layer_request_and_select():
    refused = Floor("a refused value (ConfigError)", 0.3)
    built = Floor("a LayerSpec or SelectionRequest built and selected on", 0.1)

    @given(st.lists(st.tuples(st.sampled_from(_LAYER_FIELDS), anything), max_size=4).map(dict),
           anything,
           st.lists(st.tuples(st.sampled_from(_REQUEST_FIELDS), anything), max_size=3).map(dict),
           anything)
    def check(layer_fields, layer_value, request_fields, other):
        # LayerSpec(**fields) and LayerSpec.from_dict on the same fields, then on any value
        results = []
        for make in (lambda: LayerSpec(**layer_fields), lambda: LayerSpec.from_dict(layer_fields),
                     lambda: LayerSpec.from_dict(layer_value)):
            try:
                results.append(make())
            except Exception as exc:  # noqa: BLE001
                expect(exc, ConfigError)
                assert exc.path.startswith("layer"), exc.path
                refused.add()
                results.append(None)
        assert (results[0] is None) == (results[1] is None)
        layer = results[0]
        # SelectionRequest(**fields), with the layer just built when there is one
        if layer is not None and "layer" not in request_fields:
            request_fields = {**request_fields, "layer": layer}
        try:
            request = SelectionRequest(**request_fields)
        except Exception as exc:  # noqa: BLE001
            expect(exc, ConfigError)
            refused.add()
            request = SelectionRequest()
        else:
            built.add()
        # select on the request, on any value, and with any value as the matrix
        for call in (lambda: select(request), lambda: select(request, matrix=other),
                     lambda: select(other)):
            try:
                sel = call()
            except Exception as exc:  # noqa: BLE001
                expect(exc, *_SELECT_ERRORS)
                continue
            assert isinstance(sel, Selection) and sel.backend
            sel.to_dict()
        if not isinstance(other, SelectionRequest):  # not a request: exactly a ConfigError
            try:
                select(other)
            except Exception as exc:  # noqa: BLE001
                expect(exc, ConfigError, exact=True)
            else:
                raise AssertionError("select() of a non-request returned")

    check()
    refused.check()
    built.check()
