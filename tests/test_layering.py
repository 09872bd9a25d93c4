"""The layering of the installed package, pinned (issue: one owner per concept, the flow in the folders).

The import graph is read from the installed modules' source (ast; imports under ``if TYPE_CHECKING`` are not
imports at run time), through the import system, so it is the package as installed, not the repo's folders.
Stage packages, bottom up: the ground floor (errors, lazy imports, spec, device preprocessing, measure) ->
targets -> calibration -> tasks -> bundle -> cluster -> build -> benchmarks -> tune -> device -> demo ->
benchmarks.suites, cli and the package API.
"""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUND = {"edgeship.errors", "edgeship._lazy", "edgeship.spec", "edgeship.preprocess", "edgeship._fleet",
          "edgeship._arrays", "edgeship._progress", "edgeship._version", "edgeship._defaults", "edgeship.measure"}


def installed_modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (source file, is a package), for every package the project declares."""
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    out = {}
    for package in packages:
        spec = importlib.util.find_spec(package)
        out[package] = (Path(spec.origin), True)
        for location in spec.submodule_search_locations:
            for f in Path(location).glob("*.py"):
                if f.name != "__init__.py":
                    out[f"{package}.{f.stem}"] = (f, False)
    return out


def import_arrows(modules: dict[str, tuple[Path, bool]]) -> set[tuple[str, str]]:
    """(importer, imported) for every run-time import between edgeship modules, eager or inside functions."""
    arrows = set()
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rsplit(".", 1)[0]

        def visit(node: ast.AST) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                if isinstance(child, ast.ImportFrom):
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)] if child.level else []
                    module = ".".join(base + ([child.module] if child.module else []))
                    for alias in child.names:
                        target = f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                        if target in modules and target != name:
                            arrows.add((name, target))
                elif isinstance(child, ast.Import):
                    arrows.update((name, a.name) for a in child.names if a.name in modules and a.name != name)
                visit(child)

        visit(ast.parse(path.read_text()))
    return arrows


def stage(module: str) -> str:
    """The stage package a module belongs to (a top-level module is its own)."""
    parts = module.split(".")
    if parts[1:3] == ["benchmarks", "suites"]:
        return "edgeship.benchmarks.suites"
    return ".".join(parts[:2])


def ground(module: str) -> bool:
    return module in GROUND or stage(module) in GROUND


def find_cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


MODULES = installed_modules()
ARROWS = import_arrows(MODULES)


def test_the_graph_is_read_from_the_installed_package():
    assert {"edgeship.build.compress", "edgeship.bundle.folder", "edgeship.device.serve", "edgeship.targets.openvino",
            "edgeship.benchmarks.suites.core"} <= set(MODULES)
    assert ("edgeship.device.serve", "edgeship.bundle.folder") in ARROWS  # a known arrow is seen
    assert find_cycle({("a", "b"), ("b", "c"), ("c", "a")}) == ["a", "b", "c", "a"]  # and a cycle would be


def test_no_cycle_between_stage_packages():
    between = {(stage(a), stage(b)) for a, b in ARROWS if stage(a) != stage(b)}
    assert find_cycle(between) is None, " -> ".join(find_cycle(between) or [])


def test_backends_import_only_the_ground_floor():
    wrong = sorted((a, b) for a, b in ARROWS if stage(a) == "edgeship.targets"
                   and stage(b) != "edgeship.targets" and not ground(b))
    assert not wrong, wrong


def test_the_ground_floor_imports_only_itself():
    wrong = sorted((a, b) for a, b in ARROWS if ground(a) and not ground(b))
    assert not wrong, wrong


def test_nothing_below_imports_the_package_api_or_the_suites():
    wrong = sorted((a, b) for a, b in ARROWS if b in ("edgeship", "edgeship.cli", "edgeship.benchmarks.suites")
                   or (stage(b) == "edgeship.benchmarks.suites" and stage(a) != stage(b)))
    wrong = [(a, b) for a, b in wrong if stage(a) not in ("edgeship.benchmarks.suites", "edgeship.cli",
                                                         "edgeship.__main__", "edgeship")]
    assert not wrong, wrong
