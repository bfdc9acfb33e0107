"""Close matches for names users type: backends, quant keys, libraries, flags.

One ranking for every "did you mean", strongest evidence first:

0. the same name spelled differently (case, ``-`` for ``_``, blanks);
1. a known alias of a name (another engine's spelling, from ``oracle/engines.toml``, or
   an alias the caller passes, e.g. a quant key's constant name ``mxfp8_dynamic``);
2. a prefix: what was typed is the start of a name (``flashinfer`` → ``flashinfer_trtllm``),
   in the caller's order;
3. a name followed by more (``triton_kernel`` → ``triton``), or every typed word inside
   a name, in order (``trtllm_bf16`` → ``flashinfer_trtllm_mxfp4_bf16``);
4. the same first word (the family: ``flashinfer_trtlm`` → ``flashinfer_…`` by similarity);
5. edit distance (:mod:`difflib`, cutoff 0.6).

Within a tier, names the caller marks as *families* (``--moe-backend`` vendor names) come
before members, then shorter/closer names, then the caller's order.

:func:`backend_suggestions` adds the data of other engines (SGLang's ``flashinfer_mxfp4``
is FlashInfer's TRT-LLM-gen MoE on SM10x and its CUTLASS MoE on SM12x, TensorRT-LLM's
``TRTLLM`` is ``flashinfer_trtllm``, ...), resolved for the device's arch when it is known.

Low floor (imports only :mod:`oracle.errors`), so :mod:`oracle.keys`, the request values,
the selector and the CLI can all use it.  The data file is read on first use only: the
functions run on error paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from oracle.errors import ConfigError, shown

__all__ = ["normalize", "ranked", "closest", "Alias", "engine_table", "backend_aliases",
           "backend_suggestions", "suggest_backend", "ENGINES_FILE"]

#: The data file, inside the ``oracle`` package.
ENGINES_FILE: Final = "engines.toml"
_CUTOFF: Final = 0.6
_SEP: Final = re.compile(r"[\s\-_]+")


def normalize(name: str) -> str:
    """The one spelling names are compared in: lower case, blanks and ``-`` read as ``_``."""
    return _SEP.sub("_", name.strip().lower()).strip("_")


def _words(norm: str) -> list[str]:
    return [w for w in norm.split("_") if w]


def _in_order(needles: Sequence[str], hay: Sequence[str]) -> bool:
    it = iter(hay)
    return all(any(w == h for h in it) for w in needles)


def _ratio(a: str, b: str) -> float:
    import difflib  # error paths only: keeps it out of `import oracle`

    return difflib.SequenceMatcher(None, a, b).ratio()


def ranked(name: object, choices: Iterable[str], *, families: Iterable[str] = (),
           aliases: Mapping[str, str] | None = None, limit: int = 5) -> list[str]:
    """Up to ``limit`` of ``choices`` that ``name`` most likely meant, best first.

    ``aliases`` maps other spellings to a choice (ignored where the choice is not offered);
    ``families`` are preferred within a tier.  Nothing close: ``[]``.
    """
    if not isinstance(name, str):
        return []
    n = normalize(name)
    if not n or limit <= 0:
        return []
    offered: dict[str, str] = {}  # normalised -> the caller's spelling (first one wins)
    for c in choices:
        if isinstance(c, str):
            offered.setdefault(normalize(c), c)
    position = {norm: i for i, norm in enumerate(offered)}
    fams = {normalize(f) for f in families}
    # (spelling to match against, the choice it stands for, 0 = the name itself, 1 = an alias)
    pool = [(norm, norm, 0) for norm in offered]
    for other, target in (aliases or {}).items():
        t = normalize(target)
        if t in offered and isinstance(other, str) and normalize(other) not in offered:
            pool.append((normalize(other), t, 1))
    best: dict[str, tuple[Any, ...]] = {}

    def offer(target: str, tier: int, *rest: Any) -> None:
        key = (tier, *rest)
        if target not in best or key < best[target]:
            best[target] = key

    typed = _words(n)
    for text, target, via in pool:
        fam = 0 if target in fams or not fams else 1
        words = _words(text)
        if text == n:
            offer(target, via, 0, 0)
        elif len(n) >= 3 and text.startswith(n):
            offer(target, 2, via, fam, position[target])
        elif len(text) >= 3 and n.startswith(text):
            offer(target, 3, via, fam, -len(text))
        elif len(typed) > 1 and _in_order(typed, words):
            offer(target, 3, via, fam, len(text))
        elif typed and words and typed[0] == words[0]:
            offer(target, 4, via, -round(_ratio(n, text), 3), fam)
        else:
            r = _ratio(n, text)
            if r >= _CUTOFF:
                offer(target, 5, via, -round(r, 3), fam)
    order = sorted(best, key=lambda t: (best[t], position[t]))
    return [offered[t] for t in order[:limit]]


def closest(name: object, choices: Iterable[str], *, families: Iterable[str] = (),
            aliases: Mapping[str, str] | None = None) -> str | None:
    """The single best match (see :func:`ranked`), or ``None``."""
    found = ranked(name, choices, families=families, aliases=aliases, limit=1)
    return found[0] if found else None


# ------------------------------------------------------------------ other engines' names


@dataclass(frozen=True, slots=True)
class Alias:
    """Another engine's ``--moe-backend`` spelling and what it means here."""

    engine: str
    name: str
    means: tuple[tuple[str, str], ...]  # (arch | "default", our name)
    why: str
    source: str

    def target(self, arch: str | None = None) -> str:
        """Our name for this alias on ``arch`` (the default when unknown or unlisted)."""
        table = dict(self.means)
        return table.get(arch or "default", table["default"])

    def targets(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each distinct target with the archs it is listed for (``()`` = everywhere)."""
        out: dict[str, list[str]] = {}
        for arch, target in self.means:
            archs = out.setdefault(target, [])
            if arch != "default":
                archs.append(arch)
        return [(t, tuple(a)) for t, a in out.items()]


def _bad(path: str, constraint: str, got: object) -> ConfigError:
    return ConfigError(f"oracle/{ENGINES_FILE}:{path}", constraint, shown(got)[:80],
                       "fix the data file")


def _entries(doc: Mapping[str, Any], section: str,
             kind: type) -> list[tuple[str, Mapping[str, Any]]]:
    """``(path, table)`` for each entry of an array (``kind`` list) or table (dict) section."""
    value = doc.get(section, kind())
    if not isinstance(value, kind):
        raise _bad(section, "an array of tables" if kind is list else "a table of tables", value)
    pairs = enumerate(value) if kind is list else value.items()
    out = []
    for key, entry in pairs:
        path = f"{section}[{key}]" if kind is list else f"{section}.{key}"
        if not isinstance(entry, dict):
            raise _bad(path, "a table", entry)
        out.append((path, entry))
    return out


def _text(entry: Mapping[str, Any], key: str, path: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"{path}.{key}", "a non-empty string", value)
    return value


def _load_engine_table() -> Mapping[str, Any]:
    """``oracle/engines.toml``, parsed and checked for shape (once, at import of this
    module, which only error paths and ``--target`` import)."""
    import tomllib
    from importlib import resources

    text = resources.files("oracle").joinpath(ENGINES_FILE).read_text("utf-8")
    doc = tomllib.loads(text)
    if doc.get("schema") != 1:
        raise _bad("schema", "1", doc.get("schema"))
    for path, entry in _entries(doc, "alias", list):
        for key in ("engine", "name", "why", "source"):
            _text(entry, key, path)
        means = entry.get("means")
        if isinstance(means, dict):
            if "default" not in means or not all(isinstance(v, str) and v for v in means.values()):
                raise _bad(f"{path}.means", "a table arch -> name with a default", means)
        elif not isinstance(means, str) or not means:
            raise _bad(f"{path}.means", "a name or a table arch -> name", means)
    for path, entry in _entries(doc, "target", dict):
        for key in ("engine", "version", "source", "note"):
            _text(entry, key, path)
        libs = entry.get("libraries")
        if not isinstance(libs, dict) or not libs or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in libs.values()):
            raise _bad(f"{path}.libraries", "a table platform -> [library, ...]", libs)
    return doc


def _load_backend_aliases() -> Mapping[str, tuple[Alias, ...]]:
    """Other engines' ``--moe-backend`` spellings, keyed by :func:`normalize`'d name."""
    out: dict[str, list[Alias]] = {}
    for entry in _ENGINES.get("alias", []):
        means = entry["means"]
        table = tuple(means.items()) if isinstance(means, dict) else (("default", means),)
        alias = Alias(entry["engine"], entry["name"], table, entry["why"], entry["source"])
        out.setdefault(normalize(alias.name), []).append(alias)
    return {k: tuple(v) for k, v in out.items()}


_ENGINES: Final = _load_engine_table()
_ALIASES: Final = _load_backend_aliases()


def engine_table() -> Mapping[str, Any]:
    """The parsed ``oracle/engines.toml``: other engines' names and deployment targets."""
    return _ENGINES


def backend_aliases() -> Mapping[str, tuple[Alias, ...]]:
    """Other engines' ``--moe-backend`` spellings, keyed by :func:`normalize`'d name."""
    return _ALIASES


def backend_suggestions(name: object, choices: Iterable[str], *, families: Iterable[str] = (),
                        arch: str | None = None, limit: int = 5) -> list[tuple[str, str]]:
    """``(our name, why)`` for an unknown ``--moe-backend`` value, best first.

    Another engine's spelling comes first, resolved for ``arch`` when it is given (else
    every target with the archs it applies to); then :func:`ranked` (``why`` empty).
    """
    choices = list(choices)
    offered = {normalize(c): c for c in choices if isinstance(c, str)}
    out: list[tuple[str, str]] = []
    if isinstance(name, str):
        for alias in backend_aliases().get(normalize(name), ()):
            if arch is not None:
                picks = [(alias.target(arch), ())]
            else:
                picks = alias.targets()
            for target, archs in picks:
                ours = offered.get(normalize(target))
                if ours is None or any(ours == o for o, _ in out):
                    continue
                where = f" (on {'/'.join(archs)})" if archs and len(picks) > 1 else ""
                out.append((ours, f"{alias.why}{where}"))
    for c in ranked(name, choices, families=families, limit=limit):
        if all(c != o for o, _ in out):
            out.append((c, ""))
    return out[:limit]


def suggest_backend(name: object, choices: Iterable[str], families: Iterable[str] = (),
                    arch: str | None = None) -> str | None:
    """The best ``--moe-backend`` name for an unknown one (what ``UnknownBackend`` carries)."""
    found = backend_suggestions(name, choices, families=families, arch=arch, limit=1)
    return found[0][0] if found else None
