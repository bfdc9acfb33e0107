"""Load and validate the compatibility matrix (``mxfp4_moe.toml``).

The table is data; this module turns it into frozen :class:`Row` values and
precomputed indexes, and refuses a malformed table with a :class:`MatrixError`
naming the row and field.  Validation happens once, at import of
:mod:`oracle.matrix`, so a broken table never reaches the selector.

Import cost: the TOML stays the source of truth, but importing :mod:`tomllib` and
parsing the table with it was the largest single cost of ``import oracle``.  The
parsed *document* is therefore cached next to the table, like a ``.pyc``
(``__pycache__/mxfp4_moe.toml.<cache_tag>.marshal``, holding the exact TOML bytes it
was parsed from plus the parsed document).  At import the table is read, the cache
is used only if it was made from byte-identical text, and the document is validated
by :func:`parse_matrix` either way: the cache skips parsing, never validation.
A missing, stale or unreadable cache just means tomllib parses the table (and the
cache is rewritten if the folder is writable and bytecode writing is enabled).
"""

from __future__ import annotations

import marshal
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from oracle.errors import MatrixError
from oracle.keys import KEY_CONSTANTS, QuantKey, canonical_name
from oracle.request import LIBRARIES, Version, parse_version

__all__ = ["Row", "ArchStatus", "Matrix", "load_matrix", "parse_matrix", "ARCHS_IN_SCOPE",
           "STATUSES", "arch_platform"]

#: Every arch the project answers for, in display order.  Unknown archs are still
#: valid *inputs*; they are just covered by no row.
ARCHS_IN_SCOPE: Final = (
    "sm75", "sm80", "sm86", "sm89", "sm90", "sm100", "sm103", "sm107", "sm110", "sm120",
    "sm121", "gfx942", "gfx950", "gfx1250", "xpu", "cpu",
)
STATUSES: Final = ("supported", "experimental", "known_bad")
_ARCH_RE = re.compile(r"^(sm\d{2,3}|gfx[0-9a-f]{3,4}|xpu|cpu)$")
_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_FAMILY_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def arch_platform(arch: str) -> str:
    """``sm90`` → cuda, ``gfx950`` → rocm, ``xpu`` → xpu, ``cpu`` → cpu."""
    if arch.startswith("sm"):
        return "cuda"
    if arch.startswith("gfx"):
        return "rocm"
    return arch


@dataclass(frozen=True, slots=True)
class ArchStatus:
    """A row's status on one arch, with the reason (and link) when not plain supported."""

    status: str
    reason: str
    link: str = ""


@dataclass(frozen=True, slots=True)
class Row:
    """One (backend variant, weight key, activation key) with everything gated on."""

    name: str
    family: str
    weight: QuantKey
    activation: QuantKey | None
    archs: frozenset[str]
    libraries: tuple[str, ...]
    status: str
    rank: int
    auto: bool
    layout: str
    activation_fns: tuple[str, ...]
    bias: bool
    expert_parallel: bool
    hidden_align: int
    intermediate_align: int
    pads: bool
    ep_required: bool = False
    last_resort: bool = False
    min_versions: tuple[tuple[str, Version], ...] = ()
    arch_status: tuple[tuple[str, ArchStatus], ...] = ()
    flashinfer_runner: str | None = None
    flashinfer_config: str | None = None
    flashinfer_divergence: tuple[tuple[str, str], ...] = ()
    source: str = ""
    note: str = ""
    link: str = ""

    @property
    def platforms(self) -> frozenset[str]:
        return _platforms_of(self.archs)

    def status_on(self, arch: str) -> ArchStatus:
        for a, st in self.arch_status:
            if a == arch:
                return st
        return ArchStatus(self.status, self.note if self.status != "supported" else "", self.link)

    @property
    def activation_name(self) -> str:
        return canonical_name(self.activation)

    def sorted_archs(self) -> list[str]:
        return list(_sorted_archs_of(self.archs))


_ARCH_ORDER: Final = {a: i for i, a in enumerate(ARCHS_IN_SCOPE)}


# Row-derived values, memoized by the (immutable, hash-caching) arch set: rows are
# values, so two rows with the same archs share the result.
@lru_cache(maxsize=1024)
def _platforms_of(archs: frozenset[str]) -> frozenset[str]:
    return frozenset(arch_platform(a) for a in archs)


@lru_cache(maxsize=1024)
def _sorted_archs_of(archs: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(archs, key=lambda a: (_ARCH_ORDER.get(a, len(_ARCH_ORDER)), a)))


@dataclass(frozen=True, slots=True)
class Adjustment:
    """On ``archs``, auto order moves row ``move`` just before/after another row."""

    archs: frozenset[str]
    move: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class Matrix:
    """The validated table plus the indexes the selector uses on every call."""

    version: str
    rows: tuple[Row, ...]
    names: Mapping[str, tuple[str, ...]]
    adjustments: tuple[Adjustment, ...]
    by_name: Mapping[str, Row] = field(init=False, repr=False)
    _order_cache: dict[str, tuple[Row, ...]] = field(init=False, repr=False, compare=False)
    #: Derived per-device indexes the selector builds on first use (see
    #: ``oracle.selector._device_facts``); part of the value, never of its identity.
    _memo: dict[Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {r.name: r for r in self.rows})
        object.__setattr__(self, "_order_cache", {})
        object.__setattr__(self, "_memo", {})

    def backend_names(self) -> list[str]:
        """Every accepted ``--moe-backend`` value (lower-case)."""
        return list(dict.fromkeys(["auto", *self.names, *(r.name.lower() for r in self.rows)]))

    def auto_order(self, arch: str) -> tuple[Row, ...]:
        """All rows in auto order for ``arch``: rank order plus the arch's adjustments."""
        cached = self._order_cache.get(arch)
        if cached is not None:
            return cached
        order = sorted(self.rows, key=lambda r: r.rank)
        for adj in self.adjustments:
            if arch not in adj.archs:
                continue
            moving = self.by_name[adj.move]
            order.remove(moving)
            anchor = order.index(self.by_name[adj.before or adj.after])  # type: ignore[index]
            order.insert(anchor if adj.before else anchor + 1, moving)
        result = tuple(order)
        self._order_cache[arch] = result
        return result


# ------------------------------------------------------------------- parsing

_ROW_FIELDS: Final = {
    "name", "family", "weight", "activation", "archs", "libraries", "status", "rank", "auto",
    "layout", "activation_fns", "bias", "expert_parallel", "hidden_align", "intermediate_align",
    "pads", "ep_required", "last_resort", "min_versions", "arch_status", "flashinfer_runner",
    "flashinfer_config", "flashinfer_divergence", "source", "note", "link",
}
_REQUIRED: Final = ("name", "family", "weight", "activation", "archs", "libraries", "status",
                    "rank", "auto", "layout", "activation_fns", "bias", "expert_parallel",
                    "hidden_align", "intermediate_align", "pads")


def _need(row: str, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
          what: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MatrixError(row, key, what, repr(value))
    return value


def _opt_bool(row: str, data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise MatrixError(row, key, "true or false", repr(value))
    return value


def _key(row: str, field_name: str, value: Any, allow_none: bool) -> QuantKey | None:
    if allow_none and value == "None":
        return None
    if not isinstance(value, str) or value not in KEY_CONSTANTS:
        raise MatrixError(row, field_name, "a QuantKey constant name from oracle.keys"
                          + (' or "None"' if allow_none else ""), repr(value),
                          ", ".join(sorted(KEY_CONSTANTS)))
    return KEY_CONSTANTS[value]


def _arch_list(row: str, field_name: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise MatrixError(row, field_name, "a non-empty list of exact archs", repr(value),
                          "e.g. [\"sm100\", \"sm103\"]")
    for a in value:
        if not isinstance(a, str) or not _ARCH_RE.match(a):
            raise MatrixError(row, field_name, "exact archs like sm90, gfx950, xpu, cpu (no ranges)",
                              repr(a))
    if len(set(value)) != len(value):
        raise MatrixError(row, field_name, "a list without duplicates", repr(value))
    return frozenset(value)


def _parse_row(data: Any, index: int) -> Row:
    if not isinstance(data, Mapping):
        raise MatrixError(f"#{index}", "row", "a table", repr(data))
    name = data.get("name")
    row = name if isinstance(name, str) else f"#{index}"
    if not isinstance(name, str):
        raise MatrixError(row, "name", "an UPPER_SNAKE_CASE string", repr(name))
    unknown = set(data) - _ROW_FIELDS
    if unknown:
        raise MatrixError(row, sorted(unknown)[0], "a known field", repr(sorted(unknown)),
                          ", ".join(sorted(_ROW_FIELDS)))
    for key in _REQUIRED:
        if key not in data:
            raise MatrixError(row, key, "present", "missing")
    if not _NAME_RE.match(name):
        raise MatrixError(row, "name", "UPPER_SNAKE_CASE", repr(name))
    family = _need(row, data, "family", str, "a lower_snake_case family name")
    if not _FAMILY_RE.match(family):
        raise MatrixError(row, "family", "lower_snake_case", repr(family))
    status = _need(row, data, "status", str, f"one of {STATUSES}")
    if status not in STATUSES:
        raise MatrixError(row, "status", f"one of {', '.join(STATUSES)}", repr(status))
    if status == "known_bad" and not (data.get("note") and data.get("link")):
        raise MatrixError(row, "note", "a reason (note) and a link for a known_bad row",
                          "missing", "add note = \"...\" and link = \"https://...\"")
    libraries = _need(row, data, "libraries", list, "a list of library names")
    for lib in libraries:
        if lib not in LIBRARIES:
            raise MatrixError(row, "libraries", f"names from {', '.join(LIBRARIES)}", repr(lib))
    min_versions = []
    raw_versions = data.get("min_versions", {})
    if not isinstance(raw_versions, Mapping):
        raise MatrixError(row, "min_versions", "a table {library = \"VERSION\"}",
                          repr(raw_versions))
    for lib, ver in raw_versions.items():
        if lib not in libraries:
            raise MatrixError(row, "min_versions", "versions of libraries the row requires",
                              repr(lib))
        if not isinstance(ver, str) or not re.match(r"^\d+(\.\d+)*", ver):
            raise MatrixError(row, "min_versions", f"a numeric version string for {lib}, "
                              "like 0.6.18", repr(ver))
        min_versions.append((lib, parse_version(ver)))
    archs = _arch_list(row, "archs", data["archs"])
    arch_status = []
    for table in ("arch_status", "flashinfer_divergence"):
        if not isinstance(data.get(table, {}), Mapping):
            raise MatrixError(row, table, "a table keyed by arch", repr(data.get(table)))
    for arch, st in dict(data.get("arch_status", {})).items():
        if arch not in archs:
            raise MatrixError(row, f"arch_status.{arch}", "an arch listed in archs", repr(arch))
        if not isinstance(st, Mapping) or st.get("status") not in STATUSES[1:]:
            raise MatrixError(row, f"arch_status.{arch}.status", "known_bad or experimental",
                              repr(st.get("status") if isinstance(st, Mapping) else st))
        if not st.get("reason"):
            raise MatrixError(row, f"arch_status.{arch}.reason", "a non-empty reason", "missing")
        arch_status.append((arch, ArchStatus(st["status"], st["reason"], st.get("link", ""))))
    divergence = []
    for arch, why in dict(data.get("flashinfer_divergence", {})).items():
        if not isinstance(why, str) or not why:
            raise MatrixError(row, f"flashinfer_divergence.{arch}", "a reason string", repr(why))
        divergence.append((arch, why))
    fns = _need(row, data, "activation_fns", list, "a non-empty list of activation functions")
    if not fns:
        raise MatrixError(row, "activation_fns", "a non-empty list", "[]")
    aligns = {}
    for key in ("hidden_align", "intermediate_align"):
        v = _need(row, data, key, int, "a positive multiple of 32")
        if v <= 0 or v % 32:
            raise MatrixError(row, key, "a positive multiple of 32 (the MX block size)", repr(v))
        aligns[key] = v
    return Row(
        name=name, family=family,
        weight=_key(row, "weight", data["weight"], allow_none=False),
        activation=_key(row, "activation", data["activation"], allow_none=True),
        archs=archs, libraries=tuple(libraries), status=status,
        rank=_need(row, data, "rank", int, "an integer rank"),
        auto=_need(row, data, "auto", bool, "true or false"),
        layout=_need(row, data, "layout", str, "a layout family name"),
        activation_fns=tuple(fns),
        bias=_need(row, data, "bias", bool, "true or false"),
        expert_parallel=_need(row, data, "expert_parallel", bool, "true or false"),
        ep_required=_opt_bool(row, data, "ep_required"),
        last_resort=_opt_bool(row, data, "last_resort"),
        pads=_need(row, data, "pads", bool, "true or false"),
        min_versions=tuple(min_versions), arch_status=tuple(sorted(arch_status)),
        flashinfer_runner=data.get("flashinfer_runner"),
        flashinfer_config=data.get("flashinfer_config"),
        flashinfer_divergence=tuple(sorted(divergence)),
        source=str(data.get("source", "")), note=str(data.get("note", "")),
        link=str(data.get("link", "")), **aligns,
    )


def parse_matrix(doc: Mapping[str, Any]) -> Matrix:
    """Validate a parsed TOML document and build the :class:`Matrix`."""
    if doc.get("schema") != 1:
        raise MatrixError("<table>", "schema", "1", repr(doc.get("schema")))
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        raise MatrixError("<table>", "version", "a non-empty string", repr(version))
    raw_rows = doc.get("row")
    if not isinstance(raw_rows, list) or not raw_rows:
        raise MatrixError("<table>", "row", "a non-empty array of [[row]] tables", repr(raw_rows))
    rows = tuple(_parse_row(r, i) for i, r in enumerate(raw_rows))
    seen_names: dict[str, Row] = {}
    seen_ranks: dict[int, Row] = {}
    seen_keys: dict[tuple[str, str, QuantKey | None], Row] = {}
    for r in rows:
        if r.name in seen_names:
            raise MatrixError(r.name, "name", "unique", "a duplicate row name")
        if r.rank in seen_ranks:
            raise MatrixError(r.name, "rank", "unique across rows",
                              f"{r.rank} (also {seen_ranks[r.rank].name})")
        variant = (r.name, canonical_name(r.weight), r.activation)
        if variant in seen_keys:
            raise MatrixError(r.name, "activation", "unique per (variant, weight)", repr(variant))
        seen_names[r.name] = seen_ranks[r.rank] = seen_keys[variant] = r
    names: dict[str, tuple[str, ...]] = {}
    for alias, members in dict(doc.get("names", {})).items():
        if not _FAMILY_RE.match(alias):
            raise MatrixError(f"names.{alias}", "name", "lower_snake_case", repr(alias))
        if not isinstance(members, list) or not members:
            raise MatrixError(f"names.{alias}", "members", "a non-empty list of row names",
                              repr(members))
        for m in members:
            if m not in seen_names:
                raise MatrixError(f"names.{alias}", "members", "names of rows in the table",
                                  repr(m))
        names[alias] = tuple(members)
    for r in rows:
        if r.family not in names:
            raise MatrixError(r.name, "family", "a name listed under [names]", repr(r.family))
        if r.name not in names[r.family]:
            raise MatrixError(r.name, "family", f"a [names] entry that lists {r.name}",
                              repr(r.family))
    adjustments = []
    for i, adj in enumerate(doc.get("adjustment", [])):
        label = f"adjustment#{i}"
        archs = _arch_list(label, "archs", adj.get("archs"))
        move = adj.get("move")
        before, after = adj.get("before"), adj.get("after")
        if move not in seen_names:
            raise MatrixError(label, "move", "a row name", repr(move))
        if (before is None) == (after is None):
            raise MatrixError(label, "before/after", "exactly one of before, after",
                              repr((before, after)))
        anchor = before or after
        if anchor not in seen_names or anchor == move:
            raise MatrixError(label, "before" if before else "after", "another row's name",
                              repr(anchor))
        adjustments.append(Adjustment(archs, move, before, after))
    return Matrix(version, rows, names, tuple(adjustments))


_TABLE: Final = "mxfp4_moe.toml"


def _parse_toml(text: str) -> dict[str, Any]:
    import tomllib  # only on a cache miss or for a table given as text

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError("<table>", "toml", "valid TOML", str(exc)) from None


def _read_bundled() -> tuple[bytes, str | None]:
    """(the bundled table's bytes, its folder on disk or None when not a plain file)."""
    folder = os.path.dirname(os.path.abspath(__file__))
    try:
        with open(os.path.join(folder, _TABLE), "rb") as fh:
            return fh.read(), folder
    except OSError:  # e.g. imported from a zip: go through the resource API
        from importlib import resources
        return resources.files("oracle.matrix").joinpath(_TABLE).read_bytes(), None


def _cache_path(folder: str) -> str:
    name = f"{_TABLE}.{sys.implementation.cache_tag}.marshal"
    prefix = sys.pycache_prefix
    if prefix:  # mirror CPython's layout for PYTHONPYCACHEPREFIX
        return os.path.join(prefix, folder.lstrip(os.sep), name)
    return os.path.join(folder, "__pycache__", name)


def _bundled_document() -> dict[str, Any]:
    """The bundled table, parsed: from the marshal cache when it matches, else tomllib."""
    raw, folder = _read_bundled()
    cache = _cache_path(folder) if folder is not None and sys.implementation.cache_tag else None
    if cache is not None:
        try:
            with open(cache, "rb") as fh:
                source, doc = marshal.loads(fh.read())
            if source == raw and isinstance(doc, dict):
                return doc
        except Exception:  # noqa: BLE001 - missing/corrupt/foreign cache: parse the TOML
            pass
    # Text-mode semantics (universal newlines), exactly as the table was always read.
    doc = _parse_toml(raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n"))
    if cache is not None and not sys.dont_write_bytecode:
        _write_cache(cache, raw, doc)
    return doc


def _write_cache(cache: str, raw: bytes, doc: dict[str, Any]) -> None:
    tmp = f"{cache}.{os.getpid()}.tmp"
    try:
        blob = marshal.dumps((raw, doc))
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, cache)  # atomic: concurrent importers never see half a file
    except (OSError, ValueError):  # read-only install, or a value marshal cannot hold
        try:
            os.unlink(tmp)
        except OSError:
            pass


def load_matrix(text: str | None = None) -> Matrix:
    """Parse and validate the bundled table (or ``text``, for tests that feed broken tables).

    The bundled table's parsed document may come from the cache described in the
    module docstring; validation (:func:`parse_matrix`) always runs.
    """
    if text is None:
        return parse_matrix(_bundled_document())
    return parse_matrix(_parse_toml(text))
