"""The oracle's inputs, as frozen values.

Everything the selector looks at is in a :class:`SelectionRequest`: keys, the
requested backend, a :class:`Device` description, an :class:`Environment` of
installed kernel libraries and an optional :class:`LayerSpec`.  None of these
types reads the machine; :mod:`oracle.probe` builds them from the real one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, Mapping

from oracle.errors import ConfigError
from oracle.keys import BF16, Bf16Marker, QuantKey, canonical_name, kMxfp4Static

__all__ = ["Device", "Environment", "LayerSpec", "SelectionRequest", "UNSET", "LIBRARIES",
           "Version"]


class _Unset:
    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()

#: Kernel libraries the matrix can require (the Environment's vocabulary).
LIBRARIES: Final = (
    "flashinfer", "triton_kernels", "vllm_ops", "deep_gemm", "aiter", "b12x", "humming",
    "cuda_tile", "cutlass_dsl", "intel_xpu", "torch",
)

_CUDA_RE = re.compile(r"^(?:sm_?|cuda:?|compute_)?(\d{2,3})[af]?$")
_DOTTED_RE = re.compile(r"^(\d{1,2})\.(\d)$")
_GFX_RE = re.compile(r"^gfx[0-9a-f]{3,4}$")


@dataclass(frozen=True, slots=True)
class Device:
    """A device description: platform (cuda | rocm | xpu | cpu) and arch.

    ``arch`` is an int SM number for CUDA (90, 100, ...), a ``gfx...`` string for
    ROCm, and ``"xpu"`` / ``"cpu"`` otherwise.  Any well-formed arch is valid, also
    one that no matrix row mentions (sm101, sm130, gfx1200): it is simply covered by
    no row.
    """

    platform: str
    arch: int | str

    def __post_init__(self) -> None:
        # Any platform/arch value is a valid input (no row may cover it); only the types
        # are checked, so the value hashes and prints.
        ok = isinstance(self.platform, str) and isinstance(self.arch, (int, str)) \
            and not isinstance(self.arch, bool)
        if not ok:
            raise ConfigError("device", "Device(platform: str, arch: int or str)",
                              repr((self.platform, self.arch))[:60], "Device.parse('sm90')")

    @property
    def name(self) -> str:
        if self.platform == "cuda":
            return f"sm{self.arch}"
        return str(self.arch)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def detect(cls) -> Device:
        """This machine's device (the probe layer; imports torch lazily)."""
        from oracle.probe import detect_device
        return detect_device()

    @classmethod
    def parse(cls, text: object) -> Device:
        if isinstance(text, Device):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("device", "a device name like sm90, 9.0, gfx950, xpu or cpu",
                              repr(text), "sm90")
        t = text.strip().lower()
        if t in ("cpu", "xpu"):
            return cls(t, t)
        if _GFX_RE.match(t):
            return cls("rocm", t)
        m = _CUDA_RE.match(t)
        if m:
            return cls("cuda", int(m.group(1)))
        m = _DOTTED_RE.match(t)
        if m:
            return cls("cuda", int(m.group(1)) * 10 + int(m.group(2)))
        raise ConfigError("device", "a device name like sm90, 9.0, gfx950, xpu or cpu",
                          repr(text), "sm90, sm100, 10.0, gfx942, xpu or cpu")


Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    parts = []
    for piece in re.split(r"[.+-]", text):
        if piece.isdigit():
            parts.append(int(piece))
        else:
            m = re.match(r"^(\d+)", piece)
            if m:
                parts.append(int(m.group(1)))
            break
    if not parts:
        raise ConfigError("libraries", "NAME or NAME=VERSION with a numeric version",
                          repr(text), "flashinfer=0.7.2")
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Environment:
    """Which kernel libraries are installed, with versions (``None`` = any/unknown).

    ``assume_all()`` says every library is present at a version that satisfies every
    row; ``Environment.detect()`` (in :mod:`oracle.probe`) reads the real machine.
    Stored as a sorted tuple so the value hashes, compares and pickles (it travels
    between ranks in :func:`oracle.probe.select_for_group`).
    """

    libraries: tuple[tuple[str, Version | None], ...] = ()
    all_present: bool = False

    def __post_init__(self) -> None:
        libs = self.libraries
        try:
            items = list(libs.items() if isinstance(libs, Mapping) else libs)
            norm = []
            for name, ver in items:
                if isinstance(ver, str):
                    ver = parse_version(ver)
                if not isinstance(name, str) or not (
                        ver is None or (isinstance(ver, tuple) and all(
                            isinstance(p, int) and not isinstance(p, bool) for p in ver))):
                    raise TypeError
                norm.append((name, ver))
        except (TypeError, ValueError):
            raise ConfigError("environment", "library names mapped to version tuples or None",
                              repr(libs)[:60], "Environment.parse('flashinfer=0.7.2,torch')")
        names = [n for n, _ in norm]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ConfigError("environment", "each library at most once", repr(dup),
                              "list each library once")
        object.__setattr__(self, "libraries", tuple(sorted(norm)))
        if not isinstance(self.all_present, bool):
            raise ConfigError("environment.all_present", "True or False",
                              repr(self.all_present)[:40], "Environment.assume_all()")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Environment, (self.libraries, self.all_present))

    @classmethod
    def detect(cls) -> Environment:
        """Installed kernel libraries and versions (probe layer; imports nothing heavy)."""
        from oracle.probe import detect_environment
        return detect_environment()

    @classmethod
    def assume_all(cls) -> Environment:
        return cls({}, all_present=True)

    @classmethod
    def none(cls) -> Environment:
        return cls({})

    def has(self, library: str) -> bool:
        return self.all_present or any(name == library for name, _ in self.libraries)

    def version(self, library: str) -> Version | None:
        for name, ver in self.libraries:
            if name == library:
                return ver
        return None

    @classmethod
    def parse(cls, text: str) -> Environment:
        """``all`` | ``none`` | ``NAME[=VER],...`` (the CLI's ``--libraries``)."""
        t = text.strip()
        if t == "all":
            return cls.assume_all()
        if t in ("none", ""):
            return cls.none()
        libs: dict[str, Version | None] = {}
        everything = False
        for item in t.split(","):
            item = item.strip()
            if not item:
                continue
            if item == "all":
                everything = True
                continue
            name, _, ver = item.partition("=")
            name = name.strip().lower().replace("-", "_")
            if name == "flashinfer_python":
                name = "flashinfer"
            if name not in LIBRARIES:
                from oracle.keys import suggest
                s = suggest(name, LIBRARIES)
                raise ConfigError("libraries", "a list of known kernel libraries", repr(name),
                                  f"'{s}'" if s else ", ".join(LIBRARIES), LIBRARIES)
            libs[name] = parse_version(ver) if ver.strip() else None
        return cls(libs, all_present=everything)

    def describe(self) -> str:
        """``all`` | ``none`` | ``NAME[=VER],...``; round-trips through :meth:`parse` and
        names every version (the fingerprint hashes this text)."""
        listed = [n if v is None else f"{n}={'.'.join(map(str, v))}" for n, v in self.libraries]
        if self.all_present:
            return ",".join(["all", *listed])
        return ",".join(listed) if listed else "none"


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """Geometry and semantics of one MoE layer; every field optional (None = unknown).

    Unknown fields abstain: a gate that needs a value it does not have passes.
    ``activation_fn`` is ``"swiglu_oai"`` (gpt-oss: alpha, limit, bias, interleaved
    gate/up) or ``"swiglu"`` (plain SiLU-gated) or another name.
    """

    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_experts: int | None = None
    top_k: int | None = None
    activation_fn: str | None = None
    swiglu_alpha: float | None = None
    swiglu_limit: float | None = None
    has_bias: bool | None = None
    ep_size: int | None = None
    tp_size: int | None = None

    def __post_init__(self) -> None:
        # Wrong types are a ConfigError naming the field (never a TypeError later, e.g.
        # when the request is hashed for the selector's cache).
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            kind = _LAYER_TYPES[f.name]
            ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in kind)
            if not ok:
                raise ConfigError(f"layer.{f.name}", f"{' or '.join(k.__name__ for k in kind)} "
                                  "or None", repr(value)[:60], f"fix layer.{f.name}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}


_LAYER_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "hidden_size": (int,), "intermediate_size": (int,), "num_experts": (int,), "top_k": (int,),
    "activation_fn": (str,), "swiglu_alpha": (float, int), "swiglu_limit": (float, int),
    "has_bias": (bool,), "ep_size": (int,), "tp_size": (int,),
}


def _check_field(path: str, value: Any, kinds: tuple[Any, ...], constraint: str) -> None:
    if not any(value is k if not isinstance(k, type) else isinstance(value, k) for k in kinds):
        raise ConfigError(path, constraint, repr(value)[:60], f"pass {constraint}")


def _act_name(a: QuantKey | Bf16Marker | None | _Unset) -> str | None:
    if a is UNSET:
        return None
    return canonical_name(a)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SelectionRequest:
    """Everything :func:`oracle.select` decides on.

    ``activation`` is the user's override (``None``/``UNSET`` = no override;
    :data:`oracle.keys.BF16` = strict BF16); ``checkpoint_activation`` is what the
    checkpoint declares (``None``/``UNSET`` = nothing declared).
    """

    weight: QuantKey = kMxfp4Static
    activation: QuantKey | Bf16Marker | None | _Unset = None
    checkpoint_activation: QuantKey | Bf16Marker | None | _Unset = None
    moe_backend: str = "auto"
    device: Device = Device("cpu", "cpu")
    environment: Environment = field(default_factory=Environment.assume_all)
    layer: LayerSpec | None = None
    allow_activation_fallback: bool = False

    def __post_init__(self) -> None:
        _check_field("weight", self.weight, (QuantKey,), "a QuantKey")
        for name in ("activation", "checkpoint_activation"):
            _check_field(name, getattr(self, name), (QuantKey, Bf16Marker, _Unset, type(None)),
                         "a QuantKey, BF16 or None")
        _check_field("moe_backend", self.moe_backend, (str,), "a backend name string")
        _check_field("device", self.device, (Device,), "a Device (Device.parse('sm90'))")
        _check_field("environment", self.environment, (Environment,),
                     "an Environment (Environment.assume_all())")
        _check_field("layer", self.layer, (LayerSpec, type(None)), "a LayerSpec or None")
        _check_field("allow_activation_fallback", self.allow_activation_fallback, (bool,),
                     "True or False")

    def with_(self, **changes: Any) -> SelectionRequest:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weight": canonical_name(self.weight),
            "activation": _act_name(self.activation) if self.activation is not None else None,
            "checkpoint_activation": (_act_name(self.checkpoint_activation)
                                      if self.checkpoint_activation is not None else None),
            "moe_backend": self.moe_backend,
            "device": self.device.name,
            "libraries": self.environment.describe(),
            "layer": self.layer.to_dict() if self.layer else None,
            "allow_activation_fallback": self.allow_activation_fallback,
        }


_ = BF16  # re-exported for convenience
