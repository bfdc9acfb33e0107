"""The import floors of oracle/ and matrix/: each module imports only from floors below.

:data:`FLOORS` is the one written copy of the structure (docs/guide.md points here).
Every import statement counts -- module level, inside functions, under
``if TYPE_CHECKING`` -- because a function-level import from a higher floor is still
a dependency on it.  A module that is not in the table fails the test, so a new
module has to be given a floor.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Bottom up.  Modules on one floor may not import each other.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("oracle.errors", "oracle.models"),
    ("oracle.files", "oracle.suggest"),
    ("oracle.keys", "oracle.platforms"),
    ("oracle.profile", "oracle.deployment"),
    ("oracle.request",),
    ("oracle.gates",),
    ("oracle.selection",),
    ("oracle.matrix.loader",),
    ("oracle.matrix.releases", "oracle.matrix.gpus"),
    ("oracle.matrix",),
    ("oracle.vllm_rules",),
    ("oracle.selector",),
    ("oracle.config", "oracle.probe"),
    ("oracle.model",),
    ("oracle.diff", "oracle.preflight"),
    ("oracle.group", "oracle.docs"),
    ("oracle.cli",),
    ("oracle",),
)

#: The only modules that may import heavy or machine-facing packages (lazily).
MACHINE_IMPORTS: dict[str, set[str]] = {
    "oracle.probe": {"torch"},
    "oracle.group": {"torch.distributed"},
}
FORBIDDEN_ROOTS = {"torch", "flashinfer", "triton", "numpy"}

FLOOR_OF = {module: level for level, floor in enumerate(FLOORS) for module in floor}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "matrix":  # served as oracle.matrix (pyproject package-dir)
        parts = ["oracle", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = sorted([*(ROOT / "oracle").rglob("*.py"), *(ROOT / "matrix").rglob("*.py")])
    return {_module_name(p): p for p in files}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, wherever it is."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports would hide the target: not used here
                found.append((node.lineno, "<relative>"))
                continue
            base = node.module or ""
            for alias in node.names:  # "from oracle import keys" imports oracle.keys
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in FLOOR_OF else base))
    return found


def _oracle_edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in _sources().items():
        graph[module] = {target for _, target in _imports(path)
                         if target == "oracle" or target.startswith("oracle.")}
    return graph


def test_every_module_has_a_floor():
    missing = sorted(set(_sources()) - set(FLOOR_OF))
    stale = sorted(set(FLOOR_OF) - set(_sources()))
    assert not missing, f"give these modules a floor in FLOORS: {missing}"
    assert not stale, f"FLOORS names modules that do not exist: {stale}"


@pytest.mark.parametrize("module", sorted(FLOOR_OF))
def test_imports_only_from_lower_floors(module):
    path = _sources()[module]
    bad = []
    for line, target in _imports(path):
        if target == "<relative>":
            bad.append(f"{path.name}:{line}: relative import")
        elif target == "oracle" or target.startswith("oracle."):
            if target.startswith("oracle.kernels"):
                bad.append(f"{path.name}:{line}: imports {target} (the kernels sit outside)")
            elif target not in FLOOR_OF:
                bad.append(f"{path.name}:{line}: imports {target}, which has no floor")
            elif FLOOR_OF[target] >= FLOOR_OF[module]:
                bad.append(f"{path.name}:{line}: imports {target} (floor {FLOOR_OF[target]}) "
                           f"from floor {FLOOR_OF[module]}")
        elif target.split(".")[0] in FORBIDDEN_ROOTS and \
                target not in MACHINE_IMPORTS.get(module, set()):
            bad.append(f"{path.name}:{line}: imports {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = _oracle_edges()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_checker_sees_function_level_imports(tmp_path):
    """The walk finds an import inside a function and under TYPE_CHECKING (no blind spot)."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import oracle.cli\n"
                   "def f():\n    from oracle import selector\n    import torch\n")
    assert [t for _, t in _imports(src)] == ["typing", "oracle.cli", "oracle.selector", "torch"]


def test_one_cache_in_the_oracle():
    """The decision LRU in oracle.selector is the only cache: no other memoizing
    decorator (lru_cache, cache, cached_property) anywhere in oracle/ or matrix/."""
    memo = {"lru_cache", "cache", "cached_property"}
    found = []
    for module, path in _sources().items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for dec in node.decorator_list:
                    target = dec.func if isinstance(dec, ast.Call) else dec
                    name = target.attr if isinstance(target, ast.Attribute) else \
                        getattr(target, "id", "")
                    if name in memo:
                        found.append(f"{module}.{node.name}")
    assert found == ["oracle.selector._decide_bundled"]
