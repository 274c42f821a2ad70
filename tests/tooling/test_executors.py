"""The preloading LocalExecutor (include/executors.py): before its workers fork, it has imported
every module the DAGs' tasks import, and done nothing but import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from include.executors import PRELOADED_MODULES

ROOT = Path(__file__).resolve().parents[2]


def _task_imports(dag_file: Path) -> set[str]:
    """The `include.*` modules the DAG file's functions import in their bodies (the tasks')."""
    found = set()
    for node in ast.walk(ast.parse(dag_file.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found |= {inner.module for inner in ast.walk(node)
                      if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("include.")}
    return found


def test_preloading_imports_what_every_task_imports_and_starts_no_thread_or_connection():
    wanted = sorted(set().union(*(_task_imports(path) for path in (ROOT / "dags").glob("*.py"))))
    probe = (
        "import gc, json, sys, threading\n"
        "import sqlalchemy.pool\n"
        "from include.executors import preload\n"
        "def pools(): return sum(isinstance(o, sqlalchemy.pool.Pool) for o in gc.get_objects())\n"
        "before = (threading.active_count(), pools())\n"  # Airflow's own engine exists already
        "took = preload()\n"
        f"missing = [m for m in {wanted!r} if m not in sys.modules]\n"
        "print(json.dumps({'imported': sorted(took), 'missing': missing,\n"
        "                  'before': before, 'after': (threading.active_count(), pools())}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["imported"] == sorted(PRELOADED_MODULES)
    assert found["missing"] == [], "add them to include/executors.py PRELOADED_MODULES"
    assert found["after"] == found["before"], "(threads, connection pools) before and after preloading"
