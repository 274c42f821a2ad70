"""`make run` / `make import` (scripts/run_dag.py): per-task logs where the UI looks, the failing task's error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import PRACTICES_YAML

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]


def test_a_rejected_import_prints_the_failing_task_and_keeps_each_tasks_log_in_airflows_layout(
        airflow_db, tmp_path):
    home = tmp_path / "home"
    registry = tmp_path / "practices.yml"
    registry.write_text(PRACTICES_YAML, encoding="utf-8")
    png = tmp_path / "Patient List.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    env = dict(os.environ, PATIENT_IMPORT_HOME=str(home), PATIENT_IMPORT_PRACTICES=str(registry))
    env.pop("PATIENT_IMPORT_STORAGE", None)

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_dag.py"), "--practice", "demo_clinic",
                           "--file", str(png)], env=env, capture_output=True, text=True, cwd=ROOT)

    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^failed task import_practice\.report_imports\[0\]: AirflowFailException: .*rejected", out, re.M)
    assert "[info" not in out  # Airflow's own log lines stay in the logs
    run_folder = Path(re.search(r"^task logs: (.+?) \(", out, re.M).group(1))
    logs = Path(airflow_db) / "logs"
    assert run_folder.parent == logs / "dag_id=patient_import" and run_folder.name.startswith("run_id=manual__")
    assert (run_folder / "task_id=plan_imports" / "attempt=1.log").is_file()
    extract = run_folder / "task_id=import_practice.extract_exports" / "map_index=0" / "attempt=1.log"
    assert "unsupported_file_type" in extract.read_text(encoding="utf-8")
    assert "AirflowFailException" in (run_folder / "task_id=import_practice.report_imports" / "map_index=0"
                                      / "attempt=1.log").read_text(encoding="utf-8")
    assert (run_folder / "dag_test.log").is_file()
    assert not (logs / "last_run.log").exists() and not list(logs.glob(".dag_test_*"))
