"""safetensors I/O, gpt-oss layer loading and MoEWeights validation."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from oracle.errors import ConfigError, KernelInputError
from oracle.kernels.checkpoint import (
    HF_TENSOR_NAMES,
    ORIGINAL_TENSOR_NAMES,
    MoEWeights,
    load_gpt_oss_layer,
    load_safetensors,
    random_gpt_oss_layer,
    read_safetensors_header,
    save_safetensors,
    write_random_gpt_oss_checkpoint,
)
from oracle.kernels.mxfp4 import dequantize_mxfp4

E, H, I = 4, 64, 96


def _same_layer(a: MoEWeights, b: MoEWeights) -> None:
    for field in ("w13_blocks", "w13_scales", "w13_bias", "w2_blocks", "w2_scales", "w2_bias"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), field


# --------------------------------------------------------------------------- safetensors


def test_round_trip_all_dtypes(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "bf16": torch.randn(3, 5, generator=g).to(torch.bfloat16),
        "u8": torch.randint(0, 256, (2, 3, 16), generator=g, dtype=torch.uint8),
        "f32": torch.randn(7, generator=g),
        "f16": torch.randn(2, 2, generator=g).half(),
        "i64": torch.arange(-3, 3),
        "bool": torch.tensor([True, False, True]),
        "fp8": torch.randn(4, generator=g).to(torch.float8_e4m3fn),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "strided": torch.arange(12.0).reshape(3, 4).T,  # non-contiguous input
    }
    path = save_safetensors(tmp_path / "t.safetensors", tensors, {"format": "pt"})
    back = load_safetensors(path)
    assert list(back) == list(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
        assert torch.equal(back[name].view(torch.uint8) if t.dtype == torch.float8_e4m3fn else back[name],
                           t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t), name
    assert read_safetensors_header(path)[1] == {"format": "pt"}
    assert set(load_safetensors(path, ["u8", "scalar"])) == {"u8", "scalar"}


def test_writer_follows_the_spec_byte_layout(tmp_path):
    path = save_safetensors(tmp_path / "t.safetensors",
                            {"a": torch.tensor([1.0, -2.0], dtype=torch.bfloat16),
                             "b": torch.tensor([[7, 8, 9]], dtype=torch.uint8)})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header["a"] == {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}
    assert header["b"] == {"dtype": "U8", "shape": [1, 3], "data_offsets": [4, 7]}
    data = raw[8 + n:]
    assert data[:4] == bytes([0x80, 0x3F, 0x00, 0xC0])  # bf16 1.0, -2.0 little-endian
    assert data[4:7] == bytes([7, 8, 9])


def test_reader_accepts_a_hand_built_file(tmp_path):
    header = json.dumps({"__metadata__": {"k": "v"},
                         "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "y": {"dtype": "I16", "shape": [], "data_offsets": [8, 10]}}).encode()
    path = tmp_path / "hand.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<ffh", 1.5, -3.0, -7))
    t = load_safetensors(path)
    assert t["x"].tolist() == [1.5, -3.0] and t["y"].item() == -7 and t["y"].dtype == torch.int16


@pytest.mark.parametrize("damage", ["truncated", "short", "bad_json", "bad_offsets", "bad_dtype", "size_mismatch"])
def test_bad_files_raise_config_error_naming_the_file(tmp_path, damage):
    path = save_safetensors(tmp_path / "ok.safetensors", {"x": torch.zeros(4)})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    if damage == "truncated":
        raw = raw[:-3]
    elif damage == "short":
        raw = raw[:5]
    elif damage == "bad_json":
        raw = raw[:8] + b"{" * n + raw[8 + n:]
    else:
        if damage == "bad_offsets":
            header["x"]["data_offsets"] = [0, 1000]
        elif damage == "bad_dtype":
            header["x"]["dtype"] = "F128"
        else:
            header["x"]["shape"] = [5]
        blob = json.dumps(header).encode()
        raw = struct.pack("<Q", len(blob)) + blob + raw[8 + n:]
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as err:
        load_safetensors(path)
    assert err.value.path.startswith(str(path))
    if damage in ("bad_offsets", "bad_dtype", "size_mismatch", "truncated"):
        assert err.value.path == f"{path}:x"


def test_missing_tensor_names_file_and_tensor(tmp_path):
    path = save_safetensors(tmp_path / "t.safetensors", {"x": torch.zeros(1)})
    with pytest.raises(ConfigError) as err:
        load_safetensors(path, ["nope"])
    assert err.value.path == f"{path}:nope"
    with pytest.raises(ConfigError) as err:
        load_safetensors(tmp_path / "absent.safetensors")
    assert err.value.path == str(tmp_path / "absent.safetensors")


# --------------------------------------------------------------------------- gpt-oss checkpoints


def test_single_file_checkpoint(tmp_path):
    root = write_random_gpt_oss_checkpoint(tmp_path, 2, num_experts=E, hidden=H, intermediate=I, seed=3)
    config = json.loads((root / "config.json").read_text())
    assert config["num_local_experts"] == E and config["hidden_size"] == H and config["intermediate_size"] == I
    assert config["quantization_config"]["quant_method"] == "mxfp4"
    for layer in range(2):
        want = random_gpt_oss_layer(E, H, I, seed=3 + layer)
        _same_layer(load_gpt_oss_layer(root, layer), want)
        _same_layer(load_gpt_oss_layer(root / "model.safetensors", layer), want)
    w = load_gpt_oss_layer(root, 1)
    assert (w.num_experts, w.hidden_size, w.intermediate_size) == (E, H, I)
    assert w.w13_blocks.shape == (E, 2 * I, H // 32, 16) and w.w2_scales.shape == (E, H, I // 32)
    assert w.w13_bias.dtype == torch.bfloat16
    names = set(read_safetensors_header(root / "model.safetensors")[0])
    assert "model.layers.1.mlp.experts.gate_up_proj_blocks" in names
    assert "model.layers.0.mlp.experts.down_proj_bias" in names


def test_sharded_checkpoint_uses_the_index(tmp_path):
    root = write_random_gpt_oss_checkpoint(tmp_path, 3, num_experts=E, hidden=H, intermediate=I, seed=0,
                                           shards=3, bias=False)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3
    _same_layer(load_gpt_oss_layer(root, 2), random_gpt_oss_layer(E, H, I, seed=2, bias=False))
    # A stray file that the index does not mention must not be consulted.
    save_safetensors(root / "stray.safetensors", {HF_TENSOR_NAMES["w13_blocks"].format(layer=7): torch.zeros(1)})
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 7)
    assert err.value.path.endswith("model.safetensors.index.json:model.layers.7.mlp.experts.gate_up_proj_blocks")
    # A shard named by the index but missing on disk.
    victim = index["weight_map"][HF_TENSOR_NAMES["w2_scales"].format(layer=0)]
    (root / victim).unlink()
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 0)
    assert victim in err.value.path


def test_malformed_index(tmp_path):
    root = write_random_gpt_oss_checkpoint(tmp_path, 1, num_experts=E, hidden=H, intermediate=I, shards=2)
    index = root / "model.safetensors.index.json"
    index.write_text('{"weight_map": [1, 2]}')
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 0)
    assert err.value.path == f"{index}:weight_map"
    index.write_text("{not json")
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 0)
    assert err.value.path == str(index)


def test_folder_of_shards_without_index(tmp_path):
    root = write_random_gpt_oss_checkpoint(tmp_path, 2, num_experts=E, hidden=H, intermediate=I, seed=5, shards=2)
    (root / "model.safetensors.index.json").unlink()
    _same_layer(load_gpt_oss_layer(root, 1), random_gpt_oss_layer(E, H, I, seed=6))


def test_original_gpt_oss_names(tmp_path):
    w = random_gpt_oss_layer(E, H, I, seed=11)
    tensors = {pattern.format(layer=4): getattr(w, field) for field, pattern in ORIGINAL_TENSOR_NAMES.items()}
    save_safetensors(tmp_path / "model.safetensors", tensors)
    _same_layer(load_gpt_oss_layer(tmp_path, 4), w)


def test_missing_layer_and_bad_layer_tensors(tmp_path):
    root = write_random_gpt_oss_checkpoint(tmp_path / "ck", 2, num_experts=E, hidden=H, intermediate=I)
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 5)
    assert err.value.path == f"{root}:model.layers.5.mlp.experts.gate_up_proj_blocks"
    assert "0..1" in err.value.fix
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, -1)
    assert err.value.path == "layer"
    # A checkpoint whose down_proj scales do not match its blocks.
    tensors = load_safetensors(root / "model.safetensors")
    tensors["model.layers.0.mlp.experts.down_proj_scales"] = torch.zeros(E, H, 1, dtype=torch.uint8)
    save_safetensors(tmp_path / "bad.safetensors", tensors)
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(tmp_path / "bad.safetensors", 0)
    assert err.value.path == f"{tmp_path / 'bad.safetensors'}:model.layers.0.mlp.experts.down_proj_scales"
    # Blocks without their scales.
    del tensors["model.layers.0.mlp.experts.down_proj_scales"]
    save_safetensors(tmp_path / "bad.safetensors", tensors)
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(tmp_path / "bad.safetensors", 0)
    assert err.value.path.endswith(":model.layers.0.mlp.experts.down_proj_scales")
    with pytest.raises(ConfigError):
        load_gpt_oss_layer(tmp_path / "nowhere", 0)


# --------------------------------------------------------------------------- MoEWeights


def test_properties_and_dense_helpers():
    w = random_gpt_oss_layer(E, H, I, seed=1)
    assert (w.num_experts, w.hidden_size, w.intermediate_size) == (E, H, I)
    d13, d2 = w.dense_w13(), w.dense_w2()
    assert d13.shape == (E, 2 * I, H) and d2.shape == (E, H, I)
    assert torch.equal(w.dense_w13([2])[0], dequantize_mxfp4(w.w13_blocks[2], w.w13_scales[2]))
    assert torch.equal(w.dense_w2([3, 0]), d2[[3, 0]])
    assert w.dense_w2(dtype=torch.bfloat16).dtype == torch.bfloat16
    again = MoEWeights.from_dense(d13, d2, w.w13_bias, w.w2_bias)
    assert torch.equal(again.dense_w13(), d13) and torch.equal(again.dense_w2(), d2)


def _broken(w: MoEWeights, **changes) -> MoEWeights:
    fields = {f: getattr(w, f) for f in ("w13_blocks", "w13_scales", "w13_bias", "w2_blocks", "w2_scales", "w2_bias")}
    fields.update(changes)
    return MoEWeights(**fields)


def test_validation_names_the_tensor():
    w = random_gpt_oss_layer(E, H, I, seed=2)
    assert w.validate() is w
    cases = {
        "w13_blocks": dict(w13_blocks=w.w13_blocks.float()),
        "w13_scales": dict(w13_scales=w.w13_scales[:, :, :1]),
        "w2_blocks": dict(w2_blocks=w.w2_blocks[:3], w2_scales=w.w2_scales[:3]),
        "w2_scales": dict(w2_scales=w.w2_scales.to(torch.int32)),
        "w13_bias": dict(w13_bias=w.w13_bias[:, :I]),
        "w2_bias": dict(w2_bias=w.w2_bias.to(torch.int64)),
    }
    for name, change in cases.items():
        with pytest.raises(KernelInputError) as err:
            _broken(w, **change).validate()
        assert err.value.tensor == name, name
    # I mismatch between w13 (2I rows) and w2 (I/32 blocks).
    with pytest.raises(KernelInputError) as err:
        _broken(w, w13_blocks=w.w13_blocks[:, :2 * 64], w13_scales=w.w13_scales[:, :2 * 64],
                w13_bias=w.w13_bias[:, :2 * 64]).validate()
    assert err.value.tensor == "w2_blocks"
    # Odd 2I.
    with pytest.raises(KernelInputError) as err:
        _broken(w, w13_blocks=w.w13_blocks[:, :5], w13_scales=w.w13_scales[:, :5]).validate()
    assert err.value.tensor == "w13_blocks"


def test_random_layer_is_deterministic_and_checks_sizes():
    _same_layer(random_gpt_oss_layer(2, 32, 32, seed=9), random_gpt_oss_layer(2, 32, 32, seed=9))
    assert not torch.equal(random_gpt_oss_layer(2, 32, 32, seed=9).w13_blocks,
                           random_gpt_oss_layer(2, 32, 32, seed=10).w13_blocks)
    assert random_gpt_oss_layer(2, 32, 32, seed=9, bias=False).w2_bias is None
    with pytest.raises(KernelInputError) as err:
        random_gpt_oss_layer(2, 48, 32, seed=0)
    assert err.value.tensor == "hidden_size"
