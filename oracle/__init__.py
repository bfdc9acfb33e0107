"""mxfp4-oracle: choose the MXFP4 Mixture-of-Experts backend for a layer, and say why.

The decision code here is pure (values in, values out) and imports neither torch
nor FlashInfer.  The machine probe (``oracle.probe``) and the kernels
(``oracle.kernels``) are separate and imported only on demand.
"""

from __future__ import annotations

from typing import Any

from oracle.errors import (ActivationConflict, ConfigError, KernelInputError, MatrixError,
                           NoEligibleBackend, OracleError, UnknownBackend, UnknownQuantKey)
from oracle.keys import BF16, QUANT_KEY_NAMES, GroupShape, QuantKey, ScaleDesc
from oracle.reasons import Reason
from oracle.request import Device, Environment, LayerSpec, SelectionRequest
from oracle.selection import Rejection, Selection, Verdict
from oracle.selector import explain, select

__version__ = "0.1.0"

__all__ = [
    "select", "explain", "select_for_model", "select_for_group",
    "SelectionRequest", "Selection", "Rejection", "Verdict", "Reason",
    "Device", "Environment", "LayerSpec", "QuantKey", "ScaleDesc", "GroupShape", "BF16",
    "QUANT_KEY_NAMES", "QuantSpec", "QuantizationConfigArgs", "resolve_quantization_config",
    "OracleError", "ConfigError", "UnknownQuantKey", "UnknownBackend", "ActivationConflict",
    "NoEligibleBackend", "MatrixError", "KernelInputError",
]

_LAZY = {
    "select_for_model": "oracle.model",
    "QuantSpec": "oracle.config",
    "QuantizationConfigArgs": "oracle.config",
    "resolve_quantization_config": "oracle.config",
    "select_for_group": "oracle.probe",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'oracle' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
