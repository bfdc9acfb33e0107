"""``build_moe``: the kernel behind an oracle :class:`~oracle.selection.Selection`, as a module.

::

    sel = oracle.select(request)                       # e.g. FLASHINFER_CUTLASS_MXFP4_BF16 on sm90
    moe = build_moe(sel, load_gpt_oss_layer(path, 0), layer_spec)
    out = moe(hidden_states, topk_ids, topk_weights)   # [M, H] bf16

``EMULATION`` maps to :class:`~oracle.kernels.emulation.EmulationMoE` (MXFP4 dequantized
once, BF16 GEMMs -- ``compute_dtype=torch.float32`` for the reference's arithmetic -- with
the QDQ of the selection's activation key: MXFP8, FP8 per tensor, FP8 per token, MXFP4;
CPU or CUDA); ``HUMMING`` to the humming-kernels adapter (:mod:`oracle.kernels.humming`;
BF16, or an FP8 per-token / per-tensor activation override); FlashInfer backends map
to the adapters in :mod:`oracle.kernels.adapters`.
Checks that need no tensors (backend known, the selection's activation key
against the backend's matrix row, layer geometry and top_k vs weights,
parallelism) happen here, before any preparation.

Input checks, one policy for every backend (EMULATION included; docs/kernels.md):
shapes, dtypes, devices are always checked before anything runs; values are checked
by default -- NaN/inf hidden states or routing weights, an E8M0 scale byte 255 or a
non-finite bias, and expert ids outside ``[0, E)`` are a KernelInputError naming the
tensor. ``build_moe(..., check_finite=False)`` skips the value check and
``check_expert_ids=False`` the id range check (each costs a pass over the input and,
together, one device sync per call; leave them off inside CUDA graph capture).
The reference always range-checks ids: it indexes with them.
"""

from __future__ import annotations

from typing import Any

import torch

from oracle.errors import ConfigError, KernelInputError
from oracle.keys import (
    Bf16Marker,
    canonical_name,
    kFp8DynamicTensorSym,
    kFp8DynamicTokenSym,
    kFp8StaticTensorSym,
    kMxfp4Dynamic,
    kMxfp4Static,
    kMxfp8Dynamic,
    kMxfp8Static,
)
from oracle.matrix import MATRIX

from .adapters import ADAPTERS, KernelUnavailable, adapter_for
from .checkpoint import MoEWeights
from .emulation import EmulationMoE
from .reference import ActivationSpec, moe_reference

__all__ = ["build_moe", "MoEModule", "EmulationMoE", "ReferenceMoE", "activation_from_layer", "IMPLEMENTED_BACKENDS"]

IMPLEMENTED_BACKENDS: tuple[str, ...] = tuple(sorted(ADAPTERS)) + ("EMULATION",)


def _activation_key(key: Any) -> Any:
    """Selection.activation with the strict-BF16 marker folded into None (both mean bf16)."""
    return None if key is None or isinstance(key, Bf16Marker) else key


#: Activation key -> the QDQ that EMULATION (and the reference's ``act_quant``) applies for it.
#: FP8 per-tensor keys are emulated with a dynamic scale (amax/448 of each GEMM input).
EMULATED_ACTIVATIONS: dict[Any, str] = {
    kMxfp8Dynamic: "mxfp8", kMxfp8Static: "mxfp8",
    kFp8DynamicTensorSym: "fp8_per_tensor", kFp8StaticTensorSym: "fp8_per_tensor",
    kFp8DynamicTokenSym: "fp8_per_token",
    kMxfp4Dynamic: "mxfp4", kMxfp4Static: "mxfp4",
}


def _act_quant(key: Any) -> str | None:
    """Selection.activation -> the reference's ``act_quant`` (None for bf16; see EMULATED_ACTIVATIONS)."""
    if key is None or isinstance(key, Bf16Marker):
        return None
    try:
        return EMULATED_ACTIVATIONS[key]
    except (KeyError, TypeError):
        pass
    raise ConfigError("selection.activation", "bf16 or one of the emulated activation keys: "
                      + ", ".join(sorted({canonical_name(k) for k in EMULATED_ACTIVATIONS})),
                      canonical_name(key), "pick another activation (see `mxfp4-oracle keys`)")


def activation_from_layer(layer: Any) -> ActivationSpec:
    """LayerSpec.activation_fn (+ swiglu_alpha/limit) -> ActivationSpec; None means gpt-oss SwiGLU."""
    fn = getattr(layer, "activation_fn", None) if layer is not None else None
    alpha = getattr(layer, "swiglu_alpha", None) if layer is not None else None
    limit = getattr(layer, "swiglu_limit", None) if layer is not None else None
    if fn in (None, "swiglu_oai"):
        return ActivationSpec("swiglu_oai", alpha=alpha, limit=limit)
    if fn == "swiglu":
        return ActivationSpec("swiglu")
    raise ConfigError("layer.activation_fn", "'swiglu_oai' or 'swiglu' for the MoE kernels here", repr(fn),
                      choices=("swiglu_oai", "swiglu"))


def _check_layer(layer: Any, weights: MoEWeights) -> None:
    if layer is None:
        return
    top_k = getattr(layer, "top_k", None)
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool)
                              or not 1 <= top_k <= weights.num_experts):
        raise KernelInputError("layer.top_k", f"an int in [1, {weights.num_experts}] (the checkpoint's "
                               "num_experts)", repr(top_k), "the model's experts_per_token")
    for field, have in (("hidden_size", weights.hidden_size), ("intermediate_size", weights.intermediate_size),
                        ("num_experts", weights.num_experts)):
        want = getattr(layer, field, None)
        if want is not None and want != have:
            raise KernelInputError(f"layer.{field}", f"equal to the checkpoint weights' {field}", want,
                                   f"{have} (from the weights)")
    has_bias = getattr(layer, "has_bias", None)
    bias_present = weights.w13_bias is not None or weights.w2_bias is not None
    if has_bias is not None and has_bias != bias_present:
        raise KernelInputError("layer.has_bias", f"{bias_present} (what the checkpoint holds)", has_bias)
    for field in ("ep_size", "tp_size"):
        v = getattr(layer, field, None)
        if v not in (None, 1):
            raise KernelInputError(f"layer.{field}", "1 (these modules run one rank's experts on one GPU)", v,
                                   "shard the weights per rank and build one module per rank with ep/tp size 1")


def _check_top_k(top_k: int | None, topk_ids: Any) -> None:
    """The routing tensor must match the layer's top_k (when the layer says it)."""
    if top_k is not None and isinstance(topk_ids, torch.Tensor) and topk_ids.dim() == 2 \
            and topk_ids.shape[1] != top_k:
        raise KernelInputError("topk_ids", f"[M, top_k={top_k}] (the layer's top_k)",
                               tuple(topk_ids.shape))


class MoEModule(torch.nn.Module):
    """A prepared FlashInfer MoE kernel: ``forward(hidden_states, topk_ids, topk_weights) -> [M, H]``."""

    def __init__(self, backend: str, adapter: Any, prepared: Any, top_k: int | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.adapter = adapter
        self.prepared = prepared
        self.top_k = top_k

    def forward(self, hidden_states: torch.Tensor, topk_ids: torch.Tensor,
                topk_weights: torch.Tensor) -> torch.Tensor:
        _check_top_k(self.top_k, topk_ids)
        return self.adapter.run(self.prepared, hidden_states, topk_ids, topk_weights)

    def extra_repr(self) -> str:
        return f"backend={self.backend}"


class ReferenceMoE(torch.nn.Module):
    """EMULATION: the pure-torch reference on the weights' device (CPU or GPU)."""

    backend = "EMULATION"

    def __init__(self, weights: MoEWeights, activation: ActivationSpec, act_quant: str | None = None,
                 top_k: int | None = None, *, check_finite: bool = True) -> None:
        super().__init__()
        _check_flag("check_finite", check_finite)
        self.weights = weights
        self.activation = activation
        self.act_quant = act_quant
        self.top_k = top_k
        self.check_finite = check_finite

    def forward(self, hidden_states: torch.Tensor, topk_ids: torch.Tensor,
                topk_weights: torch.Tensor) -> torch.Tensor:
        _check_top_k(self.top_k, topk_ids)
        return moe_reference(hidden_states, self.weights, topk_ids, topk_weights,
                             activation=self.activation, act_quant=self.act_quant,
                             check_finite=self.check_finite)

    def extra_repr(self) -> str:
        return f"backend=EMULATION, act_quant={self.act_quant}"


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise KernelInputError(name, "True or False", repr(value)[:40])


def build_moe(selection: Any, checkpoint_weights: MoEWeights, layer: Any = None, *, check_finite: bool = True,
              check_expert_ids: bool = True, **adapter_kwargs: Any):
    """The module that runs ``selection.backend`` on ``checkpoint_weights`` for ``layer``.

    ``selection``: an :class:`oracle.selection.Selection` (anything with ``.backend``
    and ``.activation``).  ``checkpoint_weights``: checkpoint-native
    :class:`MoEWeights`.  ``layer``: :class:`oracle.request.LayerSpec` or None
    (activation function, SwiGLU constants, bias, top-k, geometry are checked
    against the weights).  ``check_finite`` / ``check_expert_ids``: the value
    checks of the module docstring (on by default).  Extra keyword arguments go to
    the adapter (``device``, ``max_num_tokens``, ``module``...).
    """
    _check_flag("check_finite", check_finite)
    _check_flag("check_expert_ids", check_expert_ids)
    backend = getattr(selection, "backend", None)
    if not isinstance(backend, str):
        raise KernelInputError("selection", "an oracle Selection (with .backend and .activation)",
                               type(selection).__name__)
    if not isinstance(checkpoint_weights, MoEWeights):
        raise KernelInputError("checkpoint_weights", "an oracle.kernels.checkpoint.MoEWeights",
                               type(checkpoint_weights).__name__)
    checkpoint_weights.validate()
    _check_layer(layer, checkpoint_weights)
    activation = activation_from_layer(layer)
    top_k = getattr(layer, "top_k", None) if layer is not None else None
    selected = getattr(selection, "activation", None)

    if backend == "EMULATION":
        # Dequantize once + GEMMs in compute_dtype (default BF16), on the weights' device (CPU or
        # CUDA); the FlashInfer-only keyword arguments (device, max_num_tokens, ...) do not apply.
        return EmulationMoE(checkpoint_weights, activation, _act_quant(selected), top_k,
                            check_finite=check_finite,
                            compute_dtype=adapter_kwargs.get("compute_dtype", torch.bfloat16))
    if backend not in ADAPTERS:
        raise KernelUnavailable(backend, "one of the backends with a kernel adapter here: "
                                + ", ".join(IMPLEMENTED_BACKENDS), "no adapter",
                                "pin one of those with --moe-backend, or use EMULATION")
    row = MATRIX.by_name[backend]
    key = _activation_key(selected)
    applies = getattr(row, "applies", None)
    requested = key != row.activation and callable(applies) and applies(key)
    if key != row.activation and not requested:
        raise ConfigError("selection.activation", f"{row.activation_name} for {backend} (its matrix row), or a "
                          "key the row quantizes activations to itself (requested_activations)",
                          canonical_name(selected),
                          "re-run the selection; the backend and the activation must come from the same row")
    if requested:  # the kernel quantizes to the requested key: the adapter must implement it
        adapter_kwargs = {**adapter_kwargs, "activation_key": key}
    try:
        adapter = adapter_for(backend, activation=activation, check_finite=check_finite,
                              check_expert_ids=check_expert_ids, **adapter_kwargs)
    except TypeError as e:
        if requested and "activation_key" in str(e):
            raise KernelUnavailable(backend, f"an adapter that runs {row.activation_name} activations",
                                    f"requested {canonical_name(key)}",
                                    "select without the activation request, or use EMULATION") from None
        raise
    prepared = adapter.prepare(checkpoint_weights)
    return MoEModule(backend, adapter, prepared, top_k)
