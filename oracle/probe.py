"""The machine probe: the one module of the oracle that looks at the real machine.

* :func:`detect_device` — this process's accelerator as a :class:`Device`
  (CUDA SM number, ROCm ``gfx`` arch, XPU, else CPU).  Imports torch lazily.
* :func:`detect_environment` — installed kernel libraries and their versions, read
  from distribution metadata (:mod:`importlib.metadata`) WITHOUT importing them;
  :data:`oracle.platforms.DISTRIBUTIONS` says which distribution is which library.

Only :mod:`oracle.model` calls it (when the caller leaves device or environment
out); the pure selector never does.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Final

from oracle.errors import ConfigError, shown
from oracle.platforms import DISTRIBUTIONS, Device, Version, parse_version
from oracle.request import Environment

__all__ = ["detect_device", "detect_environment"]

_GFX_RE: Final = re.compile(r"gfx[0-9a-f]{3,4}")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------ device


def detect_device(index: int | None = None) -> Device:
    """This process's device: CUDA (``sm90``...), ROCm (``gfx942``...), XPU, else CPU.

    ``index`` selects the accelerator (default: the current one).  torch is imported
    here, lazily; without torch the answer is CPU.
    """
    try:
        import torch
    except ImportError:
        return Device("cpu", "cpu")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_available():
        idx = cuda.current_device() if index is None else index
        if getattr(torch.version, "hip", None):
            props = cuda.get_device_properties(idx)
            raw = str(getattr(props, "gcnArchName", "") or "")
            m = _GFX_RE.match(raw.strip().lower().split(":")[0])
            if m is None:
                raise ConfigError("device", "a ROCm device with a gfx architecture name",
                                  shown(raw), "pass device= explicitly, e.g. gfx942")
            return Device("rocm", m.group(0))
        major, minor = cuda.get_device_capability(idx)
        return Device("cuda", int(major) * 10 + int(minor))
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and callable(getattr(xpu, "is_available", None)) and xpu.is_available():
        return Device("xpu", "xpu")
    return Device("cpu", "cpu")


# ------------------------------------------------------------------ environment


def _installed() -> dict[str, str]:
    """Normalised distribution name -> version string, for every installed distribution."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        try:
            name = dist.metadata["Name"]
            version = dist.version
        except Exception:  # a broken .dist-info must not break the probe
            continue
        if name and version:
            found.setdefault(_normalize(name), version)
    return found


def detect_environment() -> Environment:
    """Installed kernel libraries (our names) and versions, from package metadata only.

    No library is imported.  When two distributions provide one library (e.g.
    ``intel-extension-for-pytorch`` and ``vllm-xpu-kernels``) the higher version is
    kept.  A version that is not PEP 440 is recorded as ``None`` (present, version
    unknown).
    """
    installed = _installed()
    libs: dict[str, Version | None] = {}
    for dist_name, library in DISTRIBUTIONS.items():
        text = installed.get(_normalize(dist_name))
        if text is None:
            continue
        try:
            version: Version | None = parse_version(text, library)
        except ConfigError:
            version = None
        old = libs.get(library)
        if library not in libs or (version is not None and (old is None or version > old)):
            libs[library] = version
    return Environment(libs)
