"""DAG integrity of patient_import_retention: parses cleanly and cheaply, one daily task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dag

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "patient_import_retention.py"


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["patient_import_retention"]  # get_dag would ask the metadata database


def test_dag_id_matches_file_stem_and_has_docs_and_tags(dag):
    assert dag.dag_id == DAG_FILE.stem
    assert "purge_patient_files" in dag.doc_md and "RETENTION_DAYS" in dag.doc_md
    assert {"patient_import", "retention"} <= set(dag.tags)


def test_runs_daily_without_catchup(dag):
    assert dag.schedule == "@daily"
    assert dag.timetable.expression == "0 0 * * *"
    assert dag.catchup is False
    assert dag.max_active_runs == 1


def test_one_task_purges_patient_files_with_retries(dag):
    [task] = dag.tasks
    assert task.task_id == "purge_patient_files"
    assert task.retries >= 1 and task.retry_exponential_backoff


def test_task_purges_with_the_configured_period_and_returns_counts_only(dag, tmp_path, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path))
    monkeypatch.delenv("PATIENT_IMPORT_STORAGE", raising=False)
    monkeypatch.setenv("PATIENT_IMPORT_RETENTION_DAYS", "7")
    old = tmp_path / "reports" / "demo_clinic" / "old_import.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}", encoding="utf-8")
    os.utime(old, (0, 0))

    counts = dag.get_task("purge_patient_files").python_callable()

    assert not old.exists()
    assert counts["files_removed"] == 1 and counts["older_than_days"] == 7
    assert "old_import" not in json.dumps(counts)


def test_parsing_the_dag_file_imports_no_heavy_library():
    probe = (
        "import importlib.util, json, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('patient_import_retention_dag', {str(DAG_FILE)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "import airflow.sdk\n"
        "start = time.perf_counter(); spec.loader.exec_module(module); took = time.perf_counter() - start\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'pyarrow', 'great_expectations', 'include', 'numpy'})\n"
        "print(json.dumps({'heavy': heavy, 'seconds': took}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["heavy"] == []
    print(f"DAG file parse (after airflow.sdk is loaded): {found['seconds'] * 1000:.0f} ms")
