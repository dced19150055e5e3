"""Tests of the codebase's shape: no import circles between pneumoscan's modules or its packages, and run files
named in one place."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports() -> dict[str, set[str]]:
    """Each module's imports of other pneumoscan modules (every import, in functions too)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pneumoscan"):
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    found.add(candidate if candidate in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("pneumoscan")}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_circles_between_modules():
    graph = module_imports()
    # importing an ancestor package (``from pneumoscan import __version__``) is left out: a package's
    # __init__ exists to be imported by its modules; every other edge counts, in functions too
    leaf_graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    assert _cycles(leaf_graph) == []


def test_no_import_circles_between_packages():
    """Stages depend one way: ``inference`` may use ``models`` but not the reverse, whatever module asks."""
    graph = module_imports()
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        source = _package(module)
        packages.setdefault(source, set())
        packages[source] |= {_package(d) for d in deps if _package(d) not in (source, "pneumoscan")}
    assert _cycles(packages) == []


def _package(module: str) -> str:
    """``pneumoscan.inference.screen`` -> ``pneumoscan.inference``; a flat module is its own package."""
    return ".".join(module.split(".")[:2])


def test_the_checker_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


RUN_FILES = ("config.json", "split.csv", "metrics.json", "history.json", "progress.pt", "train_state.pt",
             "train.log", "input_checks.json", "training_curves.png", "unreadable_files.json", "model.pt",
             "classes.json")


def test_the_run_folders_file_names_are_written_once():
    """Every module names a run's files through ``run_folder``; only it spells them out."""
    spelled = {}
    for path in SRC.rglob("*.py"):
        if path.name == "run_folder.py":
            continue
        strings = {node.value for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        if found := sorted(strings & set(RUN_FILES)):
            spelled[_module_name(path)] = found
    assert spelled == {}


def test_every_library_module_stays_under_300_lines():
    long = {_module_name(p): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
