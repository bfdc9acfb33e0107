"""The compatibility matrix (data in ``mxfp4_moe.toml``) and its loader.

Served as ``oracle.matrix``.  The bundled table is loaded and validated at import:
a malformed row fails here, with its name, before any selection runs.
``ARCHS_IN_SCOPE`` and ``arch_platform`` live in :mod:`oracle.platforms` and are
re-exported here, where most callers have always imported them from.
"""

from oracle.matrix.loader import (STATUSES, Adjustment, ArchStatus, Matrix, Row, load_matrix,
                                  parse_matrix)
from oracle.matrix.releases import (POLICY_RELEASES, Checkpoint, ExpertsClass, Family, Release, Variant,
                                    load_releases)
from oracle.platforms import ARCHS_IN_SCOPE, arch_platform

MATRIX: Matrix = load_matrix()
#: vLLM release -> its selection rules (matrix/vllm.toml), variants checked against MATRIX.
RELEASES: dict[str, Release] = load_releases(rows=MATRIX.by_name)

__all__ = ["ARCHS_IN_SCOPE", "MATRIX", "POLICY_RELEASES", "RELEASES", "STATUSES", "Adjustment",
           "ArchStatus", "Checkpoint", "ExpertsClass", "Family", "Matrix", "Release", "Row", "Variant", "arch_platform", "load_matrix",
           "load_releases", "parse_matrix"]
