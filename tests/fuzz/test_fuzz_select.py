"""Fuzz oracle.select / oracle.explain on arbitrary requests.

Archs, library versions and backend strings no row mentions; LayerSpec and request
fields with negative, zero, huge and wrongly typed values.  The only exceptions
allowed are the OracleError family, each naming the field or value at fault (at
construction of the request or at selection); select and explain must tell the
same story.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _fuzz_common import (build_request, check_error_names_offender, rejection_names_offender,
                          request_specs, spec_offenders)
from oracle import (ActivationConflict, Device, Environment, NoEligibleBackend, OracleError,
                    SelectionRequest, UnknownBackend, explain, select)
from oracle.request import LIBRARIES
from oracle.selector import resolve_activation, resolve_backend_name


def _check(request: SelectionRequest) -> None:
    try:
        sel = select(request)
    except UnknownBackend as exc:
        check_error_names_offender(exc, [request.moe_backend], [])
        assert repr(request.moe_backend) in str(exc)
        with pytest.raises(UnknownBackend):
            explain(request)
        return
    except ActivationConflict as exc:
        check_error_names_offender(exc, [request.activation], ["activation"])
        check_error_names_offender(exc, [request.checkpoint_activation], [])
        with pytest.raises(ActivationConflict):
            explain(request)
        return
    except NoEligibleBackend as exc:
        verdicts = explain(request)
        assert all(v.verdict == "rejected" for v in verdicts)
        assert [(r.backend, r.reason) for r in exc.rejected] == \
            [(v.backend, v.reason) for v in verdicts]
        msg = str(exc)
        assert "try:" in msg
        problems = [p for r in exc.rejected
                    if (p := rejection_names_offender(request, r.backend, r.reason, r.detail))]
        assert not problems, problems
        for r in exc.rejected:
            assert f"{r.backend}: {r.reason.value}" in msg
        return
    except OracleError as exc:  # another family member: must still name its offender
        check_error_names_offender(exc, [request.moe_backend, request.layer, request.device],
                                   ["layer", "device", "environment", "moe_backend", "weight",
                                    "activation"])
        return
    # Success: one winner, the same evaluation as explain, and the strict rules hold.
    verdicts = explain(request)
    selected = [v.backend for v in verdicts if v.verdict == "selected"]
    assert selected == [sel.backend]
    assert sel.eligible[0] == sel.backend
    assert set(sel.eligible) == {v.backend for v in verdicts if v.verdict != "rejected"}
    assert [(r.backend, r.reason) for r in sel.rejected] == \
        [(v.backend, v.reason) for v in verdicts if v.verdict == "rejected"]
    problems = [p for r in sel.rejected
                if (p := rejection_names_offender(request, r.backend, r.reason, r.detail))]
    assert not problems, problems
    names = resolve_backend_name(request.moe_backend)
    if names is not None:
        assert sel.backend in names and sel.selected_by == "pinned"
    strict, act = resolve_activation(request)
    if strict and sel.activation != act:
        assert request.allow_activation_fallback and sel.activation is None
        assert sel.activation_fallback
    if sel.activation_fallback:
        assert any("fallback" in n for n in sel.notes)
    sel.to_dict()
    sel.describe()


def _build_or_check(spec) -> SelectionRequest | None:
    try:
        return build_request(spec)
    except OracleError as exc:
        values, paths = spec_offenders(spec)
        check_error_names_offender(exc, values + list(spec.values()), paths)
        return None


@given(request_specs())
def test_select_and_explain_on_arbitrary_requests(spec):
    request = _build_or_check(spec)
    if request is not None:
        _check(request)


@given(st.text())
def test_device_parse(text):
    try:
        dev = Device.parse(text)
    except OracleError as exc:
        check_error_names_offender(exc, [text], [])
        assert repr(text) in str(exc)
        return
    assert Device.parse(dev.name) == dev


_ENV_TOKENS = [*LIBRARIES, *(f"{n}=0.7.2" for n in LIBRARIES), "flashinfer-python=0.7.2.post1",
               "FlashInfer", "flashinfer=", "flashinfer=abc", "flashinfer==1", "torch=-1",
               "torch=2.13.0+cpu", "vllm", "nope=1", "", " ", "all", "none", "=", "=1",
               "triton-kernels=1.0", "deep_gemm=99999999999999999999", "\u00e9", "a=b=c"]


@given(st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(_ENV_TOKENS), st.text(max_size=5)), max_size=6)
    .map(",".join),
))
def test_environment_parse(text):
    try:
        env = Environment.parse(text)
    except OracleError as exc:
        items = [i.strip() for i in text.split(",")]
        offenders = [i.partition("=")[0].strip().lower().replace("-", "_") for i in items]
        offenders += [i.partition("=")[2] for i in items]
        check_error_names_offender(exc, offenders, [])
        return
    assert Environment.parse(env.describe()) == env


_ENV_JUNK = [{"flashinfer": "0.7.2"}, {"flashinfer": (0, "7")}, {"torch": 2}, {1: None},
             [("torch", None), ("torch", (1,))],
             [("torch", (1,)), ("torch", (2,))], [("torch",)], "flashinfer", None,
             {"flashinfer": (True,)}, {"flashinfer": [0, 7]}]


@pytest.mark.parametrize("libraries", _ENV_JUNK, ids=str)
def test_environment_rejects_malformed_libraries(libraries):
    """Malformed Environment input: an OracleError at construction, or a value select()
    can use; never a TypeError later in the selector."""
    try:
        env = Environment(libraries)
    except OracleError as exc:
        check_error_names_offender(exc, [libraries], ["environment", "libraries"])
        return
    for name, ver in env.libraries:
        assert isinstance(name, str)
        assert ver is None or all(isinstance(p, int) for p in ver)
    for backend in ("flashinfer_moe_ep_cutedsl", "auto"):
        try:
            select(SelectionRequest(device=Device.parse("sm100"), environment=env,
                                    moe_backend=backend))
        except OracleError:
            pass
