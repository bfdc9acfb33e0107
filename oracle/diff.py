"""What changes between two setups: ``diff(a, b)`` compares two selection requests.

The question it answers is the one asked before an upgrade or a move: "if I change
the device / the libraries / the policy / the backend flag, does a different kernel
run, and which candidates change their fate?"  Both sides go through the very same
:func:`oracle.select` and :func:`oracle.explain` (so through the selector's one
cache); nothing here decides anything on its own, so a diff can never disagree with
what ``select`` says for either side.

A side that cannot select (nothing eligible, an unknown backend name, an activation
conflict, a malformed field) is an *outcome* of that side, not a failure of the
diff: "this upgrade makes my pin fail" is exactly what a diff has to be able to say.
So no :class:`~oracle.errors.OracleError` of one side escapes; the other side still
reports.  Only arguments that are not requests at all are refused (ConfigError).

Pure like the selector: values in, a frozen value out; no environment variables, no
probing, no torch, and no cache of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from oracle.errors import ConfigError, NoEligibleBackend, OracleError
from oracle.gates import Reason
from oracle.keys import canonical_name
from oracle.request import SelectionRequest
from oracle.selection import Verdict
from oracle.selector import explain, select

__all__ = ["ABSENT", "CandidateChange", "CandidateState", "Outcome", "SetupDiff", "diff"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One side's answer: the winning backend, or the error that side raised.

    Errors are kept as values (class name, reason codes, message) rather than the
    exception object: a diff compares and serialises outcomes, and exceptions neither
    compare by value nor survive JSON.  ``reasons`` are the distinct gate reasons of a
    :class:`NoEligibleBackend` (in gate order, so equal rejections give equal tuples);
    other errors carry no gate reason, and ``field`` names what they refused instead
    (``moe_backend``, ``quantization_config.moe.activation``, a config path).
    ``fix`` is the error's "try:" advice.  ``candidate_count`` is how many candidates
    the side's gates evaluated: 0 for a request refused before any gate ran (unknown
    backend, activation conflict), which is why its candidates are all "absent".
    """

    backend: str | None
    activation: str | None = None
    activation_fallback: bool = False
    error: str | None = None
    reasons: tuple[str, ...] = ()
    field: str | None = None
    message: str = ""
    fix: str | None = None
    candidate_count: int = 0

    @property
    def ok(self) -> bool:
        return self.backend is not None

    @property
    def key(self) -> tuple[str, str]:
        """What "the winner changed" compares: the backend that runs, or -- when none
        runs -- the kind of failure.  Reasons and messages are left out on purpose: a
        NoEligibleBackend on both sides is "still nothing runs", whatever the rejection
        mix; the candidate changes show how the rejections moved."""
        return ("ok", self.backend) if self.backend is not None else ("error", self.error or "")

    @property
    def label(self) -> str:
        """``FLASHINFER_TRTLLM_MXFP4_BF16``, or ``NoEligibleBackend (arch_unsupported)``."""
        if self.backend is not None:
            return self.backend + (" (activation fallback)" if self.activation_fallback else "")
        codes = self.reasons or ((self.field,) if self.field else ())
        return f"{self.error} ({', '.join(codes)})" if codes else str(self.error)

    def to_dict(self) -> dict[str, Any]:
        if self.backend is not None:
            return {"backend": self.backend, "activation": self.activation,
                    "activation_fallback": self.activation_fallback, "error": None,
                    "candidate_count": self.candidate_count}
        return {"backend": None, "error": self.error, "reasons": list(self.reasons),
                "field": self.field, "message": self.message, "fix": self.fix,
                "candidate_count": self.candidate_count}


@dataclass(frozen=True, slots=True)
class CandidateState:
    """One candidate on one side: its verdict (``selected`` | ``eligible`` | ``rejected``,
    or ``absent`` when that side did not have it as a candidate), reason and detail."""

    verdict: str
    reason: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "detail": self.detail}


#: A candidate that one side does not evaluate: another policy's or pin's candidate
#: list, or a side whose request failed before the gates ran (unknown backend name,
#: activation conflict).
ABSENT: Final = CandidateState("absent")


@dataclass(frozen=True, slots=True)
class CandidateChange:
    """A candidate whose verdict or reason differs between the two sides."""

    backend: str
    before: CandidateState
    after: CandidateState

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "before": self.before.to_dict(),
                "after": self.after.to_dict()}


@dataclass(frozen=True, slots=True)
class SetupDiff:
    """What changes from setup ``before`` (A) to setup ``after`` (B).

    ``changed_inputs`` maps each request field that differs (the keys of
    :meth:`SelectionRequest.to_dict`; layer fields as ``layer.hidden_size``) to
    ``(before, after)``.  ``winner_before`` / ``winner_after`` are each side's
    :class:`Outcome`; ``candidate_changes`` lists every candidate whose verdict or
    reason changed (a changed detail alone, such as the device named in "needs sm100,
    got sm90", is not a change of fate), in A's candidate order, then the candidates
    only B has.  Not hashable (``changed_inputs`` is a dict); compare with ``==``.
    """

    request_before: SelectionRequest
    request_after: SelectionRequest
    changed_inputs: dict[str, tuple[Any, Any]]
    winner_before: Outcome
    winner_after: Outcome
    candidate_changes: tuple[CandidateChange, ...]

    @property
    def winner_changed(self) -> bool:
        """A different backend runs, or one side runs one and the other fails, or the
        two sides fail differently (see :attr:`Outcome.key`)."""
        return self.winner_before.key != self.winner_after.key

    @property
    def changed(self) -> bool:
        """Anything at all differs: an input, the winner, or a candidate's fate."""
        return bool(self.changed_inputs or self.winner_changed or self.candidate_changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "winner_changed": self.winner_changed,
            "winner": {"before": self.winner_before.to_dict(),
                       "after": self.winner_after.to_dict()},
            "changed_inputs": {name: {"before": old, "after": new}
                               for name, (old, new) in self.changed_inputs.items()},
            "candidates": [c.to_dict() for c in self.candidate_changes],
            "requests": {"before": self.request_before.to_dict(),
                         "after": self.request_after.to_dict()},
        }

    def describe(self, width: int = 100) -> str:
        """A human report: the winner line, then tables of the changed inputs and of the
        candidates whose fate changed (a reason code in a cell means "rejected"), then
        each failing side's error and the candidates' details, wrapped to ``width``."""
        from tabulate import tabulate  # only the human report needs it

        before, after = self.winner_before, self.winner_after
        head = (f"winner changed: {before.label} -> {after.label}" if self.winner_changed
                else f"winner unchanged: {after.label}")
        lines = _wrap(head, width)
        if self.changed_inputs:
            rows = [[name, _cell(old), _cell(new)]
                    for name, (old, new) in self.changed_inputs.items()]
            lines += ["", "inputs (A -> B):",
                      *_indent(tabulate(rows, headers=["field", "A", "B"], tablefmt="simple"))]
        else:
            lines += ["", "inputs: identical"]
        for side, outcome in (("A", before), ("B", after)):
            if not outcome.ok:
                text = (f"{side}: {outcome.label}: every candidate was rejected; "
                        f"try: {outcome.fix}" if outcome.reasons
                        else f"{side}: {outcome.error}: {outcome.message}")
                lines += ["", *_wrap(text, width)]
        changes = self.candidate_changes
        unevaluated = [side for side, outcome in (("A", before), ("B", after))
                       if not outcome.ok and not outcome.candidate_count]
        if unevaluated:
            lines += ["", (f"candidates: not compared ({' and '.join(unevaluated)} failed "
                           "before any candidate was evaluated; --json lists them as absent)")]
        elif changes:
            rows = [[c.backend, _state(c.before), _state(c.after)] for c in changes]
            lines += ["", (f"candidates whose verdict changed ({len(changes)}; a reason "
                           "means rejected):"),
                      *_indent(tabulate(rows, headers=["backend", "A", "B"], tablefmt="simple"))]
            details = [(c.backend, "; ".join(f"{side}: {state.detail}" for side, state in
                                             (("A", c.before), ("B", c.after))
                                             if state.reason is not None and state.detail))
                       for c in changes]
            details = [(name, text) for name, text in details if text]
            if details:
                lines.append("details:")
                for name, text in details:
                    lines += _wrap(f"{name}: {text}", width, "  ", "      ")
        else:
            lines += ["", "candidates: no verdict changed"]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"
    return str(value)


def _state(state: CandidateState) -> str:
    return state.reason if state.reason else state.verdict


def _indent(table: str) -> list[str]:
    return ["  " + line.rstrip() for line in table.splitlines()]


def _wrap(text: str, width: int, indent: str = "", subsequent: str = "  ") -> list[str]:
    import textwrap
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=subsequent,
                         break_on_hyphens=False, break_long_words=False) or [indent]


# ------------------------------------------------------------------ the two sides


def _reason_codes(exc: NoEligibleBackend) -> tuple[str, ...]:
    """The distinct rejection reasons, in the closed enum's (gate) order."""
    seen = {r.reason for r in exc.rejected}
    return tuple(reason.value for reason in Reason if reason in seen)


def _failed(exc: OracleError, candidate_count: int = 0) -> Outcome:
    """A side's error as a value.  The message is read here, once: for a
    NoEligibleBackend that runs its "try:" hint (more evaluations, all cached)."""
    name = type(exc).__name__
    if isinstance(exc, NoEligibleBackend):
        return Outcome(None, error=name, reasons=_reason_codes(exc), message=exc.message,
                       fix=exc.fix, candidate_count=candidate_count)
    return Outcome(None, error=name, field=getattr(exc, "what", None), message=exc.message,
                   fix=getattr(exc, "fix", None), candidate_count=candidate_count)


def _side(request: SelectionRequest) -> tuple[Outcome, dict[str, CandidateState]]:
    """(outcome, candidates by backend name) for one request; never raises an OracleError.

    explain() runs first: it raises only for a request that cannot be evaluated at all
    (unknown backend, activation conflict), and then that side has no candidates.
    """
    try:
        verdicts: Sequence[Verdict] = explain(request)
    except OracleError as exc:
        return _failed(exc), {}
    candidates: dict[str, CandidateState] = {}
    for v in verdicts:  # first occurrence wins (names are unique per candidate list)
        candidates.setdefault(v.backend, CandidateState(
            v.verdict, v.reason.value if v.reason is not None else None, v.detail))
    try:
        sel = select(request)
    except OracleError as exc:
        return _failed(exc, len(verdicts)), candidates
    return Outcome(sel.backend, canonical_name(sel.activation), sel.activation_fallback,
                   candidate_count=len(verdicts)), candidates


def _changed_inputs(a: SelectionRequest, b: SelectionRequest) -> dict[str, tuple[Any, Any]]:
    """Fields of ``to_dict()`` that differ; a layer present on both sides is compared
    field by field (``layer.hidden_size``), so the report names the one size that moved."""
    da, db = a.to_dict(), b.to_dict()
    changed: dict[str, tuple[Any, Any]] = {}
    for name in dict.fromkeys([*da, *db]):
        old, new = da.get(name), db.get(name)
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            for sub in dict.fromkeys([*old, *new]):
                if old.get(sub) != new.get(sub):
                    changed[f"{name}.{sub}"] = (old.get(sub), new.get(sub))
        else:
            changed[name] = (old, new)
    return changed


def _candidate_changes(before: dict[str, CandidateState],
                       after: dict[str, CandidateState]) -> tuple[CandidateChange, ...]:
    """Join on backend name; a name on one side only is ``absent`` on the other."""
    changes = []
    for name in dict.fromkeys([*before, *after]):
        old, new = before.get(name, ABSENT), after.get(name, ABSENT)
        if (old.verdict, old.reason) != (new.verdict, new.reason):
            changes.append(CandidateChange(name, old, new))
    return tuple(changes)


def diff(a: SelectionRequest, b: SelectionRequest) -> SetupDiff:
    """What changes from setup ``a`` to setup ``b``: inputs, winner, candidates' fates.

    Each side is ``select`` + ``explain`` of its request; an OracleError of a side is
    recorded as that side's :class:`Outcome` (error class, reason codes, message).
    """
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, SelectionRequest):
            raise ConfigError(f"diff({name})", "a SelectionRequest", type(value).__name__,
                              "oracle.SelectionRequest(device=oracle.Device.parse('sm90'), ...)")
    winner_a, cands_a = _side(a)
    winner_b, cands_b = _side(b)
    return SetupDiff(a, b, _changed_inputs(a, b), winner_a, winner_b,
                     _candidate_changes(cands_a, cands_b))
