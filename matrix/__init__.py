"""The compatibility matrix (data in ``mxfp4_moe.toml``) and its loader.

Served as ``oracle.matrix``.  The bundled table is loaded and validated at import:
a malformed row fails here, with its name, before any selection runs.
"""

from oracle.matrix.loader import (ARCHS_IN_SCOPE, STATUSES, ArchStatus, Matrix, Row,
                                  arch_platform, load_matrix, parse_matrix)

MATRIX: Matrix = load_matrix()

__all__ = ["MATRIX", "Matrix", "Row", "ArchStatus", "ARCHS_IN_SCOPE", "STATUSES",
           "arch_platform", "load_matrix", "parse_matrix"]
