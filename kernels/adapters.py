"""Kernel adapters: checkpoint-native MXFP4 MoE weights -> one FlashInfer backend each.

Every adapter has the same two-step API::

    adapter = CutlassW4A16Sm90Adapter()          # one per FlashInfer MXFP4 row
    prepared = adapter.prepare(weights)           # MoEWeights -> backend layout (once)
    out = adapter.run(prepared, hidden_states, topk_ids, topk_weights)

``prepare`` and ``run`` validate every input (type, dtype, shape, device,
contiguity, alignment) *before* anything is launched and raise
:class:`oracle.errors.KernelInputError` naming the tensor, the constraint, what
was given and a fix.  An adapter on a device its kernel does not support raises
:class:`KernelUnavailable` (an :class:`~oracle.errors.OracleError`) instead of
launching.

Layout facts the adapters rely on (checked on the H100 against
:func:`oracle.kernels.reference.moe_reference`, see docs/kernels.md):

* gpt-oss stores gate/up rows interleaved (gate_0, up_0, gate_1, ...); FlashInfer's
  CUTLASS MoE reads the GEMM1 output as ``[linear (=up) | gate]`` halves
  (``doActivationKernel``: linear at ``elem``, gate at ``elem + inter_size``),
  so rows (and the bias) are de-interleaved to ``[up; gate]``.
* The gpt-oss SwiGLU is FlashInfer's ``SwigluBias`` adaptor: passing
  ``swiglu_alpha`` (1.702), ``swiglu_beta`` (1.0: the ``up + 1``) and
  ``swiglu_limit`` (7.0) per expert to ``cutlass_fused_moe`` selects it.
* The SM90 mixed-input GEMM needs H and I multiples of 128 (scale folding is per
  64x128 block, MXFP4 K-tile 128): weights are zero-padded (zero E2M1 codes,
  unit scales, zero bias), so padded rows/columns contribute exactly nothing;
  hidden states are zero-padded per call unless the caller passes them padded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from oracle.errors import KernelInputError, OracleError

from .checkpoint import MoEWeights
from .reference import GPT_OSS_SWIGLU, ActivationSpec

__all__ = [
    "KernelUnavailable",
    "CutlassW4A16Sm90Adapter",
    "PreparedCutlassW4A16",
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


# --------------------------------------------------------------------------- shared checks


def _is_tensor(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise KernelInputError(name, "a torch.Tensor", type(t).__name__)
    return t


def _check_weights(weights: Any) -> MoEWeights:
    if not isinstance(weights, MoEWeights):
        raise KernelInputError("weights", "an oracle.kernels.checkpoint.MoEWeights",
                               type(weights).__name__,
                               "load it with load_gpt_oss_layer(...) or random_gpt_oss_layer(...)")
    return weights.validate()


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


def _check_arch(backend: str, device: torch.device, archs: tuple[int, ...]) -> int:
    major, minor = torch.cuda.get_device_capability(device)
    sm = major * 10 + minor
    if sm not in archs:
        names = ", ".join(f"sm{a}" for a in archs)
        raise KernelUnavailable(backend, f"run on {names}", f"sm{sm} ({torch.cuda.get_device_name(device)})",
                                "ask `mxfp4-oracle select --device sm%d` for the backend of this GPU" % sm)
    return sm


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


def _check_expert_ids(topk_ids: torch.Tensor, num_experts: int) -> None:
    """Range check of the routed ids (one device sync; opt-in on the hot path)."""
    if topk_ids.numel() == 0:
        return
    lo, hi = int(topk_ids.min()), int(topk_ids.max())
    if lo < 0 or hi >= num_experts:
        raise KernelInputError("topk_ids", f"expert ids in [0, {num_experts})", f"[{lo}, {hi}]",
                               "map global expert ids to this layer's local experts first")


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


# --------------------------------------------------------------------------- CUTLASS W4A16 (SM90)


@dataclass
class PreparedCutlassW4A16:
    """Weights in the SM90 mixed-input layout plus everything ``run`` needs."""

    device: torch.device
    num_experts: int
    hidden_size: int
    intermediate_size: int
    hidden_pad: int
    inter_pad: int
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

    @property
    def nbytes(self) -> int:
        ts = [self.fc1_weights, self.fc2_weights, *self.quant_scales]
        ts += [t for t in (self.fc1_bias, self.fc2_bias) if t is not None]
        return sum(t.numel() * t.element_size() for t in ts)

    def flashinfer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``flashinfer.fused_moe.cutlass_fused_moe`` for these weights."""
        from flashinfer.fused_moe import ActivationType

        return dict(
            fc1_expert_weights=self.fc1_weights, fc2_expert_weights=self.fc2_weights,
            output_dtype=torch.bfloat16, quant_scales=self.quant_scales,
            fc1_expert_biases=self.fc1_bias, fc2_expert_biases=self.fc2_bias,
            use_w4_group_scaling=True, activation_type=ActivationType.Swiglu,
            tune_max_num_tokens=self.max_num_tokens, **self.swiglu,
        )


def cutlass_sm90_host_layout(weights: MoEWeights, activation: ActivationSpec, alignment: int = 128,
                             order: str = "up_gate"):
    """Checkpoint MXFP4 -> the pre-interleave operands of the SM90 mixed-input MoE (pure torch).

    Returns ``(fc1 [E, 2Ip, Hp/2] u8, fc1_scales [E, 2Ip, Hp/32] u8, fc2 [E, Hp, Ip/2] u8,
    fc2_scales [E, Hp, Ip/32] u8, fc1_bias [E, 2Ip] bf16 | None, fc2_bias [E, Hp] bf16 | None)``
    on the weights' device: gate/up rows reordered to FlashInfer's ``[up; gate]``,
    H and I zero-padded to ``alignment`` (zero E2M1 codes, unit E8M0 scales 127,
    zero bias), so padded rows and columns contribute exactly nothing.
    """
    e, h, i = weights.num_experts, weights.hidden_size, weights.intermediate_size
    hp, ip = round_up(h, alignment), round_up(i, alignment)
    # blocks [E, N, K/32, 16] are the packed [E, N, K/2] bytes (two E2M1 per byte, low nibble first)
    w13 = weights.w13_blocks.reshape(e, 2 * i, h // 2)
    gate, up = _split_gate_up(w13, activation)
    sg, su = _split_gate_up(weights.w13_scales, activation)
    pad_w1, pad_s1 = {1: ip, 2: hp // 2}, {1: ip, 2: hp // 32}
    if order == "gate_up":  # diagnostic only: FlashInfer reads [linear=up; gate]
        gate, up, sg, su = up, gate, su, sg
    fc1 = torch.cat([_pad_dims(up, pad_w1), _pad_dims(gate, pad_w1)], dim=1).contiguous()
    fc1_s = torch.cat([_pad_dims(su, pad_s1, 127), _pad_dims(sg, pad_s1, 127)], dim=1).contiguous()
    fc2 = _pad_dims(weights.w2_blocks.reshape(e, h, i // 2), {1: hp, 2: ip // 2}).contiguous()
    fc2_s = _pad_dims(weights.w2_scales, {1: hp, 2: ip // 32}, 127).contiguous()
    b1 = b2 = None
    if weights.w13_bias is not None:
        bg, bu = _split_gate_up(weights.w13_bias.to(torch.bfloat16), activation)
        if order == "gate_up":
            bg, bu = bu, bg
        b1 = torch.cat([_pad_dims(bu, {1: ip}), _pad_dims(bg, {1: ip})], dim=1).contiguous()
    if weights.w2_bias is not None:
        b2 = _pad_dims(weights.w2_bias.to(torch.bfloat16), {1: hp}).contiguous()
    return fc1, fc1_s, fc2, fc2_s, b1, b2


class CutlassW4A16Sm90Adapter:
    """FLASHINFER_CUTLASS_MXFP4_BF16: FlashInfer's CUTLASS MXFP4-weight x BF16-activation MoE (SM90).

    This is the kernel behind FlashInfer's ``CutlassW4A16Runner`` /
    ``CutlassW4A16Config``, called through the flat ``cutlass_fused_moe`` API
    because the unified runner does not take GEMM biases (gpt-oss has them).
    ``module="trimmed"`` (default) builds/reuses the trimmed JIT module
    (:func:`oracle.kernels.jit.build_cutlass_w4a16_sm90`, ~25 of 248 objects);
    ``"full"`` uses FlashInfer's stock ``fused_moe_90`` (75-100 min cold build);
    ``"installed"`` uses whatever FlashInfer's loader currently returns.
    ``check_expert_ids`` adds a range check of ``topk_ids`` (one device sync per call).
    """

    backend = "FLASHINFER_CUTLASS_MXFP4_BF16"
    archs = (90,)
    activation_kinds = ("swiglu_oai", "swiglu")

    def __init__(self, *, activation: ActivationSpec = GPT_OSS_SWIGLU,
                 device: torch.device | str | None = None, max_num_tokens: int = 8192,
                 module: str = "trimmed", check_expert_ids: bool = False,
                 use_fused_finalize: bool = True, alignment: int = 128, tiles: Any = None) -> None:
        self.activation = _check_activation(self.backend, activation, self.activation_kinds)
        if not isinstance(alignment, int) or alignment < 128 or alignment % 128:
            raise KernelInputError("alignment", "a positive multiple of 128 (H and I are padded to it)", alignment)
        self.alignment = alignment
        self.tiles = tiles  # GEMM configs of the trimmed module (None: DEFAULT_TILES)
        if module not in ("trimmed", "full", "installed"):
            raise KernelInputError("module", "'trimmed', 'full' or 'installed'", repr(module))
        if not isinstance(max_num_tokens, int) or max_num_tokens < 1:
            raise KernelInputError("max_num_tokens", "a positive int", max_num_tokens)
        self.device = device
        self.max_num_tokens = max_num_tokens
        self.module = module
        self.check_expert_ids = check_expert_ids
        self.use_fused_finalize = use_fused_finalize
        self.build_info = None
        #: Debug/check aid: NaN-fill every output buffer before the kernel writes it.
        self.poison_output = False
        self._row_order = "up_gate"  # diagnostics may flip it; FlashInfer's contract is [up; gate]

    # ---- module
    def ensure_module(self) -> None:
        """Make FlashInfer's SM90 CUTLASS MoE loader serve the module this adapter wants."""
        if self.module == "trimmed":
            from oracle.kernels.jit.cutlass_w4a16_sm90 import build_cutlass_w4a16_sm90, installed_module_name

            if installed_module_name() is None or self.tiles is not None:
                kw = {} if self.tiles is None else {"tiles": self.tiles}
                self.build_info = build_cutlass_w4a16_sm90(**kw)  # cached build installs itself
        elif self.module == "full":
            from oracle.kernels.jit.cutlass_w4a16_sm90 import _INSTALLED

            original = _INSTALLED.get("original")
            if original is not None:
                from flashinfer.fused_moe import core

                core.gen_cutlass_fused_moe_sm90_module = original
                core.get_cutlass_fused_moe_module.cache_clear()
                _INSTALLED.pop("name", None)

    # ---- prepare
    def prepare(self, weights: MoEWeights) -> PreparedCutlassW4A16:
        weights = _check_weights(weights)
        device = _cuda_device(self.backend, self.device if self.device is not None else (
            weights.device if weights.device.type == "cuda" else None))
        _check_arch(self.backend, device, self.archs)
        try:
            from flashinfer.fused_moe.prepare import (
                interleave_moe_scales_for_sm90_mixed_gemm,
                interleave_moe_weights_for_sm90_mixed_gemm,
            )
        except Exception as e:  # pragma: no cover - environment
            raise KernelUnavailable(self.backend, "flashinfer-python importable", f"{type(e).__name__}: {e}",
                                    "pip install flashinfer-python==0.7.2.post1") from e
        self.ensure_module()

        e, h, i = weights.num_experts, weights.hidden_size, weights.intermediate_size
        hp, ip = round_up(h, self.alignment), round_up(i, self.alignment)
        fc1, fc1_s, fc2, fc2_s, b1, b2 = cutlass_sm90_host_layout(weights.to(device), self.activation,
                                                                  self.alignment, self._row_order)
        with torch.cuda.device(device):
            fc1_i = interleave_moe_weights_for_sm90_mixed_gemm(fc1, "fp4")
            fc2_i = interleave_moe_weights_for_sm90_mixed_gemm(fc2, "fp4")
            s1 = interleave_moe_scales_for_sm90_mixed_gemm(fc1_s)
            s2 = interleave_moe_scales_for_sm90_mixed_gemm(fc2_s)
        swiglu: dict[str, torch.Tensor] = {}
        if self.activation.kind == "swiglu_oai":
            def full(v: float) -> torch.Tensor:
                return torch.full((e,), float(v), dtype=torch.float32, device=device)

            swiglu = {"swiglu_alpha": full(self.activation.alpha), "swiglu_beta": full(1.0),
                      "swiglu_limit": full(self.activation.limit)}
        return PreparedCutlassW4A16(
            device=device, num_experts=e, hidden_size=h, intermediate_size=i, hidden_pad=hp,
            inter_pad=ip, fc1_weights=fc1_i, fc2_weights=fc2_i,
            quant_scales=[s1.view(torch.int32), s2.view(torch.int32)], fc1_bias=b1, fc2_bias=b2,
            swiglu=swiglu, activation=self.activation, max_num_tokens=self.max_num_tokens)

    # ---- run
    def check_run_inputs(self, prepared: Any, hidden_states: Any, topk_ids: Any, topk_weights: Any,
                         out: Any = None) -> tuple[int, int]:
        """All checks ``run`` does before launching; returns (M, top_k).

        One fused boolean test on the hot path (a few microseconds); only when it
        fails are the checks repeated one by one to name the offending tensor.
        """
        p, x, ids, w = prepared, hidden_states, topk_ids, topk_weights
        try:
            if (type(p) is PreparedCutlassW4A16 and out is None
                    and x.dtype is torch.bfloat16 and x.dim() == 2 and ids.dim() == 2
                    and (x.shape[1] == p.hidden_size or x.shape[1] == p.hidden_pad)
                    and ids.dtype is torch.int32 and w.dtype is torch.float32
                    and x.shape[0] == ids.shape[0] <= p.max_num_tokens and 1 <= ids.shape[1] <= p.num_experts
                    and w.shape == ids.shape and x.device == p.device and ids.device == p.device
                    and w.device == p.device and x.is_contiguous() and ids.is_contiguous()
                    and w.is_contiguous() and x.data_ptr() % 16 == 0):
                return x.shape[0], ids.shape[1]
        except (AttributeError, TypeError):
            pass
        return self._check_run_inputs_slow(prepared, hidden_states, topk_ids, topk_weights, out)

    def _check_run_inputs_slow(self, prepared: Any, hidden_states: Any, topk_ids: Any, topk_weights: Any,
                               out: Any = None) -> tuple[int, int]:
        if not isinstance(prepared, PreparedCutlassW4A16):
            raise KernelInputError("prepared", "the result of CutlassW4A16Sm90Adapter.prepare",
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
                activation_type=ActivationType.Swiglu, use_w4_group_scaling=True,
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
        """MoE forward: returns [M, H] bf16 (a view of a padded buffer when H % 128 != 0).

        ``hidden_states`` may be [M, H] (copied into a zero-padded buffer) or already
        [M, Hp] (used as is).  Not safe for concurrent use from several streams.
        """
        m, k = self.check_run_inputs(prepared, hidden_states, topk_ids, topk_weights, out)
        if self.check_expert_ids:
            _check_expert_ids(topk_ids, prepared.num_experts)
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
        if self.poison_output:
            buf.fill_(float("nan"))
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


# --------------------------------------------------------------------------- SM100 adapters


@dataclass
class PreparedFlashInferView:
    """A FlashInfer ``MoEWeightPack``-style view and the geometry ``run`` needs."""

    backend: str
    device: torch.device
    num_experts: int
    hidden_size: int
    intermediate_size: int
    hidden_pad: int
    inter_pad: int
    view: dict[str, torch.Tensor]
    activation: ActivationSpec


def _dense_canonical(weights: MoEWeights, activation: ActivationSpec, hp: int, ip: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                   torch.Tensor | None]:
    """Exact BF16 dequantization in FlashInfer's canonical [up; gate] order, zero-padded.

    MXFP4 -> BF16 is exact and FlashInfer's MXFP4 quantizers re-derive the same
    per-block scales from it, so this costs no accuracy.
    """
    e, h, i = weights.num_experts, weights.hidden_size, weights.intermediate_size
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


class _Sm100Adapter:
    """Common shape of the SM100-family adapters (validated here, runnable on SM100 only)."""

    backend = ""
    archs: tuple[int, ...] = ()
    alignment = 128
    hidden_alignment = 128
    activation_kinds: tuple[str, ...] = ("swiglu_oai", "swiglu")

    def __init__(self, *, activation: ActivationSpec = GPT_OSS_SWIGLU,
                 device: torch.device | str | None = None) -> None:
        self.activation = _check_activation(self.backend, activation, self.activation_kinds)
        self.device = device

    def _device(self, weights: MoEWeights | None = None) -> torch.device:
        want = self.device if self.device is not None else (
            weights.device if weights is not None and weights.device.type == "cuda" else None)
        dev = _cuda_device(self.backend, want)
        _check_arch(self.backend, dev, self.archs)
        return dev

    def _geometry(self, weights: MoEWeights) -> tuple[int, int, int, int, int]:
        e, h, i = weights.num_experts, weights.hidden_size, weights.intermediate_size
        return e, h, i, round_up(h, self.hidden_alignment), round_up(i, self.alignment)

    def check_run_inputs(self, prepared: Any, hidden_states: Any, topk_ids: Any, topk_weights: Any) -> tuple[int, int]:
        if not isinstance(prepared, PreparedFlashInferView) or prepared.backend != self.backend:
            raise KernelInputError("prepared", f"the result of {type(self).__name__}.prepare",
                                   type(prepared).__name__)
        x = _is_tensor("hidden_states", hidden_states)
        if x.dim() != 2 or x.shape[1] not in (prepared.hidden_size, prepared.hidden_pad):
            raise KernelInputError("hidden_states", f"a 2-D [M, {prepared.hidden_size}] tensor", tuple(x.shape))
        if x.dtype != torch.bfloat16:
            raise KernelInputError("hidden_states", "bfloat16", x.dtype, "hidden_states.to(torch.bfloat16)")
        if x.device != prepared.device:
            raise KernelInputError("hidden_states", f"on {prepared.device}", x.device)
        if not x.is_contiguous():
            raise KernelInputError("hidden_states", "contiguous (row-major)", f"strides {tuple(x.stride())}",
                                   "hidden_states.contiguous()")
        k = _check_routing(x, topk_ids, topk_weights, device=prepared.device, num_experts=prepared.num_experts)
        return x.shape[0], k


class TrtllmMxfp4Adapter(_Sm100Adapter):
    """FLASHINFER_TRTLLM_MXFP4_BF16 / _MXFP8: FlashInfer's TRT-LLM-gen MXFP4 MoE (SM100 family).

    ``act="bf16"`` (W4A16) or ``"mxfp8"`` (activations quantized by
    ``TrtllmFp4Config.prepare_activations``).  Weights go through FlashInfer's
    ``TrtllmFp4Config.prepare_weights`` (gated-act row reorder, MMA shuffle,
    scale interleave -- CUDA kernels, so the SM100 device is needed); the GEMM
    biases are permuted with FlashInfer's own row-permutation helpers and passed
    to the flat ``trtllm_fp4_block_scale_routed_moe`` (the unified runner drops
    biases).  H is padded to 256 and I to 128 (TRT-LLM tile constraints).
    Not runnable on the lent H100 (``TrtllmFp4Config.supported(90)`` is False);
    this path is unverified on hardware (docs/kernels.md).
    """

    archs = (100, 103, 107)
    hidden_alignment = 256

    def __init__(self, *, act: str = "bf16", activation: ActivationSpec = GPT_OSS_SWIGLU,
                 device: torch.device | str | None = None) -> None:
        if act not in ("bf16", "mxfp8"):
            raise KernelInputError("act", "'bf16' or 'mxfp8'", repr(act))
        self.act = act
        self.backend = "FLASHINFER_TRTLLM_MXFP4_BF16" if act == "bf16" else "FLASHINFER_TRTLLM_MXFP4_MXFP8"
        if act == "bf16":
            self.activation_kinds = ("swiglu_oai",)  # matrix: TRT-LLM W4A16 runs the SwiGLU(-OAI) family only
            self.archs = (100, 107)  # sm103 refuses MXFP4 x BF16 in FlashInfer 0.7.2 (matrix: known_bad)
        super().__init__(activation=activation, device=device)

    def _quant(self):
        from flashinfer.fused_moe.api import QuantConfig, QuantFormat

        act = QuantFormat.BF16 if self.act == "bf16" else QuantFormat.MXFP8
        return QuantConfig(weight=QuantFormat.MXFP4, activation=act)

    def prepare(self, weights: MoEWeights) -> PreparedFlashInferView:
        weights = _check_weights(weights)
        dev = self._device(weights)
        from flashinfer.fused_moe.api import TrtllmFp4Config
        from flashinfer.fused_moe.core import (_maybe_get_cached_w3_w1_permute_indices,
                                               get_w2_permute_indices_with_cache)

        e, h, i, hp, ip = self._geometry(weights)
        w1, w2, b1, b2 = _dense_canonical(weights, self.activation, hp, ip, dev)
        kwargs = dict(quant=self._quant(), num_local_experts=e, hidden_size=hp, intermediate_size=ip,
                      device=dev)
        act = _flashinfer_swiglu(self.activation)
        if act is not None:
            kwargs["activation"] = act
        view = dict(TrtllmFp4Config.prepare_weights(w1, w2, **kwargs))
        cache: dict = {}
        probe1 = torch.empty((2 * ip, hp // 2), dtype=torch.uint8, device=dev)
        probe2 = torch.empty((hp, ip // 2), dtype=torch.uint8, device=dev)
        if b1 is not None:
            p1 = _maybe_get_cached_w3_w1_permute_indices(cache, probe1, 128, is_gated_act_gemm=True)
            view["gemm1_bias"] = b1.to(dev)[:, p1].float().contiguous()
        if b2 is not None:
            p2 = get_w2_permute_indices_with_cache(cache, probe2, 128, is_gated_act_gemm=True)
            view["gemm2_bias"] = b2.to(dev)[:, p2].float().contiguous()
        return PreparedFlashInferView(self.backend, dev, e, h, i, hp, ip, view, self.activation)

    def run(self, prepared: PreparedFlashInferView, hidden_states: torch.Tensor, topk_ids: torch.Tensor,
            topk_weights: torch.Tensor) -> torch.Tensor:
        m, k = self.check_run_inputs(prepared, hidden_states, topk_ids, topk_weights)
        _check_arch(self.backend, prepared.device, self.archs)
        from flashinfer.fused_moe.api import TrtllmFp4Config
        from flashinfer.fused_moe.core import trtllm_fp4_block_scale_routed_moe

        x = hidden_states
        if x.shape[1] != prepared.hidden_pad:
            x = torch.nn.functional.pad(x, (0, prepared.hidden_pad - prepared.hidden_size))
        xq, xs = TrtllmFp4Config.prepare_activations(x, quant=self._quant())
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


class CutlassMxfp8Mxfp4Sm100Adapter(_Sm100Adapter):
    """FLASHINFER_CUTLASS_MXFP4_MXFP8: FlashInfer's CUTLASS MXFP8-activation x MXFP4-weight MoE.

    FlashInfer 0.7.2 declares SM100/103/107/110/120/121 (``CutlassMxfp8Mxfp4Config``).
    Weights: ``CutlassMxfp8Mxfp4Config.prepare_weights`` (CUDA quantizers);
    activations: ``prepare_activations`` with the swizzled CUTLASS scale layout;
    launched through the flat ``cutlass_fused_moe`` (biases + SwiGLU-OAI scalars),
    mirroring ``CutlassMxfp8Mxfp4Runner``'s argument packing.  H and I padded to 128.
    Unverified on hardware (no SM100 lent; docs/kernels.md).
    """

    backend = "FLASHINFER_CUTLASS_MXFP4_MXFP8"
    archs = (100, 103, 107, 110, 120, 121)

    def prepare(self, weights: MoEWeights) -> PreparedFlashInferView:
        weights = _check_weights(weights)
        dev = self._device(weights)
        from flashinfer.fused_moe.api import CutlassMxfp8Mxfp4Config

        e, h, i, hp, ip = self._geometry(weights)
        w1, w2, b1, b2 = _dense_canonical(weights, self.activation, hp, ip, dev)
        kwargs = dict(num_local_experts=e, hidden_size=hp, intermediate_size=ip, device=dev)
        act = _flashinfer_swiglu(self.activation)
        if act is not None:
            kwargs["activation"] = act
        view = dict(CutlassMxfp8Mxfp4Config.prepare_weights(w1, w2, **kwargs))
        if b1 is not None:
            view["fc1_expert_biases"] = b1.to(dev, torch.bfloat16).contiguous()
        if b2 is not None:
            view["fc2_expert_biases"] = b2.to(dev, torch.bfloat16).contiguous()
        if self.activation.kind == "swiglu_oai":
            for key, val in (("swiglu_alpha", self.activation.alpha), ("swiglu_beta", 1.0),
                             ("swiglu_limit", self.activation.limit)):
                view[key] = torch.full((e,), float(val), dtype=torch.float32, device=dev)
        return PreparedFlashInferView(self.backend, dev, e, h, i, hp, ip, view, self.activation)

    def run(self, prepared: PreparedFlashInferView, hidden_states: torch.Tensor, topk_ids: torch.Tensor,
            topk_weights: torch.Tensor) -> torch.Tensor:
        self.check_run_inputs(prepared, hidden_states, topk_ids, topk_weights)
        _check_arch(self.backend, prepared.device, self.archs)
        from flashinfer.fused_moe import ActivationType, cutlass_fused_moe
        from flashinfer.fused_moe.api import CutlassMxfp8Mxfp4Config, QuantConfig, QuantFormat

        x = hidden_states
        if x.shape[1] != prepared.hidden_pad:
            x = torch.nn.functional.pad(x, (0, prepared.hidden_pad - prepared.hidden_size))
        quant = QuantConfig(QuantFormat.MXFP4, QuantFormat.MXFP8, swizzled_scale_factors=True)
        xq, xs = CutlassMxfp8Mxfp4Config.prepare_activations(x, quant=quant)
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

ADAPTERS: dict[str, Any] = {
    "FLASHINFER_CUTLASS_MXFP4_BF16": CutlassW4A16Sm90Adapter,
    "FLASHINFER_TRTLLM_MXFP4_BF16": lambda **kw: TrtllmMxfp4Adapter(act="bf16", **kw),
    "FLASHINFER_TRTLLM_MXFP4_MXFP8": lambda **kw: TrtllmMxfp4Adapter(act="mxfp8", **kw),
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

