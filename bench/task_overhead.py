"""Per-task start-up cost: what each task of `dags/patient_import.py` imports and sets up before
it does any work, beside a trivial task's.

    python -m bench.task_overhead [--repeat 5]

Every Airflow task runs in a fresh process that has `airflow.sdk` (and the DAG file's own
imports) loaded; a task of `patient_import` then imports what its body imports and opens the
store (`_engine()`: the engine, the store checks, and for `plan_imports` the migrations and the
practice registry). Each is measured here in a fresh `python -c` process, median of `--repeat`
runs: the whole process's wall seconds (the interpreter's start included) and, inside it, the
seconds of the task's imports and of its store set-up. The trivial task imports `airflow.sdk`
and `pendulum` only (what the DAG file imports at its top).

The tasks and their imports are read from the DAG file (its `@task` functions' own `import`
statements, and whether they call `_engine`), so the figures follow the DAG as it changes.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import PRACTICES_YAML, RESULT_PREFIX, ROOT

DAG_FILE = ROOT / "dags" / "patient_import.py"
# What the DAG file imports at its top: every task process has it before the task's body runs.
BASE_IMPORTS = "import airflow.sdk, pendulum"
# Imports a task pays at work but not in its body: validate_import runs the GX suites, whose
# import (gx_runner imports great_expectations on first use) is start-up cost, not work.
WORK_IMPORTS = {"validate_exports": ("import great_expectations",)}
HEAVY_MODULES = ("pandas", "numpy", "pyarrow", "great_expectations", "sqlalchemy", "openpyxl",
                 "alembic", "duckdb", "yaml", "psycopg")


def dag_tasks(dag_file: Path = DAG_FILE) -> dict[str, dict]:
    """{task name: {"imports": [source lines], "engine": None | "plain" | "prepare"}} of the
    DAG file's `@task` functions."""
    tree = ast.parse(dag_file.read_text(encoding="utf-8"))
    helpers = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    tasks = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or not any(_is_task(d) for d in node.decorator_list):
            continue
        imports = [ast.unparse(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
        engine = None
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
            if isinstance(call.func, ast.Name) and call.func.id == "_engine":
                prepare = any(k.arg == "prepare" and isinstance(k.value, ast.Constant) and k.value.value
                              for k in call.keywords)
                engine = "prepare" if prepare or engine == "prepare" else "plain"
        if engine is None and any(isinstance(n, ast.Name) and n.id == "_engine" for n in ast.walk(node)):
            engine = "plain"  # passed on as a factory (report_import(_engine, …))
        if engine and "_engine" in helpers:
            imports += [ast.unparse(n) for n in ast.walk(helpers["_engine"])
                        if isinstance(n, (ast.Import, ast.ImportFrom))]
        imports += _called_imports(imports)
        imports += WORK_IMPORTS.get(node.name, ())
        tasks[node.name] = {"imports": list(dict.fromkeys(imports)), "engine": engine}
    return tasks


def _called_imports(imports: list[str]) -> list[str]:
    """The imports in the bodies of the project functions a task imports (one level): the
    pipeline's stage functions import their stage's modules when called, before any work."""
    found = []
    for statement in imports:
        node = ast.parse(statement).body[0]
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("include."):
            continue
        source = ROOT.joinpath(*node.module.split(".")).with_suffix(".py")
        if not source.exists():
            continue
        functions = {n.name: n for n in ast.parse(source.read_text(encoding="utf-8")).body
                     if isinstance(n, ast.FunctionDef)}
        for alias in node.names:
            if alias.name in functions:
                found += [ast.unparse(n) for n in ast.walk(functions[alias.name])
                          if isinstance(n, (ast.Import, ast.ImportFrom)) and n.level == 0]
    return found


def _is_task(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return name == "task" or (isinstance(target, ast.Attribute) and getattr(target.value, "id", "") == "task")


def _child_code(imports: list[str], engine: str | None) -> str:
    lines = ["import json, sys, time", "t0 = time.perf_counter()", BASE_IMPORTS, "t1 = time.perf_counter()",
             *imports, "t2 = time.perf_counter()"]
    if engine:
        lines += ["from include.patient_import.records import open_store",
                  "from include.patient_import.store import airflow_store_url",
                  f"e = open_store(airflow_store_url(), prepare={engine == 'prepare'})",
                  "c = e.connect(); c.close(); e.dispose()"]
    lines += ["t3 = time.perf_counter()",
              f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]",
              f"print({RESULT_PREFIX!r} + json.dumps({{'base_seconds': t1 - t0, 'imports_seconds': t2 - t1, "
              "'engine_seconds': t3 - t2, 'heavy_modules': heavy}))"]
    return "\n".join(lines)


def _measure(code: str, env: dict[str, str]) -> dict:
    begin = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    wall = time.perf_counter() - begin
    if done.returncode != 0:
        raise RuntimeError(f"a task's start-up failed: {done.stderr[-2000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX):]) | {"process_seconds": wall}


def _median_of(samples: list[dict]) -> dict:
    keys = ("base_seconds", "imports_seconds", "engine_seconds", "process_seconds")
    return {k: statistics.median(s[k] for s in samples) for k in keys} | {
        "heavy_modules": samples[-1]["heavy_modules"], "runs": len(samples)}


def measure(repeat: int = 3, dag_file: str | None = None) -> dict:
    """{"repeat", "trivial": {...}, "tasks": {task: {...}}}: seconds are medians; `process_seconds`
    is a fresh process's wall time, `imports_seconds` the task's imports after the DAG file's,
    `engine_seconds` the store's set-up. Raises RuntimeError when a task's imports fail."""
    tasks = dag_tasks(Path(dag_file) if dag_file else DAG_FILE)
    with tempfile.TemporaryDirectory(prefix="task_overhead_") as home:
        practices = Path(home) / "practices.yml"
        practices.write_text(PRACTICES_YAML, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PATIENT_IMPORT_", "AIRFLOW_CONN_"))}
        env |= {"PYTHONPATH": str(ROOT), "PATIENT_IMPORT_HOME": home, "PATIENT_IMPORT_PRACTICES": str(practices)}
        # The store exists and is migrated, as in production after the first run.
        _measure(_child_code([], "prepare"), env)
        codes = {"trivial": _child_code([], None)} | {
            name: _child_code(t["imports"], t["engine"]) for name, t in tasks.items()}
        _measure(codes["trivial"], env)  # one unmeasured round: bytecode compiled, files cached
        samples: dict[str, list[dict]] = {name: [] for name in codes}
        for _ in range(repeat):
            for name, code in codes.items():  # interleaved: a slow moment spreads over every task
                samples[name].append(_measure(code, env))
    result = {name: _median_of(s) for name, s in samples.items()}
    trivial = result.pop("trivial")
    for name, t in result.items():
        t["engine"] = tasks[name]["engine"]
        t["imports"] = tasks[name]["imports"]
        t["over_trivial_seconds"] = t["process_seconds"] - trivial["process_seconds"]
    return {"repeat": repeat, "seconds": sum(t["process_seconds"] for t in result.values()),
            "trivial": trivial, "tasks": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.task_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = measure(args.repeat)
    print(f"{'task':<20} {'imports s':>9} {'store s':>8} {'process s':>9} {'over trivial':>12}  heavy modules")
    trivial = figures["trivial"]
    for name, t in [("trivial task", trivial), *figures["tasks"].items()]:
        print(f"{name:<20} {t['imports_seconds']:9.2f} {t['engine_seconds']:8.2f} {t['process_seconds']:9.2f} "
              f"{t['process_seconds'] - trivial['process_seconds']:+12.2f}  {', '.join(t['heavy_modules'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
