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
from oracle.deployment import DEFAULT_ALL2ALL, Deployment, parse_family
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
           "checkpoint_quant", "layer_from_config", "FAMILY_BY_MODEL_TYPE", "checkpoint_family", "build_request", "select_for_model"]

BUNDLED_MODELS: Final = ("gpt-oss-20b", "gpt-oss-120b", "deepseek-v4-flash")
#: Hugging Face ids of the bundled configs (matched case-insensitively, like the Hub).
#: A local folder of that name wins, as it would for a loader.
HF_IDS: Final[dict[str, str]] = {
    "openai/gpt-oss-20b": "gpt-oss-20b",
    "openai/gpt-oss-120b": "gpt-oss-120b",
    "deepseek-ai/deepseek-v4-flash": "deepseek-v4-flash",
}

#: config.json ``model_type`` -> the model family whose vLLM selector its MXFP4 MoE
#: layers reach (matrix/vllm.toml ``family``): gpt-oss through GptOssMxfp4Config
#: (quantization/mxfp4.py:116-149), DeepSeek-V4 through DeepseekV4FP8Config
#: (models/deepseek_v4/quant_config.py:100-118).
FAMILY_BY_MODEL_TYPE: Final[dict[str, str]] = {"gpt_oss": "gpt-oss", "deepseek_v4": "deepseek-v4"}
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


def _model_family(cfg: Mapping[str, Any], label: str = "config.json",
                 explicit: str | None = None) -> str:
    """The model family: ``explicit`` (``--model-family``) if given, else from the
    config's ``model_type``; a type no family claims is the gpt-oss path (vLLM's
    generic MXFP4 config would take it), unless it is DeepSeek-V4 by architecture."""
    if explicit is not None:
        return parse_family(explicit, "model_family")
    model_type = cfg.get("model_type")
    family = FAMILY_BY_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        archs = cfg.get("architectures") or ()
        if isinstance(archs, list) and any(isinstance(a, str) and a.startswith("DeepseekV4")
                                           for a in archs):
            family = "deepseek-v4"
    return family or "gpt-oss"


def layer_from_config(cfg: Mapping[str, Any], label: str = "config.json") -> LayerSpec:
    """The MoE geometry of a config.json (gpt-oss or DeepSeek-V4 style)."""
    experts = _int_field(cfg, "num_local_experts", label, required=True,
                         aliases=("num_experts", "n_routed_experts"))
    top_k = _int_field(cfg, "num_experts_per_tok", label, required=True, aliases=("top_k",))
    hidden = _int_field(cfg, "hidden_size", label, required=True)
    # DeepSeek configs carry the dense MLP's intermediate_size too; the experts' is
    # moe_intermediate_size.
    first, second = ("moe_intermediate_size", "intermediate_size") \
        if _model_family(cfg, label) == "deepseek-v4" else ("intermediate_size",
                                                           "moe_intermediate_size")
    inter = _int_field(cfg, first, label, required=False, aliases=(second,))
    if inter is None:
        raise ConfigError(f"{label}:intermediate_size", "present for an MoE model", "missing",
                          "add intermediate_size (or moe_intermediate_size)")
    if top_k > experts:  # type: ignore[operator]
        raise ConfigError(f"{label}:num_experts_per_tok", f"at most num_local_experts ({experts})",
                          shown(top_k), "fix num_experts_per_tok")
    limit = _float_field(cfg, "swiglu_limit", label)
    gpt_oss = cfg.get("model_type") == "gpt_oss"
    if _model_family(cfg, label) == "deepseek-v4":
        # SiLU-gated experts without biases; sqrtsoftplus routing (renormalized unless
        # the config says otherwise) is vLLM's DeepseekV4 routing method.
        renorm = cfg.get("norm_topk_prob", True) is not False
        return LayerSpec(hidden_size=hidden, intermediate_size=inter, num_experts=experts,
                         top_k=top_k, activation_fn="swiglu", has_bias=False,
                         routing_method="DeepseekV4" if renorm else "Unspecified")
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
    if method in ("fp8", "deepseek_v4_fp8") and _model_family(cfg, label) == "deepseek-v4":
        # DeepseekV4FP8Config: FP8 linears, MoE experts per expert_dtype; fp4 experts go
        # to Mxfp4MoEMethod, whose selector ignores the activation key it is handed
        # (models/deepseek_v4/quant_config.py:100-118; quantization/mxfp4.py:549-580).
        dtype = cfg.get("expert_dtype", "fp4")
        if dtype != "fp4":
            raise ConfigError(f"{label}:expert_dtype", "fp4 (MXFP4 experts)", shown(dtype)[:40],
                              "an MXFP4 DeepSeek-V4 checkpoint (expert_dtype fp4)")
        return CheckpointQuant("deepseek_v4_fp8", kMxfp4Static, UNSET,
                               _str_list(qc.get("modules_to_not_convert"),
                                         f"{path}.modules_to_not_convert"))
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


def checkpoint_family(ckpt: CheckpointQuant, family: str) -> str | None:
    """The checkpoint family (a ``checkpoint`` record of matrix/vllm.toml) the
    checkpoint's quantization belongs to, as vLLM's quant methods tell them apart:
    ``mxfp4`` is gpt-oss's method only for a gpt-oss model; quark by its OCP MX scheme;
    compressed-tensors MXFP4 by whether its inputs are dynamic FP8; a BF16 checkpoint
    quantized at load is online MXFP4.  None: a scheme no vLLM method selects for."""
    if ckpt.weight is None:
        return "online-mxfp4"
    act = ckpt.activation
    if ckpt.method == "mxfp4":
        return "gpt-oss-mxfp4" if family == "gpt-oss" else "mxfp4"
    if ckpt.method == "deepseek_v4_fp8":
        return "deepseek-v4-fp8"
    if ckpt.method == "quark":
        return {None: "quark-w-mxfp4", kFp8StaticTensorSym: "quark-w-mxfp4-a-fp8",
                kMxfp4Dynamic: "quark-w-mxfp4-a-mxfp4"}.get(
            None if act is BF16 or act is UNSET else act)  # type: ignore[call-overload]
    if ckpt.method == "compressed-tensors":
        dynamic_fp8 = isinstance(act, QuantKey) and act.dtype == "fp8_e4m3" and \
            not act.scale.static and act.scale.dtype == "fp32"
        return "compressed-tensors-w4a8-fp8" if dynamic_fp8 else "compressed-tensors-mxfp4"
    return None


def build_request(model: Any = "gpt-oss-20b", *, device: Device | str | None = None,
                  moe_backend: str = "auto", quantization: str | None = None,
                  quantization_config: Any = None, environment: Environment | None = None,
                  allow_activation_fallback: bool = False, policy: str = "strict",
                  rank: str = "table", profile: Any = None, batch_tokens: int | None = None,
                  tensor_parallel_size: int | None = None, data_parallel_size: int = 1,
                  enable_expert_parallel: bool = False,
                  all2all_backend: str = DEFAULT_ALL2ALL, enable_eplb: bool = False,
                  enable_lora: bool = False, model_family: str | None = None,
                  routing_method: str | None = None,
                  ) -> tuple[SelectionRequest, str, CheckpointQuant, QuantizationConfigArgs]:
    """Everything but the decision: (request, model label, checkpoint facts, merged config).

    The deployment keywords are vLLM 0.33's engine flags (``--data-parallel-size``,
    ``--enable-expert-parallel``, ``--all2all-backend``, ``--enable-eplb``,
    ``--enable-lora``); ``model_family`` overrides the family the config's
    ``model_type`` names; ``routing_method`` the layer's RoutingMethodType."""
    label, cfg = load_model_config(model)
    family = _model_family(cfg, label, model_family)
    layer = layer_from_config(cfg, label)
    if routing_method is not None:
        layer = LayerSpec(**{**layer.to_dict(), "routing_method": routing_method})
    deployment = Deployment(
        tensor_parallel_size=1 if tensor_parallel_size is None else tensor_parallel_size,
        data_parallel_size=data_parallel_size, enable_expert_parallel=enable_expert_parallel,
        all2all_backend=all2all_backend, enable_eplb=enable_eplb, enable_lora=enable_lora)
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
    # vLLM's gpt-oss MXFP4 method claims a checkpoint only for model_type gpt_oss
    # (quantization/mxfp4.py:128-146), unless --model-family says which model it is.
    gpt_oss_method = family == "gpt-oss" and (model_family is not None
                                              or cfg.get("model_type") == "gpt_oss")
    checkpoint = checkpoint_family(ckpt, "gpt-oss" if gpt_oss_method else "deepseek-v4")
    request = SelectionRequest(
        weight=weight, activation=qargs.moe_activation, checkpoint_activation=ckpt.activation,
        moe_backend=moe_backend, device=dev, environment=env,
        layer=layer, allow_activation_fallback=allow_activation_fallback, policy=policy,
        rank=rank, profile=profile, batch_tokens=batch_tokens, deployment=deployment,
        family=family, checkpoint=checkpoint,
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
                     tensor_parallel_size: int | None = None, data_parallel_size: int = 1,
                     enable_expert_parallel: bool = False,
                     all2all_backend: str = DEFAULT_ALL2ALL, enable_eplb: bool = False,
                     enable_lora: bool = False, model_family: str | None = None,
                     routing_method: str | None = None) -> ModelSelection:
    """Select the MoE backend for ``model`` (bundled name, folder, config.json path or dict).

    ``device`` / ``environment`` left as ``None`` are probed from this machine
    (:mod:`oracle.probe`); pass values to answer for another machine.  The deployment
    keywords are vLLM 0.33's engine flags (see :func:`build_request`).  The decision
    itself is the pure :func:`oracle.select`.
    """
    request, label, ckpt, qargs = build_request(
        model, device=device, moe_backend=moe_backend, quantization=quantization,
        quantization_config=quantization_config, environment=environment,
        allow_activation_fallback=allow_activation_fallback, policy=policy, rank=rank,
        profile=profile, batch_tokens=batch_tokens, tensor_parallel_size=tensor_parallel_size,
        data_parallel_size=data_parallel_size, enable_expert_parallel=enable_expert_parallel,
        all2all_backend=all2all_backend, enable_eplb=enable_eplb, enable_lora=enable_lora,
        model_family=model_family, routing_method=routing_method)
    _check_min_capability(request, ckpt)
    selection = select(request)
    unquantized = tuple(dict.fromkeys((*ckpt.modules_to_not_convert, *qargs.ignore)))
    return ModelSelection(label, selection, request, ckpt, qargs, unquantized)
