"""DAG integrity: parses cleanly and cheaply, with the expected tasks, retries and params."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dag

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "patient_import.py"


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.get_dag("patient_import")


def test_dag_id_matches_file_stem_and_has_docs_and_tags(dag):
    assert dag.dag_id == DAG_FILE.stem
    assert "extract_exports" in dag.doc_md
    assert {"patient_import"} <= set(dag.tags)


def test_task_graph_is_plan_then_one_group_per_practice(dag):
    tasks = {t.task_id: t for t in dag.tasks}
    group = "import_practice."
    assert set(tasks) == {"plan_imports"} | {group + n for n in (
        "extract_exports", "validate_exports", "transform_exports", "load_patients", "report_imports")}
    chain = ["plan_imports", "extract_exports", "validate_exports", "transform_exports", "load_patients",
             "report_imports"]
    for upstream, downstream in zip(chain, chain[1:]):
        up = upstream if upstream == "plan_imports" else group + upstream
        assert group + downstream in tasks[up].downstream_task_ids
    assert tasks[group + "report_imports"].trigger_rule == "all_done"


def test_every_task_retries_with_backoff(dag):
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.retry_exponential_backoff, task.task_id


def test_trigger_form_params_are_typed_and_explained(dag):
    for name in ("practice_id", "export_file", "exported_on", "dry_run"):
        param = dag.params.get_param(name)
        assert param.schema.get("title") and param.description, name
        assert "type" in param.schema, name


def test_trigger_form_accepts_an_empty_practice_and_offers_a_date_field(dag):
    """The form's Trigger button stays enabled with no practice (every practice's inbox), and the
    export date is a date picker."""
    from airflow.sdk.definitions.param import ParamsDict

    assert "null" in dag.params.get_param("practice_id").schema["type"]
    assert dag.params.get_param("practice_id").resolve(suppress_exception=True) is None
    assert dag.params.get_param("exported_on").schema["format"] == "date"
    params = ParamsDict(dict(dag.params))
    params.update({"practice_id": None, "exported_on": "2026-11-20"})
    assert params.validate()["exported_on"] == "2026-11-20"
    # Airflow does not enforce `format`; `planning.check_conf` refuses a malformed date (tested there).


def test_parsing_the_dag_file_imports_no_heavy_library():
    probe = (
        "import importlib.util, json, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('patient_import_dag', {str(DAG_FILE)!r})\n"
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
