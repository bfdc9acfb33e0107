"""Hostile input on the oracle side: every class is an OracleError (exit 2 on the CLI),
never a traceback, a hang, a path escape or an unbounded read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oracle import (ConfigError, Device, Environment, LayerSpec, OracleError, SelectionRequest,
                    select)
from oracle.cli import main
from oracle.config import QuantizationConfigArgs, QuantSpec, load_json, resolve_quantization_config
from oracle.keys import kMxfp8Dynamic
from oracle.model import load_model_config
from oracle.platforms import Version, parse_version

ROOT = Path(__file__).resolve().parents[1]
BIG_INT = "1" * 5000


def _cli(*argv: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "oracle.cli", *argv], capture_output=True,
                          env=full, timeout=60, **kw)


# ------------------------------------------------------------------ versions (PEP 440)

@pytest.mark.parametrize("text", ["²", "٠.٧", BIG_INT, "", "0.7.x", "1" * 70])
def test_invalid_versions_are_config_errors_naming_the_library(text):
    with pytest.raises(ConfigError) as info:
        Environment.parse(f"flashinfer={text}" if text else "flashinfer=!")
    assert info.value.path == "libraries.flashinfer"


def test_pre_release_is_below_its_release():
    assert parse_version("0.7.2rc1") < parse_version("0.7.2") < parse_version("0.7.2.post1")
    env = Environment.parse("flashinfer=0.7.2rc1")
    assert env.version("flashinfer") == Version("0.7.2rc1")


@pytest.mark.parametrize("bad", [(0, -1), (), (True,), "x.y"])
def test_malformed_version_values_are_config_errors(bad):
    with pytest.raises(ConfigError):
        Environment({"flashinfer": bad})


# ------------------------------------------------------------------ JSON the project parses

@pytest.mark.parametrize("text", [f'{{"moe": {{"activation": {BIG_INT}}}}}', '{"moe": 1, "moe": 2}',
                                  "{bad json", "[" * 100000])
def test_hostile_json_is_a_config_error(text):
    with pytest.raises(ConfigError):
        load_json(text)
    with pytest.raises(ConfigError):
        resolve_quantization_config(None, text)


def test_json_syntax_error_says_where():
    with pytest.raises(ConfigError) as info:
        load_json('{"moe": {"activation" "mxfp8"}}')
    assert "line 1 column" in info.value.fix


def test_duplicate_key_names_the_key():
    with pytest.raises(ConfigError) as info:
        load_json('{"moe": {"activation": "mxfp8", "activation": "bf16"}}')
    assert info.value.path == "quantization_config.activation"


def _model(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(text, encoding="utf-8")
    return folder


def test_config_json_with_a_huge_int_or_duplicate_key(tmp_path):
    cfg = json.loads((ROOT / "oracle" / "models" / "gpt-oss-20b.json").read_text("utf-8"))
    text = json.dumps(cfg).replace('"hidden_size": 2880', f'"hidden_size": {BIG_INT}')
    with pytest.raises(ConfigError):
        load_model_config(_model(tmp_path, text))
    text = json.dumps(cfg)[:-1] + ', "hidden_size": 4096}'
    with pytest.raises(ConfigError) as info:
        load_model_config(_model(tmp_path, text))
    assert info.value.path.endswith("hidden_size")


# ------------------------------------------------------------------ files: inside, regular, bounded

def test_config_json_symlink_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}", encoding="utf-8")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").symlink_to(outside)
    with pytest.raises(ConfigError) as info:
        load_model_config(folder)
    assert "inside" in info.value.constraint


def test_fifo_config_json_does_not_hang(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    os.mkfifo(folder / "config.json")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_model_config(folder)
    assert time.monotonic() - start < 5 and info.value.got == "a FIFO"


def test_oversized_config_json_is_refused_before_reading(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    with open(folder / "config.json", "wb") as fh:  # sparse: 4 GiB of nothing
        fh.truncate(4 * 1024**3)
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_model_config(folder)
    assert time.monotonic() - start < 1, "the size must be checked before reading"
    assert "bytes" in info.value.constraint


def test_nul_byte_in_a_model_path_is_a_config_error():
    with pytest.raises(ConfigError):
        load_model_config("model\0dir")


# ------------------------------------------------------------------ value types

def test_quant_spec_and_config_args_coerce_names_like_the_json_path():
    assert QuantSpec(weight="mxfp8").weight == kMxfp8Dynamic
    assert QuantizationConfigArgs(moe="mxfp8") == QuantizationConfigArgs.from_value({"moe": "mxfp8"})
    assert QuantizationConfigArgs(ignore="lm_head").ignore == ("lm_head",)
    for bad in ({"weight": 5}, {"activation": "nope"}):
        with pytest.raises(ConfigError):
            QuantSpec(**bad)
    with pytest.raises(ConfigError):
        QuantizationConfigArgs(moe=3)
    with pytest.raises(ConfigError):
        QuantizationConfigArgs(ignore=5)


@pytest.mark.parametrize("field, value", [
    ("num_experts", 0), ("top_k", 0), ("top_k", -1), ("swiglu_alpha", float("nan")),
    ("swiglu_alpha", float("inf")), ("swiglu_limit", 0.0), ("swiglu_limit", -7.0),
    ("ep_size", 0), ("tp_size", -1), ("activation_fn", ""),
])
def test_impossible_layer_values_are_config_errors(field, value):
    with pytest.raises(ConfigError) as info:
        LayerSpec(**{field: value})
    assert info.value.path == f"layer.{field}"


def test_top_k_above_num_experts_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        LayerSpec(num_experts=4, top_k=5)
    assert info.value.path == "layer.top_k"


@pytest.mark.parametrize("call", [
    lambda: Environment.parse(None), lambda: Environment.parse(5), lambda: Environment.parse(b".."),
    lambda: Environment.parse("torch,torch"), lambda: select(None),
    lambda: select(SelectionRequest(), matrix=True), lambda: LayerSpec.from_dict(None),
    lambda: Device.parse("sm٩٠"), lambda: Device.parse("sm009"),
])
def test_wrong_values_are_config_errors(call):
    with pytest.raises(ConfigError):
        call()


# ------------------------------------------------------------------ the CLI: no traceback, ever

def test_control_characters_are_escaped_in_messages(capsys):
    assert main(["select", "--model", "\x1b]0;pwned\x07"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b]0;pwned\\x07" in err


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii"},
                                 {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}])
def test_an_ascii_terminal_gets_escapes_not_a_traceback(env):
    for argv in (["select", "--device", "sm90", "--libraries", "all"],
                 ["select", "--device", "sm100", "--moe-backend", "marlin", "--libraries", "none"],
                 ["explain", "--device", "sm90", "--libraries", "all"], ["matrix"], ["keys"]):
        done = _cli(*argv, env=env)
        assert done.returncode in (0, 2), done.stderr
        assert b"Traceback" not in done.stderr


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "oracle.cli", "explain", "--device", "sm90",
                             "--libraries", "all"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_every_subcommand_uses_exit_2_for_failure(tmp_path):
    stale = tmp_path / "support-matrix.md"
    stale.write_text("old\n", encoding="utf-8")
    assert _cli("docs", "--check", "--path", str(stale)).returncode == 2
    assert _cli("select", "--moe-backnd", "x").returncode == 2
    assert _cli("matrix", "--device", "sm٩٠").returncode == 2
    assert _cli("explain", "--device", "sm90", "--moe-backend", "marlin",
                "--libraries", "none").returncode == 2


def test_oracle_errors_are_value_errors():
    assert issubclass(OracleError, ValueError)
