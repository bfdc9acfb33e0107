"""Real kernels behind a selection (torch + FlashInfer); imported only on demand.

``build_moe(selection, checkpoint_weights, layer)`` returns the module that runs
the selected backend (see :mod:`oracle.kernels.moe`); it is resolved lazily so
``import oracle.kernels`` stays cheap.
"""

__all__ = ["build_moe"]


def __getattr__(name):
    if name == "build_moe":
        from oracle.kernels.moe import build_moe

        return build_moe
    raise AttributeError(f"module 'oracle.kernels' has no attribute {name!r}")
