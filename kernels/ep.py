"""Expert parallelism: one MoE layer split over the ranks of a ``torch.distributed`` group.

::

    moe = build_ep_moe(selection, weights, layer, group=ep_group)   # weights: all E experts
    out = moe(hidden_states, topk_ids, topk_weights)                # this rank's tokens -> [M, H]

Rank ``r`` of an ``ep_size``-rank group owns the contiguous experts
``[r * E / ep_size, (r + 1) * E / ep_size)`` and runs them through the module
that :func:`oracle.kernels.build_moe` builds for the selected backend on those
experts only.  Every rank passes its own tokens (any number, zero included) with
global expert ids; every rank gets back the full MoE output for its tokens.

The scheme (all-gather + reduce-scatter, the simplest correct one):

1. *Agree.*  One small all-gather of ``[ok, M, top_k, H, dtype]`` per rank.  Each
   rank checks its own inputs first; a rank whose inputs fail makes every rank
   raise (that rank its own error, the others :class:`PeerInputError` naming it),
   and ranks that disagree on ``top_k``, ``H`` or the hidden states' dtype raise
   on every rank -- nobody is left waiting in a collective.
2. *Dispatch.*  All-gather the hidden states and the routing (ids, weights),
   each rank's rows padded to the largest ``M`` of the group (padding routes
   nowhere), so every rank sees all ``ep_size * M_max`` tokens.
3. *Compute* (``scheme="rows"``, default).  Every (token, slot) routed to an
   owned expert becomes one row of a top-1 call of the local module: global id
   shifted to the local id, routing weight 1.0, no down-projection bias.  The
   rows are then biased, weighted and summed per token in float32 into this
   rank's partial output ``[ep_size * M_max, H]``.  One kernel call per rank
   with exactly the routed rows (no wasted rows for slots owned elsewhere), and
   no partial sum is rounded to bf16, so the result equals the single-GPU one up
   to float32 summation order and the kernel's own rounding of each row
   (EMULATION and the reference are called with float32 rows: nothing is rounded
   before the final cast).
   ``scheme="native"`` instead hands the gathered tokens with global ids to the
   kernel's own expert parallelism (``adapter.run(..., ep_size=, ep_rank=)``,
   e.g. FlashInfer ``cutlass_fused_moe``'s ``ep_size`` / ``ep_rank``), for
   adapters whose ``run`` takes those arguments; its partial sums are rounded
   to the kernel's output dtype.
4. *Combine.*  Reduce-scatter (sum) of the partials in ``combine_dtype``
   (float32 by default); rank ``r`` keeps its own ``M_r`` rows, cast to the
   hidden states' dtype.  (A backend without reduce-scatter: all-reduce and
   slice, the same result.)

Per call a rank sends its ``M_max`` rows once and receives ``ep_size * M_max``
rows (hidden states and routing), and reduces ``ep_size * M_max`` rows of
partials.  With ``timing=True`` every call records :class:`EPTiming` in
``last_timing`` -- agree+dispatch, compute and combine measured separately (CUDA
events on a GPU, a synchronize per call; wall clock on the CPU) -- and passes it to
``on_timing`` when given.  A collective's time includes waiting for the slowest
rank.

Which backends may be split is a matrix fact: a backend whose row says
``expert_parallel = false`` is refused for ``ep_size > 1`` (and an
``ep_required`` row for ``ep_size = 1``).  ``num_experts`` must be divisible by
``ep_size``.  Works over any process group whose backend has all-gather and
reduce-scatter/all-reduce: NCCL on GPUs (tensors on the rank's GPU) and gloo on
the CPU (the EMULATION backend; CUDA tensors are staged through the CPU).
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from oracle.matrix import MATRIX

from oracle.errors import KernelInputError, shown

from .adapters import KernelUnavailable
from .checkpoint import MoEWeights

__all__ = [
    "SCHEMES",
    "EPTiming",
    "ExpertParallelMoE",
    "PeerInputError",
    "build_ep_moe",
    "expert_range",
    "shard_experts",
]

SCHEMES = ("rows", "native")
_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


class PeerInputError(KernelInputError):
    """Another rank of the expert-parallel group refused its own inputs; names the rank."""

    def __init__(self, rank: int, error: str, message: str) -> None:
        self.rank = rank
        self.error = error
        super().__init__(f"rank {rank}'s MoE inputs", "valid on every rank of the expert-parallel group",
                         f"{error}: {message}", "fix the inputs on that rank")


@dataclass(frozen=True)
class EPTiming:
    """Seconds of one call on this rank: agree + dispatch, compute, combine, and in all.

    ``rows``: rows this rank's local module ran (routed (token, slot) pairs; for
    ``scheme="native"`` the gathered tokens).  ``tokens``: tokens of the whole group.
    """

    dispatch_s: float
    compute_s: float
    combine_s: float
    total_s: float
    rows: int
    tokens: int

    @property
    def comm_s(self) -> float:
        return self.dispatch_s + self.combine_s

    def to_dict(self) -> dict[str, float | int]:
        return dict(dataclasses.asdict(self), comm_s=self.comm_s)


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise KernelInputError(name, "a positive int", shown(value, 40))
    return value


def expert_range(num_experts: int, ep_size: int, ep_rank: int) -> tuple[int, int]:
    """``[lo, hi)``: the contiguous global expert ids rank ``ep_rank`` of ``ep_size`` owns."""
    _positive_int("num_experts", num_experts)
    _positive_int("ep_size", ep_size)
    if num_experts % ep_size:
        divisors = [d for d in range(1, num_experts + 1) if num_experts % d == 0]
        raise KernelInputError("ep_size", f"a divisor of num_experts={num_experts} (every rank owns the same "
                               "number of experts)", ep_size, "ep_size in " + ", ".join(map(str, divisors)))
    if not isinstance(ep_rank, int) or isinstance(ep_rank, bool) or not 0 <= ep_rank < ep_size:
        raise KernelInputError("ep_rank", f"an int in [0, {ep_size})", shown(ep_rank, 40))
    per = num_experts // ep_size
    return ep_rank * per, (ep_rank + 1) * per


def shard_experts(weights: MoEWeights, ep_size: int, ep_rank: int) -> MoEWeights:
    """The experts rank ``ep_rank`` of ``ep_size`` owns (views of ``weights``, no copy)."""
    if not isinstance(weights, MoEWeights):
        raise KernelInputError("weights", "an oracle.kernels.checkpoint.MoEWeights", type(weights).__name__)
    weights.validate()
    lo, hi = expert_range(weights.num_experts, ep_size, ep_rank)

    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[lo:hi]

    return MoEWeights(cut(weights.w13_blocks), cut(weights.w13_scales), cut(weights.w13_bias),
                      cut(weights.w2_blocks), cut(weights.w2_scales), cut(weights.w2_bias))


def _check_row(backend: str, ep_size: int) -> None:
    """The backend's matrix row must allow this ep_size (its expert_parallel / ep_required flags)."""
    row = MATRIX.by_name.get(backend)
    if row is None:  # unknown names are build_moe's error to report
        return
    if ep_size > 1 and not row.expert_parallel:
        raise KernelUnavailable(backend, "a backend whose matrix row supports expert parallelism "
                                "(expert_parallel = true)", f"ep_size={ep_size}",
                                "select with layer.ep_size set, so the oracle picks an expert-parallel backend")
    if ep_size == 1 and row.ep_required:
        raise KernelUnavailable(backend, "run with ep_size > 1 (its matrix row is expert-parallel only)",
                                "ep_size=1", "run it over an expert-parallel group, or select another backend")


def _group_geometry(group: Any, ep_size: int | None, ep_rank: int | None) -> tuple[int, int]:
    import torch.distributed as dist

    initialized = dist.is_available() and dist.is_initialized()
    if not initialized:
        if group is not None or (ep_size or 1) > 1:
            raise KernelInputError("group", "an initialized torch.distributed process group of ep_size ranks",
                                   "no default process group",
                                   "torch.distributed.init_process_group(...) first, or use ep_size=1")
        if ep_rank not in (None, 0):
            raise KernelInputError("ep_rank", "0 without a process group", shown(ep_rank, 40))
        return 1, 0
    world, me = dist.get_world_size(group), dist.get_rank(group)
    if me < 0:
        raise KernelInputError("group", "a process group this rank belongs to", f"rank {me}",
                               "build the expert-parallel module only on the group's members")
    if ep_size is not None and ep_size != world:
        raise KernelInputError("ep_size", f"the group's size {world} (one expert shard per rank)", ep_size,
                               "pass the expert-parallel group itself (torch.distributed.new_group)")
    if ep_rank is not None and ep_rank != me:
        raise KernelInputError("ep_rank", f"this rank's rank in the group ({me})", ep_rank, "leave it unset")
    return world, me


def _local_layer(layer: Any, num_local: int) -> Any:
    """The per-rank layer: the owned experts, no parallelism, top-k checked here instead."""
    if layer is None:
        return None
    from oracle.request import LayerSpec

    tp = getattr(layer, "tp_size", None)
    if tp not in (None, 1):
        raise KernelInputError("layer.tp_size", "1 (this module splits experts, not their matrices)", tp,
                               "use tp_size=1 with expert parallelism")
    return LayerSpec(hidden_size=getattr(layer, "hidden_size", None),
                     intermediate_size=getattr(layer, "intermediate_size", None),
                     num_experts=num_local, activation_fn=getattr(layer, "activation_fn", None),
                     swiglu_alpha=getattr(layer, "swiglu_alpha", None),
                     swiglu_limit=getattr(layer, "swiglu_limit", None))


def _takes_ep_args(module: Any) -> bool:
    run = getattr(getattr(module, "adapter", None), "run", None)
    if run is None:
        return False
    try:
        params = inspect.signature(run).parameters
    except (TypeError, ValueError):
        return False
    return "ep_size" in params and "ep_rank" in params


class ExpertParallelMoE(torch.nn.Module):
    """``forward(hidden_states, topk_ids, topk_weights) -> [M, H]`` over an expert-parallel group.

    ``local``: this rank's module (``build_moe`` on the owned experts; for
    ``scheme="rows"`` built without the down-projection bias, which is passed as
    ``w2_bias`` [E_local, H] and added here in float32).  ``num_experts``: the
    layer's global count.  See the module docstring for the scheme.
    """

    def __init__(self, local: Any, *, num_experts: int, hidden_size: int, ep_size: int, ep_rank: int,
                 group: Any = None, w2_bias: torch.Tensor | None = None, top_k: int | None = None,
                 scheme: str = "rows", upcast_rows: bool = False, combine_dtype: torch.dtype = torch.float32,
                 check_finite: bool = True, check_expert_ids: bool = True, timing: bool = False,
                 on_timing: Callable[[EPTiming], Any] | None = None, device: torch.device | str | None = None,
                 max_rows: int | None = None) -> None:
        super().__init__()
        if scheme not in SCHEMES:
            raise KernelInputError("scheme", " or ".join(map(repr, SCHEMES)), shown(scheme, 40))
        for name, flag in (("check_finite", check_finite), ("check_expert_ids", check_expert_ids),
                           ("timing", timing), ("upcast_rows", upcast_rows)):
            if not isinstance(flag, bool):
                raise KernelInputError(name, "True or False", shown(flag, 40))
        if combine_dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            raise KernelInputError("combine_dtype", "a floating torch dtype", shown(combine_dtype, 40))
        self.lo, self.hi = expert_range(num_experts, ep_size, ep_rank)
        self.local = local
        self.num_experts, self.hidden_size = num_experts, _positive_int("hidden_size", hidden_size)
        self.ep_size, self.ep_rank, self.group = ep_size, ep_rank, group
        self.w2_bias = None if w2_bias is None else w2_bias.float()
        self.top_k, self.scheme, self.upcast_rows = top_k, scheme, upcast_rows
        self.combine_dtype = combine_dtype
        self.check_finite, self.check_expert_ids = check_finite, check_expert_ids
        self.timing, self.on_timing = timing, on_timing
        self.device = torch.device(device) if device is not None else self._module_device(local)
        self.max_rows = max_rows if max_rows is not None else getattr(
            getattr(local, "prepared", None), "max_num_tokens", None)
        self.last_timing: EPTiming | None = None
        if scheme == "native" and not _takes_ep_args(local):
            raise KernelUnavailable(getattr(local, "backend", type(local).__name__),
                                    "an adapter whose run() takes ep_size / ep_rank (the kernel's own expert "
                                    "parallelism)", "no such arguments", "use scheme='rows'")

    @staticmethod
    def _module_device(local: Any) -> torch.device:
        for owner in (getattr(local, "prepared", None), getattr(local, "weights", None)):
            dev = getattr(owner, "device", None)
            if isinstance(dev, torch.device):
                return dev
        return torch.device("cpu")

    @property
    def backend(self) -> str:
        return getattr(self.local, "backend", type(self.local).__name__)

    def extra_repr(self) -> str:
        return (f"backend={self.backend}, ep={self.ep_rank}/{self.ep_size}, experts=[{self.lo}, {self.hi}) "
                f"of {self.num_experts}, scheme={self.scheme}")

    # ------------------------------------------------------------------ collectives
    def _comm_device(self) -> torch.device:
        if self.ep_size == 1:
            return self.device
        import torch.distributed as dist

        return self.device if dist.get_backend(self.group) == "nccl" else torch.device("cpu")

    def _all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """[R, ...] on every rank -> [ep_size * R, ...], rank order."""
        if self.ep_size == 1:
            return t
        import torch.distributed as dist

        dev = self._comm_device()
        src = t.to(dev).contiguous()
        out = torch.empty((self.ep_size * src.shape[0], *src.shape[1:]), dtype=src.dtype, device=dev)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(out, src, group=self.group)
        return out.to(t.device)

    def _reduce_scatter(self, t: torch.Tensor) -> torch.Tensor:
        """[ep_size * R, ...] partials -> this rank's [R, ...] slice of their sum."""
        if self.ep_size == 1:
            return t
        import torch.distributed as dist

        dev = self._comm_device()
        src = t.to(dev).contiguous()
        rows = src.shape[0] // self.ep_size
        scatter = getattr(dist, "reduce_scatter_single", None) or getattr(dist, "reduce_scatter_tensor", None)
        out = torch.empty((rows, *src.shape[1:]), dtype=src.dtype, device=dev)
        try:
            if scatter is None:
                raise NotImplementedError("no reduce_scatter in this torch")
            scatter(out, src, group=self.group)
        except (RuntimeError, NotImplementedError):  # a backend without reduce-scatter: the same sum
            dist.all_reduce(src, group=self.group)
            out = src[self.ep_rank * rows:(self.ep_rank + 1) * rows]
        return out.to(t.device)

    # ------------------------------------------------------------------ checks
    def _check_local(self, x: Any, ids: Any, w: Any) -> tuple[int, int]:
        """This rank's inputs (before any collective); returns (M, top_k)."""
        h, e = self.hidden_size, self.num_experts
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point() or x.shape[1] != h:
            raise KernelInputError("hidden_states", f"a floating-point [M, {h}] tensor",
                                   getattr(x, "shape", type(x).__name__))
        m = x.shape[0]
        if (not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != m or ids.is_floating_point()
                or ids.is_complex() or ids.dtype == torch.bool):
            raise KernelInputError("topk_ids", f"an integer [M={m}, top_k] tensor of global expert ids",
                                   (getattr(ids, "dtype", None), tuple(getattr(ids, "shape", ()))))
        k = ids.shape[1]
        if self.top_k is not None and k != self.top_k:
            raise KernelInputError("topk_ids", f"[M, top_k={self.top_k}] (the layer's top_k)", tuple(ids.shape))
        if not 1 <= k <= e:
            raise KernelInputError("topk_ids", f"top_k in [1, {e}]", k)
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != tuple(ids.shape) or not w.is_floating_point():
            raise KernelInputError("topk_weights", f"a floating-point tensor of shape {tuple(ids.shape)}",
                                   (getattr(w, "dtype", None), tuple(getattr(w, "shape", ()))))
        for name, t in (("hidden_states", x), ("topk_ids", ids), ("topk_weights", w)):
            if t.device != self.device:
                raise KernelInputError(name, f"on {self.device} like this rank's experts", t.device,
                                       f"{name}.to('{self.device}')")
        if m and (self.check_finite or self.check_expert_ids):
            flags = []
            if self.check_finite:
                flags += [torch.isfinite(x).all(), torch.isfinite(w).all()]
            if self.check_expert_ids:
                flags.append(((ids >= 0) & (ids < e)).all())
            vals = torch.stack(flags).tolist()  # one sync
            if self.check_finite:
                for name, ok in zip(("hidden_states", "topk_weights"), vals):
                    if not ok:
                        raise KernelInputError(name, "finite (no NaN/inf)", "non-finite values",
                                               "fix the upstream computation, or build with check_finite=False")
            if self.check_expert_ids and not vals[-1]:
                raise KernelInputError("topk_ids", f"global expert ids in [0, {e})",
                                       f"[{int(ids.min())}, {int(ids.max())}]",
                                       "pass the router's global ids; the module maps them to ranks")
        return m, k

    def _agree(self, x: Any, ids: Any, w: Any) -> tuple[int, int, list[int]]:
        """Step 1: every rank's (M, top_k); raises on every rank when one rank's inputs are bad."""
        error: BaseException | None = None
        m = k = 0
        try:
            m, k = self._check_local(x, ids, w)
        except Exception as exc:  # noqa: BLE001 - shared with the group, re-raised below
            error = exc
        dtype = _DTYPES.index(x.dtype) if error is None and x.dtype in _DTYPES else -1
        meta = torch.tensor([[0 if error else 1, m, k, self.hidden_size, dtype]], dtype=torch.int64,
                            device=self.device)
        table = self._all_gather(meta).tolist()
        bad = [r for r, row in enumerate(table) if not row[0]]
        if bad:  # every rank knows: the failing ones share their error text, then all raise
            texts: list[Any] = [None] * self.ep_size
            if self.ep_size > 1:
                import torch.distributed as dist

                own = (type(error).__name__, str(error)) if error is not None else None
                dist.all_gather_object(texts, own, group=self.group)
            if error is not None:
                raise error
            raise PeerInputError(bad[0], *(texts[bad[0]] or ("Error", "")))
        for field, col in (("top_k", 2), ("hidden size", 3), ("hidden-state dtype", 4)):
            vals = [row[col] if col != 4 else str(_DTYPES[row[col]]) if row[col] >= 0 else "?" for row in table]
            if len(set(vals)) != 1:
                odd = [r for r, v in enumerate(vals) if v != vals[0]]
                raise KernelInputError(f"the {field} of the group's inputs", "the same on every rank",
                                       ", ".join(f"rank {r}: {vals[r]}" for r in odd) + f" vs rank 0: {vals[0]}",
                                       "give every rank the same layer")
        return m, k, [row[1] for row in table]

    # ------------------------------------------------------------------ forward
    def forward(self, hidden_states: torch.Tensor, topk_ids: torch.Tensor,
                topk_weights: torch.Tensor) -> torch.Tensor:
        clock = _Clock(self.timing, self.device)
        m, k, counts = self._agree(hidden_states, topk_ids, topk_weights)
        x, h = hidden_states, self.hidden_size
        m_max = max(counts)
        if m_max == 0:  # nobody has tokens: nothing to dispatch
            if self.timing:
                for _ in range(3):
                    clock.mark()
                self.last_timing = clock.timing(0, 0)
            return x.new_zeros((0, h))
        # 2. dispatch: pad to m_max rows (padding routes to no expert), gather everything
        xp = x if m == m_max else torch.cat([x, x.new_zeros((m_max - m, h))])
        ids = topk_ids.to(torch.int32)
        w = topk_weights.to(torch.float32)
        if m < m_max:
            ids = torch.cat([ids, ids.new_full((m_max - m, k), -1)])
            w = torch.cat([w, w.new_zeros((m_max - m, k))])
        routing = torch.cat([ids, w.view(torch.int32)], dim=1)
        x_all = self._all_gather(xp)
        routing_all = self._all_gather(routing)
        ids_all, w_all = routing_all[:, :k], routing_all[:, k:].contiguous().view(torch.float32)
        clock.mark()
        # 3. compute this rank's partial sums
        if self.scheme == "rows":
            partial, rows = self._rows(x_all, ids_all, w_all)
        else:
            partial, rows = self._native(x_all, ids_all, w_all, counts, m_max)
        clock.mark()
        # 4. combine
        mine = self._reduce_scatter(partial)
        out = mine[:m].to(x.dtype)
        clock.mark()
        if self.timing:
            self.last_timing = clock.timing(rows, sum(counts))
            if self.on_timing is not None:
                self.on_timing(self.last_timing)
        return out

    def _call_local(self, x: torch.Tensor, ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        cap = self.max_rows if isinstance(self.max_rows, int) and self.max_rows > 0 else n
        if n <= cap:
            return self.local(x, ids, w)
        return torch.cat([self.local(x[i:i + cap], ids[i:i + cap], w[i:i + cap]) for i in range(0, n, cap)])

    def _rows(self, x_all: torch.Tensor, ids_all: torch.Tensor,
              w_all: torch.Tensor) -> tuple[torch.Tensor, int]:
        n, h = x_all.shape
        partial = torch.zeros((n, h), dtype=torch.float32, device=x_all.device)
        owned = (ids_all >= self.lo) & (ids_all < self.hi)
        tok, slot = owned.nonzero(as_tuple=True)
        rows = int(tok.numel())
        if rows:
            local_ids = (ids_all[tok, slot] - self.lo).to(torch.int32).unsqueeze(1).contiguous()
            xr = x_all.index_select(0, tok)
            if self.upcast_rows:
                xr = xr.float()
            ones = torch.ones((rows, 1), dtype=torch.float32, device=x_all.device)
            y = self._call_local(xr.contiguous(), local_ids, ones).float()
            if self.w2_bias is not None:
                y = y + self.w2_bias.index_select(0, local_ids[:, 0].long())
            partial.index_add_(0, tok, y * w_all[tok, slot].unsqueeze(1))
        return partial.to(self.combine_dtype), rows

    def _native(self, x_all: torch.Tensor, ids_all: torch.Tensor, w_all: torch.Tensor, counts: list[int],
                m_max: int) -> tuple[torch.Tensor, int]:
        n, h = x_all.shape
        real = torch.cat([torch.arange(r * m_max, r * m_max + c, device=x_all.device)
                          for r, c in enumerate(counts)])
        partial = torch.zeros((n, h), dtype=self.combine_dtype, device=x_all.device)
        xs, ids, ws = (t.index_select(0, real).contiguous() for t in (x_all, ids_all, w_all))
        y = self.local.adapter.run(self.local.prepared, xs, ids, ws, ep_size=self.ep_size, ep_rank=self.ep_rank)
        partial.index_copy_(0, real, y.to(self.combine_dtype))
        return partial, int(real.numel())


class _Clock:
    """Phase boundaries of one call: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, on: bool, device: torch.device) -> None:
        self.on = on
        self.cuda = on and device.type == "cuda"
        self.marks: list[Any] = []
        if on:
            self.mark()

    def mark(self) -> None:
        if not self.on:
            return
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def timing(self, rows: int, tokens: int) -> EPTiming:
        if self.cuda:
            self.marks[-1].synchronize()
            s = [0.0] + [self.marks[0].elapsed_time(e) / 1e3 for e in self.marks[1:]]
        else:
            s = [t - self.marks[0] for t in self.marks]
        return EPTiming(s[1] - s[0], s[2] - s[1], s[3] - s[2], s[3] - s[0], rows, tokens)


def _torch_module(local: Any) -> bool:
    """EMULATION / the reference take float32 hidden states: their rows then stay unrounded."""
    from .moe import ReferenceMoE

    return isinstance(local, ReferenceMoE) or getattr(local, "backend", None) == "EMULATION"


def build_ep_moe(selection: Any, checkpoint_weights: MoEWeights, layer: Any = None, *, group: Any = None,
                 ep_size: int | None = None, ep_rank: int | None = None, weights_are_local: bool = False,
                 scheme: str = "rows", combine_dtype: torch.dtype = torch.float32, timing: bool = False,
                 on_timing: Callable[[EPTiming], Any] | None = None, check_finite: bool = True,
                 check_expert_ids: bool = True, **adapter_kwargs: Any) -> ExpertParallelMoE:
    """This rank's :class:`ExpertParallelMoE` for ``selection.backend`` over ``group``.

    ``checkpoint_weights``: the whole layer (every rank takes its own experts with
    :func:`shard_experts`), or with ``weights_are_local=True`` only this rank's
    experts (then the global count is ``layer.num_experts``, else local x ep_size).
    ``group``: the expert-parallel process group (None: the default group; with
    no initialized group only ``ep_size=1`` is possible).  ``ep_size`` /
    ``ep_rank`` default to the group's size and this rank's rank, and must match
    them when given.  ``layer``: :class:`oracle.request.LayerSpec` of the whole
    layer (``ep_size`` in it, when set, must match).  The value checks
    (``check_finite``, ``check_expert_ids``) run once per rank on its own inputs,
    before the dispatch; the local module is built without them.  Extra keyword
    arguments go to :func:`oracle.kernels.build_moe` (``device``, ``max_num_tokens``...).
    """
    from .moe import build_moe

    backend = getattr(selection, "backend", None)
    if not isinstance(backend, str):
        raise KernelInputError("selection", "an oracle Selection (with .backend and .activation)",
                               type(selection).__name__)
    if scheme not in SCHEMES:
        raise KernelInputError("scheme", " or ".join(map(repr, SCHEMES)), shown(scheme, 40))
    if not isinstance(checkpoint_weights, MoEWeights):
        raise KernelInputError("checkpoint_weights", "an oracle.kernels.checkpoint.MoEWeights",
                               type(checkpoint_weights).__name__)
    checkpoint_weights.validate()
    layer_ep = getattr(layer, "ep_size", None) if layer is not None else None
    want = ep_size if ep_size is not None else layer_ep
    if want is not None:
        _positive_int("ep_size", want)
    if ep_size is not None and layer_ep is not None and ep_size != layer_ep:
        raise KernelInputError("layer.ep_size", f"unset or equal to ep_size={ep_size}", layer_ep)
    if want is not None:
        _check_row(backend, want)
    local_e = checkpoint_weights.num_experts
    layer_e = getattr(layer, "num_experts", None) if layer is not None else None
    if want is not None:
        total = (layer_e if layer_e is not None else local_e * want) if weights_are_local else local_e
        expert_range(total, want, 0)  # divisibility, before any collective
    world, me = _group_geometry(group, want, ep_rank)
    if want is None:
        _check_row(backend, world)
    if layer_ep is not None and layer_ep != world:
        raise KernelInputError("layer.ep_size", f"the group's size {world}", layer_ep)
    if weights_are_local:
        num_experts = layer_e if layer_e is not None else local_e * world
        if num_experts != local_e * world:
            raise KernelInputError("checkpoint_weights", f"num_experts / ep_size = {num_experts // world} "
                                   "experts (this rank's share)", local_e)
        mine = checkpoint_weights
    else:
        num_experts = local_e
        if layer_e is not None and layer_e != num_experts:
            raise KernelInputError("layer.num_experts", "equal to the checkpoint weights' num_experts",
                                   layer_e, f"{num_experts} (from the weights)")
        mine = shard_experts(checkpoint_weights, world, me)
    expert_range(num_experts, world, me)
    if check_finite:
        mine.check_finite()
    w2_bias = None
    if scheme == "rows":
        w2_bias, mine = mine.w2_bias, dataclasses.replace(mine, w2_bias=None)
    local = build_moe(selection, mine, _local_layer(layer, mine.num_experts), check_finite=False,
                      check_expert_ids=False, **adapter_kwargs)
    if getattr(local, "act_quant", None) == "fp8_per_tensor":
        raise KernelInputError("selection.activation", "not dynamic FP8 per-tensor with expert parallelism (its "
                               "scale spans all tokens of one call)", "fp8_per_tensor",
                               "an MXFP8 or BF16 activation")
    return ExpertParallelMoE(
        local, num_experts=num_experts, hidden_size=mine.hidden_size, ep_size=world, ep_rank=me, group=group,
        w2_bias=w2_bias, top_k=getattr(layer, "top_k", None) if layer is not None else None, scheme=scheme,
        upcast_rows=_torch_module(local), combine_dtype=combine_dtype, check_finite=check_finite,
        check_expert_ids=check_expert_ids, timing=timing, on_timing=on_timing)
