"""Fuzz a model folder as untrusted input: ``oracle.model.load_model_config(path)``.

One reused scratch folder; each example lays out ``config.json`` as a regular file, a FIFO
(a plain ``open`` would block), a folder, a symlink pointing outside the folder (to a valid
config, a FIFO, ``/dev/null``), a symlink inside, a dangling link, a link loop, an
oversized sparse file (past the 8 MiB cap, up to 4 GiB, nothing written), an empty or
non-UTF-8 file -- and names it as the folder, the file, the folder with ``/`` or ``/./``,
a path through a regular file, a name too long, a NUL byte.

Property: the bundled config back when the layout is benign, otherwise exactly a
ConfigError, fast: each example is bounded by an alarm (a hang fails it) and the size is
checked before reading (a sparse 4 GiB file must not be read).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from _hostile import Floor, clear_folder, expect, no_hang
from oracle import ConfigError
from oracle.model import load_model_config

_BUNDLED = Path(__file__).resolve().parents[2] / "oracle" / "models" / "gpt-oss-20b.json"
_CAP = 8 * 1024 * 1024  # oracle.model._MAX_CONFIG_BYTES

#: How config.json is laid out; the first ones are benign (a regular config is read).
_BENIGN = ["regular", "symlink_inside", "symlink_chain_inside", "at_cap"]
_HOSTILE = ["fifo", "folder", "symlink_outside", "symlink_outside_fifo", "symlink_dev_null",
            "dangling", "loop", "oversized", "huge_sparse", "empty", "not_utf8",
            "symlink_inside_to_fifo", "symlink_chain_out", "folder_with_config"]
#: How the path names it (the folder, the file, ...); the last ones can never work.
_GOOD_ARGS = ["folder", "folder_str", "file", "folder_slash", "folder_dot", "folder_dotdot"]
_BAD_ARGS = ["through_file", "too_long", "nul", "missing_folder", "missing_file", "other_name"]


def _layout(kind: str, folder: Path, outside: Path) -> None:
    cfg = folder / "config.json"
    if kind == "regular":
        os.link(outside / "config.json", cfg)
    elif kind == "symlink_inside":
        os.link(outside / "config.json", folder / "real.json")
        cfg.symlink_to("real.json")
    elif kind == "symlink_chain_inside":
        os.link(outside / "config.json", folder / "real.json")
        (folder / "hop.json").symlink_to("real.json")
        cfg.symlink_to(folder / "hop.json")
    elif kind == "at_cap":  # exactly the cap: read (the valid JSON padded with blanks)
        os.link(outside / "at_cap.json", cfg)
    elif kind == "fifo":
        os.mkfifo(cfg)
    elif kind == "folder":
        cfg.mkdir()
    elif kind == "folder_with_config":
        cfg.mkdir()
        os.link(outside / "config.json", cfg / "config.json")
    elif kind == "symlink_outside":
        cfg.symlink_to(outside / "config.json")
    elif kind == "symlink_outside_fifo":
        cfg.symlink_to(outside / "fifo")
    elif kind == "symlink_dev_null":
        cfg.symlink_to("/dev/null")
    elif kind == "dangling":
        cfg.symlink_to("nowhere.json")
    elif kind == "loop":
        cfg.symlink_to("config.json")
    elif kind == "oversized":  # sparse: one byte past the cap, nothing written
        with open(cfg, "wb") as fh:
            fh.truncate(_CAP + 1)
    elif kind == "huge_sparse":
        with open(cfg, "wb") as fh:
            fh.truncate(4 * 1024 ** 3)
    elif kind == "empty":
        cfg.write_bytes(b"")
    elif kind == "not_utf8":
        cfg.write_bytes(b'{"hidden_size": 2880, "\xff": 1}')
    elif kind == "symlink_inside_to_fifo":
        os.mkfifo(folder / "pipe")
        cfg.symlink_to("pipe")
    elif kind == "symlink_chain_out":
        (folder / "hop.json").symlink_to(outside / "config.json")
        cfg.symlink_to("hop.json")


def _argument(kind: str, folder: Path):
    return {"folder": folder, "folder_str": str(folder), "file": folder / "config.json",
            "folder_slash": f"{folder}/", "folder_dot": f"{folder}/.",
            "folder_dotdot": f"{folder}/../{folder.name}",
            "through_file": folder / "config.json" / "config.json",
            "too_long": f"{folder}/{'x' * 300}", "nul": f"{folder}\x00/config.json",
            "missing_folder": folder / "nope", "missing_file": folder / "nope.json",
            "other_name": folder / "real.json"}[kind]


def _readable(kind: str, arg_kind: str) -> bool:
    """Does the path name a regular config.json inside the folder it names?"""
    if kind in _BENIGN:
        return arg_kind in _GOOD_ARGS or (
            arg_kind == "other_name" and kind in ("symlink_inside", "symlink_chain_inside"))
    # a folder called config.json holding one: naming that file (through the folder) works
    return kind == "folder_with_config" and arg_kind in ("file", "through_file")


#: The model folder's own name: any characters a file name may hold (control characters,
#: blanks, non-ASCII, a leading dash), as users' folders do.
_folder_names = st.text(st.characters(exclude_characters="/\x00", exclude_categories=("Cs",)),
                        min_size=1, max_size=40).filter(lambda n: n not in (".", ".."))


def test_model_folders(scratch):
    root, outside = scratch / "models", scratch / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copy(_BUNDLED, outside / "config.json")
    os.mkfifo(outside / "fifo")
    data = _BUNDLED.read_bytes()
    (outside / "at_cap.json").write_bytes(data + b" " * (_CAP - len(data)))
    want = load_model_config(outside)[1]
    hostile = Floor("a hostile config.json (FIFO, folder, link out, oversized, ...)", 0.3)
    loaded = Floor("a benign layout read back", 0.1)

    # at_cap reads 8 MiB: kept rare (1 benign draw in 8)
    benign = st.sampled_from(["regular"] * 4 + ["symlink_inside", "symlink_chain_inside", "at_cap"])

    @given(st.one_of(benign, st.sampled_from(_HOSTILE), st.sampled_from(_HOSTILE)),
           st.one_of(st.sampled_from(_GOOD_ARGS), st.sampled_from(_GOOD_ARGS),
                     st.sampled_from(_BAD_ARGS)), _folder_names)
    def check(kind, arg_kind, name):
        clear_folder(root)
        folder = root / name
        folder.mkdir()
        _layout(kind, folder, outside)
        hostile.add(kind in _HOSTILE)
        arg = _argument(arg_kind, folder)
        try:
            with no_hang(2, f"load_model_config on a {kind} config.json"):
                label, cfg = load_model_config(arg)
        except Exception as exc:  # noqa: BLE001 - the property decides
            expect(exc, ConfigError, exact=True)
            assert not _readable(kind, arg_kind), (
                f"a {kind} config.json named as {arg_kind} was refused: {exc}")
            return
        assert _readable(kind, arg_kind), f"a {kind} config.json named as {arg_kind} was read"
        assert cfg == want, "read something else than the config"
        loaded.add()

    check()
    hostile.check()
    loaded.check()
