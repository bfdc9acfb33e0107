"""One MoE backend for every rank of a ``torch.distributed`` group.

The collectives live here; the decision is :func:`oracle.selector.decide_group`,
a pure function of the gathered requests, so every rank computes the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oracle.errors import ConfigError, GroupDivergence, GroupError, OracleError, shown
from oracle.model import build_request
from oracle.platforms import Device
from oracle.request import Environment, SelectionRequest
from oracle.selection import Selection
from oracle.selector import decide_group

__all__ = ["select_for_group"]


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
                          shown(environment)[:80], "Environment.assume_all() or 'flashinfer,torch'")
    if isinstance(request_or_model, SelectionRequest):
        if model_kwargs:
            raise ConfigError(next(iter(model_kwargs)), "absent when a SelectionRequest is given",
                              shown(sorted(model_kwargs)), "set the field on the request instead")
        # A request is a complete description: its own device/environment are kept
        # unless the caller passes device= / environment= for this rank.
        req = request_or_model
        if dev is not None:
            req = req.with_(device=dev)
        if env is not None:
            req = req.with_(environment=env)
        return req
    # oracle.model probes this rank's device / libraries when they are left out.
    return build_request(request_or_model, device=dev, environment=env, **model_kwargs)[0]


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
    default to this rank's probed device and libraries, and ``model_kwargs`` —
    moe_backend, quantization, quantization_config, ... — go to
    :func:`oracle.model.build_request`).

    Every rank gathers every rank's request (``all_gather_object``) and runs
    :func:`oracle.selector.decide_group` on them.  Every rank returns the same
    :class:`Selection` (built on rank 0's request; its fingerprint hashes every
    rank's inputs and the matrix version) or raises the same error; a rank whose
    own input is malformed makes every other rank raise :class:`GroupError` naming
    it.  Ranks are numbered within ``group``.  The process group must be
    initialized (any backend, e.g. gloo, nccl).
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
        shared_error = GroupError(r, inp.error, inp.message)
        outcome = local_error if r == me and local_error is not None else shared_error
    else:
        try:
            outcome = decide_group([inp.request for inp in inputs])
        except Exception as exc:  # noqa: BLE001 - re-raised below after the check
            outcome = exc

    # 3. Verify: every rank must hold the same outcome (should never fail).
    digest = _outcome_digest(outcome if not failed else shared_error)
    digests: list[Any] = [None] * world
    dist.all_gather_object(digests, digest, group=group)
    if len(set(digests)) != 1:
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        raise GroupDivergence("the group's decision",
                              f"ranks {', '.join(map(str, odd))} differ from rank 0 ({digests})",
                              "report this as a bug: the decision must be deterministic")
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
