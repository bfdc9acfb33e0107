"""Compare the oracle with vLLM's own answers (from :mod:`vllm_harness`), case by case.

vLLM's answer for a case is what a user of that release sees: the ``--moe-backend``
name refused by its ``KernelConfig`` before any layer is built, else the result of
``select_mxfp4_moe_backend`` (a backend, or the exception it raised).  The oracle's
answer is :func:`oracle.select` on the same inputs under a policy.  Two answers
*agree* when both pick the same backend with the same padding and the same
BF16-fallback warning, or both fail and the oracle's error names vLLM's reason
(:data:`REASON_PHRASES`).  Nothing here decides a selection: vLLM's code did.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from oracle import (ActivationConflict, ConfigError, Deployment, Device, Environment, LayerSpec,
                    NoEligibleBackend, OracleError, Reason, SelectionRequest, UnknownBackend,
                    select)

#: The harness's library names -> the oracle's (``oracle.platforms.LIBRARIES``).
LIBRARY_NAMES = {"flashinfer": "flashinfer", "triton_kernels": "triton_kernels",
                 "amd-quark": "amd_quark", "aiter": "aiter", "deep_gemm": "deep_gemm",
                 "humming": "humming"}

#: What every vLLM install has besides the optional libraries (its own custom ops,
#: torch; Intel's extension on XPU).  The strict rows name them; vLLM's helpers don't.
ALWAYS_PRESENT = ("vllm_ops", "torch", "intel_xpu")

#: vLLM's phrase for why a kernel refused -> the oracle reasons that say the same.
REASON_PHRASES: tuple[tuple[str, frozenset[Reason]], ...] = (
    ("LoRA", frozenset({Reason.LORA_UNSUPPORTED})),
    ("routing method", frozenset({Reason.ROUTING_UNSUPPORTED})),
    ("current device", frozenset({Reason.ARCH_UNSUPPORTED, Reason.PLATFORM_UNSUPPORTED,
                                  Reason.LIBRARY_MISSING})),
    ("requires amd-quark", frozenset({Reason.LIBRARY_MISSING})),
    ("activation format", frozenset({Reason.PARALLELISM_UNSUPPORTED})),
    ("parallel config", frozenset({Reason.PARALLELISM_UNSUPPORTED})),
    ("expert biases", frozenset({Reason.BIAS_UNSUPPORTED})),
    ("quantization scheme", frozenset({Reason.ACTIVATION_MISMATCH})),
    ("hidden", frozenset({Reason.SHAPE_UNALIGNED})),
    (" activation", frozenset({Reason.ACTIVATION_FN_UNSUPPORTED})),
)


def gpt_oss_layer(layer: dict) -> LayerSpec:
    """The harness's layer dict as the oracle's LayerSpec."""
    fn = {"swigluoai": "swiglu_oai", "silu": "swiglu"}[layer["activation"]]
    return LayerSpec(hidden_size=layer["hidden_size"], intermediate_size=layer["intermediate_size"],
                     num_experts=layer["num_experts"], top_k=layer["top_k"], activation_fn=fn,
                     has_bias=layer["has_bias"])


#: The DeepSeek-V4-Flash layer the harness asks vLLM's DeepSeek-V4 selector about.
DEEPSEEK_V4_LAYER = LayerSpec(hidden_size=4096, intermediate_size=2048, num_experts=256,
                              top_k=6, activation_fn="swiglu", has_bias=False)


def request_for(case: Any, policy: str, layer: LayerSpec) -> SelectionRequest:
    """The oracle request for a harness case (``case``: a Case or its dict): the same
    engine flags as a Deployment, the case's family and routing on the layer."""
    c = case if isinstance(case, dict) else dataclasses.asdict(case)
    from vllm_harness import LIBRARY_SETS
    libs = [LIBRARY_NAMES[name] for name in sorted(LIBRARY_SETS[c["libraries"]])]
    env = Environment({name: None for name in (*libs, *ALWAYS_PRESENT)})
    family = c.get("family", "gpt-oss")
    if family == "deepseek-v4":
        layer = DEEPSEEK_V4_LAYER
    if c.get("routing"):
        layer = LayerSpec(**{**layer.to_dict(), "routing_method": c["routing"]})
    deployment = Deployment(
        tensor_parallel_size=c.get("tp", 1), data_parallel_size=c.get("dp", 1),
        enable_expert_parallel=c.get("ep", False),
        all2all_backend=c.get("all2all") or "allgather_reducescatter",
        enable_eplb=c.get("eplb", False), enable_lora=c.get("lora", False))
    return SelectionRequest(
        activation=c["override"], checkpoint_activation=c["checkpoint_activation"],
        moe_backend=c["moe_backend"], device=Device.parse(c["arch"]), environment=env,
        layer=layer, policy=policy, deployment=deployment, family=family,
        checkpoint=c.get("checkpoint"))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One side's answer, reduced to what is compared."""

    backend: str | None
    padded: tuple[int, int] | None = None
    fallback: bool = False
    error: str | None = None  # "unknown_backend" | "conflict" | "activation" | "refused" |
    #                           "none" | "config" (the deployment refused before/after the kernel)
    kernel_class: str | None = None
    reasons: frozenset[Reason] | None = None  # vLLM: reasons its phrase allows / ours: the raised
    detail: str = ""

    def short(self) -> str:
        if self.backend:
            pad = f" pad {self.padded[0]}x{self.padded[1]}" if self.padded else ""
            cls = f" [{self.kernel_class}]" if self.kernel_class else ""
            return f"{self.backend}{cls}{pad}{' (bf16 fallback)' if self.fallback else ''}"
        return f"error:{self.error}"


def _phrase_reasons(text: str) -> frozenset[Reason] | None:
    for phrase, reasons in REASON_PHRASES:
        if phrase in text:
            return reasons
    return None


def _built_backend(answer: dict) -> str:
    """The variant whose kernel runs.  compressed-tensors MXFP4 builds CutlassExpertsMxfp4
    on SM10x but leaves its ``mxfp4_backend`` attribute at the MARLIN it starts from
    (compressed_tensors_moe_w4a4_mxfp4.py:56-68): the experts class says which kernel
    runs, so the answer names CUTLASS_MXFP4_MXFP4, the one variant built from that class."""
    if answer.get("method") == "CompressedTensorsW4A4Mxfp4MoEMethod" and \
            answer.get("experts_cls") == "CutlassExpertsMxfp4":
        return "CUTLASS_MXFP4_MXFP4"
    return answer["backend"]


def vllm_outcome(answer: dict) -> Outcome:
    """vLLM's answer as the user meets it (KernelConfig first, then the oracle)."""
    if answer.get("kernel_config_error"):
        return Outcome(None, error="unknown_backend", detail=answer["kernel_config_error"][:200])
    err = answer.get("error")
    if err is None:
        warned = any("Falling back" in w for w in answer.get("warnings", []))
        return Outcome(_built_backend(answer), tuple(answer["padded"]), warned,
                       kernel_class=answer.get("experts_cls"))
    msg = err["message"]
    if err.get("phase") in ("parallel_config", "eplb"):
        return Outcome(None, error="config", detail=msg[:200])
    if "is not supported for MXFP4 MoE" in msg:
        return Outcome(None, error="unknown_backend", detail=msg[:200])
    if "checkpoint declares MoE activation" in msg:
        return Outcome(None, error="conflict", detail=msg[:200])
    if "does not support activation=" in msg:
        return Outcome(None, error="activation", detail=msg[:200])
    if err["type"] == "NotImplementedError" and "No MXFP4 MoE backend" in msg:
        return Outcome(None, error="none", detail=msg[:200])
    if "does not support the deployment configuration" in msg:
        backend = msg.split("'")[1]
        reason = msg.split(" since ", 1)[1] if " since " in msg else ""
        return Outcome(backend, error="refused", reasons=_phrase_reasons(reason),
                       detail=reason[:200])
    return Outcome(None, error=f"unexpected {err['type']}", detail=msg[:200])


def oracle_outcome(request: SelectionRequest | ConfigError) -> tuple[Outcome, Any]:
    """The oracle's answer (and the Selection or the error)."""
    if isinstance(request, ConfigError):  # the deployment itself was refused
        return Outcome(None, error="config", detail=str(request)[:200]), request
    try:
        sel = select(request)
    except UnknownBackend as exc:
        return Outcome(None, error="unknown_backend", detail=str(exc)[:200]), exc
    except ActivationConflict as exc:
        return Outcome(None, error="conflict", detail=str(exc)[:200]), exc
    except NoEligibleBackend as exc:
        return Outcome(None, error="none", detail=str(exc)[:200]), exc
    except ConfigError as exc:
        return Outcome(None, error="config", detail=str(exc)[:200]), exc
    except OracleError as exc:
        return Outcome(None, error=f"unexpected {type(exc).__name__}", detail=str(exc)[:200]), exc
    return Outcome(sel.backend, sel.padded, sel.activation_fallback,
                   kernel_class=sel.kernel_class), sel


def agrees(theirs: Outcome, ours: Outcome, ours_raw: Any) -> bool:
    """Same winner, padding and fallback warning; or both fail for the same reason."""
    if theirs.error is None:
        same_class = theirs.kernel_class is None or ours.kernel_class is None or \
            theirs.kernel_class == ours.kernel_class
        return ours.error is None and same_class and (
            theirs.backend, theirs.padded, theirs.fallback) == (
            ours.backend, ours.padded, ours.fallback)
    if ours.error is None:
        return False
    if theirs.error in ("unknown_backend", "conflict", "config"):
        return ours.error == theirs.error
    if not isinstance(ours_raw, NoEligibleBackend):
        return False
    rejected = {r.backend: r.reason for r in ours_raw.rejected}
    if theirs.error == "activation":
        return bool(rejected) and set(rejected.values()) == {Reason.ACTIVATION_MISMATCH}
    if theirs.error == "refused":
        return theirs.reasons is not None and rejected.get(theirs.backend) in theirs.reasons
    return theirs.error == "none"


@dataclasses.dataclass
class Comparison:
    """Every case's two answers under one policy, and the agreement."""

    policy: str
    version: str
    rows: list[tuple[Any, Outcome, Outcome, bool]]

    @property
    def agreeing(self) -> int:
        return sum(1 for *_, ok in self.rows if ok)

    def disagreements(self) -> list[tuple[Any, Outcome, Outcome, bool]]:
        return [r for r in self.rows if not r[3]]

    def ratio(self) -> float:
        return self.agreeing / len(self.rows) if self.rows else 1.0


def _request_or_error(case: Any, policy: str, spec: LayerSpec) -> SelectionRequest | ConfigError:
    try:
        return request_for(case, policy, spec)
    except ConfigError as exc:  # e.g. EPLB without expert parallelism
        return exc


def case_answers(table: Any, version: str) -> list[tuple[Any, dict]]:
    """(case, vLLM's answer) for every case ``version`` ran."""
    if hasattr(table, "pairs"):
        return list(table.pairs(version))
    return list(zip(table.cases, table.answers[version]))


def compare(table: Any, version: str, policy: str, layer: dict,
            cases: Iterable[tuple[Any, dict]] | None = None) -> Comparison:
    spec = gpt_oss_layer(layer)
    rows = []
    for case, answer in (case_answers(table, version) if cases is None else cases):
        theirs = vllm_outcome(answer)
        ours, raw = oracle_outcome(_request_or_error(case, policy, spec))
        rows.append((case, theirs, ours, agrees(theirs, ours, raw)))
    return Comparison(policy, version, rows)


def summarize(rows: Iterable[tuple[Any, Outcome, Outcome, bool]],
              key: Callable[[Any, Outcome, Outcome], str], limit: int = 12) -> list[str]:
    counts = Counter(key(c, t, o) for c, t, o, ok in rows if not ok)
    return [f"{n:6d}  {k}" for k, n in counts.most_common(limit)]


def default_key(case: Any, theirs: Outcome, ours: Outcome) -> str:
    axes = "".join(f" {k}={getattr(case, k)}" for k, default in (
        ("dp", 1), ("ep", False), ("all2all", None), ("eplb", False), ("lora", False),
        ("routing", None), ("family", "gpt-oss"), ("checkpoint", None))
        if getattr(case, k, default) != default)
    return (f"{case.arch} {case.moe_backend} ovr={case.override} ckpt={case.checkpoint_activation} "
            f"libs={case.libraries} tp={case.tp}{axes}: vllm {theirs.short()} "
            f"({theirs.detail[:60]}) / "
            f"ours {ours.short()} ({ours.detail[:80]})")


def table_lines(comparisons: Sequence[Comparison]) -> list[str]:
    out = [f"{'policy':10s} {'vLLM':7s} {'cases':>6s} {'agree':>6s} {'ratio':>8s}"]
    for c in comparisons:
        out.append(f"{c.policy:10s} {c.version:7s} {len(c.rows):6d} {c.agreeing:6d} "
                   f"{100 * c.ratio():7.2f}%")
    return out
