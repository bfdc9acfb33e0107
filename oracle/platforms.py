"""Where a kernel can run: devices, archs, platforms, kernel libraries and their versions.

One arch grammar for the whole project: :meth:`Device.parse` reads what users type
(``sm90``, ``sm_90a``, ``9.0``, ``gfx950``, ``gfx950:sramecc+:xnack-``, ``xpu``, ``cpu``,
or a GPU name from :data:`GPU_NAMES` such as ``H100`` or ``RTX 5090``) and
:attr:`Device.name` is the canonical spelling the matrix uses.  The matrix loader accepts an arch only
if it is already canonical (``Device.parse(a).name == a``), so the table and the
requests can never spell one arch two ways.

The library vocabulary (:data:`LIBRARIES`) is what matrix rows may require and what
an :class:`~oracle.request.Environment` lists; :data:`DISTRIBUTIONS` maps installed
Python distributions onto it (the probe reads it, the rows never do).  Versions are
PEP 440 (``packaging.version``): ``0.7.2rc1`` is below ``0.7.2``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from packaging.utils import canonicalize_version
from packaging.version import InvalidVersion, Version

from oracle.errors import ConfigError, shown

__all__ = ["Device", "GPU_NAMES", "gpu_arch", "ARCHS_IN_SCOPE", "SCOPE_DEVICES", "PLATFORMS", "arch_platform", "arch_sort_key",
           "LIBRARIES", "DISTRIBUTIONS", "Version", "parse_version"]

#: Every arch the project answers for, in display order.  Other well-formed archs
#: (sm101, sm130, gfx1200) are valid inputs that no row covers.
ARCHS_IN_SCOPE: Final = (
    "sm75", "sm80", "sm86", "sm89", "sm90", "sm100", "sm103", "sm107", "sm110", "sm120",
    "sm121", "gfx942", "gfx950", "gfx1250", "xpu", "cpu",
)
PLATFORMS: Final = ("cuda", "rocm", "xpu", "cpu")

_ARCH_POSITION: Final = {a: i for i, a in enumerate(ARCHS_IN_SCOPE)}
# ASCII digits only: str.isdigit() and \d also accept "٩" and "²".
_CUDA_RE: Final = re.compile(r"^(?:sm_?|cuda:?|compute_)?([1-9][0-9]{1,2})[af]?$", re.ASCII)
_DOTTED_RE: Final = re.compile(r"^([1-9][0-9]?)\.([0-9])$", re.ASCII)
_GFX_RE: Final = re.compile(r"^gfx[0-9a-f]{3,4}$", re.ASCII)
_NAMED: Final = {"cpu": "cpu", "xpu": "xpu"}
# A ROCm target ID with features (``gfx950:sramecc+:xnack-``, what rocminfo and
# torch's gcnArchName print): the arch is the part before the first colon.
_GFX_FEATURES_RE: Final = re.compile(r"^(gfx[0-9a-f]{3,4})(?::[a-z0-9_]+[+-])+$", re.ASCII)

#: GPU names as users type them -> arch.  DATA: looked up case-insensitively, ignoring
#: blanks, ``-`` and ``_`` ("h100-sxm", "RTX 5090"), after dropping a vendor prefix
#: (NVIDIA, GeForce, Tesla, AMD, Instinct) and form-factor or memory suffixes (SXM5,
#: PCIe, NVL, 80GB, HBM3, OAM, Blackwell, Max-Q), as ``torch.cuda.get_device_name``
#: prints them ("NVIDIA H100 80GB HBM3").  Only names whose arch is unambiguous.
GPU_NAMES: Final[dict[str, str]] = {
    # Hopper
    "H100": "sm90", "H200": "sm90", "H800": "sm90", "H20": "sm90", "GH200": "sm90",
    # Blackwell datacenter
    "B200": "sm100", "B100": "sm100", "GB200": "sm100",
    "B300": "sm103", "GB300": "sm103",
    "Jetson Thor": "sm110",
    # Blackwell workstation / consumer, and the GB10 superchip
    "RTX 5090": "sm120", "RTX 5080": "sm120", "RTX PRO 6000": "sm120",
    "GB10": "sm121", "DGX Spark": "sm121",
    # Ada
    "L4": "sm89", "L40": "sm89", "L40S": "sm89", "RTX 4090": "sm89", "RTX 6000 Ada": "sm89",
    # Ampere
    "A100": "sm80", "A800": "sm80", "A30": "sm80",
    "A10": "sm86", "A10G": "sm86", "A40": "sm86", "RTX 3090": "sm86", "RTX A6000": "sm86",
    # Turing
    "T4": "sm75",
    # AMD Instinct
    "MI300X": "gfx942", "MI300A": "gfx942", "MI325X": "gfx942",
    "MI350X": "gfx950", "MI355X": "gfx950",
}

_GPU_PREFIXES: Final = ("nvidia", "geforce", "tesla", "amd", "instinct")
_GPU_SUFFIXES: Final = (r"^(?:sxm[0-9]*|pcie|nvl[0-9]*|[0-9]+gb|hbm[0-9]*e?|oam|blackwell|maxq|"
                        r"workstation|server|edition|superchip)*$")


def _gpu_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


#: (name key, arch), longest first: "h200" is tried before "h20", "a100" before "a10".
_GPU_KEYS: Final = tuple(sorted(((_gpu_key(k), v) for k, v in GPU_NAMES.items()),
                                key=lambda kv: -len(kv[0])))
_GPU_SUFFIX_RE: Final = re.compile(_GPU_SUFFIXES, re.ASCII)


def gpu_arch(text: str) -> str | None:
    """The arch of a GPU name from :data:`GPU_NAMES` (``"h100-sxm"`` → ``"sm90"``), else None."""
    if not isinstance(text, str) or not text.isascii():
        return None
    key = _gpu_key(text)
    changed = True
    while changed:  # "NVIDIA GeForce RTX 4090" -> "rtx4090"
        changed = False
        for prefix in _GPU_PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                key, changed = key[len(prefix):], True
    for name, arch in _GPU_KEYS:
        if key.startswith(name) and _GPU_SUFFIX_RE.match(key[len(name):]):
            return arch
    return None


@dataclass(frozen=True, slots=True)
class Device:
    """A device description: platform (cuda | rocm | xpu | cpu) and arch.

    ``arch`` is an int SM number for CUDA (90, 100, ...), a ``gfx...`` string for
    ROCm, and ``"xpu"`` / ``"cpu"`` otherwise.  Any well-formed arch is valid, also
    one that no matrix row mentions: it is simply covered by no row.
    """

    platform: str
    arch: int | str

    def __post_init__(self) -> None:
        ok = isinstance(self.platform, str) and isinstance(self.arch, (int, str)) \
            and not isinstance(self.arch, bool) \
            and not (isinstance(self.arch, int) and not 0 <= self.arch < 10**6)
        if not ok:
            raise ConfigError("device", "Device(platform: str, arch: int or str)",
                              shown((self.platform, self.arch))[:60], "Device.parse('sm90')")

    @property
    def name(self) -> str:
        """The canonical arch name (``sm90``, ``gfx950``, ``xpu``, ``cpu``)."""
        if self.platform == "cuda":
            return f"sm{self.arch}"
        return str(self.arch)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: object) -> Device:
        """A device from what users type; ``ConfigError`` for anything else."""
        if isinstance(text, Device):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("device", "a device name like sm90, 9.0, gfx950, xpu, cpu or H100",
                              shown(text), "sm90")
        t = text.strip().lower()
        if t in _NAMED:
            return cls(_NAMED[t], t)
        if _GFX_RE.match(t):
            return cls("rocm", t)
        m = _CUDA_RE.match(t)
        if m:
            return cls("cuda", int(m.group(1)))
        m = _DOTTED_RE.match(t)
        if m:
            return cls("cuda", int(m.group(1)) * 10 + int(m.group(2)))
        m = _GFX_FEATURES_RE.match(t)
        if m:
            return cls("rocm", m.group(1))
        arch = gpu_arch(t)
        if arch is not None:
            return cls.parse(arch)
        raise ConfigError("device", "a device name like sm90, 9.0, gfx950, xpu, cpu or H100",
                          shown(text), "sm90, sm100, 10.0, gfx942, xpu, cpu, or a GPU name "
                          "(H100, B200, RTX 5090, MI300X)")


#: The archs in scope as Devices, parsed once (error hints walk them on every failure).
SCOPE_DEVICES: Final = tuple(Device.parse(a) for a in ARCHS_IN_SCOPE)
_SCOPE_PLATFORM: Final = {d.name: d.platform for d in SCOPE_DEVICES}


def arch_platform(arch: str) -> str:
    """``sm90`` → cuda, ``gfx950`` → rocm, ``xpu`` → xpu, ``cpu`` → cpu."""
    platform = _SCOPE_PLATFORM.get(arch)
    return platform if platform is not None else Device.parse(arch).platform


def arch_sort_key(arch: str) -> tuple[int, str]:
    """Display order: archs in scope by position, then any other arch by name."""
    return _ARCH_POSITION.get(arch, len(_ARCH_POSITION)), arch


#: Kernel libraries the matrix can require (the Environment's vocabulary).
LIBRARIES: Final = (
    "flashinfer", "triton_kernels", "vllm_ops", "deep_gemm", "aiter", "b12x", "humming",
    "cuda_tile", "cutlass_dsl", "intel_xpu", "torch", "amd_quark",
)

#: Installed distribution name -> library name.  Names are compared after PEP 503
#: normalisation, so "deep-gemm" and "deep_gemm" are one.
DISTRIBUTIONS: Final[dict[str, str]] = {
    "flashinfer-python": "flashinfer",
    "flashinfer": "flashinfer",
    "triton-kernels": "triton_kernels",
    "vllm": "vllm_ops",
    "deep-gemm": "deep_gemm",
    "amd-aiter": "aiter",
    "aiter": "aiter",
    "b12x": "b12x",
    "humming": "humming",
    "cuda-tile": "cuda_tile",
    "nvidia-cutlass-dsl": "cutlass_dsl",
    "intel-extension-for-pytorch": "intel_xpu",
    "amd-quark": "amd_quark",
    "vllm-xpu-kernels": "intel_xpu",
    "torch": "torch",
}

_bad_targets = set(DISTRIBUTIONS.values()) - set(LIBRARIES)
if _bad_targets:  # a distribution mapped outside the vocabulary is a bug caught at import
    raise RuntimeError(f"DISTRIBUTIONS names unknown libraries: {sorted(_bad_targets)}")

_MAX_VERSION_CHARS: Final = 64


def _canonical(version: Version) -> Version:
    """Equal versions print alike (``0.6.9.0`` → ``0.6.9``): reports and fingerprints
    are built from the printed form."""
    return Version(canonicalize_version(version))


def parse_version(text: object, library: str = "library") -> Version:
    """A PEP 440 version (``0.7.2``, ``0.7.2rc1``, ``2.13.0+cpu``), in canonical form;
    ``ConfigError`` naming ``library`` for anything else (also non-ASCII digits and
    absurdly long strings)."""
    if isinstance(text, Version):
        return _canonical(text)
    if isinstance(text, tuple) and text and all(
            isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 10**9 for p in text):
        return _canonical(Version(".".join(map(str, text))))
    ok = isinstance(text, str) and 0 < len(text) <= _MAX_VERSION_CHARS and text.isascii()
    if ok:
        try:
            return _canonical(Version(text))
        except InvalidVersion:
            pass
    raise ConfigError(f"libraries.{library}", "a PEP 440 version like 0.7.2 or 0.7.2rc1",
                      shown(text, _MAX_VERSION_CHARS + 2), f"{library}=0.7.2")
