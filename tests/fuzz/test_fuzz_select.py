"""Fuzz oracle.select / oracle.explain on arbitrary requests.

Archs, library versions and backend strings no row mentions; LayerSpec and request
fields with negative, zero, huge and wrongly typed values.  The only exceptions
allowed name the field or value at fault and are exactly: ConfigError at construction
of the request (device, environment, layer, keys), then UnknownBackend,
ActivationConflict or NoEligibleBackend at selection; select and explain must tell
the same story.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from _fuzz_common import (AtLeast, build_request, check_error_names_offender,
                          rejection_names_offender, request_specs, spec_offenders)
from oracle import (ActivationConflict, ConfigError, Device, Environment, NoEligibleBackend,
                    OracleError, Reason, SelectionRequest, UnknownBackend, explain, select)
from oracle.platforms import LIBRARIES
from oracle.selector import resolve_activation, resolve_backend_name


def _check(request: SelectionRequest) -> bool:
    """The property for one built request; True when select() returned a Selection."""
    try:
        sel = select(request)
    except UnknownBackend as exc:
        check_error_names_offender(exc, [request.moe_backend], [])
        assert repr(request.moe_backend) in str(exc)
        with pytest.raises(UnknownBackend):
            explain(request)
        return False
    except ActivationConflict as exc:
        check_error_names_offender(exc, [request.activation], ["activation"])
        check_error_names_offender(exc, [request.checkpoint_activation], [])
        with pytest.raises(ActivationConflict):
            explain(request)
        return False
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
        assert exc.rejected and all(isinstance(r.reason, Reason) for r in exc.rejected)
        for r in exc.rejected:
            assert f"{r.backend}: {r.reason.value}" in msg
        return False
    # Any other exception (another OracleError too: a well-typed request was built, so
    # nothing but the backend name, the activation pair or the gates can fail) escapes
    # and fails the test.
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
    assert all(isinstance(r.reason, Reason) for r in sel.rejected)
    sel.to_dict()
    sel.describe()
    return True


def _build_or_check(spec) -> SelectionRequest | None:
    """The request, or None when construction refused the spec (with a ConfigError that
    names the offender: malformed input must raise exactly that)."""
    try:
        return build_request(spec)
    except Exception as exc:  # noqa: BLE001 - the property decides
        assert isinstance(exc, ConfigError), f"{type(exc).__name__} escaped: {exc!r}"
        values, paths = spec_offenders(spec)
        check_error_names_offender(exc, values + list(spec.values()), paths)
        return None


def test_select_and_explain_on_arbitrary_requests():
    built = AtLeast("a built request (select/explain checked)", 0.4)
    selected = AtLeast("a Selection", 0.03)

    @given(request_specs())
    def check(spec):
        request = _build_or_check(spec)
        if request is None:
            return  # refused at construction: the ConfigError was the property
        built.add()
        if _check(request):
            selected.add()

    check()
    built.check()
    selected.check()


@given(st.text())
def test_device_parse(text):
    try:
        dev = Device.parse(text)
    except OracleError as exc:
        assert type(exc) is ConfigError, type(exc)
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
        assert type(exc) is ConfigError, type(exc)
        items = [i.strip() for i in text.split(",")]
        offenders = [i.partition("=")[0].strip().lower().replace("-", "_") for i in items]
        offenders += [i.partition("=")[2] for i in items]
        # the distribution name is read as the library it provides (a duplicate is
        # reported under that name)
        offenders += ["flashinfer" for o in offenders if o == "flashinfer_python"]
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
        assert type(exc) is ConfigError, type(exc)
        check_error_names_offender(exc, [libraries], ["environment", "libraries"])
        return
    for name, ver in env.libraries:
        assert isinstance(name, str)
        assert ver is None or isinstance(ver, Version)
    for backend in ("flashinfer_moe_ep_cutedsl", "auto"):
        try:
            select(SelectionRequest(device=Device.parse("sm100"), environment=env,
                                    moe_backend=backend))
        except NoEligibleBackend as exc:  # the only error a usable Environment may lead to
            assert exc.rejected
            assert all(isinstance(r.reason, Reason) for r in exc.rejected)
