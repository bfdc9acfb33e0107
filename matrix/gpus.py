"""Load and validate ``gpus.toml``: the GPUs a decode step's floor time is priced on.

Served as ``oracle.matrix.gpus``.  Each entry is one GPU model: its oracle arch, its
memory and its peak memory bandwidth, with the vendor page the numbers come from.
:mod:`oracle.preflight` divides the bytes a decode step must read by the bandwidth.

Same conventions as :mod:`oracle.matrix.loader` (its checks are reused): the schema is
declared beside the fields, and a malformed table fails at import with a
:class:`~oracle.errors.MatrixError` naming the entry (``gpu "H200"``, ``gpu#3``) and the
field -- never with a TypeError or KeyError from deep inside.  Names and aliases are
unique after normalisation (:func:`gpu_key`), archs are canonical and in
:data:`oracle.platforms.ARCHS_IN_SCOPE`, numbers are positive and finite.

Import floor: this module imports ``oracle.errors``, ``oracle.platforms`` and
``oracle.matrix.loader`` (plus the standard library).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from oracle.errors import MatrixError
from oracle.matrix.loader import (read_toml, _arch, _build, _fail, _list_of, _matching, _nonempty, _spec,
                                  _text, _typed)
from oracle.platforms import ARCHS_IN_SCOPE

__all__ = ["GPUS", "Gpu", "GpuTable", "gpu_key", "load_gpus", "parse_gpus"]

_TABLE: Final = "gpus.toml"
_SHOWN: Final = 60
#: Vendor words dropped from the front of a name before matching ("NVIDIA GeForce RTX 5090").
_VENDOR_WORDS: Final = ("nvidia", "geforce", "tesla", "amd", "instinct")


def gpu_key(text: str) -> str:
    """The matching form of a GPU name: lower case, ASCII letters and digits only, the
    leading vendor words dropped (``"NVIDIA H100 80GB HBM3"`` → ``"h10080gbhbm3"``)."""
    key = re.sub(r"[^a-z0-9]", "", text.lower()) if isinstance(text, str) else ""
    changed = True
    while changed:
        changed = False
        for word in _VENDOR_WORDS:
            if key.startswith(word) and len(key) > len(word):
                key, changed = key[len(word):], True
    return key


def _positive_number(unit: str) -> Any:
    return _typed((int, float), f"a positive finite number of {unit}",
                  lambda v: math.isfinite(v) and v > 0)


def _arch_in_scope(row: str, key: str, value: Any) -> str:
    arch = _arch(row, key, value)
    if arch not in ARCHS_IN_SCOPE:
        _fail(row, key, "an arch the oracle answers for (" + ", ".join(ARCHS_IN_SCOPE) + ")",
              value)
    return arch


_url = _matching(r"https://[^\s]+", "an https:// URL of the vendor's datasheet or product page")
_alias = _typed(str, "a non-empty GPU name with a letter or digit", lambda s: bool(gpu_key(s)))


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU model: where it runs (``arch``), its memory and peak memory bandwidth."""

    name: str = _spec(_alias)
    arch: str = _spec(_arch_in_scope)
    memory_gb: float = _spec(_positive_number("GB"))
    bandwidth_tbps: float = _spec(_positive_number("TB/s"))
    source: str = _spec(_url)
    aliases: tuple[str, ...] = _spec(_list_of(_alias, "a list of GPU names", non_empty=False), ())
    note: str = _spec(_text, "")

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_tbps * 1e12

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arch": self.arch, "memory_gb": self.memory_gb,
                "bandwidth_tbps": self.bandwidth_tbps, "source": self.source}


@dataclass(frozen=True)
class GpuTable:
    """The validated table plus its name index (computed once, not compared)."""

    version: str
    gpus: tuple[Gpu, ...]
    _by_key: Mapping[str, Gpu] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {gpu_key(s): g for g in self.gpus for s in (g.name, *g.aliases)}
        object.__setattr__(self, "_by_key", index)

    def names(self) -> list[str]:
        return [g.name for g in self.gpus]

    def lookup(self, name: Any) -> Gpu | None:
        """The GPU a user's spelling names (``"h200"``, ``"NVIDIA H200"``), else None."""
        return self._by_key.get(gpu_key(name)) if isinstance(name, str) else None

    def for_arch(self, arch: str) -> tuple[Gpu, ...]:
        """The table's GPUs of ``arch``, in table order."""
        return tuple(g for g in self.gpus if g.arch == arch)


@dataclass(eq=False, repr=False)
class _Document:
    schema: int = _spec(_typed(int, "the integer 1", lambda v: v == 1))
    version: str = _spec(_nonempty)
    gpu: tuple[Any, ...] = _spec(_typed(list, "a non-empty array of [[gpu]] tables", bool))


def parse_gpus(doc: Mapping[str, Any]) -> GpuTable:
    """Validate a parsed ``gpus.toml`` document and build the :class:`GpuTable`."""
    d: _Document = _build(_Document, doc, "<gpus.toml>", "document")
    gpus: list[Gpu] = []
    owner: dict[str, str] = {}
    for i, data in enumerate(d.gpu):
        name = data.get("name") if isinstance(data, Mapping) else None
        label = f"gpu {name!r}" if isinstance(name, str) and name else f"gpu#{i}"
        g: Gpu = _build(Gpu, data, label, "gpu")
        for spelling in (g.name, *g.aliases):
            key = gpu_key(spelling)
            if key in owner:
                raise MatrixError(label, "name" if spelling == g.name else "aliases",
                                  "unique across names and aliases (compared as gpu_key: "
                                  "lower case, letters and digits, vendor words dropped)",
                                  f"{spelling!r} (also {owner[key]!r})"[:_SHOWN * 2])
            owner[key] = g.name
        gpus.append(g)
    return GpuTable(d.version, tuple(gpus))


def load_gpus(text: str | None = None) -> GpuTable:
    """Parse and validate the bundled ``gpus.toml`` (or ``text``, for tests)."""
    doc = read_toml(text, _TABLE, "<gpus.toml>")
    return parse_gpus(doc)


#: The bundled table, validated at import.
GPUS: GpuTable = load_gpus()
