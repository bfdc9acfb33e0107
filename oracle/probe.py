"""The machine probe: the one module of the oracle that looks at the real machine.

* :func:`detect_device` — this process's accelerator as a :class:`Device`
  (CUDA SM number, ROCm ``gfx`` arch, XPU, else CPU).  Imports torch lazily.
* :func:`detect_environment` — installed kernel libraries and their versions, read
  from distribution metadata (:mod:`importlib.metadata`) WITHOUT importing them.
* :func:`select_for_group` — one decision for a whole ``torch.distributed`` group:
  the first candidate (in rank 0's preference order) that is eligible on EVERY rank,
  so that ranks with different devices or libraries never run different kernels.

Nothing in :mod:`oracle` imports this module at import time; the pure selector
never does.  ``Device.detect()`` / ``Environment.detect()`` delegate here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

from oracle.errors import ConfigError, NoEligibleBackend, OracleError
from oracle.keys import canonical_name
from oracle.request import Device, Environment, SelectionRequest, Version, parse_version
from oracle.selection import Rejection, Selection

__all__ = ["detect_device", "detect_environment", "select_for_group", "DISTRIBUTIONS",
           "GroupError", "GroupDivergence"]

#: Installed distribution name -> the Environment's library name (oracle.request.LIBRARIES).
#: Names are compared after PEP 503 normalisation, so "deep-gemm" and "deep_gemm" are one.
DISTRIBUTIONS: Final[dict[str, str]] = {
    "flashinfer-python": "flashinfer",
    "flashinfer": "flashinfer",
    "triton-kernels": "triton_kernels",
    "vllm": "vllm_ops",
    "deep-gemm": "deep_gemm",
    "amd-aiter": "aiter",
    "aiter": "aiter",
    "b12x": "b12x",
    "humming": "humming",
    "cuda-tile": "cuda_tile",
    "nvidia-cutlass-dsl": "cutlass_dsl",
    "intel-extension-for-pytorch": "intel_xpu",
    "vllm-xpu-kernels": "intel_xpu",
    "torch": "torch",
}

_GFX_RE: Final = re.compile(r"gfx[0-9a-f]{3,4}")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------ device


def detect_device(index: int | None = None) -> Device:
    """This process's device: CUDA (``sm90``...), ROCm (``gfx942``...), XPU, else CPU.

    ``index`` selects the accelerator (default: the current one).  torch is imported
    here, lazily; without torch the answer is CPU.
    """
    try:
        import torch
    except ImportError:
        return Device("cpu", "cpu")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_available():
        idx = cuda.current_device() if index is None else index
        if getattr(torch.version, "hip", None):
            props = cuda.get_device_properties(idx)
            raw = str(getattr(props, "gcnArchName", "") or "")
            m = _GFX_RE.match(raw.strip().lower().split(":")[0])
            if m is None:
                raise ConfigError("device", "a ROCm device with a gfx architecture name",
                                  repr(raw), "pass device= explicitly, e.g. gfx942")
            return Device("rocm", m.group(0))
        major, minor = cuda.get_device_capability(idx)
        return Device("cuda", int(major) * 10 + int(minor))
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and callable(getattr(xpu, "is_available", None)) and xpu.is_available():
        return Device("xpu", "xpu")
    return Device("cpu", "cpu")


# ------------------------------------------------------------------ environment


def _installed() -> dict[str, str]:
    """Normalised distribution name -> version string, for every installed distribution."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        try:
            name = dist.metadata["Name"]
            version = dist.version
        except Exception:  # a broken .dist-info must not break the probe
            continue
        if name and version:
            found.setdefault(_normalize(name), version)
    return found


def detect_environment() -> Environment:
    """Installed kernel libraries (our names) and versions, from package metadata only.

    No library is imported.  When two distributions provide one library (e.g.
    ``intel-extension-for-pytorch`` and ``vllm-xpu-kernels``) the higher version is
    kept.  A version string without a leading number is recorded as ``None`` (present,
    version unknown).
    """
    installed = _installed()
    libs: dict[str, Version | None] = {}
    for dist_name, library in DISTRIBUTIONS.items():
        text = installed.get(_normalize(dist_name))
        if text is None:
            continue
        try:
            version: Version | None = parse_version(text)
        except ConfigError:
            version = None
        old = libs.get(library)
        if library not in libs or (version is not None and (old is None or version > old)):
            libs[library] = version
    return Environment(libs)


# ------------------------------------------------------------------ group selection


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


@dataclass(frozen=True, slots=True)
class _RankInput:
    ok: bool
    request: SelectionRequest | None
    error: str = ""
    message: str = ""


def _local_request(request_or_model: Any, device: Any, environment: Any,
                   model_kwargs: Mapping[str, Any]) -> SelectionRequest:
    dev = Device.parse(device) if device is not None else None
    if environment is None or isinstance(environment, Environment):
        env = environment
    elif isinstance(environment, str):
        env = Environment.parse(environment)
    else:
        raise ConfigError("environment", "an Environment or a --libraries string",
                          repr(environment)[:80], "Environment.assume_all() or 'flashinfer,torch'")
    if isinstance(request_or_model, SelectionRequest):
        if model_kwargs:
            raise ConfigError(next(iter(model_kwargs)), "absent when a SelectionRequest is given",
                              repr(sorted(model_kwargs)), "set the field on the request instead")
        req = request_or_model
        # A request is a complete description: its own device/environment are kept
        # unless the caller passes device= / environment= for this rank.
        if dev is not None:
            req = req.with_(device=dev)
        if env is not None:
            req = req.with_(environment=env)
        return req
    from oracle.model import build_request
    built = build_request(request_or_model,
                          device=dev if dev is not None else detect_device(),
                          environment=env if env is not None else detect_environment(),
                          **model_kwargs)
    req = built[0] if isinstance(built, tuple) else built
    if not isinstance(req, SelectionRequest):  # pragma: no cover - contract of oracle.model
        raise OracleError("oracle.model.build_request", "returning a SelectionRequest",
                          type(req).__name__)
    return req


def _rank_label(rank: int, req: SelectionRequest) -> str:
    return f"rank {rank} ({req.device.name})"


def _ranks(ranks: Sequence[int]) -> str:
    return ", ".join(map(str, ranks))


def _shared_fields(req: SelectionRequest) -> SelectionRequest:
    """The request with the per-rank fields blanked (what every rank must agree on)."""
    return req.with_(device=Device("cpu", "cpu"), environment=Environment.none())


def _fingerprint(requests: Sequence[SelectionRequest], matrix_version: str) -> str:
    payload = json.dumps({"ranks": [r.to_dict() for r in requests], "matrix": matrix_version},
                         sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _group_eligible(base: SelectionRequest, pairs: Sequence[tuple[Device, Environment]]):
    """Per distinct (device, environment): the selector's own evaluation of ``base`` on it."""
    from oracle.selector import evaluate
    return {pair: evaluate(base.with_(device=pair[0], environment=pair[1])) for pair in pairs}


def _common_order(base: SelectionRequest, pairs: Sequence[tuple[Device, Environment]],
                  first: tuple[Device, Environment]) -> list[str]:
    evs = _group_eligible(base, list(dict.fromkeys([first, *pairs])))
    eligible = {pair: {ev.candidates[i].name for i in ev.order} for pair, ev in evs.items()}
    ev0 = evs[first]
    return [ev0.candidates[i].name for i in ev0.order
            if all(ev0.candidates[i].name in names for names in eligible.values())]


def _decide(requests: Sequence[SelectionRequest]) -> Selection:
    """The group decision; pure and deterministic in ``requests`` (same on every rank)."""
    from oracle.matrix import ARCHS_IN_SCOPE, MATRIX
    from oracle.selector import select

    n = len(requests)
    base = requests[0]
    shared = _shared_fields(base)
    for r, req in enumerate(requests[1:], start=1):
        if _shared_fields(req) != shared:
            a, b = shared.to_dict(), _shared_fields(req).to_dict()
            diff = sorted(k for k in a if a[k] != b[k]) or ["request"]
            raise GroupDivergence(
                f"request field {diff[0]!r}",
                f"rank 0: {a.get(diff[0])!r}, rank {r}: {b.get(diff[0])!r}")
    pairs = [(req.device, req.environment) for req in requests]
    distinct = list(dict.fromkeys(pairs))
    evs = _group_eligible(base, distinct)
    ev0 = evs[pairs[0]]
    ranks_of: dict[tuple[Device, Environment], list[int]] = {}
    for r, pair in enumerate(pairs):
        ranks_of.setdefault(pair, []).append(r)

    # Per candidate (rank 0's candidate order): the ranks that reject it and why.
    # (Every rank's candidate list holds the same rows; only auto's order is per arch.)
    gates = {pair: {row.name: gate for row, gate in zip(ev.candidates, ev.gates)}
             for pair, ev in evs.items()}

    rejected: list[Rejection] = []
    eligible_order = [ev0.candidates[i].name for i in ev0.order]
    for row in ev0.candidates:
        fails = []
        for pair in distinct:
            reason, detail = gates[pair][row.name]
            if reason is not None:
                for r in ranks_of[pair]:
                    fails.append((r, reason, detail))
        if not fails:
            continue
        fails.sort(key=lambda f: f[0])
        detail = "; ".join(f"{_rank_label(r, requests[r])}: {reason.value} — {d}"
                           for r, reason, d in fails)
        rejected.append(Rejection(row.name, fails[0][1], detail))
    rejected_names = {rj.backend for rj in rejected}
    common = [name for name in eligible_order if name not in rejected_names]

    devices = ", ".join(req.device.name for req in requests)
    if not common:
        act = canonical_name(ev0.activation) if ev0.strict else "any (bf16 preferred)"
        summary = (f"{canonical_name(base.weight)} weights, {act} activations, "
                   f"moe_backend={base.moe_backend}, on all {n} rank{'s' if n != 1 else ''} "
                   f"({devices})")
        alternatives: list[str] = []
        if ev0.pinned is not None:
            try:
                auto = base.with_(moe_backend="auto")
                alternatives = [name.lower() for name in _common_order(
                    auto, pairs, pairs[0])]
            except OracleError:
                alternatives = []
        archs: list[str] = []
        if not alternatives:
            envs = list(dict.fromkeys(env for _, env in pairs))
            for arch in ARCHS_IN_SCOPE:
                dev = Device.parse(arch)
                if _common_order(base, [(dev, e) for e in envs], (dev, envs[0])):
                    archs.append(arch)
        raise NoEligibleBackend(summary, rejected, alternatives[:6], archs, pinned=ev0.pinned)

    winner = common[0]
    row = MATRIX.by_name[winner]
    # The report of rank 0's request with the winner pinned gives the activation-fallback
    # note exactly as select() words it; everything else is the group's view.
    pinned = select(base.with_(moe_backend=winner.lower()))
    notes = [note for note in pinned.notes if note.startswith("activation fallback")]
    details: dict[str, list[int]] = {}
    for pair in distinct:
        detail = evs[pair].gates[[c.name for c in evs[pair].candidates].index(winner)][1]
        if detail:
            details.setdefault(detail, []).extend(ranks_of[pair])
    for detail, ranks in details.items():
        where = "" if len(ranks) == n else f" on rank{'s' if len(ranks) > 1 else ''} " \
                f"{_ranks(sorted(ranks))}"
        notes.append(f"{winner}{where}: {detail}")
    notes.append(f"agreed across {n} rank{'s' if n != 1 else ''} ({devices}): {winner} is the "
                 f"first candidate in rank 0's preference order that is eligible on every rank")
    for pair in distinct:
        ev = evs[pair]
        local = ev.candidates[ev.winner].name if ev.winner is not None else None
        if local != winner:
            notes.append(f"rank{'s' if len(ranks_of[pair]) > 1 else ''} "
                         f"{_ranks(ranks_of[pair])} ({pair[0].name}) alone would pick "
                         f"{local or 'nothing'}")
    fallback = pinned.activation_fallback
    return Selection(
        backend=winner, weight=row.weight, activation=row.activation,
        selected_by="auto" if ev0.pinned is None else "pinned",
        eligible=tuple(common), rejected=tuple(rejected), notes=tuple(notes),
        activation_fallback=fallback, request=base, matrix_version=MATRIX.version,
        fingerprint=_fingerprint(requests, MATRIX.version),
    )


def _outcome_digest(outcome: Selection | BaseException) -> str:
    if isinstance(outcome, Selection):
        text = "ok:" + outcome.fingerprint + ":" + outcome.backend
    else:
        text = f"error:{type(outcome).__name__}:{outcome}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def select_for_group(request_or_model: Any, group: Any = None, *, device: Any = None,
                     environment: Any = None, **model_kwargs: Any) -> Selection:
    """One MoE backend for every rank of a ``torch.distributed`` group.

    ``request_or_model`` is a :class:`SelectionRequest` (its own device/environment
    are used unless ``device=`` / ``environment=`` are given) or anything
    :func:`oracle.model.select_for_model` accepts (then ``device`` / ``environment``
    default to this rank's :func:`detect_device` / :func:`detect_environment`, and
    ``model_kwargs`` — moe_backend, quantization, quantization_config, ... — go to
    :func:`oracle.model.build_request`).

    Every rank gathers every rank's request (``all_gather_object``), evaluates rank
    0's request on each distinct (device, environment) with the selector's own gates,
    and takes the first candidate in rank 0's preference order that is eligible on
    all of them.  Every rank returns the same :class:`Selection` (built on rank 0's
    request; its fingerprint hashes every rank's inputs and the matrix version) or
    raises the same :class:`NoEligibleBackend`, whose rejections name, per
    candidate, the ranks that reject it and why.  Ranks are numbered within
    ``group``.  The process group must be initialized (any backend, e.g. gloo, nccl).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise OracleError("torch.distributed", "initialized before select_for_group",
                          "no default process group",
                          "torch.distributed.init_process_group(...), or use oracle.select "
                          "for a single process")
    world = dist.get_world_size(group)
    me = dist.get_rank(group)
    if me < 0:
        raise OracleError("group", "a process group this rank belongs to", f"rank {me}",
                          "call select_for_group only on the group's members")

    # 1. Build the local request; a failure is shared, not raised, so no rank is left
    #    waiting in a collective.
    local_error: BaseException | None = None
    try:
        local = _RankInput(True, _local_request(request_or_model, device, environment,
                                                model_kwargs))
    except Exception as exc:  # noqa: BLE001 - re-raised below after the collective
        local_error = exc
        local = _RankInput(False, None, type(exc).__name__, str(exc))
    inputs: list[Any] = [None] * world
    dist.all_gather_object(inputs, local, group=group)

    # 2. Decide (deterministic in the gathered inputs, so identical on every rank).
    outcome: Selection | BaseException
    failed = [(r, inp) for r, inp in enumerate(inputs) if not inp.ok]
    if failed:
        r, inp = failed[0]
        outcome = (local_error if r == me and local_error is not None
                   else GroupError(r, inp.error, inp.message))
    else:
        try:
            outcome = _decide([inp.request for inp in inputs])
        except Exception as exc:  # noqa: BLE001 - re-raised below after the check
            outcome = exc

    # 3. Verify: every rank must hold the same outcome (should never fail).
    digest = _outcome_digest(outcome if not failed else GroupError(r, inp.error, inp.message))
    digests: list[Any] = [None] * world
    dist.all_gather_object(digests, digest, group=group)
    if len(set(digests)) != 1:
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        raise GroupDivergence("the group's decision",
                              f"ranks {_ranks(odd)} differ from rank 0 ({digests})",
                              "report this as a bug: the decision must be deterministic")
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome

