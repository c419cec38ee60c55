"""The import graph points one way: no circle between modules, no import up a layer.

Read from the source with :mod:`ast` (nothing is imported). Every import counts, including the
ones inside functions, except those under ``if TYPE_CHECKING:`` (types only) and the package
root's lazy table (``lookalike/__init__.py`` imports on attribute access).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lookalike"

# Bottom to top: a package may import only packages of a lower layer (and its own modules).
LAYERS: list[set[str]] = [
    {"utils", "registry"},
    {"config", "data", "models", "index"},
    {"losses", "embed", "ranking"},
    {"runs", "metrics"},
    {"search"},
    {"report"},
    {"train"},
    {"pipeline"},
    {"serve"},
    {"cli"},
]


def _module_name(path: Path) -> str:
    parts = ["lookalike", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The ``lookalike.*`` modules ``path`` imports (outside ``if TYPE_CHECKING:`` blocks).

    ``from package import name`` is an edge to ``package.name`` when that is a module, else to
    the package itself.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name == "lookalike" or name.startswith("lookalike.")}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        if name == "lookalike":
            continue
        graph[name] = {target for target in _imports(path, set(files)) if target in files} - {name}
    return graph


def _layer(module: str) -> int:
    package = module.split(".")[1]
    for level, packages in enumerate(LAYERS):
        if package in packages:
            return level
    raise AssertionError(f"{module}: package {package!r} has no layer; add it to LAYERS")


def test_no_import_runs_up_a_layer() -> None:
    def runs_up(module: str, target: str) -> bool:
        if target == "lookalike":  # the package root (its version string)
            return False
        same_package = target.split(".")[1] == module.split(".")[1]
        return _layer(target) > _layer(module) or (
            _layer(target) == _layer(module) and not same_package
        )

    upward = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if runs_up(module, target)
    ]
    assert not upward, "imports that run up (or sideways across) a layer:\n" + "\n".join(upward)


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target not in graph:
                continue
            if state.get(target) == 1:
                circles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "lookalike.ranking" in graph["lookalike.metrics.retrieval"]
    assert "lookalike.index.result" in graph["lookalike.ranking.compute"]
    assert len(graph) > 100
