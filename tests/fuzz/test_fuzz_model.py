"""Fuzz oracle.model.select_for_model with malformed config.json dicts and files.

Missing keys, wrong types, huge numbers, unicode, mangled quantization_config;
JSON text (whole or truncated, or not UTF-8) written to a config.json; folders
without one; odd paths.  Property: a ModelSelection, or an OracleError -- exactly a
ConfigError, UnknownBackend, ActivationConflict or NoEligibleBackend -- whose message
names the field (``config.json:hidden_size``) or shows the bad value.
"""

from __future__ import annotations

import atexit
import copy
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _fuzz_common import HASHABLE_JUNK, check_error_names_offender

model = pytest.importorskip("oracle.model")
from oracle import (ActivationConflict, ConfigError, Environment, NoEligibleBackend,  # noqa: E402
                    Reason, UnknownBackend)
from oracle.errors import escape  # noqa: E402

MODEL_ERRORS = (ConfigError, UnknownBackend, ActivationConflict, NoEligibleBackend)

BASE: dict = json.loads((Path(model.__file__).parent / "models" / "gpt-oss-20b.json")
                        .read_text(encoding="utf-8"))
KEYS = [k for k in BASE if not k.startswith("_")]
ALIASES = ["num_experts", "n_routed_experts", "top_k", "moe_intermediate_size"]
QUANT = [
    None, {}, {"quant_method": "mxfp4"}, {"quant_method": "mxfp4", "activation_scheme": "mxfp8"},
    {"quant_method": "mxfp4", "activation_scheme": "fp8"}, {"quant_method": "MXFP4"},
    {"quant_method": "mxfp4", "modules_to_not_convert": "lm_head"},
    {"quant_method": "mxfp4", "modules_to_not_convert": [1, None]},
    {"quant_method": "compressed-tensors"}, {"quant_method": "compressed-tensors",
                                             "config_groups": {"g": None}},
    {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "type": "float", "num_bits": 4, "group_size": 32}, "input_activations": {
        "type": "float", "num_bits": 8, "group_size": 32}}}},
    {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "type": "float", "num_bits": 4, "group_size": 32}, "input_activations": "fp8"}}},
    {"quant_method": "quark", "global_quant_config": {"weight": {"dtype": "fp4",
                                                                 "group_size": 32}}},
    {"quant_method": "quark", "global_quant_config": {"weight": {"dtype": "fp4",
                                                                 "group_size": 32},
                                                      "input_tensors": {"dtype": "int8"}}},
    {"quant_method": "quark", "global_quant_config": []}, {"quant_method": "fp8"},
    {"quant_method": None}, [], "mxfp4", 4,
]
JUNK = [*HASHABLE_JUNK, [], [2880], {}, {"a": 1}, -2880, 2880.5, 2**31, 2**31 - 1, "2880",
        "\u00e9\u6f22", 1e999, 10**400]

_mutation = st.one_of(
    st.tuples(st.just("del"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("set"), st.sampled_from(KEYS + ALIASES), st.sampled_from(JUNK)),
    st.tuples(st.just("set"), st.sampled_from(KEYS + ALIASES), st.integers()),
    st.tuples(st.just("set"), st.sampled_from(["num_local_experts", "num_experts_per_tok",
                                               "hidden_size", "intermediate_size"]),
              st.integers(-4, 300_000)),
    st.tuples(st.just("set"), st.just("quantization_config"), st.sampled_from(QUANT)),
    st.tuples(st.just("qset"), st.sampled_from(["quant_method", "activation_scheme",
                                                "modules_to_not_convert"]),
              st.sampled_from(JUNK)),
    st.tuples(st.just("set"), st.text(max_size=6), st.sampled_from(JUNK)),
)
configs = st.lists(_mutation, max_size=5).map(lambda muts: _apply(muts))


def _apply(mutations) -> dict:
    cfg = copy.deepcopy(BASE)
    for op, key, value in mutations:
        if op == "del":
            cfg.pop(key, None)
        elif op == "set":
            cfg[key] = copy.deepcopy(value)
        elif isinstance(cfg.get("quantization_config"), dict):
            cfg["quantization_config"][key] = copy.deepcopy(value)
    return cfg


options = st.fixed_dictionaries({
    "device": st.sampled_from(["sm90", "sm100", "sm120", "gfx950", "cpu", "xpu", "sm75"]),
    "moe_backend": st.sampled_from(["auto", "flashinfer_trtllm", "marlin", "emulation", "cpu",
                                    "triton", "nope"]),
    "quantization": st.sampled_from([None, None, "mxfp4", "fp8_per_block", "bogus"]),
    "quantization_config": st.sampled_from([None, None, {"moe": {"activation": "mxfp8"}},
                                            {"moe": {"activation": "bf16"}}, '{"moe": 1}']),
})

_tmp = Path(tempfile.mkdtemp(prefix="fuzz-model-"))
atexit.register(shutil.rmtree, _tmp, True)
(_tmp / "no-config").mkdir()
(_tmp / "dir-as-config" / "config.json").mkdir(parents=True)


def _atoms(obj, depth: int = 0) -> list:
    out = [obj]
    if depth < 10 and isinstance(obj, dict):
        for k, v in obj.items():
            out += [k, *_atoms(v, depth + 1)]
    elif depth < 10 and isinstance(obj, list):
        for v in obj:
            out += _atoms(v, depth + 1)
    return out


def _run(model_arg, cfg, opts) -> None:
    try:
        ms = model.select_for_model(model_arg, environment=Environment.assume_all(), **opts)
    except Exception as exc:  # noqa: BLE001 - the property decides
        # a malformed config/option (ConfigError, UnknownBackend, ActivationConflict) or
        # nothing eligible for the model's layer: nothing else
        assert isinstance(exc, MODEL_ERRORS), f"{type(exc).__name__} escaped: {exc!r}"
        if isinstance(exc, NoEligibleBackend):
            assert exc.rejected and all(isinstance(r.reason, Reason) for r in exc.rejected)
        path = getattr(exc, "path", None)
        if path is not None:
            assert escape(path) in str(exc)  # shown with non-printables escaped
        check_error_names_offender(
            exc, _atoms(cfg) + list(opts.values()) + [str(model_arg)],
            [p for p in (path, "config.json", "quantization", "moe_backend") if p])
        return
    assert ms.selection.backend
    assert ms.request.layer is not None
    ms.to_dict()


@given(configs, st.sampled_from(["full", "truncated", "latin1", "folder", "bom"]),
       st.integers(0, 2000), options)
def test_config_dicts_and_files(cfg, form, cut, opts):
    """Each example as a dict, then written to a config.json (whole, truncated, ...)."""
    _run(cfg, cfg, opts)
    folder = _tmp / "m"
    folder.mkdir(exist_ok=True)
    path = folder / "config.json"
    text = json.dumps(cfg, ensure_ascii=False, default=repr)
    if form == "truncated":
        text = text[:cut]
    data = text.encode("utf-8", "surrogatepass")
    if form == "latin1":
        data = text.encode("latin-1", "replace") + b"\xff\xfe"
    if form == "bom":
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(data)
    _run(folder if form == "folder" else path, cfg, opts)


@given(st.one_of(
    st.sampled_from([str(_tmp / "no-config"), str(_tmp / "dir-as-config"), str(_tmp / "nope"),
                     str(_tmp / "no-config" / "config.json"), "", ".", "/", "gpt-oss",
                     "GPT-OSS-20B", "gpt-oss-20b ", 0, None, [], {}, b"gpt-oss-20b",
                     "a\x00b", "x" * 255, str(_tmp / ("y" * 250))]),
    st.text(max_size=40),
), options)
def test_model_arguments(model_arg, opts):
    _run(model_arg, {}, opts)


@pytest.mark.parametrize("name", ["x" * 300, "/tmp/" + "y" * 300])
def test_model_path_too_long(name):
    with pytest.raises(ConfigError):
        model.select_for_model(name, device="sm90", environment=Environment.assume_all())


def test_float_field_huge_int():
    cfg = {**BASE, "swiglu_limit": 10**400}
    with pytest.raises(ConfigError, match="swiglu_limit"):
        model.select_for_model(cfg, device="sm90", environment=Environment.assume_all())
