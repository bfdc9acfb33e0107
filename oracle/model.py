"""The loader entry point: a model's config.json (+ user overrides) → the MoE selection.

``select_for_model`` is what an inference engine calls at model init.  It reads
the Hugging Face ``config.json`` (the checkpoint's ``quantization_config`` and
the MoE geometry), merges the user's ``--quantization`` / ``--quantization-config``
over it, builds a :class:`SelectionRequest` and asks the pure selector.  Reading
the file is the only I/O besides the probe: this is the one module that calls
:mod:`oracle.probe`, and only for a device or environment the caller left out
(``None``).  Pass values to answer for another machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from oracle.config import QuantizationConfigArgs, load_json, resolve_quantization_config
from oracle.errors import ConfigError, escape, shown
from oracle.files import read_regular_file, resolve_inside, user_path
from oracle.keys import (BF16, UNSET, Bf16Marker, QuantKey, Unset, canonical_name,
                         kFp8DynamicTokenSym, kFp8StaticTensorSym, kMxfp4Dynamic, kMxfp4Static,
                         kMxfp8Dynamic)
from oracle.matrix import POLICY_RELEASES, RELEASES
from oracle.platforms import Device
from oracle.probe import detect_device, detect_environment
from oracle.request import Environment, LayerSpec, SelectionRequest
from oracle.selection import Selection
from oracle.selector import select

__all__ = ["BUNDLED_MODELS", "HF_IDS", "CheckpointQuant", "ModelSelection", "load_model_config",
           "checkpoint_quant", "layer_from_config", "build_request", "select_for_model"]

BUNDLED_MODELS: Final = ("gpt-oss-20b", "gpt-oss-120b")
#: Hugging Face ids of the bundled configs (matched case-insensitively, like the Hub).
#: A local folder of that name wins, as it would for a loader.
HF_IDS: Final[dict[str, str]] = {
    "openai/gpt-oss-20b": "gpt-oss-20b",
    "openai/gpt-oss-120b": "gpt-oss-120b",
}
_MAX_CONFIG_BYTES: Final = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CheckpointQuant:
    """What the checkpoint itself declares about its MoE quantization."""

    method: str | None
    weight: QuantKey | None
    activation: QuantKey | Bf16Marker | None | Unset
    modules_to_not_convert: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelSelection:
    """The MoE selection for a model plus what the loader needs next."""

    model: str
    selection: Selection
    request: SelectionRequest
    checkpoint: CheckpointQuant
    quantization_config: QuantizationConfigArgs
    unquantized_modules: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        out = self.selection.to_dict()
        out["model"] = self.model
        out["unquantized_modules"] = list(self.unquantized_modules)
        return out

    def describe(self) -> str:
        """Human-readable report: the model, what stays unquantized, then the selection."""
        modules = ", ".join(self.unquantized_modules) or "none"
        head = f"model {self.model}: {len(self.unquantized_modules)} module patterns stay " \
               f"unquantized ({modules})"
        return head + "\n" + self.selection.describe()


def _source_label(model: Any) -> str:
    if isinstance(model, Mapping):
        return "config.json"
    return str(model)


def load_model_config(model: Any) -> tuple[str, dict[str, Any]]:
    """(label, config dict) from a bundled name, a folder, a config.json path or a dict."""
    if isinstance(model, Mapping):
        return "config.json", dict(model)
    if not isinstance(model, (str, Path)):
        raise ConfigError("model", "a bundled name, a model folder, a config.json path or a dict",
                          shown(model)[:80], ", ".join(BUNDLED_MODELS))
    text_name = str(model)
    if text_name in BUNDLED_MODELS:
        return _bundled(text_name, f"{text_name} (bundled)")
    hf = HF_IDS.get(text_name.strip().lower()) if isinstance(model, str) else None
    path = user_path(model, "model")
    if hf is not None and not _exists(path):
        return _bundled(hf, f"{text_name.strip()} (bundled {hf})")
    try:
        folder, name = (path, "config.json") if path.is_dir() else (path.parent, path.name)
    except (OSError, ValueError) as exc:  # name too long, permission...
        raise ConfigError(escape(str(path)[:120]), "a usable model path", type(exc).__name__,
                          "a model folder with config.json, or " + ", ".join(BUNDLED_MODELS)) from None
    label = str(folder / name)
    if not (folder / name).exists():
        raise ConfigError(label, "an existing config.json (or a folder holding one)", "missing",
                          "a model folder with config.json, or " + ", ".join(
                              (*BUNDLED_MODELS, *HF_IDS)))
    data = read_regular_file(resolve_inside(folder, name, label), _MAX_CONFIG_BYTES, label)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(label, "UTF-8 JSON", "undecodable bytes", "re-save as UTF-8") from None
    doc = load_json(text, label)
    if not isinstance(doc, dict):
        raise ConfigError(label, "a JSON object", type(doc).__name__, "a Hugging Face config.json")
    return label, doc


def _bundled(name: str, label: str) -> tuple[str, dict[str, Any]]:
    res = resources.files("oracle.models").joinpath(f"{name}.json")
    return label, json.loads(res.read_text("utf-8"))


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _int_field(cfg: Mapping[str, Any], key: str, label: str, *, required: bool,
               aliases: tuple[str, ...] = ()) -> int | None:
    for name in (key, *aliases):
        if name in cfg:
            value = cfg[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
                raise ConfigError(f"{label}:{name}", "a positive integer below 2**31",
                                  shown(value)[:60], f"fix {name} in config.json")
            return value
    if required:
        raise ConfigError(f"{label}:{key}", "present for an MoE model", "missing",
                          f"add {key} to config.json")
    return None


def _float_field(cfg: Mapping[str, Any], key: str, label: str) -> float | None:
    if key not in cfg or cfg[key] is None:
        return None
    value = cfg[key]
    try:
        number = float(value) if not isinstance(value, bool) and isinstance(value, (int, float)) \
            else math.nan
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{label}:{key}", "a positive finite number", shown(value)[:60],
                          f"fix {key} in config.json")
    return number


def layer_from_config(cfg: Mapping[str, Any], label: str = "config.json") -> LayerSpec:
    """The MoE geometry of a (gpt-oss style) config.json."""
    experts = _int_field(cfg, "num_local_experts", label, required=True,
                         aliases=("num_experts", "n_routed_experts"))
    top_k = _int_field(cfg, "num_experts_per_tok", label, required=True, aliases=("top_k",))
    hidden = _int_field(cfg, "hidden_size", label, required=True)
    inter = _int_field(cfg, "intermediate_size", label, required=False,
                       aliases=("moe_intermediate_size",))
    if inter is None:
        raise ConfigError(f"{label}:intermediate_size", "present for an MoE model", "missing",
                          "add intermediate_size (or moe_intermediate_size)")
    if top_k > experts:  # type: ignore[operator]
        raise ConfigError(f"{label}:num_experts_per_tok", f"at most num_local_experts ({experts})",
                          shown(top_k), "fix num_experts_per_tok")
    limit = _float_field(cfg, "swiglu_limit", label)
    gpt_oss = cfg.get("model_type") == "gpt_oss"
    return LayerSpec(
        hidden_size=hidden, intermediate_size=inter, num_experts=experts, top_k=top_k,
        activation_fn="swiglu_oai" if gpt_oss or limit is not None else "swiglu",
        swiglu_alpha=1.702 if gpt_oss else None, swiglu_limit=limit,
        has_bias=True if gpt_oss else None,
    )


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(path, "a list of module names", shown(value)[:60],
                          '["lm_head", "model.layers.*.self_attn"]')
    return tuple(value)


def _ct_activation(scheme: Mapping[str, Any], path: str) -> QuantKey | None:
    """compressed-tensors ``input_activations`` → activation key (None = bf16)."""
    if scheme is None:
        return None
    if not isinstance(scheme, Mapping):
        raise ConfigError(path, "an object or null", shown(scheme)[:60], "null for bf16 activations")
    bits, typ = scheme.get("num_bits"), scheme.get("type")
    group, dynamic = scheme.get("group_size"), scheme.get("dynamic")
    if typ == "float" and bits == 8 and group == 32:
        return kMxfp8Dynamic
    if typ == "float" and bits == 4 and group == 32:
        return kMxfp4Dynamic
    if typ == "float" and bits == 8 and scheme.get("strategy") == "tensor":
        return kFp8StaticTensorSym if dynamic is False else kFp8DynamicTokenSym
    if typ == "float" and bits == 8 and scheme.get("strategy") == "token":
        return kFp8DynamicTokenSym
    raise ConfigError(path, "an activation scheme this oracle knows (mxfp8, mxfp4, fp8)",
                      shown(dict(scheme))[:80], "null (bf16) or an MX scheme with group_size 32")


def checkpoint_quant(cfg: Mapping[str, Any], label: str = "config.json") -> CheckpointQuant:
    """The checkpoint's own quantization: gpt-oss ``mxfp4``, compressed-tensors, quark."""
    qc = cfg.get("quantization_config")
    if qc is None:
        return CheckpointQuant(None, None, UNSET, ())
    if not isinstance(qc, Mapping):
        raise ConfigError(f"{label}:quantization_config", "an object", shown(qc)[:60],
                          "remove it or use a supported quant_method")
    method = qc.get("quant_method")
    path = f"{label}:quantization_config"
    if method == "mxfp4":
        act = qc.get("activation_scheme", UNSET)
        activation: Any = UNSET
        if act is not UNSET and act is not None:
            if act not in ("mxfp8", "bf16"):
                raise ConfigError(f"{path}.activation_scheme", "mxfp8 or bf16", shown(act)[:40],
                                  "remove activation_scheme")
            activation = kMxfp8Dynamic if act == "mxfp8" else BF16
        return CheckpointQuant("mxfp4", kMxfp4Static, activation,
                               _str_list(qc.get("modules_to_not_convert"),
                                         f"{path}.modules_to_not_convert"))
    if method == "compressed-tensors":
        groups = qc.get("config_groups")
        if not isinstance(groups, Mapping) or not groups:
            raise ConfigError(f"{path}.config_groups", "a non-empty object", shown(groups)[:60],
                              "a compressed-tensors config with config_groups")
        for gname, group in groups.items():
            if not isinstance(group, Mapping) or not isinstance(group.get("weights"), Mapping):
                raise ConfigError(f"{path}.config_groups.{gname}.weights", "an object",
                                  shown(group)[:60], "a weights scheme")
            w = group["weights"]
            if w.get("type") == "float" and w.get("num_bits") == 4 and w.get("group_size") == 32:
                act = _ct_activation(group.get("input_activations"),
                                     f"{path}.config_groups.{gname}.input_activations")
                return CheckpointQuant("compressed-tensors", kMxfp4Static,
                                       BF16 if act is None else act,
                                       _str_list(qc.get("ignore"), f"{path}.ignore"))
        raise ConfigError(f"{path}.config_groups", "a group with MXFP4 weights "
                          "(type float, num_bits 4, group_size 32)", "none", "an MXFP4 checkpoint")
    if method == "quark":
        g = qc.get("global_quant_config")
        if not isinstance(g, Mapping) or not isinstance(g.get("weight"), Mapping):
            raise ConfigError(f"{path}.global_quant_config.weight", "an object",
                              shown(g)[:60], "a quark MXFP4 config")
        w = g["weight"]
        if w.get("dtype") != "fp4" or w.get("group_size") != 32:
            raise ConfigError(f"{path}.global_quant_config.weight", "fp4 with group_size 32",
                              shown(dict(w))[:80], "an MXFP4 (OCP MX) checkpoint")
        inp = g.get("input_tensors")
        if inp is None:
            act: Any = BF16
        elif isinstance(inp, Mapping) and inp.get("dtype") == "fp4" and inp.get("group_size") == 32:
            act = kMxfp4Dynamic
        elif isinstance(inp, Mapping) and inp.get("dtype") == "fp8_e4m3" and inp.get("group_size") == 32:
            act = kMxfp8Dynamic
        elif isinstance(inp, Mapping) and inp.get("dtype") == "fp8_e4m3":
            act = kFp8StaticTensorSym
        else:
            raise ConfigError(f"{path}.global_quant_config.input_tensors",
                              "null, fp4 or fp8_e4m3 (group 32 or per-tensor)", shown(inp)[:80],
                              "a supported quark activation scheme")
        return CheckpointQuant("quark", kMxfp4Static, act,
                               _str_list(qc.get("exclude"), f"{path}.exclude"))
    raise ConfigError(f"{path}.quant_method", "an MXFP4 method (mxfp4, compressed-tensors, quark)",
                      shown(method)[:40], "an MXFP4 checkpoint, or no quantization_config plus "
                      "--quantization mxfp4")


def build_request(model: Any = "gpt-oss-20b", *, device: Device | str | None = None,
                  moe_backend: str = "auto", quantization: str | None = None,
                  quantization_config: Any = None, environment: Environment | None = None,
                  allow_activation_fallback: bool = False, policy: str = "strict",
                  rank: str = "table", profile: Any = None, batch_tokens: int | None = None,
                  tensor_parallel_size: int | None = None,
                  ) -> tuple[SelectionRequest, str, CheckpointQuant, QuantizationConfigArgs]:
    """Everything but the decision: (request, model label, checkpoint facts, merged config)."""
    label, cfg = load_model_config(model)
    layer = layer_from_config(cfg, label)
    if tensor_parallel_size is not None:  # each rank holds intermediate // tp
        layer = LayerSpec(**{**layer.to_dict(), "tp_size": tensor_parallel_size})
    ckpt = checkpoint_quant(cfg, label)
    qargs = resolve_quantization_config(quantization, quantization_config)
    user_weight = qargs.moe_weight
    if ckpt.weight is not None:
        if user_weight is not UNSET and user_weight != ckpt.weight:
            raise ConfigError("quantization_config.moe.weight",
                              f"the checkpoint's weight key {canonical_name(ckpt.weight)} or unset",
                              canonical_name(user_weight),  # type: ignore[arg-type]
                              "drop the MoE weight override; an already-quantized checkpoint "
                              "cannot change its weight format")
        weight = ckpt.weight
    elif isinstance(user_weight, QuantKey):
        weight = user_weight
    else:
        raise ConfigError(f"{label}:quantization_config", "an MXFP4 MoE checkpoint or "
                          "--quantization mxfp4", "an unquantized MoE",
                          "--quantization mxfp4 (online MXFP4 quantization of the experts)")
    # Only here, and only when the caller did not say, is the machine probed.
    dev = Device.parse(device) if device is not None else detect_device()
    env = environment if environment is not None else detect_environment()
    request = SelectionRequest(
        weight=weight, activation=qargs.moe_activation, checkpoint_activation=ckpt.activation,
        moe_backend=moe_backend, device=dev, environment=env,
        layer=layer, allow_activation_fallback=allow_activation_fallback, policy=policy,
        rank=rank, profile=profile, batch_tokens=batch_tokens,
    )
    return request, label, ckpt, qargs


def _check_min_capability(request: SelectionRequest, ckpt: CheckpointQuant) -> None:
    """Under a vLLM policy, the release's quant method refuses a CUDA device below its
    minimum capability before any MoE kernel is chosen (``get_min_capability``)."""
    # A BF16 checkpoint quantized at load (--quantization mxfp4) is vLLM's "online" method.
    method = ckpt.method if ckpt.weight is not None else "online"
    if request.policy == "strict" or request.device.platform != "cuda" or method is None:
        return
    release = RELEASES[POLICY_RELEASES[request.policy]]
    minimum = dict(release.min_capability).get(method)
    cc = request.device.arch
    if minimum is not None and isinstance(cc, int) and cc < minimum:
        raise ConfigError("device", f"capability >= {minimum / 10:.1f} for a {method} "
                          f"checkpoint in vLLM {release.version} "
                          "(the quant method's get_min_capability)",
                          request.device.name, "a newer GPU, or --policy strict to see which "
                          "kernels would run")


def select_for_model(model: Any = "gpt-oss-20b", *, device: Device | str | None = None,
                     moe_backend: str = "auto", quantization: str | None = None,
                     quantization_config: Any = None, environment: Environment | None = None,
                     allow_activation_fallback: bool = False,
                     policy: str = "strict", rank: str = "table", profile: Any = None,
                     batch_tokens: int | None = None,
                     tensor_parallel_size: int | None = None) -> ModelSelection:
    """Select the MoE backend for ``model`` (bundled name, folder, config.json path or dict).

    ``device`` / ``environment`` left as ``None`` are probed from this machine
    (:mod:`oracle.probe`); pass values to answer for another machine.  The decision
    itself is the pure :func:`oracle.select`.
    """
    request, label, ckpt, qargs = build_request(
        model, device=device, moe_backend=moe_backend, quantization=quantization,
        quantization_config=quantization_config, environment=environment,
        allow_activation_fallback=allow_activation_fallback, policy=policy, rank=rank,
        profile=profile, batch_tokens=batch_tokens, tensor_parallel_size=tensor_parallel_size)
    _check_min_capability(request, ckpt)
    selection = select(request)
    unquantized = tuple(dict.fromkeys((*ckpt.modules_to_not_convert, *qargs.ignore)))
    return ModelSelection(label, selection, request, ckpt, qargs, unquantized)
