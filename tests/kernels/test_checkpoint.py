"""safetensors I/O (through the ``safetensors`` package), gpt-oss layer loading, MoEWeights validation.

Malformed files are crafted by hand: 8-byte little-endian header length, JSON header, data.
Every malformed class must be a ConfigError (never a plain ValueError, TypeError,
RecursionError, RuntimeError) naming the file, and the tensor where it is known.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

safetensors = pytest.importorskip("safetensors")
from packaging.version import Version  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from oracle.errors import ConfigError, KernelInputError  # noqa: E402
from oracle.kernels.checkpoint import (  # noqa: E402
    HF_TENSOR_NAMES,
    ORIGINAL_TENSOR_NAMES,
    MoEWeights,
    checkpoint_tensor_files,
    load_gpt_oss_layer,
    random_gpt_oss_layer,
    write_random_gpt_oss_checkpoint,
)
from oracle.kernels.mxfp4 import dequantize_mxfp4  # noqa: E402
from oracle.kernels.safetensors_io import load_tensors, save_tensors, tensor_names  # noqa: E402

E, H, I = 4, 64, 96
ROOT = Path(__file__).resolve().parents[2]
#: What the installed ``safetensors`` can store (the extras allow >= 0.4; CI installs the newest).
ST = Version(safetensors.__version__)
ST_FLOAT8 = ST >= Version("0.4.2")        # torch float8 tensors
ST_E8M0 = ST >= Version("0.6")            # F8_E8M0
ST_FNUZ = ST >= Version("0.8")            # F8_E4M3FNUZ / F8_E5M2FNUZ


def _same_layer(a: MoEWeights, b: MoEWeights) -> None:
    for field in ("w13_blocks", "w13_scales", "w13_bias", "w2_blocks", "w2_scales", "w2_bias"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), field


def craft(path: Path, header: object = None, data: bytes = b"", *, raw: bytes | None = None) -> Path:
    """A safetensors file by hand: <u64 LE header length><header bytes><data>."""
    blob = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


@contextmanager
def no_hang(seconds: int = 10):
    """Fail (instead of hanging the suite) if the body blocks, e.g. on a FIFO."""
    def boom(signum, frame):
        raise AssertionError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


X = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
Y1 = {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}


# --------------------------------------------------------------------------- safetensors I/O


def test_round_trip_all_dtypes(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "bf16": torch.randn(3, 5, generator=g).to(torch.bfloat16),
        "u8": torch.randint(0, 256, (2, 3, 16), generator=g, dtype=torch.uint8),
        "f32": torch.randn(7, generator=g),
        "f16": torch.randn(2, 2, generator=g).half(),
        "i64": torch.arange(-3, 3),
        "bool": torch.tensor([True, False, True]),
        **({"fp8": torch.randn(4, generator=g).to(torch.float8_e4m3fn)} if ST_FLOAT8 else {}),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "strided": torch.arange(12.0).reshape(3, 4).T,  # non-contiguous input
    }
    path = save_tensors(tmp_path / "t.safetensors", tensors, {"format": "pt"})
    back = load_tensors(path)
    assert set(back) == set(tensors) and set(tensor_names(path)) == set(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
        assert torch.equal(back[name].view(torch.uint8) if t.dtype == torch.float8_e4m3fn else back[name],
                           t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t), name
    # what we write is what the safetensors package reads, metadata included
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    assert torch.equal(load_file(str(path))["u8"], tensors["u8"])
    assert set(load_tensors(path, ["u8", "scalar"])) == {"u8", "scalar"}
    assert not list(tmp_path.glob("*.tmp"))


def test_writer_follows_the_spec_byte_layout(tmp_path):
    path = save_tensors(tmp_path / "t.safetensors",
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


def test_writer_replaces_atomically_and_keeps_mapped_tensors_valid(tmp_path):
    path = save_tensors(tmp_path / "t.safetensors", {"x": torch.full((1024,), 3.0)})
    old = load_tensors(path)["x"]  # memory-mapped from the first version
    save_tensors(path, {"x": torch.full((16,), 5.0)})
    assert float(old.sum()) == 3.0 * 1024 and load_tensors(path)["x"].tolist() == [5.0] * 16


def test_writer_refusals(tmp_path):
    with pytest.raises(KernelInputError):
        save_tensors(tmp_path / "t.safetensors", {"__metadata__": torch.zeros(1)})
    with pytest.raises(KernelInputError):
        save_tensors(tmp_path / "t.safetensors", {"x": [1, 2]})
    base = torch.zeros(4)
    with pytest.raises(KernelInputError):  # two overlapping views of one storage
        save_tensors(tmp_path / "t.safetensors", {"a": base[:3], "b": base[1:]})
    save_tensors(tmp_path / "t.safetensors", {"a": base[:2], "b": base[2:]})  # disjoint views are fine
    with pytest.raises(ConfigError):
        save_tensors(tmp_path / "no" / "such" / "t.safetensors", {"x": torch.zeros(1)})
    assert not list(tmp_path.glob("*.tmp"))


def test_reader_accepts_a_hand_built_file(tmp_path):
    header = {"__metadata__": {"k": "v"}, "x": X, "y": {"dtype": "I16", "shape": [], "data_offsets": [8, 10]}}
    path = craft(tmp_path / "hand.safetensors", header, struct.pack("<ffh", 1.5, -3.0, -7))
    t = load_tensors(path)
    assert t["x"].tolist() == [1.5, -3.0] and t["y"].item() == -7 and t["y"].dtype == torch.int16


def test_reader_accepts_what_safetensors_accepts(tmp_path):
    """No dtype list of our own: what the installed package reads is read (the old reader refused
    F8_E4M3FNUZ / F8_E5M2FNUZ, which safetensors >= 0.8 stores); what it refuses is a ConfigError."""
    fnuz = craft(tmp_path / "fnuz.safetensors", {"a": {"dtype": "F8_E4M3FNUZ", "shape": [2], "data_offsets": [0, 2]},
                                                  "b": {"dtype": "F8_E5M2FNUZ", "shape": [2], "data_offsets": [2, 4]}},
                 bytes([0x38, 0x40, 0x3C, 0x40]))
    e8m0 = craft(tmp_path / "e8m0.safetensors", {"c": {"dtype": "F8_E8M0", "shape": [1], "data_offsets": [0, 1]}},
                 bytes([127]))
    if ST_FNUZ:
        t = load_tensors(fnuz)
        assert t["a"].dtype == torch.float8_e4m3fnuz and t["b"].dtype == torch.float8_e5m2fnuz
        assert t["a"].view(torch.uint8).tolist() == [0x38, 0x40]
    else:
        with pytest.raises(ConfigError):
            load_tensors(fnuz)
    if ST_E8M0:
        c = load_tensors(e8m0)["c"]
        assert c.dtype == torch.float8_e8m0fnu and c.float().item() == 1.0
    else:
        with pytest.raises(ConfigError):
            load_tensors(e8m0)
    # trailing blanks in the header are the spec's padding
    t = load_tensors(craft(tmp_path / "pad.safetensors", raw=json.dumps({"x": X}).encode() + b"    ",
                           data=bytes(8)))
    assert t["x"].tolist() == [0.0, 0.0]


def _dup(entry_a: dict, entry_b: dict) -> bytes:
    return b'{"x":' + json.dumps(entry_a).encode() + b',"x":' + json.dumps(entry_b).encode() + b'}'


# name -> (header object or raw header bytes, data, the tensor the error names or None)
MALFORMED = {
    "overlapping": ({"x": X, "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8), "y"),
    "aliased": ({"x": X, "y": X}, bytes(8), ("x", "y")),  # which one is "second" is the package's choice
    "gap": ({"x": X, "y": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}, bytes(16), "y"),
    "trailing_data": ({"x": X}, bytes(12), None),
    "header_with_data_after_it": (json.dumps({"x": X}).encode() + b"garbage", bytes(8), None),
    "second_json_value_in_header": (json.dumps({"x": X}).encode() + b"{}", bytes(8), None),
    "duplicate_key_same_entry": (_dup(X, X), bytes(8), "x"),
    "duplicate_key_other_dtype": (_dup(X, dict(X, dtype="I32")), bytes(8), "x"),
    "duplicate_key_other_offsets": (_dup(X, dict(X, data_offsets=[8, 16])), bytes(16), "x"),
    "duplicate_metadata_key": (b'{"__metadata__":{"a":"1","a":"2"},"x":' + json.dumps(X).encode() + b"}",
                               bytes(8), "a"),
    "metadata_list": ({"__metadata__": [1], "x": X}, bytes(8), None),
    "metadata_string": ({"__metadata__": "pt", "x": X}, bytes(8), None),
    "metadata_int_value": ({"__metadata__": {"a": 1}, "x": X}, bytes(8), None),
    "lone_surrogate_name": (b'{"\\ud800":' + json.dumps(X).encode() + b"}", bytes(8), None),
    "deep_header": (b'{"x":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}", b"", None),
    "deep_metadata": (b'{"__metadata__":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"", None),
    "overflowing_shape": ({"x": {"dtype": "F32", "shape": [2 ** 62, 2 ** 62], "data_offsets": [0, 8]}},
                          bytes(8), None),
    "huge_offsets": ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [2 ** 64 - 8, 2 ** 64]}},
                     bytes(8), None),
    "offset_beyond_u64": ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 2 ** 70]}}, bytes(8), None),
    "5000_digit_shape": (b'{"x":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,8]}}',
                         bytes(8), None),
    "5000_digit_ignored_field": (b'{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"note":'
                                 + b"9" * 5000 + b"}}", bytes(8), None),
    "5000_digit_entry": (b'{"zz":' + b"9" * 5000 + b',"x":' + json.dumps(X).encode() + b"}", bytes(8), None),
    "negative_shape": ({"x": dict(X, shape=[-2])}, bytes(8), None),
    "unknown_dtype": ({"x": dict(X, dtype="F128")}, bytes(8), None),
    "size_mismatch": ({"x": dict(X, shape=[5])}, bytes(8), None),
    "truncated_data": ({"x": X}, bytes(5), None),
    "missing_offsets": ({"x": {"dtype": "F32", "shape": [2]}}, bytes(8), None),
    "not_an_object": (b"[1, 2]", b"", None),
    "empty_header": (b"", b"", None),
    "bad_json": (b"{" * 64, b"", None),
    "bad_utf8": (b'{"\xff":1}', b"", None),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_config_errors_naming_the_file(tmp_path, case):
    header, data, tensor = MALFORMED[case]
    path = tmp_path / "bad.safetensors"
    if isinstance(header, bytes):
        craft(path, raw=header, data=data)
    else:
        craft(path, header, data)
    for read in (tensor_names, load_tensors):
        with pytest.raises(ConfigError) as err:
            read(path)
        assert type(err.value) is ConfigError
        names = (tensor,) if isinstance(tensor, str) else tensor
        want = {str(path)} if tensor is None else {f"{path}:{t}" for t in names}
        assert err.value.path in want, err.value
        assert len(str(err.value)) < 1000  # a 5000-digit number is not echoed whole


@pytest.mark.parametrize("case", ["short", "empty", "huge_header_length", "header_length_past_eof"])
def test_broken_framing(tmp_path, case):
    path = tmp_path / "bad.safetensors"
    path.write_bytes({"short": b"\1\2\3", "empty": b"", "huge_header_length": struct.pack("<Q", 2 ** 63) + b"{}",
                      "header_length_past_eof": struct.pack("<Q", 4096) + b"{}"}[case])
    with pytest.raises(ConfigError) as err:
        load_tensors(path)
    assert err.value.path == str(path)


def test_missing_tensor_and_missing_file(tmp_path):
    path = save_tensors(tmp_path / "t.safetensors", {"x": torch.zeros(1)})
    with pytest.raises(ConfigError) as err:
        load_tensors(path, ["nope"])
    assert err.value.path == f"{path}:nope"
    with pytest.raises(ConfigError) as err:
        load_tensors(tmp_path / "absent.safetensors")
    assert err.value.path == str(tmp_path / "absent.safetensors")
    with pytest.raises(KernelInputError) as err:
        load_tensors(path, device="no-such-device")
    assert err.value.tensor == "device"


def test_non_regular_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    folder = tmp_path / "dir.safetensors"
    folder.mkdir()
    with no_hang():
        for path, kind in ((fifo, "a FIFO"), (folder, "a folder"), (Path("/dev/null"), "a device")):
            with pytest.raises(ConfigError) as err:
                load_tensors(path)
            assert err.value.got == kind and err.value.path == str(path)
            with pytest.raises(ConfigError):
                load_gpt_oss_layer(path, 0)


def test_loading_maps_instead_of_copying(tmp_path):
    """Peak RSS of loading a 256 MiB tensor stays far below its size (the old reader: ~2x).

    tracemalloc does not see a memory map; ru_maxrss of a fresh process does.
    """
    n = 256 << 20
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.full((n,), 7, dtype=torch.uint8)}, str(path))
    code = textwrap.dedent(f"""
        import resource, torch
        from oracle.kernels.safetensors_io import load_tensors
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = load_tensors({str(path)!r}, ["w"])["w"]
        assert t.numel() == {n} and int(t[-1]) == 7
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert int(out.stdout.strip()) < n // 4, out.stdout


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
    names = set(tensor_names(root / "model.safetensors"))
    assert "model.layers.1.mlp.experts.gate_up_proj_blocks" in names
    assert "model.layers.0.mlp.experts.down_proj_bias" in names
    with safe_open(str(root / "model.safetensors"), framework="pt") as f:  # readable by the package itself
        assert f.metadata() == {"format": "pt"} and set(f.keys()) == names


def test_sharded_checkpoint_uses_the_index(tmp_path):
    root = write_random_gpt_oss_checkpoint(tmp_path, 3, num_experts=E, hidden=H, intermediate=I, seed=0,
                                           shards=3, bias=False)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3
    _same_layer(load_gpt_oss_layer(root, 2), random_gpt_oss_layer(E, H, I, seed=2, bias=False))
    # A stray file that the index does not mention must not be consulted.
    save_file({HF_TENSOR_NAMES["w13_blocks"].format(layer=7): torch.zeros(1)}, str(root / "stray.safetensors"))
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 7)
    assert err.value.path.endswith("model.safetensors.index.json:model.layers.7.mlp.experts.gate_up_proj_blocks")
    # A shard named by the index but missing on disk.
    victim = index["weight_map"][HF_TENSOR_NAMES["w2_scales"].format(layer=0)]
    (root / victim).unlink()
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 0)
    assert victim in err.value.path


def _index(root: Path, weight_map: dict) -> Path:
    path = root / "model.safetensors.index.json"
    path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def _sharded(tmp_path: Path) -> tuple[Path, dict]:
    root = write_random_gpt_oss_checkpoint(tmp_path / "ck", 1, num_experts=E, hidden=H, intermediate=I, shards=2)
    return root, json.loads((root / "model.safetensors.index.json").read_text())["weight_map"]


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink_out"])
def test_index_shards_must_stay_inside_the_folder(tmp_path, where):
    root, wm = _sharded(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    name = HF_TENSOR_NAMES["w13_blocks"].format(layer=0)
    # a perfectly valid shard, only in the wrong place
    os.replace(root / wm[name], outside / "x.safetensors")
    if where == "dotdot":
        wm = {n: ("../elsewhere/x.safetensors" if f == wm[name] else f) for n, f in wm.items()}
    elif where == "absolute":
        wm = {n: (str(outside / "x.safetensors") if f == wm[name] else f) for n, f in wm.items()}
    else:
        (root / wm[name]).symlink_to(outside / "x.safetensors")
    index = _index(root, wm)
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 0)
    assert err.value.path == f"{index}:weight_map"
    assert "inside" in err.value.constraint


def test_index_symlinked_out_of_the_folder_is_refused(tmp_path):
    root, wm = _sharded(tmp_path)
    index = root / "model.safetensors.index.json"
    os.replace(index, tmp_path / "index.json")
    index.symlink_to(tmp_path / "index.json")
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 0)
    assert err.value.path == str(index) and "inside" in err.value.constraint


def test_symlink_inside_the_folder_is_followed(tmp_path):
    root, wm = _sharded(tmp_path)
    first = sorted(set(wm.values()))[0]
    os.replace(root / first, root / "real.safetensors")
    (root / first).symlink_to("real.safetensors")
    _same_layer(load_gpt_oss_layer(root, 0), random_gpt_oss_layer(E, H, I, seed=0))


def test_glob_shards_must_stay_inside_the_folder(tmp_path):
    root, wm = _sharded(tmp_path)
    (root / "model.safetensors.index.json").unlink()
    outside = tmp_path / "elsewhere.safetensors"
    save_file({"z": torch.zeros(1)}, str(outside))
    (root / "zz.safetensors").symlink_to(outside)
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 0)
    assert err.value.path == str(root / "zz.safetensors") and "inside" in err.value.constraint


@pytest.mark.parametrize("kind", ["fifo_in_glob", "fifo_in_index", "fifo_index", "folder_in_glob"])
def test_non_regular_shards_are_refused_without_blocking(tmp_path, kind):
    root, wm = _sharded(tmp_path)
    index = root / "model.safetensors.index.json"
    if kind == "fifo_in_glob":
        index.unlink()
        os.mkfifo(root / "zz.safetensors")
        bad = str(root / "zz.safetensors")
    elif kind == "fifo_in_index":
        shard = sorted(set(wm.values()))[0]
        (root / shard).unlink()
        os.mkfifo(root / shard)
        bad = str(root / shard)
    elif kind == "fifo_index":
        index.unlink()
        os.mkfifo(index)
        bad = str(index)
    else:
        index.unlink()
        (root / "zz.safetensors").mkdir()
        bad = str(root / "zz.safetensors")
    with no_hang():
        with pytest.raises(ConfigError) as err:
            load_gpt_oss_layer(root, 0)
    assert err.value.path.startswith(bad), err.value


@pytest.mark.parametrize("text, path_suffix", [
    ('{"weight_map": [1, 2]}', ":weight_map"),
    ("{not json", ""),
    ('{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}', ".a"),
    ('{"weight_map": {}, "metadata": {"total_size": ' + "9" * 5000 + "}}", ""),
    ('{"weight_map": {"a": 3}}', ":weight_map"),
    ('[' * 100_000 + ']' * 100_000, ""),
    ("[1]", ":weight_map"),
])
def test_malformed_index(tmp_path, text, path_suffix):
    root, _ = _sharded(tmp_path)
    index = root / "model.safetensors.index.json"
    index.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 0)
    assert err.value.path == f"{index}{path_suffix}"


def test_index_not_utf8_or_too_large(tmp_path):
    root, _ = _sharded(tmp_path)
    index = root / "model.safetensors.index.json"
    index.write_bytes(b'{"weight_map": {"\xff": "x"}}')
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 0)
    assert err.value.path == str(index)
    with open(index, "wb") as f:  # sparse: 65 MiB without writing them
        f.truncate(65 << 20)
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 0)
    assert err.value.path == str(index) and "bytes" in err.value.constraint


def test_folder_of_shards_without_index(tmp_path):
    root = write_random_gpt_oss_checkpoint(tmp_path, 2, num_experts=E, hidden=H, intermediate=I, seed=5, shards=2)
    (root / "model.safetensors.index.json").unlink()
    _same_layer(load_gpt_oss_layer(root, 1), random_gpt_oss_layer(E, H, I, seed=6))
    files, where = checkpoint_tensor_files(root)
    assert where == root and len(set(files.values())) == 2
    # the same tensor in two files and no index to say which one counts
    name = HF_TENSOR_NAMES["w2_bias"].format(layer=1)
    save_file({name: torch.zeros(E, H, dtype=torch.bfloat16)}, str(root / "zz-extra.safetensors"))
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(root, 1)
    assert err.value.path == f"{root}:{name}"


def test_original_gpt_oss_names(tmp_path):
    w = random_gpt_oss_layer(E, H, I, seed=11)
    tensors = {pattern.format(layer=4): getattr(w, field) for field, pattern in ORIGINAL_TENSOR_NAMES.items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
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
    tensors = {k: v.clone() for k, v in load_file(str(root / "model.safetensors")).items()}
    tensors["model.layers.0.mlp.experts.down_proj_scales"] = torch.zeros(E, H, 1, dtype=torch.uint8)
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(tmp_path / "bad.safetensors", 0)
    assert err.value.path == f"{tmp_path / 'bad.safetensors'}:model.layers.0.mlp.experts.down_proj_scales"
    # Blocks without their scales.
    del tensors["model.layers.0.mlp.experts.down_proj_scales"]
    save_file(tensors, str(tmp_path / "bad2.safetensors"))
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(tmp_path / "bad2.safetensors", 0)
    assert err.value.path.endswith(":model.layers.0.mlp.experts.down_proj_scales")
    with pytest.raises(ConfigError):
        load_gpt_oss_layer(tmp_path / "nowhere", 0)
    with pytest.raises(ConfigError):
        load_gpt_oss_layer("bad\0path", 0)


def test_odd_tensor_names_do_not_escape_as_value_error(tmp_path):
    save_file({"model.layers.x.mlp.experts.gate_up_proj_blocks": torch.zeros(1),
               "model.layers.3.mlp.experts.gate_up_proj_blocks": torch.zeros(1)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError) as err:
        load_gpt_oss_layer(tmp_path, 0)
    assert "3..3" in err.value.fix


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


def test_check_finite_names_the_tensor_and_honours_the_expert_subset():
    w = random_gpt_oss_layer(E, H, I, seed=2)
    assert w.check_finite() is w and w.check_finite([]) is w
    for name in ("w13_scales", "w2_scales", "w13_bias", "w2_bias"):
        t = getattr(w, name).clone()
        t[2, 0] = 255 if t.dtype == torch.uint8 else float("nan") if name == "w13_bias" else float("inf")
        bad = _broken(w, **{name: t})
        with pytest.raises(KernelInputError) as err:
            bad.check_finite()
        assert err.value.tensor == name
        with pytest.raises(KernelInputError):
            bad.check_finite(torch.tensor([0, 2]))
        bad.check_finite([0, 1, 3])  # expert 2 not asked about


def test_random_layer_is_deterministic_and_checks_sizes():
    _same_layer(random_gpt_oss_layer(2, 32, 32, seed=9), random_gpt_oss_layer(2, 32, 32, seed=9))
    assert not torch.equal(random_gpt_oss_layer(2, 32, 32, seed=9).w13_blocks,
                           random_gpt_oss_layer(2, 32, 32, seed=10).w13_blocks)
    assert random_gpt_oss_layer(2, 32, 32, seed=9, bias=False).w2_bias is None
    with pytest.raises(KernelInputError) as err:
        random_gpt_oss_layer(2, 48, 32, seed=0)
    assert err.value.tensor == "hidden_size"
