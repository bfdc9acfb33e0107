"""What a vLLM release would run: its selection rules over the matrix's vLLM columns.

The strict policy is the project's own (``oracle.gates`` over ``mxfp4_moe.toml``).
The ``vllm-X.Y`` policies answer a different question -- *what would that release
pick?* -- so they follow the release's own procedure (``select_mxfp4_moe_backend``
in ``fused_moe/oracle/mxfp4.py``), step for step, reading every fact from its
:class:`~oracle.matrix.Release` (``matrix/vllm.toml``):

1. ``--moe-backend`` must be one of the release's names, and its ``KernelConfig``
   must accept it (else :class:`UnknownBackend` with the names it does accept).
2. The variant list (the name's, or the auto list in the arch's order) is filtered by
   the requested activation key: exact matches and variants that apply any key
   (EMULATION), then -- where the release falls back -- the BF16 variants.  With
   nothing requested, the BF16 variants (if the list has any).
3. The first variant whose experts classes accept the device, libraries and layer
   wins; auto tries the platform's retry variant last (XPU, and CPU in 0.22).

Nothing is cached here (the selector caches whole decisions) and nothing is
imported from above the matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from oracle.errors import UnknownBackend
from oracle.gates import GateVerdict, Reason, no, ok, round_up
from oracle.keys import QuantKey, canonical_name
from oracle.matrix import POLICY_RELEASES, RELEASES, Matrix, Release, Row, Variant
from oracle.platforms import arch_platform
from oracle.request import SelectionRequest, normalize_backend_name

__all__ = ["VllmOutcome", "check_backend_flag", "evaluate_vllm", "release_for"]


def release_for(policy: str) -> Release:
    """The release whose rules ``policy`` applies (the policy name is validated upstream)."""
    return RELEASES[POLICY_RELEASES[policy]]


@dataclass(frozen=True, slots=True)
class VllmOutcome:
    """The release's decision: candidates in its order and each one's verdict.

    ``runs_with`` is the activation the winner applies (the requested key for
    EMULATION and for HUMMING under an override); ``fallback`` is vLLM's "Falling back
    ... with BF16 activations" warning; ``padded`` its round-up of (hidden, intermediate).
    """

    candidates: tuple[Row, ...]
    gates: tuple[GateVerdict, ...]
    order: tuple[int, ...]
    winner: int | None
    fallback: bool
    runs_with: QuantKey | None
    padded: tuple[int, int] | None



# ------------------------------------------------------------------ the release's gates
# In the order vLLM's is_supported_config asks (modular_kernel.py:590-632): device
# (platform, arch, and the libraries its availability helpers probe), activation,
# parallel config, activation format.

_VGate = Callable[[Variant, Row, SelectionRequest], GateVerdict]


def _device(v: Variant, row: Row, req: SelectionRequest) -> GateVerdict:
    arch = req.device.name
    if arch in v.archs:
        return ok()
    platforms = {arch_platform(a) for a in v.archs | v.device_archs}
    if req.device.platform not in platforms:
        return no(Reason.PLATFORM_UNSUPPORTED, req.device.platform, f"vLLM runs it on "
                  f"{'/'.join(sorted(platforms))}, got {req.device.platform} ({arch})")
    if arch in v.device_archs:
        return no(Reason.ACTIVATION_MISMATCH, arch, f"vLLM's {v.experts[0]} runs on {arch} but "
                  f"not with {row.name}'s weight x activation pair there (quantization scheme)")
    return no(Reason.ARCH_UNSUPPORTED, arch, f"vLLM's experts classes run on "
              f"{'/'.join(sorted(v.archs))}, got {arch} ({v.source})")


def _libraries(v: Variant, row: Row, req: SelectionRequest) -> GateVerdict:
    for lib in v.libraries:
        if not req.environment.has(lib):
            return no(Reason.LIBRARY_MISSING, lib, f"vLLM needs library {lib}, not installed")
    return ok()


def _activation_fn(v: Variant, row: Row, req: SelectionRequest) -> GateVerdict:
    fn = req.layer.activation_fn if req.layer is not None else None
    if fn is None or fn in v.activation_fns:
        return ok()
    return no(Reason.ACTIVATION_FN_UNSUPPORTED, fn,
              f"vLLM's experts classes implement {'/'.join(v.activation_fns)}, got {fn}")


def _bias(v: Variant, row: Row, req: SelectionRequest) -> GateVerdict:
    if req.layer is None or not req.layer.has_bias or v.bias:
        return ok()
    return no(Reason.BIAS_UNSUPPORTED, True, "vLLM's experts classes refuse expert biases")


def _parallelism(v: Variant, row: Row, req: SelectionRequest) -> GateVerdict:
    ep = req.layer.ep_size if req.layer is not None else None
    if v.ep_required and (ep is None or ep <= 1):
        return no(Reason.PARALLELISM_UNSUPPORTED, ep or 1,
                  f"expert-parallel only, got ep_size={ep or 1}")
    return ok()


def _activation_format(v: Variant, row: Row, req: SelectionRequest) -> GateVerdict:
    if v.activation_format == "standard":
        return ok()
    return no(Reason.PARALLELISM_UNSUPPORTED, "standard",
              "takes the batched activation format only (DeepEP low-latency all2all)")


_GATES: Final[tuple[_VGate, ...]] = (_device, _libraries, _activation_fn, _bias, _parallelism,
                                     _activation_format)


_NAMED: Final = {"bias": _bias, "libraries": _libraries}


def _verdict(v: Variant, row: Row, req: SelectionRequest) -> GateVerdict:
    early = tuple(_NAMED[name] for name in v.first)
    for gate in (*early, *(g for g in _GATES if g not in early)):
        verdict = gate(v, row, req)
        if verdict.reason is not None:
            return verdict
    return ok()


# ------------------------------------------------------------------ the procedure


def check_backend_flag(req: SelectionRequest, release: Release) -> None:
    """``--moe-backend`` is validated by vLLM's KernelConfig when the engine is
    configured, before any layer (and before the activation keys are combined)."""
    name = normalize_backend_name(req.moe_backend)
    if name not in release.kernel_config:
        raise UnknownBackend(req.moe_backend, release.valid_names())


def _variant_names(req: SelectionRequest, release: Release) -> tuple[tuple[str, ...], bool]:
    """(variants, auto) for the request's ``--moe-backend``, or UnknownBackend."""
    name = normalize_backend_name(req.moe_backend)
    if name == "auto":
        return release.auto_order(req.device.name), True
    if name not in release.names:
        raise UnknownBackend(req.moe_backend, release.valid_names())
    return release.names[name], False


def _filtered(names: tuple[str, ...], requested: QuantKey | None, release: Release,
              matrix: Matrix, unfiltered: bool) -> list[str]:
    """vLLM's _filter_by_activation: what stays a candidate, in order."""
    def key(n: str) -> QuantKey | None:
        return release.variant[n].key(matrix.by_name[n])

    bf16 = [n for n in names if key(n) is None]
    if requested is None:
        return list(names) if unfiltered or not bf16 else bf16
    matching = [n for n in names if key(n) == requested or release.variant[n].requested_activation]
    if release.activation_fallback:
        return matching + [n for n in bf16 if n not in matching]
    return matching


def _pad_note(v: Variant, req: SelectionRequest) -> tuple[tuple[int, int] | None, str]:
    layer = req.layer
    if layer is None or layer.hidden_size is None or layer.intermediate_size is None:
        return None, ""
    h_align, i_align = v.alignment(req.device.platform)
    per_rank = layer.per_rank_intermediate
    hidden = round_up(layer.hidden_size, h_align)
    inter = round_up(per_rank, i_align)
    notes = [f"pads {label} {size} -> {padded}" for label, size, padded in (
        ("hidden", layer.hidden_size, hidden),
        ("intermediate", per_rank, inter)) if padded != size]
    return (hidden, inter), "; ".join(notes)


def evaluate_vllm(req: SelectionRequest, requested: QuantKey | None, matrix: Matrix,
                  release: Release) -> VllmOutcome:
    """The release's decision for ``req`` (``requested``: the resolved activation key)."""
    names, auto = _variant_names(req, release)
    unfiltered = not auto and normalize_backend_name(req.moe_backend) in release.unfiltered_names
    kept = _filtered(names, requested, release, matrix, unfiltered)
    ordered = kept + [n for n in names if n not in kept]
    candidates = tuple(matrix.by_name[n] for n in ordered)
    gates = []
    for n in ordered:
        if n not in kept:
            filed = canonical_name(release.variant[n].key(matrix.by_name[n]))
            if requested is None:
                why = (f"vLLM files it under {filed} activations and, with none requested, "
                       "keeps the list's BF16 variants")
            else:
                why = (f"vLLM files it under {filed} activations, requested "
                       f"{canonical_name(requested)} (vLLM keeps the matching variants"
                       + (" and then the BF16 ones)" if release.activation_fallback
                          else " only)"))
            gates.append(no(Reason.ACTIVATION_MISMATCH, requested, why))
            continue
        verdict = _verdict(release.variant[n], matrix.by_name[n], req)
        if verdict.reason is None:
            verdict = _passing_note(release.variant[n], n, req)
        gates.append(verdict)
    order = [i for i, v in enumerate(gates) if v.reason is None]
    retry = dict(release.platform_retry).get(req.device.platform) if auto else None
    if not order and retry is not None:
        # vLLM asks the platform's own variant once more, with BF16 activations.
        verdict = _verdict(release.variant[retry], matrix.by_name[retry], req)
        if verdict.reason is None:
            verdict = _passing_note(release.variant[retry], retry, req, retried=True)
            if retry in ordered:
                gates[ordered.index(retry)] = verdict
            else:
                candidates += (matrix.by_name[retry],)
                gates.append(verdict)
                ordered.append(retry)
            return _outcome(candidates, gates, [ordered.index(retry)], release, req, requested,
                            retried=True)
    return _outcome(candidates, gates, order, release, req, requested)


def _passing_note(v: Variant, name: str, req: SelectionRequest,
                  retried: bool = False) -> GateVerdict:
    notes = []
    _, pad = _pad_note(v, req)
    if pad:
        notes.append(pad)
    if v.drops_bias and req.layer is not None and req.layer.has_bias:
        notes.append("vLLM passes the expert biases but this kernel's apply ignores them: "
                     "the layer's biases are dropped")
    if retried:
        notes.append(f"{name} is vLLM's last try on {req.device.platform} after the auto list")
    return ok("; ".join(notes))


def _outcome(candidates: tuple[Row, ...], gates: list[GateVerdict], order: list[int],
             release: Release, req: SelectionRequest, requested: QuantKey | None,
             retried: bool = False) -> VllmOutcome:
    winner = order[0] if order else None
    if winner is None:
        return VllmOutcome(candidates, tuple(gates), (), None, False, None, None)
    row = candidates[winner]
    v = release.variant[row.name]
    own = v.key(row)
    applies = v.requested_activation or (v.honours_override and requested is not None
                                         and req.activation == requested)
    runs_with = requested if applies and requested is not None else own
    fallback = requested is not None and not retried and own is None and not applies
    padded, _ = _pad_note(v, req)
    return VllmOutcome(candidates, tuple(gates), tuple(order), winner, fallback, runs_with,
                       padded)

