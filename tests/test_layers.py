"""The package's folders are its layers, and imports only point down them (no import cycle).

core (units, settings, features, db, storage, provenance, net) <- kinds <- config <- sources, onboarding <- stages
<- orchestration <- environments <- entry points (demo, cli). Imports under ``TYPE_CHECKING`` are
type hints only and do not count. A module may import its own layer, but the module graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "include" / "plantops"
RANKS = {
    "units": 0, "settings": 0, "features": 0, "db": 0, "storage": 0, "provenance": 0, "net": 0, "image_features": 0,
    "kinds": 1, "config": 2, "sources": 3, "stages": 4, "orchestration": 5, "environments": 6,
    "onboarding": 3, "demo": 7, "cli": 7, "plantops": 7,
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        hints = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for n in ast.walk(node)}
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in hints:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plantops"):
                if node.module == "plantops":
                    deps |= {f"plantops.{a.name}" for a in node.names}
                else:
                    deps.add(node.module)
                    deps |= {f"{node.module}.{a.name}" for a in node.names
                             if (ROOT.parent / node.module.replace(".", "/") / f"{a.name}.py").exists()}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("plantops")}
        graph[_module(path)] = deps
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "plantops"


def test_every_module_belongs_to_a_layer():
    assert {_layer(m) for m in _imports()} <= set(RANKS)


def test_imports_only_point_down_the_layers():
    upward = sorted((m, d) for m, deps in _imports().items() for d in deps
                    if RANKS[_layer(d)] > RANKS[_layer(m)])
    assert upward == [], upward


def test_no_import_cycle():
    graph = {m: {d for d in deps if d in _imports() and d != m} for m, deps in _imports().items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if dep.startswith(node + ".") or node.startswith(dep + "."):
                continue  # a package and its own modules
            if state.get(dep) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path, node, dep])}")
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
