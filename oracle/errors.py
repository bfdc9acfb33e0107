"""The error family of mxfp4-oracle.

Every failure a caller can provoke is one of these classes, all subclasses of
``ValueError`` so that loaders that already catch ``ValueError`` keep working.
Each error carries structured fields (what failed, the value, what would work)
and a message of the form::

    <what> must be <constraint> (got <value>); try: <fix>

Tests assert on the class and the structured fields, never on the text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "escape",
    "shown",
    "OracleError",
    "ConfigError",
    "UnknownQuantKey",
    "UnknownBackend",
    "ActivationConflict",
    "NoEligibleBackend",
    "MatrixError",
    "KernelInputError",
    "GroupError",
    "GroupDivergence",
]


def shown(value: object, limit: int | None = None) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters if given.  Never raises:
    the repr of an int past Python's int-string limit (a 5000-digit number) raises
    ValueError, which must not replace the error being reported."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - any repr failure must not replace the real error
        text = f"<unprintable {type(value).__name__}>"
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def escape(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with every non-printable character escaped as repr does (``\\x1b``).

    User values reach messages that are printed to terminals and logs: an escape
    sequence in a model path must be shown, never executed.  Printable Unicode
    (``—``, ``≥``) stays as it is.
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() or (keep_newlines and c == "\n") else repr(c)[1:-1]
                   for c in s)


def _fmt(what: str, constraint: str, got: Any, fix: str | None) -> str:
    msg = f"{escape(what)} must be {constraint} (got {escape(got)})"
    if fix:
        msg += f"; try: {escape(fix)}"
    return msg


class OracleError(ValueError):
    """Base class: ``what`` must be ``constraint`` (got ``got``); try: ``fix``."""

    def __init__(self, what: str, constraint: str, got: Any, fix: str | None = None,
                 message: str | None = None) -> None:
        self.what = what
        self.constraint = constraint
        self.got = got
        self.fix = fix
        super().__init__(escape(message, keep_newlines=True) if message is not None
                         else _fmt(what, constraint, got, fix))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, "rejected": []}


class ConfigError(OracleError):
    """A quantization config, CLI flag or model config.json is malformed.

    ``path`` names the field (``moe.activation``, ``config.json:hidden_size``).
    """

    def __init__(self, path: str, constraint: str, got: Any, fix: str | None = None,
                 choices: Sequence[str] = ()) -> None:
        self.path = path
        self.choices = tuple(choices)
        super().__init__(path, constraint, got, fix)


class UnknownQuantKey(ConfigError):
    """A quant-key name that is not in QUANT_KEY_NAMES (case-sensitive, like vLLM)."""

    def __init__(self, name: Any, choices: Sequence[str], suggestion: str | None = None,
                 path: str = "quant key") -> None:
        self.name = name
        self.suggestion = suggestion
        fix = f"'{suggestion}'" if suggestion else "one of " + ", ".join(choices)
        super().__init__(path, "a known quant key name", shown(name), fix, choices)


class UnknownBackend(OracleError):
    """``--moe-backend`` names no backend family or variant."""

    def __init__(self, name: Any, choices: Sequence[str], suggestion: str | None = None) -> None:
        self.name = name
        self.choices = tuple(choices)
        self.suggestion = suggestion
        fix = (f"'{suggestion}' (valid: " if suggestion else "one of (") + ", ".join(choices) + ")"
        super().__init__("moe_backend", "a known MoE backend name", shown(name), fix)


class ActivationConflict(OracleError):
    """The checkpoint declares one activation scheme and the user asked for another."""

    def __init__(self, checkpoint: str, override: str) -> None:
        self.checkpoint = checkpoint
        self.override = override
        super().__init__(
            "quantization_config.moe.activation",
            f"the checkpoint's activation scheme {checkpoint!r} or unset",
            repr(override),
            f"drop the override, or set --quantization-config.moe.activation {checkpoint}",
        )


class NoEligibleBackend(OracleError):
    """No candidate survives the gates; names every rejected candidate and why.

    ``rejected`` holds the selector's Rejection values (backend, reason, detail).
    The "try:" line needs other evaluations (the same request with ``auto``, or on
    other archs), which a loader that catches the error never reads: pass them as
    ``alternatives`` / ``working_archs``, or as ``hint``, a callable returning
    ``(alternatives, working_archs)`` that runs only when the message or those
    fields are first read.
    """

    def __init__(self, request_summary: str, rejected: Sequence[Any],
                 alternatives: Sequence[str] = (), working_archs: Sequence[str] = (),
                 pinned: str | None = None,
                 hint: Callable[[], tuple[Sequence[str], Sequence[str]]] | None = None,
                 vllm: str | None = None) -> None:
        self.request_summary = request_summary
        self.rejected = list(rejected)
        self.pinned = pinned
        #: Under the strict policy, what vLLM 0.33 would do instead (None: it fails too).
        self.vllm = vllm
        self._hint = hint
        self._alternatives = tuple(alternatives)
        self._working_archs = tuple(working_archs)
        what = f"moe_backend {pinned!r}" if pinned else "the MoE backend"
        # ValueError's args hold the summary; the full message is built on demand.
        ValueError.__init__(self, request_summary)
        self.what, self.constraint, self.got = what, "eligible for this request", request_summary

    def _resolve_hint(self) -> None:
        if self._hint is not None:
            hint, self._hint = self._hint, None
            alternatives, archs = hint()
            self._alternatives, self._working_archs = tuple(alternatives), tuple(archs)

    @property
    def alternatives(self) -> tuple[str, ...]:
        self._resolve_hint()
        return self._alternatives

    @property
    def working_archs(self) -> tuple[str, ...]:
        self._resolve_hint()
        return self._working_archs

    @property
    def fix(self) -> str:  # type: ignore[override]
        if self.alternatives:
            return "--moe-backend " + " | ".join(self.alternatives)
        if self.working_archs:
            return "a device in " + ", ".join(self.working_archs)
        return "another weight/activation combination (see `mxfp4-oracle matrix`)"

    @property
    def message(self) -> str:
        head = _fmt(self.what, self.constraint, self.request_summary, None)
        lines = [head + "; every candidate was rejected:"]
        lines += [f"  {r.backend}: {r.reason.value} — {escape(r.detail)}" for r in self.rejected]
        if self.vllm:
            lines.append(f"note: {escape(self.vllm)}")
        lines.append(f"try: {escape(self.fix)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # pickles with the hint resolved
        return (NoEligibleBackend, (self.request_summary, self.rejected, self.alternatives,
                                    self.working_archs, self.pinned, None, self.vllm))

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "rejected": [r.to_dict() for r in self.rejected],
            "vllm": self.vllm,
        }


class MatrixError(OracleError):
    """The compatibility table itself is malformed; ``row`` names the offending row."""

    def __init__(self, row: str, field: str, constraint: str, got: Any, fix: str | None = None) -> None:
        self.row = row
        self.field = field
        super().__init__(f"matrix row {row!r} field {field!r}", constraint, got, fix)


class KernelInputError(OracleError):
    """A tensor handed to a kernel adapter has the wrong shape, dtype, device or layout."""

    def __init__(self, tensor: str, constraint: str, got: Any, fix: str | None = None) -> None:
        self.tensor = tensor
        super().__init__(tensor, constraint, got, fix)


class GroupError(OracleError):
    """Another rank of the group failed before the decision; names the rank and its error."""

    def __init__(self, rank: int, error: str, message: str) -> None:
        self.rank = rank
        self.error = error
        super().__init__(f"rank {rank} of the group", "able to build its selection request",
                         f"{error}: {message}", "fix the input on that rank",
                         message=f"rank {rank} of the group failed: {error}: {message}")


class GroupDivergence(OracleError):
    """Ranks computed different decisions or disagree on the shared request fields."""

    def __init__(self, what: str, got: str, fix: str = "give every rank the same model, "
                 "moe_backend and quantization config") -> None:
        super().__init__(what, "identical on every rank of the group", got, fix)
