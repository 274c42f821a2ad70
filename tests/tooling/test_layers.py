"""The package reads top-down (README, "Reading the package"): the layers are the README's table,
and every import inside `include/patient_import/` — function-level ones included — goes to the
importing module's own layer or one below it; the stages never import one another."""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "patient_import"
STAGES_ROW = "the stages and entry points"


def _layers() -> list[tuple[str, list[str]]]:
    """(layer, modules) of the README's table, top row first."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Reading the package", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    return [(cells[0].strip(), re.findall(r"`([a-z_]+)\.py`", cells[1]))
            for cells in (row.strip("|").split("|") for row in rows)]


def _imports(path: Path) -> set[str]:
    """The package modules `path` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "include.patient_import":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("include.patient_import."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("include.patient_import.")}
    return found - {path.stem}


def _graph() -> dict[str, set[str]]:
    return {path.stem: _imports(path) for path in sorted(PACKAGE.glob("*.py")) if path.stem != "__init__"}


def test_every_module_is_in_exactly_one_layer_of_the_readme():
    listed = [module for _, modules in _layers() for module in modules]
    assert sorted(listed) == sorted(_graph()), "README 'Reading the package' must list every module once"


def test_no_import_cycles():
    graphlib.TopologicalSorter(_graph()).prepare()  # raises CycleError naming the cycle


def test_no_module_imports_a_layer_above_it():
    rank = {module: -row for row, (_, modules) in enumerate(_layers()) for module in modules}
    upward = sorted(f"{module} -> {target}" for module, targets in _graph().items()
                    for target in targets if rank[target] > rank[module])
    assert upward == []


def test_the_stages_never_import_one_another():
    [stages] = [modules for layer, modules in _layers() if layer == STAGES_ROW]
    graph = _graph()
    across = sorted(f"{module} -> {target}" for module in stages for target in graph[module] if target in stages)
    assert across == []


def _loaded_after_import(*modules: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded once it imported `modules`."""
    import subprocess
    import sys

    code = "".join(f"import include.patient_import.{m}\n" for m in modules) + (
        "import sys\nprint(' '.join(sorted({name.split('.')[0] for name in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_planning_pays_for_no_dataframe_library():
    # plan_imports runs once per run before anything else: the registry, the conf check and the
    # store's records need neither pandas, numpy nor pyarrow (nor Great Expectations).
    assert _loaded_after_import("planning") & {"pandas", "numpy", "pyarrow", "great_expectations"} == set()


def test_no_stage_imports_great_expectations_before_it_runs_a_suite():
    # Importing it costs about 5 s: only a task that runs a suite may pay for it, when it does.
    assert "great_expectations" not in _loaded_after_import("extract", "validate", "transform", "load", "report")
