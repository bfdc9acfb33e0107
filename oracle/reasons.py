"""The closed set of reasons a candidate backend can be rejected for.

The enum is closed on purpose: tests, the JSON output and the docs all key on these
codes, and the matrix validator refuses any code not listed here.  The order is
the order the gates run in (the first failing gate is the reported reason).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Reason", "GATE_ORDER"]


class Reason(str, Enum):
    PLATFORM_UNSUPPORTED = "platform_unsupported"
    ARCH_UNSUPPORTED = "arch_unsupported"
    WEIGHT_MISMATCH = "weight_mismatch"
    ACTIVATION_MISMATCH = "activation_mismatch"
    LIBRARY_MISSING = "library_missing"
    LIBRARY_VERSION = "library_version"
    KNOWN_BAD = "known_bad"
    SHAPE_UNALIGNED = "shape_unaligned"
    ACTIVATION_FN_UNSUPPORTED = "activation_fn_unsupported"
    PARALLELISM_UNSUPPORTED = "parallelism_unsupported"
    NOT_AUTO_SELECTABLE = "not_auto_selectable"

    def __str__(self) -> str:
        return self.value


GATE_ORDER: tuple[Reason, ...] = tuple(Reason)
