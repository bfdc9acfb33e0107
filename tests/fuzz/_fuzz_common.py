"""Strategies and the shared property for the fuzz suites.

The property every fuzz test checks: the public entry point either returns, or
raises a member of the :class:`oracle.OracleError` family whose message names the
field or the value at fault.  Anything else (TypeError, KeyError, RecursionError,
SystemExit, ...) is a bug.
"""

from __future__ import annotations

import math
from typing import Any

from nontrivial import NonTrivial
from hypothesis import strategies as st
from packaging.version import Version

from oracle import BF16, Device, Environment, LayerSpec, OracleError, Reason, SelectionRequest
from oracle.errors import escape
from oracle.keys import (KEY_CONSTANTS, UNSET, GroupShape, QuantKey, ScaleDesc, canonical_name,
                         kMxfp4Static)
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX
from oracle.platforms import LIBRARIES

KEYS = list(KEY_CONSTANTS.values())

# ------------------------------------------------------------------ basic values
# Per-example cost is dominated by data generation, so the strategies draw mostly
# from precomputed pools (cheap sampled_from) and keep a few open-ended draws
# (integers, text) where arbitrariness matters.

HUGE = [0, -1, 1, -2**31, 2**31, 2**63, -2**63, 10**30, 2**200]
ints = st.one_of(st.integers(), st.sampled_from(HUGE))
sizes = st.one_of(st.sampled_from([32, 64, 128, 256, 2880, 4096, 2944, 7168, 90, 1000, *HUGE]),
                  st.integers(-8, 10**5))
HASHABLE_JUNK = [
    None, True, False, 0.0, -0.0, 2880.0, 1e308, float("inf"), float("-inf"), float("nan"),
    "", "2880", "swiglu", "\x00", "\u00e9\u6f22", "\ud800", b"", b"\xff", (1,), ("a", 2),
    frozenset({1}), 3 + 4j, Ellipsis, "None", "nan", *HUGE,
]
UNHASHABLE_JUNK = [[], [2880], {}, {"a": 1}, set(), {1}, bytearray(b"x"), [[1]],
                   {"hidden_size": 2880}]
# Wrong types include unhashable ones: the request is hashed for the selector's cache,
# and that must never turn into a TypeError.
junk = st.one_of(st.sampled_from(HASHABLE_JUNK + UNHASHABLE_JUNK), st.text(max_size=6))


def _field(good: st.SearchStrategy, junk: st.SearchStrategy | None) -> st.SearchStrategy:
    return st.one_of(st.none(), good) if junk is None else st.one_of(st.none(), good, junk)


_FNS = st.sampled_from(["swiglu_oai", "swiglu", "gelu", "relu2", "", "SWIGLU", "swiglu_oai "])
LAYER_FIELDS = ("hidden_size", "intermediate_size", "num_experts", "top_k", "activation_fn",
                "swiglu_alpha", "swiglu_limit", "has_bias", "ep_size", "tp_size")


def layer_kwargs(junk: st.SearchStrategy | None = junk) -> st.SearchStrategy:
    """LayerSpec keyword arguments (built in the test: construction may raise).

    A short list of (field, value) pairs rather than all ten fields: far cheaper to
    generate, and a value only matters where a gate or the validator reads it.
    """
    small = st.one_of(st.integers(-2, 64), st.sampled_from(HUGE))
    floats = st.sampled_from([1.702, 0.0, -1.0, 7.0, -7.0, 1, float("nan"), float("inf")])
    good = {
        "hidden_size": sizes, "intermediate_size": sizes, "num_experts": small, "top_k": small,
        "activation_fn": _FNS, "swiglu_alpha": floats, "swiglu_limit": floats,
        "has_bias": st.booleans(), "ep_size": small, "tp_size": small,
    }
    pairs = [st.tuples(st.just(f), _field(v, junk)) for f, v in good.items()]
    return st.lists(st.one_of(pairs), max_size=5).map(dict)


# Devices as (platform, arch) pairs; Device(...) is built in the test (it validates).
_DEVICE_POOL = [(d.platform, d.arch) for d in map(Device.parse, ARCHS_IN_SCOPE)] + [
    ("cuda", 101), ("cuda", 130), ("cuda", 0), ("cuda", -5), ("cuda", 10**9), ("cuda", 2**70),
    ("rocm", "gfx1200"), ("rocm", "gfx90a"), ("rocm", "gfx000"), ("rocm", "sm90"),
    ("xpu", "cpu"), ("cpu", "xpu"), ("rocm", ""), ("cpu", "\u00e9\ud800"),
]
_BAD_DEVICES = [("cuda", "abc"), ("", ""), ("tpu", "v5"), ("cuda", "90"), ("cuda", True),
                ("rocm", 942), ("cuda", 9.0), ("CUDA", 90)]
devices = st.one_of(
    st.sampled_from(_DEVICE_POOL + _BAD_DEVICES),
    st.integers(-5, 2000).map(lambda n: ("cuda", n)),
)

# Versions: PEP 440 strings (pre-, post-, dev-releases, local labels) and Version values
# near the matrix's minimums, int tuples (converted), and junk the Environment must
# refuse with a ConfigError.  Environments are built in the test (construction may raise).
VERSIONS = [None, (0,), (0, 6, 16), (0, 6, 17), (0, 6, 18), (0, 7, 2), (0, 7, 2, 1), (1,),
            (99, 0), (10**6, 3), "0.6.16", "0.6.17rc1", "0.6.17", "0.6.17.0", "0.6.17.post1",
            "0.6.18.dev0", "0.6.18a1", "0.7.2", "0.7.2rc1", "0.7.2.post1", "2.13.0+cpu",
            "1!0.1", Version("0.6.17"), Version("0.6.18rc1"), Version("0.7.2.post1")]
BAD_VERSIONS = [(), (2**64,), (-1,), (True,), (0, "7"), [0, 7], "", " ", "abc", "0.7.2-",
                "\u0661.\u0662", "0." * 40, 0.7, 7, b"0.7.2"]
_LIB_NAMES = [*LIBRARIES, "flashinfer_python", "FLASHINFER", "", "nope", "\u00e9"]
environment_specs = st.one_of(
    st.sampled_from(["all", "none"]),
    st.dictionaries(st.sampled_from(_LIB_NAMES), st.sampled_from(VERSIONS), max_size=6),
    st.dictionaries(st.sampled_from(_LIB_NAMES), st.sampled_from(VERSIONS + BAD_VERSIONS),
                    max_size=4),
    st.lists(st.sampled_from(LIBRARIES), min_size=5).map(lambda ls: {n: None for n in ls}),
)


def build_environment(spec: Any) -> Environment:
    """The Environment an environment spec describes; raises for malformed versions."""
    if spec == "all":
        return Environment.assume_all()
    if spec == "none":
        return Environment.none()
    return Environment(spec)


_WEIRD_KEYS = [
    QuantKey("fp4_e2m1", ScaleDesc("e8m0", True, GroupShape(1, 16))),
    QuantKey("fp4_e2m1", ScaleDesc("e8m0", True, GroupShape(1, 32)), symmetric=False),
    QuantKey("", ScaleDesc("", False, GroupShape(0, 0))),
    QuantKey("\ud7fc", ScaleDesc("\x00", True, GroupShape(-1, -1))),
]
weights = st.sampled_from([kMxfp4Static] * 6 + KEYS + _WEIRD_KEYS + ["mxfp4_static", None])
activations = st.sampled_from([None, None, UNSET, BF16, *KEYS, *_WEIRD_KEYS, "mxfp8"])

_names = MATRIX.backend_names()
_NAME_POOL = (_names + [n.upper() for n in _names] + [f" {n.replace('_', '-')} " for n in _names]
              + ["", " ", "AUTO", "auto ", "flashinfer", "trtllm", "mxfp4", "none", "None",
                 "flashinfer__trtllm", "\u0130", "a\x00uto", 5, None, b"auto"])
backend_names = st.one_of(st.sampled_from(_NAME_POOL), st.text(max_size=24))
_PLAUSIBLE_NAMES = [n for n in _NAME_POOL if isinstance(n, str) and n.strip()
                    and n.strip().lower().replace("-", "_") in _names]
_plausible_activations = st.sampled_from(
    [None, UNSET, BF16, *dict.fromkeys(r.activation for r in MATRIX.rows if r.activation)])


def request_specs(junk: st.SearchStrategy | None = junk) -> st.SearchStrategy:
    """Keyword arguments for SelectionRequest, with ``device`` as a (platform, arch) pair,
    ``environment`` as an environment spec and ``layer`` as LayerSpec kwargs (or None);
    :func:`build_request` builds them."""
    layer = st.one_of(st.none(), layer_kwargs(None), layer_kwargs(junk)) if junk is not None \
        else st.one_of(st.none(), layer_kwargs(None))
    arbitrary = st.fixed_dictionaries({
        "weight": weights,
        "activation": activations,
        "checkpoint_activation": activations,
        "moe_backend": backend_names,
        "device": devices,
        "environment": environment_specs,
        "layer": layer,
        "allow_activation_fallback": st.booleans(),
    })
    # Each field drawn from its own junk-laden pool, a request that can actually succeed
    # is about 1 in 1000; one branch in four keeps to plausible values (odd spellings,
    # layers and library versions still included) so the success path of the property
    # runs too.
    plausible = st.fixed_dictionaries({
        "weight": st.just(kMxfp4Static),
        "activation": _plausible_activations,
        "checkpoint_activation": st.sampled_from([None, UNSET]),
        "moe_backend": st.one_of(st.sampled_from(["auto", "AUTO", " auto "]),
                                 st.sampled_from(_PLAUSIBLE_NAMES)),
        "device": st.sampled_from(_DEVICE_POOL[:len(ARCHS_IN_SCOPE)]),
        "environment": st.one_of(st.just("all"), st.dictionaries(
            st.sampled_from(LIBRARIES), st.sampled_from(VERSIONS), min_size=3)),
        "layer": st.one_of(st.none(), layer_kwargs(None)),
        "allow_activation_fallback": st.booleans(),
    })
    return st.one_of(arbitrary, arbitrary, arbitrary, plausible)



def build_request(spec: dict[str, Any]) -> SelectionRequest:
    """The request a spec describes; raises the oracle's error for a malformed one."""
    kw = dict(spec)
    kw["device"] = Device(*kw["device"])
    kw["environment"] = build_environment(kw["environment"])
    if kw["layer"] is not None:
        kw["layer"] = LayerSpec(**kw["layer"])
    return SelectionRequest(**kw)


def spec_offenders(spec: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """(values, field paths) an error about this spec may name."""
    values: list[Any] = [spec["device"], *spec["device"]]
    if isinstance(spec["environment"], dict):
        values += [*spec["environment"], *spec["environment"].values()]
    paths = ["device", "environment", "libraries", "weight", "activation", "moe_backend"]
    if spec["layer"] is not None:
        values += list(spec["layer"].values())
        paths += [f"layer.{k}" for k in spec["layer"]]
    return values, paths


# ------------------------------------------------------------------ the property


def _shows(value: Any, text: str) -> bool:
    """Does ``text`` show ``value`` (its str or repr, or its canonical key name)?"""
    if isinstance(value, float) and math.isnan(value):
        return "nan" in text
    candidates = {str(value), repr(value)}
    try:
        candidates.add(canonical_name(value))
    except Exception:  # noqa: BLE001 - unhashable values have no canonical name
        pass
    candidates |= {repr(c)[1:-1] for c in candidates}  # as shown inside a quoted repr
    candidates |= {escape(c) for c in candidates}  # messages escape non-printables
    return any(c and c in text for c in candidates)


def rejection_names_offender(request: SelectionRequest, backend: str, reason: Reason,
                             detail: str) -> str | None:
    """None if the detail names what is at fault for this reason, else a complaint."""
    row = MATRIX.by_name[backend]
    dev, layer = request.device, request.layer
    if reason in (Reason.PLATFORM_UNSUPPORTED, Reason.ARCH_UNSUPPORTED, Reason.KNOWN_BAD):
        ok = dev.name in detail
    elif reason is Reason.WEIGHT_MISMATCH:
        ok = _shows(request.weight, detail)
    elif reason is Reason.ACTIVATION_MISMATCH:
        wanted = [a for a in (request.activation, request.checkpoint_activation)
                  if a is not None and a is not UNSET]
        ok = any(_shows(a, detail) for a in wanted)
    elif reason in (Reason.LIBRARY_MISSING, Reason.LIBRARY_VERSION):
        ok = any(lib in detail for lib in row.libraries)
    elif reason is Reason.SHAPE_UNALIGNED:
        ok = layer is not None and any(
            label in detail and _shows(v, detail)
            for label, v in (("hidden", layer.hidden_size),
                             ("intermediate", layer.intermediate_size)))
    elif reason is Reason.ACTIVATION_FN_UNSUPPORTED:
        ok = layer is not None and _shows(layer.activation_fn, detail)
    elif reason is Reason.BIAS_UNSUPPORTED:
        ok = layer is not None and bool(layer.has_bias) and "bias" in detail
    elif reason is Reason.PARALLELISM_UNSUPPORTED:
        # a row's own EP flag names ep_size; an experts class names the deployment
        ok = (layer is not None and "ep_size" in detail and _shows(layer.ep_size, detail)) \
            or request.parallel.describe() in detail
    elif reason is Reason.ROUTING_UNSUPPORTED:
        ok = "routing method" in detail
    elif reason is Reason.LORA_UNSUPPORTED:
        ok = request.parallel.enable_lora and "LoRA" in detail
    elif reason is Reason.NOT_AUTO_SELECTABLE:
        ok = row.name.lower() in detail
    else:  # pragma: no cover - a new reason needs a rule here
        return f"no offender rule for reason {reason}"
    return None if ok else f"{backend}: {reason.value} detail {detail!r} names no offender"


def check_error_names_offender(exc: BaseException, offenders: list[Any],
                               fields: list[str]) -> None:
    """The generic part: an OracleError whose message shows one offender or field path."""
    assert isinstance(exc, OracleError), f"{type(exc).__name__} escaped: {exc!r}"
    msg = str(exc)
    assert msg, "empty error message"
    named_field = any(f and escape(f) in msg for f in fields)
    assert named_field or any(_shows(o, msg) for o in offenders), (
        f"{type(exc).__name__} message names neither a field {fields} nor a value "
        f"{offenders!r}: {msg!r}")


AtLeast = NonTrivial  # the fuzz suites' name for the same floor
