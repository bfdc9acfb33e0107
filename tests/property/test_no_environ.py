"""The oracle reads no environment variables: a poisoned os.environ changes nothing,
and neither do vLLM / FlashInfer variables set to junk."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from contextlib import contextmanager
from unittest import mock

import pytest
from hypothesis import given

from oracle import explain
from strategies import FRESH_MATRIX, NonTrivial, any_requests, outcome, verdicts


class EnvironRead(AssertionError):
    pass


class PoisonedEnviron(MutableMapping):
    """Stands in for os.environ; any access is a test failure."""

    def _boom(self, *args, **kwargs):
        raise EnvironRead(f"the oracle touched os.environ {args!r}")

    __getitem__ = __setitem__ = __delitem__ = __iter__ = __len__ = __contains__ = _boom
    get = keys = items = values = copy = setdefault = pop = _boom


@contextmanager
def poisoned_environ():
    with mock.patch.object(os, "environ", PoisonedEnviron()):
        yield


JUNK = {
    "VLLM_MXFP4_BACKEND": "junk",
    "VLLM_MOE_BACKEND": "junk",
    "VLLM_USE_FLASHINFER_MOE_MXFP4_BF16": "1",
    "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8": "1",
    "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8_CUTLASS": "1",
    "VLLM_MXFP4_USE_MARLIN": "1",
    "VLLM_USE_DEEP_GEMM": "1",
    "VLLM_ROCM_USE_AITER": "1",
    "VLLM_TARGET_DEVICE": "rocm",
    "FLASHINFER_MOE_BACKEND": "junk",
    "FLASHINFER_CUDA_ARCH_LIST": "7.5",
    "FLASHINFER_DISABLE_VERSION_CHECK": "1",
    "MXFP4_ORACLE_BACKEND": "junk",
    "CUDA_VISIBLE_DEVICES": "",
    "TORCH_CUDA_ARCH_LIST": "junk",
}


def test_poison_really_bites():
    with poisoned_environ():
        try:
            os.environ.get("HOME")
        except EnvironRead:
            pass
        else:  # pragma: no cover
            raise AssertionError("poisoned environ did not raise")


# outcome()/verdicts() catch only the documented errors of select()/explain(); an
# EnvironRead (an AssertionError) always propagates.  The counters make sure that many
# examples really ran a full selection (not only a malformed-request error) with the
# environment poisoned or junked.


def _junk_environ():
    return mock.patch.dict(os.environ, JUNK)


@pytest.mark.parametrize("environ", [poisoned_environ, _junk_environ],
                         ids=["poisoned", "junk-vllm-flashinfer"])
def test_select_and_explain_never_read_environ(environ):
    hits = NonTrivial(f"a selection recomputed under a {environ.__name__} environ", 0.1)

    @given(any_requests)
    def check(request):
        expected = outcome(request)
        expected_verdicts = verdicts(request)
        with environ():
            # FRESH_MATRIX bypasses the selector's cache, so this really recomputes
            got = outcome(request, FRESH_MATRIX)
            got_verdicts = verdicts(request, FRESH_MATRIX)
        assert got == expected
        assert got_verdicts == expected_verdicts
        if got[0] == "ok" and isinstance(got_verdicts, tuple):
            hits.add()

    check()
    hits.check()


def test_explain_with_poisoned_environ_on_a_plain_request():
    from oracle import Device, SelectionRequest
    with poisoned_environ():
        assert explain(SelectionRequest(device=Device.parse("sm90")), matrix=FRESH_MATRIX)
