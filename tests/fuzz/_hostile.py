"""Shared pieces of the hostile-input fuzz suites (``tests/fuzz/test_fuzz_hostile_*.py``).

Every class of hostile input that tests/test_hostile_input.py, tests/kernels/test_checkpoint.py
and tests/kernels/test_input_checks.py pin with one example is *generated* here, at the
``ci`` profile's 10 000 examples per entry point.  The contract each test checks:

* the only exceptions are the documented :class:`oracle.OracleError` subclasses, and the
  right one for the input (:func:`expect`) -- never TypeError, ValueError, KeyError,
  RecursionError, UnicodeError, OSError, OverflowError, ...;
* nothing blocks (:func:`no_hang` fails an example that takes longer than its bound);
* on the CLI: exit status 0 or 2, nothing raised, no ``Traceback``, and no raw terminal
  control character in anything written (:func:`raw_controls`).

Each test counts the examples that really reached its hostile path with
:class:`Floor` (the ``NonTrivial`` / ``AtLeast`` floor of tests/nontrivial.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nontrivial import NonTrivial

from oracle.errors import (ActivationConflict, ConfigError, KernelInputError, MatrixError,
                           NoEligibleBackend, OracleError, UnknownBackend, UnknownQuantKey)

__all__ = ["DOCUMENTED", "expect", "Floor", "no_hang", "raw_controls", "CONTROL_CHARS",
           "NON_ASCII_DIGITS", "huge_digit_strings", "capture_cli", "clear_folder",
           "ORACLE_ERROR_NAMES"]

#: The error classes the project documents (oracle.errors); KernelUnavailable (an
#: OracleError of oracle.kernels.adapters) is named by the kernel tests where documented.
DOCUMENTED = (ConfigError, UnknownQuantKey, UnknownBackend, ActivationConflict,
              NoEligibleBackend, MatrixError, KernelInputError)
ORACLE_ERROR_NAMES = {c.__name__ for c in DOCUMENTED} | {"KernelUnavailable", "GroupError",
                                                         "GroupDivergence", "OracleError"}


def _short(exc: BaseException) -> str:
    try:
        text = repr(exc)
    except Exception:  # noqa: BLE001 - a repr that itself fails is still reported
        text = f"<{type(exc).__name__}: unprintable>"
    return text if len(text) <= 300 else text[:297] + "..."


def expect(exc: BaseException, *allowed: type[BaseException], exact: bool = False) -> None:
    """``exc`` is one of ``allowed`` (exactly that class with ``exact``): the only
    exceptions an entry point may raise for the input at hand."""
    ok = type(exc) in allowed if exact else isinstance(exc, allowed)
    names = "/".join(c.__name__ for c in allowed)
    assert ok, f"{type(exc).__name__} escaped where only {names} is documented: {_short(exc)}"
    assert isinstance(exc, OracleError)
    assert str(exc), "empty error message"


class Floor(NonTrivial):
    """The ``NonTrivial`` floor of tests/nontrivial.py (``AtLeast`` in _fuzz_common): at
    least ``fraction`` of the examples reached the hostile path.

    ``examples`` defaults to the active profile's ``max_examples``; the one test that
    overrides ``max_examples`` passes its own.  ``add(hit)`` counts only when ``hit``.
    """

    def __init__(self, what: str, fraction: float, examples: int | None = None) -> None:
        super().__init__(what, fraction)
        self.examples = examples

    @property
    def minimum(self) -> int:
        if self.examples is None:
            return super().minimum
        return max(1, int(self.examples * self.fraction))

    def add(self, hit: bool = True) -> None:
        if hit:
            super().add()

    def check(self) -> None:
        assert self.count >= self.minimum, (
            f"only {self.count} examples reached {self.what!r}; need at least {self.minimum} "
            f"({self.fraction:.0%} of the examples)")


class _Hung(BaseException):
    """Raised by the alarm; a BaseException, so no ``except Exception`` in the code under
    test can turn a hang into an ordinary error."""


@contextlib.contextmanager
def no_hang(seconds: float = 5.0, what: str = "the call") -> Iterator[None]:
    """Fail (an AssertionError, so Hypothesis shrinks it) instead of blocking the suite."""
    def boom(signum: int, frame: Any) -> None:
        raise _Hung

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Hung:
        raise AssertionError(f"{what} blocked for more than {seconds} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


#: Raw C0 and C1 control characters (and DEL); "\n" is the one a message may contain.
_RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
#: What the generators inject: C0 (ESC, BEL, BS, CR, NUL, TAB...), DEL and C1 (CSI, NEL, OSC).
CONTROL_CHARS = ["\x1b", "\x07", "\x08", "\r", "\x00", "\t", "\x0b", "\x0c", "\x1c", "\x1f",
                 "\x7f", "\x85", "\x9b", "\x9d", "\x90", "\x1b[31m", "\x1b]0;pwned\x07",
                 "\x9b2J"]


def raw_controls(text: str) -> list[str]:
    """The raw control characters in ``text`` (with some context), [] when clean."""
    return [repr(text[max(0, m.start() - 20):m.end() + 20]) for m in _RAW_CONTROL.finditer(text)]


#: Digits that str.isdigit() / \\d accept but PEP 440 does not: superscripts, Arabic-Indic,
#: Extended Arabic-Indic, Devanagari, Bengali, Thai, full-width, mathematical bold.
NON_ASCII_DIGITS = [*"²³¹⁰⁴٠١٢٣٤٥٦٧٨٩۰۵۹०५९০৯๐๙", *"０１２３４５６７８９",
                    "\U0001d7ce", "\U0001d7d7"]


def huge_digit_strings(st: Any) -> Any:
    """4 000 - 6 000 digit numbers (around CPython's 4 300-digit int/str conversion limit)."""
    return st.tuples(st.integers(4000, 6000), st.sampled_from("1975")).map(lambda t: t[1] * t[0])


@contextlib.contextmanager
def capture_cli(encoding: str | None = None) -> Iterator[tuple[Any, Any]]:
    """``sys.stdout`` / ``sys.stderr`` replaced for an in-process ``oracle.cli.main``.

    ``encoding=None``: StringIO (nothing can fail to encode).  Otherwise a strict
    ``TextIOWrapper`` over a BytesIO in that encoding, as a terminal or pipe would be
    (``main`` is expected to reconfigure it to escape what it cannot encode).
    """
    if encoding is None:
        out, err = io.StringIO(), io.StringIO()
    else:
        out = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="strict", newline="\n")
        err = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="strict", newline="\n")
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = saved


def read_back(stream: Any, encoding: str | None) -> str:
    """What a :func:`capture_cli` stream received, decoded strictly in its encoding."""
    if encoding is None:
        return stream.getvalue()
    stream.flush()
    return stream.buffer.getvalue().decode(encoding, errors="strict")


def clear_folder(folder: Path) -> None:
    """Empty ``folder`` (FIFOs, symlinks, sub-folders too) without following links."""
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def fast_tmp(tmp_path: Path) -> Path:
    """A scratch folder in memory (/dev/shm) when the machine has one, else ``tmp_path``:
    the file-system suites write, link and remove thousands of files per test.  The caller
    removes it (see the ``scratch`` fixture of the suites)."""
    import tempfile
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="oracle-fuzz-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="oracle-fuzz-", dir=tmp_path))
