"""MoE expert weights as stored in gpt-oss checkpoints: tensor names, shards, the index.

Why: the reference MoE and every kernel adapter start from the checkpoint-native
MXFP4 tensors, and tests must build such checkpoints without downloads. The
files themselves are read and written by the ``safetensors`` package
(:mod:`oracle.kernels.safetensors_io`: memory-mapped, validated by the package,
failures mapped into ``ConfigError``); this module holds the gpt-oss layout only.

gpt-oss layout, verified against public sources (code-search tool, 2026-11):

* huggingface/transformers ``models/gpt_oss/convert_gpt_oss_weights_to_hf.py``
  maps ``block.{i}.mlp.mlp1_weight`` -> ``model.layers.{i}.mlp.experts.gate_up_proj``,
  ``mlp1_bias`` -> ``gate_up_proj_bias``, ``mlp2_weight`` -> ``down_proj``,
  ``mlp2_bias`` -> ``down_proj_bias`` and, for the MXFP4 export, renames
  ``.blocks``/``.scales`` to ``_blocks``/``_scales`` copying the tensors unchanged;
  it shards into ``model-XXXXX-of-XXXXX.safetensors`` with a
  ``model.safetensors.index.json`` (``{"metadata": ..., "weight_map": {name: file}}``).
  So the HF names are :data:`HF_TENSOR_NAMES`, the original (``original/``
  folder) names are :data:`ORIGINAL_TENSOR_NAMES`, and both share one layout.
* openai/gpt-oss ``gpt_oss/torch/model.py``: ``mlp1_weight`` [E, 2I, H],
  ``mlp1_bias`` [E, 2I], ``mlp2_weight`` [E, H, I], ``mlp2_bias`` [E, H], all
  bf16 after dequantization; ``weights.py`` turns blocks ``[E, N, K/32, 16]`` +
  scales ``[E, N, K/32]`` into ``[E, N, K]``. Hence w13 = gate_up with
  N = 2I, K = H and w2 = down with N = H, K = I, as :class:`MoEWeights` stores them.
* transformers ``configuration_gpt_oss.py``: config fields ``num_local_experts``,
  ``num_experts_per_tok``, ``hidden_size``, ``intermediate_size``,
  ``num_hidden_layers``, ``swiglu_alpha`` (1.702), ``swiglu_limit`` (7.0).

A model folder is untrusted input: every shard the index (or a ``*.safetensors``
glob) names must resolve inside the folder (no ``..``, absolute paths or symlinks
pointing out: :func:`oracle.files.resolve_inside`), only regular files are opened
(a FIFO would block), and the index is read bounded (:func:`oracle.files.read_regular_file`)
and parsed strictly (:func:`oracle.config.load_json`: duplicate keys, huge integers,
bad JSON are a ``ConfigError``).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from oracle.errors import ConfigError, KernelInputError
from oracle.files import read_regular_file, resolve_inside, user_path

from .mxfp4 import MX_BLOCK, dequantize_mxfp4, quantize_mxfp4

__all__ = [
    "MoEWeights",
    "HF_TENSOR_NAMES",
    "ORIGINAL_TENSOR_NAMES",
    "checkpoint_tensor_files",
    "load_gpt_oss_layer",
    "random_gpt_oss_layer",
    "write_random_gpt_oss_checkpoint",
]

_BYTES_PER_BLOCK = MX_BLOCK // 2


# --------------------------------------------------------------------------- weights


def _fail(tensor: str, constraint: str, got, fix: str | None = None):
    raise KernelInputError(tensor, constraint, got, fix)


def _check_packed(name: str, blocks, scales_name: str, scales) -> None:
    """blocks uint8 [E, N, G, 16] with scales uint8 [E, N, G]."""
    for nm, t in ((name, blocks), (scales_name, scales)):
        if not isinstance(t, torch.Tensor):
            _fail(nm, "a torch.Tensor", type(t).__name__)
        if t.dtype != torch.uint8:
            _fail(nm, "uint8 (checkpoint-native MXFP4)", t.dtype,
                  "pass the checkpoint tensor unchanged, or build it with quantize_mxfp4")
    if blocks.dim() != 4 or blocks.shape[-1] != _BYTES_PER_BLOCK:
        _fail(name, f"[E, N, K/32, {_BYTES_PER_BLOCK}]", tuple(blocks.shape))
    if tuple(scales.shape) != tuple(blocks.shape[:3]):
        _fail(scales_name, f"{tuple(blocks.shape[:3])} (the blocks' [E, N, K/32])", tuple(scales.shape))


def _check_bias(name: str, bias, shape: tuple[int, ...]) -> None:
    if bias is None:
        return
    if not isinstance(bias, torch.Tensor) or not bias.is_floating_point():
        _fail(name, "a floating-point tensor or None", getattr(bias, "dtype", type(bias).__name__))
    if tuple(bias.shape) != shape:
        _fail(name, f"shape {shape}", tuple(bias.shape))


@dataclass(frozen=True, eq=False)
class MoEWeights:
    """One MoE layer's experts in checkpoint-native MXFP4, nn.Linear (out, in) orientation.

    ``w13`` is the fused gate/up projection H -> 2I (rows interleaved gate, up,
    gate, up, ... for gpt-oss; see ``ActivationSpec`` for the halves layout),
    ``w2`` the down projection I -> H. Biases are added after each GEMM.
    Construction does not validate (tests build broken instances on purpose);
    loaders and the reference call :meth:`validate`.
    """

    w13_blocks: torch.Tensor   # uint8 [E, 2I, H/32, 16]
    w13_scales: torch.Tensor   # uint8 [E, 2I, H/32]
    w13_bias: torch.Tensor | None  # [E, 2I]
    w2_blocks: torch.Tensor    # uint8 [E, H, I/32, 16]
    w2_scales: torch.Tensor    # uint8 [E, H, I/32]
    w2_bias: torch.Tensor | None   # [E, H]

    @property
    def num_experts(self) -> int:
        return int(self.w13_blocks.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.w13_blocks.shape[2]) * MX_BLOCK

    @property
    def intermediate_size(self) -> int:
        return int(self.w13_blocks.shape[1]) // 2

    @property
    def device(self) -> torch.device:
        return self.w13_blocks.device

    def validate(self) -> MoEWeights:
        """Check dtypes, shapes and their consistency; raise KernelInputError naming the tensor."""
        _check_packed("w13_blocks", self.w13_blocks, "w13_scales", self.w13_scales)
        e, two_i, h_blocks, _ = self.w13_blocks.shape
        if e < 1:
            _fail("w13_blocks", "at least one expert", e)
        if two_i % 2 or two_i == 0:
            _fail("w13_blocks", "an even, non-zero row count 2*I (gate and up)", two_i)
        _check_packed("w2_blocks", self.w2_blocks, "w2_scales", self.w2_scales)
        h, i = self.hidden_size, self.intermediate_size
        if tuple(self.w2_blocks.shape[:3]) != (e, h, i // MX_BLOCK) or i % MX_BLOCK:
            _fail("w2_blocks", f"[E={e}, H={h}, I/32={i / MX_BLOCK:g}, 16] to match w13_blocks",
                  tuple(self.w2_blocks.shape), "intermediate size must be a multiple of 32")
        _check_bias("w13_bias", self.w13_bias, (e, two_i))
        _check_bias("w2_bias", self.w2_bias, (e, h))
        for name in ("w13_scales", "w13_bias", "w2_blocks", "w2_scales", "w2_bias"):
            t = getattr(self, name)
            if t is not None and t.device != self.device:
                _fail(name, f"on {self.device} like w13_blocks", t.device, "move all tensors with .to(device)")
        return self

    def check_finite(self, experts: torch.Tensor | Iterable[int] | None = None) -> MoEWeights:
        """Refuse values that make every routed row NaN: an E8M0 scale byte 255 (NaN in the
        OCP spec) and a NaN/inf bias; in all experts, or only in ``experts``.

        One device sync for the whole check; raises KernelInputError naming the tensor.
        """
        idx = None if experts is None else torch.as_tensor(
            experts if isinstance(experts, torch.Tensor) else list(experts), dtype=torch.long, device=self.device)
        named = [("w13_scales", self.w13_scales, True), ("w2_scales", self.w2_scales, True),
                 ("w13_bias", self.w13_bias, False), ("w2_bias", self.w2_bias, False)]
        named = [(n, t if idx is None else t.index_select(0, idx), s) for n, t, s in named if t is not None]
        if not named or (idx is not None and idx.numel() == 0):
            return self
        flags = torch.stack([(t == 255).any() if scale else ~torch.isfinite(t).all()
                             for _, t, scale in named]).tolist()
        for (name, _, scale), bad in zip(named, flags):
            if bad:
                if scale:
                    _fail(name, "E8M0 scale bytes other than 255 (255 is NaN in the OCP MX spec)",
                          "a 255 byte", "fix the checkpoint, or pass check_finite=False to skip the check")
                _fail(name, "finite (no NaN/inf)", "non-finite values",
                      "fix the checkpoint, or pass check_finite=False to skip the check")
        return self

    def dense_w13(self, experts: Iterable[int] | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Dequantized gate/up weights [E', 2I, H] (all experts, or those listed)."""
        idx = slice(None) if experts is None else torch.as_tensor(list(experts), dtype=torch.long)
        return dequantize_mxfp4(self.w13_blocks[idx], self.w13_scales[idx], dtype)

    def dense_w2(self, experts: Iterable[int] | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Dequantized down weights [E', H, I]."""
        idx = slice(None) if experts is None else torch.as_tensor(list(experts), dtype=torch.long)
        return dequantize_mxfp4(self.w2_blocks[idx], self.w2_scales[idx], dtype)

    def to(self, device: torch.device | str) -> MoEWeights:
        def mv(t):
            return None if t is None else t.to(device)
        return MoEWeights(mv(self.w13_blocks), mv(self.w13_scales), mv(self.w13_bias),
                          mv(self.w2_blocks), mv(self.w2_scales), mv(self.w2_bias))

    @classmethod
    def from_dense(cls, w13: torch.Tensor, w2: torch.Tensor, w13_bias: torch.Tensor | None = None,
                   w2_bias: torch.Tensor | None = None) -> MoEWeights:
        """Quantize dense [E, 2I, H] / [E, H, I] weights to MXFP4 (biases kept as given)."""
        b13, s13 = quantize_mxfp4(w13)
        b2, s2 = quantize_mxfp4(w2)
        return cls(b13, s13, w13_bias, b2, s2, w2_bias).validate()


def _bad(path, constraint: str, got, fix: str | None = None):
    raise ConfigError(str(path), constraint, got, fix)


# --------------------------------------------------------------------------- gpt-oss loading

HF_TENSOR_NAMES: dict[str, str] = {
    "w13_blocks": "model.layers.{layer}.mlp.experts.gate_up_proj_blocks",
    "w13_scales": "model.layers.{layer}.mlp.experts.gate_up_proj_scales",
    "w13_bias": "model.layers.{layer}.mlp.experts.gate_up_proj_bias",
    "w2_blocks": "model.layers.{layer}.mlp.experts.down_proj_blocks",
    "w2_scales": "model.layers.{layer}.mlp.experts.down_proj_scales",
    "w2_bias": "model.layers.{layer}.mlp.experts.down_proj_bias",
}
"""MoEWeights field -> tensor name in the Hugging Face gpt-oss checkpoints."""

ORIGINAL_TENSOR_NAMES: dict[str, str] = {
    "w13_blocks": "block.{layer}.mlp.mlp1_weight.blocks",
    "w13_scales": "block.{layer}.mlp.mlp1_weight.scales",
    "w13_bias": "block.{layer}.mlp.mlp1_bias",
    "w2_blocks": "block.{layer}.mlp.mlp2_weight.blocks",
    "w2_scales": "block.{layer}.mlp.mlp2_weight.scales",
    "w2_bias": "block.{layer}.mlp.mlp2_bias",
}
"""The same tensors under openai/gpt-oss's own names (the ``original/`` folder)."""

_INDEX = "model.safetensors.index.json"
_INDEX_CAP = 64 * 1024 * 1024  # the published indexes are < 1 MB
_HF_LAYER = re.compile(r"^model\.layers\.([0-9]{1,9})\.mlp\.experts\.gate_up_proj_blocks$")


def _kind(path: Path) -> int | None:
    """st_mode of ``path`` (symlinks followed), None when it does not exist."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _bad(path, "a readable file or folder", type(exc).__name__, "check the path and permissions")


def _read_index(root: Path, index: Path) -> dict[str, Path]:
    """``weight_map`` of the index: tensor name -> shard path, every shard inside ``root``."""
    raw = read_regular_file(index, _INDEX_CAP, str(index))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _bad(index, "UTF-8 JSON", f"invalid UTF-8 at byte {exc.start}", "re-download the index")
    from oracle.config import load_json

    doc = load_json(text, path=str(index))
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        _bad(f"{index}:weight_map", "an object mapping tensor names to shard file names",
             type(weight_map).__name__)
    shards = {f: resolve_inside(root, f, f"{index}:weight_map") for f in set(weight_map.values())}
    return {n: shards[f] for n, f in weight_map.items()}


def checkpoint_tensor_files(path_or_dir: str | os.PathLike) -> tuple[dict[str, Path], Path]:
    """Every tensor name of a checkpoint -> the file holding it, plus what to name in errors.

    ``path_or_dir``: one safetensors file, or a folder with ``model.safetensors.index.json``
    (its ``weight_map`` decides; other files are ignored) or with ``*.safetensors`` files
    (a tensor in two of them is ambiguous and refused). Shards must resolve inside the folder.
    """
    from .safetensors_io import check_regular_file, tensor_names

    root = user_path(os.fspath(path_or_dir) if isinstance(path_or_dir, os.PathLike) else path_or_dir,
                     "checkpoint path")
    mode = _kind(root)
    if mode is not None and stat.S_ISREG(mode):
        return {n: root for n in tensor_names(root)}, root
    if mode is None or not stat.S_ISDIR(mode):
        _bad(root, "a safetensors file or a checkpoint folder",
             "no such file or folder" if mode is None else "not a regular file or folder")
    index = root / _INDEX
    if os.path.lexists(index):
        resolve_inside(root, _INDEX, str(index))  # a symlinked index must not lead out either
        return _read_index(root, index), index
    files = sorted(root.glob("*.safetensors"))
    if not files:
        _bad(root, "a folder with *.safetensors files", "none", "point at the model folder or one shard")
    mapping: dict[str, Path] = {}
    for f in files:
        shard = resolve_inside(root, f.name, str(f))
        check_regular_file(shard, str(f))
        for n in tensor_names(shard):
            if n in mapping:
                _bad(f"{root}:{n}", "in one *.safetensors file of the folder", f"in {mapping[n].name} and {f.name}",
                     f"point at one file, or add a {_INDEX}")
            mapping[n] = shard
    return mapping, root


def load_gpt_oss_layer(path_or_dir: str | os.PathLike, layer: int,
                       device: torch.device | str = "cpu") -> MoEWeights:
    """Read one layer's MXFP4 experts from a gpt-oss safetensors file or (sharded) folder.

    Accepts the Hugging Face names and openai/gpt-oss's original names. Only
    the six expert tensors are read, memory-mapped (no copy on the CPU). Missing
    or malformed tensors raise ConfigError whose ``path`` is ``<file>:<tensor name>``;
    a malformed file, ``<file>`` (or ``<file>:<tensor>`` where the tensor is known).
    """
    from .safetensors_io import check_regular_file, load_tensors

    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        _bad("layer", "a non-negative integer", layer)
    files, where = checkpoint_tensor_files(path_or_dir)
    names = next((s for s in (HF_TENSOR_NAMES, ORIGINAL_TENSOR_NAMES)
                  if s["w13_blocks"].format(layer=layer) in files), None)
    if names is None:
        layers = sorted({int(m.group(1)) for m in map(_HF_LAYER.match, files) if m})
        _bad(f"{where}:{HF_TENSOR_NAMES['w13_blocks'].format(layer=layer)}",
             "present (gpt-oss MXFP4 experts for this layer)", "missing",
             f"a layer in {layers[0]}..{layers[-1]}" if layers else "a gpt-oss MXFP4 checkpoint")
    by_file: dict[Path, list[str]] = {}
    fields: dict[str, str] = {}
    for field, pattern in names.items():
        name = pattern.format(layer=layer)
        if name not in files:
            if field.endswith("_bias"):
                continue
            _bad(f"{where}:{name}", "present", "missing", "the checkpoint is incomplete")
        if _kind(files[name]) is None:
            _bad(f"{files[name]}:{name}", "an existing shard file", "missing file",
                 f"re-download the shard named in {where}")
        check_regular_file(files[name], f"{files[name]}:{name}")
        by_file.setdefault(files[name], []).append(name)
        fields[name] = field
    tensors: dict[str, torch.Tensor | None] = {f: None for f in names}
    for shard, wanted in by_file.items():
        for name, t in load_tensors(shard, wanted, device).items():
            tensors[fields[name]] = t
    weights = MoEWeights(**tensors)
    try:
        return weights.validate()
    except KernelInputError as exc:
        name = names[exc.tensor].format(layer=layer) if exc.tensor in names else exc.tensor
        raise ConfigError(f"{files.get(name, where)}:{name}", exc.constraint, exc.got, exc.fix) from exc


# --------------------------------------------------------------------------- synthetic checkpoints


def random_gpt_oss_layer(num_experts: int, hidden: int, intermediate: int, *, seed: int,
                         device: torch.device | str = "cpu", bias: bool = True) -> MoEWeights:
    """A deterministic random layer in gpt-oss layout (bf16 biases), for tests without downloads.

    Codes are uniform over all 16 E2M1 values (RMS ~2.9); per-block exponents are
    drawn from {c-2, c-1, c} with 2**c ~ 1/sqrt(K), so for unit-variance inputs
    the GEMM outputs have RMS ~2 at any size and the tails cross the gpt-oss
    SwiGLU clamp (7.0), exercising both sides of it.
    """
    for name, v in (("hidden_size", hidden), ("intermediate_size", intermediate)):
        if v <= 0 or v % MX_BLOCK:
            _fail(name, f"a positive multiple of {MX_BLOCK}", v)
    if num_experts < 1:
        _fail("num_experts", ">= 1", num_experts)
    g = torch.Generator().manual_seed(seed)
    e, h, i = num_experts, hidden, intermediate

    def packed(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = 127 - round(0.5 * math.log2(k))
        blocks = torch.randint(0, 256, (e, n, k // MX_BLOCK, _BYTES_PER_BLOCK), generator=g, dtype=torch.uint8)
        scales = torch.randint(c - 2, c + 1, (e, n, k // MX_BLOCK), generator=g, dtype=torch.uint8)
        return blocks, scales

    w13_blocks, w13_scales = packed(2 * i, h)
    w2_blocks, w2_scales = packed(h, i)
    b13 = (torch.randn(e, 2 * i, generator=g) * 0.5).to(torch.bfloat16) if bias else None
    b2 = (torch.randn(e, h, generator=g) * 0.5).to(torch.bfloat16) if bias else None
    return MoEWeights(w13_blocks, w13_scales, b13, w2_blocks, w2_scales, b2).validate().to(device)


def write_random_gpt_oss_checkpoint(directory: str | os.PathLike, num_layers: int, *, num_experts: int = 4,
                                    hidden: int = 64, intermediate: int = 64, top_k: int = 2, seed: int = 0,
                                    shards: int = 1, bias: bool = True) -> Path:
    """Write a tiny HF-style gpt-oss checkpoint (config.json + safetensors) and return its folder.

    Layer ``i`` holds ``random_gpt_oss_layer(..., seed=seed + i)``. ``shards > 1``
    splits the tensors over ``model-0000k-of-0000n.safetensors`` files with a
    ``model.safetensors.index.json``, like the published checkpoints.
    """
    if num_layers < 1 or shards < 1:
        _fail("num_layers" if num_layers < 1 else "shards", ">= 1", num_layers if num_layers < 1 else shards)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(num_layers):
        w = random_gpt_oss_layer(num_experts, hidden, intermediate, seed=seed + layer, bias=bias)
        for field, pattern in HF_TENSOR_NAMES.items():
            if getattr(w, field) is not None:
                tensors[pattern.format(layer=layer)] = getattr(w, field)
    config = {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "num_hidden_layers": num_layers, "num_local_experts": num_experts,
        "num_experts_per_tok": top_k, "experts_per_token": top_k,
        "hidden_size": hidden, "intermediate_size": intermediate,
        "swiglu_alpha": 1.702, "swiglu_limit": 7.0, "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
    }
    from .safetensors_io import save_tensors

    (root / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    names = list(tensors)
    if shards == 1:
        save_tensors(root / "model.safetensors", tensors, {"format": "pt"})
        return root
    per = math.ceil(len(names) / shards)
    weight_map: dict[str, str] = {}
    for k in range(shards):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[k * per:(k + 1) * per]}
        save_tensors(root / fname, part, {"format": "pt"})
        weight_map.update({n: fname for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (root / _INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return root
