"""Load and validate the compatibility matrix (``mxfp4_moe.toml``).

The table is data; this module turns it into frozen values and refuses a malformed
table with a :class:`~oracle.errors.MatrixError` naming the row (or the section:
``<table>``, ``names.ALIAS``, ``adjustment#N``) and the field -- never with a
TypeError or KeyError from deep inside.  It runs once, at import of
:mod:`oracle.matrix`, so a broken table never reaches the selector.

The schema is declared once, beside the fields (as attrs validators are): every
init field of :class:`Row`, :class:`ArchStatus`, :class:`Adjustment` and
:class:`_Document` carries a check in its metadata, and :func:`_build` uses that one
declaration for the unknown-key check, the required check and the conversion.
What relates several fields or rows (a ``known_bad`` row needs a note and a link,
names and ranks are unique, ``[names]`` lists existing rows, ...) is checked after.

Nothing is cached.  What the selector reads on every call -- a row's platforms and
archs in display order, the auto order of each arch -- is computed once, when the
value is built.  At ``import oracle.matrix`` importing tomllib, parsing the bundled
table and validating it cost about 3, 3 and 1 ms (medians, 2-core dev box, 2026-12).

Import floor 5: this module imports only ``oracle.errors``, ``oracle.keys`` and
``oracle.platforms`` (plus the standard library).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Final, NoReturn

from oracle.errors import ConfigError, MatrixError
from oracle.keys import KEY_CONSTANTS, QuantKey, canonical_name
from oracle.platforms import (LIBRARIES, PLATFORMS, Device, Version, arch_platform,
                              arch_sort_key, parse_version)

__all__ = ["STATUSES", "Adjustment", "ArchStatus", "Matrix", "Row", "load_matrix",
           "parse_matrix"]

STATUSES: Final = ("supported", "experimental", "known_bad")
_TABLE: Final = "mxfp4_moe.toml"
_SHOWN: Final = 60  # longest repr a message quotes: a 5000-digit value is cut, not dumped

#: ``check(row, key, value) -> converted value``; raises MatrixError naming row and key.
Check = Callable[[str, str, Any], Any]


# ------------------------------------------------------------------ checks

def _fail(row: str, key: str, constraint: str, value: Any, fix: str | None = None) -> NoReturn:
    """The one message template: ``<row/key> must be <constraint> (got <value>); try: <fix>``."""
    shown = repr(value)
    raise MatrixError(row, key, constraint,
                      shown if len(shown) <= _SHOWN else shown[:_SHOWN - 3] + "...", fix)


def _typed(kind: type, constraint: str, test: Callable[[Any], bool] | None = None,
           fix: str | None = None) -> Check:
    """A ``kind`` value that passes ``test``, kept as is.  A bool is no int (``true`` ≠ 1)."""
    def check(row: str, key: str, value: Any) -> Any:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok or (test is not None and not test(value)):
            _fail(row, key, constraint, value, fix)
        return value
    return check


def _matching(pattern: str, constraint: str) -> Check:
    compiled = re.compile(pattern, re.ASCII)
    return _typed(str, constraint, lambda s: compiled.fullmatch(s) is not None)


def _one_of(choices: tuple[str, ...]) -> Check:
    return _typed(str, "one of " + ", ".join(choices), choices.__contains__)


def _list_of(item: Check, constraint: str, *, non_empty: bool = True,
             into: Callable[[list[Any]], Any] = tuple, fix: str | None = None) -> Check:
    """A list (non-empty unless told) of distinct items, each passing ``item``."""
    def check(row: str, key: str, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or (non_empty and not value):
            _fail(row, key, constraint, value, fix)
        items = [item(row, key, v) for v in value]
        if len(set(items)) != len(items):
            _fail(row, key, f"{constraint}, without duplicates", value)
        return into(items)
    return check


def _arch(row: str, key: str, value: Any) -> str:
    """An arch in its one canonical spelling (``Device.parse(a).name == a``)."""
    try:
        canonical = Device.parse(value).name
    except ConfigError:
        canonical = None
    if canonical != value:
        _fail(row, key, "an exact arch like sm90, gfx950, xpu or cpu (canonical, no ranges)",
              value, f'"{canonical}"' if canonical else None)
    return value


def _quant_key(allow_none: bool) -> Check:
    """A QuantKey constant name (``"kMxfp4Static"``) → the key; ``"None"`` → None (BF16)."""
    constraint = "a QuantKey constant name from oracle.keys" + (' or "None"' if allow_none else "")

    def check(row: str, key: str, value: Any) -> QuantKey | None:
        if allow_none and value == "None":
            return None
        if not isinstance(value, str) or value not in KEY_CONSTANTS:
            _fail(row, key, constraint, value, ", ".join(sorted(KEY_CONSTANTS)))
        return KEY_CONSTANTS[value]
    return check


def _table_of(constraint: str, entry: Callable[[str, str, Any, Any], tuple[Any, Any]]) -> Check:
    """A TOML table; ``entry(row, key, k, v)`` turns each pair into one, sorted by key."""
    def check(row: str, key: str, value: Any) -> tuple[tuple[Any, Any], ...]:
        if not isinstance(value, Mapping):
            _fail(row, key, constraint, value)
        return tuple(sorted(entry(row, key, k, v) for k, v in value.items()))
    return check


def _version(row: str, key: str, lib: Any, text: Any) -> tuple[Any, Version]:
    """``(lib, Version)``; what parse_version refuses (``"²"``, 5000 digits) fails here."""
    if isinstance(text, str):
        try:
            return lib, parse_version(text, str(lib))
        except ConfigError:
            pass
    _fail(row, key, f"a PEP 440 version string for {lib}, like 0.6.18", text)


def _min_versions(row: str, key: str, value: Any) -> tuple[tuple[str, Version], ...]:
    """``{library = "VERSION"}`` in table order (which library: checked against the row)."""
    if not isinstance(value, Mapping):
        _fail(row, key, 'a table {library = "VERSION"}', value)
    return tuple(_version(row, key, lib, text) for lib, text in value.items())


_flag = _typed(bool, "true or false")
_text = _typed(str, "a string")
_nonempty = _typed(str, "a non-empty string", bool)
_row_name = _matching(r"[A-Z][A-Z0-9_]*", "an UPPER_SNAKE_CASE row name")
_snake = _matching(r"[a-z][a-z0-9_]*", "a lower_snake_case name")
_archs = _list_of(_arch, "a non-empty list of exact archs", into=frozenset,
                  fix='e.g. ["sm100", "sm103"]')
_align = _typed(int, "a positive multiple of 32 (the MX block size)",
                lambda v: v > 0 and v % 32 == 0)


def _applied_key(row: str, key: str, value: Any) -> QuantKey | str:
    """A key the kernel applies on request, or ``"any"`` (it quantizes to whatever is asked)."""
    return "any" if value == "any" else _quant_key(allow_none=False)(row, key, value)


def _platform_align(row: str, key: str, platform: Any, value: Any) -> tuple[str, tuple[int, int]]:
    where = f"{key}.{platform}"
    _one_of(PLATFORMS)(row, where, platform)
    ok = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        _fail(row, where, "[hidden_align, intermediate_align], positive ints", value, "[256, 256]")
    return platform, (value[0], value[1])


def _spec(check: Check, default: Any = MISSING, factory: Any = MISSING) -> Any:
    """A dataclass field whose TOML value ``check`` validates and converts (no default:
    the key is required)."""
    return field(default=default, default_factory=factory, metadata={"check": check})


def _build(cls: type, data: Any, row: str, label: str, prefix: str = "") -> Any:
    """``cls`` from the TOML table ``data``, by the checks declared on its init fields.

    ``row`` names the row (or section) in errors, ``label`` the table itself, and
    ``prefix`` goes before each key (``arch_status.sm100.``).
    """
    if not isinstance(data, Mapping):
        _fail(row, label, "a table", data)
    specs = [f for f in fields(cls) if f.init]
    known = [f.name for f in specs]
    for key in data:
        if key not in known:
            _fail(row, f"{prefix}{key}", "a known field", key, "one of " + ", ".join(known))
    for f in specs:
        if f.name not in data and f.default is MISSING and f.default_factory is MISSING:
            raise MatrixError(row, prefix + f.name, "present", "missing")
    return cls(**{f.name: f.metadata["check"](row, prefix + f.name, data[f.name])
                  for f in specs if f.name in data})


# ------------------------------------------------------------------ values

@dataclass(frozen=True, slots=True)
class ArchStatus:
    """A row's status on one arch, with the reason (and link) when not plain supported."""

    status: str = _spec(_one_of(("experimental", "known_bad")))
    reason: str = _spec(_nonempty)
    link: str = _spec(_text, "")


def _arch_status(row: str, key: str, arch: Any, table: Any) -> tuple[str, ArchStatus]:
    where = f"{key}.{_arch(row, f'{key}.{arch}', arch)}"
    return arch, _build(ArchStatus, table, row, where, where + ".")


def _divergence(row: str, key: str, arch: Any, why: Any) -> tuple[str, str]:
    where = f"{key}.{_arch(row, f'{key}.{arch}', arch)}"
    return arch, _typed(str, "a non-empty reason string", bool)(row, where, why)


@dataclass(frozen=True, slots=True)
class Row:
    """One (backend variant, weight key, activation key) with everything gated on.

    ``platforms`` and the display order of ``archs`` are computed when the row is
    built (they are not TOML keys).
    """

    name: str = _spec(_row_name)
    family: str = _spec(_snake)
    weight: QuantKey = _spec(_quant_key(allow_none=False))  # noqa: RUF009 (a Field)
    activation: QuantKey | None = _spec(_quant_key(allow_none=True))  # noqa: RUF009
    archs: frozenset[str] = _spec(_archs)
    libraries: tuple[str, ...] = _spec(_list_of(_one_of(LIBRARIES), "a list of library names",
                                                non_empty=False))
    status: str = _spec(_one_of(STATUSES))
    rank: int = _spec(_typed(int, "an integer rank"))
    auto: bool = _spec(_flag)
    layout: str = _spec(_typed(str, "a non-empty layout family name", bool))
    activation_fns: tuple[str, ...] = _spec(
        _list_of(_nonempty, "a non-empty list of activation function names"))
    bias: bool = _spec(_flag)
    expert_parallel: bool = _spec(_flag)
    hidden_align: int = _spec(_align)
    intermediate_align: int = _spec(_align)
    pads: bool = _spec(_flag)
    ep_required: bool = _spec(_flag, False)
    last_resort: bool = _spec(_flag, False)
    requested_activations: tuple[QuantKey | str, ...] = _spec(
        _list_of(_applied_key, 'a list of QuantKey constant names or "any"'), ())
    align: tuple[tuple[str, tuple[int, int]], ...] = _spec(
        _table_of("a table {platform = [hidden_align, intermediate_align]}", _platform_align), ())
    min_versions: tuple[tuple[str, Version], ...] = _spec(_min_versions, ())
    arch_status: tuple[tuple[str, ArchStatus], ...] = _spec(
        _table_of("a table keyed by arch", _arch_status), ())
    flashinfer_runner: str | None = _spec(_nonempty, None)
    flashinfer_config: str | None = _spec(_nonempty, None)
    flashinfer_divergence: tuple[tuple[str, str], ...] = _spec(
        _table_of('a table {arch = "reason"}', _divergence), ())
    source: str = _spec(_text, "")
    note: str = _spec(_text, "")
    link: str = _spec(_text, "")
    platforms: frozenset[str] = field(init=False, repr=False, compare=False)
    display_archs: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "platforms", frozenset(map(arch_platform, self.archs)))
        object.__setattr__(self, "display_archs", tuple(sorted(self.archs, key=arch_sort_key)))

    def status_on(self, arch: str) -> ArchStatus:
        for a, st in self.arch_status:
            if a == arch:
                return st
        return ArchStatus(self.status, self.note if self.status != "supported" else "", self.link)

    @property
    def activation_name(self) -> str:
        return canonical_name(self.activation)

    def applies(self, key: QuantKey | None) -> bool:
        """Whether the kernel quantizes activations to ``key`` itself when asked."""
        return key is not None and ("any" in self.requested_activations
                                    or key in self.requested_activations)

    def alignment(self, platform: str) -> tuple[int, int]:
        """(hidden, intermediate) alignment on ``platform``."""
        for p, pair in self.align:
            if p == platform:
                return pair
        return self.hidden_align, self.intermediate_align

    def sorted_archs(self) -> list[str]:
        """``archs`` in display order (archs in scope first, by position)."""
        return list(self.display_archs)


@dataclass(frozen=True, slots=True)
class Adjustment:
    """On ``archs``, auto order moves row ``move`` just before/after another row."""

    archs: frozenset[str] = _spec(_archs)
    move: str = _spec(_row_name)
    before: str | None = _spec(_row_name, None)
    after: str | None = _spec(_row_name, None)


@dataclass(frozen=True)
class Matrix:
    """The validated table plus the indexes the selector reads on every call.

    The indexes (``by_name``, each arch's auto order, the backend names) are computed
    here, once; they are functions of the four fields and take no part in equality.
    """

    version: str
    rows: tuple[Row, ...]
    names: Mapping[str, tuple[str, ...]]
    adjustments: tuple[Adjustment, ...]
    by_name: Mapping[str, Row] = field(init=False, repr=False, compare=False)
    _rank_order: tuple[Row, ...] = field(init=False, repr=False, compare=False)
    _orders: Mapping[str, tuple[Row, ...]] = field(init=False, repr=False, compare=False)
    _backend_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {r.name: r for r in self.rows}
        ranked = tuple(sorted(self.rows, key=lambda r: r.rank))
        adjusted = {a for adj in self.adjustments for a in adj.archs}
        derived = {
            "by_name": by_name,
            "_rank_order": ranked,
            "_orders": {a: _adjusted(ranked, by_name, self.adjustments, a) for a in adjusted},
            "_backend_names": tuple(dict.fromkeys(
                ["auto", *self.names, *(r.name.lower() for r in self.rows)])),
        }
        for attr, value in derived.items():
            object.__setattr__(self, attr, value)

    def backend_names(self) -> list[str]:
        """Every accepted ``--moe-backend`` value (lower-case)."""
        return list(self._backend_names)

    def auto_order(self, arch: str) -> tuple[Row, ...]:
        """All rows in auto order for ``arch``: rank order plus the arch's adjustments."""
        return self._orders.get(arch, self._rank_order)


def _adjusted(ranked: tuple[Row, ...], by_name: Mapping[str, Row],
              adjustments: tuple[Adjustment, ...], arch: str) -> tuple[Row, ...]:
    order = list(ranked)
    for adj in adjustments:
        if arch in adj.archs:
            moving = by_name[adj.move]
            order.remove(moving)
            anchor = order.index(by_name[adj.before if adj.before is not None else adj.after])
            order.insert(anchor if adj.before is not None else anchor + 1, moving)
    return tuple(order)


# ------------------------------------------------------------------ the document

def _rows(row: str, key: str, value: Any) -> tuple[Row, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        _fail(row, key, "a non-empty array of [[row]] tables", value)
    out = []
    for i, data in enumerate(value):
        name = data.get("name") if isinstance(data, Mapping) else None
        out.append(_build(Row, data, name if isinstance(name, str) and name else f"#{i}", "row"))
    return tuple(out)


def _adjustments(row: str, key: str, value: Any) -> tuple[Adjustment, ...]:
    if not isinstance(value, (list, tuple)):
        _fail(row, key, "an array of [[adjustment]] tables", value)
    return tuple(_build(Adjustment, data, f"adjustment#{i}", key) for i, data in enumerate(value))


_members = _list_of(_row_name, "a non-empty list of row names")


def _names(row: str, key: str, value: Any) -> dict[str, tuple[str, ...]]:
    """``[names]``: lower_snake_case alias → its row names, in order (rows checked later)."""
    if not isinstance(value, Mapping):
        _fail(row, key, 'a table {alias = ["ROW", ...]}', value)
    return {_snake(f"{key}.{alias}", "name", alias): _members(f"{key}.{alias}", "members", rows)
            for alias, rows in value.items()}


@dataclass(eq=False, repr=False)  # a transient record: only __init__ is worth generating
class _Document:
    """The top level of the TOML file (private: :class:`Matrix` is the public value)."""

    schema: int = _spec(_typed(int, "the integer 1", lambda v: v == 1))
    version: str = _spec(_nonempty)
    row: tuple[Row, ...] = _spec(_rows)
    names: dict[str, tuple[str, ...]] = _spec(_names, factory=dict)  # noqa: RUF009
    adjustment: tuple[Adjustment, ...] = _spec(_adjustments, ())


def _check_row(r: Row) -> None:
    """What relates fields of one row."""
    if r.status == "known_bad" and not (r.note and r.link):
        raise MatrixError(r.name, "note", "a reason (note) and a link for a known_bad row",
                          "missing", 'add note = "..." and link = "https://..."')
    for lib, _ in r.min_versions:
        if lib not in r.libraries:
            _fail(r.name, "min_versions", "versions of libraries the row requires", lib)
    for arch, _ in r.arch_status:
        if arch not in r.archs:
            _fail(r.name, f"arch_status.{arch}", "an arch listed in archs", arch)


def parse_matrix(doc: Mapping[str, Any]) -> Matrix:
    """Validate a parsed TOML document and build the :class:`Matrix`."""
    d: _Document = _build(_Document, doc, "<table>", "document")
    # Names are unique, so (name, weight, activation) is too: no separate check.
    by_name: dict[str, Row] = {}
    by_rank: dict[int, Row] = {}
    for r in d.row:
        _check_row(r)
        if r.name in by_name:
            raise MatrixError(r.name, "name", "unique across rows", "a duplicate row name")
        if r.rank in by_rank:
            raise MatrixError(r.name, "rank", "unique across rows",
                              f"{str(r.rank)[:_SHOWN]} (also {by_rank[r.rank].name})")
        by_name[r.name] = by_rank[r.rank] = r
    for alias, members in d.names.items():
        for m in members:
            if m not in by_name:
                _fail(f"names.{alias}", "members", "names of rows in the table", m)
    for r in d.row:
        # A variant without a vendor name is its own family (reached by its member name).
        if r.name not in d.names.get(r.family, ()) and r.family != r.name.lower():
            _fail(r.name, "family", f"a name listed under [names] whose list has {r.name}, "
                  f"or {r.name.lower()}", r.family)
    for i, adj in enumerate(d.adjustment):
        label = f"adjustment#{i}"
        if adj.move not in by_name:
            _fail(label, "move", "a row name", adj.move)
        if (adj.before is None) == (adj.after is None):
            _fail(label, "before/after", "exactly one of before, after", (adj.before, adj.after))
        side, anchor = ("before", adj.before) if adj.before is not None else ("after", adj.after)
        if anchor not in by_name or anchor == adj.move:
            _fail(label, side, "another row's name", anchor)
    return Matrix(d.version, d.row, d.names, d.adjustment)


# ------------------------------------------------------------------ loading

def bundled_text(table: str = _TABLE, label: str = "<table>") -> str:
    """A table next to this package as text (through importlib.resources when not on
    disk); bytes that are not UTF-8 are a MatrixError."""
    try:
        with open(os.path.join(os.path.dirname(__file__), table), "rb") as fh:
            raw = fh.read()
    except OSError:  # e.g. imported from a zip
        from importlib import resources
        raw = resources.files(__package__).joinpath(table).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MatrixError(label, "toml", "UTF-8 text", str(exc)) from None


def read_toml(text: str | None, table: str, label: str = "<table>") -> Any:
    """``text`` (or the bundled ``table``) parsed as TOML; every way it can fail --
    bytes that are not UTF-8, invalid TOML, a number Python cannot read -- a MatrixError."""
    if text is None:
        text = bundled_text(table, label)
    if not isinstance(text, str):
        _fail(label, "toml", "TOML text (a str)", type(text).__name__)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(label, "toml", "valid TOML", str(exc)) from None
    except (ValueError, RecursionError) as exc:  # an integer past the int-string limit
        raise MatrixError(label, "toml", "TOML with numbers Python can read",
                          str(exc)[:_SHOWN]) from None


def load_matrix(text: str | None = None) -> Matrix:
    """Parse and validate the bundled table (or ``text``, for tests that feed broken tables)."""
    doc = read_toml(text, _TABLE)
    return parse_matrix(doc)
