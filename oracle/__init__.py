"""mxfp4-oracle: choose the MXFP4 Mixture-of-Experts backend for a layer, and say why.

The decision code here is pure (values in, values out) and imports neither torch
nor FlashInfer.  The machine probe (``oracle.probe``) and the kernels
(``oracle.kernels``) are separate and imported only on demand.

Entry points:

* ``select(request)`` / ``explain(request)`` -- the pure decision for a
  :class:`SelectionRequest`, and every candidate's verdict.
* ``diff(a, b)`` -- what changes between two requests: inputs, winner, candidates
  (a ``SetupDiff``; from ``oracle.diff``).
* ``select_for_model(model, device=None, moe_backend="auto", quantization=None,
  quantization_config=None, environment=None, allow_activation_fallback=False)`` --
  what a loader calls at model init: reads the model's ``config.json`` (a folder, a
  file, a bundled name or a Hugging Face id of a bundled model such as
  ``openai/gpt-oss-20b``), probes the device and libraries it is not given, and
  returns a ``ModelSelection`` (``.selection``, ``.describe()``, ``.to_dict()``).
  Imported on first use (from ``oracle.model``).
* ``select_for_group(request_or_model, ...)`` -- one decision for every rank of a
  ``torch.distributed`` group.  Imported on first use (from ``oracle.group``).
* ``QuantSpec``, ``QuantizationConfigArgs``, ``resolve_quantization_config`` --
  ``quantization_config`` parsing (from ``oracle.config``, on first use).

Every failure is an :class:`OracleError` (a ``ValueError``) with structured fields.
"""

from __future__ import annotations

from typing import Any

from oracle.errors import (ActivationConflict, ConfigError, GroupDivergence, GroupError,
                           KernelInputError, MatrixError, NoEligibleBackend, OracleError,
                           UnknownBackend, UnknownQuantKey)
from oracle.deployment import Deployment
from oracle.gates import Reason
from oracle.keys import BF16, QUANT_KEY_NAMES, UNSET, GroupShape, QuantKey, ScaleDesc
from oracle.platforms import Device
from oracle.request import POLICIES, RANKS, Environment, LayerSpec, SelectionRequest
from oracle.selection import Rejection, Selection, Verdict
from oracle.selector import explain, select
from oracle.diff import SetupDiff, diff  # binds oracle.diff to the function, not the module

__version__ = "0.1.0"

__all__ = [
    "Deployment",
    "select", "explain", "diff", "SetupDiff", "select_for_model", "select_for_group",
    "SelectionRequest", "Selection", "Rejection", "Verdict", "Reason",
    "Device", "Environment", "LayerSpec", "QuantKey", "ScaleDesc", "GroupShape", "BF16",
    "QUANT_KEY_NAMES", "QuantSpec", "QuantizationConfigArgs", "resolve_quantization_config",
    "OracleError", "ConfigError", "UnknownQuantKey", "UnknownBackend", "ActivationConflict",
    "NoEligibleBackend", "MatrixError", "KernelInputError", "GroupError", "GroupDivergence",
    "UNSET", "POLICIES", "RANKS", "Profile", "load_profile",
]

_LAZY = {
    "select_for_model": "oracle.model",
    "QuantSpec": "oracle.config",
    "QuantizationConfigArgs": "oracle.config",
    "resolve_quantization_config": "oracle.config",
    "select_for_group": "oracle.group",
    "Profile": "oracle.profile",
    "load_profile": "oracle.profile",
}


def __dir__() -> list[str]:
    """Module attributes plus the lazy exports, so ``dir(oracle)`` and ``help(oracle)``
    list ``select_for_model`` / ``select_for_group`` (``help`` imports them; ``dir`` and
    ``import oracle`` do not)."""
    return sorted({*globals(), *_LAZY})


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'oracle' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
