"""The top-level packages stand in layers: their package-level import graph, read from every
``import`` in their source (inside functions and ``TYPE_CHECKING`` blocks too), has no cycle, and
nothing imports the composition (``videoconf``), which imports the others to put them together."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

from control_api.config import ApiSettings
from videoconf.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("videoconf", "control_api", "sfu", "signaling", "recorder", "turn", "clients")
COMPOSITION = "videoconf"

Graph = Mapping[str, Mapping[str, str]]  # package -> package it imports -> one file that does


def imported_names(source: str) -> Iterator[str]:
    """The absolute module names ``source`` imports (relative imports stay in their package)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def import_graph(root: Path = ROOT) -> dict[str, dict[str, str]]:
    graph: dict[str, dict[str, str]] = {package: {} for package in PACKAGES}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for name in imported_names(path.read_text()):
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    graph[package].setdefault(top, str(path.relative_to(root)))
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as the packages along it (the first repeated at the end), or None."""
    done: set[str] = set()

    def visit(package: str, path: list[str]) -> list[str] | None:
        if package in path:
            return path[path.index(package):] + [package]
        if package in done:
            return None
        for imported in graph.get(package, {}):
            cycle = visit(imported, [*path, package])
            if cycle:
                return cycle
        done.add(package)
        return None

    for package in graph:
        cycle = visit(package, [])
        if cycle:
            return cycle
    return None


def describe(cycle: list[str], graph: Graph) -> str:
    return "; ".join(f"{a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))


def test_the_package_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle between packages: {describe(cycle, graph)}"


def test_nothing_imports_the_composition() -> None:
    importers = {package: imports[COMPOSITION] for package, imports in import_graph().items() if COMPOSITION in imports}
    assert importers == {}, f"only {COMPOSITION} may import {COMPOSITION}; found {importers}"


def test_the_composition_puts_every_other_package_together() -> None:
    assert set(import_graph()[COMPOSITION]) == set(PACKAGES) - {COMPOSITION}


def test_the_cycle_check_finds_cycles_and_only_cycles() -> None:
    assert find_cycle({"a": {"b": "a.py"}, "b": {"c": "b.py"}, "c": {"a": "c.py"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": "a.py", "c": "a.py"}, "b": {"c": "b.py"}, "c": {}}) is None
    assert list(imported_names("import x.y\nfrom z import w\nfrom . import v\ndef f():\n    import q\n")) == ["x.y", "z", "q"]


def test_the_composed_settings_offer_everything_the_control_api_reads() -> None:
    """``Settings`` is handed to the control API as an ``ApiSettings``: it has every member."""
    members = {
        name for cls in ApiSettings.__mro__ if cls.__module__ == ApiSettings.__module__
        for name in (*vars(cls), *vars(cls).get("__annotations__", {})) if not name.startswith("_")
    }
    missing = sorted(name for name in members if not hasattr(Settings, name) and name not in Settings.model_fields)
    assert len(members) > 20 and missing == []
