"""The import graph of include/plantops has no cycle.

Every import counts, at module level or inside a function (a function-local import is how a heavy
or circular dependency hides; it still runs), except those under ``if TYPE_CHECKING:``, which are
type hints only. An edge goes from a module to each plantops module it names: ``a.b.c`` for
``from a.b import c`` when that is a module, else ``a.b``; each name of ``import a.b``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "include" / "plantops"


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_only(tree: ast.AST) -> set[int]:
    """The nodes inside the body of an ``if TYPE_CHECKING:`` (its ``else`` runs)."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            hidden |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return hidden


def import_graph() -> dict[str, set[str]]:
    modules = {_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        hidden = _type_only(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                submodules = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
                deps |= submodules
                if base in modules and len(submodules) < len(node.names):  # a name the package defines
                    deps.add(base)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (found := visit(dep, path)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [])) is not None:
            return found
    return None


def test_the_graph_sees_function_local_imports_and_skips_type_hints():
    graph = import_graph()
    # pipeline.train imports the stages it calls inside the function; config reads the plug-ins by name.
    assert "plantops.stages.decisions" in graph["plantops.stages.pipeline"]
    assert "plantops.kinds" not in graph["plantops.config"]
    # kinds name UseCase for type hints only.
    assert "plantops.config" not in graph["plantops.kinds"]


def test_find_cycle_names_the_modules_of_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_include_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
