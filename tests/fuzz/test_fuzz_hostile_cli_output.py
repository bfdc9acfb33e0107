"""Fuzz what the CLI writes: output encodings, closed pipes, terminal control characters.

* ``oracle.cli.main(argv)`` in-process with ``sys.stdout`` / ``sys.stderr`` replaced by strict
  ``io.TextIOWrapper(io.BytesIO(), encoding=E)`` for E in ascii, latin-1, cp1252, utf-8, on
  the argv of tests/fuzz/test_fuzz_cli.py plus argv carrying characters E cannot encode:
  exit status 0 or 2, nothing raised (a character that cannot be encoded is escaped).
* Real subprocesses (``python -m oracle.cli``) whose stdout is closed early, after 0 or 1
  lines (``| head -1``), in each encoding: exit status 0 or 2, no ``Traceback``, no
  ``BrokenPipeError``, no "Exception ignored".  A few dozen examples (``max_examples`` is
  overridden for this one test: each example is a ~0.2 s interpreter start).
* Control characters (C0, DEL, C1: ESC sequences, BEL, CR, CSI, OSC, NEL) placed in user
  values -- model paths (existing folders included), backend names, devices, libraries,
  flag values, JSON keys and values, dotted flag paths, unknown flags: every line written
  to stdout / stderr holds no raw control character but "\\n"; they appear escaped
  (``\\x1b``).  (``docs --path`` names are checked the same way in test_fuzz_hostile_docs.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _hostile import CONTROL_CHARS, Floor, capture_cli, raw_controls, read_back
from test_fuzz_cli import argvs as fuzz_cli_argvs

from oracle.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENCODINGS = ["ascii", "latin-1", "cp1252", "utf-8"]
_BUNDLED = ROOT / "oracle" / "models" / "gpt-oss-20b.json"

# ------------------------------------------------------------------ encodings (in-process)

#: Characters none of ascii, latin-1 and cp1252 can encode (utf-8 encodes everything).
_UNENCODABLE = ["\u6f22\u5b57", "\U0001f600", "\u0130", "\u0663", "\u200b", "\ufeff", "\u2192",
                "\u00e9\u0142", "\u2028"]
_VALUE_FLAGS = ["--model", "--device", "--moe-backend", "--libraries", "--quantization",
                "--target", "--quantization-config", "--quantization-config.moe.activation"]


def _with_text(t) -> list[str]:
    command, flag, base, pos, char, extra = t
    pos %= len(base) + 1
    return [command, "--device", "sm90", flag, base[:pos] + char + base[pos:], *extra]


_VALUES = ["gpt-oss-20b", "sm90", "marlin", "auto", "all", "mxfp4", "vllm-0.33",
           '{"moe": {"activation": "mxfp8"}}', "mxfp8", "flashinfer=0.7.2", "H100"]
argvs_with_text = st.tuples(
    st.sampled_from(["select", "explain"]), st.sampled_from(_VALUE_FLAGS),
    st.sampled_from(_VALUES), st.integers(0, 40), st.sampled_from(_UNENCODABLE),
    st.sampled_from([[], ["--json"], ["--libraries", "all"], ["--libraries", "none"]]),
).map(_with_text)


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def test_cli_output_encodings(hermetic_probe):
    unencodable = Floor("an argv the stream's encoding cannot encode", 0.1)
    escaped = Floor("an escaped character written to a non-UTF-8 stream", 0.05)

    # 3 in 4: an argv with a character no single-byte encoding here has; 3 in 5: not UTF-8
    @given(st.one_of(fuzz_cli_argvs, argvs_with_text, argvs_with_text, argvs_with_text),
           st.sampled_from([*ENCODINGS, "ascii"]))
    def check(argv, encoding):
        unencodable.add(not _encodable("".join(argv), encoding))
        with capture_cli(encoding) as (out, err):
            code = main(list(argv))
            stdout, stderr = read_back(out, encoding), read_back(err, encoding)
        assert code in (0, 2), code
        assert "Traceback" not in stderr
        escaped.add(encoding != "utf-8" and any(s in stdout + stderr for s in ("\\x", "\\u", "\\U")))

    check()
    unencodable.check()
    escaped.check()


# ------------------------------------------------------------------ closed pipes (subprocesses)

#: ~0.2 s each: 40 under the ci profile, 10 under dev.
_PIPE_EXAMPLES = max(5, min(40, settings().max_examples // 10))
_HEAVY = [["explain", "--device", "sm90", "--libraries", "all"], ["matrix"], ["matrix", "--json"],
          ["keys"], ["keys", "--json"], ["select", "--device", "sm100", "--libraries", "all", "--json"],
          ["explain", "--device", "sm120", "--libraries", "none", "--json"],
          ["select", "--device", "sm90", "--moe-backend", "nope"],
          ["explain", "--device", "gfx950", "--libraries", "all", "--moe-backend", "\u00e9\x1b"]]


def test_cli_closed_pipe():
    """``mxfp4-oracle ... | head -1``: the reader goes away early."""
    early = Floor("stdout closed before a line was read", 0.3, examples=_PIPE_EXAMPLES)

    # a few tokens of the fuzz_cli argv after the command (no NUL: exec refuses it)
    tail = fuzz_cli_argvs.map(lambda a: [x for x in a[:3] if "\0" not in x])

    @settings(max_examples=_PIPE_EXAMPLES)
    @given(st.sampled_from(_HEAVY), st.one_of(st.just([]), tail), st.sampled_from(ENCODINGS),
           st.sampled_from([0, 1]))
    def check(argv, extra, encoding, lines):
        env = {**os.environ, "PYTHONIOENCODING": encoding}
        proc = subprocess.Popen([sys.executable, "-m", "oracle.cli", *argv, *extra], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        try:
            for _ in range(lines):
                proc.stdout.readline()
            proc.stdout.close()  # like `| head -1` (or `| head -0`)
            err = proc.stderr.read()
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert code in (0, 2), (code, err[-2000:])
        for bad in (b"Traceback", b"BrokenPipe", b"Exception ignored"):
            assert bad not in err, err[-2000:]
        early.add(lines == 0)

    check()
    early.check()


# ------------------------------------------------------------------ control characters


@pytest.fixture(scope="module")
def control_folders(module_scratch):
    """Model folders whose names hold control characters, each with a valid config.json."""
    made = []
    for i, c in enumerate(CONTROL_CHARS):
        if "\x00" in c:
            continue
        folder = module_scratch / "models" / f"m{i}{c}x"
        folder.mkdir(parents=True)
        shutil.copy(_BUNDLED, folder / "config.json")
        made.append(str(folder))
    return made


def _inject(t) -> str:
    base, pos, char = t
    pos %= len(base) + 1
    return base[:pos] + char + base[pos:]


_VALUE_POOL = {
    "--model": ["gpt-oss-20b", "openai/gpt-oss-20b", "/nonexistent/model", "./m"],
    "--device": ["sm90", "H100", "gfx950:sramecc+:xnack-", "9.0", "cpu"],
    "--moe-backend": ["marlin", "flashinfer_trtllm", "auto", "flashinfer-cutlass", "nope",
                      "trtllm"],
    "--libraries": ["all", "torch", "flashinfer=0.7.2,torch", "flashinfer=0.7.x", "nope=1"],
    "--quantization": ["mxfp4", "fp8_per_block", "bogus"],
    "--target": ["vllm-0.33", "vllm-9"],
    "--quantization-config": ['{"moe": {"activation": "mxfp8"}}', '{"moe": 1}', '{"bogus": 1}',
                              '{"ignore": ["re:("]}', '{"moe": {"weight": "x"}}'],
    "--quantization-config.moe.activation": ["mxfp8", "bf16", "nope"],
}
_FLAGS = sorted(_VALUE_POOL)


def _control_argv(t, folders: list[str]) -> list[str]:
    command, pairs, tail = t
    argv = [command]
    for flag, base, pos, char, where in pairs:
        if command in ("matrix", "keys") and flag not in ("--device",):
            flag = "--device" if command == "matrix" else "--json"
        if flag == "--json":
            argv.append(flag)
            continue
        if flag == "--model" and where == 1:  # an existing folder with a control character
            argv += [flag, folders[pos % len(folders)]]
            continue
        value = _inject((base, pos, char))
        if flag == "--quantization-config" and where == 2:  # in a JSON key, raw or escaped
            value = '{"moe' + char + '": {"activation": "mxfp8"}}' if pos % 2 else \
                '{"moe": {"activation' + char.encode("unicode_escape").decode() + '": 1}}'
        if where == 3:  # as an unknown flag, or a dotted path
            argv.append(f"--{_inject(('bogus', pos, char))}" if pos % 2 else
                        f"--quantization-config.moe{char}=mxfp8")
            continue
        argv += [f"{flag}={value}"] if where == 4 else [flag, value]
    return argv + tail


_pair = st.tuples(st.sampled_from(_FLAGS), st.sampled_from(sorted({v for vs in _VALUE_POOL.values()
                                                                    for v in vs})),
                  st.integers(0, 60), st.sampled_from(CONTROL_CHARS), st.integers(0, 5))
_control = st.tuples(st.sampled_from(["select", "select", "explain", "explain", "matrix", "keys"]),
                     st.lists(_pair, min_size=1, max_size=3),
                     st.sampled_from([[], [], ["--json"], ["--libraries", "all"],
                                      ["--device", "sm100"]]))


def test_cli_control_characters(hermetic_probe, control_folders):
    injected = Floor("a control character in a user value", 0.3)
    shown = Floor("a control character shown escaped in the output", 0.2)

    # 1 in 4: a request that succeeds, for a model folder whose name holds a control character
    # (the success path prints the model's label)
    existing = st.tuples(st.sampled_from(["select", "explain"]), st.integers(0, 100),
                         st.sampled_from([[], ["--json"], ["--moe-backend", "marlin"]]))

    @given(st.one_of(_control, _control, _control, existing))
    def check(spec):
        if isinstance(spec[1], int):
            command, i, tail = spec
            argv = [command, "--model", control_folders[i % len(control_folders)], "--device",
                    "sm90", "--libraries", "all", *tail]
        else:
            argv = _control_argv(spec, control_folders)
        injected.add(any(raw_controls(a) for a in argv))
        with capture_cli() as (out, err):
            code = main(argv)
        stdout, stderr = out.getvalue(), err.getvalue()
        assert code in (0, 2), code
        for name, text in (("stdout", stdout), ("stderr", stderr)):
            found = raw_controls(text)
            assert not found, f"raw control characters on {name}: {found[:3]}"
        shown.add(any(s in stdout + stderr for s in ("\\x1b", "\\x07", "\\x08", "\\r", "\\x0b",
                                                       "\\x0c", "\\x1c", "\\x1f", "\\x7f", "\\x85",
                                                       "\\x9b", "\\x9d", "\\x90", "\\t", "\\x00")))

    check()
    injected.check()
    shown.check()
