"""``mxfp4-oracle``: select / explain / diff / matrix / keys / docs.

Flags follow vLLM: ``--moe-backend`` (case-insensitive, '-' for '_'),
``--quantization``, ``--quantization-config JSON`` and the dotted form
``--quantization-config.moe.activation mxfp8`` (dashes or underscores), where
``null`` clears a field, later flags win and a repeated key is warned about.
Exit codes: 0 success, 2 any failure (an OracleError, also bad flags and stale docs).
``--json`` prints the contract JSON on stdout in both cases.

Answering for another machine: ``--device`` takes an arch (``sm100``, ``gfx950``) or a
GPU name (``B200``, ``H100-SXM``, ``MI355X``); ``cuda`` / ``cuda:N`` mean this machine.
For this machine's own device the installed libraries are probed; for any other
device the libraries of a deployment are assumed -- every kernel library, or the set an
engine release ships (``--target vllm-0.33``, data in ``oracle/engines.toml``) -- and one
``note:`` line on stderr says so and how to change it (``--libraries``).  Names are
case-insensitive throughout the CLI (``--libraries ALL``, ``--quantization MXFP4``,
``--quantization-config.moe.activation MXFP8``); the Python API keeps vLLM's
case-sensitive quant-key names.  A fallback to the last-resort reference kernel or to
another activation is always said in one ``warning:`` line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from oracle.deployment import ALL2ALL_BACKENDS, DEFAULT_ALL2ALL, MODEL_FAMILIES, ROUTING_METHODS
from oracle.errors import ConfigError, NoEligibleBackend, OracleError, UnknownBackend, escape, shown
from oracle.files import user_path

__all__ = ["main", "parse_argv", "build_parser", "CliArgs", "COMMANDS"]

COMMANDS = ("select", "explain", "diff", "preflight", "matrix", "keys", "docs", "tune")
_DOTTED = re.compile(r"^--quantization[-_]config\.([A-Za-z0-9_.\-]+)$")


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of exiting, so bad flags are an OracleError."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split()[-1]
        hint = "mxfp4-oracle --help" if command == "mxfp4-oracle" else f"mxfp4-oracle {command} --help"
        raise ConfigError("argv", "valid mxfp4-oracle arguments", message, hint)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:  # --help
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def _add_selection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gpt-oss-20b",
                   help="model folder, config.json, or bundled name (gpt-oss-20b, gpt-oss-120b, "
                        "openai/gpt-oss-20b, openai/gpt-oss-120b)")
    p.add_argument("--device", default=None,
                   help="sm90, sm100, 9.0, gfx950, xpu, cpu, a GPU name (H100, B200, RTX 5090, "
                        "MI300X), or cuda / cuda:N for this machine (default: this machine)")
    p.add_argument("--moe-backend", "--moe_backend", dest="moe_backend", default="auto",
                   help="auto, a vendor name (flashinfer_trtllm, ...) or a variant name")
    p.add_argument("--quantization", "-q", default=None,
                   help="shorthand: fp8_per_tensor, fp8_per_block, fp8_per_channel, mxfp8, "
                        "mxfp4, int8_per_channel_weight_only, nvfp4_per_token")
    p.add_argument("--quantization-config", "--quantization_config", dest="quantization_config",
                   action="append", default=None,
                   help="JSON, e.g. '{\"moe\": {\"activation\": \"mxfp8\"}}'; dotted flags "
                        "like --quantization-config.moe.activation mxfp8 are equivalent")
    p.add_argument("--libraries", default=None,
                   help="all | none | installed | NAME[=VER],... (default: what is installed "
                        "for this machine's device, every library for another device)")
    p.add_argument("--target", default=None,
                   help="assume the kernel libraries an engine release ships, e.g. vllm-0.33 "
                        "(instead of --libraries)")
    p.add_argument("--policy", default="strict",
                   help="strict (default): the project's rules; vllm-0.33 | vllm-0.22: what "
                        "that vLLM release would run")
    p.add_argument("--tensor-parallel-size", "-tp", dest="tensor_parallel_size", default=None,
                   help="vLLM's tensor-parallel size: gates and padding apply to the per-rank "
                        "intermediate size (intermediate // tp)")
    # vLLM 0.33's own spellings (engine/arg_utils.py:1209, 1241, 1305-1306, 1318, 1352, 1610).
    p.add_argument("--data-parallel-size", "-dp", dest="data_parallel_size", default=None,
                   help="vLLM's data-parallel size: without EP the layer is sharded tp*dp ways; "
                        "monolithic kernels refuse DP > 1 (the modular class is built)")
    p.add_argument("--enable-expert-parallel", "-ep", dest="enable_expert_parallel",
                   action="store_true",
                   help="expert parallelism: whole experts per rank (ep = tp*dp, tp = 1)")
    p.add_argument("--all2all-backend", dest="all2all_backend", default=DEFAULT_ALL2ALL,
                   help="EP dispatch: " + ", ".join(ALL2ALL_BACKENDS)
                        + " (deepep_low_latency switches to the batched activation format)")
    p.add_argument("--enable-eplb", dest="enable_eplb", action="store_true",
                   help="expert-parallel load balancing (needs --enable-expert-parallel)")
    p.add_argument("--enable-lora", dest="enable_lora", action="store_true",
                   help="LoRA adapters: only LoRA-capable experts classes remain")
    p.add_argument("--model-family", dest="model_family", default=None,
                   help="the selector to model: " + ", ".join(MODEL_FAMILIES)
                        + " (default: from config.json's model_type)")
    p.add_argument("--routing-method", dest="routing_method", default=None,
                   help="vLLM's RoutingMethodType for the layer, e.g. DeepSeekV3 (default: "
                        "the family's)")
    p.add_argument("--rank", default="table",
                   help="table (default): the matrix's order; measured: within one activation "
                        "tier, the fastest in --profile at --batch-tokens")
    p.add_argument("--profile", default=None,
                   help="measured profile: bundled, a bundled name, or a TOML file from "
                        "`mxfp4-oracle tune`")
    p.add_argument("--batch-tokens", dest="batch_tokens", default=None,
                   help="tokens per MoE call the ranking is for (e.g. 1 for decode)")
    p.add_argument("--allow-activation-fallback", action="store_true",
                   help="with an activation override, allow a BF16 variant if none matches")
    p.add_argument("--json", action="store_true", help="print the contract JSON")


def build_parser() -> argparse.ArgumentParser:
    """The parser, built once at import (parse_args does not mutate it)."""
    return _PARSER


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mxfp4-oracle",
                     description="Choose the MXFP4 MoE kernel for a layer, and say why.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    for name, help_text in (("select", "choose the backend (default command)"),
                            ("explain", "every candidate's verdict, reason and detail")):
        _add_selection_flags(sub.add_parser(name, help=help_text))
    _add_selection_flags(sub.add_parser(
        "diff", help="what changes between two setups: diff [A flags] -- [B flags]",
        description="Compare setup A (the flags before --) with setup B (A with the flags "
                    "after -- applied on top): changed inputs, the winner on each side, and "
                    "every candidate whose verdict changed."))
    pf = sub.add_parser(
        "preflight", help="before any download: per MoE layer kind the backend, kernel class, "
                          "padding, ignored knobs, decode bytes and floor time",
        description="What a model will run on a target GPU and deployment, and the decode "
                    "floor at the GPU's memory bandwidth -- no GPU and no weights needed.")
    _add_selection_flags(pf)
    pf.add_argument("--gpu", default=None,
                    help="price the decode floor on this GPU (H100, H200, B200, MI355X, ...); "
                         "default: every GPU of the device's arch")
    m = sub.add_parser("matrix", help="the compatibility matrix")
    m.add_argument("--device", default=None, help="only rows covering this device")
    m.add_argument("--json", action="store_true")
    k = sub.add_parser("keys", help="quant key names")
    k.add_argument("--json", action="store_true")
    d = sub.add_parser("docs", help="write docs/support-matrix.md (or --check it)")
    d.add_argument("--check", action="store_true", help="fail if the committed docs are stale")
    d.add_argument("--path", default=None, help="target file (default docs/support-matrix.md)")
    t = sub.add_parser("tune", help="measure a ranking profile on this machine's GPU "
                                    "(python -m oracle.kernels.tune)")
    t.add_argument("--out", required=True, help="the profile TOML to write")
    t.add_argument("--experts", default=None, help="expert counts, e.g. 32,128")
    t.add_argument("--tokens", default=None, help="tokens per call, e.g. 1,16,256")
    t.add_argument("--backends", default=None, help="matrix row names to measure, comma-separated")
    t.add_argument("--json", action="store_true", help="errors as JSON")
    return parser


_PARSER = _build_parser()


@dataclass
class CliArgs:
    command: str
    options: argparse.Namespace
    quantization_config: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    against: CliArgs | None = None  # diff: setup B (A's flags with B's applied on top)


def _parse_value(text: str) -> Any:
    if text == "null":
        return None
    if text.startswith(("{", "[")):
        from oracle.config import load_json
        return load_json(text, "quantization_config")
    return text


def _set_path(target: dict[str, Any], path: list[str], value: Any, flag: str,
              seen: dict[str, str], warnings: list[str]) -> None:
    dotted = ".".join(path)
    if dotted in seen:
        warnings.append(f"{flag}: '{dotted}' given more than once; the later value wins")
    seen[dotted] = flag
    node = target
    for i, part in enumerate(path[:-1]):
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            if part in node and nxt is not None:
                raise ConfigError(f"quantization_config.{'.'.join(path[:i + 1])}",
                                  "an object to set a field in", shown(nxt)[:60],
                                  "set the whole slot as JSON instead")
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value


def parse_argv(argv: Sequence[str]) -> CliArgs:
    """argv → CliArgs; every malformed input is a ConfigError (never SystemExit, except --help)."""
    argv = [str(a) for a in argv]
    if argv[:1] == ["diff"] and "--against" in argv and "--" not in argv:
        # `diff A --against B` (the documented form) is `diff A -- B`.
        i = argv.index("--against")
        argv = [*argv[:i], "--", *argv[i + 1:]]
    if argv[:1] == ["diff"] and "--" in argv:
        return _parse_diff(argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["select", *argv]
    # Pull the dotted --quantization-config.X.Y flags out (argparse cannot declare them).
    rest: list[str] = []
    dotted: list[tuple[int, str, str]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        flag, eq, inline = tok.partition("=")
        m = _DOTTED.match(flag)
        if m:
            if eq:
                value = inline
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
                i += 1
            else:
                got = shown(argv[i + 1]) if i + 1 < len(argv) else "nothing"
                raise ConfigError(flag, "followed by a value", got, f"{flag} mxfp8")
            dotted.append((i, m.group(1), value))
        else:
            rest.append(tok)
        i += 1
    parser = build_parser()
    try:
        opts, extras = parser.parse_known_args(rest)
    except ConfigError as exc:
        # argparse's own message can name a fragment of a token (``-ep=x`` is read as
        # short flags); say which arguments it was given.
        if any(tok and tok in str(exc.got) for tok in rest):
            raise
        raise ConfigError(exc.what, exc.constraint, f"{exc.got} in {shown(rest)[:120]}",
                          exc.fix) from None
    if extras:
        raise _unknown_arguments(parser, opts.command, extras)
    for name, value in vars(opts).items():  # argparse yields [] for e.g. --device=--
        if name == "quantization_config" and isinstance(value, list):
            bad = [v for v in value if not isinstance(v, str)]
        else:
            bad = [value] if isinstance(value, list) else []
        if bad:
            raise ConfigError(f"--{name.replace('_', '-')}", "a single value", shown(bad[0]),
                              f"--{name.replace('_', '-')} VALUE")
    if opts.command is None:  # pragma: no cover - handled by the default above
        raise ConfigError("argv", "a command", "none", " | ".join(COMMANDS))
    if dotted and opts.command not in ("select", "explain", "diff", "preflight"):
        raise ConfigError(dotted[0][1], f"used with select or explain, not {opts.command}",
                          "a dotted --quantization-config flag", "mxfp4-oracle select ...")
    warnings: list[str] = []
    config: dict[str, Any] | None = None
    json_values = getattr(opts, "quantization_config", None) or []
    if json_values or dotted:
        config = {}
        seen: dict[str, str] = {}
        for raw in json_values:  # JSON first, then dotted flags on top (later wins)
            value = _parse_value(raw)
            if value is None:
                config = {}
                continue
            if not isinstance(value, dict):
                raise ConfigError("quantization_config", "a JSON object",
                                  f"{shown(raw)[:80]} from --quantization-config "
                                  "(--quantization_config)",
                                  '{"moe": {"activation": "mxfp8"}}')
            for key, val in value.items():
                if key in config and isinstance(config[key], dict) and isinstance(val, dict):
                    for k2, v2 in val.items():
                        _set_path(config, [key, k2], v2, "--quantization-config", seen, warnings)
                else:
                    _set_path(config, [key], val, "--quantization-config", seen, warnings)
        for _, path, raw in dotted:
            parts = [p.replace("-", "_") for p in path.split(".")]
            if any(not p for p in parts):
                raise ConfigError(f"quantization_config.{path}", "a dotted field path",
                                  shown(path), "moe.activation")
            _set_path(config, parts, _parse_value(raw), f"--quantization-config.{path}", seen,
                      warnings)
    _normalize_names(opts, config)
    return CliArgs(opts.command, opts, config, warnings)


def _parse_diff(argv: list[str]) -> CliArgs:
    """``diff [A flags] -- [B flags]`` -> A's CliArgs with B in ``against``.

    B is parsed as A's flags followed by B's, so B keeps everything it does not name and
    wins where both say something, exactly as a repeated flag does (``--quantization-config``
    merges field by field, ``null`` clears).  B's flags are also parsed alone: their errors
    name them, and B's warnings are B's own.  ``--libraries`` and ``--target`` both describe
    the libraries, so B naming one drops A's other.  ``--json`` on either side is the output's.
    """
    cut = argv.index("--")
    a_flags, b_flags = argv[1:cut], argv[cut + 1:]
    if "--" in b_flags:
        raise ConfigError("argv", "diff flags with one '--' between setup A and setup B",
                          shown(b_flags)[:100], "mxfp4-oracle diff --device sm90 -- --device sm100")
    a = parse_argv(["diff", *a_flags])
    b_alone = parse_argv(["diff", *b_flags])
    b = parse_argv(["diff", *a_flags, *b_flags])
    named = b_alone.options
    if named.target is not None and named.libraries is None:
        b.options.libraries = None
    elif named.libraries is not None and named.target is None:
        b.options.target = None
    a.options.json = b.options.json = a.options.json or named.json
    b.warnings = b_alone.warnings
    a.warnings = list(dict.fromkeys([*a.warnings, *b.warnings]))
    a.against = b
    return a


def _flags_of(parser: argparse.ArgumentParser, command: str | None) -> list[str]:
    """The long option strings of ``command`` (of the top-level parser for None)."""
    target = parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            target = action.choices[command]
    return [o for a in target._actions for o in a.option_strings if o.startswith("--")]


def _unknown_arguments(parser: argparse.ArgumentParser, command: str | None,
                       extras: list[str]) -> ConfigError:
    """Unrecognised arguments, with the closest real flag for a mistyped one."""
    from oracle.suggest import ranked
    help_hint = f"mxfp4-oracle {command or ''} --help".replace("  ", " ")
    flags = _flags_of(parser, command)
    for tok in extras:
        if tok.startswith("-") and tok.strip("-"):
            typed = tok.partition("=")[0]
            found = ranked(typed.lstrip("-"), [f[2:] for f in flags], limit=1)
            if found:
                return ConfigError("argv", "known mxfp4-oracle arguments",
                                   f"unknown flag {typed!r} in {shown(extras)[:100]}",
                                   f"--{found[0]} (the closest flag; see {help_hint})")
            break
    return ConfigError("argv", "known mxfp4-oracle arguments", shown(extras)[:120], help_hint)


def _lower_if_known(value: Any, known: Any) -> Any:
    """``value`` in lower case where only that spelling is a known name (``MXFP8`` ->
    ``mxfp8``); anything else unchanged (``kMxfp4Static`` stays, errors stay errors)."""
    if isinstance(value, str) and value not in known and value.strip().lower() in known:
        return value.strip().lower()
    return value


def _normalize_names(opts: argparse.Namespace, config: dict[str, Any] | None) -> None:
    """The CLI reads names case-insensitively, like --moe-backend and --device:
    --libraries ALL, --quantization MXFP4 and quant-key names in --quantization-config
    behave like their lower-case spellings.  (The Python API keeps vLLM's case-sensitive
    quant-key names and suggests the lower-case one.)"""
    if getattr(opts, "libraries", None) is not None:
        opts.libraries = opts.libraries.lower()
    if getattr(opts, "quantization", None) is not None:
        from oracle.config import SHORTHANDS
        opts.quantization = _lower_if_known(opts.quantization, SHORTHANDS)
    if config:
        from oracle.config import SHORTHANDS
        from oracle.keys import QUANT_KEY_NAMES
        for slot in ("linear", "moe"):
            value = config.get(slot)
            if isinstance(value, str):
                config[slot] = _lower_if_known(value, {*SHORTHANDS, *QUANT_KEY_NAMES})
            elif isinstance(value, dict):
                for name in ("weight", "activation"):
                    if name in value:
                        value[name] = _lower_if_known(value[name], QUANT_KEY_NAMES)


# ----------------------------------------------------------------------------- where

WIDTH = 100  # explain (and every wrapped text line) fits this many columns
_THIS_MACHINE = re.compile(r"^cuda(?::([0-9]{1,3}))?$", re.ASCII)


@dataclass(frozen=True)
class _Place:
    """The device and libraries to answer for (``None`` = let oracle.model probe)."""

    device: Any
    environment: Any
    note: str | None = None


def _this_machine(index: int | None = None):
    """This machine's device (oracle.probe), for the "is it this machine?" question."""
    from oracle import probe
    try:
        return probe.detect_device() if index is None else probe.detect_device(index)
    except OracleError:
        raise
    except Exception as exc:  # e.g. torch: invalid device ordinal
        raise ConfigError("--device", "a device of this machine",
                          "this machine's device" if index is None else f"cuda:{index}",
                          f"an existing device index ({type(exc).__name__}: {str(exc)[:60]})"
                          ) from None


def _cuda_of_this_machine(text: str):
    """``cuda`` / ``cuda:N``: this machine's (probed) GPU; None for any other text."""
    m = _THIS_MACHINE.match(text.strip().lower())
    if m is None:
        return None
    probed = _this_machine(int(m.group(1)) if m.group(1) else None)
    if probed.platform not in ("cuda", "rocm"):
        raise ConfigError("--device", f"a CUDA or ROCm device on this machine when it is {text!r}",
                          f"this machine: {probed.name}",
                          "name the device to answer for, e.g. --device sm90 or H100")
    return probed


def _target_environment(name: str, platform: str):
    """``--target NAME`` on ``platform`` -> (Environment, the libraries as text)."""
    from oracle.platforms import LIBRARIES
    from oracle.request import Environment
    from oracle.suggest import closest, engine_table
    targets = engine_table().get("target", {})
    key = name.strip().lower()
    if key not in targets:
        s = closest(key, list(targets))
        raise ConfigError("--target", "a known engine release", shown(name),
                          f"'{s}'" if s else ", ".join(targets) or "no targets defined",
                          tuple(targets))
    libs = targets[key]["libraries"].get(platform)
    if libs is None:
        raise ConfigError("--target", f"a release that ships for {platform}", shown(name),
                          "--libraries NAME,... to describe the machine")
    unknown = [lib for lib in libs if lib not in LIBRARIES]
    if unknown:  # a data bug, caught by the tests
        raise ConfigError(f"oracle/engines.toml:target.{key}.libraries.{platform}",
                          "library names from oracle.platforms.LIBRARIES", shown(unknown),
                          "fix the data file")
    return Environment({lib: None for lib in libs}), ",".join(libs)


def _place(o: argparse.Namespace) -> _Place:
    """``--device`` / ``--libraries`` / ``--target`` -> what to pass to oracle.model.

    This machine's own device (no --device, ``cuda``, ``cuda:N``, or the arch the probe
    reports) keeps the probed libraries; another device gets a deployment's libraries,
    said in one note line.
    """
    from oracle.platforms import Device
    from oracle.request import Environment
    if o.libraries is not None and o.target is not None:
        raise ConfigError("--target", "given without --libraries (both describe the libraries)",
                          f"--libraries {o.libraries} --target {o.target}",
                          "keep one of them")
    device = probed = None
    if o.device is not None:
        probed = _cuda_of_this_machine(o.device)
        device = probed if probed is not None else Device.parse(o.device)
    if o.libraries is not None:
        env = None if o.libraries.strip() == "installed" else Environment.parse(o.libraries)
        return _Place(device, env)
    if o.target is not None:
        platform = (device or probed or _this_machine()).platform
        env, libs = _target_environment(o.target, platform)
        return _Place(device, env, f"note: --target {o.target.strip().lower()} on {platform}: "
                                   f"assuming libraries {libs}; change with --libraries")
    if device is None:
        return _Place(None, None)
    if probed is None:
        try:
            probed = _this_machine()
        except OracleError:  # this machine cannot say what it is: it is not `device`
            probed = None
    if device == probed:
        return _Place(device, None)
    from oracle.suggest import engine_table
    targets = " | ".join(engine_table().get("target", {}))
    here = probed.name if probed is not None else "unknown"
    return _Place(device, Environment.assume_all(),
                  f"note: {device.name} is not this machine ({here}): assuming every kernel "
                  "library is installed; change with --libraries NAME[=VER],... | installed"
                  + (f", or --target {targets}" if targets else ""))


# ----------------------------------------------------------------------------- commands

def _table(rows: list[list[Any]], headers: list[str]) -> str:
    from tabulate import tabulate
    return tabulate(rows, headers=headers, tablefmt="simple")


def _columns(rows: list[list[str]], headers: list[str]) -> list[str]:
    """A plain text table with two-space gutters and no extra padding (the first column
    right-aligned): as narrow as its content, unlike tabulate's padded headers."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        first = cells[0].rjust(widths[0])
        return "  ".join([first, *(c.ljust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *map(line, rows)]


def _wrap(text: str, indent: str = "", subsequent: str | None = None) -> list[str]:
    import textwrap
    return textwrap.wrap(text, WIDTH, initial_indent=indent,
                         subsequent_indent=indent + "  " if subsequent is None else subsequent,
                         break_on_hyphens=False) or [indent]


def _fallback_warning(sel: Any) -> str | None:
    """One line when the winner is a last-resort row (the torch reference) or an
    activation fallback (a weight-only or quantized-activation stand-in), else None."""
    from oracle.matrix import MATRIX
    row = MATRIX.by_name.get(sel.backend)
    parts = []
    if row is not None and row.last_resort:
        parts.append(f"fallback to the last-resort reference path {sel.backend} (correct, slow): "
                     f"no real MXFP4 MoE kernel is eligible on {sel.request.device.name}")
    if sel.activation_fallback:
        note = next((n for n in sel.notes if n.startswith("activation fallback")), None)
        parts.append(note or f"activation fallback to {sel.backend}")
    if not parts:
        return None
    return "warning: " + "; ".join(parts) + " (see `mxfp4-oracle explain`)"


def _request_args(args: CliArgs) -> tuple[dict[str, Any], _Place]:
    o = args.options
    place = _place(o)
    if place.note:
        sys.stderr.write(place.note + "\n")
    return dict(device=place.device, moe_backend=o.moe_backend, quantization=o.quantization,
                quantization_config=args.quantization_config, environment=place.environment,
                allow_activation_fallback=o.allow_activation_fallback, policy=o.policy,
                **_rank_args(o)), place


def _positive_flag(flag: str, value: Any, example: str, digits: int = 6) -> int | None:
    """A flag's positive integer (None when not given), else a ConfigError naming it."""
    if value is None:
        return None
    text = str(value).strip()
    if not (text.isascii() and text.isdigit() and 0 < len(text) <= digits and int(text) > 0):
        raise ConfigError(flag, "a positive integer", shown(value)[:40], example)
    return int(text)


def _rank_args(o: argparse.Namespace) -> dict[str, Any]:
    """--rank / --profile / --batch-tokens as request fields (read only when named)."""
    profile = None
    if o.profile is not None:
        from oracle.profile import load_profile
        profile = load_profile(o.profile)
    tokens = _positive_flag("--batch-tokens", o.batch_tokens, "--batch-tokens 16", 12)
    tp = _positive_flag("--tensor-parallel-size", o.tensor_parallel_size,
                        "--tensor-parallel-size 8")
    dp = _positive_flag("--data-parallel-size", o.data_parallel_size,
                        "--data-parallel-size 2") or 1
    if o.all2all_backend not in ALL2ALL_BACKENDS:
        raise ConfigError("--all2all-backend", "one of " + ", ".join(ALL2ALL_BACKENDS),
                          shown(o.all2all_backend)[:60], f"--all2all-backend {DEFAULT_ALL2ALL}")
    if o.routing_method is not None and o.routing_method not in ROUTING_METHODS:
        raise ConfigError("--routing-method", "one of " + ", ".join(ROUTING_METHODS),
                          shown(o.routing_method)[:60], "--routing-method Renormalize")
    return {"rank": o.rank, "profile": profile, "batch_tokens": tokens,
            "tensor_parallel_size": tp, "data_parallel_size": dp,
            "enable_expert_parallel": o.enable_expert_parallel,
            "all2all_backend": o.all2all_backend, "enable_eplb": o.enable_eplb,
            "enable_lora": o.enable_lora, "model_family": o.model_family,
            "routing_method": o.routing_method}


def _cmd_select(args: CliArgs, out: Any) -> int:
    from oracle.model import select_for_model
    o = args.options
    kwargs, _ = _request_args(args)
    ms = select_for_model(o.model, **kwargs)
    warning = _fallback_warning(ms.selection)
    if warning:
        sys.stderr.write(warning + "\n")
    if o.json:
        out.write(json.dumps(ms.to_dict(), indent=2) + "\n")
        return 0
    out.write(ms.describe() + "\n")
    return 0


def _cmd_preflight(args: CliArgs, out: Any) -> int:
    from oracle.preflight import preflight
    o = args.options
    if o.device is None:
        raise ConfigError("--device", "given for preflight (the target, not this machine)",
                          "missing", "--device H200 (or sm90, B200, MI355X)")
    kwargs, _ = _request_args(args)
    kwargs.pop("device")
    report = preflight(o.model, device=o.device, gpu=o.gpu, **kwargs)
    if o.json:
        out.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return 0
    out.write(report.describe() + "\n")
    return 0


def _explain_text(label: str, request: Any, verdicts: list[Any]) -> str:
    policy = "" if request.policy == "strict" else f", policy {request.policy}"
    lines = _wrap(f"model {label}, device {request.device.name}, moe_backend "
                  f"{request.moe_backend}, libraries {request.environment.describe()}{policy}")
    lines += _columns([[str(v.position), v.backend, v.activation, v.verdict,
                        v.reason.value if v.reason else ""] for v in verdicts],
                      ["#", "backend", "activation", "verdict", "reason"])
    details = [v for v in verdicts if v.detail or v.status != "supported"]
    if details:
        lines.append("details:")
        for v in details:
            status = "" if v.status == "supported" else f" [{v.status}]"
            text = f"{v.position:>2}. {v.backend}{status}" + (f": {v.detail}" if v.detail else "")
            lines += _wrap(text, "  ", "      ")
    return "\n".join(lines) + "\n"


def _cmd_explain(args: CliArgs, out: Any) -> int:
    from oracle.model import build_request
    from oracle.selector import explain, select
    o = args.options
    kwargs, _ = _request_args(args)
    request, label, _, _ = build_request(o.model, **kwargs)
    verdicts = explain(request)
    report: dict[str, Any] = {"request": request.to_dict(),
                              "candidates": [v.to_dict() for v in verdicts]}
    chosen = None
    try:
        chosen = select(request)
        warning = _fallback_warning(chosen)
        failure = None
    except NoEligibleBackend as exc:
        warning = None
        failure = ("error: NoEligibleBackend: every candidate was rejected (see the table); "
                   f"try: {escape(exc.fix)}")
        report.update(_error_dict(exc, []))  # the error contract too: error, message, ...
    if chosen is not None:
        report["kernel_class"] = chosen.kernel_class
        report["kernel_class_notes"] = list(chosen.kernel_class_notes)
    if warning:
        sys.stderr.write(warning + "\n")
    if o.json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        out.write(_explain_text(label, request, verdicts))
        if chosen is not None and chosen.kernel_class:
            lines = _wrap(f"kernel class of {chosen.backend}: {chosen.kernel_class}"
                          + (f" ({request.parallel.describe()})"
                             if not request.parallel.is_default else ""))
            for note in chosen.kernel_class_notes:
                lines += _wrap(f"passed over {note}", "  ", "    ")
            out.write("\n".join(lines) + "\n")
        if failure:
            sys.stderr.write(failure + "\n")
    return 0 if failure is None else 2


def _archs_text(row: Any) -> str:
    """The row's archs, each with its own status where it is not the row's."""
    parts = []
    for arch in row.sorted_archs():
        st = row.status_on(arch).status
        parts.append(arch if st == row.status else f"{arch}({st})")
    return " ".join(parts)


def _cmd_matrix(args: CliArgs, out: Any) -> int:
    from oracle.matrix import MATRIX
    o = args.options
    rows = list(MATRIX.rows)
    arch = None
    if o.device is not None:
        from oracle.platforms import Device
        arch = (_cuda_of_this_machine(o.device) or Device.parse(o.device)).name
        rows = [r for r in rows if arch in r.archs]
    rows.sort(key=lambda r: r.rank)
    if o.json:
        out.write(json.dumps([{
            "backend": r.name, "family": r.family, "weight": _canon(r.weight),
            "activation": r.activation_name, "archs": r.sorted_archs(),
            "libraries": list(r.libraries), "status": r.status, "rank": r.rank, "auto": r.auto,
            "layout": r.layout, "arch_status": {a: s.status for a, s in r.arch_status},
            **({"status_on_device": r.status_on(arch).status} if arch else {}),
        } for r in rows], indent=2) + "\n")
        return 0
    where = f" covering {arch} (status on {arch})" if arch else ""
    out.write(f"matrix {MATRIX.version}: {len(rows)} rows{where}; an arch shown as "
              "arch(status) differs from the row's status\n")
    lines = _columns([[str(r.rank), r.name, r.activation_name, ",".join(r.libraries),
                       r.status_on(arch).status if arch else r.status,
                       "yes" if r.auto else "no", _archs_text(r)] for r in rows],
                     ["rank", "backend", "activation", "libraries", "status", "auto", "archs"])
    out.write("\n".join(lines) + "\n")
    return 0


def _canon(key: Any) -> str:
    from oracle.keys import canonical_name
    return canonical_name(key)


def _cmd_keys(args: CliArgs, out: Any) -> int:
    from oracle.keys import QUANT_KEY_NAMES, canonical_name, constant_name
    rows = [[name, constant_name(key), canonical_name(key),
             "" if key is None else f"{key.dtype} scale {key.scale.dtype} "
             f"{'static' if key.scale.static else 'dynamic'} group {key.scale.group_shape}"]
            for name, key in QUANT_KEY_NAMES.items()]
    if args.options.json:
        out.write(json.dumps([dict(zip(["name", "constant", "canonical", "description"], r))
                              for r in rows], indent=2) + "\n")
    else:
        out.write(_table(rows, ["name", "constant", "canonical", "description"]) + "\n")
    return 0


def _cmd_docs(args: CliArgs, out: Any) -> int:
    from oracle.docs import main_docs
    return main_docs(check=args.options.check, path=args.options.path)


def _cmd_diff(args: CliArgs, out: Any) -> int:
    """Both setups through select's own request building, then :func:`oracle.diff.diff`.

    A side that cannot select (nothing eligible, unknown backend, activation conflict) is
    part of the answer: exit 0.  Flags or a config that cannot build a request: exit 2.
    """
    import contextlib
    import io

    from oracle.diff import diff
    from oracle.model import build_request
    if args.against is None:
        raise ConfigError("argv", "diff [A flags] -- [B flags] (B: only the flags that differ)",
                          "no '--' between the two setups",
                          "mxfp4-oracle diff --device sm90 -- --device sm100")
    requests, said = [], []
    for side in (args, args.against):
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured):
            kwargs, _ = _request_args(side)
        for line in captured.getvalue().splitlines():  # a note A and B share is said once
            if line not in said:
                said.append(line)
                sys.stderr.write(line + "\n")
        requests.append(build_request(side.options.model, **kwargs)[0])
    result = diff(*requests)
    if args.options.json:
        out.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        out.write(result.describe(WIDTH) + "\n")
    return 0


def _listed(text: str | None) -> list[str]:
    return [v.strip() for v in text.split(",")] if text else []


def _positive_ints(flag: str, text: str | None) -> list[str]:
    values = _listed(text)
    for v in values:
        if not (v.isascii() and v.isdigit() and 0 < len(v) <= 7 and int(v) > 0):
            raise ConfigError(flag, "comma-separated positive integers", shown(v)[:40],
                              f"{flag} 1,16,256")
    return values


def _cmd_tune(args: CliArgs, out: Any) -> int:
    """Measure a profile on this machine's GPU: ``python -m oracle.kernels.tune`` in a child
    process (the oracle never imports the kernels; they need torch and a GPU)."""
    import subprocess

    from oracle.matrix import MATRIX
    from oracle.probe import detect_device
    o = args.options
    cmd = [sys.executable, "-m", "oracle.kernels.tune", "--out", str(user_path(o.out, "--out"))]
    for flag, values in (("--experts", _positive_ints("--experts", o.experts)),
                         ("--tokens", _positive_ints("--tokens", o.tokens))):
        if values:
            cmd += [flag, *values]
    backends = _listed(o.backends)
    if backends:
        unknown = [b for b in backends if b.upper() not in MATRIX.by_name]
        if unknown:
            raise ConfigError("--backends", "matrix row names", shown(unknown[0])[:60],
                              "mxfp4-oracle matrix lists them")
        cmd += ["--backends", *(b.upper() for b in backends)]
    device = detect_device()
    if device.platform != "cuda":
        raise ConfigError("tune", "run on a machine with a CUDA GPU (it measures kernels)",
                          device.name, "run it on the GPU machine; elsewhere pass its profile "
                          "with --profile FILE")
    out.flush()
    try:
        return 0 if subprocess.call(cmd) == 0 else 2
    except OSError as exc:
        raise ConfigError("tune", "a runnable Python", type(exc).__name__,
                          "python -m oracle.kernels.tune --help") from None


_HANDLERS = {"select": _cmd_select, "explain": _cmd_explain, "diff": _cmd_diff, "tune": _cmd_tune,
             "preflight": _cmd_preflight, "matrix": _cmd_matrix, "keys": _cmd_keys, "docs": _cmd_docs}


# ----------------------------------------------------------------------------- errors

_SUGGESTIONS = 5


def _device_arch(argv: list[str]) -> str | None:
    """The arch --device names, if it names one (for arch-aware suggestions); no probe."""
    from oracle.platforms import Device
    for i, tok in enumerate(argv):
        flag, eq, value = tok.partition("=")
        if flag == "--device":
            text = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                return Device.parse(text).name
            except OracleError:
                return None
    return None


def _backend_suggestions(exc: UnknownBackend, argv: list[str]) -> list[tuple[str, str]]:
    from oracle.matrix import MATRIX
    from oracle.suggest import backend_suggestions
    return backend_suggestions(exc.name, exc.choices or MATRIX.backend_names(),
                               families=MATRIX.names, arch=_device_arch(argv),
                               limit=_SUGGESTIONS)


def _unknown_backend_text(exc: UnknownBackend, argv: list[str]) -> str:
    lines = _wrap(f"error: UnknownBackend: moe_backend {escape(shown(exc.name))} is not a backend "
                  "name (names are case-insensitive, '-' may stand for '_')", "", "  ")
    found = _backend_suggestions(exc, argv)
    if found:
        lines.append("  closest:")
        for name, why in found:
            lines += _wrap(f"--moe-backend {name}" + (f"  ({why})" if why else ""), "    ",
                           "        ")
    lines += _wrap("every name: `mxfp4-oracle matrix` lists the variants, docs/support-matrix.md "
                   "the `--moe-backend` names; or leave it at auto", "  ", "    ")
    return "\n".join(lines) + "\n"


def _pin_alias_notes(exc: NoEligibleBackend) -> list[str]:
    """For a failed pin whose name another engine uses differently: what it means there."""
    from oracle.suggest import backend_aliases, normalize
    if not exc.pinned:
        return []
    return [f"note: {exc.pinned!r} is also a {a.engine} name, for another kernel: {a.why}; "
            "for that one, try --moe-backend " + " | ".join(t for t, _ in a.targets())
            for a in backend_aliases().get(normalize(exc.pinned), ())]


def _error_dict(exc: OracleError, argv: list[str]) -> dict[str, Any]:
    out = exc.to_dict()
    if isinstance(exc, NoEligibleBackend):
        out["alternatives"] = list(exc.alternatives)
        out["working_archs"] = list(exc.working_archs)
        out["pinned"] = exc.pinned
    elif isinstance(exc, UnknownBackend):
        out["suggestions"] = [{"name": n, "why": w} for n, w in _backend_suggestions(exc, argv)]
        out["choices"] = list(exc.choices)
    return out


def _error_text(exc: OracleError, argv: list[str]) -> str:
    if isinstance(exc, UnknownBackend):
        return _unknown_backend_text(exc, argv)
    text = f"error: {type(exc).__name__}: {exc}\n"
    if isinstance(exc, NoEligibleBackend):
        text += "".join(n + "\n" for n in _pin_alias_notes(exc))
    return text


def _tolerant_streams() -> None:
    """stdout/stderr that cannot encode a character (``PYTHONIOENCODING=ascii``,
    ``LC_ALL=C``) print it escaped instead of raising UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a detached or closed stream
                pass


def _run(argv: list[str]) -> int:
    want_json = "--json" in argv
    try:
        args = parse_argv(argv)
        for w in args.warnings:
            # escape() shows a user value's newlines too; the _Escaping stream is the backstop
            # for everything else and leaves this already-printable text alone.
            sys.stderr.write(f"warning: {escape(w)}\n")
        return _HANDLERS[args.command](args, sys.stdout)
    except OracleError as exc:
        if want_json:
            sys.stdout.write(json.dumps(_error_dict(exc, argv), indent=2) + "\n")
        else:
            sys.stderr.write(_error_text(exc, argv))
        return 2


class _Escaping:
    """A text stream that shows control characters escaped (newlines stay): whatever a
    command prints -- a model path, a flag value -- can never drive the terminal."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(escape(text, keep_newlines=True))

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, ...
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 success, 2 any failure (bad flags, no eligible backend, stale docs).

    A reader that closes the pipe early (``mxfp4-oracle select | head -1``) ends the
    command quietly with status 0: the request itself did not fail.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    _tolerant_streams()
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Escaping(stdout), _Escaping(stderr)
    try:
        code = _run(argv)
        stdout.flush()
        return code
    except BrokenPipeError:
        # Python would report the broken pipe again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        finally:
            os.close(devnull)
        return 0
    finally:
        sys.stdout, sys.stderr = stdout, stderr


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
