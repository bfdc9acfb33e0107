"""The gates: why a matrix row can or cannot serve a request, as an ordered table.

Each gate is a small named function ``(row, inputs) -> Verdict`` that returns
:func:`ok` (optionally with a note the report keeps, such as padding) or
:func:`no`, which cannot be built without a :class:`Reason` from the closed enum and
the failing value.  :data:`GATES` is the one place their order is written: the
first failing gate is the reported reason, and :data:`GATE_ORDER` (used by the docs
to name the most specific reason) is derived from it.

Rows are read by attribute only (the matrix loader sits on a higher floor), and
nothing here is cached: the selector caches whole decisions, once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from oracle.keys import QuantKey, canonical_name
from oracle.request import SelectionRequest

__all__ = ["Reason", "GateInput", "GateVerdict", "Gate", "GATES", "GATE_ORDER", "ok", "no",
           "run_gates", "round_up"]


class Reason(str, Enum):
    """Why a candidate is rejected.  Closed: tests, JSON and docs key on these codes."""

    PLATFORM_UNSUPPORTED = "platform_unsupported"
    ARCH_UNSUPPORTED = "arch_unsupported"
    WEIGHT_MISMATCH = "weight_mismatch"
    ACTIVATION_MISMATCH = "activation_mismatch"
    LIBRARY_MISSING = "library_missing"
    LIBRARY_VERSION = "library_version"
    KNOWN_BAD = "known_bad"
    SHAPE_UNALIGNED = "shape_unaligned"
    ACTIVATION_FN_UNSUPPORTED = "activation_fn_unsupported"
    BIAS_UNSUPPORTED = "bias_unsupported"
    PARALLELISM_UNSUPPORTED = "parallelism_unsupported"
    ROUTING_UNSUPPORTED = "routing_unsupported"
    LORA_UNSUPPORTED = "lora_unsupported"
    NOT_AUTO_SELECTABLE = "not_auto_selectable"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """A gate's answer: ``reason is None`` passes (``detail`` is a note or empty);
    otherwise ``got`` is the failing value and ``detail`` says what was needed."""

    reason: Reason | None
    detail: str = ""
    got: Any = None


_PASS: Final = GateVerdict(None)


def ok(note: str = "") -> GateVerdict:
    """The row passes this gate; ``note`` (e.g. "pads hidden 2880 -> 3072") is reported."""
    return GateVerdict(None, note) if note else _PASS


def no(reason: Reason, got: Any, detail: str) -> GateVerdict:
    """The row fails this gate on value ``got``; ``detail`` names what was needed."""
    if not isinstance(reason, Reason) or not detail:
        raise TypeError("no() needs a Reason and a non-empty detail")
    return GateVerdict(reason, detail, got)


@dataclass(frozen=True, slots=True)
class GateInput:
    """The request plus what the selector resolved from it once per evaluation."""

    request: SelectionRequest
    strict: bool  # an activation was asked for (override or checkpoint)
    activation: QuantKey | None  # that activation (None = bf16); meaningful when strict
    auto: bool  # moe_backend auto: opt-in rows are passed over
    allow_bf16_fallback: bool  # strict, but a BF16 row may stand in (reported)
    #: the deployment gates of the row's experts classes (parallel config, routing,
    #: LoRA), from the newest vLLM release's records; None: not asked (no deployment)
    classes: Callable[[Any], GateVerdict] | None = None


def round_up(x: int, m: int) -> int:
    """``x`` rounded up to a multiple of ``m`` (the padding every alignment means)."""
    return -(-x // m) * m


def _platform(row: Any, g: GateInput) -> GateVerdict:
    dev = g.request.device
    if dev.platform in row.platforms:
        return _PASS
    return no(Reason.PLATFORM_UNSUPPORTED, dev.platform,
              f"runs on {'/'.join(sorted(row.platforms))}, got {dev.platform} ({dev.name})")


def _arch(row: Any, g: GateInput) -> GateVerdict:
    arch = g.request.device.name
    if arch in row.archs:
        return _PASS
    return no(Reason.ARCH_UNSUPPORTED, arch, f"needs {'/'.join(row.sorted_archs())}, got {arch}")


def _weight(row: Any, g: GateInput) -> GateVerdict:
    weight = g.request.weight
    if row.weight == weight:
        return _PASS
    return no(Reason.WEIGHT_MISMATCH, weight, f"takes {canonical_name(row.weight)} weights, "
              f"got {canonical_name(weight)}")


def _activation(row: Any, g: GateInput) -> GateVerdict:
    if not g.strict or row.activation == g.activation or row.applies(g.activation) \
            or (g.allow_bf16_fallback and row.activation is None):
        return _PASS
    return no(Reason.ACTIVATION_MISMATCH, g.activation,
              f"takes {row.activation_name} activations, requested {canonical_name(g.activation)}")


def _library(row: Any, g: GateInput) -> GateVerdict:
    env = g.request.environment
    for lib in row.libraries:
        if not env.has(lib):
            return no(Reason.LIBRARY_MISSING, lib, f"needs library {lib}, not installed")
    return _PASS


def _library_version(row: Any, g: GateInput) -> GateVerdict:
    env = g.request.environment
    for lib, minimum in row.min_versions:
        have = env.version(lib)
        if have is not None and have < minimum:
            return no(Reason.LIBRARY_VERSION, have, f"needs {lib} >= {minimum}, got {have}")
    return _PASS


def _known_bad(row: Any, g: GateInput) -> GateVerdict:
    arch = g.request.device.name
    st = row.status_on(arch)
    if st.status != "known_bad":
        return _PASS
    link = f" ({st.link})" if st.link else ""
    return no(Reason.KNOWN_BAD, arch, f"known bad on {arch}: {st.reason}{link}")


def _shape(row: Any, g: GateInput) -> GateVerdict:
    layer = g.request.layer
    if layer is None:
        return _PASS
    notes = []
    hidden_align, intermediate_align = row.alignment(g.request.device.platform)
    per_rank = layer.per_rank_intermediate
    label_i = "intermediate" if not layer.tp_size or layer.tp_size == 1 else \
        f"per-rank intermediate (tp {layer.tp_size})"
    for label, size, align in (("hidden", layer.hidden_size, hidden_align),
                               (label_i, per_rank, intermediate_align)):
        if size is None:
            continue
        if size <= 0:
            return no(Reason.SHAPE_UNALIGNED, size, f"{label} size must be a positive int, "
                      f"got {size!r}")
        if size % align:
            if not row.pads:
                return no(Reason.SHAPE_UNALIGNED, size,
                          f"{label} size must be a multiple of {align}, got {size}")
            notes.append(f"pads {label} {size} -> {round_up(size, align)}")
    return ok("; ".join(notes))


def _activation_fn(row: Any, g: GateInput) -> GateVerdict:
    layer = g.request.layer
    fn = layer.activation_fn if layer is not None else None
    if fn is None or fn in row.activation_fns:
        return _PASS
    return no(Reason.ACTIVATION_FN_UNSUPPORTED, fn, f"implements {'/'.join(row.activation_fns)}, "
              f"got {fn}")


def _bias(row: Any, g: GateInput) -> GateVerdict:
    layer = g.request.layer
    if layer is None or not layer.has_bias or row.bias:
        return _PASS
    return no(Reason.BIAS_UNSUPPORTED, True, "has no expert bias support, layer has biases")


def _parallelism(row: Any, g: GateInput) -> GateVerdict:
    layer = g.request.layer
    # the deployment's expert parallelism, else the layer's own ep_size (None: unknown)
    dep = g.request.parallel
    ep = dep.ep_size if dep.use_ep else layer.ep_size if layer is not None else None
    if ep is None:
        return _class_gate(Reason.PARALLELISM_UNSUPPORTED)(row, g)
    if ep > 1 and not row.expert_parallel:
        return no(Reason.PARALLELISM_UNSUPPORTED, ep, f"no expert parallelism, got ep_size={ep}")
    if ep <= 1 and row.ep_required:
        return no(Reason.PARALLELISM_UNSUPPORTED, ep, f"expert-parallel only, got ep_size={ep}")
    return _class_gate(Reason.PARALLELISM_UNSUPPORTED)(row, g)


def _class_gate(reason: Reason) -> Callable[[Any, GateInput], GateVerdict]:
    """The row's experts-class verdict when it fails for ``reason`` (one gate each)."""
    def check(row: Any, g: GateInput) -> GateVerdict:
        if g.classes is None:
            return _PASS
        verdict = g.classes(row)
        return verdict if verdict.reason is reason else _PASS
    return check


def _auto_selectable(row: Any, g: GateInput) -> GateVerdict:
    if not g.auto or row.auto:
        return _PASS
    return no(Reason.NOT_AUTO_SELECTABLE, "auto",
              f"opt-in only; pin it with --moe-backend {row.name.lower()}")


def _experimental(row: Any, g: GateInput) -> GateVerdict:
    arch = g.request.device.name
    return ok(f"experimental on {arch}") if row.status_on(arch).status == "experimental" else _PASS


@dataclass(frozen=True, slots=True)
class Gate:
    """One gate: its name, the reason it rejects with (None: it only adds notes)."""

    name: str
    reason: Reason | None
    check: Callable[[Any, GateInput], GateVerdict]


#: The gates in the order they run; the first ``no`` is the candidate's reason.
GATES: Final[tuple[Gate, ...]] = (
    Gate("platform", Reason.PLATFORM_UNSUPPORTED, _platform),
    Gate("arch", Reason.ARCH_UNSUPPORTED, _arch),
    Gate("weight", Reason.WEIGHT_MISMATCH, _weight),
    Gate("activation", Reason.ACTIVATION_MISMATCH, _activation),
    Gate("library", Reason.LIBRARY_MISSING, _library),
    Gate("library_version", Reason.LIBRARY_VERSION, _library_version),
    Gate("known_bad", Reason.KNOWN_BAD, _known_bad),
    Gate("shape", Reason.SHAPE_UNALIGNED, _shape),
    Gate("activation_fn", Reason.ACTIVATION_FN_UNSUPPORTED, _activation_fn),
    Gate("bias", Reason.BIAS_UNSUPPORTED, _bias),
    Gate("parallelism", Reason.PARALLELISM_UNSUPPORTED, _parallelism),
    Gate("routing", Reason.ROUTING_UNSUPPORTED, _class_gate(Reason.ROUTING_UNSUPPORTED)),
    Gate("lora", Reason.LORA_UNSUPPORTED, _class_gate(Reason.LORA_UNSUPPORTED)),
    Gate("auto_selectable", Reason.NOT_AUTO_SELECTABLE, _auto_selectable),
    Gate("experimental", None, _experimental),
)

#: Each reason once, in the order its first gate runs (the docs rank reasons by it).
GATE_ORDER: Final[tuple[Reason, ...]] = tuple(dict.fromkeys(
    g.reason for g in GATES if g.reason is not None))

# Import-time consistency: every reason has a gate, and gate names are unique.
if set(GATE_ORDER) != set(Reason) or len({g.name for g in GATES}) != len(GATES):
    raise RuntimeError("oracle.gates: GATES must name each Reason and have unique gate names")


def run_gates(row: Any, g: GateInput) -> GateVerdict:
    """The first failing gate's verdict, or a pass carrying every gate's notes."""
    notes = []
    for gate in GATES:
        verdict = gate.check(row, g)
        if verdict.reason is not None:
            return verdict
        if verdict.detail:
            notes.append(verdict.detail)
    return ok("; ".join(notes))
