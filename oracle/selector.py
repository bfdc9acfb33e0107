"""The pure selection function, for one process and for a group of ranks.

``select(request)`` and ``explain(request)`` share one evaluation (:func:`evaluate`):
the gates of :mod:`oracle.gates`, in their order, over the request's candidate list.
Its only inputs are the request and the matrix, so the decision for the bundled
matrix is cached per request -- the one cache of the oracle (an LRU on the frozen
request; :func:`cache_clear` / :func:`cache_info` expose it).  A failed decision
stores only its rejections: the "try:" line of :class:`NoEligibleBackend` needs
other evaluations, and is computed when the message is first read.

Rules (parity with vLLM after PR #41566, strict where vLLM is silent):

* activation: the checkpoint's declared scheme and the user's override; one set
  wins, both set and different is an :class:`ActivationConflict`.
* ``moe_backend`` names map to ordered variant lists (a pin); ``auto`` takes every
  row in the arch's auto order.
* no activation requested: BF16-activation variants are preferred; if none is
  eligible, the first eligible quantized-activation variant is taken and reported.
* activation requested: only variants with exactly that activation; a BF16
  fallback only with ``allow_activation_fallback=True``, and reported.
* last-resort rows (EMULATION) rank after every real kernel, fallbacks included.
* a pin never degrades to another family: nothing eligible → NoEligibleBackend.

:func:`decide_group` is the same decision for several ranks (one request each):
the first candidate in rank 0's order that every rank can run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from oracle.errors import (ActivationConflict, ConfigError, GroupDivergence, NoEligibleBackend,
                           OracleError, UnknownBackend)
from oracle.gates import GateInput, GateVerdict, Reason, no, ok, round_up, run_gates
from oracle.keys import BF16, QuantKey, canonical_name
from oracle.matrix import MATRIX, Matrix, Row
from oracle.platforms import SCOPE_DEVICES, Device
from oracle.request import Environment, SelectionRequest, normalize_backend_name
from oracle.selection import Rejection, Selection, Verdict
from oracle.vllm_rules import (check_backend_flag, checkpoint_for, classes_verdict,
                               evaluate_vllm, family_for, pick_class, pinned_lora_refusal,
                               release_for, routing_for)

__all__ = ["select", "explain", "evaluate", "decide_group", "resolve_backend_name",
           "resolve_activation", "Evaluation", "cache_clear", "cache_info"]

_CACHE_SIZE = 4096
_HINT_LIMIT = 6


def resolve_activation(request: SelectionRequest) -> tuple[bool, QuantKey | None]:
    """(strict, key): the activation the request insists on, if any.

    ``BF16`` (explicit) resolves to ``(True, None)``; nothing set to ``(False, None)``.
    """
    override, ckpt = request.activation, request.checkpoint_activation
    if override is not None and ckpt is not None and override != ckpt:
        raise ActivationConflict(canonical_name(ckpt), canonical_name(override))
    chosen = override if override is not None else ckpt
    if chosen is None:
        return False, None
    return True, (None if chosen is BF16 else chosen)  # type: ignore[return-value]


def resolve_backend_name(name: str, matrix: Matrix = MATRIX) -> tuple[str, ...] | None:
    """``--moe-backend`` value → variant names (``None`` for auto).

    Case-insensitive, '-' accepted for '_'.  Vendor names come first, then each
    variant's own member name.
    """
    if not isinstance(name, str):
        raise UnknownBackend(name, matrix.backend_names())
    key = normalize_backend_name(name)
    if key == "auto":
        return None
    if key in matrix.names:
        return matrix.names[key]
    row = matrix.by_name.get(key.upper())
    if row is not None:
        return (row.name,)
    choices = matrix.backend_names()
    from oracle.suggest import suggest_backend  # error path only: keeps `import oracle` light
    raise UnknownBackend(name, choices, suggest_backend(key, choices, matrix.names))


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What select and explain both read: candidates in order and each one's fate."""

    request: SelectionRequest
    pinned: str | None
    candidates: tuple[Row, ...]
    gates: tuple[GateVerdict, ...]
    strict: bool
    activation: QuantKey | None
    order: tuple[int, ...]  # indexes of eligible candidates, preference order
    winner: int | None
    fallback: bool
    runs_with: QuantKey | None = None  # the activation the winner applies
    padded: tuple[int, int] | None = None  # (hidden, intermediate) the winner pads the layer to
    rank_notes: tuple[str, ...] = ()  # what rank="measured" did (or why it did not apply)
    kernel_class: str | None = None  # the winner's vLLM experts class
    class_notes: tuple[str, ...] = ()  # the classes passed over before it

    def eligible_names(self) -> tuple[str, ...]:
        return tuple(self.candidates[i].name for i in self.order)


def _padded(row: Row, request: SelectionRequest) -> tuple[int, int] | None:
    layer = request.layer
    if layer is None or layer.hidden_size is None or layer.intermediate_size is None:
        return None
    h, i = row.alignment(request.device.platform)
    return round_up(request.parallel.layer_hidden(layer.hidden_size), h), \
        round_up(layer.per_rank_intermediate, i)



def _evaluate_vllm(request: SelectionRequest, matrix: Matrix, strict: bool,
                   act: QuantKey | None) -> Evaluation:
    out = evaluate_vllm(request, act if strict else None, matrix, release_for(request.policy))
    pinned = None if request.moe_backend == "auto" else request.moe_backend
    return Evaluation(request, pinned, out.candidates, out.gates, strict, act, out.order,
                      out.winner, out.fallback, out.runs_with, out.padded,
                      kernel_class=out.kernel_class, class_notes=out.class_notes)


#: The release whose experts-class records the strict policy applies to deployment axes.
_CLASS_RELEASE = "vllm-0.33"


def _strict_classes(request: SelectionRequest, auto: bool):
    """The strict policy's deployment gate: for a row vLLM builds as experts classes,
    those classes' own gates (parallel config, routing, format, LoRA); a row vLLM has no
    class for cannot promise LoRA."""
    release = release_for(_CLASS_RELEASE)
    routing = routing_for(request, release)
    cache: dict[str, GateVerdict] = {}

    def verdict(row: Row) -> GateVerdict:
        if row.name not in cache:
            cache[row.name] = _strict_class_verdict(release, row, request, not auto, routing)
        return cache[row.name]
    return verdict


def _strict_class_verdict(release, row: Row, request: SelectionRequest, pinned: bool,
                          routing: str) -> GateVerdict:
    v = release.variant.get(row.name)
    if v is None:
        if request.parallel.enable_lora:
            return no(Reason.LORA_UNSUPPORTED, True, "no vLLM experts class with LoRA support "
                      "runs this kernel")
        return ok()
    return pinned_lora_refusal(v, request, pinned) or \
        classes_verdict(release, row.name, request, pinned, routing)


def _evaluate(request: SelectionRequest, matrix: Matrix) -> Evaluation:
    if request.policy != "strict":
        release = release_for(request.policy)
        check_backend_flag(request, release)
        record = checkpoint_for(request, release)
        family = family_for(request, release)
        if family is not None and not family.reads_override:
            # That selector takes no activation key and reads no override: nothing is
            # combined, nothing can conflict (fused_moe/oracle/mxfp4.py:763).
            return _evaluate_vllm(request, matrix, False, None)
        # vLLM combines the key the checkpoint's quant method hands over (not what the
        # checkpoint file says) with the override.
        handed = request if record is None else request.with_(
            checkpoint_activation=record.activation)
        strict, act = resolve_activation(handed)
        return _evaluate_vllm(request, matrix, strict, act)
    # The backend name first, as vLLM validates --moe-backend before any layer is built.
    names = resolve_backend_name(request.moe_backend, matrix)
    strict, act = resolve_activation(request)
    auto = names is None
    candidates = matrix.auto_order(request.device.name) if auto \
        else tuple(matrix.by_name[n] for n in names)  # type: ignore[union-attr]
    inputs = GateInput(request, strict, act, auto,
                       strict and request.allow_activation_fallback and act is not None,
                       _strict_classes(request, auto))
    gates = tuple(run_gates(row, inputs) for row in candidates)
    # Preference with nothing asked: real BF16 kernels, then quantized-activation
    # ones (reported), then last-resort rows (EMULATION).  With an activation asked:
    # the kernels that apply it -- EMULATION too, it quantizes to any key -- before
    # a BF16 stand-in (reported, only with allow_activation_fallback).
    wanted = act if strict else None

    def matches(i: int) -> bool:
        row = candidates[i]
        return row.activation == wanted or (strict and row.applies(wanted))

    def preference(i: int) -> tuple[bool, bool]:
        last = candidates[i].last_resort
        return (not matches(i), last) if strict else (last, not matches(i))

    order = tuple(sorted((i for i, v in enumerate(gates) if v.reason is None), key=preference))
    rank_notes: tuple[str, ...] = ()
    if request.rank == "measured" and order:
        order, rank_notes = _measured_order(request, candidates, order, preference,
                                            lambda i: _applied(candidates[i], strict, wanted))
    winner = order[0] if order else None
    fallback = winner is not None and not matches(winner)
    runs_with = None
    padded = None
    kernel_class, class_notes = None, ()
    if winner is not None:
        row = candidates[winner]
        runs_with = _applied(row, strict, wanted)
        padded = _padded(row, request)
        kernel_class, class_notes = _strict_class_pick(request, row, auto)
    return Evaluation(request, None if auto else request.moe_backend, candidates, gates,
                      strict, act, order, winner, fallback, runs_with, padded, rank_notes,
                      kernel_class, class_notes)


def _strict_class_pick(request: SelectionRequest, row: Row,
                       auto: bool) -> tuple[str | None, tuple[str, ...]]:
    release = release_for(_CLASS_RELEASE)
    if row.name not in release.variant:
        return None, ()
    pick = pick_class(release, row.name, request, not auto, routing_for(request, release))
    return pick.chosen, pick.notes()


def _applied(row: Row, strict: bool, wanted: QuantKey | None) -> QuantKey | None:
    """The activation ``row`` would run this request with."""
    return wanted if strict and row.activation != wanted and row.applies(wanted) \
        else row.activation


def _measured_order(request: SelectionRequest, candidates: Sequence[Row], order: tuple[int, ...],
                    preference: Any, applied: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """rank="measured": inside each preference tier (never across: precision is not traded
    silently), measured candidates by time at the nearest measured M, then the unmeasured
    ones in table order.  Returns the order and the report's lines."""
    profile, tokens = request.profile, request.batch_tokens
    assert profile is not None and tokens is not None  # checked by SelectionRequest
    env = request.environment
    why_not = profile.mismatch(request.device.name,
                               {lib: env.version(lib) for lib, _ in profile.libraries})
    if why_not:
        return order, (f"measured ranking not applied: profile {profile.label} "
                       f"({profile.describe()}) does not match: {why_not}",)
    experts = request.layer.num_experts if request.layer is not None else None
    found = {i: profile.lookup(candidates[i].name, applied(i), experts, tokens) for i in order}
    ranked = tuple(sorted(order, key=lambda i: (preference(i), found[i] is None,
                                                found[i].us if found[i] else 0.0)))
    times = ", ".join(f"{candidates[i].name} {found[i].us:.1f} µs" if found[i] else
                      f"{candidates[i].name} unmeasured" for i in ranked)
    lines = [f"measured ranking ({profile.describe()}, M = {tokens}): {times}"]
    best = found[ranked[0]]
    if best is not None:
        faster = [m for m in profile.measurements
                  if m.tokens == best.tokens and m.experts == best.experts
                  and m.activation != best.activation and m.us < best.us
                  and any(c.name == m.backend for c in candidates)]
        if faster:
            m = min(faster, key=lambda m: m.us)
            row = next(c for c in candidates if c.name == m.backend)
            pin = "" if row.auto else f" --moe-backend {row.name.lower()}"
            lines.append(f"{m.backend} would be {best.us / m.us:.2f}x faster at M = {m.tokens} "
                         f"with {canonical_name(m.activation)} activations, rel. error "
                         f"{m.rel_error:.1e} vs {best.rel_error:.1e} (ask for them with "
                         f"--quantization-config.moe.activation {canonical_name(m.activation)}"
                         f"{pin})")
    return ranked, tuple(lines)


# ------------------------------------------------------------------ report building


def _activation_label(ev: Evaluation) -> str:
    return canonical_name(ev.activation) if ev.strict else "any (bf16 preferred)"


def _summary(request: SelectionRequest, ev: Evaluation, where: str | None = None) -> str:
    place = where or (f"device {request.device.name}, "
                      f"libraries {request.environment.describe()}")
    return (f"{canonical_name(request.weight)} weights, {_activation_label(ev)} activations, "
            f"moe_backend={request.moe_backend}, {place}")


def _fallback_note(ev: Evaluation, row: Row) -> str:
    wanted = canonical_name(ev.activation) if ev.strict else "bf16"
    return (f"activation fallback: no eligible {wanted}-activation variant, "
            f"using {row.activation_name} ({row.name})")


def _rejections(ev: Evaluation) -> tuple[Rejection, ...]:
    return tuple(Rejection(row.name, v.reason, v.detail)
                 for row, v in zip(ev.candidates, ev.gates) if v.reason is not None)


def _selection(ev: Evaluation, winner: Row, eligible: Sequence[str],
               rejected: Sequence[Rejection], notes: Sequence[str], fallback: bool,
               fingerprint_input: Any, matrix: Matrix, vllm: str | None = None) -> Selection:
    same = ev.winner is not None and ev.candidates[ev.winner] is winner
    runs_with = ev.runs_with if same else (
        ev.activation if ev.strict and winner.applies(ev.activation) else winner.activation)
    return Selection(
        backend=winner.name, weight=winner.weight, activation=runs_with,
        selected_by="auto" if ev.pinned is None else "pinned", eligible=tuple(eligible),
        rejected=tuple(rejected), notes=tuple(notes), activation_fallback=fallback,
        request=ev.request, matrix_version=matrix.version, fingerprint_input=fingerprint_input,
        padded=ev.padded if same else _padded(winner, ev.request), vllm=vllm,
        kernel_class=ev.kernel_class if same else None,
        kernel_class_notes=ev.class_notes if same else ())


#: The release the strict policy compares itself with in every report.
_COMPARED_POLICY = "vllm-0.33"


def _vllm_line(ours: Evaluation, matrix: Matrix) -> str | None:
    """Under strict: what vLLM 0.33 would do for the same request, when it differs."""
    request = ours.request
    if request.policy != "strict":
        return None
    mine = ours.candidates[ours.winner].name if ours.winner is not None else None
    try:
        ev = _decision(request.with_(policy=_COMPARED_POLICY), matrix).evaluation
    except OracleError as exc:
        return None if mine is None else \
            f"vLLM 0.33 would refuse this request: {exc.what} must be {exc.constraint}"
    theirs = ev.candidates[ev.winner].name if ev.winner is not None else None
    if theirs == mine:
        return None
    if theirs is None:
        return f"vLLM 0.33 finds no MXFP4 MoE backend here (strict runs {mine})"
    verdict = next((v for r, v in zip(ours.candidates, ours.gates) if r.name == theirs), None)
    why = f"; strict refuses it: {verdict.reason.value} — {verdict.detail}" \
        if verdict is not None and verdict.reason is not None else \
        "; strict does not consider it for this --moe-backend" if verdict is None else \
        "; strict prefers another eligible variant"
    return f"vLLM 0.33 would run {theirs} here{why}"


@dataclass(frozen=True, slots=True)
class _Decision:
    """A cached decision: the evaluation, its rejections and the Selection (or None)."""

    evaluation: Evaluation
    rejected: tuple[Rejection, ...]
    selection: Selection | None
    vllm: str | None = None  # strict: what vLLM 0.33 does instead, when it differs


def _decide(request: SelectionRequest, matrix: Matrix) -> _Decision:
    ev = _evaluate(request, matrix)
    rejected = _rejections(ev)
    if ev.winner is None:
        return _Decision(ev, rejected, None, _vllm_line(ev, matrix))
    row = ev.candidates[ev.winner]
    notes = [_fallback_note(ev, row)] if ev.fallback else []
    detail = ev.gates[ev.winner].detail
    if detail:
        notes.append(f"{row.name}: {detail}")
    notes += ev.rank_notes
    fingerprint = {"request": request.to_dict(), "matrix": matrix.version}
    return _Decision(ev, rejected, _selection(ev, row, ev.eligible_names(), rejected, notes,
                                              ev.fallback, fingerprint, matrix,
                                              _vllm_line(ev, matrix)))


@lru_cache(maxsize=_CACHE_SIZE)
def _decide_bundled(request: SelectionRequest) -> _Decision:
    return _decide(request, MATRIX)


def _decision(request: SelectionRequest, matrix: Matrix | None) -> _Decision:
    if not isinstance(request, SelectionRequest):
        raise ConfigError("request", "a SelectionRequest", type(request).__name__,
                          "oracle.SelectionRequest(device=oracle.Device.parse('sm90'), ...)")
    if matrix is None or matrix is MATRIX:
        return _decide_bundled(request)
    if not isinstance(matrix, Matrix):
        raise ConfigError("matrix", "an oracle.matrix.Matrix or None", type(matrix).__name__,
                          "leave matrix out to use the bundled table")
    return _decide(request, matrix)


def cache_clear() -> None:
    """Forget every cached decision (benchmarks measure the uncached path with it)."""
    _decide_bundled.cache_clear()


def cache_info() -> Any:
    """Hits, misses and size of the decision cache (``functools`` ``CacheInfo``)."""
    return _decide_bundled.cache_info()


def evaluate(request: SelectionRequest, matrix: Matrix | None = None) -> Evaluation:
    """The shared evaluation behind select and explain (cached for the bundled matrix)."""
    return _decision(request, matrix).evaluation


# ------------------------------------------------------------------ the "try:" hint


@dataclass(frozen=True, slots=True)
class _Hint:
    """Eligible alternatives for a failed request, else the archs where it would work.

    Called only when a NoEligibleBackend's message or fields are read.
    """

    request: SelectionRequest
    matrix: Matrix | None

    def __call__(self) -> tuple[list[str], list[str]]:
        req = self.request
        pinned = req.moe_backend != "auto"
        auto = self._evaluate(req.with_(moe_backend="auto") if pinned else req)
        alternatives = [] if auto is None or not pinned else \
            [auto.candidates[i].name.lower() for i in auto.order]
        if not alternatives and auto is not None:  # opt-in variants that would run if pinned
            alternatives = [r.name.lower() for r, v in zip(auto.candidates, auto.gates)
                            if v.reason is Reason.NOT_AUTO_SELECTABLE]
        archs: list[str] = []
        if not alternatives:
            here = req.device.name
            archs = [dev.name for dev in SCOPE_DEVICES if dev.name != here and getattr(
                self._evaluate(req.with_(device=dev)), "winner", None) is not None]
        return alternatives[:_HINT_LIMIT], archs

    def _evaluate(self, req: SelectionRequest) -> Evaluation | None:
        """The evaluation, or None where that setup is refused outright (a ConfigError:
        e.g. EPLB the quant method refuses once its kernel is chosen)."""
        try:
            return evaluate(req, self.matrix)
        except OracleError:
            return None


def select(request: SelectionRequest, matrix: Matrix | None = None) -> Selection:
    """Choose the MXFP4 MoE backend for ``request`` or raise an :class:`OracleError`."""
    decision = _decision(request, matrix)
    if decision.selection is not None:
        return decision.selection
    ev = decision.evaluation
    raise NoEligibleBackend(_summary(request, ev), decision.rejected, pinned=ev.pinned,
                            hint=_Hint(request, matrix), vllm=decision.vllm)


def explain(request: SelectionRequest, matrix: Matrix | None = None) -> list[Verdict]:
    """Every candidate with its verdict, reason and detail, in candidate order.

    Same gates as :func:`select`; never raises for "nothing eligible" (all rejected),
    but does raise for malformed requests (unknown backend, activation conflict).
    """
    ev = _decision(request, matrix).evaluation
    arch = request.device.name
    verdicts = []
    for i, (row, v) in enumerate(zip(ev.candidates, ev.gates)):
        verdict = "rejected" if v.reason is not None else \
            "selected" if i == ev.winner else "eligible"
        verdicts.append(Verdict(i + 1, row.name, row.activation_name, row.status_on(arch).status,
                                verdict, v.reason, v.detail))
    return verdicts


# ------------------------------------------------------------------ a group of ranks


def _plural(n: int, word: str = "rank") -> str:
    return word if n == 1 else word + "s"


def _ranks(ranks: Sequence[int]) -> str:
    return ", ".join(map(str, ranks))


def _shared_fields(req: SelectionRequest) -> SelectionRequest:
    """The request with the per-rank fields blanked (what every rank must agree on)."""
    return req.with_(device=Device("cpu", "cpu"), environment=Environment.none())


def _check_shared(requests: Sequence[SelectionRequest]) -> None:
    shared = _shared_fields(requests[0])
    for r, req in enumerate(requests[1:], start=1):
        if _shared_fields(req) != shared:
            a, b = shared.to_dict(), _shared_fields(req).to_dict()
            field = (sorted(k for k in a if a[k] != b[k]) or ["request"])[0]
            raise GroupDivergence(f"request field {field!r}",
                                  f"rank 0: {a.get(field)!r}, rank {r}: {b.get(field)!r}")


_Place = tuple[Device, Environment]


def _common_order(base: SelectionRequest, places: Sequence[_Place]) -> list[str]:
    """Candidates eligible on every place, in the first place's preference order."""
    evs = [evaluate(base.with_(device=d, environment=e)) for d, e in places]
    everywhere = set.intersection(*(set(ev.eligible_names()) for ev in evs))
    return [name for name in evs[0].eligible_names() if name in everywhere]


@dataclass(frozen=True, slots=True)
class _GroupHint:
    base: SelectionRequest
    places: tuple[_Place, ...]  # per rank

    def __call__(self) -> tuple[list[str], list[str]]:
        alternatives: list[str] = []
        if self.base.moe_backend != "auto":
            alternatives = [n.lower() for n in _common_order(
                self.base.with_(moe_backend="auto"), self.places)]
        archs: list[str] = []
        if not alternatives:
            envs = list(dict.fromkeys(env for _, env in self.places))
            for dev in SCOPE_DEVICES:
                if _common_order(self.base, [(dev, e) for e in envs]):
                    archs.append(dev.name)
        return alternatives[:_HINT_LIMIT], archs


def decide_group(requests: Sequence[SelectionRequest]) -> Selection:
    """One decision for ranks that each bring their own device and libraries.

    Every rank must agree on everything else (GroupDivergence otherwise).  The
    winner is the first candidate in rank 0's preference order that is eligible on
    every rank; a candidate any rank rejects is reported with, per rank, why.
    Deterministic in ``requests``, so every rank computes the same answer.
    """
    _check_shared(requests)
    n, base = len(requests), requests[0]
    places = [(req.device, req.environment) for req in requests]
    distinct = list(dict.fromkeys(places))
    evs = {place: evaluate(base.with_(device=place[0], environment=place[1]))
           for place in distinct}
    ev0 = evs[places[0]]
    ranks_of: dict[_Place, list[int]] = {}
    for r, place in enumerate(places):
        ranks_of.setdefault(place, []).append(r)
    verdicts = {place: {row.name: v for row, v in zip(ev.candidates, ev.gates)}
                for place, ev in evs.items()}

    rejected = []
    for row in ev0.candidates:
        fails = sorted((r, verdicts[place][row.name]) for place in distinct
                       if verdicts[place][row.name].reason is not None for r in ranks_of[place])
        if fails:
            detail = "; ".join(f"rank {r} ({requests[r].device.name}): {v.reason.value} — "
                               f"{v.detail}" for r, v in fails)  # type: ignore[union-attr]
            rejected.append(Rejection(row.name, fails[0][1].reason, detail))  # type: ignore[arg-type]
    refused = {rj.backend for rj in rejected}
    common = [name for name in ev0.eligible_names() if name not in refused]

    devices = ", ".join(req.device.name for req in requests)
    if not common:
        summary = _summary(base, ev0, f"on all {n} {_plural(n)} ({devices})")
        raise NoEligibleBackend(summary, rejected, pinned=ev0.pinned,
                                hint=_GroupHint(base, tuple(places)))

    winner = MATRIX.by_name[common[0]]
    wanted = ev0.activation if ev0.strict else None
    fallback = winner.activation != wanted
    notes = [_fallback_note(ev0, winner)] if fallback else []
    details: dict[str, list[int]] = {}
    for place in distinct:
        detail = verdicts[place][winner.name].detail
        if detail:
            details.setdefault(detail, []).extend(ranks_of[place])
    for detail, ranks in details.items():
        where = "" if len(ranks) == n else f" on {_plural(len(ranks))} {_ranks(sorted(ranks))}"
        notes.append(f"{winner.name}{where}: {detail}")
    notes.append(f"agreed across {n} {_plural(n)} ({devices}): {winner.name} is the first "
                 "candidate in rank 0's preference order that is eligible on every rank")
    for place in distinct:
        ev = evs[place]
        local = ev.candidates[ev.winner].name if ev.winner is not None else None
        if local != winner.name:
            ranks = ranks_of[place]
            notes.append(f"{_plural(len(ranks))} {_ranks(ranks)} ({place[0].name}) alone would "
                         f"pick {local or 'nothing'}")
    fingerprint = {"ranks": [r.to_dict() for r in requests], "matrix": MATRIX.version}
    return _selection(ev0, winner, common, rejected, notes, fallback, fingerprint, MATRIX)
