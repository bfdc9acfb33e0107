"""Reading the files a user names, safely: inside the folder they named, regular files
only, bounded in size.

A model folder is untrusted input.  Anything the project reads from it -- config.json,
checkpoint shards, the docs page it checks -- goes through here:

* :func:`resolve_inside` follows symlinks and refuses a result that leaves the folder
  (``../elsewhere/x.safetensors``, an absolute path, a symlink pointing out);
* :func:`read_regular_file` opens without blocking, refuses FIFOs, devices and
  folders (a FIFO would hang a plain ``open``), checks the size with ``fstat`` before
  reading and never reads more than the cap plus one byte.

Every refusal is a :class:`ConfigError` naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from oracle.errors import ConfigError, shown

__all__ = ["resolve_inside", "read_regular_file", "user_path"]


def user_path(value: object, what: str) -> Path:
    """A path the user typed, as a Path; a NUL byte or a non-string is a ConfigError."""
    if not isinstance(value, (str, Path)) or "\0" in str(value) or not str(value):
        raise ConfigError(what, "a file system path", shown(value)[:120], "a path without NUL bytes")
    return Path(value)


def resolve_inside(folder: Path, name: str | Path, what: str) -> Path:
    """``folder / name`` with symlinks resolved; ConfigError if it leaves ``folder``."""
    try:
        root = folder.resolve()
        target = (root / name).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # loops, NUL bytes, name too long
        raise ConfigError(what, "a resolvable path", f"{type(exc).__name__} for {str(name)!r}",
                          "check the path") from None
    if not target.is_relative_to(root):
        raise ConfigError(what, f"a file inside {str(root)!r}", shown(str(name)),
                          "keep every referenced file inside the model folder (no '..', "
                          "absolute paths or symlinks pointing out)")
    return target


def read_regular_file(path: Path, cap: int, what: str) -> bytes:
    """At most ``cap`` bytes of the regular file ``path``; ConfigError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(what, "an existing file", "missing", "check the path") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(what, "a readable file", type(exc).__name__, "check permissions") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else \
                "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
            raise ConfigError(what, "a regular file", kind, "point at the file itself")
        if info.st_size > cap:
            raise ConfigError(what, f"at most {cap} bytes", f"{info.st_size} bytes",
                              "point at the right file")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            data = fh.read(cap + 1)
    except OSError as exc:
        raise ConfigError(what, "a readable file", type(exc).__name__, "check permissions") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > cap:  # grew between fstat and read
        raise ConfigError(what, f"at most {cap} bytes", "a larger file", "point at the right file")
    return data
