"""Expert parallelism (oracle.kernels.ep) over real torch.distributed gloo groups on the CPU.

The module-scoped fixture starts 4 worker processes (this file run as a script)
that rendezvous through a file store, run every scenario and write what they got
(relative errors, shapes, timings, errors) to JSON; the tests check the JSON.
Small shapes (E = 8, H = I = 64), so the whole group finishes in a few seconds; every
wait is bounded (gloo timeout in the workers, a deadline in the parent), so a broken
collective fails the test instead of hanging.

What is checked: EP output vs the single-process ep_size = 1 module (``build_moe``
on all experts) and vs the float32 reference; uneven token counts; a rank with no
tokens and a rank whose experts receive none; two EP groups inside one world (DP x
EP); a rank with bad inputs or a different top_k makes every rank raise (naming
it); ep_size not dividing num_experts is a KernelInputError on every rank; the
timing hook; the ``native`` scheme through a stand-in adapter with
``run(..., ep_size, ep_rank)``; and ``select_for_group`` for an expert-parallel
request (one decision, one fingerprint) and with a library hidden from one rank
(NoEligibleBackend naming that rank on every rank).  tests/test_group.py covers the
rest of the group decision.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

WORLD = 4
E, H, I, K = 8, 64, 64, 4
TOKENS = (5, 0, 13, 1)        # per rank: uneven, rank 1 has none
TIMEOUT_S = 90
TOL = 1e-3


# ----------------------------------------------------------------- shared helpers

def _layer(ep_size=None, num_experts=E):
    from oracle import LayerSpec

    return LayerSpec(hidden_size=H, intermediate_size=I, num_experts=num_experts, top_k=K,
                     activation_fn="swiglu_oai", swiglu_alpha=1.702, swiglu_limit=7.0, has_bias=True,
                     ep_size=ep_size)


def _emulation(ep_size=None):
    from oracle import Device, Environment, SelectionRequest, select
    from oracle.keys import kMxfp4Static

    return select(SelectionRequest(weight=kMxfp4Static, activation=None, moe_backend="emulation",
                                   device=Device.parse("cpu"), environment=Environment.assume_all(),
                                   layer=_layer(ep_size)))


def _inputs(m, seed, experts=None):
    """bf16 hidden states and top-K routing over ``experts`` (default: all E)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, H, generator=g).to(torch.bfloat16)
    pool = list(range(E)) if experts is None else list(experts)
    logits = torch.randn(m, len(pool), generator=g)
    top = logits.topk(K, dim=-1)
    ids = torch.tensor(pool, dtype=torch.int32)[top.indices].contiguous()
    return x, ids, torch.softmax(top.values, -1).float().contiguous()


def _rel(a, b) -> float:
    if b.numel() == 0:
        return 0.0 if a.numel() == 0 else math.inf
    return float((a.double() - b.double()).norm() / b.double().norm())


class _FakeNativeAdapter:
    """A kernel with its own expert parallelism: run(..., ep_size, ep_rank) takes global ids,
    skips the slots owned by other ranks and returns this rank's partial sum (the float32
    reference on the owned experts)."""

    def __init__(self, weights, num_experts):
        self.weights, self.num_experts = weights, num_experts

    def run(self, prepared, x, ids, w, *, ep_size, ep_rank):
        from oracle.kernels.reference import moe_reference

        per = self.num_experts // ep_size
        lo = ep_rank * per
        owned = (ids >= lo) & (ids < lo + per)
        local = torch.where(owned, ids - lo, torch.zeros_like(ids))
        w = torch.where(owned, w, torch.zeros_like(w))
        return sum(moe_reference(x.float(), self.weights, local[:, j:j + 1].contiguous(), w[:, j:j + 1].contiguous())
                   for j in range(ids.shape[1]))


class _FakeNativeModule(torch.nn.Module):
    backend = "EMULATION"

    def __init__(self, weights, num_experts):
        super().__init__()
        self.adapter = _FakeNativeAdapter(weights, num_experts)
        self.prepared = None
        self.weights = weights


# ----------------------------------------------------------------- worker side

def _record(fn):
    from oracle import OracleError
    try:
        return {"ok": True, **fn()}
    except OracleError as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc),
                "rank_field": getattr(exc, "rank", None), "what": getattr(exc, "what", None),
                "rejected": [r.to_dict() for r in getattr(exc, "rejected", [])]}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from datetime import timedelta

    import torch.distributed as dist
    from oracle.kernels import build_moe
    from oracle.kernels.checkpoint import random_gpt_oss_layer
    from oracle.kernels.ep import ExpertParallelMoE, build_ep_moe, shard_experts
    from oracle.kernels.moe import ReferenceMoE
    from oracle.kernels.reference import GPT_OSS_SWIGLU, moe_reference

    from oracle import Device, Environment, select
    from oracle.group import select_for_group
    from oracle.model import build_request

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    weights = random_gpt_oss_layer(E, H, I, seed=3)
    sel = _emulation(ep_size=world)
    plain = build_moe(_emulation(), weights, _layer())       # the single-process ep_size = 1 module
    res: dict[str, object] = {}

    def compare(moe, x, ids, w, tight=None):
        out = moe(x, ids, w)
        single = plain(x, ids, w)
        ref = moe_reference(x.float(), weights, ids, w)
        d = {"shape": list(out.shape), "dtype": str(out.dtype), "rel_vs_ep1": _rel(out, single),
             "rel_vs_ref": _rel(out, ref), "ep1_rel_vs_ref": _rel(single, ref),
             "rel_vs_ref_rounded": _rel(out, ref.to(out.dtype))}
        if tight is not None:  # the same dispatch/combine around the float32 reference
            d["tight_rel_vs_ref"] = _rel(tight(x.float(), ids, w), ref)
        if moe.last_timing is not None:
            d["timing"] = moe.last_timing.to_dict()
        return d

    def tight_module(group, ep, me):
        shard = shard_experts(weights, ep, me)
        return ExpertParallelMoE(ReferenceMoE(dataclasses.replace(shard, w2_bias=None), GPT_OSS_SWIGLU),
                                 num_experts=E, hidden_size=H, ep_size=ep, ep_rank=me, group=group,
                                 w2_bias=shard.w2_bias, top_k=K, upcast_rows=True)

    # A. the whole world, uneven token counts, rank 1 has no tokens.
    ep = build_ep_moe(sel, weights, _layer(world), timing=True)
    res["experts"] = [ep.lo, ep.hi]
    x, ids, w = _inputs(TOKENS[rank], seed=100 + rank)
    res["uneven"] = _record(lambda: compare(ep, x, ids, w, tight_module(None, world, rank)))

    # B. nobody routes to rank 1's experts (it computes no rows, still combines).
    avoid = set(range(E // world, 2 * E // world))
    x, ids, w = _inputs(7 + 3 * rank, seed=200 + rank, experts=[e for e in range(E) if e not in avoid])
    res["idle_experts"] = _record(lambda: compare(ep, x, ids, w))

    # C. DP x EP: two EP groups of 2 ranks each, every rank with its own tokens.
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    mine = groups[rank // 2]
    sub = build_ep_moe(_emulation(ep_size=2), weights, _layer(2), group=mine, timing=True)
    res["sub_experts"] = [sub.lo, sub.hi]
    x, ids, w = _inputs(9 + rank, seed=300 + rank)
    res["subgroup"] = _record(lambda: compare(sub, x, ids, w, tight_module(mine, 2, rank % 2)))

    # D. one rank's inputs are bad: that rank raises its own error, the others name it.
    x, ids, w = _inputs(4, seed=400 + rank)
    if rank == 2:
        ids = ids.clone()
        ids[1, 0] = E + 5
    res["bad_rank"] = _record(lambda: {"shape": list(ep(x, ids, w).shape)})
    x2, ids2, w2 = _inputs(3, seed=450 + rank)
    if rank == 3:
        x2 = x2.clone()
        x2[0, 0] = float("nan")
    res["nan_rank"] = _record(lambda: {"shape": list(ep(x2, ids2, w2).shape)})

    # E. ranks that disagree on top_k.
    def other_k():
        m = 3
        k = K if rank != 1 else K - 1
        moe = build_ep_moe(sel, weights, None)  # no layer top_k: the group's agreement is what fails
        return {"shape": list(moe(torch.zeros(m, H, dtype=torch.bfloat16),
                                  torch.zeros(m, k, dtype=torch.int32), torch.full((m, k), 1.0 / k)).shape)}
    res["top_k_mismatch"] = _record(other_k)

    # ... or on the hidden states' dtype; and a call where no rank has a token.
    x3, ids3, w3 = _inputs(2, seed=470 + rank)
    res["dtype_mismatch"] = _record(lambda: {"shape": list(ep(x3.float() if rank == 3 else x3, ids3, w3).shape)})
    x0, ids0, w0 = _inputs(0, seed=0)
    res["all_empty"] = _record(lambda: {"shape": list(ep(x0, ids0, w0).shape)})

    # F. ep_size that does not divide num_experts: refused on every rank before any collective.
    odd = random_gpt_oss_layer(6, H, I, seed=5)
    res["indivisible"] = _record(lambda: {"lo": build_ep_moe(sel, odd, None).lo})

    # G. the scheme that hands global ids to a kernel with its own expert parallelism.
    shard = shard_experts(weights, world, rank)
    native = ExpertParallelMoE(_FakeNativeModule(shard, E), num_experts=E, hidden_size=H, ep_size=world,
                               ep_rank=rank, scheme="native", top_k=K, timing=True)
    x, ids, w = _inputs(TOKENS[::-1][rank], seed=500 + rank)
    res["native"] = _record(lambda: compare(native, x, ids, w))

    # H. select_for_group: an expert-parallel gpt-oss-120b request, then a library hidden on rank 1.
    req = build_request("gpt-oss-120b", device="sm90", environment=Environment.assume_all(),
                        moe_backend="flashinfer_cutlass")[0]
    ep_req = req.with_(layer=req.layer.__class__(**{**req.layer.to_dict(), "ep_size": world}))

    def sel_dict(s):
        return {"backend": s.backend, "fingerprint": s.fingerprint, "eligible": list(s.eligible),
                "alone": select(ep_req).backend}
    res["group_ep"] = _record(lambda: sel_dict(select_for_group(ep_req)))
    hidden = Environment.parse("torch,triton_kernels,vllm_ops") if rank == 1 else None
    res["group_hidden_lib"] = _record(lambda: sel_dict(select_for_group(ep_req, environment=hidden)))
    res["group_device"] = str(Device.parse("sm90"))

    dist.barrier()
    dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res, sort_keys=True))


# ----------------------------------------------------------------- parent side

def _run_group(tmp_path: Path, world: int) -> list[dict]:
    from gloo_ranks import run_ranks
    return run_ranks(__file__, tmp_path, world, TIMEOUT_S, "the expert-parallel group")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    return _run_group(tmp_path_factory.mktemp("ep_gloo"), WORLD)


def _check_numbers(d: dict, m: int, *, tight: bool = False) -> None:
    assert d["ok"], d
    assert d["shape"] == [m, H] and d["dtype"] == "torch.bfloat16"
    assert d["rel_vs_ep1"] <= TOL, d
    if m:
        # bf16 output: the float reference is as far from EP as from the single-process module
        assert d["rel_vs_ref"] <= 1e-2 and d["rel_vs_ref"] <= d["ep1_rel_vs_ref"] + TOL, d
    if tight:
        assert d["tight_rel_vs_ref"] <= 1e-5, d


def test_every_rank_owns_its_contiguous_experts(ranks):
    per = E // WORLD
    assert [r["experts"] for r in ranks] == [[i * per, (i + 1) * per] for i in range(WORLD)]
    assert [r["sub_experts"] for r in ranks] == [[0, 4], [4, 8], [0, 4], [4, 8]]


def test_uneven_tokens_match_single_process_and_reference(ranks):
    for rank, r in enumerate(ranks):
        _check_numbers(r["uneven"], TOKENS[rank], tight=True)


def test_rank_with_no_tokens_gets_an_empty_result(ranks):
    d = ranks[1]["uneven"]
    assert d["ok"] and d["shape"] == [0, H]
    # ... and still computed the rows the others routed to its experts
    assert d["timing"]["rows"] > 0 and d["timing"]["tokens"] == sum(TOKENS)


def test_rank_whose_experts_receive_nothing(ranks):
    for rank, r in enumerate(ranks):
        _check_numbers(r["idle_experts"], 7 + 3 * rank)
    assert ranks[1]["idle_experts"]["timing"]["rows"] == 0
    assert all(r["idle_experts"]["timing"]["rows"] > 0 for i, r in enumerate(ranks) if i != 1)


def test_rows_are_exactly_the_routed_pairs(ranks):
    total = sum(r["uneven"]["timing"]["rows"] for r in ranks)
    assert total == sum(TOKENS) * K  # every (token, slot) once, on its owner, nothing else


def test_two_ep_groups_in_one_world(ranks):
    for rank, r in enumerate(ranks):
        _check_numbers(r["subgroup"], 9 + rank, tight=True)
    # each group saw its own two ranks' tokens only
    assert [r["subgroup"]["timing"]["tokens"] for r in ranks] == [9 + 10, 9 + 10, 11 + 12, 11 + 12]


def test_timing_hook_measures_communication_separately(ranks):
    for r in ranks:
        t = r["uneven"]["timing"]
        for key in ("dispatch_s", "compute_s", "combine_s", "total_s", "comm_s"):
            assert t[key] >= 0
        assert math.isclose(t["dispatch_s"] + t["compute_s"] + t["combine_s"], t["total_s"], rel_tol=1e-6,
                            abs_tol=1e-9)
        assert math.isclose(t["comm_s"], t["dispatch_s"] + t["combine_s"], rel_tol=1e-9)
        assert t["dispatch_s"] > 0 and t["combine_s"] > 0


def test_bad_input_on_one_rank_fails_every_rank_naming_it(ranks):
    got = [r["bad_rank"] for r in ranks]
    assert not any(g["ok"] for g in got)
    assert got[2]["error"] == "KernelInputError" and got[2]["what"] == "topk_ids"
    for r in (0, 1, 3):
        assert got[r]["error"] == "PeerInputError" and got[r]["rank_field"] == 2
        assert "rank 2" in got[r]["message"] and "topk_ids" in got[r]["message"]
    nan = [r["nan_rank"] for r in ranks]
    assert nan[3]["error"] == "KernelInputError" and nan[3]["what"] == "hidden_states"
    assert all(nan[r]["error"] == "PeerInputError" and nan[r]["rank_field"] == 3 for r in (0, 1, 2))


def test_top_k_mismatch_fails_every_rank(ranks):
    got = [r["top_k_mismatch"] for r in ranks]
    assert all(not g["ok"] and g["error"] == "KernelInputError" for g in got)
    assert all("rank 1: 3" in g["message"] for g in got)
    assert len({g["message"] for g in got}) == 1


def test_dtype_mismatch_fails_every_rank(ranks):
    got = [r["dtype_mismatch"] for r in ranks]
    assert all(not g["ok"] and g["error"] == "KernelInputError" for g in got)
    assert all("rank 3: torch.float32" in g["message"] for g in got)


def test_a_call_without_any_token_returns_empty_everywhere(ranks):
    assert all(r["all_empty"] == {"ok": True, "shape": [0, H]} for r in ranks)


def test_indivisible_ep_size_is_refused_on_every_rank(ranks):
    for r in ranks:
        g = r["indivisible"]
        assert not g["ok"] and g["error"] == "KernelInputError" and g["what"] == "ep_size"
        assert "num_experts=6" in g["message"]


def test_native_scheme_through_a_kernel_with_its_own_ep(ranks):
    for rank, r in enumerate(ranks):
        d = r["native"]
        m = TOKENS[::-1][rank]
        assert d["ok"], d
        # the stand-in kernel is the float32 reference: EP over it is that, rounded once to bf16
        assert d["shape"] == [m, H] and d["rel_vs_ref_rounded"] <= TOL, d
        assert d["timing"]["rows"] == sum(TOKENS)  # native: every gathered token, global ids


def test_group_decision_for_an_expert_parallel_request(ranks):
    got = [r["group_ep"] for r in ranks]
    assert all(g == got[0] for g in got) and got[0]["ok"], got
    assert got[0]["backend"] == got[0]["alone"]  # the same devices everywhere: what one rank picks
    assert len({g["fingerprint"] for g in got}) == 1


def test_group_decision_with_a_library_hidden_on_one_rank(ranks):
    got = [r["group_hidden_lib"] for r in ranks]
    assert all(g == got[0] for g in got), got
    g = got[0]
    assert not g["ok"] and g["error"] == "NoEligibleBackend", g
    # the one variant sm90 runs is refused because of rank 1 alone, and the message says so
    bf16 = [r for r in g["rejected"] if r["backend"] == g_backend(ranks)]
    assert len(bf16) == 1 and bf16[0]["reason"] == "library_missing", g["rejected"]
    detail = bf16[0]["detail"]
    assert "rank 1" in detail and "flashinfer" in detail
    assert not any(f"rank {r}" in detail for r in (0, 2, 3))
    assert detail in g["message"]


def g_backend(ranks) -> str:
    """The backend the group agreed on when every rank had every library."""
    return ranks[0]["group_ep"]["backend"]


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
