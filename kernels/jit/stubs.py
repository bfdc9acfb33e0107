"""Close the symbol set of a trimmed FlashInfer JIT module with throwing stubs.

A trimmed build compiles only part of a FlashInfer module's translation units.
The kept dispatch code still *references* the dropped explicit instantiations
(every tile shape, every dtype pair), so the linked ``.so`` would fail to load
with ``undefined symbol``.  This module finds those references in the compiled
objects and writes one C++ file that defines each of them as a function that
throws ``std::runtime_error`` naming the dropped instantiation.

Why this is sound:

* Itanium-mangled names consist of ``[A-Za-z0-9_]`` only, and a function is
  called through its mangled name; a definition bound to that name with an
  ``asm`` label satisfies the reference whatever the signature is.
* A stub never reads its arguments or writes a return value: it throws at once,
  so a signature mismatch cannot corrupt state.  Callers are ordinary C++ code
  compiled with unwind tables, so the exception unwinds to the tvm-ffi boundary
  and reaches Python as an error that names the dropped configuration.
* Only functions in FlashInfer's own namespaces are stubbed
  (:data:`STUB_PREFIXES`).  An undefined *data* symbol (a vtable, a static
  member) cannot be stubbed honestly; it is reported as a build error.

Nothing here needs a GPU: ``nm`` and ``c++filt`` (binutils) do the work.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "STUB_PREFIXES",
    "SymbolTable",
    "read_symbols",
    "missing_symbols",
    "demangle",
    "render_stub_source",
    "unresolved_dynamic_symbols",
]

#: Mangled-name prefixes of the namespaces whose functions may be stubbed:
#: ``tensorrt_llm::`` (all of FlashInfer's nv_internal CUTLASS MoE code).
STUB_PREFIXES: tuple[str, ...] = ("_ZN12tensorrt_llm", "_ZNK12tensorrt_llm")


@dataclass(frozen=True)
class SymbolTable:
    defined: frozenset[str]
    undefined: frozenset[str]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        from oracle.kernels.jit.errors import KernelBuildError

        raise KernelBuildError(
            "toolchain", f"providing `{name}` (binutils) on PATH", "not found",
            "install binutils (apt-get install binutils)")
    return path


def _strip_version(name: str) -> str:
    return name.split("@", 1)[0]


def read_symbols(paths: Iterable[Path], *, dynamic: bool = False) -> SymbolTable:
    """Defined and undefined symbols of object files or shared libraries (``nm -P``)."""
    nm = _tool("nm")
    defined: set[str] = set()
    undefined: set[str] = set()
    paths = [str(p) for p in paths]
    # nm handles many files per call; chunk to stay under the argv limit.
    for i in range(0, len(paths), 64):
        chunk = paths[i:i + 64]
        args = [nm, "-P", "--no-sort"] + (["-D"] if dynamic else []) + chunk
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 2 or line.endswith(":"):
                continue
            name, kind = _strip_version(parts[0]), parts[1]
            if kind == "U":
                undefined.add(name)
            elif kind in ("w", "v"):
                continue  # weak undefined: resolves to null, never an error
            else:
                defined.add(name)
    return SymbolTable(frozenset(defined), frozenset(undefined))


def missing_symbols(objects: Sequence[Path],
                    prefixes: Sequence[str] = STUB_PREFIXES) -> list[str]:
    """Symbols the objects reference, none of them defines, in ``prefixes``' namespaces."""
    table = read_symbols(objects)
    missing = table.undefined - table.defined
    return sorted(s for s in missing if s.startswith(tuple(prefixes)))


def demangle(symbols: Sequence[str]) -> list[str]:
    if not symbols:
        return []
    cxxfilt = _tool("c++filt")
    out = subprocess.run([cxxfilt], input="\n".join(symbols) + "\n", capture_output=True,
                         text=True, check=True).stdout.splitlines()
    if len(out) != len(symbols):  # pragma: no cover - c++filt is line-oriented
        raise RuntimeError("c++filt returned a different number of lines")
    return out


def is_function(demangled: str) -> bool:
    # A demangled function name ends with its parameter list (and maybe cv/ref
    # qualifiers); data symbols (vtables, statics, guard variables) do not.
    text = demangled.rstrip()
    for suffix in (" const", " volatile", " &", " &&"):
        while text.endswith(suffix):
            text = text[: -len(suffix)].rstrip()
    return text.endswith(")") and not demangled.startswith(
        ("vtable for", "typeinfo for", "typeinfo name for", "guard variable for",
         "VTT for", "construction vtable for"))


#: Namespaces whose functions may be stubbed when found unresolved after linking.
PROJECT_NAMESPACES: tuple[str, ...] = ("tensorrt_llm", "cutlass", "cute", "flashinfer", "deep_gemm")


def in_project_namespace(demangled: str) -> bool:
    """True when the function's own qualified name (not its return type) is in PROJECT_NAMESPACES.

    Library symbols (``std::``, ``tvm::ffi::``, ``__cxxabiv1::``) never qualify, so a
    symbol the host process provides at load time is never replaced by a stub.
    """
    head = demangled.split("(", 1)[0]
    depth, name = 0, []
    for ch in head:  # drop template arguments
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            name.append(ch)
    qualified = "".join(name).split()[-1] if "".join(name).split() else ""
    return qualified.split("::", 1)[0] in PROJECT_NAMESPACES


def _c_string(text: str) -> str:
    # json.dumps yields a valid C string literal for ASCII text
    return json.dumps(text, ensure_ascii=True)


def render_stub_source(symbols: Sequence[str], demangled: Sequence[str], *,
                       module: str, kept_summary: str) -> str:
    """C++ source defining each symbol as a function that throws a clear error."""
    prefix = _c_string(f"[{module}] this configuration was dropped from the trimmed build "
                       f"(kept: {kept_summary}); not compiled: ")
    suffix = _c_string(" -- rebuild with oracle.kernels.jit.sm90.build_trimmed_sm90(...) "
                       "with a spec keeping it, or use the full FlashInfer JIT module.")
    header = (
        "// Generated by oracle.kernels.jit.stubs -- do not edit.\n"
        f"// {len(symbols)} functions referenced by the kept code of trimmed module\n"
        f"// {module} but dropped from the build. Each throws when called.\n"
        "#include <stdexcept>\n#include <string>\n\n"
        "namespace {\n"
        "[[noreturn]] void oracle_dropped(const char* what) {\n"
        f"  throw std::runtime_error(std::string({prefix}) + what + {suffix});\n"
        "}\n}  // namespace\n\n"
    )
    body = []
    for i, (sym, dem) in enumerate(zip(symbols, demangled)):
        if not all(c.isalnum() or c == "_" for c in sym):
            raise ValueError(f"not a plain mangled name: {sym!r}")
        body.append(f'extern "C" void oracle_stub_{i}() __asm__("{sym}");\n'
                    f'extern "C" void oracle_stub_{i}() {{ oracle_dropped({_c_string(dem)}); }}\n')
    return header + "".join(body)


def unresolved_dynamic_symbols(shared_object: Path, libraries: Sequence[Path],
                               provided_at_load: Sequence[Path] = ()) -> list[str]:
    """Undefined dynamic symbols of ``shared_object`` that no listed library exports.

    ``provided_at_load`` are libraries the host process has already loaded
    (libtvm_ffi.so for a tvm-ffi module), whose exports also count.
    """
    own = read_symbols([shared_object], dynamic=True)
    exported: set[str] = set()
    libs = [p for p in list(libraries) + list(provided_at_load) if Path(p).exists()]
    if libs:
        exported |= read_symbols(libs, dynamic=True).defined
    return sorted(own.undefined - own.defined - exported)
