"""Fuzz the kernel entry points on the CPU: the torch reference, ``build_moe`` with the
EMULATION backend, and the FlashInfer adapters' pre-launch checks.

Tiny shapes (E = 4, H = I = 64, M <= 4).  Each example takes valid inputs and applies one
to three poisons: NaN/Inf in hidden states, routing weights or biases, an E8M0 scale byte
255, expert ids out of range (E, -1, 2**31-1, -2**31), float8 / integer / complex / bool
hidden states, top_k 0 or > E, wrong shapes, non-tensors, ``act_scales`` / ``act_quant`` of
wrong types, non-bool / non-int options (``max_num_tokens=True``, ``check_finite=1``), odd
layers and selections.

Property: a result (of the right shape, when nothing is poisoned or the checks are off), or
KernelInputError / ConfigError -- exactly the documented class naming the tensor when one
poison is applied -- never RuntimeError, TypeError, IndexError, ValueError, ...  On a
machine without CUDA, ``prepare`` of valid weights ends in KernelUnavailable (documented:
the launch needs a GPU), after the CPU-side checks.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _hostile import Floor, expect

torch = pytest.importorskip("torch")

from oracle import LayerSpec  # noqa: E402
from oracle.errors import ConfigError, KernelInputError  # noqa: E402
from oracle.kernels import adapters as A  # noqa: E402
from oracle.kernels.checkpoint import MoEWeights, random_gpt_oss_layer  # noqa: E402
from oracle.kernels.moe import build_moe  # noqa: E402
from oracle.kernels.reference import (GPT_OSS_SWIGLU, SILU_SWIGLU, ActivationSpec,  # noqa: E402
                                      moe_reference)

E, H, I, K = 4, 64, 64, 2
NAN, INF = math.nan, math.inf
_WEIGHTS = random_gpt_oss_layer(E, H, I, seed=3)
_FIELDS = ("w13_blocks", "w13_scales", "w13_bias", "w2_blocks", "w2_scales", "w2_bias")
_OK = (KernelInputError, ConfigError)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: at these sizes the thread pool costs ~15x the arithmetic."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _inputs(m: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, H, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(m)]).to(torch.int32) \
        if m else torch.zeros(0, K, dtype=torch.int32)
    w = torch.softmax(torch.randn(m, K, generator=g), -1)
    return {"hidden": x, "ids": ids, "tw": w, "weights": _WEIGHTS, "kwargs": {}}


_BASE = {(m, s): _inputs(m, s) for m in range(1, 5) for s in range(4)}


def _poisoned_weights(weights: MoEWeights, name: str, expert: int, value) -> MoEWeights:
    fields = {f: getattr(weights, f) for f in _FIELDS}
    t = fields[name].clone()
    t[expert].view(-1)[0] = value
    fields[name] = t
    return MoEWeights(**fields)


def _routed(ctx: dict) -> set[int]:
    ids = ctx["ids"]
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() \
            or ids.dtype == torch.bool:
        return set()
    return set(ids.flatten().tolist())


# Each poison: (name, apply(ctx, n) -> (tensor the error names, or None when the input is
# still valid)).  ``n`` varies position, value and kind.
def _hidden_nonfinite(ctx, n):
    if not ctx["hidden"].numel():
        return None
    x = ctx["hidden"].clone()
    x.view(-1)[n % x.numel()] = (NAN, INF, -INF)[n % 3]
    ctx["hidden"] = x
    return "hidden" if ctx["kwargs"].get("check_finite", True) is True else None


def _hidden_dtype(ctx, n):
    dtype = (torch.float8_e4m3fn, torch.float8_e5m2, torch.int32, torch.complex64, torch.bool,
             torch.uint8, torch.float8_e8m0fnu)[n % 7]
    ctx["hidden"] = ctx["hidden"].to(dtype)
    return "hidden"


def _hidden_float_dtype(ctx, n):  # valid: the result has the hidden states' dtype
    ctx["hidden"] = ctx["hidden"].to((torch.bfloat16, torch.float16, torch.float64)[n % 3])
    return None


def _hidden_shape(ctx, n):
    x = ctx["hidden"]
    ctx["hidden"] = (torch.zeros(x.shape[0], H + 1), x.reshape(-1), x[:, :, None], x[:, :32],
                     torch.zeros(x.shape[0], 0))[n % 5]
    return "hidden"


def _hidden_not_tensor(ctx, n):
    ctx["hidden"] = (ctx["hidden"].tolist(), None, 5, "x", ctx["hidden"].float().numpy())[n % 5]
    return "hidden"


def _tw_nonfinite(ctx, n):
    if not ctx["tw"].numel():
        return None
    w = ctx["tw"].clone()
    w.view(-1)[n % w.numel()] = (NAN, INF, -INF)[n % 3]
    ctx["tw"] = w
    return "topk_weights" if ctx["kwargs"].get("check_finite", True) is True else None


def _tw_dtype(ctx, n):
    ctx["tw"] = ctx["tw"].to((torch.float8_e4m3fn, torch.int32, torch.bool, torch.complex64)[n % 4])
    return "topk_weights"


def _tw_shape(ctx, n):
    w = ctx["tw"]
    ctx["tw"] = (torch.ones(w.shape[0], K + 1), w.reshape(-1), torch.ones(w.shape[0], 2 * E + 1),
                 [1.0])[n % 4]
    return "topk_weights"


def _ids_range(ctx, n):
    if not ctx["ids"].numel():
        return None
    ids = ctx["ids"].clone()
    bad = (E, -1, 2 ** 31 - 1, -2 ** 31, E + 1)[n % 5]
    ids.view(-1)[n % ids.numel()] = bad
    ctx["ids"] = ids
    return "topk_ids"


def _ids_range_int64(ctx, n):
    if not ctx["ids"].numel():
        ctx["ids"] = ctx["ids"].long()
        return "topk_ids:int64"  # valid for the reference; int32 only for the adapters
    ids = ctx["ids"].long()
    ids.view(-1)[n % ids.numel()] = (2 ** 62, -2 ** 62, 2 ** 31, E)[n % 4]
    ctx["ids"] = ids
    return "topk_ids"


def _ids_dtype(ctx, n):
    ctx["ids"] = ctx["ids"].to((torch.float32, torch.bool, torch.complex64, torch.float16)[n % 4])
    return "topk_ids"


def _top_k(ctx, n):  # 0 or more than E experts per token (weights shaped to match)
    m = ctx["hidden"].shape[0]
    k = (0, E + 1, 2 * E)[n % 3]
    ctx["ids"] = torch.zeros(m, k, dtype=torch.int32)
    ctx["tw"] = torch.ones(m, k)
    return "topk_ids"


def _ids_rows(ctx, n):
    ctx["ids"] = torch.zeros(ctx["hidden"].shape[0] + 1, K, dtype=torch.int32)
    return "topk_ids"


def _scale_255(ctx, n):
    name = ("w13_scales", "w2_scales")[n % 2]
    expert = (n // 2) % E
    ctx["weights"] = _poisoned_weights(ctx["weights"], name, expert, 255)
    ctx.setdefault("poisoned_experts", {})[name] = expert
    return name  # resolved against the routed experts in _expected


def _bias_nonfinite(ctx, n):
    name = ("w13_bias", "w2_bias")[n % 2]
    expert = (n // 2) % E
    ctx["weights"] = _poisoned_weights(ctx["weights"], name, expert, (NAN, INF, -INF)[n % 3])
    ctx.setdefault("poisoned_experts", {})[name] = expert
    return name


def _weights_junk(ctx, n):
    w = ctx["weights"]
    fields = {f: getattr(w, f) for f in _FIELDS}
    choice = n % 5
    if choice == 0:
        ctx["weights"] = (None, "weights", {"w13_blocks": 1}, 5)[n % 4]
        return "weights"
    name = ("w13_blocks", "w2_scales", "w13_bias", "w2_blocks")[choice - 1]
    fields[name] = {"w13_blocks": fields["w13_blocks"].float(), "w2_scales": fields["w2_scales"][..., :1],
                    "w13_bias": torch.ones(E, 3), "w2_blocks": fields["w2_blocks"][:, :, :, :8]}[name]
    ctx["weights"] = MoEWeights(**fields)
    return name


_BAD_SCALES = [5, "ab", (1.0,), (1.0, 2.0, 3.0), (True, None), (-1.0, None), (NAN, None),
               (INF, None), ("a", None), (0, None), (10 ** 400, None), {1: 2},
               (torch.tensor([1.0, 2.0]), None), (torch.tensor(1), None), (None, -0.0)]
_GOOD_SCALES = [None, (0.01, None), [None, 0.02], (1, 2), (torch.tensor(0.01), None)]


def _act_scales(ctx, n):
    if n % 3:
        ctx["kwargs"]["act_scales"] = _BAD_SCALES[n % len(_BAD_SCALES)]
        return "act_scales"
    scales = _GOOD_SCALES[n % len(_GOOD_SCALES)]
    ctx["kwargs"]["act_scales"] = scales
    if ctx["kwargs"].get("act_quant") == "fp8_per_tensor" or scales is None:
        return None
    return "act_scales:config"  # a pair, for a mode that takes none: a ConfigError


def _act_quant(ctx, n):
    choice = (None, "mxfp8", "fp8_per_tensor", "fp8", 5, "", "MXFP8", ["mxfp8"])[n % 8]
    ctx["kwargs"]["act_quant"] = choice
    return None if n % 8 < 3 else "act_quant:config"


def _check_finite(ctx, n):
    value = (False, True, 1, 0, None, "yes", 0.0)[n % 7]
    ctx["kwargs"]["check_finite"] = value
    return None if isinstance(value, bool) else "check_finite"


#: Activation specs to try (a limit past float32's range, inf = no clamp, ...).  Built in
#: the test: ActivationSpec may refuse one (with a ConfigError, its documented error).
_SPEC_ARGS = [None, {"kind": "swiglu"}, {"limit": math.inf}, {"limit": 1e308}, {"limit": 3.5e38},
              {"alpha": 0.0, "limit": 1e-30}, {"alpha": -1e308, "limit": 7}, {"alpha": 1e39}]


def _activation(ctx, n):
    junk = ("swiglu", None, SimpleNamespace(kind="swiglu_oai"))
    i = n % (len(_SPEC_ARGS) + len(junk))
    if i >= len(_SPEC_ARGS):
        ctx["kwargs"]["activation"] = junk[i - len(_SPEC_ARGS)]
        return "activation"
    args = _SPEC_ARGS[i]
    if args is None:
        ctx["kwargs"]["activation"] = GPT_OSS_SWIGLU
        return None
    try:
        ctx["kwargs"]["activation"] = ActivationSpec(**{"kind": "swiglu_oai", **args})
    except Exception as exc:  # noqa: BLE001 - refusing at construction is documented
        expect(exc, ConfigError, exact=True)
    return None


def _empty_batch(ctx, n):
    ctx["hidden"], ctx["ids"], ctx["tw"] = ctx["hidden"][:0], ctx["ids"][:0], ctx["tw"][:0]
    return None


_POISONS = {f.__name__.lstrip("_"): f for f in (
    _hidden_nonfinite, _hidden_dtype, _hidden_float_dtype, _hidden_shape, _hidden_not_tensor,
    _tw_nonfinite, _tw_dtype, _tw_shape, _ids_range, _ids_range_int64, _ids_dtype, _top_k,
    _ids_rows, _scale_255, _bias_nonfinite, _weights_junk, _act_scales, _act_quant,
    _check_finite, _activation, _empty_batch)}
# The options first (a poison of the values depends on check_finite), then the batch
# size and the routing shape, then the values; at most one poison per target.
_ORDER = ["check_finite", "act_quant", "act_scales", "activation", "empty_batch", "top_k",
          "ids_rows"]


def _target(name: str) -> str:
    if name in _ORDER[:4]:
        return name
    if name == "empty_batch":
        return "batch"
    if name in ("top_k", "ids_rows") or name.startswith("ids"):
        return "ids"
    if name.startswith(("hidden", "tw")):
        return name.split("_")[0]
    return "weights"


poisons = st.lists(st.tuples(st.sampled_from(sorted(_POISONS)), st.integers(0, 1000)),
                   max_size=3, unique_by=lambda p: _target(p[0]))
bases = st.sampled_from(sorted(_BASE))


def _apply(base, plan, kwargs: dict | None = None, hidden_dtype=None) -> tuple[dict, list]:
    ctx = {k: v for k, v in _BASE[base].items()}
    ctx["kwargs"] = dict(kwargs or {})
    if hidden_dtype is not None:
        ctx["hidden"] = ctx["hidden"].to(hidden_dtype)
    plan = sorted(plan, key=lambda p: (_ORDER.index(p[0]) if p[0] in _ORDER else len(_ORDER)))
    return ctx, [(name, _POISONS[name](ctx, n)) for name, n in plan]


def _expected(ctx: dict, applied: list) -> list:
    """The tensors a single poison must be refused for ([] = valid input)."""
    out = []
    finite = ctx["kwargs"].get("check_finite", True) is True
    for name, tensor in applied:
        if name in ("scale_255", "bias_nonfinite"):
            expert = ctx["poisoned_experts"][tensor]
            # the reference checks the routed experts only (values: with check_finite)
            if not (finite and expert in _routed(ctx)):
                continue
        if tensor is not None and not tensor.endswith(":int64"):
            out.append(tensor)
    return out


def _check_error(exc: BaseException, applied: list, want: list, names: dict[str, str]) -> None:
    expect(exc, *_OK)
    assert want or len(applied) > 1 or any(a[0] in ("empty_batch",) for a in applied), (
        f"valid input refused after {applied}: {exc!r}")
    if len(applied) == 1 and len(want) == 1:
        tensor = want[0]
        if tensor.endswith(":config"):
            expect(exc, ConfigError, exact=True)
            assert exc.path == tensor.split(":")[0], exc.path
        else:
            expect(exc, KernelInputError, exact=True)
            assert exc.tensor == names.get(tensor, tensor), (exc.tensor, tensor)


# ------------------------------------------------------------------ the reference


def test_moe_reference():
    poisoned = Floor("a poisoned input refused", 0.3)
    ran = Floor("a reference result", 0.05)

    @given(bases, poisons)
    def check(base, plan):
        ctx, applied = _apply(base, plan)
        want = _expected(ctx, applied)
        try:
            out = moe_reference(ctx["hidden"], ctx["weights"], ctx["ids"], ctx["tw"], **ctx["kwargs"])
        except Exception as exc:  # noqa: BLE001 - the property decides
            _check_error(exc, applied, want, {})
            poisoned.add()
            return
        assert not want, f"{want} not refused after {applied}"
        assert isinstance(out, torch.Tensor) and out.shape == ctx["hidden"].shape
        assert out.dtype == ctx["hidden"].dtype
        ran.add()

    check()
    poisoned.check()
    ran.check()


# ------------------------------------------------------------------ build_moe with EMULATION

#: Layers by name; built in the test (LayerSpec may refuse one: a ConfigError).
_LAYERS = {
    "None": lambda: None, "LayerSpec()": LayerSpec, "LayerSpec(top_k=2)": lambda: LayerSpec(top_k=K),
    "LayerSpec(top_k=2, E, H, I, bias)": lambda: LayerSpec(top_k=K, num_experts=E, hidden_size=H,
                                                          intermediate_size=I, has_bias=True),
    "LayerSpec(top_k=5)": lambda: LayerSpec(top_k=E + 1),
    "LayerSpec(hidden_size=32)": lambda: LayerSpec(hidden_size=32),
    "LayerSpec(num_experts=8)": lambda: LayerSpec(num_experts=8),
    "LayerSpec(has_bias=False)": lambda: LayerSpec(has_bias=False),
    "LayerSpec(ep_size=2)": lambda: LayerSpec(ep_size=2),
    "LayerSpec(tp_size=2)": lambda: LayerSpec(tp_size=2),
    "LayerSpec(activation_fn='gelu')": lambda: LayerSpec(activation_fn="gelu"),
    "LayerSpec(activation_fn='swiglu')": lambda: LayerSpec(activation_fn="swiglu"),
    "LayerSpec(swiglu_alpha=1.0, swiglu_limit=1e308)":
        lambda: LayerSpec(swiglu_alpha=1.0, swiglu_limit=1e308),
    "LayerSpec(swiglu_alpha=1e39)": lambda: LayerSpec(swiglu_alpha=1e39),
}
_LAYERS.update({name: (lambda v=v: v) for name, v in {
    "ns(top_k=0)": SimpleNamespace(top_k=0), "ns(top_k=True)": SimpleNamespace(top_k=True),
    "ns(top_k=2.0)": SimpleNamespace(top_k=2.0), "ns(top_k=-1)": SimpleNamespace(top_k=-1),
    "ns(top_k=2**31)": SimpleNamespace(top_k=2 ** 31), "ns(top_k='2')": SimpleNamespace(top_k="2"),
    "ns(swiglu_alpha=nan)": SimpleNamespace(swiglu_alpha=NAN),
    "ns(swiglu_limit=-1)": SimpleNamespace(swiglu_limit=-1.0),
    "ns(swiglu_limit='7')": SimpleNamespace(swiglu_limit="7"),
    "ns(swiglu_limit=1e308)": SimpleNamespace(swiglu_limit=1e308),
    "ns(ep_size=None)": SimpleNamespace(ep_size=None),
    "ns(hidden_size=64.0)": SimpleNamespace(hidden_size=64.0),
    "ns(activation_fn=5)": SimpleNamespace(activation_fn=5),
}.items()})
_SELECTIONS = {
    "EMULATION": SimpleNamespace(backend="EMULATION", activation=None),
    "EMULATION/mxfp8": SimpleNamespace(backend="EMULATION", activation="mxfp8"),
    "backend=5": SimpleNamespace(backend=5, activation=None), "no backend": SimpleNamespace(),
    "None": None, "NOPE": SimpleNamespace(backend="NOPE", activation=None),
}
_BUILD_OPTIONS = [{}, {"check_finite": False}, {"check_expert_ids": False}, {"check_finite": 1},
                  {"check_expert_ids": None}, {"max_num_tokens": True}, {"device": "nope"}]


def _layer_error(layer) -> bool:
    """A layer build_moe must refuse with EMULATION weights (E=4, H=I=64, with biases)."""
    if layer is None:
        return False
    top_k = getattr(layer, "top_k", None)
    if top_k is not None and (type(top_k) is not int or not 1 <= top_k <= E):
        return True
    for field, have in (("hidden_size", H), ("intermediate_size", I), ("num_experts", E)):
        if getattr(layer, field, None) not in (None, have):
            return True
    if getattr(layer, "has_bias", None) is False or getattr(layer, "ep_size", None) not in (None, 1) \
            or getattr(layer, "tp_size", None) not in (None, 1):
        return True
    fn = getattr(layer, "activation_fn", None)
    return fn not in (None, "swiglu_oai", "swiglu") or (
        fn != "swiglu" and not _activation_ok(layer))


def _activation_ok(layer) -> bool:
    alpha, limit = getattr(layer, "swiglu_alpha", None), getattr(layer, "swiglu_limit", None)
    ok_alpha = alpha is None or (isinstance(alpha, (int, float)) and math.isfinite(alpha))
    ok_limit = limit is None or (isinstance(limit, (int, float)) and limit > 0)
    return ok_alpha and ok_limit


def test_build_moe_emulation():
    refused = Floor("a refusal (build or forward)", 0.3)
    ran = Floor("an EMULATION forward result", 0.05)

    # valid layers, the EMULATION selection and no options more often: the forward path runs
    valid_layers = ["None", "LayerSpec()", "LayerSpec(top_k=2)", "LayerSpec(top_k=2, E, H, I, bias)"]
    layers = st.one_of(st.sampled_from(valid_layers), st.sampled_from(sorted(_LAYERS)))
    selections = st.one_of(st.just("EMULATION"), st.sampled_from(sorted(_SELECTIONS)))
    options = st.one_of(st.just(0), st.sampled_from(range(len(_BUILD_OPTIONS))))

    @given(bases, poisons, layers, selections, options)
    def check(base, plan, layer_name, selection_name, options):
        opts = _BUILD_OPTIONS[options]
        ctx, applied = _apply(base, [p for p in plan if p[0] not in _ORDER],
                              {"check_finite": opts.get("check_finite", True)})
        selection = _SELECTIONS[selection_name]
        try:
            layer = _LAYERS[layer_name]()
        except Exception as exc:  # noqa: BLE001 - LayerSpec refusing the value is documented
            expect(exc, ConfigError, exact=True)
            refused.add()
            return
        try:
            module = build_moe(selection, ctx["weights"], layer, **opts)
        except Exception as exc:  # noqa: BLE001
            expect(exc, *_OK, A.KernelUnavailable)  # NOPE: no adapter (documented)
            if isinstance(exc, A.KernelUnavailable):
                assert selection_name == "NOPE"
            refused.add()
            return
        assert selection_name in ("EMULATION", "EMULATION/mxfp8"), selection_name
        assert type(opts.get("check_finite", True)) is bool
        assert type(opts.get("check_expert_ids", True)) is bool
        assert not _layer_error(layer), f"layer {layer_name} accepted"
        want = _expected(ctx, applied)
        top_k = getattr(layer, "top_k", None)
        ids = ctx["ids"]
        if top_k is not None and isinstance(ids, torch.Tensor) and ids.dim() == 2 \
                and ids.shape[1] != top_k:
            want.append("topk_ids")  # the layer's top_k is checked against the routing
        try:
            out = module(ctx["hidden"], ctx["ids"], ctx["tw"])
        except Exception as exc:  # noqa: BLE001
            _check_error(exc, applied or [("layer", 0)], want, {})
            refused.add()
            return
        assert not want, f"{want} not refused after {applied}"
        assert isinstance(out, torch.Tensor) and out.shape == ctx["hidden"].shape
        if opts.get("check_finite", True):
            bad = {"hidden_nonfinite", "tw_nonfinite", "scale_255", "bias_nonfinite"}
            assert not bad & {a for a, _ in applied}, f"{applied} ran"
        ran.add()

    check()
    refused.check()
    ran.check()


# ------------------------------------------------------------------ adapters: options, checks, prepare


def _cutlass_prepared():
    return A.PreparedCutlassW4A16(device=torch.device("cpu"), num_experts=E, hidden_size=H,
                                  intermediate_size=I, hidden_pad=128, inter_pad=128,
                                  fc1_weights=torch.empty(0), fc2_weights=torch.empty(0),
                                  quant_scales=[], fc1_bias=None, fc2_bias=None, swiglu={},
                                  activation=GPT_OSS_SWIGLU, max_num_tokens=8)


_OPTION_VALUES = {
    "max_num_tokens": [8, 8192, True, 2.5, 0, -1, "8", None, 2 ** 31, 10 ** 5000, 1],
    "check_finite": [True, False, 1, 0, None, "yes"],
    "check_expert_ids": [True, False, 1, None, "no"],
    "use_fused_finalize": [True, False, None, 1],
    "alignment": [None, 128, 256, True, 0, -128, 100, 2.0, 2 ** 70],
    "module": ["trimmed", "full", "installed", "x", None, 5],
    "act": [None, "bf16", "mxfp8", "fp8", 5, "MXFP8"],
    "activation": [GPT_OSS_SWIGLU, SILU_SWIGLU, None, "swiglu_oai"],
    "device": [None, "cpu"],
}
_TAKES = {  # the options each adapter's constructor declares
    "FLASHINFER_CUTLASS_MXFP4_BF16": ("max_num_tokens", "check_finite", "check_expert_ids",
                                      "use_fused_finalize", "alignment", "module", "activation",
                                      "device"),
    "FLASHINFER_TRTLLM_MXFP4_BF16": ("check_finite", "check_expert_ids", "activation", "device"),
    "FLASHINFER_TRTLLM_MXFP4_MXFP8": ("check_finite", "check_expert_ids", "activation", "device"),
    "FLASHINFER_CUTLASS_MXFP4_MXFP8": ("check_finite", "check_expert_ids", "activation", "device"),
}
# run-side poisons and the name the adapters use for the tensor
_RUN_POISONS = ["hidden_nonfinite", "hidden_dtype", "hidden_shape", "hidden_not_tensor",
                "tw_nonfinite", "tw_dtype", "tw_shape", "ids_range", "ids_range_int64",
                "ids_dtype", "top_k", "ids_rows", "empty_batch"]
_ADAPTER_NAMES = {"hidden": "hidden_states"}


def _option_ok(name: str, value) -> bool:
    if name == "max_num_tokens":
        return type(value) is int and value >= 1
    if name in ("check_finite", "check_expert_ids", "use_fused_finalize"):
        return type(value) is bool
    if name == "alignment":
        return value is None or (type(value) is int and value >= 128 and value % 128 == 0)
    if name == "module":
        return value in ("trimmed", "full", "installed")
    if name == "activation":
        return value is GPT_OSS_SWIGLU or value is SILU_SWIGLU
    return True


def _adapter_expected(poison: str, adapter, ctx_numel: int) -> str | None:
    """The tensor an adapter's check_run_inputs refuses for one poison (None: passes);
    ``ctx_numel``: the batch is not empty."""
    if poison.endswith("nonfinite") and not ctx_numel:
        return None
    if poison in ("hidden_nonfinite", "tw_nonfinite"):
        return None if not adapter.check_finite else \
            ("hidden_states" if poison.startswith("hidden") else "topk_weights")
    if poison == "ids_range":  # int32 ids out of [0, E): a value check that can be off
        return "topk_ids" if adapter.check_expert_ids and ctx_numel else None
    if poison == "empty_batch" or (poison.endswith("nonfinite") and not ctx_numel):
        return None
    if poison.startswith("hidden"):
        return "hidden_states"
    return "topk_weights" if poison.startswith("tw") else "topk_ids"  # int64: int32 required


def test_adapters_pre_launch_checks():
    refused = Floor("an adapter option or input refused", 0.3)
    checked = Floor("check_run_inputs passed on valid input", 0.05)

    @given(st.sampled_from(sorted(_TAKES)),
           st.lists(st.tuples(st.sampled_from(sorted(_OPTION_VALUES)), st.integers(0, 100)),
                    max_size=3, unique_by=lambda t: t[0]),
           bases, st.lists(st.tuples(st.sampled_from(_RUN_POISONS), st.integers(0, 1000)),
                           max_size=2, unique_by=lambda p: _target(p[0])),
           st.sampled_from(["none", "scale_255", "bias_nonfinite", "weights_junk"]),
           st.integers(0, 1000), st.booleans())
    def check(backend, options, base, run_plan, weight_poison, n, junk_prepared):
        kwargs = {}
        for name, i in options:
            if name == "act" and "TRTLLM" in backend:
                kwargs["act"] = _OPTION_VALUES["act"][i % len(_OPTION_VALUES["act"])]
            elif name in _TAKES[backend]:
                kwargs[name] = _OPTION_VALUES[name][i % len(_OPTION_VALUES[name])]
        if "act" in kwargs:  # act= with a fixed backend must name that row's activation
            want_act = "mxfp8" if backend.endswith("MXFP8") else "bf16"
            act_ok = kwargs["act"] in (None, want_act)
        else:
            act_ok = True
        try:
            adapter = A.adapter_for(backend, **kwargs)
        except Exception as exc:  # noqa: BLE001
            expect(exc, KernelInputError, exact=True)
            bad = [k for k, v in kwargs.items() if not _option_ok(k, v)] + ([] if act_ok else ["act"])
            if kwargs.get("activation") is SILU_SWIGLU:
                bad.append("activation")  # these rows implement swiglu_oai only
            assert bad, f"valid options {kwargs} refused: {exc}"
            refused.add()
            return
        bad = [k for k, v in kwargs.items() if not _option_ok(k, v)]
        assert not bad and act_ok, f"adapter built with {kwargs}"
        # check_run_inputs on placeholder prepared weights (the launch itself needs a GPU)
        ctx, applied = _apply(base, run_plan, {"check_finite": adapter.check_finite},
                              hidden_dtype=torch.bfloat16)
        prepared = _cutlass_prepared() if backend == "FLASHINFER_CUTLASS_MXFP4_BF16" else \
            A.PreparedFlashInferView(backend, torch.device("cpu"), E, H, I, 128, 128, {},
                                     GPT_OSS_SWIGLU)
        nonempty = not any(a == "empty_batch" for a, _ in applied)
        want = [_adapter_expected(name, adapter, nonempty) for name, _ in applied]
        if junk_prepared:
            prepared = (None, "prepared", SimpleNamespace(backend=backend), _WEIGHTS)[n % 4]
            want.insert(0, "prepared")
        want = [w for w in want if w is not None]
        try:
            got = adapter.check_run_inputs(prepared, ctx["hidden"], ctx["ids"], ctx["tw"])
        except Exception as exc:  # noqa: BLE001
            expect(exc, KernelInputError, exact=True)
            assert want, f"valid input refused after {applied}: {exc!r}"
            if len(want) == 1 and len(applied) + junk_prepared <= 1:
                assert exc.tensor == want[0], (exc.tensor, want[0])
            refused.add()
        else:
            assert not want, f"{want} not refused after {applied}"
            assert got == (ctx["hidden"].shape[0], ctx["ids"].shape[1])
            checked.add()
        # prepare: the CPU-side weight checks come before the device is looked at
        if torch.cuda.is_available():
            return  # the valid path would build and launch on the GPU: not this test's job
        weights = _WEIGHTS
        tensor = None
        if weight_poison == "scale_255":
            tensor = ("w13_scales", "w2_scales")[n % 2]
            weights = _poisoned_weights(weights, tensor, n % E, 255)
        elif weight_poison == "bias_nonfinite":
            tensor = ("w13_bias", "w2_bias")[n % 2]
            weights = _poisoned_weights(weights, tensor, n % E, (NAN, INF, -INF)[n % 3])
        elif weight_poison == "weights_junk":
            junk = {"weights": _WEIGHTS, "kwargs": {}}
            tensor = _weights_junk(junk, n)
            weights = junk["weights"]
        try:
            adapter.prepare(weights)
        except Exception as exc:  # noqa: BLE001
            if tensor is None or (not adapter.check_finite and weight_poison != "weights_junk"):
                expect(exc, A.KernelUnavailable, exact=True)  # no CUDA here: documented
            else:
                expect(exc, KernelInputError, exact=True)
                assert exc.tensor == tensor, (exc.tensor, tensor)
        else:
            raise AssertionError("prepare returned without a GPU")

    check()
    refused.check()
    checked.check()
