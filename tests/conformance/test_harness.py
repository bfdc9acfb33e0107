"""Smoke test: the harness really runs vLLM's own MXFP4 MoE selection.

Every expectation here is a fact about vLLM (the README of this folder cites the
source lines); if one fails, the harness -- not the oracle -- is suspect.
"""

from __future__ import annotations

from vllm_harness import ARCHS, UNKNOWN_BACKEND, VERSIONS, Case


def _no_conflict(a: dict) -> bool:
    """Cases whose override and checkpoint activation do not conflict (vLLM
    resolves that before it looks at the backend name)."""
    c = a["case"]
    return not (c["override"] and c["checkpoint_activation"])


def test_harness_runs_vllms_own_selection(vllm_table):
    t = vllm_table

    # A grid of real size, answered by every version, case for case.
    assert len(t.cases) >= 5000
    for v in VERSIONS:
        assert len(t.answers[v]) == len(t.cases)

    # Only vLLM's own exceptions come back (a TypeError, ImportError or
    # AttributeError would be the harness failing, not vLLM answering), and no
    # C++ predicate the harness does not model was consulted during a selection.
    for v in VERSIONS:
        for a in t.answers[v]:
            if a["error"]:
                assert a["error"]["type"] in ("ValueError", "NotImplementedError"), (v, a)
            assert not [k for k in a["helper_calls"]
                        if k.startswith("cxx:") and k != "cxx:_C.mxfp4_experts_quant_supported"], a

    # The hardware is faked before vLLM imports: each arch's platform class and
    # capability, and the import-time FP8 flavour (fnuz on gfx942 only).
    for v in VERSIONS:
        meta = t.meta[v]
        assert set(meta) == set(ARCHS)
        assert meta["sm100"]["platform"].endswith("CudaPlatform")
        assert meta["sm100"]["device_capability"] == "DeviceCapability(major=10, minor=0)"
        assert meta["gfx942"]["platform"] == "RocmPlatform"
        assert meta["gfx942"]["device_capability"] == "DeviceCapability(major=9, minor=4)"
        assert meta["gfx942"]["fp8_dtype"] == "torch.float8_e4m3fnuz"
        assert meta["gfx950"]["fp8_dtype"] == "torch.float8_e4m3fn"
        assert meta["xpu"]["platform"] == "XPUPlatform"
        assert meta["cpu"]["platform"] == "CpuPlatform"

    # vLLM 0.33, auto, SM100, every library: a FlashInfer TRT-LLM variant.
    a = t.answer("0.33.0", Case("sm100"))
    assert a["error"] is None, a
    assert a["backend"].startswith("FLASHINFER_TRTLLM_"), a
    assert a["experts_cls"] == "TrtLlmMxfp4ExpertsMonolithic"
    assert a["padded"] == [3072, 2944]

    # An unknown --moe-backend name is refused by map_mxfp4_backend, everywhere.
    for v in VERSIONS:
        for a in t.where(v, moe_backend=UNKNOWN_BACKEND):
            if _no_conflict(a):
                assert a["backend"] is None
                assert a["error"]["type"] == "ValueError"
                assert "is not supported for MXFP4 MoE" in a["error"]["message"], a

    # An explicit backend with an override no variant matches: 0.33 falls back to
    # the BF16 variant and warns; 0.22 keeps only exact matches (plus EMULATION)
    # and raises "does not support activation=...".
    pin = Case("sm100", "flashinfer_trtllm", override="fp8_per_tensor_static")
    new, old = t.answer("0.33.0", pin), t.answer("0.22.0", pin)
    assert new["backend"] == "FLASHINFER_TRTLLM_MXFP4_BF16", new
    assert any("Falling back to 'FLASHINFER_TRTLLM_MXFP4_BF16' with BF16 activations" in w
               for w in new["warnings"]), new["warnings"]
    assert old["backend"] is None, old
    assert old["error"]["type"] == "ValueError"
    assert "does not support activation=" in old["error"]["message"], old

    # Library sets reach vLLM's helpers: without amd-quark, 0.33's EMULATION
    # is refused with vLLM's own reason and auto falls back to BF16.
    a = t.answer("0.33.0", Case("sm100", override="fp8_per_tensor_static", libraries="no-amd-quark"))
    assert a["backend"] == "FLASHINFER_TRTLLM_MXFP4_BF16", a
    assert any("requires amd-quark" in d for d in a["debug"]), a["debug"]
