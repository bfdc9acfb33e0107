"""The compatibility matrix (data in ``mxfp4_moe.toml``) and its loader.

Served as ``oracle.matrix``.  The bundled table is loaded and validated at import:
a malformed row fails here, with its name, before any selection runs.
``ARCHS_IN_SCOPE`` and ``arch_platform`` live in :mod:`oracle.platforms` and are
re-exported here, where most callers have always imported them from.
"""

from oracle.matrix.loader import (STATUSES, Adjustment, ArchStatus, Matrix, Row, load_matrix,
                                  parse_matrix)
from oracle.platforms import ARCHS_IN_SCOPE, arch_platform

MATRIX: Matrix = load_matrix()

__all__ = ["ARCHS_IN_SCOPE", "MATRIX", "STATUSES", "Adjustment", "ArchStatus", "Matrix", "Row",
           "arch_platform", "load_matrix", "parse_matrix"]
