"""Kernel adapters: checkpoint-native MXFP4 MoE weights -> one FlashInfer backend each.

Every adapter has the same two-step API::

    adapter = CutlassW4A16Sm90Adapter()          # one per FlashInfer MXFP4 row
    prepared = adapter.prepare(weights)           # MoEWeights -> backend layout (once)
    out = adapter.run(prepared, hidden_states, topk_ids, topk_weights)

The kernel facts -- the archs it runs on, the activation key it consumes, the
activation functions it implements, the weight-layout family and the size
alignment -- are not written here: each adapter reads them from its matrix row,
``oracle.matrix.MATRIX.by_name[adapter.backend]``, when it is constructed.  The archs
an adapter runs on are the row's archs minus those the row marks ``known_bad``.
What is code here is the preparation code per layout family (``layouts``) and the
translation of an activation key into FlashInfer's format (``activation_formats``).

``prepare`` and ``run`` validate every input (type, dtype, shape, device,
contiguity, alignment) *before* anything is launched and raise
:class:`oracle.errors.KernelInputError` naming the tensor, the constraint, what
was given and a fix.  Values are checked by default too, one policy for every
adapter and the reference (docs/kernels.md, "input checks"): ``prepare`` refuses
an E8M0 scale byte 255 (NaN) and NaN/inf biases, ``run`` refuses NaN/inf hidden
states or routing weights (``check_finite=False`` skips both) and expert ids
outside ``[0, E)`` (``check_expert_ids=False`` skips it).  ``run``'s value checks
cost one pass over the inputs and one device sync per call together; turn them
off on a hot path that guarantees its inputs, and inside CUDA graph capture.
An adapter on a device its kernel does not support raises
:class:`KernelUnavailable` (an :class:`~oracle.errors.OracleError`) instead of
launching; :func:`arch_check` is that decision as a pure function (no GPU needed).

Layout facts the adapters rely on (checked on an H100 against
:func:`oracle.kernels.reference.moe_reference`, see docs/kernels.md):

* gpt-oss stores gate/up rows interleaved (gate_0, up_0, gate_1, ...); FlashInfer's
  CUTLASS MoE reads the GEMM1 output as ``[linear (=up) | gate]`` halves
  (``doActivationKernel``: linear at ``elem``, gate at ``elem + inter_size``),
  so rows (and the bias) are de-interleaved to ``[up; gate]``.
* The gpt-oss SwiGLU is FlashInfer's ``SwigluBias`` adaptor: passing
  ``swiglu_alpha`` (1.702), ``swiglu_beta`` (1.0: the ``up + 1``) and
  ``swiglu_limit`` (7.0) per expert to ``cutlass_fused_moe`` selects it.
* H and I are zero-padded to the row's ``hidden_align`` / ``intermediate_align``
  (zero E2M1 codes, unit scales, zero bias), so padded rows/columns contribute
  exactly nothing; hidden states are zero-padded per call unless the caller
  passes them padded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from oracle.errors import ConfigError, KernelInputError, OracleError
from oracle.keys import canonical_name, kFp8DynamicTokenSym, kFp8StaticTensorSym, kMxfp8Dynamic
from oracle.matrix import MATRIX

from .checkpoint import MoEWeights
from .reference import GPT_OSS_SWIGLU, ActivationSpec

try:  # the project's one arch grammar
    from oracle.platforms import Device as _Device
except ImportError:  # pragma: no cover - only while oracle.platforms is unavailable
    _Device = None

__all__ = [
    "KernelUnavailable",
    "runnable_archs",
    "sm_number",
    "arch_check",
    "CutlassW4A16Sm90Adapter",
    "CutlassHummingSm90Adapter",
    "PreparedMoE",
    "PreparedCutlassW4A16",
    "PreparedCutlassHumming",
    "humming_clamp_dequant",
    "PreparedFlashInferView",
    "TrtllmMxfp4Adapter",
    "CutlassMxfp8Mxfp4Sm100Adapter",
    "ADAPTERS",
    "adapter_for",
    "round_up",
    "cutlass_sm90_host_layout",
]


class KernelUnavailable(OracleError):
    """The backend's kernel cannot run here (device arch, missing CUDA, missing library)."""

    def __init__(self, backend: str, constraint: str, got: Any, fix: str | None = None) -> None:
        self.backend = backend
        super().__init__(f"backend {backend}", constraint, got, fix)


def round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


# --------------------------------------------------------------------------- facts from the matrix row

_SM_NAME = re.compile(r"^sm_?([1-9][0-9]{1,2})[af]?$", re.ASCII)


def sm_number(arch: int | str) -> int | None:
    """The SM number of a CUDA arch (``"sm90"`` or ``90`` -> 90); None for any other arch."""
    if isinstance(arch, int) and not isinstance(arch, bool):
        return arch
    if not isinstance(arch, str):
        return None
    if _Device is not None:
        try:
            dev = _Device.parse(arch)
        except ConfigError:
            return None
        return dev.arch if dev.platform == "cuda" and isinstance(dev.arch, int) else None
    m = _SM_NAME.match(arch.strip().lower())
    return int(m.group(1)) if m else None


def runnable_archs(row: Any) -> tuple[int, ...]:
    """SM numbers a row's kernel runs on: its CUDA archs whose status is not ``known_bad``."""
    sms = (sm_number(a) for a in row.archs if row.status_on(a).status != "known_bad")
    return tuple(sorted(sm for sm in sms if sm is not None))


def _row(backend: str) -> Any:
    row = MATRIX.by_name.get(backend)
    if row is None:
        raise ConfigError("backend", "the name of a row of the compatibility matrix (oracle.matrix.MATRIX)",
                          repr(backend), "see `mxfp4-oracle matrix`")
    return row


def arch_check(backend: str, arch: int | str, archs: Iterable[int], *, device_name: str | None = None,
               refused: Mapping[int, str] | None = None) -> int:
    """The SM number of ``arch`` if ``backend``'s kernel runs there, else :class:`KernelUnavailable`.

    Pure (no GPU needed): ``arch`` is an SM number or an arch name (``sm90``, ``gfx942``);
    ``archs`` the runnable SM numbers; ``refused`` the known_bad ones with the matrix's reason.
    """
    archs = tuple(archs)
    sm = sm_number(arch)
    if sm is not None and sm in archs:
        return sm
    where = f"sm{sm}" if sm is not None else str(arch)
    got = where + (f" ({device_name})" if device_name else "")
    reason = (refused or {}).get(sm) if sm is not None else None
    if reason:
        got += f"; the matrix marks it known_bad: {reason}"
    names = ", ".join(f"sm{a}" for a in archs) or "no arch"
    raise KernelUnavailable(backend, f"run on {names}", got,
                            f"ask `mxfp4-oracle select --device {where}` for the backend of this device")


# --------------------------------------------------------------------------- shared checks


def _is_tensor(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise KernelInputError(name, "a torch.Tensor", type(t).__name__)
    return t


def _check_weights(weights: Any, check_finite: bool = True) -> MoEWeights:
    if not isinstance(weights, MoEWeights):
        raise KernelInputError("weights", "an oracle.kernels.checkpoint.MoEWeights",
                               type(weights).__name__,
                               "load it with load_gpt_oss_layer(...) or random_gpt_oss_layer(...)")
    weights.validate()
    return weights.check_finite() if check_finite else weights


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise KernelInputError(name, "True or False", repr(value)[:40])
    return value


def _check_activation(backend: str, activation: Any, allowed: tuple[str, ...]) -> ActivationSpec:
    if not isinstance(activation, ActivationSpec):
        raise KernelInputError("activation", "an oracle.kernels.reference.ActivationSpec",
                               type(activation).__name__, "GPT_OSS_SWIGLU")
    if activation.kind not in allowed:
        raise KernelInputError("activation", f"one of {allowed} for {backend}", activation.kind)
    return activation


def _cuda_device(backend: str, device: torch.device | str | None) -> torch.device:
    if not torch.cuda.is_available():
        raise KernelUnavailable(backend, "run on a CUDA device", "no CUDA device visible",
                                "run on a GPU machine, or select the EMULATION backend")
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda":
        raise KernelUnavailable(backend, "given a CUDA device", str(dev), "pass device='cuda'")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _check_arch(backend: str, device: torch.device, archs: Iterable[int],
                refused: Mapping[int, str] | None = None) -> int:
    """:func:`arch_check` for the compute capability of a CUDA ``device``."""
    major, minor = torch.cuda.get_device_capability(device)
    return arch_check(backend, major * 10 + minor, archs, device_name=torch.cuda.get_device_name(device),
                      refused=refused)


def check_hidden_states(hidden_states: Any, hidden_size: int, device: Any,
                        widths: tuple[int, ...] | None = None) -> torch.Tensor:
    """A 2-D, contiguous bf16 [M, hidden] tensor on ``device`` (``widths``: the accepted
    last dimensions, default ``hidden_size``), else a KernelInputError naming what is off."""
    x = _is_tensor("hidden_states", hidden_states)
    if x.dim() != 2 or x.shape[1] not in (widths or (hidden_size,)):
        raise KernelInputError("hidden_states", f"a 2-D [M, {hidden_size}] tensor", tuple(x.shape))
    if x.dtype != torch.bfloat16:
        raise KernelInputError("hidden_states", "bfloat16", x.dtype, "hidden_states.to(torch.bfloat16)")
    if x.device != device:
        raise KernelInputError("hidden_states", f"on {device}", x.device)
    if not x.is_contiguous():
        raise KernelInputError("hidden_states", "contiguous (row-major)", f"strides {tuple(x.stride())}",
                               "hidden_states.contiguous()")
    return x


def _check_routing(hidden_states: torch.Tensor, topk_ids: Any, topk_weights: Any, *,
                   device: torch.device, num_experts: int) -> int:
    m = hidden_states.shape[0]
    ids = _is_tensor("topk_ids", topk_ids)
    if ids.dim() != 2 or ids.shape[0] != m:
        raise KernelInputError("topk_ids", f"a 2-D [M={m}, top_k] tensor", tuple(ids.shape))
    k = ids.shape[1]
    if not 1 <= k <= num_experts:
        raise KernelInputError("topk_ids", f"top_k in [1, {num_experts}]", k)
    if ids.dtype != torch.int32:
        raise KernelInputError("topk_ids", "int32 (the kernel's token_selected_experts)", ids.dtype,
                               "topk_ids.to(torch.int32)")
    w = _is_tensor("topk_weights", topk_weights)
    if tuple(w.shape) != tuple(ids.shape):
        raise KernelInputError("topk_weights", f"shape {tuple(ids.shape)} like topk_ids", tuple(w.shape))
    if w.dtype != torch.float32:
        raise KernelInputError("topk_weights", "float32 (the kernel's token_final_scales)", w.dtype,
                               "topk_weights.float()")
    for name, t in (("topk_ids", ids), ("topk_weights", w)):
        if t.device != device:
            raise KernelInputError(name, f"on {device} like the prepared weights", t.device,
                                   f"{name}.to('{device}')")
        if not t.is_contiguous():
            raise KernelInputError(name, "contiguous", f"strides {tuple(t.stride())}",
                                   f"{name}.contiguous()")
    return k


def _check_values(hidden_states: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
                  num_experts: int, *, finite: bool, expert_ids: bool) -> None:
    """The value checks of ``run`` (after the shape checks), with one device sync for all of them.

    ``finite``: no NaN/inf in the hidden states or the routing weights.
    ``expert_ids``: every id in ``[0, num_experts)`` (one min/max).
    """
    if (finite or expert_ids) and hidden_states.is_cuda and torch.cuda.is_current_stream_capturing():
        # A check needs the values, which a graph being captured does not have yet (and the
        # device sync would break the capture): say so instead of skipping silently.
        raise KernelInputError("check_finite / check_expert_ids", "False for a run inside CUDA graph capture",
                               "a value check during capture",
                               "build the adapter with check_finite=False, check_expert_ids=False "
                               "and check the inputs before replaying the graph")
    # Few launches, one sync: an inf-norm is NaN/inf exactly when some element is (NaN propagates
    # through max), and the ids' min/max go through float32 (exact below 2**24, monotonic above,
    # so the comparison with E is exact; the message re-reads the exact values).
    finite_checked = [(name, t) for name, t in (("hidden_states", hidden_states), ("topk_weights", topk_weights))
                      if finite and t.numel()]  # (an inf-norm of nothing is undefined; nothing is finite)
    parts = [torch.linalg.vector_norm(t, math.inf, dtype=torch.float32) for _, t in finite_checked]
    ranged = expert_ids and topk_ids.numel() > 0
    if ranged:
        parts += list(torch.aminmax(topk_ids.to(torch.float32)))
    if not parts:
        return
    vals = torch.stack(parts).tolist()  # the one sync
    for (name, _), v in zip(finite_checked, vals):
        if not math.isfinite(v):
            raise KernelInputError(name, "finite (no NaN/inf)", "non-finite values",
                                   "fix the upstream computation, or build the adapter with "
                                   "check_finite=False to skip the check")
    if ranged:
        lo, hi = vals[-2:]
        if lo < 0 or hi >= num_experts:
            lo, hi = int(topk_ids.min()), int(topk_ids.max())
            raise KernelInputError("topk_ids", f"expert ids in [0, {num_experts})", f"[{lo}, {hi}]",
                                   "map global expert ids to this layer's local experts first")


def _check_expert_ids(topk_ids: torch.Tensor, num_experts: int) -> None:
    """Range check of the routed ids alone (one device sync)."""
    if topk_ids.numel():
        _check_values(topk_ids, topk_ids, topk_ids, num_experts, finite=False, expert_ids=True)


def _split_gate_up(t: torch.Tensor, activation: ActivationSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a fused w13 tensor ([E, 2I, ...] or [E, 2I]) -> (gate, up)."""
    if activation.interleaved:
        return t[:, 0::2], t[:, 1::2]
    i = t.shape[1] // 2
    return t[:, :i], t[:, i:]


def _pad_dims(t: torch.Tensor, sizes: dict[int, int], value: float = 0) -> torch.Tensor:
    """Zero-pad (or ``value``-pad) dims of ``t`` at the end up to ``sizes[dim]``."""
    pad: list[int] = []
    for d in range(t.dim() - 1, -1, -1):
        pad += [0, sizes.get(d, t.shape[d]) - t.shape[d]]
    if not any(pad):
        return t
    return torch.nn.functional.pad(t, pad, value=value)


# --------------------------------------------------------------------------- prepared weights


@dataclass
class PreparedMoE:
    """What every prepared layer holds: the backend, its device and the (padded) geometry."""

    backend: str
    device: torch.device
    num_experts: int
    hidden_size: int
    intermediate_size: int
    hidden_pad: int
    inter_pad: int

    def padded_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """[M, H] -> [M, hidden_pad] (zero columns; ``x`` itself when already padded)."""
        if x.shape[1] == self.hidden_pad:
            return x
        return torch.nn.functional.pad(x, (0, self.hidden_pad - self.hidden_size))


@dataclass(kw_only=True)
class PreparedCutlassW4A16(PreparedMoE):
    """Weights in the SM90 mixed-input layout plus everything ``run`` needs."""

    backend: str = "FLASHINFER_CUTLASS_MXFP4_BF16"
    fc1_weights: torch.Tensor          # uint8 [E, 2Ip, Hp/2], rows [up; gate], interleaved
    fc2_weights: torch.Tensor          # uint8 [E, Hp, Ip/2]
    quant_scales: list[torch.Tensor]   # [fc1 scales, fc2 scales] folded, viewed as int32
    fc1_bias: torch.Tensor | None      # bf16 [E, 2Ip], [up; gate]
    fc2_bias: torch.Tensor | None      # bf16 [E, Hp]
    swiglu: dict[str, torch.Tensor]    # swiglu_alpha/beta/limit float32 [E] (gpt-oss SwiGLU)
    activation: ActivationSpec
    max_num_tokens: int
    workspaces: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    # hot-path caches (filled lazily by the adapter)
    fi_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)
    ws_by_call: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)
    pad_inputs: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def flashinfer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``flashinfer.fused_moe.cutlass_fused_moe`` for these weights."""
        from flashinfer.fused_moe import ActivationType

        return dict(
            fc1_expert_weights=self.fc1_weights, fc2_expert_weights=self.fc2_weights,
            output_dtype=torch.bfloat16, quant_scales=self.quant_scales,
            fc1_expert_biases=self.fc1_bias, fc2_expert_biases=self.fc2_bias,
            use_w4_group_scaling=True, activation_type=ActivationType.Swiglu,
            tune_max_num_tokens=self.max_num_tokens, **self.swiglu, **self.extra_flags,
        )

    #: FlashInfer flags besides ``use_w4_group_scaling`` (the FP8 humming path adds its own).
    extra_flags: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedFlashInferView(PreparedMoE):
    """A FlashInfer ``MoEWeightPack``-style view and the geometry ``run`` needs."""

    view: dict[str, torch.Tensor]
    activation: ActivationSpec


# --------------------------------------------------------------------------- adapter base


class _RowAdapter:
    """An adapter whose kernel facts come from its matrix row (``self.row``).

    Read from the row at construction: ``archs`` (:func:`runnable_archs`),
    ``activation_key`` (``row.activation``), ``activation_kinds``
    (``row.activation_fns``), ``layout`` (``row.layout``) and the size alignments.
    Subclasses set ``backend`` and define ``layouts`` (layout family -> the function
    preparing weights in it) and ``activation_formats`` (activation key -> the
    FlashInfer ``QuantFormat`` member their ``run`` passes for it).
    """

    backend = ""
    layouts: Mapping[str, Callable[..., Any]] = {}
    activation_formats: Mapping[Any, str] = {}

    def _init_row(self, activation: Any, device: torch.device | str | None, check_finite: bool = True,
                  check_expert_ids: bool = True, row: Any = None) -> None:
        self.check_finite = _check_flag("check_finite", check_finite)
        self.check_expert_ids = _check_flag("check_expert_ids", check_expert_ids)
        if row is None:
            row = _row(self.backend)
        elif getattr(row, "name", None) != self.backend:
            # A row object other than the matrix's (e.g. a proposed change, dataclasses.replace of
            # MATRIX.by_name[backend]) -- still a row of this backend.
            raise KernelInputError("row", f"a matrix row named {self.backend}", repr(getattr(row, "name", row))[:60])
        self.row = row
        self.archs = runnable_archs(row)
        self.activation_key = row.activation
        self.activation_kinds = tuple(row.activation_fns)
        self.layout = row.layout
        self.hidden_alignment, self.intermediate_alignment = row.hidden_align, row.intermediate_align
        self._refused = {sm_number(a): row.status_on(a).reason for a in row.archs
                         if row.status_on(a).status == "known_bad"}
        if self.layout not in self.layouts:
            raise KernelUnavailable(self.backend, "a matrix layout this adapter has preparation code for: "
                                    + ", ".join(sorted(self.layouts)), repr(self.layout))
        self._prepare_layout = self.layouts[self.layout]
        if self.activation_key not in self.activation_formats:
            raise KernelUnavailable(self.backend, "a matrix activation key this adapter runs: "
                                    + ", ".join(canonical_name(k) for k in self.activation_formats),
                                    canonical_name(self.activation_key))
        self.activation = _check_activation(self.backend, activation, self.activation_kinds)
        self.device = device

    def check_arch(self, arch: int | str, device_name: str | None = None) -> int:
        """SM number of ``arch`` if this adapter's kernel runs there, else KernelUnavailable (pure)."""
        return arch_check(self.backend, arch, self.archs, device_name=device_name, refused=self._refused)

    def _check_device_arch(self, device: torch.device) -> int:
        return _check_arch(self.backend, device, self.archs, self._refused)

    def _device(self, weights: MoEWeights | None = None) -> torch.device:
        want = self.device if self.device is not None else (
            weights.device if weights is not None and weights.device.type == "cuda" else None)
        dev = _cuda_device(self.backend, want)
        self._check_device_arch(dev)
        return dev

    def _quant_format(self):
        from flashinfer.fused_moe.api import QuantFormat

        return getattr(QuantFormat, self.activation_formats[self.activation_key])

    def prepare(self, weights: MoEWeights) -> Any:
        """Checkpoint MoEWeights -> this backend's layout (the row's ``layout``), on its device.

        Refuses malformed weights, and (``check_finite``) E8M0 scale bytes 255 and
        NaN/inf biases, before anything is moved or launched.
        """
        weights = _check_weights(weights, self.check_finite)
        dev = self._device(weights)
        return self._prepare_layout(self, weights, dev)


# --------------------------------------------------------------------------- CUTLASS W4A16 (SM90)


def cutlass_sm90_host_layout(weights: MoEWeights, activation: ActivationSpec, alignment: int,
                             intermediate_alignment: int | None = None, scale_pad: str = "unit"):
    """Checkpoint MXFP4 -> the pre-interleave operands of the SM90 mixed-input MoE (pure torch).

    Returns ``(fc1 [E, 2Ip, Hp/2] u8, fc1_scales [E, 2Ip, Hp/32] u8, fc2 [E, Hp, Ip/2] u8,
    fc2_scales [E, Hp, Ip/32] u8, fc1_bias [E, 2Ip] bf16 | None, fc2_bias [E, Hp] bf16 | None)``
    on the weights' device: gate/up rows reordered to FlashInfer's ``[up; gate]``,
    H zero-padded to ``alignment`` and I to ``intermediate_alignment`` (default: the
    same; zero E2M1 codes, unit E8M0 scales 127, zero bias), so padded rows and
    columns contribute exactly nothing.  ``scale_pad="expert_max"`` pads each expert's
    scales with that expert's largest scale byte instead of 127 (the padded codes are zero
    either way): the FP8 humming preparation clamps each expert's exponent *range*, which a
    127 outside the real range would widen.
    """
    if scale_pad not in ("unit", "expert_max"):
        raise KernelInputError("scale_pad", "'unit' or 'expert_max'", repr(scale_pad))
    e, h, i = weights.num_experts, weights.hidden_size, weights.intermediate_size
    hp, ip = round_up(h, alignment), round_up(i, intermediate_alignment or alignment)
    # blocks [E, N, K/32, 16] are the packed [E, N, K/2] bytes (two E2M1 per byte, low nibble first)
    w13 = weights.w13_blocks.reshape(e, 2 * i, h // 2)
    gate, up = _split_gate_up(w13, activation)
    sg, su = _split_gate_up(weights.w13_scales, activation)
    pad_w1, pad_s1 = {1: ip, 2: hp // 2}, {1: ip, 2: hp // 32}

    def pad_s(t: torch.Tensor, sizes: dict[int, int], per_expert: torch.Tensor | None) -> torch.Tensor:
        if per_expert is None:
            return _pad_dims(t, sizes, 127)
        out = per_expert.view(-1, 1, 1).expand(t.shape[0], sizes[1], sizes[2]).clone()
        out[:, :t.shape[1], :t.shape[2]] = t
        return out

    m13 = m2 = None
    if scale_pad == "expert_max":
        m13, m2 = weights.w13_scales.amax(dim=(1, 2)), weights.w2_scales.amax(dim=(1, 2))
    fc1 = torch.cat([_pad_dims(up, pad_w1), _pad_dims(gate, pad_w1)], dim=1).contiguous()
    fc1_s = torch.cat([pad_s(su, pad_s1, m13), pad_s(sg, pad_s1, m13)], dim=1).contiguous()
    fc2 = _pad_dims(weights.w2_blocks.reshape(e, h, i // 2), {1: hp, 2: ip // 2}).contiguous()
    fc2_s = pad_s(weights.w2_scales, {1: hp, 2: ip // 32}, m2).contiguous()
    b1 = b2 = None
    if weights.w13_bias is not None:
        bg, bu = _split_gate_up(weights.w13_bias.to(torch.bfloat16), activation)
        b1 = torch.cat([_pad_dims(bu, {1: ip}), _pad_dims(bg, {1: ip})], dim=1).contiguous()
    if weights.w2_bias is not None:
        b2 = _pad_dims(weights.w2_bias.to(torch.bfloat16), {1: hp}).contiguous()
    return fc1, fc1_s, fc2, fc2_s, b1, b2


def _prepare_cutlass_sm90_mixed_interleaved(adapter: CutlassW4A16Sm90Adapter, weights: MoEWeights,
                                            device: torch.device) -> PreparedCutlassW4A16:
    """Layout ``cutlass_sm90_mixed_interleaved``: host layout + FlashInfer's SM90 interleave kernels."""
    try:
        from flashinfer.fused_moe.prepare import (
            interleave_moe_scales_for_sm90_mixed_gemm,
            interleave_moe_weights_for_sm90_mixed_gemm,
        )
    except Exception as e:  # pragma: no cover - environment
        raise KernelUnavailable(adapter.backend, "flashinfer-python importable", f"{type(e).__name__}: {e}",
                                "pip install flashinfer-python==0.7.2.post1") from e
    adapter.ensure_module()

    e, h, i = weights.num_experts, weights.hidden_size, weights.intermediate_size
    hp, ip = round_up(h, adapter.alignment), round_up(i, adapter.alignment)
    fc1, fc1_s, fc2, fc2_s, b1, b2 = cutlass_sm90_host_layout(weights.to(device), adapter.activation,
                                                              adapter.alignment)
    with torch.cuda.device(device):
        fc1_i = interleave_moe_weights_for_sm90_mixed_gemm(fc1, "fp4")
        fc2_i = interleave_moe_weights_for_sm90_mixed_gemm(fc2, "fp4")
        s1 = interleave_moe_scales_for_sm90_mixed_gemm(fc1_s)
        s2 = interleave_moe_scales_for_sm90_mixed_gemm(fc2_s)
    swiglu: dict[str, torch.Tensor] = {}
    if adapter.activation.kind == "swiglu_oai":
        def full(v: float) -> torch.Tensor:
            return torch.full((e,), float(v), dtype=torch.float32, device=device)

        swiglu = {"swiglu_alpha": full(adapter.activation.alpha), "swiglu_beta": full(1.0),
                  "swiglu_limit": full(adapter.activation.limit)}
    return PreparedCutlassW4A16(
        backend=adapter.backend, device=device, num_experts=e, hidden_size=h, intermediate_size=i,
        hidden_pad=hp, inter_pad=ip, fc1_weights=fc1_i, fc2_weights=fc2_i,
        quant_scales=[s1.view(torch.int32), s2.view(torch.int32)], fc1_bias=b1, fc2_bias=b2,
        swiglu=swiglu, activation=adapter.activation, max_num_tokens=adapter.max_num_tokens)


class CutlassW4A16Sm90Adapter(_RowAdapter):
    """FLASHINFER_CUTLASS_MXFP4_BF16: FlashInfer's CUTLASS MXFP4-weight x BF16-activation MoE.

    This is the kernel behind FlashInfer's ``CutlassW4A16Runner`` /
    ``CutlassW4A16Config``, called through the flat ``cutlass_fused_moe`` API
    because the unified runner does not take GEMM biases (gpt-oss has them).
    ``module="trimmed"`` (default) builds/reuses the trimmed JIT module
    (:func:`oracle.kernels.jit.build_cutlass_w4a16_sm90`, ~25 of 248 objects);
    ``"full"`` uses FlashInfer's stock ``fused_moe_90`` (75-100 min cold build);
    ``"installed"`` uses whatever FlashInfer's loader currently returns.
    ``alignment``: H and I are padded to it (default: the row's alignment; any
    multiple of it).  ``tiles``: GEMM configs of the trimmed module (None: its defaults).
    ``check_finite`` (default True) refuses NaN/inf inputs and biases and E8M0 scale
    bytes 255; ``check_expert_ids`` (default True) refuses ids outside ``[0, E)``;
    together one device sync per call -- pass False for a hot path or CUDA graphs.
    """

    backend = "FLASHINFER_CUTLASS_MXFP4_BF16"
    layouts = {"cutlass_sm90_mixed_interleaved": _prepare_cutlass_sm90_mixed_interleaved}
    activation_formats = {None: "BF16"}
    prepared_type: type = PreparedCutlassW4A16
    #: FlashInfer flags of the workspace-size query besides ``use_w4_group_scaling``.
    workspace_flags: dict[str, Any] = {}
    #: The trimmed-module spec this kernel needs (oracle.kernels.jit.sm90).
    spec_name = "w4a16"

    def __init__(self, *, activation: ActivationSpec = GPT_OSS_SWIGLU,
                 device: torch.device | str | None = None, max_num_tokens: int = 8192,
                 module: str = "trimmed", check_expert_ids: bool = True, check_finite: bool = True,
                 use_fused_finalize: bool = True, alignment: int | None = None, tiles: Any = None,
                 row: Any = None) -> None:
        self._init_row(activation, device, check_finite, check_expert_ids, row)
        base = math.lcm(self.hidden_alignment, self.intermediate_alignment)
        if alignment is None:
            alignment = base
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment < base or alignment % base:
            raise KernelInputError("alignment", f"a positive multiple of {base} (the matrix row's alignment; "
                                   "H and I are padded to it)", alignment)
        self.alignment = self.hidden_alignment = self.intermediate_alignment = alignment
        self.tiles = tiles
        if module not in ("trimmed", "full", "installed"):
            raise KernelInputError("module", "'trimmed', 'full' or 'installed'", repr(module))
        if not isinstance(max_num_tokens, int) or isinstance(max_num_tokens, bool) or max_num_tokens < 1:
            raise KernelInputError("max_num_tokens", "a positive int", repr(max_num_tokens)[:40])
        self.max_num_tokens = max_num_tokens
        self.module = module
        self.use_fused_finalize = _check_flag("use_fused_finalize", use_fused_finalize)
        self.build_info = None

    # ---- module
    def ensure_module(self) -> None:
        """Make FlashInfer's SM90 CUTLASS MoE loader serve the module this adapter wants."""
        if self.module == "trimmed":
            from oracle.kernels.jit import sm90

            spec = sm90.SPECS[self.spec_name]
            if self.tiles is not None:
                self.build_info = sm90.build_trimmed_sm90((spec.with_tiles(self.tiles),))
            else:  # a module holding this spec (a union with the installed one's, if that lacks it)
                self.build_info = sm90.ensure_specs(spec) or self.build_info
        elif self.module == "full":
            from oracle.kernels.jit.cutlass_w4a16_sm90 import uninstall

            uninstall()

    # ---- run
    def check_run_inputs(self, prepared: Any, hidden_states: Any, topk_ids: Any, topk_weights: Any,
                         out: Any = None) -> tuple[int, int]:
        """All checks ``run`` does before launching; returns (M, top_k).

        Shapes, dtypes, devices, contiguity: one fused boolean test on the hot path
        (a few microseconds); only when it fails are the checks repeated one by one
        to name the offending tensor.  Then the value checks (``check_finite``,
        ``check_expert_ids``; one device sync for both).
        """
        p, x, ids, w = prepared, hidden_states, topk_ids, topk_weights
        mk = None
        try:
            if (type(p) is self.prepared_type and out is None
                    and x.dtype is torch.bfloat16 and x.dim() == 2 and ids.dim() == 2
                    and (x.shape[1] == p.hidden_size or x.shape[1] == p.hidden_pad)
                    and ids.dtype is torch.int32 and w.dtype is torch.float32
                    and x.shape[0] == ids.shape[0] <= p.max_num_tokens and 1 <= ids.shape[1] <= p.num_experts
                    and w.shape == ids.shape and x.device == p.device and ids.device == p.device
                    and w.device == p.device and x.is_contiguous() and ids.is_contiguous()
                    and w.is_contiguous() and x.data_ptr() % 16 == 0):
                mk = x.shape[0], ids.shape[1]
        except (AttributeError, TypeError):
            pass
        if mk is None:
            mk = self._check_run_inputs_slow(prepared, hidden_states, topk_ids, topk_weights, out)
        if self.check_finite or self.check_expert_ids:
            _check_values(x, ids, w, p.num_experts, finite=self.check_finite, expert_ids=self.check_expert_ids)
        return mk

    def _check_run_inputs_slow(self, prepared: Any, hidden_states: Any, topk_ids: Any, topk_weights: Any,
                               out: Any = None) -> tuple[int, int]:
        if type(prepared) is not self.prepared_type or prepared.backend != self.backend:
            raise KernelInputError("prepared", f"the result of {type(self).__name__}.prepare",
                                   type(prepared).__name__)
        x = _is_tensor("hidden_states", hidden_states)
        h, hp = prepared.hidden_size, prepared.hidden_pad
        if x.dim() != 2 or x.shape[1] not in (h, hp):
            want = f"[M, {h}]" + (f" or [M, {hp}] (pre-padded)" if hp != h else "")
            raise KernelInputError("hidden_states", f"a 2-D {want} tensor", tuple(x.shape))
        if x.dtype != torch.bfloat16:
            raise KernelInputError("hidden_states", "bfloat16 (W4A16: BF16 activations)", x.dtype,
                                   "hidden_states.to(torch.bfloat16)")
        if x.device != prepared.device:
            raise KernelInputError("hidden_states", f"on {prepared.device} like the prepared weights",
                                   x.device, f"hidden_states.to('{prepared.device}')")
        if not x.is_contiguous():
            raise KernelInputError("hidden_states", "contiguous (row-major)", f"strides {tuple(x.stride())}",
                                   "hidden_states.contiguous()")
        if x.data_ptr() % 16:
            raise KernelInputError("hidden_states", "16-byte aligned (TMA)", f"address % 16 = {x.data_ptr() % 16}",
                                   "hidden_states.clone()")
        m = x.shape[0]
        if m > prepared.max_num_tokens:
            raise KernelInputError("hidden_states", f"at most max_num_tokens={prepared.max_num_tokens} rows", m,
                                   "build the adapter with a larger max_num_tokens")
        k = _check_routing(x, topk_ids, topk_weights, device=prepared.device, num_experts=prepared.num_experts)
        if out is not None:
            o = _is_tensor("out", out)
            if tuple(o.shape) != (m, h) or o.dtype != torch.bfloat16 or o.device != prepared.device:
                raise KernelInputError("out", f"a bfloat16 [{m}, {h}] tensor on {prepared.device}",
                                       (tuple(o.shape), o.dtype, o.device))
            if not o.is_contiguous():
                raise KernelInputError("out", "contiguous", f"strides {tuple(o.stride())}")
        return m, k

    def workspace(self, prepared: PreparedCutlassW4A16, num_tokens: int, top_k: int) -> torch.Tensor:
        """FlashInfer's documented per-stream workspace, sized for a power-of-two token bucket."""
        cap = min(1 << max(0, (num_tokens - 1).bit_length()), prepared.max_num_tokens)
        cap = max(cap, num_tokens)
        key = (cap, top_k)
        ws = prepared.workspaces.get(key)
        if ws is None:
            from flashinfer.fused_moe import ActivationType
            from flashinfer.fused_moe.core import cutlass_fused_moe_workspace_size

            size = cutlass_fused_moe_workspace_size(
                cap, prepared.hidden_pad, prepared.inter_pad, prepared.num_experts, top_k,
                x_dtype=torch.bfloat16, weight_dtype=torch.uint8, output_dtype=torch.bfloat16,
                activation_type=ActivationType.Swiglu, use_w4_group_scaling=True, **self.workspace_flags,
                use_fused_finalize=self.use_fused_finalize, device=prepared.device)
            ws = torch.empty(int(size), dtype=torch.uint8, device=prepared.device)
            prepared.workspaces[key] = ws
        return ws

    def _padded_input(self, prepared: PreparedCutlassW4A16, x: torch.Tensor, m: int) -> torch.Tensor:
        """x [M, H] -> [M, Hp] in a persistent zero-padded buffer (one copy kernel, no allocation).

        The pad columns are zeroed once and never written, so they stay zero; one
        buffer per power-of-two token bucket (single-stream use, like the workspace).
        """
        cap = 1 << max(0, (m - 1).bit_length())
        buf = prepared.pad_inputs.get(cap)
        if buf is None:
            buf = torch.zeros((cap, prepared.hidden_pad), dtype=torch.bfloat16, device=prepared.device)
            prepared.pad_inputs[cap] = buf
        xb = buf[:m]
        xb[:, :prepared.hidden_size].copy_(x)
        return xb

    def run(self, prepared: PreparedCutlassW4A16, hidden_states: torch.Tensor, topk_ids: torch.Tensor,
            topk_weights: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """MoE forward: returns [M, H] bf16 (a view of a padded buffer when H is not aligned).

        ``hidden_states`` may be [M, H] (copied into a zero-padded buffer) or already
        [M, Hp] (used as is).  Not safe for concurrent use from several streams.
        """
        m, k = self.check_run_inputs(prepared, hidden_states, topk_ids, topk_weights, out)
        h, hp = prepared.hidden_size, prepared.hidden_pad
        if m == 0:
            return out if out is not None else hidden_states.new_empty((0, h))
        kw = prepared.fi_kwargs
        if not kw:
            kw.update(prepared.flashinfer_kwargs(), use_fused_finalize=self.use_fused_finalize)
        ws = prepared.ws_by_call.get((m, k))
        if ws is None:
            ws = prepared.ws_by_call[(m, k)] = self.workspace(prepared, m, k)
        x = hidden_states if hidden_states.shape[1] == hp else self._padded_input(prepared, hidden_states, m)
        direct = out is not None and hp == h
        buf = out if direct else x.new_empty((m, hp))
        self._fi_moe()(x, topk_ids, topk_weights, output=buf, workspace_buffer=ws, **kw)
        if direct:
            return buf
        if out is not None:
            out.copy_(buf[:, :h])
            return out
        return buf if hp == h else buf[:, :h]

    _fi_fn = None

    def _fi_moe(self):
        fn = CutlassW4A16Sm90Adapter._fi_fn
        if fn is None:
            from flashinfer.fused_moe import cutlass_fused_moe as fn

            CutlassW4A16Sm90Adapter._fi_fn = fn
        return fn

    def tune(self, prepared: PreparedCutlassW4A16, token_counts: list[int], top_k: int,
             seed: int = 0) -> None:
        """Run FlashInfer's autotuner for these token counts (tactics cached process-wide).

        Tactics dropped from a trimmed build fail when profiled and are skipped.
        """
        import logging

        from flashinfer.autotuner import autotune

        g = torch.Generator(device=prepared.device).manual_seed(seed)
        m = max(token_counts)
        x = torch.randn(m, prepared.hidden_size, device=prepared.device, generator=g).to(torch.bfloat16)
        ids = torch.stack([torch.randperm(prepared.num_experts, device=prepared.device, generator=g)[:top_k]
                           for _ in range(m)]).to(torch.int32)
        w = torch.softmax(torch.randn(m, top_k, device=prepared.device, generator=g), -1)
        log = logging.getLogger("flashinfer.autotuner")
        old = log.level
        log.setLevel(logging.ERROR)  # dropped tactics fail by design; keep the log readable
        try:
            with autotune(True, tuning_buckets=tuple(sorted(set(token_counts)))):
                self.run(prepared, x, ids, w)
        finally:
            log.setLevel(old)
        torch.cuda.synchronize(prepared.device)


# --------------------------------------------------------------------------- CUTLASS MXFP4 x FP8 humming (SM90)

#: Humming's fixed epilogue compensation: FlashInfer's residual slots take residual * 2**6
#: (``prepare_cutlass_humming_weights``, the ``cutlass_fused_moe`` docstring).
HUMMING_EPILOGUE_COMPENSATION = 64.0
#: E2M1 code -> value (index = the 4-bit code; bit 3 is the sign).
_E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def humming_clamp_dequant(blocks: torch.Tensor, scales: torch.Tensor, max_range: int = 11) -> torch.Tensor:
    """The MXFP4 weights the FP8 humming kernel multiplies with, dequantized (pure torch, CPU or GPU).

    ``blocks`` uint8 [E, N, K/2] (two E2M1 codes per byte, low nibble first), ``scales``
    uint8 [E, N, K/32] (E8M0).  FlashInfer's preparation (adapted from Humming) keeps at most
    ``max_range`` binades of E8M0 scale per expert: a block whose scale byte is below
    ``max(scales[e]) - max_range`` gets that floor as its scale and its codes are rewritten
    to ``code * 2**-delta`` rounded to E2M1 (FlashInfer's rewrite table), so small blocks
    lose precision or flush to zero.  This is that arithmetic, from the checkpoint bytes:
    returns float32 [E, N, K].  With a range within ``max_range`` it is the exact dequantization.
    """
    from flashinfer.fused_moe.prepare import _humming_mxfp4_w4a8_rewrite_lut_cpu

    if not 0 <= max_range <= 11:
        raise KernelInputError("max_range", "an int in [0, 11] (E4M3 exponent room)", max_range)
    e = scales.shape[0]
    flat = scales.reshape(e, -1).to(torch.int32)
    top = flat.amax(dim=1, keepdim=True)
    floor = top - torch.clamp(top - flat.amin(dim=1, keepdim=True), max=max_range)
    clamped = torch.maximum(flat, floor)
    delta = (clamped - flat).reshape(scales.shape)
    lut = _humming_mxfp4_w4a8_rewrite_lut_cpu().to(blocks.device).long()
    codes = torch.stack([blocks & 0x0F, blocks >> 4], dim=-1).reshape(*blocks.shape[:-1], -1).long()
    codes = lut[delta.repeat_interleave(32, dim=-1).long(), codes]
    values = torch.tensor(_E2M1, dtype=torch.float32, device=blocks.device)[codes]
    scale = torch.exp2(clamped.reshape(scales.shape).float() - 127.0).repeat_interleave(32, dim=-1)
    return values * scale


def _humming_preprocess(weight: torch.Tensor, raw_scale: torch.Tensor, max_range: int, chunk: int = 8):
    """FlashInfer's ``preprocess_moe_weights_for_sm90_mixed_gemm_humming``, a few experts at a time.

    The clamp is per expert, so chunking over experts is exact; it bounds the temporary
    int64 index tensors of the payload rewrite (16 bytes per weight) to ``chunk`` experts.
    """
    from flashinfer.fused_moe.prepare import preprocess_moe_weights_for_sm90_mixed_gemm_humming as pre

    outs = [pre(weight[i:i + chunk], raw_scale[i:i + chunk], max_range) for i in range(0, weight.shape[0], chunk)]
    return tuple(torch.cat([o[j] for o in outs], dim=0).contiguous() for j in range(3))


@dataclass(kw_only=True)
class PreparedCutlassHumming(PreparedCutlassW4A16):
    """SM90 humming layout: E8M0-offset-rewritten MXFP4 weights, folded offsets, per-expert residuals."""

    backend: str = "FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING"
    # quant_scales: [fc1 offsets int32 [E, 2Ip/64, Hp/128, 16, 4], fc1 residual * 2**6 [E] f32,
    #                fc2 activation global (reserved) f32 scalar, fc2 offsets int32, fc2 residual * 2**6]
    max_range: int = 11
    extra_flags: dict[str, Any] = field(default_factory=lambda: {"use_wfp4afp8_humming": True})


def _check_row_bias(adapter: Any, weights: Any) -> None:
    """Biases only where the adapter's matrix row runs them (``row.bias``)."""
    if isinstance(weights, MoEWeights) and not adapter.row.bias and (
            weights.w13_bias is not None or weights.w2_bias is not None):
        raise KernelInputError("weights.w13_bias / weights.w2_bias",
                               f"absent: the matrix row of {adapter.backend} says bias = false",
                               "GEMM biases present (gpt-oss has them)",
                               "select a backend whose row runs biases (FLASHINFER_CUTLASS_MXFP4_BF16, "
                               "HUMMING), or EMULATION")


def _prepare_cutlass_sm90_humming(adapter: CutlassHummingSm90Adapter, weights: MoEWeights,
                                  device: torch.device) -> PreparedCutlassHumming:
    """Layout ``cutlass_sm90_humming``: host layout ([up; gate]) + FlashInfer's humming preprocessing."""
    _check_row_bias(adapter, weights)
    try:
        from flashinfer.fused_moe.prepare import preprocess_moe_weights_for_sm90_mixed_gemm_humming  # noqa: F401
    except Exception as e:  # pragma: no cover - environment
        raise KernelUnavailable(adapter.backend, "flashinfer-python importable", f"{type(e).__name__}: {e}",
                                "pip install flashinfer-python==0.7.2.post1") from e
    adapter.ensure_module()
    e, h, i = weights.num_experts, weights.hidden_size, weights.intermediate_size
    hp, ip = round_up(h, adapter.alignment), round_up(i, adapter.alignment)
    fc1, fc1_s, fc2, fc2_s, b1, b2 = cutlass_sm90_host_layout(weights.to(device), adapter.activation,
                                                              adapter.alignment, scale_pad="expert_max")
    with torch.cuda.device(device):
        w1, s1, r1 = _humming_preprocess(fc1, fc1_s, adapter.max_range)
        w2, s2, r2 = _humming_preprocess(fc2, fc2_s, adapter.max_range)
    swiglu: dict[str, torch.Tensor] = {}
    if adapter.activation.kind == "swiglu_oai":
        def full(v: float) -> torch.Tensor:
            return torch.full((e,), float(v), dtype=torch.float32, device=device)

        swiglu = {"swiglu_alpha": full(adapter.activation.alpha), "swiglu_beta": full(1.0),
                  "swiglu_limit": full(adapter.activation.limit)}
    reserved = torch.ones((), dtype=torch.float32, device=device)
    scales = [s1.view(torch.int32), (r1 * HUMMING_EPILOGUE_COMPENSATION).float().contiguous(), reserved,
              s2.view(torch.int32), (r2 * HUMMING_EPILOGUE_COMPENSATION).float().contiguous()]
    return PreparedCutlassHumming(
        device=device, num_experts=e, hidden_size=h, intermediate_size=i, hidden_pad=hp, inter_pad=ip,
        fc1_weights=w1, fc2_weights=w2, quant_scales=scales, fc1_bias=b1, fc2_bias=b2, swiglu=swiglu,
        activation=adapter.activation, max_num_tokens=adapter.max_num_tokens, max_range=adapter.max_range)


class CutlassHummingSm90Adapter(CutlassW4A16Sm90Adapter):
    """FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING: FlashInfer's CUTLASS MXFP4-weight x FP8-activation MoE (SM90).

    The kernel behind FlashInfer's ``CutlassHummingRunner``, through the flat
    ``cutlass_fused_moe(..., use_w4_group_scaling=True, use_wfp4afp8_humming=True)`` with the
    five humming quant scales.  Weights from the checkpoint bytes: GEMM1 rows ``[up; gate]``,
    H and I zero-padded to the row's alignment, then FlashInfer's
    ``preprocess_moe_weights_for_sm90_mixed_gemm_humming`` (per-expert E8M0 range clamp to
    ``max_range`` binades, FP4 payload rewrite, SM90 interleave; :func:`humming_clamp_dequant`
    is what it leaves of the weights).  Activations go in as BF16; the kernel quantizes them
    to FP8 e4m3 itself, one scale per token and GEMM input (workspace ``act_fp8_token_scale``)
    -- :attr:`kernel_activation_key` -- whatever activation key the row names.  Biases and the
    gated activation: as the matrix row says (``row.bias``, ``row.activation_fns``); ``row=``
    takes another row object of this backend (e.g. a proposed change) for experiments.
    Other arguments as :class:`CutlassW4A16Sm90Adapter`; the trimmed module holds the
    ``fp8humming`` spec (:data:`oracle.kernels.jit.sm90.FP8_HUMMING`).
    """

    backend = "FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING"
    layouts = {"cutlass_sm90_humming": _prepare_cutlass_sm90_humming}
    # Whatever the row's key, the kernel quantizes per token (FlashInfer 0.7.2.post1, SM90).
    activation_formats = {kFp8StaticTensorSym: "FP8 per token (in the kernel)",
                          kFp8DynamicTokenSym: "FP8 per token (in the kernel)"}
    kernel_activation_key = kFp8DynamicTokenSym
    prepared_type = PreparedCutlassHumming
    workspace_flags = {"use_wfp4afp8_humming": True}
    spec_name = "fp8humming"

    def __init__(self, *, max_range: int = 11, activation: ActivationSpec | None = None, row: Any = None,
                 **kwargs: Any) -> None:
        if kwargs.get("tiles") is not None:
            raise KernelInputError("tiles", "None (the fp8humming spec's tiles)", repr(kwargs["tiles"])[:60])
        if activation is None:  # gpt-oss's SwiGLU where the row runs it, else plain SwiGLU
            fns = (row if row is not None else _row(self.backend)).activation_fns
            activation = GPT_OSS_SWIGLU if "swiglu_oai" in fns else ActivationSpec("swiglu")
        super().__init__(activation=activation, row=row, **kwargs)
        if not isinstance(max_range, int) or isinstance(max_range, bool) or not 0 <= max_range <= 11:
            raise KernelInputError("max_range", "an int in [0, 11] (E4M3 exponent room of the pre-MMA "
                                   "FP4 -> E4M3 conversion)", repr(max_range)[:40])
        self.max_range = max_range

    def prepare(self, weights: MoEWeights) -> PreparedCutlassHumming:
        """As :meth:`_RowAdapter.prepare`; biases the row does not run are refused after the value
        checks and before the device is looked at (no GPU needed)."""
        weights = _check_weights(weights, self.check_finite)
        _check_row_bias(self, weights)
        return self._prepare_layout(self, weights, self._device(weights))


# --------------------------------------------------------------------------- SM100-family adapters


def _dense_canonical(weights: MoEWeights, activation: ActivationSpec, hp: int, ip: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                   torch.Tensor | None]:
    """Exact BF16 dequantization in FlashInfer's canonical [up; gate] order, zero-padded.

    MXFP4 -> BF16 is exact and FlashInfer's MXFP4 quantizers re-derive the same
    per-block scales from it, so this costs no accuracy.
    """
    e = weights.num_experts
    w = weights.to(device)
    w13 = w.dense_w13(dtype=torch.bfloat16)
    gate, up = _split_gate_up(w13, activation)
    w1 = torch.cat([_pad_dims(up, {1: ip, 2: hp}), _pad_dims(gate, {1: ip, 2: hp})], dim=1)
    w2 = _pad_dims(w.dense_w2(dtype=torch.bfloat16), {1: hp, 2: ip})
    b1 = b2 = None
    if w.w13_bias is not None:
        bg, bu = _split_gate_up(w.w13_bias.float(), activation)
        b1 = torch.cat([_pad_dims(bu, {1: ip}), _pad_dims(bg, {1: ip})], dim=1)
    if w.w2_bias is not None:
        b2 = _pad_dims(w.w2_bias.float(), {1: hp})
    assert w1.shape == (e, 2 * ip, hp) and w2.shape == (e, hp, ip)
    return w1.contiguous(), w2.contiguous(), b1, b2


def _flashinfer_swiglu(activation: ActivationSpec):
    from flashinfer.fused_moe.api import SwiGLU

    if activation.kind == "swiglu_oai":
        return SwiGLU(alpha=float(activation.alpha), beta=1.0, limit=float(activation.limit))
    return None  # FlashInfer's default plain SwiGLU


class _Sm100Adapter(_RowAdapter):
    """Common shape of the adapters that prepare through FlashInfer's SM100-family configs."""

    def __init__(self, *, activation: ActivationSpec = GPT_OSS_SWIGLU,
                 device: torch.device | str | None = None, check_finite: bool = True,
                 check_expert_ids: bool = True) -> None:
        self._init_row(activation, device, check_finite, check_expert_ids)

    def _geometry(self, weights: MoEWeights) -> tuple[int, int, int, int, int]:
        e, h, i = weights.num_experts, weights.hidden_size, weights.intermediate_size
        return e, h, i, round_up(h, self.hidden_alignment), round_up(i, self.intermediate_alignment)

    def check_run_inputs(self, prepared: Any, hidden_states: Any, topk_ids: Any, topk_weights: Any) -> tuple[int, int]:
        if not isinstance(prepared, PreparedFlashInferView) or prepared.backend != self.backend:
            raise KernelInputError("prepared", f"the result of {type(self).__name__}.prepare",
                                   type(prepared).__name__)
        x = check_hidden_states(hidden_states, prepared.hidden_size, prepared.device,
                                widths=(prepared.hidden_size, prepared.hidden_pad))
        k = _check_routing(x, topk_ids, topk_weights, device=prepared.device, num_experts=prepared.num_experts)
        if self.check_finite or self.check_expert_ids:
            _check_values(x, topk_ids, topk_weights, prepared.num_experts, finite=self.check_finite,
                          expert_ids=self.check_expert_ids)
        return x.shape[0], k


def _prepare_trtllm_gen_shuffled(adapter: TrtllmMxfp4Adapter, weights: MoEWeights,
                                 device: torch.device) -> PreparedFlashInferView:
    """Layout ``trtllm_gen_shuffled``: ``TrtllmFp4Config.prepare_weights`` + permuted biases."""
    from flashinfer.fused_moe.api import TrtllmFp4Config
    from flashinfer.fused_moe.core import _maybe_get_cached_w3_w1_permute_indices, get_w2_permute_indices_with_cache

    e, h, i, hp, ip = adapter._geometry(weights)
    w1, w2, b1, b2 = _dense_canonical(weights, adapter.activation, hp, ip, device)
    kwargs = dict(quant=adapter._quant(), num_local_experts=e, hidden_size=hp, intermediate_size=ip,
                  device=device)
    act = _flashinfer_swiglu(adapter.activation)
    if act is not None:
        kwargs["activation"] = act
    view = dict(TrtllmFp4Config.prepare_weights(w1, w2, **kwargs))
    cache: dict = {}
    probe1 = torch.empty((2 * ip, hp // 2), dtype=torch.uint8, device=device)
    probe2 = torch.empty((hp, ip // 2), dtype=torch.uint8, device=device)
    if b1 is not None:
        p1 = _maybe_get_cached_w3_w1_permute_indices(cache, probe1, 128, is_gated_act_gemm=True)
        view["gemm1_bias"] = b1.to(device)[:, p1].float().contiguous()
    if b2 is not None:
        p2 = get_w2_permute_indices_with_cache(cache, probe2, 128, is_gated_act_gemm=True)
        view["gemm2_bias"] = b2.to(device)[:, p2].float().contiguous()
    return PreparedFlashInferView(adapter.backend, device, e, h, i, hp, ip, view, adapter.activation)


class TrtllmMxfp4Adapter(_Sm100Adapter):
    """FLASHINFER_TRTLLM_MXFP4_BF16 / _MXFP8: FlashInfer's TRT-LLM-gen MXFP4 MoE.

    ``backend=`` one of :attr:`serves`, or ``act=`` the activation name of its row
    (``"bf16"`` or ``"mxfp8"``; default ``"bf16"``).  Weights go through FlashInfer's
    ``TrtllmFp4Config.prepare_weights`` (gated-act row reorder, MMA shuffle, scale
    interleave -- CUDA kernels, so the device is needed); the GEMM biases are
    permuted with FlashInfer's own row-permutation helpers and passed to the flat
    ``trtllm_fp4_block_scale_routed_moe`` (the unified runner drops biases);
    activations are quantized by ``TrtllmFp4Config.prepare_activations``.
    Unverified on hardware (docs/kernels.md).
    """

    serves = ("FLASHINFER_TRTLLM_MXFP4_BF16", "FLASHINFER_TRTLLM_MXFP4_MXFP8")
    layouts = {"trtllm_gen_shuffled": _prepare_trtllm_gen_shuffled}
    activation_formats = {None: "BF16", kMxfp8Dynamic: "MXFP8"}

    def __init__(self, *, act: str | None = None, backend: str | None = None,
                 activation: ActivationSpec = GPT_OSS_SWIGLU, device: torch.device | str | None = None,
                 check_finite: bool = True, check_expert_ids: bool = True) -> None:
        by_act = {MATRIX.by_name[b].activation_name: b for b in self.serves if b in MATRIX.by_name}
        if backend is None:
            want = "bf16" if act is None else act
            if want not in by_act:
                raise KernelInputError("act", " or ".join(repr(a) for a in by_act), repr(act))
            backend = by_act[want]
        elif backend not in self.serves:
            raise KernelInputError("backend", "one of " + ", ".join(self.serves), repr(backend))
        elif act is not None and by_act.get(act) != backend:
            raise KernelInputError("act", f"{MATRIX.by_name[backend].activation_name!r} for {backend}", repr(act))
        self.backend = backend
        super().__init__(activation=activation, device=device, check_finite=check_finite,
                         check_expert_ids=check_expert_ids)
        self.act = canonical_name(self.activation_key)

    def _quant(self):
        from flashinfer.fused_moe.api import QuantConfig, QuantFormat

        return QuantConfig(weight=QuantFormat.MXFP4, activation=self._quant_format())

    def run(self, prepared: PreparedFlashInferView, hidden_states: torch.Tensor, topk_ids: torch.Tensor,
            topk_weights: torch.Tensor) -> torch.Tensor:
        m, k = self.check_run_inputs(prepared, hidden_states, topk_ids, topk_weights)
        self._check_device_arch(prepared.device)
        from flashinfer.fused_moe.api import TrtllmFp4Config
        from flashinfer.fused_moe.core import trtllm_fp4_block_scale_routed_moe

        xq, xs = TrtllmFp4Config.prepare_activations(prepared.padded_hidden(hidden_states), quant=self._quant())
        v = prepared.view
        out = trtllm_fp4_block_scale_routed_moe(
            (topk_ids, topk_weights), None, xq, xs,
            v["gemm1_weights"], v["gemm1_weights_scale"], v.get("gemm1_bias"),
            v.get("gemm1_alpha"), v.get("gemm1_beta"), v.get("gemm1_clamp_limit"),
            v["gemm2_weights"], v["gemm2_weights_scale"], v.get("gemm2_bias"),
            v.get("output1_scale_scalar"), v.get("output1_scale_gate_scalar"),
            v.get("output2_scale_scalar"), prepared.num_experts, k, None, None, prepared.inter_pad,
            0, prepared.num_experts, None, do_finalize=True)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out[:, :prepared.hidden_size]


def _prepare_cutlass_sm100_block_scaled(adapter: CutlassMxfp8Mxfp4Sm100Adapter, weights: MoEWeights,
                                        device: torch.device) -> PreparedFlashInferView:
    """Layout ``cutlass_sm100_block_scaled``: ``CutlassMxfp8Mxfp4Config.prepare_weights`` + biases."""
    from flashinfer.fused_moe.api import CutlassMxfp8Mxfp4Config

    e, h, i, hp, ip = adapter._geometry(weights)
    w1, w2, b1, b2 = _dense_canonical(weights, adapter.activation, hp, ip, device)
    kwargs = dict(num_local_experts=e, hidden_size=hp, intermediate_size=ip, device=device)
    act = _flashinfer_swiglu(adapter.activation)
    if act is not None:
        kwargs["activation"] = act
    view = dict(CutlassMxfp8Mxfp4Config.prepare_weights(w1, w2, **kwargs))
    if b1 is not None:
        view["fc1_expert_biases"] = b1.to(device, torch.bfloat16).contiguous()
    if b2 is not None:
        view["fc2_expert_biases"] = b2.to(device, torch.bfloat16).contiguous()
    if adapter.activation.kind == "swiglu_oai":
        for key, val in (("swiglu_alpha", adapter.activation.alpha), ("swiglu_beta", 1.0),
                         ("swiglu_limit", adapter.activation.limit)):
            view[key] = torch.full((e,), float(val), dtype=torch.float32, device=device)
    return PreparedFlashInferView(adapter.backend, device, e, h, i, hp, ip, view, adapter.activation)


class CutlassMxfp8Mxfp4Sm100Adapter(_Sm100Adapter):
    """FLASHINFER_CUTLASS_MXFP4_MXFP8: FlashInfer's CUTLASS MXFP8-activation x MXFP4-weight MoE.

    Weights: ``CutlassMxfp8Mxfp4Config.prepare_weights`` (CUDA quantizers);
    activations: ``prepare_activations`` with the swizzled CUTLASS scale layout;
    launched through the flat ``cutlass_fused_moe`` (biases + SwiGLU-OAI scalars),
    mirroring ``CutlassMxfp8Mxfp4Runner``'s argument packing.
    Unverified on hardware (docs/kernels.md).
    """

    backend = "FLASHINFER_CUTLASS_MXFP4_MXFP8"
    layouts = {"cutlass_sm100_block_scaled": _prepare_cutlass_sm100_block_scaled}
    activation_formats = {kMxfp8Dynamic: "MXFP8"}  # run() passes MXFP8 scaling flags

    def run(self, prepared: PreparedFlashInferView, hidden_states: torch.Tensor, topk_ids: torch.Tensor,
            topk_weights: torch.Tensor) -> torch.Tensor:
        self.check_run_inputs(prepared, hidden_states, topk_ids, topk_weights)
        self._check_device_arch(prepared.device)
        from flashinfer.fused_moe import ActivationType, cutlass_fused_moe
        from flashinfer.fused_moe.api import CutlassMxfp8Mxfp4Config, QuantConfig, QuantFormat

        quant = QuantConfig(QuantFormat.MXFP4, self._quant_format(), swizzled_scale_factors=True)
        xq, xs = CutlassMxfp8Mxfp4Config.prepare_activations(prepared.padded_hidden(hidden_states), quant=quant)
        v = prepared.view
        out = cutlass_fused_moe(
            xq, topk_ids, topk_weights, v["fc1_expert_weights"].view(torch.int64),
            v["fc2_expert_weights"].view(torch.int64), torch.bfloat16,
            [v["fc1_expert_scales"].view(torch.int32), v["fc1_input_scale"],
             v["fc2_expert_scales"].view(torch.int32), v["fc2_input_scale"]],
            fc1_expert_biases=v.get("fc1_expert_biases"), fc2_expert_biases=v.get("fc2_expert_biases"),
            input_sf=xs, swizzled_input_sf=True, use_mxfp8_act_scaling=True,
            activation_type=ActivationType.Swiglu, swiglu_alpha=v.get("swiglu_alpha"),
            swiglu_beta=v.get("swiglu_beta"), swiglu_limit=v.get("swiglu_limit"))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out[:, :prepared.hidden_size]


# --------------------------------------------------------------------------- registry

def _humming_adapter(**kwargs: Any):
    """HUMMING's adapter lives in :mod:`oracle.kernels.humming` (optional extra ``humming``)."""
    from .humming import HummingAdapter

    return HummingAdapter(**kwargs)


#: Backend name (a matrix row) -> the factory of its adapter.
ADAPTERS: dict[str, Callable[..., Any]] = {
    "HUMMING": _humming_adapter,
    "FLASHINFER_CUTLASS_MXFP4_BF16": CutlassW4A16Sm90Adapter,
    "FLASHINFER_CUTLASS_MXFP4_FP8_HUMMING": CutlassHummingSm90Adapter,
    "FLASHINFER_TRTLLM_MXFP4_BF16": partial(TrtllmMxfp4Adapter, backend="FLASHINFER_TRTLLM_MXFP4_BF16"),
    "FLASHINFER_TRTLLM_MXFP4_MXFP8": partial(TrtllmMxfp4Adapter, backend="FLASHINFER_TRTLLM_MXFP4_MXFP8"),
    "FLASHINFER_CUTLASS_MXFP4_MXFP8": CutlassMxfp8Mxfp4Sm100Adapter,
}


def adapter_for(backend: str, **kwargs: Any):
    """The adapter for a selection's backend name (see ``ADAPTERS``)."""
    try:
        factory = ADAPTERS[backend]
    except KeyError:
        from oracle.errors import UnknownBackend

        raise UnknownBackend(backend, sorted(ADAPTERS) + ["EMULATION"]) from None
    return factory(**kwargs)
