"""oracle.kernels.ep in one process: the checks made before any collective, and ep_size = 1.

The multi-process behaviour (gloo groups of 2 and 4 ranks) is in test_ep_gloo.py;
the two-GPU script's CPU dry run in test_ep_check_tool.py.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from oracle.kernels import build_moe
from oracle.kernels.adapters import KernelUnavailable
from oracle.kernels.checkpoint import random_gpt_oss_layer
from oracle.kernels.ep import (
    ExpertParallelMoE,
    build_ep_moe,
    expert_range,
    shard_experts,
)
from oracle.kernels.reference import moe_reference
from oracle.matrix import MATRIX

from oracle.errors import KernelInputError, OracleError

E, H, I, K = 8, 64, 64, 4


def _layer(**kw):
    from oracle import LayerSpec

    return LayerSpec(hidden_size=H, intermediate_size=I, num_experts=E, top_k=K, activation_fn="swiglu_oai",
                     swiglu_alpha=1.702, swiglu_limit=7.0, has_bias=True, **kw)


def _select(backend="emulation", **layer_kw):
    from oracle import Device, Environment, SelectionRequest, select
    from oracle.keys import kMxfp4Static

    return select(SelectionRequest(weight=kMxfp4Static, activation=None, moe_backend=backend,
                                   device=Device.parse("cpu"), environment=Environment.assume_all(),
                                   layer=_layer(**layer_kw)))


class _Named:
    """A selection-like value naming a backend (for rows no kernel here implements)."""

    def __init__(self, backend):
        self.backend, self.activation = backend, None


@pytest.fixture(scope="module")
def weights():
    return random_gpt_oss_layer(E, H, I, seed=11)


def _inputs(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, H, generator=g).to(torch.bfloat16)
    top = torch.randn(m, E, generator=g).topk(K, -1)
    return x, top.indices.to(torch.int32), torch.softmax(top.values, -1)


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_expert_ranges_are_contiguous_and_cover_every_expert():
    spans = [expert_range(128, 2, r) for r in range(2)]
    assert spans == [(0, 64), (64, 128)]
    assert [expert_range(E, 4, r) for r in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]


@pytest.mark.parametrize("ep_size", [3, 5, 16])
def test_ep_size_must_divide_num_experts(weights, ep_size):
    with pytest.raises(KernelInputError) as info:
        build_ep_moe(_select(), weights, _layer(), ep_size=ep_size)
    err = info.value
    assert isinstance(err, OracleError) and err.what == "ep_size" and err.got == ep_size
    assert f"num_experts={E}" in err.constraint and "1, 2, 4, 8" in err.fix
    with pytest.raises(KernelInputError):
        expert_range(E, ep_size, 0)


def test_shard_is_a_view_of_the_owned_experts(weights):
    s = shard_experts(weights, 4, 3)
    assert s.num_experts == 2
    assert torch.equal(s.w13_blocks, weights.w13_blocks[6:8]) and torch.equal(s.w2_bias, weights.w2_bias[6:8])
    assert s.w13_blocks.data_ptr() == weights.w13_blocks[6].data_ptr()


def test_row_without_expert_parallelism_is_refused(weights):
    no_ep = next(r.name for r in MATRIX.rows if not r.expert_parallel)
    with pytest.raises(KernelUnavailable) as info:
        build_ep_moe(_Named(no_ep), weights, _layer(), ep_size=2)
    assert info.value.backend == no_ep and "expert_parallel" in info.value.constraint


def test_expert_parallel_only_row_is_refused_at_ep_size_1(weights):
    required = [r.name for r in MATRIX.rows if r.ep_required]
    if not required:
        pytest.skip("no ep_required row in the matrix")
    with pytest.raises(KernelUnavailable) as info:
        build_ep_moe(_Named(required[0]), weights, _layer(), ep_size=1)
    assert info.value.backend == required[0]


def test_ep_size_above_1_needs_a_process_group(weights):
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        pytest.skip("a default process group exists in this process")
    with pytest.raises(KernelInputError) as info:
        build_ep_moe(_select(), weights, _layer(), ep_size=2)
    assert info.value.what == "group"


def test_layer_ep_size_must_match(weights):
    with pytest.raises(KernelInputError) as info:
        build_ep_moe(_select(), weights, _layer(ep_size=2), ep_size=4)
    assert info.value.what == "layer.ep_size"


def test_native_scheme_needs_a_kernel_with_its_own_ep(weights):
    with pytest.raises(KernelUnavailable) as info:
        build_ep_moe(_select(), weights, _layer(), scheme="native")
    assert "ep_size / ep_rank" in info.value.constraint
    with pytest.raises(KernelInputError):
        build_ep_moe(_select(), weights, _layer(), scheme="all-to-all")


@pytest.mark.parametrize("m", [0, 1, 37])
def test_ep_size_1_equals_build_moe(weights, m):
    sel = _select()
    plain = build_moe(sel, weights, _layer())
    ep = build_ep_moe(sel, weights, _layer(), timing=True)
    assert (ep.ep_size, ep.ep_rank, ep.lo, ep.hi) == (1, 0, 0, E)
    x, ids, w = _inputs(m, seed=m)
    out = ep(x, ids, w)
    assert out.shape == (m, H) and out.dtype == torch.bfloat16
    if m:
        one = plain(x, ids, w)
        assert _rel(out, one) <= 1e-3
        ref = moe_reference(x.float(), weights, ids, w)
        assert _rel(out, ref) <= max(1e-2, _rel(one, ref) + 1e-3)
        t = ep.last_timing
        assert t.rows == m * K and t.tokens == m and t.total_s >= t.compute_s >= 0


def test_weights_are_local_with_the_global_count_from_the_layer(weights):
    sel = _select()
    ep = build_ep_moe(sel, weights, _layer(), weights_are_local=True)
    assert ep.num_experts == E
    with pytest.raises(KernelInputError):
        build_ep_moe(sel, shard_experts(weights, 2, 0), _layer(), weights_are_local=True)


@pytest.mark.parametrize("bad", ["ids_range", "nan", "top_k", "hidden", "device_dtype"])
def test_inputs_are_checked_before_the_dispatch(weights, bad):
    ep = build_ep_moe(_select(), weights, _layer())
    x, ids, w = _inputs(5)
    if bad == "ids_range":
        ids[2, 1] = E
        what = "topk_ids"
    elif bad == "nan":
        w[0, 0] = float("nan")
        what = "topk_weights"
    elif bad == "top_k":
        ids, w = ids[:, :2], w[:, :2]
        what = "topk_ids"
    elif bad == "hidden":
        x = x[:, :32]
        what = "hidden_states"
    else:
        ids = ids.float()
        what = "topk_ids"
    with pytest.raises(KernelInputError) as info:
        ep(x, ids, w)
    assert info.value.what == what


def test_checks_can_be_switched_off(weights):
    ep = build_ep_moe(_select(), weights, _layer(), check_expert_ids=False, check_finite=False)
    x, ids, w = _inputs(3)
    ids[0, 0] = E + 1  # routed nowhere: no owner, no contribution
    out = ep(x, ids, w)
    assert out.shape == (3, H)


def test_module_wraps_any_local_module(weights):
    from oracle.kernels.moe import ReferenceMoE
    from oracle.kernels.reference import GPT_OSS_SWIGLU

    ep = ExpertParallelMoE(ReferenceMoE(weights, GPT_OSS_SWIGLU), num_experts=E, hidden_size=H, ep_size=1,
                           ep_rank=0, upcast_rows=True)
    x, ids, w = _inputs(9, seed=4)
    out = ep(x.float(), ids, w)
    assert _rel(out, moe_reference(x.float(), weights, ids, w)) <= 1e-5
    assert "experts=[0, 8) of 8" in ep.extra_repr()
