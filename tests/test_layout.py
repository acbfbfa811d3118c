"""The layout rules of docs/DESIGN.md, checked on the source: no import cycles (between modules or
between subpackages), no module named after a standard-library module, no production module
that only tests or benchmarks use, and short functions."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "idhhpc"
MAX_FUNCTION_LINES = 60
ENTRY_POINTS = {"idhhpc.launch", "idhhpc.predict", "idhhpc.phantoms.__main__", "idhhpc.data.phantoms"}
"""Modules run with ``python -m``: nothing needs to import them."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """Every idhhpc module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


GRAPH = {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def subpackage(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def test_no_import_cycle_between_modules():
    # A package's __init__ re-exporting its own modules is not a cycle of the design.
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in GRAPH.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        graph.setdefault(subpackage(module), set()).update(
            subpackage(t) for t in targets if subpackage(t) != subpackage(module) and t != "idhhpc")
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_module_is_named_after_the_standard_library():
    shadowing = [name for name in MODULES if name.rsplit(".", 1)[-1] in sys.stdlib_module_names]
    assert not shadowing


def test_every_production_module_is_used_by_production_code():
    from idhhpc.constants import STAGES

    used = {target for targets in GRAPH.values() for target in targets}
    used |= {f"idhhpc.stages.{stage}" for stage in STAGES}  # the pipeline's registry imports them by name
    used |= {module.rpartition(".")[0] for module in used}  # importing a module imports its package
    unused = [m for m in MODULES if m not in used and m not in ENTRY_POINTS and m != "idhhpc"]
    assert not unused, f"imported only by tests or benchmarks (or by nothing): {unused}"


def test_no_stage_module_imports_another_stage_module():
    """A stage is a thin adapter over the library: what two stages share lives below them."""
    from idhhpc.constants import STAGES

    stages = {f"idhhpc.stages.{stage}" for stage in STAGES}
    crossing = {m: sorted(GRAPH[m] & stages) for m in stages if GRAPH[m] & stages}
    assert set(crossing.pop("idhhpc.stages.external", [])) <= set(STAGE_EXCEPTION_CALLS)  # see below
    assert not crossing, crossing


STAGE_EXCEPTION_CALLS = "idhhpc.stages.cohort", "idhhpc.stages.preprocess"
"""The one exception, recorded so that it cannot grow: the ``external`` stage (issue 22) runs the
cohort and preprocess stages' functions on another cohort's job. Moving their bodies below
the stages (a library the three adapters call) removes it."""


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_fit_on_a_screen(module):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(MODULES[module].read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long
