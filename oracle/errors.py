"""The error family of mxfp4-oracle.

Every failure a caller can provoke is one of these classes, all subclasses of
``ValueError`` so that loaders that already catch ``ValueError`` keep working.
Each error carries structured fields (what failed, the value, what would work)
and a message of the form::

    <what> must be <constraint> (got <value>); try: <fix>

Tests assert on the class and the structured fields, never on the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from oracle.selection import Rejection

__all__ = [
    "OracleError",
    "ConfigError",
    "UnknownQuantKey",
    "UnknownBackend",
    "ActivationConflict",
    "NoEligibleBackend",
    "MatrixError",
    "KernelInputError",
]


def _fmt(what: str, constraint: str, got: Any, fix: str | None) -> str:
    msg = f"{what} must be {constraint} (got {got!s})"
    if fix:
        msg += f"; try: {fix}"
    return msg


class OracleError(ValueError):
    """Base class: ``what`` must be ``constraint`` (got ``got``); try: ``fix``."""

    def __init__(self, what: str, constraint: str, got: Any, fix: str | None = None,
                 message: str | None = None) -> None:
        self.what = what
        self.constraint = constraint
        self.got = got
        self.fix = fix
        super().__init__(message if message is not None else _fmt(what, constraint, got, fix))

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
        super().__init__(path, "a known quant key name", repr(name), fix, choices)


class UnknownBackend(OracleError):
    """``--moe-backend`` names no backend family or variant."""

    def __init__(self, name: Any, choices: Sequence[str], suggestion: str | None = None) -> None:
        self.name = name
        self.choices = tuple(choices)
        self.suggestion = suggestion
        fix = (f"'{suggestion}' (valid: " if suggestion else "one of (") + ", ".join(choices) + ")"
        super().__init__("moe_backend", "a known MoE backend name", repr(name), fix)


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
    """No candidate survives the gates; names every rejected candidate and why."""

    def __init__(self, request_summary: str, rejected: Sequence[Rejection],
                 alternatives: Sequence[str] = (), working_archs: Sequence[str] = (),
                 pinned: str | None = None) -> None:
        self.request_summary = request_summary
        self.rejected = list(rejected)
        self.alternatives = tuple(alternatives)
        self.working_archs = tuple(working_archs)
        self.pinned = pinned
        if alternatives:
            fix = "--moe-backend " + " | ".join(alternatives)
        elif working_archs:
            fix = "a device in " + ", ".join(working_archs)
        else:
            fix = "another weight/activation combination (see `mxfp4-oracle matrix`)"
        what = f"moe_backend {pinned!r}" if pinned else "the MoE backend"
        head = _fmt(what, "eligible for this request", request_summary, None)
        lines = [head + "; every candidate was rejected:"]
        lines += [f"  {r.backend}: {r.reason.value} — {r.detail}" for r in self.rejected]
        lines.append(f"try: {fix}")
        super().__init__(what, "eligible for this request", request_summary, fix,
                         message="\n".join(lines))

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "rejected": [r.to_dict() for r in self.rejected],
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
