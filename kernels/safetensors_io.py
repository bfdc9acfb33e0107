"""safetensors files through the ``safetensors`` package, every failure in the project's error family.

Why a wrapper and not a reader of our own: the ``safetensors`` package validates
the format (header size and JSON, dtypes, shapes, offsets that cover the data
section exactly once -- no overlaps, aliases, gaps or trailing bytes, bounded
nesting, integers that fit) and memory-maps the data, so loading a 1 GiB tensor
costs no copy.  What this module adds:

* only regular files are opened: a FIFO, device or folder named ``*.safetensors``
  is refused before ``safetensors`` sees the path (opening a FIFO blocks);
* a tensor name given twice in the header is refused (``safetensors`` keeps the
  last entry silently, another reader may keep the first);
* every failure -- :class:`safetensors.SafetensorError`, ``OSError`` and anything
  else raised on a malformed file -- becomes a :class:`~oracle.errors.ConfigError`
  whose ``path`` is the file, or ``<file>:<tensor>`` where the tensor is known.
  Writing refuses what it cannot store with a :class:`~oracle.errors.KernelInputError`.

Tensors come back memory-mapped (copy-on-write): rewriting a file in place while
its tensors are alive is undefined, which is why :func:`save_tensors` writes a
new file and renames it over the old one.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from oracle.config import load_json
from oracle.errors import ConfigError, KernelInputError, escape

__all__ = ["tensor_names", "load_tensors", "save_tensors", "check_regular_file"]

_FIX = "the file is truncated, corrupt or not safetensors: re-download or re-export it"
_TENSOR_IN_MESSAGE = re.compile(r"for tensor `(.*)`|InvalidOffset\(\"(.*)\"\)")


def check_regular_file(path: Path, what: str | None = None) -> None:
    """ConfigError unless ``path`` (symlinks followed) is an existing regular file; never blocks."""
    what = str(path) if what is None else what
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ConfigError(what, "an existing file", "missing", "check the path") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(what, "a readable file", type(exc).__name__, "check the path and permissions") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise ConfigError(what, "a regular file", kind, "point at the safetensors file itself")


def _mapped(path: Path, exc: BaseException, tensor: str | None = None) -> ConfigError:
    """``safetensors``' (or the OS's) failure on ``path`` as a ConfigError naming the file / tensor."""
    msg = str(exc)
    if tensor is None:
        found = _TENSOR_IN_MESSAGE.search(msg)
        tensor = next((g for g in found.groups() if g is not None), None) if found else None
    where = f"{path}:{tensor}" if tensor is not None else str(path)
    got = f"{type(exc).__name__}: {escape(msg)}"
    return ConfigError(where, "a valid safetensors file", got[:300], _FIX)


def _open(path: Path):
    check_regular_file(path)
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # SafetensorError, OSError, and whatever else a malformed file provokes
        raise _mapped(path, exc) from exc


def _check_unique_names(path: Path) -> None:
    """Refuse a header naming a tensor twice (``safetensors`` has already checked the rest).

    Called after ``safe_open`` accepted the file, so the header length is sane
    (at most 100 MB and inside the file) and the JSON is well-formed.
    """
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            raw = f.read(n)
        text = raw.decode("utf-8")
    except (OSError, ValueError, struct.error) as exc:
        raise _mapped(path, exc) from exc
    try:
        load_json(text, path=f"{path}:header")
    except ConfigError as exc:
        prefix = f"{path}:header."
        if exc.path.startswith(prefix):  # a key given twice: a tensor name or a metadata key
            raise ConfigError(f"{path}:{exc.path[len(prefix):]}", "a safetensors header naming each tensor "
                              "(and each metadata key) once", exc.got, _FIX) from None
        raise ConfigError(str(path), "a safetensors header Python's JSON reader accepts", exc.got, _FIX) from None


def _keys(path: Path, f: Any) -> tuple[str, ...]:
    """The names in an open file, each once (safetensors keeps the last of duplicates)."""
    try:
        names = tuple(f.keys())
    except Exception as exc:
        raise _mapped(path, exc) from exc
    _check_unique_names(path)
    return names


def tensor_names(path: str | os.PathLike) -> tuple[str, ...]:
    """The tensor names of one safetensors file; the file is validated."""
    path = Path(path)
    with _open(path) as f:
        return _keys(path, f)


def load_tensors(path: str | os.PathLike, names: Iterable[str] | None = None,
                 device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of one file, or only ``names``, memory-mapped (then moved to ``device``)."""
    path = Path(path)
    dev = _device(device)
    out: dict[str, torch.Tensor] = {}
    with _open(path) as f:
        have = _keys(path, f)
        wanted = list(have if names is None else names)
        known = set(have)
        for name in wanted:
            if name not in known:
                raise ConfigError(f"{path}:{name}", "a tensor present in the file", "missing",
                                  f"one of {len(have)} tensors, e.g. {sorted(have)[:3]}")
            try:
                t = f.get_tensor(name)
            except Exception as exc:
                raise _mapped(path, exc, name) from exc
            if dev.type != "cpu":
                try:
                    t = t.to(dev)
                except (RuntimeError, AssertionError) as exc:  # no such device here
                    raise KernelInputError("device", "a device this process can place tensors on", str(dev),
                                           "load on 'cpu' and move the weights later") from exc
            out[name] = t
    return out


def _device(device: object) -> torch.device:
    try:
        return torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise KernelInputError("device", "a torch device ('cpu', 'cuda', 'cuda:1', ...)", repr(device)[:80],
                               "device='cpu'") from None


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` (any device, contiguous or not) to one safetensors file, atomically.

    The data goes to ``<path>.tmp`` first and is renamed over ``path``, so tensors
    still mapped from an older version of the file stay valid.
    """
    path = Path(path)
    flat: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise KernelInputError(f"tensors[{name!r}]", "a string tensor name other than __metadata__", repr(name))
        if not isinstance(t, torch.Tensor):
            raise KernelInputError(f"tensors[{name!r}]", "a torch.Tensor", type(t).__name__)
        flat[name] = t.detach().to("cpu").contiguous()
    meta = None if metadata is None else {str(k): str(v) for k, v in metadata.items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(flat, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(str(path), "a writable file", f"{type(exc).__name__}: {exc.strerror or exc}",
                          "check the folder and its permissions") from exc
    except SafetensorError as exc:
        if "I/O error" not in str(exc) and "IoError" not in str(exc):
            raise KernelInputError("tensors", "tensors safetensors can store", f"SafetensorError: {escape(exc)}"[:300],
                                   "pass dense tensors of torch's standard dtypes") from exc
        raise ConfigError(str(path), "a writable file", escape(exc)[:300],
                          "check the folder and its permissions") from exc
    except Exception as exc:  # overlapping views of one storage, a dtype safetensors cannot store, ...
        raise KernelInputError("tensors", "distinct dense tensors of safetensors dtypes",
                               f"{type(exc).__name__}: {escape(exc)}"[:300],
                               "save each tensor from its own storage (t.clone())") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
