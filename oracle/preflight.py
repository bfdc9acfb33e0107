"""Preflight: what a deployment of an MXFP4 MoE model will run, before any weight download.

:func:`preflight` answers, from the model's ``config.json`` alone (bundled name, folder
or config.json path) and a target device given as a value (``"sm90"``, no GPU needed):

* the layers by kind -- today every MoE layer of a model is one kind, listed once with
  its count and index range -- and the modules that stay unquantized (the checkpoint's
  ``modules_to_not_convert`` / ``ignore`` / ``exclude`` and the user's ``ignore``);
* for the MoE kind: the backend :func:`oracle.model.select_for_model` chooses, the vLLM
  experts class it would build (``Selection.kernel_class`` where the selection records
  it), the weight and activation keys, the padding, the knobs the selection says are
  ignored (and by whom), and what kernel artifact the matrix row records;
* the expert-weight bytes one decode step reads and the floor time that takes on each
  GPU of the device's arch (``matrix/gpus.toml``): bytes / peak memory bandwidth.

**Decode bytes.**  One decode step of a batch of one token reads, in each MoE layer,
the weights of the ``top_k`` experts the router picks: gate+up (``2·H·I`` parameters)
and down (``I·H``), at the padded sizes the kernel runs (``Selection.padded``: hidden,
and the *per-rank* intermediate under tensor parallelism), at the weight format's bits
per parameter -- derived from the weight :class:`~oracle.keys.QuantKey`: element bits
plus one scale per group (MXFP4: 4 + 8/32 = 4.25) -- plus, when the layer has biases,
their bf16 bytes (``2·I + H`` per expert), times the number of MoE layers.  Router,
attention, embeddings and the KV cache are not counted: this is the experts' floor.

The figure is **per rank**.  Under tensor parallelism every rank reads its ``1/tp``
shard of each of the ``top_k`` experts, all ranks in parallel, so the per-rank bytes are
what bounds the step.  Under expert parallelism the experts are split across the ``ep``
ranks and the ``top_k`` experts a token needs are read once overall, spread over the
ranks that own them; how they spread depends on the router, so the per-rank figure is
the worst-case rank: all ``top_k`` experts local (capped by the ``E/ep`` experts a rank
holds).  ``decode.bytes_all_ranks`` is the sum over ranks.

Pure like :func:`oracle.model.select_for_model` with a device and an environment given:
it reads the one config file the caller named (through
:func:`oracle.model.load_model_config`, which never leaves that folder) and probes
nothing.  ``environment`` defaults to every kernel library present
(:meth:`Environment.assume_all`), as for any device other than this machine.
"""

from __future__ import annotations

import inspect
import math
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final

from oracle.errors import ConfigError, shown
from oracle.keys import QuantKey, canonical_name
from oracle.matrix import MATRIX, POLICY_RELEASES, RELEASES
from oracle.matrix.gpus import GPUS, Gpu
from oracle.model import ModelSelection, load_model_config, select_for_model
from oracle.platforms import Device
from oracle.request import Environment, LayerSpec

__all__ = ["DecodeBytes", "GpuFloor", "IgnoredKnob", "LayerKind", "MoeReport",
           "PreflightReport", "Unquantized", "bits_per_weight", "preflight"]

#: Bits of one element of a weight dtype (oracle.keys dtype names).
_ELEMENT_BITS: Final = {"fp4_e2m1": 4, "int4": 4, "fp8_e4m3": 8, "int8": 8, "bf16": 16}
#: Bits of one scale of a scale dtype.
_SCALE_BITS: Final = {"e8m0": 8, "fp8_e4m3": 8, "bf16": 16, "fp32": 32}
#: Expert biases are bf16 in the checkpoints this oracle reads (gpt-oss).
_BIAS_BYTES: Final = 2
#: The keywords preflight names itself; everything else goes to select_for_model.
_OWN: Final = ("model", "device", "moe_backend", "quantization", "quantization_config",
               "environment", "policy")
#: Where a checkpoint's quant method lists its unquantized modules (oracle.model.checkpoint_quant).
_CHECKPOINT_FIELD: Final = {"mxfp4": "modules_to_not_convert", "compressed-tensors": "ignore",
                            "quark": "exclude"}
#: A clause that says a knob, flag or override is not honoured.
_IGNORED_RE: Final = re.compile(r"\bignor(?:e|es|ed|ing)\b|\bfall(?:s|ing)?[ -]?back\b|"
                                r"\bfallback\b|\bno effect\b", re.IGNORECASE)
#: ``ROW: detail`` or ``ROW (sm90): detail``, the selector's per-backend notes.
_ROW_NOTE_RE: Final = re.compile(r"^([A-Z][A-Z0-9_]*)(?: \([^)]*\))?: (.*)$", re.DOTALL)
_WIDTH: Final = 100


# ------------------------------------------------------------------ values

@dataclass(frozen=True, slots=True)
class LayerKind:
    """One kind of layer: how many, which indices (inclusive ranges), what runs its MLP."""

    kind: str  # "moe" | "dense_mlp"
    count: int | None  # None: config.json states no num_hidden_layers
    indices: tuple[tuple[int, int], ...]
    backend: str | None
    num_experts: int | None = None
    top_k: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None

    @property
    def index_text(self) -> str:
        if not self.indices:
            return "unknown"
        return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in self.indices)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count,
                "indices": [list(r) for r in self.indices], "backend": self.backend,
                "num_experts": self.num_experts, "top_k": self.top_k,
                "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size}


@dataclass(frozen=True, slots=True)
class Unquantized:
    """A module pattern that stays unquantized, and who said so."""

    pattern: str
    source: str  # "checkpoint: <field>" | "user: quantization_config.ignore"

    def to_dict(self) -> dict[str, str]:
        return {"pattern": self.pattern, "source": self.source, "status": "stays unquantized"}


@dataclass(frozen=True, slots=True)
class IgnoredKnob:
    """A clause of the selection's report that says something asked for is not honoured.

    ``by`` is the backend the note is about (``TRITON``), or where the clause came from
    when it names none; ``source`` is ``notes``, ``vllm``, ``rejected`` or ``deployment``."""

    by: str
    source: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"by": self.by, "source": self.source, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class DecodeBytes:
    """The expert-weight bytes one decode step (one token) reads; see the module docstring."""

    #: MoE layers counted; None when config.json states no num_hidden_layers: then every
    #: total is for ONE MoE layer (``scope``).
    moe_layers: int | None
    top_k: int  # experts a token needs per MoE layer
    experts_per_layer: int  # experts one rank reads per layer (the worst case under EP)
    bits_per_weight: Fraction
    weight_bytes_per_expert: int  # one rank's share: padded hidden x padded per-rank intermediate
    bias_bytes_per_expert: int
    tp_size: int
    ep_size: int

    @property
    def bytes_per_expert(self) -> int:
        return self.weight_bytes_per_expert + self.bias_bytes_per_expert

    @property
    def scope(self) -> str:
        return "all MoE layers" if self.moe_layers is not None else "one MoE layer"

    @property
    def bytes_per_rank(self) -> int:
        return (self.moe_layers or 1) * self.experts_per_layer * self.bytes_per_expert

    @property
    def bytes_all_ranks(self) -> int:
        """Summed over ranks: each of the ``tp`` shards of the ``top_k`` experts once (under
        EP the MoE tp is 1 and the ``top_k`` whole experts are read once overall)."""
        return (self.moe_layers or 1) * self.top_k * self.bytes_per_expert * self.tp_size

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "moe_layers": self.moe_layers, "top_k": self.top_k,
                "experts_per_layer": self.experts_per_layer,
                "bits_per_weight": float(self.bits_per_weight),
                "weight_bytes_per_expert": self.weight_bytes_per_expert,
                "bias_bytes_per_expert": self.bias_bytes_per_expert,
                "tp_size": self.tp_size, "ep_size": self.ep_size,
                "bytes_per_rank": self.bytes_per_rank, "bytes_all_ranks": self.bytes_all_ranks}


@dataclass(frozen=True, slots=True)
class GpuFloor:
    """One GPU of the table and the decode floor on it."""

    gpu: Gpu
    floor_us: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.gpu.to_dict(), "floor_us": round(self.floor_us, 3)}


@dataclass(frozen=True, slots=True)
class MoeReport:
    """The MoE kind: what runs it, how it is padded, what it reads per decode step."""

    backend: str
    selected_by: str
    kernel_class: str | None
    kernel_class_notes: tuple[str, ...]
    weight: str
    activation: str
    hidden: tuple[int, int]  # (config, padded)
    intermediate_per_rank: tuple[int, int]  # (per rank, padded)
    ignored_knobs: tuple[IgnoredKnob, ...]
    decode: DecodeBytes
    floors: tuple[GpuFloor, ...]
    jit_module: Mapping[str, Any]
    unquantized: tuple[str, ...]

    @property
    def floor_us(self) -> dict[str, float]:
        return {f.gpu.name: f.floor_us for f in self.floors}

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "selected_by": self.selected_by,
            "kernel_class": self.kernel_class,
            "kernel_class_notes": list(self.kernel_class_notes),
            "weight": self.weight,
            "activation": self.activation,
            "padded": {"hidden": list(self.hidden),
                       "intermediate_per_rank": list(self.intermediate_per_rank)},
            "ignored_knobs": [k.to_dict() for k in self.ignored_knobs],
            "decode_bytes_per_rank": self.decode.bytes_per_rank,
            "decode": self.decode.to_dict(),
            "floor_us": {f.gpu.name: round(f.floor_us, 3) for f in self.floors},
            "jit_module": dict(self.jit_module),
            "unquantized": list(self.unquantized),
        }


@dataclass(frozen=True)
class PreflightReport:
    """What :func:`preflight` found; ``to_dict()`` is the JSON, ``describe()`` the table."""

    model: str
    device: str
    gpu: str | None  # the GPU asked for (table name), None = every GPU of the arch
    policy: str
    deployment: Mapping[str, Any]
    layers: tuple[LayerKind, ...]
    unquantized: tuple[Unquantized, ...]
    moe: MoeReport
    notes: tuple[str, ...]
    model_selection: ModelSelection = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "gpu": self.gpu,
            "gpus": [f.to_dict() for f in self.moe.floors],
            "policy": self.policy,
            "deployment": _json_safe(self.deployment),
            "layers": [k.to_dict() for k in self.layers],
            "unquantized": [u.to_dict() for u in self.unquantized],
            "moe": self.moe.to_dict(),
            "notes": list(self.notes),
        }

    def describe(self) -> str:
        """A human report of at most 100 columns (tables by ``tabulate``)."""
        from tabulate import tabulate  # only the human report needs it

        moe, dec, dep = self.moe, self.moe.decode, self.deployment
        out = _wrap(f"preflight: {self.model} on {self.device}, policy {self.policy}, "
                    f"MoE tp {dep['moe_tp_size']} / ep {dep['moe_ep_size']}", "")
        out += ["", "layers:"]
        rows = [[k.kind, _na(k.count), k.index_text, _na(k.num_experts), _na(k.top_k),
                 k.backend or "-"] for k in self.layers]
        out += _indent(tabulate(rows, headers=["kind", "layers", "indices", "experts", "top_k",
                                               "backend"], tablefmt="simple",
                                maxcolwidths=[10, None, 30, None, None, 40]))
        out += ["", "stays unquantized:"]
        if self.unquantized:
            out += _indent(tabulate([[u.pattern, u.source] for u in self.unquantized],
                                    headers=["pattern", "source"], tablefmt="simple",
                                    maxcolwidths=[50, 44]))
        else:
            out.append("  none")
        (h, hp), (i, ip) = moe.hidden, moe.intermediate_per_rank
        padding = f"hidden {h} -> {hp}, intermediate per rank {i} -> {ip}" + (
            " (none)" if (h, i) == (hp, ip) else "")
        jit = moe.jit_module
        kv: list[list[str]] = [
            ["backend", f"{moe.backend} ({moe.selected_by})"],
            ["kernel class", moe.kernel_class or "n/a"],
            *[["", f"passed over: {n}"] for n in moe.kernel_class_notes],
            ["weight", f"{moe.weight} ({float(dec.bits_per_weight):g} bits per parameter)"],
            ["activation", moe.activation],
            ["padding", padding],
        ]
        knobs = [f"{k.by}: {k.detail}" for k in moe.ignored_knobs] or ["none"]
        kv += [["ignored knobs" if n == 0 else "", text] for n, text in enumerate(knobs)]
        kv += [["kernel artifact" if n == 0 else "", text]
               for n, text in enumerate(_artifact_lines(jit))]
        product = (f"= {_layers_text(dec.moe_layers)} x {dec.experts_per_layer} experts x "
                   f"{dec.bytes_per_expert:,} bytes ({dec.weight_bytes_per_expert:,} weight + "
                   f"{dec.bias_bytes_per_expert:,} bias)")
        kv += [["decode read", f"{dec.bytes_per_rank:,} bytes per rank per token"],
               ["", product]]
        if dec.bytes_all_ranks != dec.bytes_per_rank:
            kv.append(["", f"{dec.bytes_all_ranks:,} bytes summed over all ranks"])
        count = dec.moe_layers if dec.moe_layers is not None else "count unknown"
        out += ["", f"MoE layers ({count}):"]
        out += _indent(tabulate(kv, tablefmt="plain", maxcolwidths=[16, 78],
                                disable_numparse=True))
        out += ["", "decode floor (expert weights only: bytes per rank / peak bandwidth):"]
        if moe.floors:
            out += _indent(tabulate(
                [[f.gpu.name, f.gpu.arch, f"{f.gpu.memory_gb:g}", f"{f.gpu.bandwidth_tbps:g}",
                  f"{f.floor_us:.1f}"] for f in moe.floors],
                headers=["GPU", "arch", "memory GB", "TB/s", "floor us"], tablefmt="simple",
                colalign=("left", "left", "right", "right", "right"), disable_numparse=True))
        else:
            out.append(f"  no GPU of arch {self.device} in matrix/gpus.toml")
        if self.notes:
            out += ["", "notes:"]
            for note in self.notes:
                out += _wrap(note, "  - ", "    ")
        return "\n".join(line.rstrip() for line in out)


# ------------------------------------------------------------------ helpers

def _na(value: Any) -> Any:
    return "-" if value is None else value


def _layers_text(layers: int | None) -> str:
    return f"{layers} MoE layers" if layers is not None else "1 MoE layer (layer count unknown)"


def _bits(bits: Fraction) -> str:
    return f"{float(bits):g}"


def _indent(text: str, prefix: str = "  ") -> list[str]:
    return [prefix + line for line in text.splitlines()]


def _wrap(text: str, first: str, rest: str | None = None) -> list[str]:
    return textwrap.wrap(text, width=_WIDTH, initial_indent=first,
                         subsequent_indent=first if rest is None else rest,
                         break_long_words=True, break_on_hyphens=False) or [first]


def _artifact_lines(jit: Mapping[str, Any]) -> list[str]:
    lines = [f"JIT module {jit['module']}" if jit.get("module")
             else "no JIT module recorded in the matrix row"]
    lines.append("libraries " + (", ".join(jit.get("libraries") or ()) or "none")
                 + (f", weight layout {jit['layout']}" if jit.get("layout") else ""))
    if jit.get("flashinfer_runner") or jit.get("flashinfer_config"):
        lines.append("FlashInfer " + " / ".join(
            str(jit[k]) for k in ("flashinfer_runner", "flashinfer_config") if jit.get(k)))
    vx = jit.get("vllm_experts")
    if vx:
        lines.append(f"vLLM {vx['release']} experts classes: " + ", ".join(vx["classes"]))
    return lines


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _json_safe(to_dict())
    return shown(value, 200)


def bits_per_weight(key: QuantKey) -> Fraction:
    """Bits one weight parameter costs in ``key``'s format: the element bits plus the
    scale bits shared by a group (``kMxfp4Static``: 4 + 8/32 = 4.25).

    A per-tensor or per-channel scale (group extent ``-1``) costs a vanishing share of a
    bit per parameter and is counted as 0; so is a second-level per-tensor scale."""
    elem = _ELEMENT_BITS.get(key.dtype)
    scale_bits = _SCALE_BITS.get(key.scale.dtype)
    if elem is None or scale_bits is None:
        raise ConfigError("quantization_config.moe.weight", "a weight format whose element "
                          "and scale widths preflight knows (" + ", ".join(_ELEMENT_BITS) + ")",
                          canonical_name(key), "an MXFP4 weight key (mxfp4_static)")
    group = key.scale.group_shape
    if group.row > 0 and group.col > 0:
        return Fraction(elem) + Fraction(scale_bits, group.row * group.col)
    return Fraction(elem)


def _config_int(cfg: Mapping[str, Any], key: str, label: str, *, default: int | None,
                minimum: int) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise ConfigError(f"{label}:{key}", "present (how many decoder layers the model has)",
                          "missing", f"add {key} to config.json")
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**31:
        raise ConfigError(f"{label}:{key}", f"an integer from {minimum} below 2**31",
                          shown(value)[:60], f"fix {key} in config.json")
    return value


def _ranges(indices: list[int]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return tuple((a, b) for a, b in out)


def _moe_indices(cfg: Mapping[str, Any],
                 label: str) -> tuple[int | None, list[int] | None, list[int]]:
    """(num_hidden_layers, MoE layer indices, dense-MLP layer indices).

    Every layer is MoE unless the config says otherwise the DeepSeek way:
    ``first_k_dense_replace`` dense layers first, then an MoE layer every
    ``moe_layer_freq`` layers.  A config without ``num_hidden_layers`` gives
    ``(None, None, [])``: the report is then per MoE layer."""
    if cfg.get("num_hidden_layers") is None:
        return None, None, []
    n = _config_int(cfg, "num_hidden_layers", label, default=None, minimum=1)
    first_dense = _config_int(cfg, "first_k_dense_replace", label, default=0, minimum=0)
    freq = _config_int(cfg, "moe_layer_freq", label, default=1, minimum=1)
    moe = [i for i in range(n) if i >= first_dense and i % freq == 0]
    if not moe:
        raise ConfigError(f"{label}:first_k_dense_replace",
                          f"below num_hidden_layers ({n}) so that the model has MoE layers",
                          shown(first_dense), "fix first_k_dense_replace in config.json")
    dense = sorted(set(range(n)) - set(moe))
    return n, moe, dense


def _environment(value: Any) -> Environment:
    if value is None:
        return Environment.assume_all()
    if isinstance(value, Environment):
        return value
    if isinstance(value, str):
        return Environment.parse(value)
    raise ConfigError("environment", "an Environment or a --libraries string (all, none, "
                      "NAME[=VER],...)", shown(value)[:80], "Environment.assume_all() or 'all'")


def _deployment_kwargs(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's keywords for select_for_model, each one it accepts (else ConfigError)."""
    params = inspect.signature(select_for_model).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(deployment)
    accepted = sorted(n for n, p in params.items()
                      if n not in _OWN and p.kind is not inspect.Parameter.VAR_POSITIONAL)
    for key in deployment:
        if key not in accepted:
            raise ConfigError("deployment", "keywords select_for_model accepts: "
                              + ", ".join(accepted), shown(key)[:60],
                              "one of " + ", ".join(accepted), accepted)
    return dict(deployment)


def _resolve_gpu(gpu: Any, device: Any, arch: str) -> Gpu | None:
    if gpu is None:
        # A device given by a GPU name ("H200") names the GPU too.
        found = GPUS.lookup(device) if isinstance(device, str) else None
        return found if found is not None and found.arch == arch else None
    found = GPUS.lookup(gpu)
    if found is None:
        raise ConfigError("gpu", "a GPU of matrix/gpus.toml", shown(gpu)[:60],
                          "one of " + ", ".join(GPUS.names()), GPUS.names())
    if found.arch != arch:
        same = [g.name for g in GPUS.for_arch(arch)]
        raise ConfigError("gpu", f"a GPU of the device's arch {arch}",
                          f"{found.name} ({found.arch})",
                          f"--device {found.arch}" + (", or one of " + ", ".join(same)
                                                      if same else ""), same)
    return found


def _unquantized(ms: ModelSelection) -> tuple[Unquantized, ...]:
    ckpt_field = _CHECKPOINT_FIELD.get(ms.checkpoint.method or "", "modules_to_not_convert")
    ckpt = set(ms.checkpoint.modules_to_not_convert)
    user = set(ms.quantization_config.ignore)
    out = []
    for pattern in ms.unquantized_modules:
        sources = []
        if pattern in ckpt:
            sources.append(f"checkpoint: {ckpt_field}")
        if pattern in user:
            sources.append("user: quantization_config.ignore")
        out.append(Unquantized(pattern, " + ".join(sources) or "selection"))
    return tuple(out)


def _clauses(text: str) -> list[str]:
    return [c.strip() for c in text.split("; ") if c.strip()]


def _ignored_knobs(ms: ModelSelection) -> tuple[IgnoredKnob, ...]:
    """Every clause of the selection's notes, vLLM line and rejections (and of the
    request's deployment summary) that says an override, flag or request is ignored,
    fallen back from or without effect -- as reported, verbatim."""
    sel = ms.selection
    found: list[IgnoredKnob] = []
    for note in sel.notes:
        m = _ROW_NOTE_RE.match(note)
        by, body = (m.group(1), m.group(2)) if m else (f"selector ({ms.request.policy})", note)
        found += [IgnoredKnob(by, "notes", c) for c in _clauses(body) if _IGNORED_RE.search(c)]
    if sel.vllm:
        found += [IgnoredKnob("vLLM (strict comparison)", "vllm", c)
                  for c in _clauses(sel.vllm) if _IGNORED_RE.search(c)]
    deployment = ms.request.parallel  # the engine flags as the layer sees them
    # (a rejection that quotes the deployment summary repeats it; it is reported once)
    summary = {c.strip() for c in deployment.describe().split(", ")}
    for r in sel.rejected:
        found += [IgnoredKnob(r.backend, "rejected", c)
                  for c in _clauses(r.detail) if _IGNORED_RE.search(c)
                  and not any(part in c for part in summary if _IGNORED_RE.search(part))]
    found += [IgnoredKnob("deployment", "deployment", c) for c in sorted(summary)
              if _IGNORED_RE.search(c)]
    return tuple(dict.fromkeys(found))


def _drops_bias(backend: str, policy: str) -> bool:
    """Under a vLLM policy, whether the release's variant drops the biases (vllm.toml)."""
    release = RELEASES.get(POLICY_RELEASES.get(policy, ""))
    variant = release.variant.get(backend) if release is not None else None
    return bool(getattr(variant, "drops_bias", False))


def _jit_module(backend: str, policy: str) -> dict[str, Any]:
    """What the matrix records about the kernel artifact the winning row needs.

    ``mxfp4_moe.toml`` names no JIT module or entry point; a row records the kernel
    libraries, the weight layout its prepare step produces and, for FlashInfer rows, the
    runner and config classes.  ``vllm.toml`` records the experts classes vLLM tries for
    the variant (the release the policy reads; strict compares against vLLM 0.33)."""
    row = MATRIX.by_name.get(backend)
    if row is None:
        return {"module": None, "libraries": [], "layout": None, "flashinfer_runner": None,
                "flashinfer_config": None, "vllm_experts": None}
    release_name = POLICY_RELEASES.get(policy, POLICY_RELEASES["vllm-0.33"])
    release = RELEASES.get(release_name)
    variant = release.variant.get(backend) if release is not None else None
    return {
        "module": None,
        "libraries": list(row.libraries),
        "layout": row.layout,
        "flashinfer_runner": row.flashinfer_runner,
        "flashinfer_config": row.flashinfer_config,
        "vllm_experts": ({"release": release_name, "classes": list(variant.experts)}
                         if variant is not None else None),
    }


# ------------------------------------------------------------------ the entry point

def preflight(model: Any, *, device: Device | str, gpu: str | None = None,
              policy: str = "strict", moe_backend: str = "auto",
              quantization: str | None = None, quantization_config: Any = None,
              environment: Environment | str | None = None,
              **deployment: Any) -> PreflightReport:
    """What ``model`` will run on ``device``, and the decode floor, before any download.

    ``model``: a bundled name (``gpt-oss-20b``, ``gpt-oss-120b``, any other name in
    :data:`oracle.model.BUNDLED_MODELS`), a folder holding ``config.json``, a config.json
    path, or a config dict.  ``device``: an arch value (``"sm90"``, ``"gfx950"``) or a GPU
    name (``"H200"``, which then also picks that GPU).  ``gpu``: one GPU of
    ``matrix/gpus.toml`` (case-insensitive, common spellings accepted) to price the floor
    on; ``None`` prices it on every table GPU of the device's arch.  ``environment``: an
    :class:`Environment` or a ``--libraries`` string; ``None`` assumes every library.

    ``**deployment`` goes to :func:`oracle.model.select_for_model` as given
    (``tensor_parallel_size=8``, and whatever other keywords it accepts); a keyword it
    does not accept is a :class:`~oracle.errors.ConfigError` (``path="deployment"``,
    ``choices`` the accepted ones).  Selection errors (``NoEligibleBackend``,
    ``ActivationConflict``, ...) propagate unchanged.  An unknown ``gpu``, or one of
    another arch than ``device``, is a ConfigError with ``path="gpu"``.
    """
    dev = Device.parse(device)
    arch = dev.name
    chosen = _resolve_gpu(gpu, device, arch)
    extra = _deployment_kwargs(deployment)
    env = _environment(environment)
    label, cfg = load_model_config(model)
    n_layers, moe_idx, dense_idx = _moe_indices(cfg, label)
    ms = select_for_model(model, device=dev, moe_backend=moe_backend, quantization=quantization,
                          quantization_config=quantization_config, environment=env,
                          policy=policy, **extra)
    sel, req = ms.selection, ms.request
    layer = req.layer if req.layer is not None else LayerSpec()  # always set by the loader
    tp = layer.tp_size or 1
    ep = layer.ep_size or 1
    hidden = layer.hidden_size or 0
    inter_rank = layer.per_rank_intermediate or 0
    padded = sel.padded or (hidden, inter_rank)
    top_k = layer.top_k or 1
    experts = layer.num_experts or top_k
    local = math.ceil(experts / ep)
    per_layer = min(top_k, local) if ep > 1 else top_k
    bits = bits_per_weight(sel.weight)
    hp, ip = padded
    weight_bytes = math.ceil(Fraction(3 * hp * ip) * bits / 8)  # gate+up 2·H·I, down I·H
    drops_bias = _drops_bias(sel.backend, req.policy)
    bias_bytes = _BIAS_BYTES * (2 * ip + hp) if layer.has_bias and not drops_bias else 0
    decode = DecodeBytes(None if moe_idx is None else len(moe_idx), top_k, per_layer, bits,
                         weight_bytes, bias_bytes, tp, ep)
    gpus = (chosen,) if chosen is not None else GPUS.for_arch(arch)
    floors = tuple(GpuFloor(g, decode.bytes_per_rank / g.bandwidth_bytes_per_s * 1e6)
                   for g in gpus)
    unquantized = _unquantized(ms)
    moe = MoeReport(
        backend=sel.backend, selected_by=sel.selected_by,
        kernel_class=getattr(sel, "kernel_class", None),
        kernel_class_notes=tuple(getattr(sel, "kernel_class_notes", None) or ()),
        weight=canonical_name(sel.weight), activation=canonical_name(sel.activation),
        hidden=(hidden, hp), intermediate_per_rank=(inter_rank, ip),
        ignored_knobs=_ignored_knobs(ms), decode=decode, floors=floors,
        jit_module=_jit_module(sel.backend, req.policy),
        unquantized=tuple(u.pattern for u in unquantized),
    )
    kinds = [LayerKind("moe", None if moe_idx is None else len(moe_idx),
                       _ranges(moe_idx or []), sel.backend, layer.num_experts,
                       layer.top_k, layer.hidden_size, layer.intermediate_size)]
    if dense_idx:
        kinds.append(LayerKind("dense_mlp", len(dense_idx), _ranges(dense_idx), None))
    notes = list(sel.notes)
    if sel.vllm:
        notes.append(sel.vllm)
    if moe_idx is None:
        notes.append("config.json states no num_hidden_layers: the decode bytes and floors are "
                     "for one MoE layer; multiply by the model's MoE layer count")
    if dense_idx:
        notes.append(f"{len(dense_idx)} of {n_layers} layers have a dense MLP "
                     "(first_k_dense_replace / moe_layer_freq): no MoE kernel, not counted")
    shared = cfg.get("n_shared_experts")
    if isinstance(shared, int) and not isinstance(shared, bool) and shared > 0:
        notes.append(f"n_shared_experts {shared}: shared experts are not routed MoE experts "
                     "and are not counted in the decode bytes")
    moe_inter = cfg.get("moe_intermediate_size")
    if isinstance(moe_inter, int) and layer.intermediate_size not in (None, moe_inter):
        notes.append(f"config.json has moe_intermediate_size {moe_inter}, the selection used "
                     f"intermediate_size {layer.intermediate_size}")
    if layer.has_bias and drops_bias:
        notes.append(f"{sel.backend} drops the expert biases under {req.policy} (vllm.toml "
                     "drops_bias): no bias bytes are read")
    if ep > 1:
        notes.append(f"expert parallelism over {ep} ranks: {local} of {experts} experts per "
                     f"rank; the token's {top_k} experts are read once overall, and the bytes "
                     f"per rank are the worst case: {per_layer} of them on one rank"
                     + (" (all it holds)" if per_layer < top_k else ""))
    elif tp > 1:
        notes.append(f"tensor parallelism {tp}: each rank reads its 1/{tp} shard (intermediate "
                     f"{inter_rank} per rank, padded to {ip}) of each of the {top_k} experts")
    if not gpus:
        notes.append(f"no GPU of arch {arch} in matrix/gpus.toml: no floor time")
    dep = {"given": _json_safe(dict(deployment)), "moe_tp_size": tp, "moe_ep_size": ep}
    return PreflightReport(
        model=ms.model, device=arch, gpu=chosen.name if chosen is not None else None,
        policy=req.policy, deployment=dep, layers=tuple(kinds), unquantized=unquantized,
        moe=moe, notes=tuple(notes), model_selection=ms)
