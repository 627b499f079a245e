"""The rules of the house (docs/architecture.md), checked on the source: every import of every module,
function-level imports included, read from the AST.

- a folder imports only folders below it in ``FLOORS`` (the ground floor from anywhere);
- no import cycles between modules;
- MLflow is imported only inside ``workbench/tracking/``;
- nothing inside the package imports the public API (``workbench/__init__.py``), which imports everything.

Imports under ``if TYPE_CHECKING:`` are exempt: they never run. A failure names the file, the line and
the target of each offending import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "workbench"
# Top floor first: each folder may import the folders after it, never those before it.
FLOORS = ["cli", "widgets", "reproduce", "run", "evaluate", "grids", "tracking", "backends", "experiments",
          "prompts", "provenance", "models"]
GROUND = {"types", "errors", "hashing", "config", "files"}  # modules of workbench/ itself, used by all
ROOF = {"__init__", "__main__"}  # the public API and `python -m workbench`: may import anything
MLFLOW_OWNER = "tracking"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level, in functions and classes, not under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """The modules ``name`` imports, resolved to dotted names (``from . import x`` to the submodule x)."""
    package = name if is_package(path) else name.rpartition(".")[0]
    out = []
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [Import(name, alias.name, path, node.lineno) for alias in node.names]
            continue
        if node.level:
            base_parts = package.split(".")
            base = ".".join(base_parts[:len(base_parts) - node.level + 1])
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        for alias in node.names:
            submodule = f"{module}.{alias.name}"
            out.append(Import(name, submodule if submodule in known else module, path, node.lineno))
    return out


def all_imports() -> list[Import]:
    known = modules()
    return [imp for name, path in known.items() for imp in imports_of(name, path, known)]


def floor(module: str) -> str | None:
    """The folder of a workbench module (``run``), ``"ground"``, ``"roof"``, or None outside the package."""
    parts = module.split(".")
    if parts[0] != "workbench":
        return None
    if len(parts) == 1:
        return "roof"
    if parts[1] in ROOF:
        return "roof"
    if parts[1] in GROUND:
        return "ground"
    return parts[1]


def test_the_floors_name_every_folder_and_module() -> None:
    for path in PACKAGE.iterdir():
        if path.is_dir() and (path / "__init__.py").is_file():
            assert path.name in FLOORS, f"workbench/{path.name}/ is on no floor: add it to FLOORS and docs/architecture.md"
        elif path.suffix == ".py":
            assert path.stem in GROUND | ROOF, (f"workbench/{path.name} is neither ground floor nor roof: put it in a "
                                                f"folder, or add it to GROUND and docs/architecture.md")


def test_folders_import_only_the_folders_below_them() -> None:
    upward = []
    for imp in all_imports():
        source, target = floor(imp.source), floor(imp.target)
        if target is None or source == target or source == "roof":
            continue
        if target == "roof":
            upward.append(f"{imp} (the public API: import from the module that defines the name)")
        elif source == "ground":
            if target != "ground":
                upward.append(f"{imp} (the ground floor imports only the ground floor)")
        elif target != "ground" and FLOORS.index(target) <= FLOORS.index(source):
            upward.append(f"{imp} ({source}/ may import only folders below it: "
                          f"{', '.join(FLOORS[FLOORS.index(source) + 1:])} and the ground floor)")
    assert not upward, "imports that climb the house:\n  " + "\n  ".join(dict.fromkeys(upward))


def test_no_import_cycles() -> None:
    graph: dict[str, dict[str, Import]] = {}  # module -> imported module -> the first import of it
    for imp in all_imports():
        if floor(imp.target) is not None and imp.target != imp.source:
            graph.setdefault(imp.source, {}).setdefault(imp.target, imp)
    cycles = [" -> ".join(edge.source for edge in cycle) + f" -> {cycle[0].source}\n    "
              + "\n    ".join(str(edge) for edge in cycle) for cycle in _cycles(graph)]
    assert not cycles, "import cycles (function-level imports count):\n  " + "\n  ".join(cycles)


def _cycles(graph: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One shortest cycle per strongly connected component of more than one module, as its imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_shortest_cycle(graph, component) for component in components]


def _shortest_cycle(graph: dict[str, dict[str, Import]], component: set[str]) -> list[Import]:
    start = min(component)
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:  # breadth first, inside the component, back to the start
        following = []
        for node in frontier:
            for target, edge in sorted(graph.get(node, {}).items()):
                if target == start:
                    return [*paths[node], edge]
                if target in component and target not in paths:
                    paths[target] = [*paths[node], edge]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_mlflow_is_imported_only_by_tracking() -> None:
    leaks = [str(imp) for imp in all_imports()
             if imp.target.split(".")[0] == "mlflow" and floor(imp.source) != MLFLOW_OWNER]
    assert not leaks, "MLflow imported outside workbench/tracking/ (go through Tracker):\n  " + "\n  ".join(leaks)


def test_the_checks_see_function_level_imports(tmp_path: Path) -> None:
    """The walker itself: a function-level import is found, a TYPE_CHECKING one is not."""
    source = tmp_path / "workbench" / "run" / "example.py"
    source.parent.mkdir(parents=True)
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..cli import app\n"
                      "def f():\n    from ..widgets import view\n    import mlflow\n")
    found = {(imp.target, imp.line) for imp in imports_of("workbench.run.example", source, {})}
    assert found == {("typing", 1), ("workbench.widgets", 5), ("mlflow", 6)}
