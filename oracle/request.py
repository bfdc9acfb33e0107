"""The oracle's inputs, as frozen values.

Everything the selector looks at is in a :class:`SelectionRequest`: keys, the
requested backend, a :class:`~oracle.platforms.Device`, an :class:`Environment` of
installed kernel libraries and an optional :class:`LayerSpec`.  These are plain
values: building one never looks at the machine (``oracle.probe`` does that, and
only ``oracle.model`` calls it).  Each value is normalised once, at construction,
so two spellings of one request are equal, hash alike and fingerprint alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

from oracle.deployment import ROUTING_METHODS, Deployment, parse_family
from oracle.errors import ConfigError, shown
from oracle.keys import (BF16, UNSET, Bf16Marker, QuantKey, canonical_name, kMxfp4Static,
                         parse_quant_key, suggest)
from oracle.platforms import LIBRARIES, Device, Version, parse_version
from oracle.profile import Profile

__all__ = ["Environment", "LayerSpec", "SelectionRequest", "normalize_backend_name", "POLICIES",
           "parse_policy", "RANKS"]

#: The rule sets one matrix is read with: ``strict`` (the project's own rules: an
#: explicit backend is a pin, activations are exact, known-bad kernels are refused)
#: and one per vLLM release whose selection the matrix records (its columns in
#: matrix/vllm.toml), which answers what that release would run.
POLICIES: Final = ("strict", "vllm-0.33", "vllm-0.22")

#: How eligible candidates are ordered: the matrix's table order, or measured time.
RANKS: Final = ("table", "measured")


def parse_policy(value: Any) -> str:
    """A policy name (case-insensitive, ``_`` for ``-``, ``vllm-0.33.0`` for
    ``vllm-0.33``) or a ConfigError naming the valid ones."""
    if isinstance(value, str):
        key = value.strip().lower().replace("_", "-")
        if key.startswith("vllm") and not key.startswith("vllm-"):
            key = "vllm-" + key[4:].lstrip("=")
        if key.startswith("vllm-") and key.count(".") == 2 and key.endswith(".0"):
            key = key[:-2]
        if key in POLICIES:
            return key
        if key.startswith("vllm-"):
            raise ConfigError("policy", "a vLLM release the matrix has rules for: "
                              + ", ".join(p for p in POLICIES if p.startswith("vllm-")),
                              shown(value)[:40], "--policy vllm-0.33")
    raise ConfigError("policy", "one of " + ", ".join(POLICIES), shown(value)[:40],
                      "--policy strict (the default) or --policy vllm-0.33")


@dataclass(frozen=True, slots=True)
class Environment:
    """Which kernel libraries are installed, with versions (``None`` = any/unknown).

    ``assume_all()`` says every library is present at a version that satisfies every
    row; :func:`oracle.probe.detect_environment` reads the real machine.  Versions
    are PEP 440 (:class:`packaging.version.Version`); strings and int tuples are
    converted.  Stored as a sorted tuple so the value hashes, compares and pickles
    (it travels between ranks in :func:`oracle.group.select_for_group`).
    """

    libraries: tuple[tuple[str, Version | None], ...] = ()
    all_present: bool = False

    def __post_init__(self) -> None:
        libs = self.libraries
        try:
            items = list(libs.items() if isinstance(libs, Mapping) else libs)
            norm = []
            for name, ver in items:
                if not isinstance(name, str):
                    raise TypeError
                norm.append((name, None if ver is None else parse_version(ver, name)))
        except ConfigError:
            raise
        except (TypeError, ValueError):
            raise ConfigError("environment", "library names mapped to version tuples or None",
                              shown(libs)[:60], "Environment.parse('flashinfer=0.7.2,torch')")
        names = [n for n, _ in norm]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ConfigError("environment", "each library at most once", shown(dup),
                              "list each library once")
        object.__setattr__(self, "libraries", tuple(sorted(norm)))
        if not isinstance(self.all_present, bool):
            raise ConfigError("environment.all_present", "True or False",
                              shown(self.all_present)[:40], "Environment.assume_all()")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Environment, (self.libraries, self.all_present))

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
        if not isinstance(text, str):
            raise ConfigError("libraries", "a string: all, none or NAME[=VER],...",
                              shown(text)[:60], "'flashinfer=0.7.2,torch'")
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
                s = suggest(name, LIBRARIES)
                raise ConfigError("libraries", "a list of known kernel libraries", shown(name),
                                  f"'{s}'" if s else ", ".join(LIBRARIES), LIBRARIES)
            if name in libs:
                raise ConfigError("libraries", "each library at most once", shown(name),
                                  "list each library once")
            libs[name] = parse_version(ver.strip(), name) if ver.strip() else None
        return cls(libs, all_present=everything)

    def describe(self) -> str:
        """``all`` | ``none`` | ``NAME[=VER],...``; round-trips through :meth:`parse` and
        names every version (the fingerprint hashes this text)."""
        listed = [n if v is None else f"{n}={v}" for n, v in self.libraries]
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
    #: vLLM's RoutingMethodType name (None = the model family's own); a kernel class
    #: may refuse it (fused_moe/modular_kernel.py:612-615).
    routing_method: str | None = None

    def __post_init__(self) -> None:
        # Wrong types and impossible values are a ConfigError naming the field (never a
        # TypeError later, e.g. when the request is hashed for the selector's cache).
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            kinds, constraint, valid = _LAYER_FIELDS[f.name]
            typed = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
            if not (typed and valid(value)):
                raise ConfigError(f"layer.{f.name}", f"{constraint} or None", shown(value)[:60],
                                  f"fix layer.{f.name}")
        if self.top_k is not None and self.num_experts is not None \
                and self.top_k > self.num_experts:
            raise ConfigError("layer.top_k", f"at most num_experts ({shown(self.num_experts)})",
                              shown(self.top_k), "fix layer.top_k")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSpec:
        if not isinstance(data, Mapping):
            raise ConfigError("layer", "a mapping of LayerSpec fields", shown(data)[:60],
                              '{"hidden_size": 2880, "intermediate_size": 2880}')
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    @property
    def per_rank_intermediate(self) -> int | None:
        """``intermediate_size // tp_size``: what one tensor-parallel rank holds, and what
        gates and padding apply to (as vLLM's round-up does)."""
        if self.intermediate_size is None:
            return None
        return self.intermediate_size // (self.tp_size or 1)


_INT_LIMIT: Final = 2**63  # every size an engine passes fits an int64; larger ones cannot print


def _positive(value: float) -> bool:
    if isinstance(value, int):
        return 0 < value < _INT_LIMIT
    return value > 0 and math.isfinite(value)


def _int64(value: int) -> bool:
    return -_INT_LIMIT < value < _INT_LIMIT


def _any(value: object) -> bool:
    return True


_NUMBER: Final = (float, int)
#: field -> (types, constraint as the message says it, check).  Sizes may be any int:
#: the shape gate reports a non-positive size as the row's reason, per candidate.
_LAYER_FIELDS: Final[dict[str, tuple[tuple[type, ...], str, Any]]] = {
    "hidden_size": ((int,), "an int64", _int64),
    "intermediate_size": ((int,), "an int64", _int64),
    "num_experts": ((int,), "a positive int64", _positive),
    "top_k": ((int,), "a positive int64", _positive),
    "activation_fn": ((str,), "a non-empty str", bool),
    "swiglu_alpha": (_NUMBER, "a finite number > 0", _positive),
    "swiglu_limit": (_NUMBER, "a finite number > 0", _positive),
    "has_bias": ((bool,), "True or False", _any),
    "ep_size": ((int,), "a positive int64", _positive),
    "tp_size": ((int,), "a positive int64", _positive),
    "routing_method": ((str,), "a vLLM RoutingMethodType name (" + ", ".join(ROUTING_METHODS)
                       + ")", lambda v: v in ROUTING_METHODS),
}


def _check_field(path: str, value: Any, kinds: tuple[Any, ...], constraint: str) -> None:
    if not any(value is k if not isinstance(k, type) else isinstance(value, k) for k in kinds):
        raise ConfigError(path, constraint, shown(value)[:60], f"pass {constraint}")


def normalize_backend_name(name: str) -> str:
    """``--moe-backend`` spelling → the one form the matrix indexes: case-insensitive,
    '-' accepted for '_', surrounding blanks ignored."""
    return name.strip().lower().replace("-", "_")


def _activation(path: str, value: Any) -> QuantKey | Bf16Marker | None:
    """An activation field as a key: ``UNSET``/``None`` → ``None`` (nothing said),
    a name → its key (``"bf16"`` → the strict :data:`BF16`)."""
    if value is None or value is UNSET:
        return None
    if isinstance(value, str):
        return BF16 if value == "bf16" else parse_quant_key(value, path=path)
    _check_field(path, value, (QuantKey, Bf16Marker), "a QuantKey, BF16, a key name or None")
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class SelectionRequest:
    """Everything :func:`oracle.select` decides on.

    ``activation`` is the user's override and ``checkpoint_activation`` what the
    checkpoint declares; for both, ``None`` (or ``UNSET``) means nothing said and
    :data:`oracle.keys.BF16` the strict "BF16 activations".  Key names are accepted
    and stored as keys; ``moe_backend`` is stored normalised (``FlashInfer-TRTLLM``
    → ``flashinfer_trtllm``).
    """

    weight: QuantKey = kMxfp4Static
    activation: QuantKey | Bf16Marker | None = None
    checkpoint_activation: QuantKey | Bf16Marker | None = None
    moe_backend: str = "auto"
    device: Device = Device("cpu", "cpu")
    environment: Environment = field(default_factory=Environment.assume_all)
    layer: LayerSpec | None = None
    allow_activation_fallback: bool = False
    policy: str = "strict"
    #: "table" (the matrix's order) or "measured": within one activation tier, order the
    #: eligible candidates by ``profile``'s time at ``batch_tokens`` (strict policy only).
    rank: str = "table"
    profile: Profile | None = None
    batch_tokens: int | None = None
    #: The engine flags around the layer (parallelism, all2all, EPLB, LoRA).  The
    #: layer's ``tp_size`` / ``ep_size`` follow from it (vLLM's FusedMoEParallelConfig).
    deployment: Deployment = field(default_factory=Deployment)
    #: Which vLLM selector the model's quant method calls ("gpt-oss", "deepseek-v4").
    family: str = "gpt-oss"
    #: The checkpoint family (matrix/vllm.toml ``checkpoint``: what its quant method hands
    #: the oracle, or that it picks the kernel itself); None: not said.
    checkpoint: str | None = None
    #: what the gates see (``parallel``), derived once at construction
    _parallel: Deployment = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_field("weight", self.weight, (QuantKey,), "a QuantKey")
        for name in ("activation", "checkpoint_activation"):
            object.__setattr__(self, name, _activation(name, getattr(self, name)))
        _check_field("moe_backend", self.moe_backend, (str,), "a backend name string")
        object.__setattr__(self, "moe_backend", normalize_backend_name(self.moe_backend))
        _check_field("device", self.device, (Device,), "a Device (Device.parse('sm90'))")
        _check_field("environment", self.environment, (Environment,),
                     "an Environment (Environment.assume_all())")
        _check_field("layer", self.layer, (LayerSpec, type(None)), "a LayerSpec or None")
        _check_field("allow_activation_fallback", self.allow_activation_fallback, (bool,),
                     "True or False")
        object.__setattr__(self, "policy", parse_policy(self.policy))
        self._check_rank()
        _check_field("deployment", self.deployment, (Deployment,),
                     "a Deployment (oracle.Deployment(tensor_parallel_size=2))")
        object.__setattr__(self, "family", parse_family(self.family))
        if self.checkpoint is not None and not (
                isinstance(self.checkpoint, str) and self.checkpoint.isascii()
                and self.checkpoint.replace("-", "").isalnum()):
            raise ConfigError("checkpoint", "a checkpoint family name like gpt-oss-mxfp4 or None",
                              shown(self.checkpoint)[:60], "checkpoint=None")
        self._sync_layer()
        object.__setattr__(self, "_parallel", self._derive_parallel())

    def _sync_layer(self) -> None:
        """One spelling per deployment: an explicit deployment sets the layer's shard
        sizes (vLLM's FusedMoEParallelConfig); a layer that disagrees is an error."""
        layer, dep = self.layer, self.deployment
        if layer is None or dep.is_default:
            if layer is not None and (layer.ep_size or 1) > 1 and (layer.tp_size or 1) > 1:
                raise ConfigError("layer", "tp_size or ep_size, not both > 1 (vLLM's MoE "
                                  "layer is either tensor- or expert-parallel)",
                                  f"tp_size {layer.tp_size}, ep_size {layer.ep_size}",
                                  "Deployment(tensor_parallel_size=..., "
                                  "enable_expert_parallel=True)")
            return
        tp, ep = dep.moe_tp_size, (dep.ep_size if dep.use_ep else None)
        if layer.tp_size not in (None, tp):
            raise ConfigError("layer.tp_size", f"unset or {tp} (what the deployment shards the "
                              f"layer to: {dep.describe()})", shown(layer.tp_size),
                              "set the parallelism in the deployment only")
        if layer.ep_size not in (None, 1, ep or 1):
            raise ConfigError("layer.ep_size", f"unset or {ep or 1} (the deployment's: "
                              f"{dep.describe()})", shown(layer.ep_size),
                              "set expert parallelism in the deployment only")
        object.__setattr__(self, "layer", replace(layer, tp_size=tp if tp > 1 else None,
                                                  ep_size=ep))

    @property
    def parallel(self) -> Deployment:
        """The deployment the gates see: the explicit one, else what a layer's own
        ``tp_size`` / ``ep_size`` (the older spelling) say."""
        return self._parallel

    def _derive_parallel(self) -> Deployment:
        dep, layer = self.deployment, self.layer
        if not dep.is_default or layer is None:
            return dep
        if (layer.ep_size or 1) > 1:
            return Deployment(tensor_parallel_size=layer.ep_size, enable_expert_parallel=True)
        if (layer.tp_size or 1) > 1:
            return Deployment(tensor_parallel_size=layer.tp_size)
        return dep

    def _check_rank(self) -> None:
        if self.rank not in RANKS:
            raise ConfigError("rank", "one of " + ", ".join(RANKS), shown(self.rank)[:40],
                              "--rank table (the default) or --rank measured")
        _check_field("profile", self.profile, (Profile, type(None)),
                     "a Profile (oracle.profile.load_profile('bundled')) or None")
        if self.batch_tokens is not None:
            _check_field("batch_tokens", self.batch_tokens, (int,), "a positive int")
            if isinstance(self.batch_tokens, bool) or not 0 < self.batch_tokens < 1 << 40:
                raise ConfigError("batch_tokens", "a positive int", shown(self.batch_tokens),
                                  "--batch-tokens 16")
        if self.rank == "measured":
            if self.policy != "strict":
                raise ConfigError("rank", "table under a vLLM policy (the release's own order "
                                  "decides)", "measured", "--policy strict --rank measured")
            if self.profile is None or self.batch_tokens is None:
                raise ConfigError("rank", "measured with a profile and batch_tokens",
                                  "measured without " + ("a profile" if self.profile is None
                                                         else "batch_tokens"),
                                  "--rank measured --profile bundled --batch-tokens 16")

    def with_(self, **changes: Any) -> SelectionRequest:
        """A copy with ``changes``; a new deployment re-derives the layer's shard sizes
        (the old ones came from the old deployment, or stood for it)."""
        if "deployment" in changes and "layer" not in changes and self.layer is not None:
            changes["layer"] = replace(self.layer, tp_size=None, ep_size=None)
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        def name(key: QuantKey | Bf16Marker | None) -> str | None:
            return None if key is None else canonical_name(key)

        return {
            "weight": canonical_name(self.weight),
            "activation": name(self.activation),
            "checkpoint_activation": name(self.checkpoint_activation),
            "moe_backend": self.moe_backend,
            "device": self.device.name,
            "libraries": self.environment.describe(),
            "layer": self.layer.to_dict() if self.layer else None,
            "allow_activation_fallback": self.allow_activation_fallback,
            "policy": self.policy,
            "rank": self.rank,
            "profile": (f"{self.profile.label}: {self.profile.describe()}"
                        if self.profile is not None else None),
            "batch_tokens": self.batch_tokens,
            "deployment": self.deployment.to_dict(),
            "family": self.family,
            "checkpoint": self.checkpoint,
        }
