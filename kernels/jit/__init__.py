"""Trimmed FlashInfer JIT builds (only what the selected backend needs).

``build_cutlass_w4a16_sm90()`` builds the SM90 CUTLASS fused-MoE module for
MXFP4 weights x BF16 activations from FlashInfer's own JitSpec, compiling ~25 of
its 248 translation units and closing the rest with throwing stubs.  Importing
this package imports neither torch nor flashinfer; the functions do.
"""

from oracle.kernels.jit.errors import KernelBuildError

__all__ = [
    "KernelBuildError", "build_cutlass_w4a16_sm90", "install", "uninstall", "check_toolchain",
    "cache_key", "DEFAULT_TILES", "WORKSPACE_TILE", "Tile", "TrimmedBuild", "installed_module_name",
]


def __getattr__(name):  # lazy: keep `import oracle.kernels.jit` light
    if name in __all__ and name != "KernelBuildError":
        from oracle.kernels.jit import cutlass_w4a16_sm90 as _m

        return getattr(_m, name)
    raise AttributeError(name)
