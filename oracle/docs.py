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

from oracle.errors import NoEligibleBackend
from oracle.keys import QuantKey, canonical_name, constant_name, kFp8StaticTensorSym, \
    kMxfp4Dynamic, kMxfp8Dynamic
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX, Matrix, Row
from oracle.reasons import GATE_ORDER, Reason
from oracle.request import Device, Environment, SelectionRequest
from oracle.selector import select

__all__ = ["render_support_matrix", "write_support_matrix", "check_support_matrix", "main_docs",
           "default_docs_path", "AUTO_REQUESTS", "DOCS_RELPATH"]

#: Where the generated page lives, relative to the repository root.
DOCS_RELPATH = Path("docs") / "support-matrix.md"

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


def _library(row: Row) -> str:
    minimum = dict(row.min_versions)
    libs = [lib + (f" ≥ {'.'.join(map(str, minimum[lib]))}" if lib in minimum else "")
            for lib in row.libraries]
    return f"{_code(row.family)} / {' + '.join(libs) if libs else '—'}"


def _status(row: Row) -> str:
    return row.status if row.auto else f"{row.status} (pin only)"


class _Footnotes:
    """Numbered footnotes, deduplicated by text, numbered in order of first use."""

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}

    def ref(self, text: str) -> str:
        number = self._numbers.setdefault(text, len(self._numbers) + 1)
        return f"[^{number}]"

    def lines(self) -> list[str]:
        return [f"[^{n}]: {_cell(text)}" for text, n in self._numbers.items()]


def _arch_cell(row: Row, arch: str, notes: _Footnotes) -> str:
    if arch not in row.archs:
        return ""
    st = row.status_on(arch)
    mark = _MARK[st.status]
    explicit = any(a == arch for a, _ in row.arch_status)
    if st.status == "known_bad" or (explicit and st.reason):
        reason = st.reason or row.note or "known bad"
        text = f"{row.name} on {arch}: {st.status.replace('_', ' ')}: {reason}"
        if st.link:
            text += f" ({st.link})"
        return mark + notes.ref(text)
    return mark


# ------------------------------------------------------------------ "what auto picks"

def _auto_pick(matrix: Matrix, weight: QuantKey, arch: str,
               activation: QuantKey | None) -> tuple[str, str, str]:
    """(winner, runner-up, remark) exactly as :func:`oracle.select` answers."""
    request = SelectionRequest(weight=weight, activation=activation, checkpoint_activation=None,
                               moe_backend="auto", device=Device.parse(arch),
                               environment=Environment.assume_all(), layer=None)
    try:
        sel = select(request, matrix)
    except NoEligibleBackend as exc:
        return "—", "—", _short_reason(exc, matrix, activation)
    runner_up = sel.eligible[1] if len(sel.eligible) > 1 else "—"
    return sel.backend, runner_up, "; ".join(sel.notes)


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
        return f"{reason.value}: no {canonical_name(activation)}-activation variant on this arch"
    return f"{reason.value}: " + ", ".join(_code(n) for n in names)


# ------------------------------------------------------------------ rendering

def render_support_matrix(matrix: Matrix = MATRIX) -> str:
    """The whole ``docs/support-matrix.md`` page as a string (deterministic)."""
    notes = _Footnotes()
    out: list[str] = [
        "<!-- generated by `mxfp4-oracle docs`, do not edit; "
        "regenerate after changing matrix/mxfp4_moe.toml -->",
        "",
        "# MXFP4 MoE support matrix",
        "",
        f"> Generated by `mxfp4-oracle docs` from `matrix/mxfp4_moe.toml` "
        f"(matrix version `{matrix.version}`). **Do not edit by hand**: change the matrix, "
        "then run `mxfp4-oracle docs`; `mxfp4-oracle docs --check` (and the test suite) fails "
        "while this page is stale. How selection works and how to add a row: "
        "[guide.md](guide.md).",
        "",
        "## Legend",
        "",
        *_table(["mark", "meaning"], [
            ["✅", "supported on this arch"],
            ["🧪", "experimental on this arch (selectable, reported as experimental)"],
            ["⛔[^n]", "known bad on this arch: the oracle rejects it with `known_bad`; "
                       "the footnote gives the reason and a link"],
            ["(blank)", "not available on this arch: rejected with `arch_unsupported` "
                        "(or `platform_unsupported`)"],
        ]),
        "",
        "Columns: **variant** is the vLLM `Mxfp4MoeBackend` member name (or ours, for "
        "FlashInfer runners vLLM does not name); **family / library** is the "
        "`--moe-backend` vendor name the variant belongs to and the kernel libraries it "
        "needs; **activation** is the activation quant key (`bf16` = unquantized); "
        "**layout** is the weight-layout family the kernel consumes; **status** is the "
        "row's status, *pin only* when `--moe-backend auto` never picks it. Rows are in "
        "auto (rank) order.",
        "",
    ]

    for weight, rows in _rows_by_weight(matrix).items():
        out += [f"## Weights `{canonical_name(weight)}` (`{constant_name(weight)}`)", ""]
        headers = ["variant", "family / library", "activation", "layout", "status",
                   *ARCHS_IN_SCOPE]
        out += _table(headers, [
            [_code(r.name), _library(r), r.activation_name, r.layout, _status(r),
             *(_arch_cell(r, a, notes) for a in ARCHS_IN_SCOPE)]
            for r in rows])
        out += ["", f"### Constraints (`{canonical_name(weight)}` weights)", ""]
        out += _table(
            ["variant", "activation functions", "expert bias", "expert parallel",
             "hidden align", "intermediate align", "unaligned sizes"],
            [[_code(r.name), ", ".join(r.activation_fns), "yes" if r.bias else "no",
              "required" if r.ep_required else ("yes" if r.expert_parallel else "no"),
              r.hidden_align, r.intermediate_align,
              "zero-padded (reported)" if r.pads else "rejected (`shape_unaligned`)"]
             for r in rows])
        out.append("")

    out += [
        "## `--moe-backend` names",
        "",
        "A vendor name selects its variants in this order (BF16 activation first). Every "
        "variant is also accepted by its own member name (e.g. "
        f"`--moe-backend {matrix.rows[0].name.lower()}`); names are case-insensitive and "
        "`-` may stand for `_`. An explicit name is a pin: if none of its variants is "
        "eligible the oracle fails with `NoEligibleBackend`, it never substitutes another "
        "backend. `auto` (the default) considers every row in rank order.",
        "",
        *_table(["--moe-backend", "variants (in order)"],
                [[_code(name), ", ".join(members)] for name, members in matrix.names.items()]),
        "",
        "## Auto order",
        "",
        "`--moe-backend auto` tries rows by rank: "
        + " → ".join(r.name for r in sorted(matrix.rows, key=lambda r: r.rank) if r.auto)
        + " (pin-only rows are skipped with `not_auto_selectable`).",
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

    out += [
        "## What auto picks",
        "",
        "Computed by calling `oracle.select` with `--moe-backend auto`, every library "
        "assumed installed (`Environment.assume_all()`) and no layer shape. *none* means no "
        "activation override (BF16 activations preferred; a quantized-activation variant "
        "only if no BF16 one is eligible, and reported); the others are strict overrides "
        "(`--quantization-config.moe.activation NAME`): only variants with exactly that "
        "activation. \"—\" means `NoEligibleBackend`, with the short reason.",
        "",
    ]
    for weight in _rows_by_weight(matrix):
        requests = [(label, act) for label, act in AUTO_REQUESTS]
        for label, act in requests:
            act_desc = ("no override (bf16 preferred)" if act is None
                        else f"`{canonical_name(act)}` (`{constant_name(act)}`)")
            out += [f"### `{canonical_name(weight)}` weights, activation {label}: {act_desc}",
                    ""]
            out += _table(["arch", "winner", "runner-up", "remark"], [
                [arch, *_auto_pick(matrix, weight, arch, act)] for arch in ARCHS_IN_SCOPE])
            out.append("")

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
        out.append(f"- **{row.name}** — " + (_cell(" ".join(map(_sentence, parts))) or "—"))
    out.append("")

    footnotes = notes.lines()
    if footnotes:
        out += ["## Footnotes", "", *footnotes, ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ------------------------------------------------------------------ files

def default_docs_path(start: str | Path | None = None) -> Path:
    """``docs/support-matrix.md`` under the repo root (nearest folder with pyproject.toml)."""
    here = Path(start) if start is not None else Path.cwd()
    here = here.resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder / DOCS_RELPATH
    return here / DOCS_RELPATH


def write_support_matrix(path: str | Path, matrix: Matrix = MATRIX) -> None:
    """Write the rendered page to ``path`` (creating its folder), LF line endings."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_support_matrix(matrix), encoding="utf-8", newline="\n")


def check_support_matrix(path: str | Path, matrix: Matrix = MATRIX) -> list[str]:
    """``[]`` when ``path`` holds exactly what :func:`render_support_matrix` renders.

    Otherwise a short summary: one headline with counts, then at most ~40 lines of
    unified diff (committed → expected).
    """
    p = Path(path)
    expected = render_support_matrix(matrix)
    if not p.is_file():
        return [f"{p} is missing; generate it with `mxfp4-oracle docs` "
                f"(matrix version {matrix.version})"]
    actual = p.read_text(encoding="utf-8")  # universal newlines: CRLF checkouts compare equal
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
    shown = diff[:_MAX_DIFF_LINES]
    summary += shown
    if len(diff) > len(shown):
        summary.append(f"... {len(diff) - len(shown)} more diff line(s)")
    return summary


def main_docs(check: bool, path: str | None) -> int:
    """``mxfp4-oracle docs [--check]``: 0 when written / up to date, 1 when stale or missing."""
    target = Path(path) if path else default_docs_path()
    if check:
        problems = check_support_matrix(target)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
        print(f"{target} is up to date (matrix version {MATRIX.version})")
        return 0
    before = target.read_text(encoding="utf-8") if target.is_file() else None
    write_support_matrix(target)
    state = "unchanged" if before == render_support_matrix() else "wrote"
    print(f"{state} {target} (matrix version {MATRIX.version})")
    return 0
