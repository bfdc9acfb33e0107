"""Fuzz every JSON (and the one TOML) text the project parses with hostile documents.

Huge integers (4 000 - 6 000 digits, across CPython's 4 300-digit int/str limit), duplicate
keys, nesting up to 100 000 levels, NaN/Infinity, and malformed text (truncated, a character
inserted or removed, a BOM, trailing garbage), generated as text by ``_json_text``:

* ``oracle.config.load_json`` / ``resolve_quantization_config(None, text)`` /
  ``QuantizationConfigArgs.from_value(text)``;
* the CLI's ``--quantization-config JSON`` and dotted ``--quantization-config.moe.activation
  VALUE`` flags (``parse_argv``, then ``main`` in-process);
* a model folder's ``config.json`` (``oracle.model.load_model_config``, written to a reused
  tmp folder; then ``layer_from_config`` / ``checkpoint_quant`` on what it returns);
* the matrix text (``oracle.matrix.load_matrix``) of the bundled table with lines mutated:
  huge integers, wrong types, unknown and duplicate keys, hostile arch / version strings.

Property: a value, or exactly the documented error -- ConfigError (UnknownQuantKey is one)
for JSON, MatrixError for the table -- never ValueError, RecursionError, TypeError, ...;
a document with a duplicate key or a > 4 300-digit integer is always refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _hostile import Floor, capture_cli, expect, huge_digit_strings
from _json_text import KEYS, NAMES, documents
from oracle import ConfigError
from oracle.cli import main, parse_argv
from oracle.config import QuantizationConfigArgs, load_json, resolve_quantization_config
from oracle.errors import MatrixError
from oracle.matrix import load_matrix
from oracle.matrix.loader import bundled_text
from oracle.model import checkpoint_quant, layer_from_config, load_model_config

_MUST_REFUSE = {"dup", "huge_int"}


def _must_refuse(tags: frozenset[str]) -> bool:
    return bool(tags & _MUST_REFUSE) and "malformed" not in tags


# ------------------------------------------------------------------ load_json & quantization_config


def test_load_json_and_quantization_config():
    hostile = Floor("a duplicate key, a huge integer or deep nesting", 0.3)
    refused = Floor("a refused document", 0.3)
    parsed = Floor("a parsed document reaching the config checks", 0.05)

    @given(documents)
    def check(doc):
        text, tags = doc
        hostile.add(bool(tags & {"dup", "huge_int", "deep"}))
        try:
            value = load_json(text)
        except Exception as exc:  # noqa: BLE001 - the property decides
            expect(exc, ConfigError, exact=True)
            assert exc.path.startswith("quantization_config"), exc.path
            refused.add()
            loaded = False
        else:
            assert not _must_refuse(tags), f"load_json accepted a {set(tags)} document"
            parsed.add()
            loaded = True
        for call in (lambda: resolve_quantization_config(None, text),
                     lambda: QuantizationConfigArgs.from_value(text)):
            try:
                args = call()
            except Exception as exc:  # noqa: BLE001
                expect(exc, ConfigError)  # UnknownQuantKey is a ConfigError
                continue
            assert loaded, "a document load_json refuses was accepted"
            assert isinstance(args, QuantizationConfigArgs)
            assert QuantizationConfigArgs.from_value(args.to_dict()) == args

    check()
    for floor in (hostile, refused, parsed):
        floor.check()


# ------------------------------------------------------------------ the CLI's --quantization-config


_SEGMENTS = ["moe", "linear", "ignore", "weight", "activation", "moe-activation", "bogus", "Moe",
             "", "0", "moe.activation", "a-b_c"]
_dotted_path = st.sampled_from(_SEGMENTS + [f"{a}.{b}" for a in _SEGMENTS[:4] for b in _SEGMENTS])
_flag_value = st.one_of(
    documents.map(lambda d: d[0]), documents.map(lambda d: d[0]),
    st.sampled_from([*NAMES, *KEYS, "null", "NULL", "[]", "{}", "-", "--", "--json", "MXFP8"]),
    huge_digit_strings(st),
)


def _flag(t: tuple[int, str, str]) -> list[str]:
    form, path, value = t
    spelled = ["--quantization-config", "--quantization_config"][form % 2]
    return [[spelled, value], [f"{spelled}={value}"], [f"{spelled}.{path}", value],
            [f"{spelled}.{path}={value}"]][form // 2]


_one_flag = st.tuples(st.integers(0, 7), _dotted_path, _flag_value).map(_flag)
_flags = st.tuples(_one_flag, st.one_of(st.just([]), _one_flag)).map(lambda t: t[0] + t[1])


def test_cli_quantization_config_flags(hermetic_probe):
    # About one example in eight parses (most flag values are hostile on purpose); the
    # floor sits well below that so 100 random dev-profile examples do not flake.
    reached = Floor("a JSON flag value parsed and merged (parse_argv returned)", 0.03)
    refused = Floor("exit status 2 with an error line", 0.3)

    @given(st.sampled_from(["select", "explain"]), st.booleans(), _flags)
    def check(command, as_json, flags):
        argv = [command, "--device", "sm90", "--libraries", "all", *flags] + (
            ["--json"] if as_json else [])
        try:
            parse_argv(argv)
        except Exception as exc:  # noqa: BLE001
            expect(exc, ConfigError, exact=True)
        else:
            reached.add()
        with capture_cli() as (out, err):
            code = main(argv)
        stdout, stderr = out.getvalue(), err.getvalue()
        assert code in (0, 2), code
        assert "Traceback" not in stderr
        if code == 2:
            refused.add()
            if "--json" in argv:  # as main reads it (a flag value "--json" counts too)
                payload = json.loads(stdout)
                assert {"error", "message"} <= set(payload)
            else:
                assert stderr.startswith(("error: ", "warning: ")), stderr[:200]
                assert any(line.startswith("error: ") for line in stderr.splitlines())

    check()
    reached.check()
    refused.check()


# ------------------------------------------------------------------ a model folder's config.json

_BASE_TEXT = (Path(__file__).resolve().parents[2] / "oracle" / "models" / "gpt-oss-20b.json"
              ).read_text(encoding="utf-8")
_BASE = json.loads(_BASE_TEXT)
_PAIRS = [(k, json.dumps(v)) for k, v in _BASE.items()]
_TOP_KEYS = [k for k, _ in _PAIRS] + ["num_experts", "top_k", "moe_intermediate_size", "bogus"]


def _config_text(t) -> tuple[bytes, frozenset[str]]:
    """The bundled config as text with (key, hostile value) pairs set, duplicated or added,
    then (maybe) a byte-level mutation."""
    edits, byte_op, pos = t
    pairs = [(k, v, frozenset()) for k, v in _PAIRS]  # (key, value text, its tags)
    for op, key, (value, vtags) in edits:
        if op == "set":
            if any(k == key for k, _, _ in pairs):
                pairs = [(k, value, vtags) if k == key else (k, v, t) for k, v, t in pairs]
            else:
                pairs.append((key, value, vtags))
        elif op == "dup":
            pairs.append((key, value, vtags))
        else:  # drop
            pairs = [p for p in pairs if p[0] != key]
    tags = {tag for _, _, t in pairs for tag in t}
    if len({k for k, _, _ in pairs}) != len(pairs):
        tags.add("dup")
    text = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v, _ in pairs) + "}"
    data = text.encode("utf-8", "surrogatepass")
    pos %= len(data) + 1
    data = [data, data[:pos], data[:pos] + b"\xff" + data[pos:], b"\xef\xbb\xbf" + data,
            data[:pos] + b"\xed\xa0\x80" + data[pos:], data.replace(b", ", b",\r\n"),
            data[:pos] + b"\x00" + data[pos:], data + b" trailing"][byte_op % 8]
    if byte_op % 8 not in (0, 5):
        tags.add("malformed")
    return data, frozenset(tags)


_edit = st.tuples(st.sampled_from(["set", "set", "dup", "drop"]), st.sampled_from(_TOP_KEYS),
                  documents)
_config_files = st.tuples(st.lists(_edit, min_size=1, max_size=3), st.integers(0, 15),
                          st.integers(0, 10 ** 6)).map(_config_text)


def test_model_config_json_file(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    target = folder / "config.json"
    hostile = Floor("a duplicate key, a huge integer or deep nesting in config.json", 0.3)
    # Most generated files are hostile on purpose; a few in a hundred load. The floor only
    # asks that some do (100 random dev-profile examples must not flake).
    loaded = Floor("a config.json that loads and reaches layer_from_config", 0.01)

    @given(_config_files, st.booleans())
    def check(file, by_file_path):
        data, tags = file
        hostile.add(bool(tags & {"dup", "huge_int", "deep"}))
        target.write_bytes(data)
        try:
            label, cfg = load_model_config(target if by_file_path else folder)
        except Exception as exc:  # noqa: BLE001
            expect(exc, ConfigError, exact=True)
            assert exc.path.startswith(str(target)), exc.path
            return
        assert not _must_refuse(tags), f"accepted a {set(tags)} config.json"
        assert isinstance(cfg, dict) and label == str(target)
        loaded.add()
        for read in (layer_from_config, checkpoint_quant):
            try:
                read(cfg, label)
            except Exception as exc:  # noqa: BLE001
                expect(exc, ConfigError, exact=True)

    check()
    hostile.check()
    loaded.check()


# ------------------------------------------------------------------ the matrix text (TOML)

_TABLE = bundled_text()
_LINES = _TABLE.splitlines()
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*(.*)$")
_ASSIGNMENTS = [i for i, line in enumerate(_LINES) if _ASSIGN.match(line)]
_HEADERS = [i for i, line in enumerate(_LINES) if line.startswith("[")]
#: Free-text fields (any string is valid there): a table with hostile strings in them loads.
_FREE_TEXT = [i for i in _ASSIGNMENTS
              if _ASSIGN.match(_LINES[i]).group(1) in ("note", "source", "link")]
_FREE_STRINGS = [r'"\u001b[31m"', r'"\u009b2J"', '"\u00b2\u0669"', '"' + "x" * 5000 + '"', '""',
                 r'"\u0000"', "'''multi\nline'''", r'"\ud7ff"', r'"\t\r\b"']
_TOML_VALUES = [
    "true", "false", "0", "-1", "1.5", "inf", "-inf", "nan", "-0", "0x20", "0o40", "1e3",
    "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", '""', '" "', '"sm90"', '"sm٩٠"', '"sm_90"',
    '"SM90"', '"gfx950:sramecc+"', '"9.0"', '"²"', '"0.7.2"', '"0.7.2rc1"', '"0.7.x"',
    '"\\u0000"', '"\\u001b[31m"', '"kMxfp4Static"', '"None"', '"TRITON"', '"triton"',
    '"experimental"', '"known_bad"', "[]", "[1, 2]", '["sm90", "sm90"]', '["sm90", "sm1000"]',
    '["flashinfer", "nope"]', "[[]]", "{}", "{a = 1}", '{sm90 = "x"}',
    '{sm90 = {status = "experimental"}}', '{flashinfer = "²"}', '{flashinfer = 5}',
    "[" * 2000 + "]" * 2000, '"' + "x" * 5000 + '"',
]
_toml_value = st.one_of(
    st.sampled_from(_TOML_VALUES),
    huge_digit_strings(st),                                      # an integer past the limit
    huge_digit_strings(st).map(lambda d: d[:4000]),              # one just below it
    st.integers().map(str),
    huge_digit_strings(st).map(lambda d: f'{{flashinfer = "{d}"}}'),  # a 5000-digit version
)
_mutation = st.one_of(
    st.tuples(st.just("value"), st.sampled_from(_ASSIGNMENTS), _toml_value),
    st.tuples(st.just("value"), st.sampled_from(_FREE_TEXT), st.sampled_from(_FREE_STRINGS)),
    st.tuples(st.just("unknown_key"), st.sampled_from(_HEADERS),
              st.tuples(st.sampled_from(["bogus", "Name", "rank ", "archs_", "x" * 100]),
                        _toml_value).map(lambda kv: f"{kv[0]!s} = {kv[1]}")),
    st.tuples(st.just("duplicate"), st.sampled_from(_ASSIGNMENTS), st.just("")),
    st.tuples(st.just("delete"), st.sampled_from(_ASSIGNMENTS + _HEADERS), st.just("")),
    st.tuples(st.just("header"), st.sampled_from(_HEADERS),
              st.sampled_from(["[[row]]", "[row]", "[names]", "[[names]]", "[[adjustment]]",
                               "[bogus]", "[[row.arch_status]]"])),
)


def _mutated_table(mutations: list[tuple[str, int, str]]) -> str:
    lines = list(_LINES)
    inserted: dict[int, list[str]] = {}
    for op, i, arg in mutations:
        if op == "value":
            key = _ASSIGN.match(_LINES[i]).group(1)
            lines[i] = f"{key} = {arg}"
        elif op == "unknown_key":
            inserted.setdefault(i, []).append(arg)
        elif op == "duplicate":
            inserted.setdefault(i, []).append(_LINES[i])
        elif op == "delete":
            lines[i] = ""
        else:
            lines[i] = arg
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        out += inserted.get(i, [])
    return "\n".join(out) + "\n"


def test_matrix_text():
    refused = Floor("a MatrixError for a mutated table", 0.3)
    accepted = Floor("a mutated table that still loads", 0.03)

    @given(st.lists(_mutation, min_size=1, max_size=3))
    def check(mutations):
        text = _mutated_table(mutations)
        try:
            matrix = load_matrix(text)
        except Exception as exc:  # noqa: BLE001
            expect(exc, MatrixError, exact=True)  # a ConfigError from inside must not leak
            assert len(str(exc)) < 2000, "a 5000-digit value echoed whole"
            refused.add()
            return
        accepted.add()
        assert matrix.rows and matrix.backend_names()[0] == "auto"
        for row in matrix.rows:
            matrix.auto_order(next(iter(row.archs)))

    check()
    refused.check()
    accepted.check()


@pytest.mark.parametrize("case", ["huge_rank", "duplicate_key", "unknown_key", "deep_array"])
def test_matrix_text_examples(case):
    """One example per class, so a failure of the generator itself shows up plainly."""
    first = _ASSIGNMENTS[0]
    rank = next(i for i in _ASSIGNMENTS if _LINES[i].startswith("rank"))
    muts = {"huge_rank": [("value", rank, "9" * 5000)], "duplicate_key": [("duplicate", first, "")],
            "unknown_key": [("unknown_key", _HEADERS[-1], "bogus = 1")],
            "deep_array": [("value", rank, "[" * 5000 + "]" * 5000)]}[case]
    with pytest.raises(MatrixError):
        load_matrix(_mutated_table(muts))
