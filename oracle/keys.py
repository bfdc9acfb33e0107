"""Quantization keys: value types that say how a tensor is quantized.

A :class:`QuantKey` is what vLLM calls a quant key: the element dtype plus how the
scales are laid out.  Keys are frozen and compared by value, so a key parsed from a
user string equals the constant.  Dtypes are short strings, not torch dtypes, so
this module (and the whole oracle) never imports torch.

BF16 (unquantized) activations are represented by ``None``; the name is ``"bf16"``.
An *explicit* user request for BF16 activations (strict, no fallback to a quantized
activation) is the marker :data:`BF16`, which the oracle treats like a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from oracle.errors import UnknownQuantKey

__all__ = [
    "GroupShape", "ScaleDesc", "QuantKey", "BF16", "Bf16Marker", "UNSET", "Unset",
    "kFp8StaticTensorSym", "kFp8DynamicTensorSym", "kFp8DynamicTokenSym",
    "kFp8StaticChannelSym", "kFp8Static128BlockSym", "kFp8Dynamic128Sym",
    "kMxfp8Static", "kMxfp8Dynamic", "kMxfp4Static", "kMxfp4Dynamic",
    "kNvfp4Static", "kNvfp4Dynamic", "kNvfp4DynamicToken", "kInt8StaticChannelSym",
    "kInt8DynamicTokenSym", "kInt8Dynamic32Sym", "kInt4Static32",
    "QUANT_KEY_NAMES", "KEY_CONSTANTS", "canonical_name", "parse_quant_key",
    "constant_name", "suggest",
]


@dataclass(frozen=True, slots=True)
class GroupShape:
    """How many (rows, cols) share one scale; -1 means the full extent."""

    row: int
    col: int

    def __str__(self) -> str:
        return f"({self.row},{self.col})"


PER_TENSOR: Final = GroupShape(-1, -1)
PER_TOKEN: Final = GroupShape(1, -1)
PER_CHANNEL: Final = GroupShape(-1, 1)


@dataclass(frozen=True, slots=True)
class ScaleDesc:
    """How the scales of a quantized tensor are stored: dtype, static (calibrated) or
    dynamic (computed at runtime), and the group of elements that shares one scale."""

    dtype: str
    static: bool
    group_shape: GroupShape


@dataclass(frozen=True, slots=True)
class QuantKey:
    """Element dtype plus scale layout (and a second-level scale, as NVFP4 has)."""

    dtype: str
    scale: ScaleDesc
    scale2: ScaleDesc | None = None
    symmetric: bool = True

    def __str__(self) -> str:
        return canonical_name(self)


class Bf16Marker(Enum):
    """Explicit, strict request for BF16 activations (``moe.activation: bf16``).

    A one-member enum: one identity, pickles by name (it travels between ranks).
    """

    BF16 = "bf16"

    def __repr__(self) -> str:
        return "BF16"

    def __str__(self) -> str:
        return "bf16"


class Unset(Enum):
    """"Not specified" (inherit or default), distinct from ``None`` (explicitly nothing)."""

    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


BF16: Final = Bf16Marker.BF16
UNSET: Final = Unset.UNSET

_MX = ScaleDesc("e8m0", True, GroupShape(1, 32))
_MX_DYN = ScaleDesc("e8m0", False, GroupShape(1, 32))

kFp8StaticTensorSym: Final = QuantKey("fp8_e4m3", ScaleDesc("fp32", True, PER_TENSOR))
kFp8DynamicTensorSym: Final = QuantKey("fp8_e4m3", ScaleDesc("fp32", False, PER_TENSOR))
kFp8DynamicTokenSym: Final = QuantKey("fp8_e4m3", ScaleDesc("fp32", False, PER_TOKEN))
kFp8StaticChannelSym: Final = QuantKey("fp8_e4m3", ScaleDesc("fp32", True, PER_CHANNEL))
kFp8Static128BlockSym: Final = QuantKey("fp8_e4m3", ScaleDesc("fp32", True, GroupShape(128, 128)))
kFp8Dynamic128Sym: Final = QuantKey("fp8_e4m3", ScaleDesc("fp32", False, GroupShape(1, 128)))
kMxfp8Static: Final = QuantKey("fp8_e4m3", _MX)
kMxfp8Dynamic: Final = QuantKey("fp8_e4m3", _MX_DYN)
kMxfp4Static: Final = QuantKey("fp4_e2m1", _MX)
kMxfp4Dynamic: Final = QuantKey("fp4_e2m1", _MX_DYN)
kNvfp4Static: Final = QuantKey("fp4_e2m1", ScaleDesc("fp8_e4m3", True, GroupShape(1, 16)),
                               ScaleDesc("fp32", True, PER_TENSOR))
kNvfp4Dynamic: Final = QuantKey("fp4_e2m1", ScaleDesc("fp8_e4m3", False, GroupShape(1, 16)),
                                ScaleDesc("fp32", True, PER_TENSOR))
kNvfp4DynamicToken: Final = QuantKey("fp4_e2m1", ScaleDesc("fp8_e4m3", False, GroupShape(1, 16)),
                                     ScaleDesc("fp32", False, PER_TOKEN))
kInt8StaticChannelSym: Final = QuantKey("int8", ScaleDesc("fp32", True, PER_CHANNEL))
kInt8DynamicTokenSym: Final = QuantKey("int8", ScaleDesc("fp32", False, PER_TOKEN))
kInt8Dynamic32Sym: Final = QuantKey("int8", ScaleDesc("fp32", False, GroupShape(1, 32)))
kInt4Static32: Final = QuantKey("int4", ScaleDesc("bf16", True, GroupShape(1, 32)))

#: Python constant name -> key (what the matrix TOML refers to).
KEY_CONSTANTS: Final[dict[str, QuantKey]] = {
    name: value for name, value in globals().items()
    if name.startswith("k") and isinstance(value, QuantKey)
}

#: User-facing names -> key.  vLLM's names keep vLLM's meaning (note: "mxfp4" is the
#: *dynamic* MXFP4 key there, i.e. an activation scheme); the extras are unambiguous.
QUANT_KEY_NAMES: Final[dict[str, QuantKey | None]] = {
    # vLLM's names
    "fp8_per_tensor_static": kFp8StaticTensorSym,
    "fp8_per_tensor_dynamic": kFp8DynamicTensorSym,
    "fp8_per_token": kFp8DynamicTokenSym,
    "fp8_per_channel_static": kFp8StaticChannelSym,
    "fp8_per_block_static": kFp8Static128BlockSym,
    "fp8_per_block_dynamic": kFp8Dynamic128Sym,
    "mxfp8": kMxfp8Dynamic,
    "mxfp4": kMxfp4Dynamic,
    "nvfp4_per_token": kNvfp4DynamicToken,
    "int8_per_channel_static": kInt8StaticChannelSym,
    "int8_per_group_32": kInt8Dynamic32Sym,
    "int4_per_group_32": kInt4Static32,
    # unambiguous extras
    "bf16": None,
    "mxfp4_static": kMxfp4Static,
    "mxfp4_dynamic": kMxfp4Dynamic,
    "mxfp8_static": kMxfp8Static,
    "nvfp4_static": kNvfp4Static,
    "nvfp4_dynamic": kNvfp4Dynamic,
    "int8_per_token": kInt8DynamicTokenSym,
}

# One canonical name per key, used in every output.  Where two names reach one key,
# the unambiguous one wins ("mxfp4_dynamic" over vLLM's "mxfp4").
_PREFERRED = {"mxfp4_dynamic"}
_CANONICAL: Final[dict[QuantKey | None, str]] = {}
for _name, _key in QUANT_KEY_NAMES.items():
    if _key not in _CANONICAL or _name in _PREFERRED:
        _CANONICAL[_key] = _name
_CONSTANT_NAME: Final[dict[QuantKey, str]] = {v: k for k, v in KEY_CONSTANTS.items()}
_unnamed = set(KEY_CONSTANTS.values()) - set(_CANONICAL)
if _unnamed:  # a key constant without a user name is a programming error caught at import
    raise RuntimeError(f"quant keys without a name: {sorted(map(_CONSTANT_NAME.get, _unnamed))}")


def canonical_name(key: QuantKey | Bf16Marker | None) -> str:
    """The one name used in all output; ``None`` (and :data:`BF16`) is ``"bf16"``."""
    if key is None or key is BF16:
        return "bf16"
    try:
        return _CANONICAL[key]
    except KeyError:
        return repr(key)


def constant_name(key: QuantKey | None) -> str:
    """``kMxfp4Static`` style name (``None`` → ``"None"``)."""
    if key is None:
        return "None"
    return _CONSTANT_NAME.get(key, repr(key))


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """A close match for ``name`` among ``choices`` (:func:`oracle.suggest.closest`: the
    same name in another case first, then aliases, prefixes and families, then edit
    distance).  A quant key's constant name in snake case is an alias of its user name
    (``mxfp8_dynamic`` → ``mxfp8``), used where that name is among ``choices``."""
    import re

    from oracle.suggest import closest

    aliases = {re.sub(r"(?<!^)(?=[A-Z])", "_", const[1:]).lower(): canonical_name(key)
               for const, key in KEY_CONSTANTS.items()}
    return closest(name, choices, aliases=aliases)


def parse_quant_key(name: object, *, path: str = "quant key") -> QuantKey | None:
    """Name → key, case-sensitive like vLLM; unknown names raise UnknownQuantKey.

    Also accepts the Python constant names (``"kMxfp4Static"``) and keys themselves.
    """
    if name is None or isinstance(name, QuantKey):
        return name
    if isinstance(name, str):
        if name in QUANT_KEY_NAMES:
            return QUANT_KEY_NAMES[name]
        if name in KEY_CONSTANTS:
            return KEY_CONSTANTS[name]
        choices = list(QUANT_KEY_NAMES)
        raise UnknownQuantKey(name, choices, suggest(name, choices), path=path)
    raise UnknownQuantKey(name, list(QUANT_KEY_NAMES), None, path=path)
