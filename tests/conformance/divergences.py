"""The closed list of places where the strict policy differs from vLLM 0.33.

docs/guide.md ("Where strict differs from vLLM") explains each class; this module
is its executable form: every strict/vLLM disagreement of the conformance grid must
fall in exactly one class (the first whose predicate holds), and every class must be
seen.  A disagreement no class explains is a bug in the matrix or the strict rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compare import Outcome

from oracle.matrix import MATRIX, RELEASES


@dataclass(frozen=True)
class Divergence:
    id: str
    title: str
    vllm_source: str  # the vLLM 0.33.0 file:line the class is about
    applies: Callable[[Any, Outcome, Outcome], bool]


def _strict_only_name(case: Any, theirs: Outcome, ours: Outcome) -> bool:
    return theirs.error == "unknown_backend" and ours.error != "unknown_backend"


def _known_bad(case: Any, theirs: Outcome, ours: Outcome) -> bool:
    row = MATRIX.by_name.get(theirs.backend or "")
    return theirs.error is None and row is not None and \
        row.status_on(case.arch).status == "known_bad"


def _biases_dropped(case: Any, theirs: Outcome, ours: Outcome) -> bool:
    return theirs.error is None and theirs.backend == "CUTLASS_MXFP4_MXFP4"


def _emulation_everywhere(case: Any, theirs: Outcome, ours: Outcome) -> bool:
    return ours.backend == "EMULATION" and theirs.error is not None


def _no_bf16_fallback(case: Any, theirs: Outcome, ours: Outcome) -> bool:
    return theirs.error is None and theirs.fallback


def _humming_applies(case: Any, theirs: Outcome, ours: Outcome) -> bool:
    return "HUMMING" in (ours.backend, theirs.backend) and case.override is not None or \
        ours.backend == "HUMMING" and case.checkpoint_activation is not None


def _quantized_pick_reported(case: Any, theirs: Outcome, ours: Outcome) -> bool:
    return ours.fallback and case.override is None and case.checkpoint_activation is None


def _wider_runner_archs(case: Any, theirs: Outcome, ours: Outcome) -> bool:
    variant = RELEASES["0.33.0"].variant.get(ours.backend or "")
    return ours.error is None and variant is not None and case.arch not in variant.archs


def _emulation_keys(case: Any, theirs: Outcome, ours: Outcome) -> bool:
    return theirs.backend == "EMULATION" and theirs.error is None and ours.backend != "EMULATION"


def _both_fail(case: Any, theirs: Outcome, ours: Outcome) -> bool:
    return theirs.error is not None and ours.error is not None


#: In the order they are tried.
DIVERGENCES: tuple[Divergence, ...] = (
    Divergence("strict-only-names", "strict accepts every variant's member name and the names of "
               "FlashInfer runners vLLM does not register", "config/kernel.py:122-147; "
               "fused_moe/oracle/mxfp4.py:394-399", _strict_only_name),
    Divergence("known-bad", "strict refuses a variant on an arch where it is known to fail "
               "(TRT-LLM BF16 on sm103, TRITON on sm110)", "fused_moe/oracle/mxfp4.py:405-425",
               _known_bad),
    Divergence("biases-dropped", "strict refuses CUTLASS_MXFP4_MXFP4 for a layer with expert "
               "biases; vLLM runs it and the kernel ignores them",
               "fused_moe/experts/cutlass_moe.py:1034,1097", _biases_dropped),
    Divergence("emulation-everywhere", "strict's EMULATION is the project's pure-torch kernel: it "
               "runs on every arch without amd-quark", "fused_moe/experts/"
               "ocp_mx_emulation_moe.py:130-131", _emulation_everywhere),
    Divergence("wider-runner-archs", "strict follows FlashInfer's own runner guard where it "
               "declares more archs than vLLM's gate (FLASHINFER_CUTLASS_MXFP4_MXFP8 on sm110)",
               "fused_moe/experts/flashinfer_cutlass_moe.py:128", _wider_runner_archs),
    Divergence("quantized-pick-reported", "with no activation requested, strict takes a pinned "
               "family's quantized-activation variant when no BF16 one runs, and reports it; "
               "vLLM keeps only the BF16 variants when the list has one, silently otherwise",
               "fused_moe/oracle/mxfp4.py:631", _quantized_pick_reported),
    Divergence("humming-applies-the-key", "strict counts HUMMING as applying a requested key "
               "only where the project's adapter runs it (FP8 per token / per tensor), then "
               "ahead of EMULATION; vLLM files HUMMING as a BF16 variant and applies any "
               "override", "fused_moe/oracle/mxfp4.py:512-549", _humming_applies),
    Divergence("no-silent-bf16-fallback", "with an activation requested and no variant applying "
               "it, vLLM falls back to a BF16 variant with a warning; strict refuses unless "
               "allow_activation_fallback, or runs a kernel that applies the key",
               "fused_moe/oracle/mxfp4.py:542-560,614-631", _no_bf16_fallback),
    Divergence("emulation-implemented-keys", "strict's EMULATION applies the activation keys "
               "its kernel implements (MXFP8, FP8 per tensor / per token, MXFP4), not FP8 "
               "block-128; vLLM's takes any key", "fused_moe/oracle/mxfp4.py:628,719-724",
               _emulation_keys),
    Divergence("both-refuse", "both refuse the request; strict names the first of its own "
               "gates that fails", "fused_moe/oracle/mxfp4.py:650-760", _both_fail),
)


def classify(case: Any, theirs: Outcome, ours: Outcome) -> str | None:
    for d in DIVERGENCES:
        if d.applies(case, theirs, ours):
            return d.id
    return None
