"""Drift check: the matrix's FlashInfer rows against the installed FlashInfer (CPU only).

The oracle never imports FlashInfer; this test does, and compares what the matrix says
with what FlashInfer 0.7.2 itself declares:

* every row with ``flashinfer_runner``: the class exists in ``flashinfer.fused_moe`` and
  lists the row's (weight, activation) pair in ``supported_quant_variants``;
* every row with ``flashinfer_config``: for each CUDA arch in scope, FlashInfer's answer
  equals the row's.  FlashInfer's answer is ``Config.supported(arch)``, narrowed by the
  runner's own per-quant-pair arch guard (``_check_support``; e.g. TRT-LLM W4A16 is
  refused on SM103 although ``TrtllmFp4Config.supported(103)`` is true).  The row's
  answer is "listed in archs and not known_bad there".  Archs listed in the row's
  ``flashinfer_divergence`` are skipped (deliberate, documented differences);
* conversely, every runner class with an MXFP4 weight pair has a row for that pair.

All comparisons are functions that return a list of disagreement strings (empty =
agreement), so a test can feed them a deliberately wrong matrix and check the report.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from typing import Any

import pytest

flashinfer = pytest.importorskip("flashinfer", reason="FlashInfer is not installed")
fused_moe = pytest.importorskip("flashinfer.fused_moe",
                                reason="flashinfer.fused_moe cannot be imported")
torch = pytest.importorskip("torch")

import flashinfer.utils as fi_utils  # noqa: E402

from oracle.keys import (QuantKey, canonical_name, kFp8DynamicTokenSym,  # noqa: E402
                         kFp8StaticTensorSym, kMxfp4Dynamic, kMxfp4Static, kMxfp8Dynamic)
from oracle.matrix import ARCHS_IN_SCOPE, MATRIX, Matrix, Row, parse_matrix  # noqa: E402

PINNED_VERSION = "0.7.2.post1"
QF = fused_moe.QuantFormat

#: Our activation keys ↔ FlashInfer QuantFormat (None = BF16 activations).
ACTIVATION_FORMATS: dict[QuantKey | None, Any] = {
    None: QF.BF16,
    kMxfp8Dynamic: QF.MXFP8,
    kFp8StaticTensorSym: QF.FP8PerTensor,
    # FlashInfer's CutlassHumming runner is labelled FP8PerTensor; its kernel quantizes
    # activations per token (measured on an H200), which is what the matrix row says.
    kFp8DynamicTokenSym: QF.FP8PerTensor,
    kMxfp4Dynamic: QF.MXFP4,
}
#: Our weight keys ↔ FlashInfer QuantFormat.
WEIGHT_FORMATS: dict[QuantKey, Any] = {kMxfp4Static: QF.MXFP4}

CUDA_ARCHS: tuple[str, ...] = tuple(a for a in ARCHS_IN_SCOPE if a.startswith("sm"))

VERSION_OK = flashinfer.__version__ == PINNED_VERSION
needs_pinned = pytest.mark.skipif(
    not VERSION_OK,
    reason=(f"arch/quant-pair drift checks are calibrated for flashinfer {PINNED_VERSION}, "
            f"installed {flashinfer.__version__}; re-verify the matrix against the new version, "
            "then update PINNED_VERSION"))


# ------------------------------------------------------------------ FlashInfer facts

def arch_int(arch: str) -> int:
    """``"sm100"`` → ``100``."""
    return int(arch[2:])


def fi_pair(row: Row) -> tuple[Any, Any] | None:
    """The row's (weight, activation) as FlashInfer QuantFormats; None if unmappable."""
    weight = WEIGHT_FORMATS.get(row.weight)
    if weight is None or row.activation not in ACTIVATION_FORMATS:
        return None
    return weight, ACTIVATION_FORMATS[row.activation]


def fi_class(name: str) -> type | None:
    obj = getattr(fused_moe, name, None)
    return obj if isinstance(obj, type) else None


def runner_classes() -> dict[str, type]:
    """Every runner class ``flashinfer.fused_moe`` exports (has supported_quant_variants)."""
    return {name: obj for name in dir(fused_moe)
            if isinstance(obj := getattr(fused_moe, name), type)
            and isinstance(getattr(obj, "supported_quant_variants", None), tuple)}


@contextlib.contextmanager
def _fake_compute_capability(arch: int) -> Iterator[None]:
    """Runners import ``get_compute_capability`` from flashinfer.utils at call time."""
    original = fi_utils.get_compute_capability
    fi_utils.get_compute_capability = lambda device=None: (arch // 10, arch % 10)
    try:
        yield
    finally:
        fi_utils.get_compute_capability = original


# A refusal because of the architecture, as FlashInfer 0.7.2 phrases them:
# "does not support SM107", "is unsupported on SM103", "requires SM120 or SM121".
_ARCH_REFUSAL = re.compile(r"(does not support|unsupported on|requires) SM\d{2,3}")


@lru_cache(maxsize=None)
def runner_arch_guard(runner: str, pair: tuple[Any, Any], arch: int) -> tuple[bool | None, str]:
    """Does the runner's own support check accept ``pair`` on ``arch``?

    Runs ``_check_support`` on a runner built with ``__new__`` (FlashInfer's own tests
    do the same) with a faked compute capability; needs no GPU.  Returns
    ``(True, "")`` accepted, ``(False, message)`` refused because of the arch, or
    ``(None, message)`` inconclusive (it failed for a non-arch reason, e.g. a CUDA
    call on a CPU-only torch, after the arch checks passed).
    """
    cls = fi_class(runner)
    if cls is None:
        return None, f"{runner} not found"
    r = cls.__new__(cls)
    r.config = fused_moe.MoEConfig(
        routing=fused_moe.RoutingConfig(num_experts=32, top_k=4),
        quant=fused_moe.QuantConfig(*pair),
        experts=fused_moe.ExpertConfig(intermediate_size=2880))
    r.device = torch.device("cuda", 0)
    r._device_arch = arch  # what the CUTLASS / cuTile runners' __init__ records
    with _fake_compute_capability(arch):
        try:
            r._check_support()
        except Exception as exc:  # noqa: BLE001 - classify, never crash the check
            message = f"{type(exc).__name__}: {exc}"
            return (False if _ARCH_REFUSAL.search(str(exc)) else None), message
    return True, ""


# ------------------------------------------------------------------ comparisons

def _pair_name(pair: tuple[Any, Any]) -> str:
    return f"({pair[0].name}, {pair[1].name})"


def quant_pair_disagreements(matrix: Matrix) -> list[str]:
    """Rows whose FlashInfer runner is missing or does not declare the row's quant pair."""
    out = []
    for row in matrix.rows:
        if not row.flashinfer_runner:
            continue
        cls = fi_class(row.flashinfer_runner)
        pair = fi_pair(row)
        if cls is None:
            out.append(f"{row.name}: flashinfer_runner {row.flashinfer_runner} does not exist "
                       f"in flashinfer.fused_moe {flashinfer.__version__}")
        elif pair is None:
            out.append(f"{row.name}: weight {canonical_name(row.weight)} / activation "
                       f"{row.activation_name} has no FlashInfer QuantFormat mapping")
        elif pair not in cls.supported_quant_variants:
            declared = ", ".join(map(_pair_name, cls.supported_quant_variants))
            out.append(f"{row.name}: matrix says {row.flashinfer_runner} runs "
                       f"{_pair_name(pair)}; FlashInfer declares only {declared}")
    return out


def arch_disagreements(matrix: Matrix) -> list[str]:
    """Per (row, CUDA arch): the matrix's answer vs FlashInfer's, outside flashinfer_divergence."""
    out = []
    for row in matrix.rows:
        if not row.flashinfer_config:
            continue
        cfg = fi_class(row.flashinfer_config)
        if cfg is None or not callable(getattr(cfg, "supported", None)):
            out.append(f"{row.name}: flashinfer_config {row.flashinfer_config} does not exist "
                       f"(or has no supported()) in flashinfer.fused_moe {flashinfer.__version__}")
            continue
        pair = fi_pair(row)
        diverges = dict(row.flashinfer_divergence)
        for arch in CUDA_ARCHS:
            if arch in diverges:
                continue
            n = arch_int(arch)
            config_ok = bool(cfg.supported(n))
            listed = arch in row.archs
            status = row.status_on(arch).status if listed else "absent"
            ours = listed and status != "known_bad"
            where = f"{row.name} on {arch}"
            if not config_ok:
                if listed:
                    out.append(f"{where}: matrix lists {arch} ({status}) but FlashInfer "
                               f"{row.flashinfer_config}.supported({n}) is False")
                continue
            guard: bool | None = True
            why = ""
            if row.flashinfer_runner and pair is not None:
                guard, why = runner_arch_guard(row.flashinfer_runner, pair, n)
            if guard is False:
                if ours:
                    out.append(f"{where}: matrix says {status} but FlashInfer "
                               f"{row.flashinfer_runner} refuses {_pair_name(pair)} on SM{n} "
                               f"({why}) although {row.flashinfer_config}.supported({n}) is "
                               f"True; drop {arch} or mark it known_bad")
                continue
            if not listed:
                out.append(f"{where}: matrix omits {arch} but FlashInfer "
                           f"{row.flashinfer_config}.supported({n}) is True"
                           + (f" and {row.flashinfer_runner} accepts {_pair_name(pair)}"
                              if guard else ""))
            elif not ours:
                out.append(f"{where}: matrix says known_bad but FlashInfer supports it; record "
                           f"the reason under flashinfer_divergence.{arch}")
    return out


def uncovered_runner_pairs(matrix: Matrix) -> list[str]:
    """FlashInfer runners' MXFP4-weight pairs that no matrix row claims."""
    claimed = {(r.flashinfer_runner, fi_pair(r)) for r in matrix.rows if r.flashinfer_runner}
    out = []
    for name, cls in sorted(runner_classes().items()):
        for pair in cls.supported_quant_variants:
            if pair[0] == QF.MXFP4 and (name, pair) not in claimed:
                out.append(f"{name} declares {_pair_name(pair)} but no matrix row has "
                           f"flashinfer_runner = \"{name}\" with that weight/activation")
    return out


def all_disagreements(matrix: Matrix) -> list[str]:
    return (quant_pair_disagreements(matrix) + arch_disagreements(matrix)
            + uncovered_runner_pairs(matrix))


# ------------------------------------------------------------------ helpers for mutation

def matrix_doc() -> dict[str, Any]:
    text = resources.files("oracle.matrix").joinpath("mxfp4_moe.toml").read_text("utf-8")
    return tomllib.loads(text)


def row_doc(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in doc["row"] if r["name"] == name)


# ------------------------------------------------------------------ tests

FI_RUNNER_ROWS = [r for r in MATRIX.rows if r.flashinfer_runner]
FI_CONFIG_ROWS = [r for r in MATRIX.rows if r.flashinfer_config]


def test_flashinfer_is_the_pinned_version() -> None:
    assert flashinfer.__version__ == PINNED_VERSION, (
        f"installed flashinfer {flashinfer.__version__}, the matrix is verified against "
        f"{PINNED_VERSION} (pyproject pins it)")


def test_matrix_has_flashinfer_rows() -> None:
    assert FI_RUNNER_ROWS and FI_CONFIG_ROWS


@needs_pinned
@pytest.mark.parametrize("row", FI_RUNNER_ROWS, ids=lambda r: r.name)
def test_runner_declares_quant_pair(row: Row) -> None:
    one = Matrix(MATRIX.version, (row,), {}, ())
    problems = quant_pair_disagreements(one)
    assert not problems, "\n".join(problems)


@needs_pinned
@pytest.mark.parametrize("row", FI_CONFIG_ROWS, ids=lambda r: r.name)
def test_archs_match_flashinfer(row: Row) -> None:
    one = Matrix(MATRIX.version, (row,), {}, ())
    problems = arch_disagreements(one)
    assert not problems, "\n".join(problems)


@needs_pinned
def test_every_mxfp4_runner_pair_has_a_row() -> None:
    problems = uncovered_runner_pairs(MATRIX)
    assert not problems, "\n".join(problems)


@needs_pinned
def test_whole_matrix_agrees() -> None:
    assert all_disagreements(MATRIX) == []


@needs_pinned
def test_runner_guard_probe_sees_known_refusals() -> None:
    """The probe itself works: FlashInfer 0.7.2's documented per-pair arch guards."""
    assert runner_arch_guard("TrtllmFp4RoutedRunner", (QF.MXFP4, QF.BF16), 100)[0] is True
    assert runner_arch_guard("TrtllmFp4RoutedRunner", (QF.MXFP4, QF.BF16), 103)[0] is False
    assert runner_arch_guard("TrtllmFp4RoutedRunner", (QF.MXFP4, QF.MXFP8), 103)[0] is True
    assert runner_arch_guard("CuteDslRunner", (QF.MXFP4, QF.MXFP8), 107)[0] is False
    assert runner_arch_guard("CutlassW4A16Runner", (QF.MXFP4, QF.BF16), 100)[0] is False


# --- a deliberately wrong matrix must be caught, with exactly that disagreement

@needs_pinned
def test_wrong_arch_is_reported_exactly() -> None:
    doc = matrix_doc()
    row_doc(doc, "FLASHINFER_TRTLLM_MXFP4_BF16")["archs"].append("sm90")
    mutated = parse_matrix(doc)
    assert all_disagreements(mutated) == [
        "FLASHINFER_TRTLLM_MXFP4_BF16 on sm90: matrix lists sm90 (supported) but FlashInfer "
        "TrtllmFp4Config.supported(90) is False"]


@needs_pinned
def test_missing_arch_is_reported_exactly() -> None:
    doc = matrix_doc()
    row = row_doc(doc, "FLASHINFER_CUTLASS_MXFP4_MXFP8")
    row["archs"].remove("sm110")
    problems = all_disagreements(parse_matrix(doc))
    assert len(problems) == 1
    assert problems[0].startswith("FLASHINFER_CUTLASS_MXFP4_MXFP8 on sm110: matrix omits sm110")
    assert "CutlassMxfp8Mxfp4Config.supported(110) is True" in problems[0]


@needs_pinned
def test_runner_level_refusal_is_reported() -> None:
    """Removing our sm103 known_bad mark re-opens a FlashInfer runner refusal."""
    doc = matrix_doc()
    del row_doc(doc, "FLASHINFER_TRTLLM_MXFP4_BF16")["arch_status"]["sm103"]
    problems = all_disagreements(parse_matrix(doc))
    assert len(problems) == 1
    assert problems[0].startswith("FLASHINFER_TRTLLM_MXFP4_BF16 on sm103: matrix says supported "
                                  "but FlashInfer TrtllmFp4RoutedRunner refuses (MXFP4, BF16)")


@needs_pinned
def test_divergence_is_honoured() -> None:
    doc = matrix_doc()
    row = row_doc(doc, "FLASHINFER_TRTLLM_MXFP4_BF16")
    row["archs"].append("sm90")
    row["flashinfer_divergence"] = {"sm90": "test: deliberately claimed"}
    assert all_disagreements(parse_matrix(doc)) == []


@needs_pinned
def test_wrong_quant_pair_is_reported() -> None:
    doc = matrix_doc()
    row_doc(doc, "FLASHINFER_CUTLASS_MXFP4_BF16")["flashinfer_runner"] = "CutlassMxfp8Mxfp4Runner"
    problems = quant_pair_disagreements(parse_matrix(doc))
    assert problems == [
        "FLASHINFER_CUTLASS_MXFP4_BF16: matrix says CutlassMxfp8Mxfp4Runner runs (MXFP4, BF16); "
        "FlashInfer declares only (MXFP4, MXFP8)"]
    # ... and CutlassW4A16Runner's (MXFP4, BF16) is now claimed by no row.
    assert uncovered_runner_pairs(parse_matrix(doc)) == [
        "CutlassW4A16Runner declares (MXFP4, BF16) but no matrix row has "
        "flashinfer_runner = \"CutlassW4A16Runner\" with that weight/activation"]


@needs_pinned
def test_unknown_runner_is_reported() -> None:
    doc = matrix_doc()
    row_doc(doc, "FLASHINFER_SM12X_MXFP4_MXFP8")["flashinfer_runner"] = "NoSuchRunner"
    problems = quant_pair_disagreements(parse_matrix(doc))
    assert problems == ["FLASHINFER_SM12X_MXFP4_MXFP8: flashinfer_runner NoSuchRunner does not "
                        f"exist in flashinfer.fused_moe {flashinfer.__version__}"]
