"""Monotonicity: widening what a row covers, what is installed, or forgetting a layer
fact never removes an eligible result."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from importlib import resources

from hypothesis import assume, given
from hypothesis import strategies as st
from packaging.version import Version

from oracle import Environment, LayerSpec, NoEligibleBackend, explain, select
from oracle.matrix import MATRIX, parse_matrix
from oracle.platforms import LIBRARIES
from strategies import (GATE_VERSIONS, NonTrivial, any_requests, devices, layered_requests,
                        version_gated_requests)

DOC = tomllib.loads(resources.files("oracle.matrix").joinpath("mxfp4_moe.toml").read_text("utf-8"))
ROW_NAMES = tuple(r["name"] for r in DOC["row"])

# any_requests are well formed (known backend names, no activation conflict), so
# explain() never raises on them and select() raises NoEligibleBackend at most; any
# other error fails the property instead of being skipped.


def _usable(request, matrix=None) -> set[str]:
    """Names of the candidates that could run."""
    return {v.backend for v in explain(request, matrix=matrix) if v.verdict != "rejected"}


def _succeeds(request, matrix=None):
    """The Selection, or None when nothing is eligible."""
    try:
        return select(request, matrix=matrix)
    except NoEligibleBackend:
        return None


def test_adding_an_arch_never_removes_an_eligible_result():
    hits = NonTrivial("something was eligible before widening", 0.08)

    @given(any_requests,
           st.one_of(st.just(frozenset(ROW_NAMES)),
                     st.sets(st.sampled_from(ROW_NAMES), min_size=1, max_size=8)),
           st.one_of(st.none(), devices))
    def check(request, row_names, other):
        arch = (other or request.device).name
        doc = copy.deepcopy(DOC)
        for row in doc["row"]:
            if row["name"] in row_names and arch not in row["archs"]:
                row["archs"].append(arch)
        widened = parse_matrix(doc)
        assert all(arch in widened.by_name[name].archs for name in row_names)

        before = _usable(request)
        after = _usable(request, widened)
        assert before <= after, before - after
        old = _succeeds(request)
        if old is not None:
            new = _succeeds(request, widened)
            assert new is not None
            assert set(old.eligible) <= set(new.eligible)
            hits.add()

    check()
    hits.check()


def test_installing_a_library_never_removes_an_eligible_result():
    hits = NonTrivial("something was eligible before installing", 0.08)

    @given(any_requests, st.sampled_from(LIBRARIES))
    def check(request, library):
        env = request.environment
        assume(not env.all_present)  # everything is installed already
        libs = dict(env.libraries)
        assume(library not in libs)  # installed already
        libs[library] = None
        richer = request.with_(environment=Environment(libs))
        before, after = _usable(request), _usable(richer)
        assert before <= after, before - after
        if before:
            hits.add()

    check()
    hits.check()


def test_upgrading_a_library_never_removes_an_eligible_result():
    """Raising an installed version (pre-release -> release -> post-release, or to
    "any version") never removes an eligible result."""
    hits = NonTrivial("a stated version was raised", 0.8)
    gate_hits = NonTrivial("the raise let a version-gated candidate through", 0.01)

    @given(st.one_of(version_gated_requests(), any_requests), st.data())
    def check(request, data):
        versioned = [(n, v) for n, v in request.environment.libraries if v is not None]
        assume(versioned)  # no stated version to raise
        library, have = data.draw(st.sampled_from(versioned))
        higher = [s for s in GATE_VERSIONS if Version(s) > have]
        new = data.draw(st.sampled_from([None, *higher]))
        libs = dict(request.environment.libraries)
        libs[library] = new
        upgraded = request.with_(environment=Environment(
            libs, all_present=request.environment.all_present))
        before, after = _usable(request), _usable(upgraded)
        assert before <= after, (library, have, new, before - after)
        hits.add()
        if after - before:
            gate_hits.add()

    check()
    hits.check()
    gate_hits.check()


def test_forgetting_a_layer_fact_never_removes_an_eligible_result():
    hits = NonTrivial("a known layer fact forgotten with something eligible", 0.08)

    @given(st.one_of(any_requests, layered_requests), st.data())
    def check(request, data):
        assume(request.layer is not None)  # no layer: no fact to forget
        # tp_size / ep_size are the deployment's (a request with them forgotten is
        # another deployment, not a vaguer layer)
        known = [f.name for f in dataclasses.fields(request.layer)
                 if getattr(request.layer, f.name) is not None
                 and f.name not in ("tp_size", "ep_size")]
        assume(known)  # a blank layer: no fact to forget
        name = data.draw(st.sampled_from(known))
        vaguer = request.with_(layer=dataclasses.replace(request.layer, **{name: None}))
        before, after = _usable(request), _usable(vaguer)
        assert before <= after, (name, before - after)
        if before:
            hits.add()

    check()
    hits.check()


def test_no_layer_equals_a_blank_layer():
    hits = NonTrivial("something eligible", 0.08)

    @given(any_requests)
    def check(request):
        bare = _usable(request.with_(layer=None))
        assert bare == _usable(request.with_(layer=LayerSpec()))
        if bare:
            hits.add()

    check()
    hits.check()


def test_bundled_doc_round_trips():
    assert parse_matrix(copy.deepcopy(DOC)).rows == MATRIX.rows
