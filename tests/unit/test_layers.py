"""The package's arrows point down: each layer imports only from layers below it (docs/architecture.md),
no module imports itself round a cycle, and the detector registry imports no detector.

Read from the source with `ast` (every import, also those inside functions), so a lazy import does not
hide an upward arrow.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import cellsight

SRC = Path(cellsight.__file__).resolve().parent
LAYERS: list[set[str]] = [
    {"cellsight", "errors", "types"},
    {"data", "calibration", "storage"},
    {"features"},
    {"detectors"},
    {"modelfile", "metrics"},
    {"reporting", "deploy"},
    {"inference"},
    {"workflows"},
    {"line"},
    {"ui"},
    {"plc", "service"},
    {"cli"},
    {"__main__"},
]
"""Bottom first; a package may import from any lower layer, never from its own layer's peers or above."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("cellsight", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The cellsight modules `path` imports (a `from package import submodule` names the submodule)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cellsight"):
            subs = {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
            out |= subs if len(subs) == len(node.names) else {node.module, *subs}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("cellsight")}
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cellsight"


def _layer(package: str) -> int:
    for index, members in enumerate(LAYERS):
        if package in members:
            return index
    raise AssertionError(f"package {package!r} is in no layer: add it to LAYERS and docs/architecture.md")


def test_every_import_points_down() -> None:
    upward = []
    for module, path in MODULES.items():
        source = _package(module)
        for target in {_package(t) for t in _imports(path)} - {source}:
            if _layer(target) >= _layer(source):
                upward.append(f"{module} imports {target} (layers {_layer(source)} -> {_layer(target)})")
    assert not upward, "\n".join(sorted(upward))


def test_no_module_imports_itself_round_a_cycle() -> None:
    graph = {m: {t for t in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_the_registry_is_a_leaf_and_detectors_know_nothing_above_them() -> None:
    registry = _imports(MODULES["cellsight.detectors.registry"])
    assert not any(_package(t) == "detectors" and t != "cellsight.detectors.base" for t in registry), registry
    by_package: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        if _package(module) == "detectors":
            by_package["detectors"] |= {_package(t) for t in _imports(path)}
    assert by_package["detectors"] <= {"cellsight", "errors", "types", "data", "calibration", "features", "detectors"}
