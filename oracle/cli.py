"""``mxfp4-oracle``: select / explain / matrix / keys / docs.

Flags follow vLLM: ``--moe-backend`` (case-insensitive, '-' for '_'),
``--quantization``, ``--quantization-config JSON`` and the dotted form
``--quantization-config.moe.activation mxfp8`` (dashes or underscores), where
``null`` clears a field, later flags win and a repeated key is warned about.
Exit codes: 0 success, 2 any OracleError (also bad flags).  ``--json`` prints the
contract JSON on stdout in both cases.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from oracle.errors import ConfigError, OracleError

__all__ = ["main", "parse_argv", "build_parser", "CliArgs", "COMMANDS"]

COMMANDS = ("select", "explain", "matrix", "keys", "docs")
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
                   help="model folder, config.json, or bundled name (gpt-oss-20b, gpt-oss-120b)")
    p.add_argument("--device", default=None,
                   help="sm90, sm100, 9.0, gfx950, xpu, cpu (default: this machine)")
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
                   help="all | none | NAME[=VER],... (default: what is installed)")
    p.add_argument("--allow-activation-fallback", action="store_true",
                   help="with an activation override, allow a BF16 variant if none matches")
    p.add_argument("--json", action="store_true", help="print the contract JSON")


@functools.lru_cache(maxsize=1)
def build_parser() -> argparse.ArgumentParser:
    """The parser (built once: parse_args does not mutate it)."""
    return _build_parser()


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mxfp4-oracle",
                     description="Choose the MXFP4 MoE kernel for a layer, and say why.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    for name, help_text in (("select", "choose the backend (default command)"),
                            ("explain", "every candidate's verdict, reason and detail")):
        _add_selection_flags(sub.add_parser(name, help=help_text))
    m = sub.add_parser("matrix", help="the compatibility matrix")
    m.add_argument("--device", default=None, help="only rows covering this device")
    m.add_argument("--json", action="store_true")
    k = sub.add_parser("keys", help="quant key names")
    k.add_argument("--json", action="store_true")
    d = sub.add_parser("docs", help="write docs/support-matrix.md (or --check it)")
    d.add_argument("--check", action="store_true", help="fail if the committed docs are stale")
    d.add_argument("--path", default=None, help="target file (default docs/support-matrix.md)")
    return parser


@dataclass
class CliArgs:
    command: str
    options: argparse.Namespace
    quantization_config: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


def _parse_value(text: str) -> Any:
    if text == "null":
        return None
    if text.startswith(("{", "[")):
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise ConfigError("quantization_config", "valid JSON", repr(text)[:80],
                              "quote the JSON object") from None
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
                                  "an object to set a field in", repr(nxt)[:60],
                                  "set the whole slot as JSON instead")
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value


def parse_argv(argv: Sequence[str]) -> CliArgs:
    """argv → CliArgs; every malformed input is a ConfigError (never SystemExit, except --help)."""
    argv = [str(a) for a in argv]
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
                got = repr(argv[i + 1]) if i + 1 < len(argv) else "nothing"
                raise ConfigError(flag, "followed by a value", got, f"{flag} mxfp8")
            dotted.append((i, m.group(1), value))
        else:
            rest.append(tok)
        i += 1
    opts, extras = build_parser().parse_known_args(rest)
    if extras:
        raise ConfigError("argv", "known mxfp4-oracle arguments", repr(extras)[:120],
                          f"mxfp4-oracle {opts.command or ''} --help".replace("  ", " "))
    for name, value in vars(opts).items():  # argparse yields [] for e.g. --device=--
        if name == "quantization_config" and isinstance(value, list):
            bad = [v for v in value if not isinstance(v, str)]
        else:
            bad = [value] if isinstance(value, list) else []
        if bad:
            raise ConfigError(f"--{name.replace('_', '-')}", "a single value", repr(bad[0]),
                              f"--{name.replace('_', '-')} VALUE")
    if opts.command is None:  # pragma: no cover - handled by the default above
        raise ConfigError("argv", "a command", "none", " | ".join(COMMANDS))
    if dotted and opts.command not in ("select", "explain"):
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
                raise ConfigError("quantization_config", "a JSON object", repr(raw)[:80],
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
                                  repr(path), "moe.activation")
            _set_path(config, parts, _parse_value(raw), f"--quantization-config.{path}", seen,
                      warnings)
    return CliArgs(opts.command, opts, config, warnings)


# ----------------------------------------------------------------------------- commands

def _environment(text: str | None):
    from oracle.request import Environment
    return Environment.detect() if text is None else Environment.parse(text)


def _device(text: str | None):
    from oracle.request import Device
    return Device.detect() if text is None else Device.parse(text)


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    from tabulate import tabulate
    return tabulate(rows, headers=headers, tablefmt="simple")


def _cmd_select(args: CliArgs, out: Any) -> int:
    from oracle.model import select_for_model
    o = args.options
    ms = select_for_model(o.model, device=_device(o.device), moe_backend=o.moe_backend,
                          quantization=o.quantization, quantization_config=args.quantization_config,
                          environment=_environment(o.libraries),
                          allow_activation_fallback=o.allow_activation_fallback)
    if o.json:
        out.write(json.dumps(ms.to_dict(), indent=2) + "\n")
        return 0
    sel = ms.selection
    out.write(f"model {ms.model}: {len(ms.unquantized_modules)} module patterns stay unquantized\n")
    out.write(sel.describe() + "\n")
    return 0


def _cmd_explain(args: CliArgs, out: Any) -> int:
    from oracle.model import build_request
    from oracle.selector import explain
    o = args.options
    request, label, _, _ = build_request(
        o.model, device=_device(o.device), moe_backend=o.moe_backend,
        quantization=o.quantization, quantization_config=args.quantization_config,
        environment=_environment(o.libraries),
        allow_activation_fallback=o.allow_activation_fallback)
    verdicts = explain(request)
    if o.json:
        out.write(json.dumps({"request": request.to_dict(),
                              "candidates": [v.to_dict() for v in verdicts]}, indent=2) + "\n")
    else:
        out.write(f"model {label}, device {request.device.name}, moe_backend "
                  f"{request.moe_backend}, libraries {request.environment.describe()}\n")
        out.write(_table([[v.position, v.backend, v.activation, v.status, v.verdict,
                           v.reason.value if v.reason else "", v.detail] for v in verdicts],
                         ["#", "backend", "activation", "status", "verdict", "reason", "detail"])
                  + "\n")
    return 0 if any(v.verdict == "selected" for v in verdicts) else 2


def _cmd_matrix(args: CliArgs, out: Any) -> int:
    from oracle.matrix import MATRIX
    o = args.options
    rows = list(MATRIX.rows)
    if o.device is not None:
        from oracle.request import Device
        arch = Device.parse(o.device).name
        rows = [r for r in rows if arch in r.archs]
    rows.sort(key=lambda r: r.rank)
    if o.json:
        out.write(json.dumps([{
            "backend": r.name, "family": r.family, "weight": _canon(r.weight),
            "activation": r.activation_name, "archs": r.sorted_archs(),
            "libraries": list(r.libraries), "status": r.status, "rank": r.rank, "auto": r.auto,
            "layout": r.layout, "arch_status": {a: s.status for a, s in r.arch_status},
        } for r in rows], indent=2) + "\n")
        return 0
    out.write(f"matrix {MATRIX.version}: {len(rows)} rows\n")
    out.write(_table([[r.rank, r.name, r.activation_name, ",".join(r.libraries), r.status,
                       "yes" if r.auto else "no", " ".join(r.sorted_archs())] for r in rows],
                     ["rank", "backend", "activation", "libraries", "status", "auto", "archs"])
              + "\n")
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


_HANDLERS = {"select": _cmd_select, "explain": _cmd_explain, "matrix": _cmd_matrix,
             "keys": _cmd_keys, "docs": _cmd_docs}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    try:
        args = parse_argv(argv)
        for w in args.warnings:
            sys.stderr.write(f"warning: {w}\n")
        return _HANDLERS[args.command](args, sys.stdout)
    except OracleError as exc:
        if want_json:
            sys.stdout.write(json.dumps(exc.to_dict(), indent=2) + "\n")
        else:
            sys.stderr.write(f"error: {type(exc).__name__}: {exc}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
