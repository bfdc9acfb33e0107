"""Generated documentation: ``docs/support-matrix.md`` from the matrix and the selector.

Everything here is derived from :data:`oracle.matrix.MATRIX` (or a matrix passed in)
and from :func:`oracle.select` itself, so the page cannot disagree with the code that
decides.  The output is deterministic (no dates, no machine facts, no padding that
depends on a terminal-width library), so ``mxfp4-oracle docs --check`` can compare the
committed file byte for byte.

Pure: imports neither torch nor FlashInfer.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from oracle.errors import ConfigError, NoEligibleBackend, shown
from oracle.files import read_regular_file, user_path
from oracle.gates import GATE_ORDER, Reason
from oracle.diff import diff
from oracle.keys import QuantKey, canonical_name, kFp8StaticTensorSym, kMxfp4Dynamic, \
    kMxfp4Static, kMxfp8Dynamic
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX, Matrix, Row
from oracle.model import layer_from_config, load_model_config
from oracle.platforms import GPU_NAMES, Device, arch_platform
from oracle.request import Environment, LayerSpec, SelectionRequest
from oracle.selector import select

__all__ = ["render_support_matrix", "write_support_matrix", "check_support_matrix", "main_docs",
           "default_docs_path", "AUTO_REQUESTS", "DOCS_RELPATH", "DOCS_MODEL", "MAX_LINE",
           "docs_layer", "docs_request", "gpu_names_by_arch", "package_docs_path"]

#: Where the generated page lives, relative to the repository root.
DOCS_RELPATH = Path("docs") / "support-matrix.md"
#: ``[project] name`` in the checkout's pyproject.toml.
PROJECT_NAME = "mxfp4-oracle"

#: The activation requests the "What auto picks" tables answer, in display order:
#: (label, activation override).  ``None`` = no override (BF16 preferred).
AUTO_REQUESTS: tuple[tuple[str, QuantKey | None], ...] = (
    ("none", None),
    ("mxfp8", kMxfp8Dynamic),
    ("fp8", kFp8StaticTensorSym),
    ("mxfp4", kMxfp4Dynamic),
)

_MARK = {"supported": "✅", "experimental": "🧪", "known_bad": "⛔"}
_MAX_DIFF_LINES = 40


# ------------------------------------------------------------------ helpers

#: Longest line the page may have (tests/test_docs.py checks it).
MAX_LINE = 160

#: The layer the per-arch "what auto picks" tables answer for: the bundled model's.
DOCS_MODEL = "gpt-oss-20b"

#: The overview's two tables: (heading, platforms).
_OVERVIEW_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("NVIDIA GPUs (CUDA)", ("cuda",)),
    ("AMD GPUs (ROCm), Intel XPU and CPU", ("rocm", "xpu", "cpu")),
)


def _cell(text: object) -> str:
    """One Markdown table cell: no newlines, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A GitHub Markdown table, padded by code-point length (deterministic everywhere)."""
    body = [[_cell(c) for c in r] for r in rows]
    head = [_cell(h) for h in headers]
    widths = [max([len(head[i]), 3, *(len(r[i]) for r in body)]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return [line(head), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, body)]


def _para(text: str, first: str = "", rest: str = "") -> list[str]:
    """A paragraph (or list item, footnote) wrapped to :data:`MAX_LINE` columns."""
    import textwrap
    return textwrap.wrap(" ".join(text.split()), MAX_LINE, initial_indent=first,
                         subsequent_indent=rest, break_long_words=False,
                         break_on_hyphens=False) or [first.rstrip()]


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) or text.startswith("http") else text + "."


def _code(name: str) -> str:
    return f"`{name}`"


def _rows_by_weight(matrix: Matrix) -> dict[QuantKey, list[Row]]:
    """Rows grouped by weight key, each group (and the groups) in rank order."""
    groups: dict[QuantKey, list[Row]] = {}
    for row in sorted(matrix.rows, key=lambda r: r.rank):
        groups.setdefault(row.weight, []).append(row)
    return groups


def _libraries(row: Row) -> str:
    minimum = dict(row.min_versions)
    libs = [lib + (f" ≥ {minimum[lib]}" if lib in minimum else "") for lib in row.libraries]
    return " + ".join(libs) if libs else "—"


def _status(row: Row) -> str:
    return row.status if row.auto else f"{row.status}, pin only"


class _Footnotes:
    """Numbered footnotes, deduplicated by text, numbered in order of first use."""

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}

    def ref(self, text: str) -> str:
        number = self._numbers.setdefault(text, len(self._numbers) + 1)
        return f"[^{number}]"

    def lines(self) -> list[str]:
        out: list[str] = []
        for text, n in self._numbers.items():
            out += _para(text, f"[^{n}]: ", "    ")
        return out


def _arch_exception(row: Row, arch: str) -> str | None:
    """The footnote text for a per-arch exception of ``row`` on ``arch`` (known bad, or
    an explicit per-arch status with its reason), else None."""
    if arch not in row.archs:
        return None
    st = row.status_on(arch)
    explicit = any(a == arch for a, _ in row.arch_status)
    if st.status == "known_bad" or (explicit and st.reason):
        reason = st.reason or row.note or "known bad"
        text = f"{row.name} on {arch}: {st.status.replace('_', ' ')}: {reason}"
        return text + (f" ({st.link})" if st.link else "")
    return None


def _mark(row: Row, arch: str) -> str:
    return _MARK[row.status_on(arch).status] if arch in row.archs else ""


def gpu_names_by_arch() -> dict[str, list[str]]:
    """arch -> the GPU names (:data:`oracle.platforms.GPU_NAMES`) that resolve to it."""
    out: dict[str, list[str]] = {}
    for name, arch in GPU_NAMES.items():
        out.setdefault(arch, []).append(name)
    return out


def docs_layer() -> LayerSpec:
    """The MoE layer of :data:`DOCS_MODEL` (the bundled gpt-oss config)."""
    label, cfg = load_model_config(DOCS_MODEL)
    return layer_from_config(cfg, label)


# ------------------------------------------------------------------ "what auto picks"

def docs_request(weight: QuantKey, arch: str, activation: QuantKey | None,
                 moe_backend: str = "auto") -> SelectionRequest:
    """The request a per-arch "what auto picks" row answers (every library assumed
    installed, the bundled gpt-oss layer)."""
    return SelectionRequest(weight=weight, activation=activation, checkpoint_activation=None,
                            moe_backend=moe_backend, device=Device.parse(arch),
                            environment=Environment.assume_all(), layer=docs_layer())


def _auto_pick(matrix: Matrix, weight: QuantKey, arch: str, activation: QuantKey | None,
               notes: _Footnotes) -> tuple[str, str, str]:
    """(winner, runner-up, remark) exactly as :func:`oracle.select` answers; the
    selection's notes become footnotes."""
    try:
        sel = select(docs_request(weight, arch, activation), matrix)
    except NoEligibleBackend as exc:
        return "—", "—", _short_reason(exc, matrix, activation)
    runner_up = sel.eligible[1] if len(sel.eligible) > 1 else "—"
    remark = []
    if sel.activation_fallback:
        remark.append("activation fallback (reported)")
    if any(r.name == sel.backend and r.last_resort for r in matrix.rows):
        remark.append("last resort (slow reference)")
    status = matrix.by_name[sel.backend].status_on(arch).status
    if status != "supported":
        remark.append(status)
    refs = "".join(notes.ref(n) for n in sel.notes)
    if refs:
        remark.append("notes" + refs)
    return sel.backend, runner_up, ", ".join(remark) or "—"


def _short_reason(exc: NoEligibleBackend, matrix: Matrix, activation: QuantKey | None) -> str:
    """Why nothing was picked, in a few words.

    Only candidates that take the requested activation count (the others are rejected
    for the activation itself); of those, the reason of the one that got furthest
    through the gates is the useful one ("pin it", "known bad here", ...).
    """
    takes = {r.name for r in matrix.rows if r.activation == activation}
    relevant = [r for r in exc.rejected if r.backend in takes]
    if not relevant:
        return f"no variant takes {canonical_name(activation)} activations"
    furthest = max(GATE_ORDER.index(r.reason) for r in relevant)
    reason = GATE_ORDER[furthest]
    names = [r.backend.lower() for r in relevant if r.reason is reason]
    if reason is Reason.NOT_AUTO_SELECTABLE:
        return f"{reason.value}: pin " + " or ".join(_code(n) for n in names)
    if reason in (Reason.ARCH_UNSUPPORTED, Reason.PLATFORM_UNSUPPORTED):
        return reason.value  # no variant with this activation on this arch
    return f"{reason.value}: " + ", ".join(_code(n) for n in names)


def _pin_only_here(matrix: Matrix, weight: QuantKey, arch: str, rows: list[Row]) -> list[str]:
    """Pin-only variants listed on ``arch`` that a pin selects for the docs layer."""
    found = []
    for row in rows:
        if row.auto or arch not in row.archs:
            continue
        try:
            select(docs_request(weight, arch, row.activation, row.name.lower()), matrix)
        except NoEligibleBackend:
            continue
        found.append(row)
    return [f"`{r.name.lower()}`" + ("" if r.status_on(arch).status == "supported"
                                     else f" ({r.status_on(arch).status})") for r in found]


# ------------------------------------------------------------------ rendering

def _overview(matrix: Matrix, notes: _Footnotes) -> list[str]:
    rows = sorted(matrix.rows, key=lambda r: r.rank)
    out: list[str] = []
    for heading, platforms in _OVERVIEW_GROUPS:
        archs = [a for a in ARCHS_IN_SCOPE if arch_platform(a) in platforms]
        visible = [r for r in rows if any(a in r.archs for a in archs)]
        if not visible:
            continue
        out += [f"### {heading}", ""]
        body = []
        for r in visible:
            refs = "".join(notes.ref(t) for t in (_arch_exception(r, a) for a in archs) if t)
            body.append([_code(r.name), *(_mark(r, a) for a in archs), refs])
        out += _table(["variant", *archs, "notes"], body)
        out.append("")
    return out


def _arch_section(matrix: Matrix, arch: str, notes: _Footnotes, names: dict[str, list[str]],
                  multi_weight: bool) -> list[str]:
    gpus = names.get(arch)
    out = [f"### {arch}" + (f" ({', '.join(gpus)})" if gpus else ""), ""]
    for weight, rows in _rows_by_weight(matrix).items():
        if multi_weight:
            out += [f"#### `{canonical_name(weight)}` weights", ""]
        out += _table(["activation request", "auto picks", "runner-up", "remark"], [
            [label if act is None else f"`{canonical_name(act)}`",
             *_auto_pick(matrix, weight, arch, act, notes)]
            for label, act in AUTO_REQUESTS])
        out.append("")
        pins = _pin_only_here(matrix, weight, arch, rows)
        if pins:
            out += _para("Pin only, and runs this layer here: " + ", ".join(pins) + ".")
            out.append("")
        bad = [(r, _arch_exception(r, arch)) for r in rows if r.status_on(arch).status ==
               "known_bad" and arch in r.archs]
        if bad:
            out += _para("Known bad here (rejected even when pinned): " + ", ".join(
                f"`{r.name}`{notes.ref(t)}" for r, t in bad if t) + ".")
            out.append("")
    return out


def _policy_section() -> list[str]:
    """Per arch and activation request: where strict and vLLM 0.33 pick differently
    (``oracle.diff`` of the same request under both policies)."""
    rows = []
    for arch in ARCHS_IN_SCOPE:
        for label, act in AUTO_REQUESTS:
            strict = docs_request(kMxfp4Static, arch, act)
            d = diff(strict, strict.with_(policy="vllm-0.33"))
            if not d.winner_changed:
                continue
            before, after = d.winner_before, d.winner_after
            why = next((c for c in d.candidate_changes if c.backend == after.backend), None)
            reason = why.before.reason if why is not None else None
            rows.append([arch, label, before.backend or f"— ({', '.join(before.reasons)})",
                         after.backend or f"— ({', '.join(after.reasons)})",
                         f"strict: `{reason}`" if reason else
                         "absent under strict" if why is not None and why.before.verdict == "absent"
                         else "strict prefers its pick"])
    return [
        "## Where strict and vLLM 0.33 pick differently",
        "",
        *_para("The same requests as above under `--policy vllm-0.33` (what vLLM 0.33.0's own "
               "selection runs; proven case by case by tests/conformance), computed with "
               "`oracle.diff`; arch/request pairs not listed pick the same backend. Why strict "
               "differs: guide.md, \"Where strict differs from vLLM\"."),
        "",
        *_table(["arch", "activation", "strict", "vLLM 0.33", "why"], rows),
        "",
    ]


def render_support_matrix(matrix: Matrix = MATRIX) -> str:
    """The whole ``docs/support-matrix.md`` page as a string (deterministic)."""
    notes = _Footnotes()
    layer = docs_layer()
    weights = _rows_by_weight(matrix)
    out: list[str] = [
        "<!-- generated by `mxfp4-oracle docs`, do not edit; "
        "regenerate after changing matrix/mxfp4_moe.toml -->",
        "",
        "# MXFP4 MoE support matrix",
        "",
        *_para(f"Generated by `mxfp4-oracle docs` from `matrix/mxfp4_moe.toml` (matrix version "
               f"`{matrix.version}`). **Do not edit by hand**: change the matrix, then run "
               "`mxfp4-oracle docs`; `mxfp4-oracle docs --check` (and the test suite) fails "
               "while this page is stale. How selection works and how to add a row: "
               "[guide.md](guide.md).", "> ", "> "),
        "",
        "## Legend",
        "",
        *_table(["mark", "meaning"], [
            ["✅", "supported on this arch"],
            ["🧪", "experimental on this arch (selectable, reported as experimental)"],
            ["⛔", "known bad on this arch: rejected with `known_bad`, also when pinned "
                   "(the row's footnote gives the reason and a link)"],
            ["(blank)", "not available on this arch: rejected with `arch_unsupported` "
                        "(or `platform_unsupported`)"],
        ]),
        "",
        *_para("Variants are vLLM `Mxfp4MoeBackend` member names (or ours, for FlashInfer "
               "runners vLLM does not name), in auto (rank) order; every row takes "
               + ", ".join(f"`{canonical_name(w)}`" for w in weights) + " weights. "
               "The per-arch sections below say what `--moe-backend auto` picks on each arch "
               "for the bundled gpt-oss layer; the footnotes give the reasons and notes."),
        "",
        "## Overview",
        "",
        *_overview(matrix, notes),
        "## Variants",
        "",
        *_table(["variant", "activation", "libraries", "status"],
                [[_code(r.name), r.activation_name, _libraries(r), _status(r)]
                 for rows in weights.values() for r in rows]),
        "",
        *_para("**status** is the row's status (*pin only*: `--moe-backend auto` never "
               "picks it; pin it by name); an arch can override it (see the overview)."),
        "",
        "### Constraints",
        "",
        *_table(["variant", "layout", "activation fns", "bias", "EP", "align h / i",
                 "unaligned"],
                [[_code(r.name), r.layout, ", ".join(r.activation_fns),
                  "yes" if r.bias else "no",
                  "required" if r.ep_required else ("yes" if r.expert_parallel else "no"),
                  f"{r.hidden_align} / {r.intermediate_align}",
                  "zero-padded" if r.pads else "rejected"]
                 for rows in weights.values() for r in rows]),
        "",
        *_para("**layout** is the weight-layout family the kernel consumes; **activation fns** "
               "the MoE activation functions it implements (`swiglu_oai`: gpt-oss, with alpha, "
               "limit and biases); **bias** whether per-expert biases are supported; **EP** "
               "expert parallelism (*required*: EP only); **align h / i** the hidden and "
               "intermediate size alignment; **unaligned** sizes are zero-padded (and reported) "
               "or rejected with `shape_unaligned`."),
        "",
        "## `--moe-backend` names",
        "",
        *_para("A vendor name selects its variants in this order (BF16 activation first). "
               "Every variant is also accepted by its own member name (e.g. "
               f"`--moe-backend {matrix.rows[0].name.lower()}`); names are case-insensitive "
               "and `-` may stand for `_`. An explicit name is a pin: if none of its variants "
               "is eligible the oracle fails with `NoEligibleBackend`, it never substitutes "
               "another backend. `auto` (the default) considers every row in rank order."),
        "",
        *_table(["--moe-backend", "variants (in order)"],
                [[_code(name), ", ".join(members)] for name, members in matrix.names.items()]),
        "",
        "## Auto order",
        "",
        *_para("`--moe-backend auto` tries rows by rank: "
               + " → ".join(r.name for r in sorted(matrix.rows, key=lambda r: r.rank) if r.auto)
               + " (pin-only rows are skipped with `not_auto_selectable`)."),
        "",
    ]
    if matrix.adjustments:
        out += ["Per-arch adjustments (vLLM's):", ""]
        for adj in matrix.adjustments:
            where = "/".join(a for a in ARCHS_IN_SCOPE if a in adj.archs)
            where = where or "/".join(sorted(adj.archs))
            rel = f"before {adj.before}" if adj.before else f"after {adj.after}"
            out.append(f"- on {where}: {adj.move} moves {rel}")
        out.append("")

    shape = (f"hidden {layer.hidden_size}, intermediate {layer.intermediate_size}, "
             f"{layer.num_experts} experts, top-{layer.top_k}, {layer.activation_fn}"
             + (", expert biases" if layer.has_bias else ""))
    out += [
        "## What auto picks, per arch",
        "",
        *_para("Computed by calling `oracle.select` with `--moe-backend auto`, every library "
               "assumed installed (`Environment.assume_all()`, as `mxfp4-oracle select --device "
               f"ARCH` assumes for another machine) and the MoE layer of the bundled "
               f"`{DOCS_MODEL}` config ({shape}). *none* means no activation override (BF16 "
               "activations preferred; a quantized-activation variant only if no BF16 one is "
               "eligible, and reported); the others are strict overrides "
               "(`--quantization-config.moe.activation NAME`): only variants with exactly that "
               "activation. \"—\" means `NoEligibleBackend`, with the short reason; a pin "
               "named there runs this layer. GPU names in the headings are accepted by "
               "`--device`."),
        "",
    ]
    names = gpu_names_by_arch()
    for arch in ARCHS_IN_SCOPE:
        out += _arch_section(matrix, arch, notes, names, len(weights) > 1)
    if matrix == MATRIX:  # the policies read the bundled table
        out += _policy_section()

    out += ["## Sources and notes", ""]
    for row in sorted(matrix.rows, key=lambda r: r.rank):
        parts = [p for p in (row.source, row.note) if p]
        fi = [f"FlashInfer {kind} `{name}`" for kind, name in
              (("runner", row.flashinfer_runner), ("config", row.flashinfer_config)) if name]
        if fi:
            parts.append("Backed by " + ", ".join(fi) + " (checked by tests/test_flashinfer_drift.py).")
        for arch, why in row.flashinfer_divergence:
            parts.append(f"Deliberately differs from FlashInfer on {arch}: {why}")
        if row.link:
            parts.append(row.link)
        text = " ".join(map(_sentence, parts)) or "—"
        out += _para(f"**{row.name}** — {text}", "- ", "  ")
    out.append("")

    footnotes = notes.lines()
    if footnotes:
        out += ["## Footnotes", "", *footnotes, ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ------------------------------------------------------------------ files

def _is_checkout(folder: Path) -> bool:
    """``folder`` holds an mxfp4-oracle checkout: its pyproject.toml names the project."""
    project = folder / "pyproject.toml"
    if not project.is_file():
        return False
    import tomllib
    try:
        data = tomllib.loads(project.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    name = data.get("project", {}).get("name") if isinstance(data.get("project"), dict) else None
    return name == PROJECT_NAME


def default_docs_path(start: str | Path | None = None) -> Path:
    """``docs/support-matrix.md`` of the mxfp4-oracle checkout holding ``start`` (default:
    the working folder): the nearest folder whose pyproject.toml names the project
    (another project's pyproject.toml is skipped).  Outside any checkout it is a
    ConfigError -- the command never writes into a random folder."""
    here = Path(start) if start is not None else Path.cwd()
    here = here.resolve()
    for folder in (here, *here.parents):
        if _is_checkout(folder):
            return folder / DOCS_RELPATH
    raise ConfigError("docs --path", "given when not inside an mxfp4-oracle checkout",
                      shown(str(here)), "run from the checkout, or pass --path FILE")


def package_docs_path() -> Path | None:
    """The page of the checkout this package is imported from (an editable install or a
    source tree), or None for an installed wheel, which ships no docs."""
    folder = Path(__file__).resolve().parent.parent
    return folder / DOCS_RELPATH if _is_checkout(folder) else None


_MAX_DOCS_BYTES = 4 * 1024 * 1024


def _read_existing(path: Path) -> str | None:
    """The current page at ``path`` (None if absent); refuses folders, FIFOs, non-UTF-8."""
    try:
        absent = not path.exists() and not path.is_symlink()
    except OSError as exc:
        raise ConfigError(str(path), "a readable path", type(exc).__name__, "another --path") from None
    if absent:
        return None
    data = read_regular_file(path, _MAX_DOCS_BYTES, str(path))
    try:
        return data.decode("utf-8").replace("\r\n", "\n")  # CRLF checkouts compare equal
    except UnicodeDecodeError:
        raise ConfigError(str(path), "a UTF-8 text file", "undecodable bytes",
                          "point --path at the Markdown page, or delete the file") from None


def _checked_target(path: str | Path) -> Path:
    try:
        return _target_of(path)
    except OSError as exc:  # a name too long, a permission denied on a parent, ...
        raise ConfigError("docs --path", "a usable file path", f"{type(exc).__name__} "
                          f"({exc.strerror})", "a shorter path in a folder you can write") from None


def _target_of(path: str | Path) -> Path:
    target = user_path(path, "docs --path")
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError("docs --path", "a file in a folder", shown(str(target)),
                          f"{str(parent)!r} is a file, not a folder")
    if target.is_dir():
        raise ConfigError("docs --path", "a file, not a folder", shown(str(target)),
                          f"{str(target / 'support-matrix.md')!r}")
    return target


def write_support_matrix(path: str | Path, matrix: Matrix = MATRIX) -> None:
    """Write the rendered page to ``path`` (creating its folder), LF line endings."""
    p = _checked_target(path)
    _read_existing(p)  # refuses a FIFO or device before opening it for writing
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render_support_matrix(matrix), encoding="utf-8", newline="\n")
    except OSError as exc:
        raise ConfigError(str(p), "a file this user can write", f"{type(exc).__name__} "
                          f"({exc.strerror})", "another --path") from None


def check_support_matrix(path: str | Path, matrix: Matrix = MATRIX) -> list[str]:
    """``[]`` when ``path`` holds exactly what :func:`render_support_matrix` renders.

    Otherwise a short summary: one headline with counts, then at most ~40 lines of
    unified diff (committed → expected).
    """
    p = _checked_target(path)
    expected = render_support_matrix(matrix)
    actual = _read_existing(p)
    if actual is None:
        return [f"{p} is missing; generate it with `mxfp4-oracle docs` "
                f"(matrix version {matrix.version})"]
    if actual == expected:
        return []
    diff = list(difflib.unified_diff(actual.splitlines(), expected.splitlines(),
                                     fromfile=f"{p} (committed)",
                                     tofile=f"{p} (expected, matrix {matrix.version})",
                                     lineterm="", n=1))
    added = sum(1 for d in diff if d.startswith("+") and not d.startswith("+++"))
    removed = sum(1 for d in diff if d.startswith("-") and not d.startswith("---"))
    summary = [f"{p} is stale: {removed} line(s) to remove, {added} to add "
               f"(matrix version {matrix.version}); regenerate with `mxfp4-oracle docs`"]
    excerpt = diff[:_MAX_DIFF_LINES]
    summary += excerpt
    if len(diff) > len(excerpt):
        summary.append(f"... {len(diff) - len(excerpt)} more diff line(s)")
    return summary


def main_docs(check: bool, path: str | None) -> int:
    """``mxfp4-oracle docs [--check]``: 0 when written / up to date, 2 when stale or
    missing (the CLI's one scheme: 0 success, 2 any failure).

    Without ``--path`` the page is the checkout's ``docs/support-matrix.md``: the checkout
    holding the working folder, and for ``--check`` (which never writes) otherwise the
    checkout this package runs from.  Writing needs the working folder inside a checkout
    (or ``--path``), so it never lands in another folder by accident.
    """
    if path is not None:
        target = _checked_target(path)
    else:
        try:
            target = default_docs_path()
        except ConfigError:
            own = package_docs_path() if check else None
            if own is None:
                raise ConfigError(
                    "docs" + (" --check" if check else ""),
                    "run inside an mxfp4-oracle checkout (it " + (
                        "compares a checkout's docs/support-matrix.md; this installed package "
                        "ships no docs" if check else "writes the checkout's docs/support-matrix.md"
                    ) + ")", shown(str(Path.cwd())), "cd into the checkout, or pass --path FILE"
                ) from None
            target = own
    if check:
        problems = check_support_matrix(target)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 2
        print(f"{target} is up to date (matrix version {MATRIX.version})")
        return 0
    before = _read_existing(target)
    write_support_matrix(target)
    state = "unchanged" if before == render_support_matrix() else "wrote"
    print(f"{state} {target} (matrix version {MATRIX.version})")
    return 0
