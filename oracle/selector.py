"""The pure selection function.

``select(request)`` and ``explain(request)`` share one evaluation (:func:`evaluate`):
the same gates, in the same order, over the same candidate list.  The function is
pure: its only inputs are the request and the matrix, so its result is cached per
request (requests are frozen, hashable values) and a warm call is a dictionary hit.

Cost (docs/performance.md): ``select``, ``explain`` and ``evaluate`` keep an LRU
cache per request for the bundled matrix; a ``NoEligibleBackend`` outcome is cached
as the call that builds it, so every call still raises a new exception.  What
depends on part of a request only -- the platform/arch gates of each row on a
device, the "auto" evaluation behind a failed pin's "try:" line, the archs where a
failed request would work -- is memoized per matrix (``Matrix._memo``), so an
uncached evaluation only runs the request-specific gates.

Rules (parity with vLLM after PR #41566, strict where vLLM is silent):

* activation: the checkpoint's declared scheme and the user's override; one set
  wins, both set and different is an :class:`ActivationConflict`.
* ``moe_backend`` names map to ordered variant lists (a pin); ``auto`` takes every
  row in rank order with the arch's adjustments.
* no activation requested: BF16-activation variants are preferred; if none is
  eligible, the first eligible quantized-activation variant of the candidates is
  taken and the fallback is reported.
* activation requested: only variants with exactly that activation; a BF16
  fallback only with ``allow_activation_fallback=True``, and reported.
* a pin never degrades to another family: nothing eligible → NoEligibleBackend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache, partial
from typing import Any, TypeVar

from oracle.errors import ActivationConflict, NoEligibleBackend, UnknownBackend
from oracle.keys import BF16, QuantKey, canonical_name, suggest
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX, ArchStatus, Matrix, Row
from oracle.reasons import Reason
from oracle.request import UNSET, Device, SelectionRequest
from oracle.selection import Rejection, Selection, Verdict

__all__ = ["select", "explain", "evaluate", "resolve_backend_name", "resolve_activation",
           "Evaluation"]

_Act = QuantKey | None


def _is_set(value: object) -> bool:
    return value is not None and value is not UNSET


def resolve_activation(request: SelectionRequest) -> tuple[bool, _Act]:
    """(strict, key): the activation the request insists on, if any.

    ``BF16`` (explicit) resolves to ``(True, None)``; nothing set to ``(False, None)``.
    """
    override, ckpt = request.activation, request.checkpoint_activation
    if _is_set(override) and _is_set(ckpt) and override != ckpt:
        raise ActivationConflict(canonical_name(ckpt), canonical_name(override))  # type: ignore[arg-type]
    chosen = override if _is_set(override) else ckpt
    if not _is_set(chosen):
        return False, None
    return True, (None if chosen is BF16 else chosen)  # type: ignore[return-value]


def resolve_backend_name(name: str, matrix: Matrix = MATRIX) -> tuple[str, ...] | None:
    """``--moe-backend`` value → variant names (``None`` for auto).

    Case-insensitive, '-' accepted for '_'.  Vendor names come first, then each
    variant's own member name.
    """
    if not isinstance(name, str):
        raise UnknownBackend(name, matrix.backend_names())
    key = name.strip().lower().replace("-", "_")
    if key == "auto":
        return None
    if key in matrix.names:
        return matrix.names[key]
    row = matrix.by_name.get(key.upper())
    if row is not None:
        return (row.name,)
    choices = matrix.backend_names()
    raise UnknownBackend(name, choices, suggest(key, choices))


def _fmt_archs(row: Row) -> str:
    return "/".join(row.sorted_archs())


def _versions(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


# ------------------------------------------------------------------ per-matrix memo
#
# Derived facts that depend on part of a request only are computed once per matrix
# and kept in ``matrix._memo`` (indexes like Matrix.auto_order; the matrix is
# immutable, so nothing is ever invalidated).  Keys are (kind, value key); bounded,
# in case a caller probes endless made-up devices or requests.

_T = TypeVar("_T")
_MEMO_LIMIT = 4096
_REQUEST_FIELDS = tuple(f.name for f in fields(SelectionRequest))


def _memoized(matrix: Matrix, kind: str, key: Any, compute: Callable[[], _T]) -> _T:
    memo = matrix._memo
    try:
        return memo[(kind, key)]  # type: ignore[no-any-return]
    except KeyError:
        pass
    value = compute()
    if len(memo) >= _MEMO_LIMIT:
        for k in [k for k in memo if k[0] == kind]:
            del memo[k]
    memo[(kind, key)] = value
    return value


def _request_without(request: SelectionRequest, name: str) -> tuple[Any, ...]:
    """Every field of ``request`` but ``name``: the key of a fact independent of it."""
    return tuple(getattr(request, f) for f in _REQUEST_FIELDS if f != name)


# What depends only on (row, device) -- the platform and arch gates, their Rejection,
# and the row's status on the arch -- is computed once per device.
_Facts = tuple[tuple[Reason, str] | None, Rejection | None, ArchStatus]


def _row_facts(row: Row, dev: Device) -> _Facts:
    """(failed device gate or None, its Rejection, the row's status on this arch)."""
    arch = dev.name
    gate: tuple[Reason, str] | None = None
    if dev.platform not in row.platforms:
        gate = (Reason.PLATFORM_UNSUPPORTED,
                f"runs on {'/'.join(sorted(row.platforms))}, got {dev.platform} ({arch})")
    elif arch not in row.archs:
        gate = (Reason.ARCH_UNSUPPORTED, f"needs {_fmt_archs(row)}, got {arch}")
    rejection = Rejection(row.name, gate[0], gate[1]) if gate is not None else None
    return gate, rejection, row.status_on(arch)


class _DeviceFacts(dict):  # type: ignore[type-arg]
    """Row name -> :func:`_row_facts` on one device, each computed on first lookup."""

    __slots__ = ("by_name", "device")

    def __init__(self, by_name: Any, device: Device) -> None:
        super().__init__()
        self.by_name = by_name
        self.device = device

    def __missing__(self, name: str) -> _Facts:
        facts = self[name] = _row_facts(self.by_name[name], self.device)
        return facts


def _device_facts(matrix: Matrix, dev: Device) -> dict[str, _Facts]:
    """Row name -> :func:`_row_facts` for rows of ``matrix``, memoized per device."""
    return _memoized(matrix, "device", (dev.platform, dev.name),
                     lambda: _DeviceFacts(matrix.by_name, dev))


def _gate(row: Row, req: SelectionRequest, strict: bool, act: _Act, auto: bool,
          allow_bf16_fallback: bool, facts: _Facts | None = None) -> tuple[Reason | None, str]:
    """The first failing gate for ``row`` (or ``None`` and an informational detail).

    ``facts`` is the row's entry of :func:`_device_facts` for ``req.device``.
    """
    static, _, st = facts if facts is not None else _row_facts(row, req.device)
    if static is not None:  # platform / arch (shared tuple: _select reuses the Rejection)
        return static
    arch = req.device.name
    if row.weight != req.weight:
        return (Reason.WEIGHT_MISMATCH,
                f"takes {canonical_name(row.weight)} weights, got {canonical_name(req.weight)}")
    if strict and row.activation != act and not (allow_bf16_fallback and row.activation is None):
        return (Reason.ACTIVATION_MISMATCH,
                f"takes {row.activation_name} activations, requested {canonical_name(act)}")
    env = req.environment
    for lib in row.libraries:
        if not env.has(lib):
            return Reason.LIBRARY_MISSING, f"needs library {lib}, not installed"
    for lib, minimum in row.min_versions:
        have = env.version(lib)
        if have is not None and have < minimum:
            return (Reason.LIBRARY_VERSION,
                    f"needs {lib} >= {_versions(minimum)}, got {_versions(have)}")
    if st.status == "known_bad":
        link = f" ({st.link})" if st.link else ""
        return Reason.KNOWN_BAD, f"known bad on {arch}: {st.reason}{link}"
    info: list[str] = []
    layer = req.layer
    if layer is not None:
        for label, size, align in (("hidden", layer.hidden_size, row.hidden_align),
                                   ("intermediate", layer.intermediate_size,
                                    row.intermediate_align)):
            if size is None:
                continue
            if not isinstance(size, int) or size <= 0:
                return Reason.SHAPE_UNALIGNED, f"{label} size must be a positive int, got {size!r}"
            if size % align:
                if not row.pads:
                    return (Reason.SHAPE_UNALIGNED,
                            f"{label} size must be a multiple of {align}, got {size}")
                info.append(f"pads {label} {size} -> {_round_up(size, align)}")
        fn = layer.activation_fn
        if fn is not None and fn not in row.activation_fns:
            return (Reason.ACTIVATION_FN_UNSUPPORTED,
                    f"implements {'/'.join(row.activation_fns)}, got {fn}")
        if layer.has_bias and not row.bias:
            return Reason.ACTIVATION_FN_UNSUPPORTED, "has no expert bias support, layer has biases"
        ep = layer.ep_size
        if ep is not None and isinstance(ep, int):
            if ep > 1 and not row.expert_parallel:
                return Reason.PARALLELISM_UNSUPPORTED, f"no expert parallelism, got ep_size={ep}"
            if ep <= 1 and row.ep_required:
                return (Reason.PARALLELISM_UNSUPPORTED,
                        f"expert-parallel only, got ep_size={ep}")
    if auto and not row.auto:
        return (Reason.NOT_AUTO_SELECTABLE,
                f"opt-in only; pin it with --moe-backend {row.name.lower()}")
    if st.status == "experimental":
        info.append(f"experimental on {arch}")
    return None, "; ".join(info)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What select and explain both read: candidates in order and each one's fate."""

    request: SelectionRequest
    pinned: str | None
    candidates: tuple[Row, ...]
    gates: tuple[tuple[Reason | None, str], ...]
    strict: bool
    activation: _Act
    order: tuple[int, ...]  # indexes of eligible candidates, preference order
    winner: int | None
    fallback: bool


def _evaluate(request: SelectionRequest, matrix: Matrix) -> Evaluation:
    strict, act = resolve_activation(request)
    names = resolve_backend_name(request.moe_backend, matrix)
    auto = names is None
    if auto:
        candidates = matrix.auto_order(request.device.name)
    else:
        candidates = tuple(matrix.by_name[n] for n in names)  # type: ignore[union-attr]
    allow = strict and request.allow_activation_fallback and act is not None
    facts = _device_facts(matrix, request.device)
    gates = tuple(_gate(r, request, strict, act, auto, allow, facts[r.name]) for r in candidates)
    ok = [i for i, (reason, _) in enumerate(gates) if reason is None]
    wanted = act if strict else None  # no request: BF16 activations preferred
    # Preference: wanted activation, then the reported activation fallback, and only
    # then last-resort rows (EMULATION), so a real quantized kernel beats emulation.
    tiers: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
    for i in ok:
        row = candidates[i]
        tiers[2 * row.last_resort + (row.activation != wanted)].append(i)
    order = tuple(tiers[0] + tiers[1] + tiers[2] + tiers[3])
    winner = order[0] if order else None
    fallback = bool(winner is not None and candidates[winner].activation != wanted)
    return Evaluation(request, None if auto else request.moe_backend, candidates, gates, strict,
                      act, order, winner, fallback)


@lru_cache(maxsize=4096)
def _evaluate_cached(request: SelectionRequest) -> Evaluation:
    return _evaluate(request, MATRIX)


def evaluate(request: SelectionRequest, matrix: Matrix | None = None) -> Evaluation:
    """The shared evaluation; cached for the bundled matrix (the function is pure)."""
    if matrix is None or matrix is MATRIX:
        return _evaluate_cached(request)
    return _evaluate(request, matrix)


def _fingerprint(request: SelectionRequest, matrix: Matrix) -> str:
    import hashlib  # not at import time: only a computed selection needs them
    import json

    payload = json.dumps({"request": request.to_dict(), "matrix": matrix.version},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _summary(request: SelectionRequest, ev: Evaluation) -> str:
    act = canonical_name(ev.activation) if ev.strict else "any (bf16 preferred)"
    return (f"{canonical_name(request.weight)} weights, {act} activations, "
            f"moe_backend={request.moe_backend}, device {request.device.name}, "
            f"libraries {request.environment.describe()}")


def _working_elsewhere(request: SelectionRequest, matrix: Matrix) -> tuple[list[str], list[str]]:
    """For the "try:" line: eligible alternatives here, else archs where it would work."""
    alternatives: list[str] = []
    if request.moe_backend.strip().lower() != "auto":
        # the same request with auto: memoized under the request minus its backend, so
        # every pin of one (device, keys, ...) shares it
        ev = _memoized(matrix, "auto", _request_without(request, "moe_backend"),
                       lambda: evaluate(request.with_(moe_backend="auto"), matrix))
        alternatives = [ev.candidates[i].name.lower() for i in ev.order]
    if not alternatives:  # opt-in variants that would run if pinned
        ev = evaluate(request, matrix) if request.moe_backend.strip().lower() == "auto" else ev
        alternatives = [r.name.lower() for r, (reason, _) in zip(ev.candidates, ev.gates)
                        if reason is Reason.NOT_AUTO_SELECTABLE]
    archs: list[str] = []
    if not alternatives:
        here = request.device.name
        archs = [arch for arch in _working_archs(request, matrix) if arch != here]
    return alternatives[:6], archs


def _working_archs(request: SelectionRequest, matrix: Matrix) -> tuple[str, ...]:
    """The archs in scope (in order) where ``request``, on that arch, has a winner.

    Independent of the request's own device, so memoized under the request minus
    its device: every failing request that differs only in its device shares one scan.
    """
    return _memoized(matrix, "works_on", _request_without(request, "device"), lambda: tuple(
        arch for arch, device in _scope_devices()
        if evaluate(request.with_(device=device), matrix).winner is not None))


@lru_cache(maxsize=1)
def _scope_devices() -> tuple[tuple[str, Device], ...]:
    return tuple((arch, Device.parse(arch)) for arch in ARCHS_IN_SCOPE)


def select(request: SelectionRequest, matrix: Matrix | None = None) -> Selection:
    """Choose the MXFP4 MoE backend for ``request`` or raise an :class:`OracleError`."""
    matrix = matrix or MATRIX
    outcome = _select_cached(request) if matrix is MATRIX else _outcome(request, matrix)
    if outcome.__class__ is Selection:
        return outcome  # type: ignore[return-value]
    raise outcome()  # a fresh NoEligibleBackend per call, like an uncached evaluation


@lru_cache(maxsize=4096)
def _select_cached(request: SelectionRequest) -> Selection | partial[NoEligibleBackend]:
    # Failures are cached too, as the exception's constructor call (so every call
    # raises a new exception with its own traceback, exactly as an uncached one).
    return _outcome(request, MATRIX)


def _select(request: SelectionRequest, matrix: Matrix) -> Selection:
    """The uncached selection: returns the Selection or raises."""
    outcome = _outcome(request, matrix)
    if outcome.__class__ is Selection:
        return outcome  # type: ignore[return-value]
    raise outcome()


def _outcome(request: SelectionRequest, matrix: Matrix) -> Selection | partial[NoEligibleBackend]:
    """The Selection, or (nothing eligible) the NoEligibleBackend to raise, unbuilt.

    Malformed requests (unknown backend, activation conflict) raise from here.
    """
    ev = evaluate(request, matrix)
    facts = _device_facts(matrix, request.device)
    rejections = []
    for r, gate in zip(ev.candidates, ev.gates):
        if gate[0] is None:
            continue
        static, rejection, _ = facts[r.name]
        # a device gate is the memo's own tuple: reuse its (immutable) Rejection
        rejections.append(rejection if gate is static else Rejection(r.name, gate[0], gate[1]))
    rejected = tuple(rejections)
    if ev.winner is None:
        alternatives, archs = _working_elsewhere(request, matrix)
        return partial(NoEligibleBackend, _summary(request, ev), rejected, alternatives, archs,
                       pinned=ev.pinned)
    row = ev.candidates[ev.winner]
    notes = []
    if ev.fallback:
        wanted = canonical_name(ev.activation) if ev.strict else "bf16"
        notes.append(f"activation fallback: no eligible {wanted}-activation variant, "
                     f"using {row.activation_name} ({row.name})")
    detail = ev.gates[ev.winner][1]
    if detail:
        notes.append(f"{row.name}: {detail}")
    return Selection(
        backend=row.name, weight=row.weight, activation=row.activation,
        selected_by="auto" if ev.pinned is None else "pinned",
        eligible=tuple(ev.candidates[i].name for i in ev.order), rejected=rejected,
        notes=tuple(notes), activation_fallback=ev.fallback, request=request,
        matrix_version=matrix.version, fingerprint=_fingerprint(request, matrix),
    )


def explain(request: SelectionRequest, matrix: Matrix | None = None) -> list[Verdict]:
    """Every candidate with its verdict, reason and detail, in candidate order.

    Same gates as :func:`select`; never raises for "nothing eligible" (all rejected),
    but does raise for malformed requests (unknown backend, activation conflict).
    """
    matrix = matrix or MATRIX
    if matrix is MATRIX:
        return list(_explain_cached(request))  # Verdicts are frozen: sharing them is safe
    return list(_explain(request, matrix))


@lru_cache(maxsize=4096)
def _explain_cached(request: SelectionRequest) -> tuple[Verdict, ...]:
    return _explain(request, MATRIX)


def _explain(request: SelectionRequest, matrix: Matrix) -> tuple[Verdict, ...]:
    ev = evaluate(request, matrix)
    facts = _device_facts(matrix, request.device)
    verdicts = []
    for i, (row, (reason, detail)) in enumerate(zip(ev.candidates, ev.gates)):
        if reason is not None:
            verdict = "rejected"
        elif i == ev.winner:
            verdict = "selected"
        else:
            verdict = "eligible"
        verdicts.append(Verdict(i + 1, row.name, row.activation_name,
                                facts[row.name][2].status, verdict, reason, detail))
    return tuple(verdicts)
