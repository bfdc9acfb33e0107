"""Fuzz the checkpoint readers: hand-built safetensors bytes, and gpt-oss checkpoint folders.

``oracle.kernels.safetensors_io.tensor_names`` / ``load_tensors`` on files crafted byte by
byte (8-byte little-endian header length + JSON header + data) from a valid one, with the
header length, offsets, shapes, dtypes, metadata, tensor names and data mutated: huge and
5 000-digit integers, duplicate keys, deep nesting, non-UTF-8 bytes, trailing bytes, gaps,
overlaps.  Property: the tensors, or exactly a ConfigError naming the file -- never
SafetensorError, a Rust panic, ValueError, RecursionError, OSError; a duplicate key or a
> 4 300-digit integer is always refused.

``oracle.kernels.checkpoint.load_gpt_oss_layer(path_or_dir, layer)`` on checkpoint folders
laid out (in one reused tmp folder) with the index or a shard as a FIFO, a folder, a
symlink pointing outside the folder, missing, oversized (sparse); ``../`` and absolute
shard paths in ``model.safetensors.index.json``; stray ``*.safetensors`` files; odd
arguments.  Property: the layer's weights when nothing hostile is consulted, otherwise
exactly a ConfigError -- and never a block (each example is bounded by an alarm).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _hostile import Floor, clear_folder, expect, huge_digit_strings, no_hang
from _json_text import parts as json_parts

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from oracle import ConfigError  # noqa: E402
from oracle.kernels.checkpoint import (MoEWeights, load_gpt_oss_layer,  # noqa: E402
                                       write_random_gpt_oss_checkpoint)
from oracle.kernels.safetensors_io import load_tensors, tensor_names  # noqa: E402

# ------------------------------------------------------------------ hand-built safetensors files

# name -> (dtype, shape, offsets), 16 bytes of data in all.
_ENTRIES = {"a": ("F32", [2], [0, 8]), "b": ("U8", [2, 3], [8, 14]), "c": ("BF16", [], [14, 16])}
_DATA = struct.pack("<ff", 1.5, -3.0) + bytes([1, 2, 3, 4, 5, 6]) + bytes([0x80, 0x3F])
_DTYPES = ["F32", "F16", "BF16", "U8", "I8", "I16", "I32", "I64", "U16", "U32", "U64", "F64",
           "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4",
           "F6_E2M3", "C64", "f32", "", "F128", "\u00e9"]
_J = json.dumps
_DTYPE_TEXT = [_J(d) for d in _DTYPES] + ["5", "null", '["F32"]', "{}"]
_BIG = "9" * 5000
_SHAPE_TEXT = ["[]", "[0]", "[-1]", "[2, 2]", "[4]", "[2147483648]", "[4611686018427387904, 4]",
               f"[{2 ** 64}]", f"[{_BIG}]", f"[{_BIG[:4000]}]", '"2"', "[2.0]", "[true]", "null",
               "[[2]]", "[2, 0]", "[0, 2]", "[1, 1, 1, 1, 1, 1, 1, 1, 1, 2]"]
_OFFSET_TEXT = ["[0, 8]", "[8, 0]", "[0, 0]", f"[0, {2 ** 64}]", f"[{2 ** 64 - 8}, {2 ** 64}]",
                "[-1, 7]", f"[0, {_BIG}]", f"[0, {_BIG[:4000]}]", "[0]", "[0, 8, 16]", '"0,8"',
                "[0.0, 8.0]", "null", "[4, 12]", "[0, 16]", "[14, 16]", "[8, 14]", "[16, 24]",
                f"[0, {2 ** 70}]"]
_NAMES = ["a", "b", "c", "d", "", "\x00", "\u00e9", "\\ud800", "a" * 1000, "__metadata__", "x.y"]
_METADATA = [(m, frozenset()) for m in (
    "{}", '{"format": "pt"}', '{"a": 1}', "[1]", '"pt"', "null", f'{{"format": {_BIG}}}',
    '{"a": ' * 2000 + "1" + "}" * 2000, '{"\\u0000": "\\u001b"}')] + [
    ('{"a": "1", "a": "2"}', frozenset({"dup"}))]


def _header_entry(dtype: str, shape: str, offsets: str, extra: str = "") -> str:
    return f'{{"dtype": {dtype}, "shape": {shape}, "data_offsets": {offsets}{extra}}}'


def _quoted(name: str) -> str:
    """A tensor name as JSON; a name written as an escape (``\\ud800``) goes in as is."""
    return f'"{name}"' if name.startswith("\\") else json.dumps(name)


_HUGE_INT = re.compile(r"(?<![0-9.])[0-9]{4301,}(?![0-9.eE])")
_FRAMING_KEPT = ({0, 1, 2}, {0, 1}, {0, 1, 2})  # length, padding, data choices that keep the file


def _file(t) -> tuple[bytes, frozenset[str]]:
    """A crafted file from the mutations drawn; tags: "dup" and "huge_int" (always refused),
    "changed" (anything may happen; without it the file is the valid original)."""
    mutations, framing = t
    entries = {n: [_J(d), _J(s), _J(o), ""] for n, (d, s, o) in _ENTRIES.items()}
    extra_tags: dict[str, frozenset[str]] = {}
    order = list(entries)
    metadata = None
    dup: list[tuple[str, str]] = []
    tags: set[str] = set()
    for op, name, (value, vtags) in mutations:
        tags.add("changed")
        if op in ("dtype", "shape", "offsets") and name in entries:
            entries[name][("dtype", "shape", "offsets").index(op)] = value
        elif op == "extra" and name in entries:
            entries[name][3] = f', "note": {value}'
            extra_tags[name] = vtags
        elif op == "metadata":
            metadata = value, vtags
        elif op == "drop" and name in entries:
            order.remove(name)
            del entries[name]
            extra_tags.pop(name, None)
        elif op == "add" and name not in entries:
            entries[name] = [_J("U8"), "[2]", value, ""]
            order.append(name)
        elif op == "dup" and name in entries:
            dup.append((name, _header_entry(*entries[name])))
    pairs = [(n, _header_entry(*entries[n])) for n in order] + dup
    if metadata is not None:
        pairs.insert(0, ("__metadata__", metadata[0]))
        tags |= metadata[1] & {"dup"}
    for t in extra_tags.values():
        tags |= t & {"dup"}
    if len({n for n, _ in pairs}) != len(pairs):
        tags.add("dup")
    text = "{" + ", ".join(f"{_quoted(n)}: {v}" for n, v in pairs) + "}"
    if _HUGE_INT.search(text):
        tags.add("huge_int")
    header = text.encode("utf-8", "surrogatepass")
    length_op, pad_op, data_op = framing
    header += [b"", b"    ", b" garbage", b"{}", b"\xff", b"\x00"][pad_op]
    n = len(header)
    length = [n, n, n, 0, 1, n - 1, n + 1, 2 ** 63, 2 ** 64 - 1, 100_000_001, n + len(_DATA)][length_op]
    data = [_DATA, _DATA, _DATA, _DATA[:5], _DATA + b"\x00" * 8, b"", _DATA + b"x"][data_op]
    if any(op not in kept for op, kept in zip(framing, _FRAMING_KEPT)):
        tags.add("changed")
    return struct.pack("<Q", length) + header + data, frozenset(tags)


_NONE: frozenset[str] = frozenset()


def _plain(pool: list[str]) -> st.SearchStrategy:
    return st.sampled_from(pool).map(lambda v: (v, _NONE))


_tensor = st.sampled_from(sorted(_ENTRIES) + ["d"])
_mutation = st.one_of(
    st.tuples(st.just("dtype"), _tensor, _plain(_DTYPE_TEXT)),
    st.tuples(st.just("shape"), _tensor, _plain(_SHAPE_TEXT)),
    st.tuples(st.just("offsets"), _tensor, _plain(_OFFSET_TEXT)),
    st.tuples(st.just("extra"), _tensor, st.one_of(json_parts, huge_digit_strings(st).map(
        lambda d: (d, _NONE)))),
    st.tuples(st.just("metadata"), st.just(""), st.sampled_from(_METADATA)),
    st.tuples(st.just("drop"), _tensor, _plain([""])),
    st.tuples(st.just("add"), st.sampled_from(_NAMES), _plain(_OFFSET_TEXT)),
    st.tuples(st.just("dup"), _tensor, _plain([""])),
)
# Mostly framing left alone (the first choices), sometimes broken.
_framing = st.tuples(st.integers(0, 10), st.sampled_from([0] * 6 + [1, 2, 3, 4, 5]),
                     st.sampled_from([0] * 6 + [1, 2, 3, 4, 5, 6]))
crafted = st.tuples(st.lists(_mutation, max_size=3), _framing).map(_file)


def test_safetensors_headers(scratch):
    path = scratch / "t.safetensors"
    refused = Floor("a refused crafted file", 0.3)
    loaded = Floor("a crafted file that loads", 0.04)
    hostile = Floor("a duplicate key or a > 4300-digit integer", 0.05)

    @given(crafted)
    def check(file):
        data, tags = file
        hostile.add(bool(tags & {"dup", "huge_int"}))
        path.write_bytes(data)
        results = []
        for read in (tensor_names, load_tensors):
            try:
                with no_hang(10, read.__name__):
                    results.append(read(path))
            except Exception as exc:  # noqa: BLE001 - the property decides
                expect(exc, ConfigError, exact=True)
                assert exc.path == str(path) or exc.path.startswith(f"{path}:"), exc.path
                assert len(str(exc)) < 2000, "the header echoed whole"
                results.append(None)
        names, tensors = results
        if tensors is None:
            assert tags, "the valid original file was refused"
            refused.add()
            return
        assert not tags & {"dup", "huge_int"}, f"accepted a {set(tags)} header"
        assert names is not None and set(tensors) == set(names)
        assert all(isinstance(t, torch.Tensor) for t in tensors.values())
        if not tags:
            assert tensors["a"].tolist() == [1.5, -3.0] and tensors["c"].item() == 1.0
        loaded.add()

    check()
    refused.check()
    loaded.check()
    hostile.check()


# ------------------------------------------------------------------ checkpoint folders

_INDEX = "model.safetensors.index.json"
_SHARD_KINDS = ["regular", "regular", "regular", "symlink_inside", "fifo", "folder",
                "symlink_outside", "missing", "empty", "dev_null", "truncated"]
_REF_KINDS = ["plain", "plain", "plain", "dotdot_inside", "dotdot_outside", "absolute_outside",
              "absolute_inside", "etc_passwd", "empty", "nul", "long", "trailing_slash"]
_INDEX_KINDS = ["regular", "regular", "regular", "absent", "absent", "fifo", "folder",
                "symlink_inside", "symlink_outside", "oversized", "not_utf8", "malformed",
                "duplicate_key", "huge_int"]
_EXTRA_KINDS = ["none", "none", "none", "fifo", "folder", "symlink_outside", "duplicate_tensor",
                "unrelated"]
_ARGS = ["root", "root", "root", "root_path", "shard", "index", "missing", "nul", "int", "none",
         "bytes", "root_slash"]
_LAYERS = [0] * 8 + [1, -1, True, 2 ** 31, "0", 0.0, None]
_BENIGN_SHARDS = {"regular", "symlink_inside"}
_BENIGN_REFS = {"plain", "dotdot_inside", "absolute_inside", "trailing_slash"}


@pytest.fixture(scope="module")
def store(module_scratch):
    """A valid 2-shard, 1-layer tiny checkpoint (E=2, H=I=64) outside the example folder."""
    root = write_random_gpt_oss_checkpoint(module_scratch / "store" / "ck", 1,
                                           num_experts=2, hidden=64, intermediate=64, shards=2)
    weight_map = json.loads((root / _INDEX).read_text())["weight_map"]
    return root, weight_map, load_gpt_oss_layer(root, 0)


def _same(a: MoEWeights, b: MoEWeights) -> bool:
    fields = ("w13_blocks", "w13_scales", "w13_bias", "w2_blocks", "w2_scales", "w2_bias")
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in fields)


def _place_shard(kind: str, target: Path, source: Path) -> None:
    if kind == "regular":
        os.link(source, target)
    elif kind == "symlink_inside":  # to a file in a sub-folder (no *.safetensors glob sees it)
        real = target.parent / "real" / target.name
        real.parent.mkdir(exist_ok=True)
        os.link(source, real)
        target.symlink_to(f"real/{target.name}")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    elif kind == "symlink_outside":
        target.symlink_to(source)
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "dev_null":
        target.symlink_to("/dev/null")
    elif kind == "truncated":
        target.write_bytes(source.read_bytes()[:100])
    # "missing": nothing


def _reference(kind: str, shard: str, folder: Path, store_root: Path) -> str:
    return {"plain": shard, "dotdot_inside": f"sub/../{shard}",
            "dotdot_outside": os.path.relpath(store_root / shard, folder),  # a real file, outside
            "absolute_outside": str(store_root / shard), "absolute_inside": str(folder / shard),
            "etc_passwd": "/etc/passwd", "empty": "", "nul": shard + "\x00",
            "long": "x" * 300 + ".safetensors", "trailing_slash": shard + "/"}[kind]


def _layout(folder: Path, store_root: Path, weight_map: dict, plan) -> bool:
    """Build the example's checkpoint in ``folder``; True if nothing hostile is consulted."""
    index_kind, shard_kinds, ref_kinds, extra_kind = plan
    shards = sorted(set(weight_map.values()))
    for shard, kind in zip(shards, shard_kinds):
        _place_shard(kind, folder / shard, store_root / shard)
    benign = all(kind in _BENIGN_SHARDS for kind in shard_kinds)
    if index_kind == "absent":  # the *.safetensors glob decides: each tensor in one file
        extra = folder / "zz-extra.safetensors"
        if extra_kind == "duplicate_tensor":  # shard 0 again, under another name
            os.link(store_root / shards[0], extra)
        elif extra_kind == "unrelated":  # a valid file with no tensors
            extra.write_bytes(struct.pack("<Q", 2) + b"{}")
        elif extra_kind != "none":
            _place_shard(extra_kind, extra, store_root / shards[0])
        ok = [k in _BENIGN_SHARDS for k in shard_kinds]
        bad = any(k not in _BENIGN_SHARDS | {"missing"} for k in shard_kinds)
        covered = (ok[0] or extra_kind == "duplicate_tensor") and ok[1]
        twice = ok[0] and extra_kind == "duplicate_tensor"
        return not bad and covered and not twice and extra_kind in (
            "none", "unrelated", "duplicate_tensor")
    refs = {s: _reference(k, s, folder, store_root) for s, k in zip(shards, ref_kinds)}
    benign &= all(k in _BENIGN_REFS for k in ref_kinds)
    doc = {"metadata": {"total_size": 1}, "weight_map": {n: refs[f] for n, f in weight_map.items()}}
    text = json.dumps(doc)
    index = folder / _INDEX
    if index_kind in ("regular", "symlink_inside"):
        real = index if index_kind == "regular" else folder / "real-index.json"
        real.write_text(text)
        if index_kind == "symlink_inside":
            index.symlink_to(real.name)
        return benign
    if index_kind == "fifo":
        os.mkfifo(index)
    elif index_kind == "folder":
        index.mkdir()
    elif index_kind == "symlink_outside":
        index.symlink_to(store_root / _INDEX)
    elif index_kind == "oversized":
        with open(index, "wb") as fh:  # sparse: nothing is written
            fh.truncate((64 << 20) + 1)
    elif index_kind == "not_utf8":
        index.write_bytes(text.encode()[:-2] + b"\xff}")
    elif index_kind == "malformed":
        index.write_text(text[: len(text) // 2])
    elif index_kind == "duplicate_key":
        index.write_text(text[:-1] + ', "weight_map": {}}')
    elif index_kind == "huge_int":
        index.write_text(text.replace('"total_size": 1', '"total_size": ' + "7" * 5000))
    return False


def _argument(kind: str, folder: Path, weight_map: dict):
    shard = sorted(set(weight_map.values()))[0]
    return {"root": str(folder), "root_path": folder, "shard": folder / shard,
            "index": folder / _INDEX, "missing": folder / "nope", "nul": f"{folder}\x00x",
            "int": 5, "none": None, "bytes": os.fsencode(folder),
            "root_slash": str(folder) + "/"}[kind]


def _plan(index, shard, ref, extra, arg, layer) -> st.SearchStrategy:
    return st.tuples(st.sampled_from(index), st.tuples(*[st.sampled_from(shard)] * 2),
                     st.tuples(*[st.sampled_from(ref)] * 2), st.sampled_from(extra),
                     st.sampled_from(arg), st.sampled_from(layer))


# Anything (3 in 4), or a layout with nothing hostile in it (1 in 4: the success path).
_plans = st.one_of(
    _plan(_INDEX_KINDS, _SHARD_KINDS, _REF_KINDS, _EXTRA_KINDS, _ARGS, _LAYERS),
    _plan(_INDEX_KINDS, _SHARD_KINDS, _REF_KINDS, _EXTRA_KINDS, _ARGS, _LAYERS),
    _plan(_INDEX_KINDS, _SHARD_KINDS, _REF_KINDS, _EXTRA_KINDS, _ARGS, _LAYERS),
    _plan(["regular", "symlink_inside", "absent"], sorted(_BENIGN_SHARDS), sorted(_BENIGN_REFS),
          ["none", "unrelated"], ["root", "root_path", "root_slash"], [0]),
)


def test_checkpoint_folders(module_scratch, store):
    store_root, weight_map, want = store
    folder = module_scratch / "ck"
    folder.mkdir()
    hostile = Floor("a hostile index, shard, reference or stray file", 0.3)
    loaded = Floor("a checkpoint that loads (and matches)", 0.05)
    refused = Floor("a refused checkpoint", 0.3)

    @given(_plans)
    def check(plan):
        index_kind, shard_kinds, ref_kinds, extra_kind, arg_kind, layer = plan
        clear_folder(folder)
        benign = _layout(folder, store_root, weight_map,
                         (index_kind, shard_kinds, ref_kinds, extra_kind))
        hostile.add(not benign)
        arg = _argument(arg_kind, folder, weight_map)
        try:
            with no_hang(5, "load_gpt_oss_layer"):
                got = load_gpt_oss_layer(arg, layer)
        except Exception as exc:  # noqa: BLE001 - the property decides
            expect(exc, ConfigError, exact=True)
            refused.add()
            fine = benign and layer == 0 and type(layer) is int and arg_kind in (
                "root", "root_path", "root_slash")
            assert not fine, f"a valid checkpoint was refused: {exc}"
            return
        assert isinstance(got, MoEWeights)
        assert layer == 0 and type(layer) is int, f"layer {layer!r} loaded"
        if arg_kind in ("root", "root_path", "root_slash"):
            assert benign, "a hostile checkpoint loaded"
        assert _same(got, want)
        loaded.add()

    check()
    hostile.check()
    loaded.check()
    refused.check()
