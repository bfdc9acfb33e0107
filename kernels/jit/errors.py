"""The one error the trimmed JIT build raises."""

from __future__ import annotations

from typing import Any

from oracle.errors import OracleError

__all__ = ["KernelBuildError"]


class KernelBuildError(OracleError):
    """The kernel module cannot be built or loaded here (toolchain, arch, link closure).

    ``what`` names the missing piece (``toolchain``, ``nvcc``, ``link``...);
    ``log`` holds the tail of the build output where there is one.
    """

    def __init__(self, what: str, constraint: str, got: Any, fix: str | None = None,
                 log: str | None = None) -> None:
        self.log = log
        super().__init__(what, constraint, got, fix)
