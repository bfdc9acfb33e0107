"""``quantization_config``: per-layer-kind QuantSpec(weight, activation), shorthands, merging.

What a user writes (``--quantization fp8_per_block``, ``--quantization-config
'{"moe": {"activation": "mxfp8"}}'``, dotted flags) becomes one
:class:`QuantizationConfigArgs`.  Anything malformed is a :class:`ConfigError`
naming the field path (``moe.activation``), the bad value and the valid names.

Difference from vLLM, on purpose: an explicit config is merged over the shorthand
FIELD BY FIELD.  vLLM replaces the whole slot, so ``{"moe": {"activation":
"mxfp8"}}`` over ``fp8_per_block`` silently drops the MoE weight key there; here
the weight key stays.  An explicit ``null`` (slot or field) still beats the
shorthand.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from oracle.errors import ConfigError, shown
from oracle.keys import (BF16, QUANT_KEY_NAMES, UNSET, Bf16Marker, QuantKey, Unset,
                         kFp8Static128BlockSym, kFp8StaticChannelSym, kFp8StaticTensorSym,
                         kInt8StaticChannelSym, kMxfp4Static, kMxfp8Dynamic, kNvfp4Static,
                         canonical_name, parse_quant_key, suggest)

__all__ = ["QuantSpec", "QuantizationConfigArgs", "SHORTHANDS", "resolve_quantization_config",
           "parse_spec_value", "load_json"]

Slot = QuantKey | Bf16Marker | None | Unset
_SLOTS: Final = ("linear", "moe")
_FIELDS: Final = ("weight", "activation")


def _key_or_error(value: Any, path: str, *, activation: bool) -> QuantKey | Bf16Marker | None:
    if value is None:
        return None
    if isinstance(value, (QuantKey, Bf16Marker)):
        return value
    if not isinstance(value, str):
        raise ConfigError(path, "a quant key name (string) or null", shown(value),
                          "one of " + ", ".join(QUANT_KEY_NAMES), tuple(QUANT_KEY_NAMES))
    if activation and value == "bf16":
        return BF16
    return parse_quant_key(value, path=path)  # unknown names: UnknownQuantKey naming ``path``


@dataclass(frozen=True, slots=True)
class QuantSpec:
    """How one kind of layer is quantized.  ``UNSET`` = not specified (inherit/default);
    ``None`` = explicitly unquantized; for ``activation``, :data:`BF16` is the strict
    "keep activations in BF16" request.  Key names are accepted and stored as keys,
    exactly as the JSON path parses them (``QuantSpec(weight="mxfp8")``)."""

    weight: QuantKey | None | Unset = UNSET
    activation: Slot = UNSET

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not UNSET:
                key = _key_or_error(value, f"QuantSpec.{name}", activation=name == "activation")
                object.__setattr__(self, name, None if name == "weight" and key is BF16 else key)

    def to_dict(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for name in _FIELDS:
            v = getattr(self, name)
            if v is not UNSET:
                out[name] = None if v is None else canonical_name(v)
        return out


@dataclass(frozen=True, slots=True)
class QuantizationConfigArgs:
    """``linear`` / ``moe`` specs (``UNSET`` = not configured, ``None`` = unquantized)
    and ``ignore``: module names kept unquantized (exact, ``re:`` regex or glob)."""

    linear: QuantSpec | None | Unset = UNSET
    moe: QuantSpec | None | Unset = UNSET
    ignore: tuple[str, ...] = ()
    _compiled: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        # Coerce like the dict/JSON path (and vLLM's pydantic model): a shorthand or key
        # name for a slot, one module name for ``ignore``; anything else is an error.
        for slot in _SLOTS:
            value = getattr(self, slot)
            if value is not UNSET and not isinstance(value, QuantSpec):
                object.__setattr__(self, slot, parse_spec_value(value, slot))
        ignore = self.ignore
        if isinstance(ignore, str):
            ignore = (ignore,)
        elif isinstance(ignore, list):
            ignore = tuple(ignore)
        elif not isinstance(ignore, tuple):
            raise ConfigError("ignore", "a list of module names/patterns", shown(ignore)[:80],
                              '["lm_head", "re:.*router.*"]')
        object.__setattr__(self, "ignore", ignore)
        compiled = []
        for i, pattern in enumerate(self.ignore):
            if not isinstance(pattern, str) or not pattern:
                raise ConfigError(f"ignore[{i}]", "a non-empty module name, re: regex or glob",
                                  shown(pattern), '"lm_head" or "re:.*self_attn.*"')
            if pattern.startswith("re:"):
                try:
                    compiled.append(re.compile(pattern[3:]))
                except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999}: OverflowError
                    raise ConfigError(f"ignore[{i}]", "a valid regular expression after 're:'",
                                      shown(pattern), f"fix the regex ({exc})") from None
            else:
                compiled.append(pattern)
        object.__setattr__(self, "_compiled", tuple(compiled))

    def is_ignored(self, module: str) -> bool:
        for pat in self._compiled:
            if isinstance(pat, str):
                if module == pat or fnmatch.fnmatchcase(module, pat):
                    return True
            elif pat.fullmatch(module):
                return True
        return False

    @property
    def moe_weight(self) -> QuantKey | None | Unset:
        return self.moe.weight if isinstance(self.moe, QuantSpec) else (
            None if self.moe is None else UNSET)

    @property
    def moe_activation(self) -> Slot:
        return self.moe.activation if isinstance(self.moe, QuantSpec) else UNSET

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for slot in _SLOTS:
            v = getattr(self, slot)
            if v is not UNSET:
                out[slot] = None if v is None else v.to_dict()
        if self.ignore:
            out["ignore"] = list(self.ignore)
        return out

    @classmethod
    def from_value(cls, value: Any) -> QuantizationConfigArgs:
        """A dict, a JSON string, ``None`` or an instance → QuantizationConfigArgs."""
        return _from_value(value)


# Shorthand → slots.  A missing slot means the shorthand does not quantize that kind.
SHORTHANDS: Final[dict[str, dict[str, QuantSpec | None]]] = {
    "fp8_per_tensor": {"linear": QuantSpec(kFp8StaticTensorSym), "moe": QuantSpec(kFp8StaticTensorSym)},
    "fp8_per_block": {"linear": QuantSpec(kFp8Static128BlockSym), "moe": QuantSpec(kFp8Static128BlockSym)},
    "fp8_per_channel": {"linear": QuantSpec(kFp8StaticChannelSym), "moe": QuantSpec(kFp8StaticChannelSym)},
    "mxfp8": {"linear": QuantSpec(kMxfp8Dynamic), "moe": QuantSpec(kMxfp8Dynamic)},
    "mxfp4": {"linear": QuantSpec(kMxfp4Static), "moe": QuantSpec(kMxfp4Static)},
    "int8_per_channel_weight_only": {"linear": None, "moe": QuantSpec(kInt8StaticChannelSym)},
    "nvfp4_per_token": {"linear": None, "moe": QuantSpec(kNvfp4Static)},
}


def parse_spec_value(value: Any, slot: str) -> QuantSpec | None:
    """A slot value: null, a shorthand or key name (weight), or {"weight", "activation"}."""
    if value is None:
        return None
    if isinstance(value, QuantSpec):
        return value
    if isinstance(value, str):
        if value in SHORTHANDS:
            slots = SHORTHANDS[value]
            if slots.get(slot) is None:  # e.g. nvfp4_per_token leaves linear unquantized
                raise ConfigError(slot, f"a shorthand that configures {slot}", shown(value),
                                  "a key name or {\"weight\": ..., \"activation\": ...}")
            return slots[slot]
        key = _key_or_error(value, f"{slot}.weight", activation=False)
        return QuantSpec(weight=key)  # type: ignore[arg-type]
    if isinstance(value, Mapping):
        _reject_unknown(value, _FIELDS, slot)
        kwargs: dict[str, Any] = {}
        for name in _FIELDS:
            if name in value:
                kwargs[name] = _key_or_error(value[name], f"{slot}.{name}",
                                             activation=name == "activation")
        return QuantSpec(**kwargs)
    raise ConfigError(slot, "null, a shorthand or key name, or an object with weight/activation",
                      shown(value), '{"weight": "mxfp4_static", "activation": "mxfp8"}')


def _reject_unknown(value: Mapping[Any, Any], allowed: tuple[str, ...], prefix: str) -> None:
    """An unknown field is a ConfigError naming its path, with a close-match suggestion."""
    for k in value:
        if k not in allowed:
            s = suggest(str(k), allowed)
            raise ConfigError(f"{prefix}.{k}", f"one of {', '.join(allowed)}", shown(k),
                              f"'{s}'" if s else " or ".join(allowed), allowed)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def load_json(text: str, path: str = "quantization_config") -> Any:
    """JSON text → value, every failure a ConfigError naming ``path`` and saying where:
    a syntax error (line and column), a key given twice (JSON parsers silently keep
    the last one), nesting too deep, or an integer too long for Python to convert."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ConfigError(path, "valid JSON", shown(text[max(0, exc.pos - 20):exc.pos + 20]),
                          f"fix the JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                          ) from None
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}.{exc.key}", "given once in a JSON object",
                          f"{exc.key!r} twice", "remove the duplicate key") from None
    except RecursionError:
        raise ConfigError(path, "a JSON value nested at most a few hundred levels deep",
                          "deeper nesting", "a shallower JSON object") from None
    except ValueError as exc:  # e.g. an integer beyond the int-string conversion limit
        raise ConfigError(path, "JSON with numbers Python can read", str(exc)[:80],
                          "shorten the number") from None


def _from_value(value: Any) -> QuantizationConfigArgs:
    if value is None:
        return QuantizationConfigArgs()
    if isinstance(value, QuantizationConfigArgs):
        return value
    if isinstance(value, str):
        value = load_json(value)
        if value is None:
            return QuantizationConfigArgs()
    if not isinstance(value, Mapping):
        raise ConfigError("quantization_config", "a JSON object with linear/moe/ignore",
                          shown(value)[:80], '{"moe": {"activation": "mxfp8"}}')
    _reject_unknown(value, (*_SLOTS, "ignore"), "quantization_config")
    kwargs: dict[str, Any] = {}
    for slot in _SLOTS:
        if slot in value:
            kwargs[slot] = parse_spec_value(value[slot], slot)
    if "ignore" in value:
        ign = value["ignore"]
        if ign is None:
            ign = []
        if isinstance(ign, str):
            ign = [ign]
        if not isinstance(ign, (list, tuple)):
            raise ConfigError("ignore", "a list of module names/patterns", shown(ign)[:80],
                              '["lm_head", "re:.*router.*"]')
        kwargs["ignore"] = tuple(ign)
    return QuantizationConfigArgs(**kwargs)


def _merge_spec(base: QuantSpec | None | Unset,
                over: QuantSpec | None | Unset) -> QuantSpec | None | Unset:
    if over is UNSET:
        return base
    if over is None or not isinstance(base, QuantSpec):
        return over
    # Field by field: only the fields the user actually wrote (set, possibly to
    # null) override the shorthand; a field left out is UNSET and keeps it.
    changes = {name: getattr(over, name) for name in _FIELDS if getattr(over, name) is not UNSET}
    return replace(base, **changes)


def resolve_quantization_config(quantization: str | None = None,
                                quantization_config: Any = None) -> QuantizationConfigArgs:
    """Desugar ``quantization`` (a shorthand) and merge ``quantization_config`` over it."""
    if quantization is not None and not isinstance(quantization, str):
        raise ConfigError("quantization", "a shorthand name", shown(quantization),
                          ", ".join(SHORTHANDS), tuple(SHORTHANDS))
    base = QuantizationConfigArgs()
    if quantization:
        if quantization not in SHORTHANDS:
            s = suggest(quantization, tuple(SHORTHANDS))
            raise ConfigError("quantization", "a known shorthand", shown(quantization),
                              f"'{s}'" if s else ", ".join(SHORTHANDS), tuple(SHORTHANDS))
        slots = SHORTHANDS[quantization]
        base = QuantizationConfigArgs(linear=slots.get("linear", UNSET),
                                      moe=slots.get("moe", UNSET))
    raw = load_json(quantization_config) if isinstance(quantization_config, str) \
        else quantization_config
    over = _from_value(raw)
    linear = _merge_spec(base.linear, over.linear)
    moe = _merge_spec(base.moe, over.moe)
    return QuantizationConfigArgs(linear=linear, moe=moe, ignore=over.ignore or base.ignore)
