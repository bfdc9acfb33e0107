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

from oracle.deployment import CONDITIONS
from oracle.errors import ConfigError, UnknownBackend, shown
from oracle.gates import GateVerdict, Reason, no, ok, round_up
from oracle.keys import QuantKey, canonical_name
from oracle.matrix import (POLICY_RELEASES, RELEASES, Checkpoint, Family, Matrix, Release,
                           Row, Variant)
from oracle.platforms import arch_platform
from oracle.request import SelectionRequest, normalize_backend_name

__all__ = ["ClassPick", "VllmOutcome", "check_backend_flag", "check_deployment", "checkpoint_for",
           "classes_verdict", "evaluate_vllm", "family_for", "pick_class", "pinned_lora_refusal",
           "release_for", "routing_for"]


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
    #: the winner's experts class and why earlier classes were passed over
    kernel_class: str | None = None
    class_notes: tuple[str, ...] = ()



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


def _verdict(v: Variant, row: Row, req: SelectionRequest, release: Release | None = None,
             pinned: bool = False, routing: str = "") -> GateVerdict:
    """The variant's verdict: its own facts, then (where the release records them) its
    experts classes' deployment gates."""
    modelled = release is not None and release.models_deployment
    if modelled:
        refused = pinned_lora_refusal(v, req, pinned)
        if refused is not None:
            return refused
    early = tuple(_NAMED[name] for name in v.first)
    for gate in (*early, *(g for g in _GATES if g not in early)):
        if modelled and gate is _activation_format:
            continue  # the classes' own formats decide (below)
        verdict = gate(v, row, req)
        if verdict.reason is not None:
            return verdict
    if modelled:
        return classes_verdict(release, row.name, req, pinned, routing)  # type: ignore[arg-type]
    return ok()


# ------------------------------------------------------------------ experts classes


@dataclass(frozen=True, slots=True)
class ClassPick:
    """The experts class a variant would build (None: every class refused) and each
    passed-over class with its reason (vLLM's _return_or_raise / auto loop order)."""

    chosen: str | None
    passed: tuple[tuple[str, Reason, str], ...]

    def notes(self) -> tuple[str, ...]:
        if not self.passed:
            return ()
        return tuple(f"{cls}: {why}" + (f" -> {self.chosen}" if i == len(self.passed) - 1
                                         and self.chosen else "")
                     for i, (cls, _, why) in enumerate(self.passed))


def _class_refusal(release: Release, cls: str, req: SelectionRequest,
                   routing: str) -> tuple[Reason, str] | None:
    """Why ``cls`` refuses the deployment, in is_supported_config's order (parallel
    config, routing method, activation format, LoRA), or None."""
    c = release.experts_class[cls]  # type: ignore[index]
    dep = req.parallel
    for cond in c.refuses:
        if dep.holds(cond):
            return Reason.PARALLELISM_UNSUPPORTED, f"refuses {CONDITIONS[cond][0]}"
    if c.routing and routing not in c.routing:
        return Reason.ROUTING_UNSUPPORTED, (f"does not take routing method {routing} "
                                            f"(takes {'/'.join(c.routing)})")
    wanted = "batched" if dep.batched_format else "standard"
    if c.format != wanted:
        return Reason.PARALLELISM_UNSUPPORTED, (f"does not take the {wanted} activation "
                                                f"format (takes {c.format})")
    if dep.enable_lora and not c.lora:
        return Reason.LORA_UNSUPPORTED, "has no LoRA support"
    if c.humming_gemm and release.humming_preferred_gemm:
        preferred = dict(release.humming_preferred_gemm)["ep" if dep.use_ep else "default"]
        if c.humming_gemm != preferred:
            return Reason.PARALLELISM_UNSUPPORTED, (
                f"runs the {c.humming_gemm} GEMM, vLLM prefers {preferred} "
                + ("with" if dep.use_ep else "without") + " expert parallelism")
    return None


def pick_class(release: Release, variant: str, req: SelectionRequest, pinned: bool,
               routing: str) -> ClassPick:
    """The first experts class of ``variant`` that accepts the deployment."""
    v = release.variant[variant]
    classes = v.experts
    if pinned and req.parallel.enable_lora and v.pinned_lora_classes:
        classes = (*v.pinned_lora_classes, *classes)
    passed = []
    for cls in classes:
        refusal = _class_refusal(release, cls, req, routing)
        if refusal is None:
            return ClassPick(cls, tuple(passed))
        passed.append((cls, *refusal))
    return ClassPick(None, tuple(passed))


def pinned_lora_refusal(v: Variant, req: SelectionRequest, pinned: bool) -> GateVerdict | None:
    """A pinned variant that refuses LoRA outright: _requested_kernel_cls raises before
    any class is asked (mxfp4.py:571-592)."""
    if pinned and req.parallel.enable_lora and v.pinned_lora_refused:
        return no(Reason.LORA_UNSUPPORTED, True, f"vLLM: {v.pinned_lora_refused}")
    return None


def classes_verdict(release: Release, name: str, req: SelectionRequest, pinned: bool,
                    routing: str) -> GateVerdict:
    """Passes when one of the variant's experts classes accepts the deployment."""
    pick = pick_class(release, name, req, pinned, routing)
    if pick.chosen is not None:
        return ok()
    reason = pick.passed[-1][1]
    return no(reason, req.parallel.describe(), "vLLM's experts classes refuse the deployment "
              f"({req.parallel.describe()}): "
              + "; ".join(f"{cls} {why}" for cls, _, why in pick.passed))


# ------------------------------------------------------------------ the procedure


def check_backend_flag(req: SelectionRequest, release: Release) -> None:
    """``--moe-backend`` is validated by vLLM's KernelConfig when the engine is
    configured, before any layer (and before the activation keys are combined)."""
    name = normalize_backend_name(req.moe_backend)
    if name not in release.kernel_config:
        raise UnknownBackend(req.moe_backend, release.valid_names())


def check_deployment(req: SelectionRequest, release: Release) -> None:
    """What the release refuses before any kernel is chosen, and what its rules here
    do not model (a ConfigError rather than a guess)."""
    dep = req.parallel
    if not release.models_deployment:
        # Expert parallelism alone is the variants' own ep_required fact.
        beyond_tp = dep.data_parallel_size > 1 or dep.enable_lora or dep.enable_eplb
        if beyond_tp or req.family != "gpt-oss" or \
                (req.layer is not None and req.layer.routing_method is not None):
            raise ConfigError("deployment", f"tensor parallelism only for a gpt-oss layer under "
                              f"vllm-{release.version.rsplit('.', 1)[0]} (its experts-class "
                              "gates are not recorded)",
                              f"{dep.describe()}, family {req.family}"
                              + (f", routing {req.layer.routing_method}"
                                 if req.layer is not None and req.layer.routing_method else ""),
                              "--policy vllm-0.33 (or strict)")
        return
    if dep.enable_eplb and req.device.platform not in ("cuda", "rocm", "xpu"):
        raise ConfigError("enable_eplb", "used on a CUDA, ROCm or XPU device (vLLM's "
                          "ParallelConfig, config/parallel.py:563-568)",
                          shown(req.device.name), "drop --enable-eplb")


def checkpoint_for(req: SelectionRequest, release: Release) -> Checkpoint | None:
    """The request's checkpoint family record in ``release`` (None: not said, or a
    release that records none); an unknown name is a ConfigError listing them."""
    if req.checkpoint is None or release.checkpoint is None:
        return None
    record = release.checkpoint.get(req.checkpoint)
    if record is None:
        raise ConfigError("checkpoint", "one of " + ", ".join(release.checkpoint),
                          shown(req.checkpoint)[:60], "checkpoint=None")
    return record


def family_for(req: SelectionRequest, release: Release) -> Family | None:
    """The selector the layer's quant method calls: its checkpoint family's, else the
    request's model family's."""
    record = checkpoint_for(req, release)
    name = record.selector if record is not None and record.selector != "own" else req.family
    return (release.family or {}).get(name)


def routing_for(req: SelectionRequest, release: Release) -> str:
    """The routing method the layer's experts classes see: the layer's own, else the
    model family's (gpt-oss: RenormalizeNaive; DeepSeek-V4: DeepseekV4) -- the model's,
    whichever selector its checkpoint's quant method calls."""
    if req.layer is not None and req.layer.routing_method is not None:
        return req.layer.routing_method
    model = (release.family or {}).get(req.family)
    return model.routing if model is not None else ""


def _variant_names(req: SelectionRequest, release: Release,
                   family: Family | None = None) -> tuple[tuple[str, ...], bool]:
    """(variants, auto) for the request's ``--moe-backend``, or UnknownBackend."""
    name = normalize_backend_name(req.moe_backend)
    if name == "auto":
        if family is not None and not family.uses_release_auto:
            return family.auto_order(req.device.platform, req.device.name,
                                     routing_for(req, release)), True
        return release.auto_order(req.device.name), True
    if name not in release.names:
        raise UnknownBackend(req.moe_backend, release.valid_names())
    return release.names[name], False


def _substituted(names: list[str], req: SelectionRequest, release: Release) -> list[str]:
    """Pinned variants swapped for their batched twins under the batched format."""
    if not req.parallel.batched_format or not release.batched_substitute:
        return names
    swap = dict(release.batched_substitute)
    return list(dict.fromkeys(swap.get(n, n) for n in names))


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
    built = req.parallel.layer_hidden(layer.hidden_size)
    hidden = round_up(built, h_align)
    inter = round_up(per_rank, i_align)
    notes = [f"{req.parallel.all2all} builds the layer with hidden {built}"] \
        if built != layer.hidden_size else []
    notes += [f"pads {label} {size} -> {padded}" for label, size, padded in (
        ("hidden", built, hidden),
        ("intermediate", per_rank, inter)) if padded != size]
    return (hidden, inter), "; ".join(notes)


def evaluate_vllm(req: SelectionRequest, requested: QuantKey | None, matrix: Matrix,
                  release: Release) -> VllmOutcome:
    """The release's decision for ``req`` (``requested``: the resolved activation key)."""
    check_deployment(req, release)
    record = checkpoint_for(req, release)
    if record is not None and record.selector == "own" and \
            normalize_backend_name(req.moe_backend) not in record.oracle_names:
        return _own_choice(req, record, matrix, release)
    family = family_for(req, release)
    names, auto = _variant_names(req, release, family)
    routing = routing_for(req, release)
    own_list = family is not None and not family.uses_release_auto
    if own_list:
        # The family's selector asks every variant with its own key: no activation
        # filter, no override, no fallback (fused_moe/oracle/mxfp4.py:763-835).
        filtered = list(names)
    else:
        unfiltered = not auto and normalize_backend_name(req.moe_backend) in \
            release.unfiltered_names
        filtered = _filtered(names, requested, release, matrix, unfiltered)
    # the kept variants as vLLM asks them (pinned under the batched format: their
    # batched twins), then the filtered-out ones as named (reported)
    kept = filtered if auto else _substituted(filtered, req, release)
    ordered = kept + [n for n in names if n not in filtered and n not in kept]
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
        verdict = _verdict(release.variant[n], matrix.by_name[n], req, release, not auto,
                           routing)
        if verdict.reason is None:
            verdict = _passing_note(release.variant[n], n, req, family=family,
                                    requested=requested)
        gates.append(verdict)
    order = [i for i, v in enumerate(gates) if v.reason is None]
    retry = dict(release.platform_retry).get(req.device.platform) \
        if auto and not own_list else None
    if not order and retry is not None:
        # vLLM asks the platform's own variant once more, with BF16 activations
        # (_return_or_raise: the requested-backend class list).
        verdict = _verdict(release.variant[retry], matrix.by_name[retry], req, release, True,
                           routing)
        if verdict.reason is None:
            verdict = _passing_note(release.variant[retry], retry, req, retried=True)
            if retry in ordered:
                gates[ordered.index(retry)] = verdict
            else:
                candidates += (matrix.by_name[retry],)
                gates.append(verdict)
                ordered.append(retry)
            return _outcome(candidates, gates, [ordered.index(retry)], release, req, requested,
                            retried=True, family=family, routing=routing, pinned=True)
    return _outcome(candidates, gates, order, release, req, requested, family=family,
                    routing=routing, pinned=not auto)


def _check_eplb(req: SelectionRequest, release: Release, family: Family | None,
                winner: str) -> None:
    """After the kernel is chosen, a quant method without EPLB support refuses the layer
    (routed_experts.py:186-199): the model fails to load."""
    if not req.parallel.enable_eplb:
        return
    record = checkpoint_for(req, release)
    if record is not None:
        method = record.moe_method
        supports = record.supports_eplb or winner in record.eplb_variants
    elif family is not None:
        method, supports = family.quant_method, family.supports_eplb
    else:
        return
    if not supports:
        raise ConfigError("enable_eplb", f"off for this MXFP4 layer in vLLM {release.version} "
                          f"({method}.supports_eplb is false; the model fails to load)", "on",
                          "drop --enable-eplb")


def _own_choice(req: SelectionRequest, record: Checkpoint, matrix: Matrix,
                release: Release) -> VllmOutcome:
    """A quant method that picks its kernel itself (compressed-tensors MXFP4): the first
    of ``own_order`` whose device gate passes, the last one regardless; ``--moe-backend``
    is not read (outside ``oracle_names``)."""
    arch = req.device.name
    last = len(record.own_order) - 1
    winner = next(i for i, name in enumerate(record.own_order)
                  if i == last or arch in release.variant[name].archs)
    candidates = tuple(matrix.by_name[n] for n in record.own_order)
    gates = []
    for i, name in enumerate(record.own_order):
        if i < winner:
            gates.append(no(Reason.ARCH_UNSUPPORTED, arch, f"{record.moe_method} takes it on "
                            f"{'/'.join(sorted(release.variant[name].archs))} only"))
        elif i == winner:
            notes = [f"{record.moe_method} picks its kernel itself; vLLM's MXFP4 oracle is "
                     "not asked"]
            if req.moe_backend != "auto":
                notes.append(f"--moe-backend {req.moe_backend} is ignored (only "
                             f"{', '.join(record.oracle_names)} go through the oracle)")
            if req.activation is not None:
                notes.append("the activation override is not read")
            gates.append(ok("; ".join(notes)))
        else:
            gates.append(no(Reason.NOT_AUTO_SELECTABLE, name, f"{record.moe_method} tries it "
                            f"only after {record.own_order[winner]}"))
    name = record.own_order[winner]
    _check_eplb(req, release, None, name)
    layer = req.layer
    padded = None if layer is None or layer.hidden_size is None or \
        layer.intermediate_size is None else (layer.hidden_size, layer.per_rank_intermediate)
    v = release.variant[name]
    return VllmOutcome(candidates, tuple(gates), (winner,), winner, False,
                       v.key(matrix.by_name[name]), padded, v.experts[0], ())


def _passing_note(v: Variant, name: str, req: SelectionRequest, retried: bool = False,
                  family: Family | None = None,
                  requested: QuantKey | None = None) -> GateVerdict:
    notes = []
    _, pad = _pad_note(v, req)
    if pad:
        notes.append(pad)
    if v.drops_bias and req.layer is not None and req.layer.has_bias:
        notes.append("vLLM passes the expert biases but this kernel's apply ignores them: "
                     "the layer's biases are dropped")
    if retried:
        notes.append(f"{name} is vLLM's last try on {req.device.platform} after the auto list")
    if family is not None and not family.reads_override and req.activation is not None:
        notes.append(f"vLLM's {family.selector} ignores the activation override "
                     f"{canonical_name(req.activation)} (it takes no activation key)")
    return ok("; ".join(notes))


def _outcome(candidates: tuple[Row, ...], gates: list[GateVerdict], order: list[int],
             release: Release, req: SelectionRequest, requested: QuantKey | None,
             retried: bool = False, family: Family | None = None, routing: str = "",
             pinned: bool = False) -> VllmOutcome:
    winner = order[0] if order else None
    if winner is None:
        return VllmOutcome(candidates, tuple(gates), (), None, False, None, None)
    row = candidates[winner]
    v = release.variant[row.name]
    own = v.key(row)
    if family is not None and not family.uses_release_auto:
        runs_with, fallback = own, False
    else:
        applies = v.requested_activation or (v.honours_override and requested is not None
                                             and req.activation == requested)
        runs_with = requested if applies and requested is not None else own
        fallback = requested is not None and not retried and own is None and not applies
    padded, _ = _pad_note(v, req)
    kernel_class, class_notes = None, ()
    if release.models_deployment:
        pick = pick_class(release, row.name, req, pinned, routing)
        kernel_class, class_notes = pick.chosen, pick.notes()
    _check_eplb(req, release, family, row.name)
    return VllmOutcome(candidates, tuple(gates), tuple(order), winner, fallback, runs_with,
                       padded, kernel_class, class_notes)
