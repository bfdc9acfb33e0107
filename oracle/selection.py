"""The oracle's outputs: a :class:`Selection` (winner + report) and per-candidate verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oracle.gates import Reason
from oracle.keys import QuantKey, canonical_name
from oracle.request import SelectionRequest

__all__ = ["Rejection", "Verdict", "Selection", "fingerprint_of"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one candidate cannot run this request."""

    backend: str
    reason: Reason
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"backend": self.backend, "reason": self.reason.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Verdict:
    """One candidate's line in :func:`oracle.explain`, in candidate order."""

    position: int
    backend: str
    activation: str
    status: str
    verdict: str  # "selected" | "eligible" | "rejected"
    reason: Reason | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "backend": self.backend,
                "activation": self.activation, "status": self.status, "verdict": self.verdict,
                "reason": self.reason.value if self.reason else None, "detail": self.detail}


def fingerprint_of(payload: Any) -> str:
    """16 hex digits of SHA-256 over ``payload`` as canonical JSON."""
    import hashlib  # on first use: together they cost more than a whole selection
    import json

    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Selection:
    """The winner and a report of every candidate's fate.

    ``eligible`` lists every candidate that could run, winner first, in preference
    order; ``rejected`` every one that cannot, with its reason.  ``notes`` records
    what a reader of the logs must know: an activation fallback, weight padding.
    ``fingerprint`` hashes ``fingerprint_input`` (the request -- every rank's, for a
    group -- and the matrix version), so two ranks that decided on different inputs
    show different fingerprints.  It is computed when read, not at selection: the
    hash and JSON modules cost more to import than the whole first selection.
    """

    backend: str
    weight: QuantKey
    activation: QuantKey | None
    selected_by: str  # "pinned" | "auto"
    eligible: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    notes: tuple[str, ...]
    activation_fallback: bool
    request: SelectionRequest
    matrix_version: str
    fingerprint_input: Any = field(repr=False)
    #: (hidden, intermediate) the winner pads the layer to (None without a layer).
    padded: tuple[int, int] | None = None
    #: Under the strict policy, what vLLM 0.33 would do when it differs (else None).
    vllm: str | None = None
    #: The vLLM experts class that would be built for the winner (None where the
    #: release's classes are not recorded or the row is not a vLLM variant), and why
    #: the classes before it were passed over ("TrtLlmMxfp4ExpertsMonolithic: refuses
    #: data_parallel_size > 1 -> TrtLlmMxfp4ExpertsModular").
    kernel_class: str | None = None
    kernel_class_notes: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.fingerprint_input)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "weight": canonical_name(self.weight),
            "activation": canonical_name(self.activation),
            "selected_by": self.selected_by,
            "eligible": list(self.eligible),
            "rejected": [r.to_dict() for r in self.rejected],
            "notes": list(self.notes),
            "activation_fallback": self.activation_fallback,
            "request": self.request.to_dict(),
            "matrix_version": self.matrix_version,
            "fingerprint": self.fingerprint,
            "padded": list(self.padded) if self.padded else None,
            "policy": self.request.policy,
            "vllm": self.vllm,
            "kernel_class": self.kernel_class,
            "kernel_class_notes": list(self.kernel_class_notes),
        }

    def describe(self) -> str:
        req = self.request
        lines = [
            f"MXFP4 MoE backend: {self.backend} ({self.selected_by}) on {req.device.name}"
            + ("" if req.policy == "strict" else f" under policy {req.policy}"),
            f"  weight {canonical_name(self.weight)}, activation {canonical_name(self.activation)}",
        ]
        if self.kernel_class:
            lines.append(f"  kernel class: {self.kernel_class}"
                         + (f" (deployment: {req.parallel.describe()})"
                            if not req.parallel.is_default else ""))
            lines += [f"    passed over {note}" for note in self.kernel_class_notes]
        if len(self.eligible) > 1:
            lines.append("  also eligible: " + ", ".join(self.eligible[1:]))
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.vllm:
            lines.append(f"  {self.vllm}")
        if self.rejected:
            # Rows for other platforms are one line: the reader's question is about the rest.
            elsewhere = [r.backend for r in self.rejected if r.reason is Reason.PLATFORM_UNSUPPORTED]
            lines.append(f"  rejected ({len(self.rejected)}):")
            lines += [f"    {r.backend}: {r.reason.value} — {r.detail}" for r in self.rejected
                      if r.reason is not Reason.PLATFORM_UNSUPPORTED]
            if elsewhere:
                lines.append(f"    {len(elsewhere)} variants for other platforms: "
                             f"platform_unsupported ({', '.join(elsewhere)})")
        lines.append(f"  matrix {self.matrix_version}, fingerprint {self.fingerprint}")
        return "\n".join(lines)
