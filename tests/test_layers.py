"""The package's folders are its layers, and imports only point down them.

core (units, settings, features, db, storage, provenance, net, catalog, splits) <- kinds <- config <- sources, onboarding
<- stages, modalities (one layer: the stages call the modality contract, a modality uses the stages' machinery)
<- orchestration <- environments <- entry points (demo, cli). Imports under ``TYPE_CHECKING`` are
type hints only and do not count. A module may import its own layer; that the module graph has no cycle
is ``tests/test_imports.py``'s check.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "include" / "plantops"
RANKS = {
    "units": 0, "settings": 0, "features": 0, "db": 0, "storage": 0, "provenance": 0, "net": 0, "image_features": 0, "catalog": 0, "splits": 0,
    "kinds": 1, "config": 2, "sources": 3, "stages": 4, "modalities": 4, "orchestration": 5, "environments": 6,
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
