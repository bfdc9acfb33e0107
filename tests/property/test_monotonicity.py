"""Monotonicity: widening what a row covers, what is installed, or forgetting a layer
fact never removes an eligible result."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from importlib import resources

from hypothesis import given
from hypothesis import strategies as st

from oracle import Environment, OracleError, explain, select
from oracle.matrix import MATRIX, parse_matrix
from oracle.request import LIBRARIES
from strategies import any_requests, devices

DOC = tomllib.loads(resources.files("oracle.matrix").joinpath("mxfp4_moe.toml").read_text("utf-8"))
ROW_NAMES = tuple(r["name"] for r in DOC["row"])


def _usable(request, matrix=None):
    """Names of the candidates that could run, or None for a malformed request."""
    try:
        return {v.backend for v in explain(request, matrix=matrix) if v.verdict != "rejected"}
    except OracleError:
        return None


def _succeeds(request, matrix=None):
    try:
        return select(request, matrix=matrix)
    except OracleError:
        return None


@given(any_requests,
       st.one_of(st.just(frozenset(ROW_NAMES)),
                 st.sets(st.sampled_from(ROW_NAMES), min_size=1, max_size=8)),
       st.one_of(st.none(), devices))
def test_adding_an_arch_never_removes_an_eligible_result(request, row_names, other):
    arch = (other or request.device).name
    doc = copy.deepcopy(DOC)
    for row in doc["row"]:
        if row["name"] in row_names and arch not in row["archs"]:
            row["archs"].append(arch)
    widened = parse_matrix(doc)
    assert all(arch in widened.by_name[name].archs for name in row_names)

    before = _usable(request)
    after = _usable(request, widened)
    if before is None:
        return
    assert after is not None
    assert before <= after, before - after
    old = _succeeds(request)
    if old is not None:
        new = _succeeds(request, widened)
        assert new is not None
        assert set(old.eligible) <= set(new.eligible)


@given(any_requests, st.sampled_from(LIBRARIES))
def test_installing_a_library_never_removes_an_eligible_result(request, library):
    env = request.environment
    if env.all_present:
        return
    libs = dict(env.libraries)
    libs[library] = None if library not in libs else libs[library]
    if library in dict(env.libraries):
        return
    richer = request.with_(environment=Environment(libs))
    before, after = _usable(request), _usable(richer)
    if before is None:
        return
    assert before <= after, before - after


@given(any_requests, st.data())
def test_forgetting_a_layer_fact_never_removes_an_eligible_result(request, data):
    if request.layer is None:
        return
    known = [f.name for f in dataclasses.fields(request.layer)
             if getattr(request.layer, f.name) is not None]
    if not known:
        return
    name = data.draw(st.sampled_from(known))
    vaguer = request.with_(layer=dataclasses.replace(request.layer, **{name: None}))
    before, after = _usable(request), _usable(vaguer)
    if before is None:
        return
    assert before <= after, (name, before - after)


@given(any_requests)
def test_no_layer_equals_a_blank_layer(request):
    from oracle import LayerSpec
    assert _usable(request.with_(layer=None)) == _usable(request.with_(layer=LayerSpec()))


def test_bundled_doc_round_trips():
    assert parse_matrix(copy.deepcopy(DOC)).rows == MATRIX.rows
