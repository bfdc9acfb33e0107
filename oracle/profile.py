"""Measured kernel profiles: what ``rank="measured"`` orders by.

A profile is data written on a GPU by ``mxfp4-oracle tune`` (``python -m
oracle.kernels.tune``): the device, the library versions the kernels ran with, and
per (backend, activation key, experts, tokens) the CUDA-graph and eager times and the
relative error against the float reference.  The project ships the one it measured
(``matrix/profiles/*.toml``, ``bundled``).  Here it is a frozen value: a request carries
it, the selector reads it, nothing is measured or probed -- ranking stays a pure
function of its inputs.

Schema (TOML)::

    schema = 1
    device = "NVIDIA H200"      arch = "sm90"   driver = "..."   cuda = "13.0"
    date = "2026-12-02"         command = "python -m oracle.kernels.tune ..."
    [libraries]                 flashinfer = "0.7.2.post1", ...
    [[measurement]]             backend, activation ("None" = bf16), experts, hidden,
                                intermediate, top_k, tokens, graph_us (optional), eager_us,
                                rel_error, build_s (optional)
"""

from __future__ import annotations

import importlib.util
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from oracle.errors import ConfigError, shown
from oracle.files import read_regular_file, user_path
from oracle.keys import KEY_CONSTANTS, QuantKey
from oracle.platforms import Device, Version, parse_version

__all__ = ["Measurement", "Profile", "load_profile", "parse_profile", "bundled_profiles",
           "PROFILE_DIR"]

def _profile_dir() -> Path:
    """``profiles/`` inside the oracle.matrix package, located without importing it (the
    matrix sits floors above this module)."""
    spec = importlib.util.find_spec("oracle.matrix")
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(places[0]) / "profiles" if places else Path(__file__).parent / "profiles"


#: Where the project's measured profiles live (package data of oracle.matrix).
PROFILE_DIR: Final = _profile_dir()
_CAP: Final = 4 << 20  # a profile is a few hundred lines


@dataclass(frozen=True, slots=True)
class Measurement:
    """One backend at one activation key, expert count and token count."""

    backend: str
    activation: QuantKey | None
    experts: int
    hidden: int
    intermediate: int
    top_k: int
    tokens: int
    eager_us: float
    rel_error: float
    graph_us: float | None = None
    build_s: float | None = None

    @property
    def us(self) -> float:
        """The time ranking uses: the CUDA-graph median, else the eager one."""
        return self.graph_us if self.graph_us is not None else self.eager_us


@dataclass(frozen=True, slots=True)
class Profile:
    """A measured profile (see the module docstring); ``label`` names where it came from."""

    device: str
    arch: str
    date: str
    command: str
    libraries: tuple[tuple[str, Version], ...]
    measurements: tuple[Measurement, ...]
    driver: str = ""
    cuda: str = ""
    label: str = ""

    def describe(self) -> str:
        return f"{self.device} ({self.arch}) measured {self.date}"

    def mismatch(self, arch: str, versions: Mapping[str, Version | None]) -> str | None:
        """Why this profile does not describe the request's machine, or None."""
        if arch != self.arch:
            return f"it was measured on {self.arch}, the request is for {arch}"
        for lib, ver in self.libraries:
            have = versions.get(lib)
            if have is not None and have != ver:
                return f"it was measured with {lib} {ver}, the request has {lib} {have}"
        return None

    def lookup(self, backend: str, activation: QuantKey | None, experts: int | None,
               tokens: int) -> Measurement | None:
        """The measurement nearest to (experts, tokens) on a log scale, or None."""
        rows = [m for m in self.measurements
                if m.backend == backend and m.activation == activation]
        if not rows:
            return None

        def distance(m: Measurement) -> tuple[float, float, int]:
            e = abs(math.log2(m.experts) - math.log2(experts)) if experts else 0.0
            return e, abs(math.log2(m.tokens) - math.log2(tokens)), m.tokens
        return min(rows, key=distance)


# ------------------------------------------------------------------ parsing


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (
        kind if isinstance(kind, tuple) else (kind,)))
    if not ok:
        raise ConfigError(f"{where}.{key}", f"a {getattr(kind, '__name__', 'number')}",
                          shown(value)[:60], "see oracle/profile.py for the schema")
    return value


def _number(data: Mapping[str, Any], key: str, where: str, *, optional: bool = False,
            positive: bool = True) -> float | None:
    if optional and key not in data:
        return None
    value = _need(data, key, (int, float), where)
    if not math.isfinite(value) or (positive and value <= 0) or value < 0:
        raise ConfigError(f"{where}.{key}", "a finite number > 0" if positive else
                          "a finite number >= 0", shown(value)[:40], "re-run the tuner")
    return float(value)


def _count(data: Mapping[str, Any], key: str, where: str) -> int:
    value = _need(data, key, int, where)
    if not 0 < value < 1 << 40:
        raise ConfigError(f"{where}.{key}", "a positive count", shown(value)[:40],
                          "re-run the tuner")
    return value


def _measurement(data: Any, where: str) -> Measurement:
    if not isinstance(data, Mapping):
        raise ConfigError(where, "a [[measurement]] table", shown(data)[:60])
    act = _need(data, "activation", str, where)
    if act != "None" and act not in KEY_CONSTANTS:
        raise ConfigError(f"{where}.activation", 'a QuantKey constant name or "None"',
                          shown(act)[:40], ", ".join(sorted(KEY_CONSTANTS)))
    return Measurement(
        backend=_need(data, "backend", str, where),
        activation=None if act == "None" else KEY_CONSTANTS[act],
        experts=_count(data, "experts", where), hidden=_count(data, "hidden", where),
        intermediate=_count(data, "intermediate", where), top_k=_count(data, "top_k", where),
        tokens=_count(data, "tokens", where), eager_us=_number(data, "eager_us", where),
        rel_error=_number(data, "rel_error", where, positive=False),
        graph_us=_number(data, "graph_us", where, optional=True),
        build_s=_number(data, "build_s", where, optional=True, positive=False))


def parse_profile(text: str, label: str = "profile") -> Profile:
    """A profile from TOML text; every defect is a ConfigError naming the field."""
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(label, "valid TOML", str(exc)[:80], "re-run the tuner") from None
    if doc.get("schema") != 1:
        raise ConfigError(f"{label}.schema", "the integer 1", shown(doc.get("schema"))[:20])
    arch = _need(doc, "arch", str, label)
    try:
        canonical = Device.parse(arch).name
    except ConfigError:
        canonical = None
    if canonical != arch:
        raise ConfigError(f"{label}.arch", "a canonical arch like sm90", shown(arch)[:30])
    libs = doc.get("libraries", {})
    if not isinstance(libs, Mapping):
        raise ConfigError(f"{label}.libraries", 'a table {library = "VERSION"}', shown(libs)[:60])
    versions = tuple(sorted((str(k), parse_version(v, f"{label}.libraries.{k}"))
                            for k, v in libs.items()))
    rows = doc.get("measurement")
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{label}.measurement", "a non-empty array of [[measurement]] tables",
                          shown(rows)[:60], "re-run the tuner")
    return Profile(
        device=_need(doc, "device", str, label), arch=arch, date=_need(doc, "date", str, label),
        command=_need(doc, "command", str, label), libraries=versions,
        measurements=tuple(_measurement(r, f"{label}.measurement[{i}]")
                           for i, r in enumerate(rows)),
        driver=str(doc.get("driver", "")), cuda=str(doc.get("cuda", "")), label=label)


def bundled_profiles() -> dict[str, Path]:
    """The project's measured profiles by name (file stem)."""
    if not PROFILE_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(PROFILE_DIR.glob("*.toml"))}


def load_profile(source: str | os.PathLike[str]) -> Profile:
    """``"bundled"`` (the project's only profile), a bundled profile's name, or a file."""
    bundled = bundled_profiles()
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else source
    if name == "bundled":
        if len(bundled) != 1:
            raise ConfigError("profile", "one bundled profile", f"{len(bundled)} bundled",
                              "name one: " + ", ".join(bundled) if bundled else "run tune")
        name = next(iter(bundled))
    if isinstance(name, str) and name in bundled:
        path, label = bundled[name], f"bundled {name}"
    else:
        path = user_path(name, "profile")
        label = str(path)
    data = read_regular_file(path, _CAP, label)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(label, "UTF-8 TOML text", "undecodable bytes") from None
    return parse_profile(text, label)

