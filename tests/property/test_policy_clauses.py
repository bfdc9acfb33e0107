"""Clauses of the policy contract, over arbitrary requests (strategies from the matrix).

* Every policy answers with a Selection or an OracleError, never anything else.
* vllm-X: the winner is a variant of that release; a pin's winner is one of the name's
  variants; the winner's variant accepts the device; padding is the release's round-up.
* strict: ``Selection.vllm`` / ``NoEligibleBackend.vllm`` is None exactly when vLLM 0.33
  answers the same (same winner, or both without one).
* The policy is part of the request: changing it never changes the strict answer's
  backend for the same request, and the fingerprint of the two answers differs.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from strategies import NonTrivial, backend_names, likely_requests

from oracle import NoEligibleBackend, OracleError, select
from oracle.matrix import POLICY_RELEASES, RELEASES

policies = st.sampled_from(sorted(POLICY_RELEASES))

#: Also names only a vLLM release knows (flashinfer_moe_ep_mega_deep_gemm, ...).
release_names = st.sampled_from(sorted({n for r in RELEASES.values() for n in r.names}))
names = st.one_of(backend_names, release_names)


def _outcome(request):
    try:
        return select(request), None
    except OracleError as exc:
        return None, exc


def test_vllm_policies_pick_a_variant_of_the_release_that_accepts_the_device():
    picked = NonTrivial("a vLLM-policy selection", 0.1)

    @given(likely_requests, policies, names)
    def check(request, policy, name):
        request = request.with_(policy=policy, moe_backend=name)
        sel, err = _outcome(request)
        if sel is None:
            assert isinstance(err, OracleError)
            return
        picked.add()
        release = RELEASES[POLICY_RELEASES[policy]]
        variant = release.variant[sel.backend]
        if request.moe_backend != "auto":
            swapped = dict(release.batched_substitute) if request.parallel.batched_format else {}
            assert sel.backend in {swapped.get(n, n) for n in release.names[request.moe_backend]}
        if sel.notes and any("last try" in n for n in sel.notes):
            return  # the platform retry asks its variant outside the filtered list
        assert request.device.name in variant.archs
        layer = request.layer
        if layer is not None and layer.hidden_size is not None \
                and layer.intermediate_size is not None:
            h, i = variant.alignment(request.device.platform)
            per_rank = layer.intermediate_size // (layer.tp_size or 1)
            # DeepEP dispatch builds the layer with a rounded-up hidden size first
            hidden = request.parallel.layer_hidden(layer.hidden_size)
            assert sel.padded == (-(-hidden // h) * h, -(-per_rank // i) * i)

    check()
    picked.check()


def test_strict_says_what_vllm_033_does_exactly_when_it_differs():
    differs = NonTrivial("a strict answer vLLM 0.33 differs from", 0.02)

    @given(likely_requests, names)
    def check(request, name):
        request = request.with_(moe_backend=name)
        sel, err = _outcome(request)
        if err is not None and not isinstance(err, NoEligibleBackend):
            return  # refused before any candidate (unknown name, conflict): nothing to compare
        theirs, their_err = _outcome(request.with_(policy="vllm-0.33"))
        mine = sel.backend if sel is not None else None
        other = theirs.backend if theirs is not None else None
        said = sel.vllm if sel is not None else err.vllm
        same = mine == other
        assert (said is None) == same, (mine, other, said)
        if not same:
            differs.add()
        if said is not None and other is not None:
            assert other in said

    check()
    differs.check()


def test_the_policy_is_part_of_the_request_and_its_fingerprint():
    @given(likely_requests, policies)
    def check(request, policy):
        strict, _ = _outcome(request)
        other, _ = _outcome(request.with_(policy=policy))
        again, _ = _outcome(request)
        assert (strict is None) == (again is None)
        if strict is not None:
            assert strict == again  # asking another policy in between changes nothing
            if other is not None:
                assert other.fingerprint != strict.fingerprint

    check()
