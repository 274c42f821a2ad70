"""DAG integrity of both DAGs: each parses cleanly and cheaply (a DagBag of its one file, no
Airflow database: `bag.dags`, never `get_dag`, which would ask for one), with the expected tasks,
retries, params and schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.dag

ROOT = Path(__file__).resolve().parents[2]
DAGS = ("patient_import", "patient_import_retention", "patient_import_undo")  # each in dags/<dag_id>.py


@cache
def parse(dag_id: str):
    """The DAG of dags/<dag_id>.py as the DAG processor parses it, once per session."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


@pytest.fixture(params=DAGS)
def dag(request):
    return parse(request.param)


@pytest.fixture
def patient_import_dag():
    return parse("patient_import")


@pytest.fixture
def retention_dag():
    return parse("patient_import_retention")


# ---------------------------------------------------------------- both DAGs


def test_dag_id_matches_file_stem_and_has_docs_and_tags(dag):
    assert (ROOT / "dags" / f"{dag.dag_id}.py").is_file()
    assert dag.doc_md
    assert {"patient_import"} <= set(dag.tags)


def test_every_task_retries_with_backoff(dag):
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.retry_exponential_backoff, task.task_id


@cache
def parse_probe() -> dict[str, dict]:
    """Each DAG file parsed in turn by one fresh interpreter (after `airflow.sdk`, as the DAG
    processor has it): dag_id -> {"heavy": what is then loaded that a parse must not load,
    "seconds": the file's parse}. Loaded modules stay: a later file is checked on top of the
    earlier ones, which must then have loaded nothing heavy either."""
    probe = (
        "import importlib.util, json, sys, time\n"
        "import airflow.sdk\n"
        "found = {}\n"
        f"for dag_id in {list(DAGS)!r}:\n"
        f"    path = {str(ROOT / 'dags')!r} + '/' + dag_id + '.py'\n"
        "    spec = importlib.util.spec_from_file_location(dag_id + '_dag', path)\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    start = time.perf_counter(); spec.loader.exec_module(module); took = time.perf_counter() - start\n"
        "    heavy = sorted({m.split('.')[0] for m in sys.modules}\n"
        "                   & {'pandas', 'pyarrow', 'great_expectations', 'numpy'})\n"
        # Of the package, only stdlib-only modules underneath: settings (the registry's path, for the
        # form's proposals) and files (the import-id pattern, for the undo form) with what it imports.
        "    heavy += sorted(m for m in sys.modules if m.startswith('include.') and m not in (\n"
        "        'include.patient_import', 'include.patient_import.settings', 'include.patient_import.files',\n"
        "        'include.patient_import.storage', 'include.patient_import.untrusted'))\n"
        "    found[dag_id] = {'heavy': heavy, 'seconds': took}\n"
        "print(json.dumps(found))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dag_id", DAGS)
def test_parsing_the_dag_file_imports_no_heavy_library(dag_id):
    found = parse_probe()[dag_id]
    assert found["heavy"] == []
    print(f"{dag_id} file parse (after airflow.sdk is loaded): {found['seconds'] * 1000:.0f} ms")


# ---------------------------------------------------------------- patient_import


def test_patient_import_documents_its_stages(patient_import_dag):
    assert "extract_exports" in patient_import_dag.doc_md


def test_task_graph_is_plan_then_one_group_per_practice(patient_import_dag):
    tasks = {t.task_id: t for t in patient_import_dag.tasks}
    group = "import_practice."
    assert set(tasks) == {"plan_imports"} | {group + n for n in (
        "extract_exports", "validate_exports", "transform_exports", "check_approval", "approve_imports",
        "load_patients", "report_imports")}
    chain = ["plan_imports", "extract_exports", "validate_exports", "transform_exports", "check_approval",
             "approve_imports", "load_patients", "report_imports"]
    for upstream, downstream in zip(chain, chain[1:]):
        up = upstream if upstream == "plan_imports" else group + upstream
        assert group + downstream in tasks[up].downstream_task_ids
    assert tasks[group + "report_imports"].trigger_rule == "all_done"


def test_approval_waits_with_airflows_human_in_the_loop_and_the_load_runs_when_it_is_skipped(patient_import_dag):
    from airflow.providers.standard.operators.hitl import HITLOperator

    tasks = {t.task_id: t for t in patient_import_dag.tasks}
    approve = tasks["import_practice.approve_imports"]
    assert isinstance(approve, HITLOperator)
    assert approve.options == ["Approve", "Reject"] and approve.multiple is False
    assert approve.defaults is None  # no answer in time is a timeout, never an approval
    assert approve.upstream_task_ids >= {"import_practice.check_approval"}
    # Skipped (nothing waits) must not skip the load; a failed upstream still stops it.
    assert tasks["import_practice.load_patients"].trigger_rule == "none_failed"
    assert "import_practice.approve_imports" in tasks["import_practice.load_patients"].upstream_task_ids


def _approve_task():
    return parse("patient_import").get_task("import_practice.approve_imports")


def test_approval_timeout_answers_timed_out_instead_of_failing_the_task(monkeypatch):
    task = _approve_task()
    monkeypatch.setattr(task, "decisions", [])  # rendered from check_approval's XCom in a run
    answer = task.execute_complete({}, {"error": "no response", "error_type": "timeout"})
    assert answer == {"answer": "timed_out", "by": None}


@pytest.mark.parametrize(("chosen", "answer"), [("Approve", "approved"), ("Reject", "rejected")])
def test_approval_answer_names_the_choice_and_the_user(chosen, answer, monkeypatch):
    from datetime import datetime, timezone

    task = _approve_task()
    monkeypatch.setattr(task, "decisions", [])  # rendered from check_approval's XCom in a run
    event = {"chosen_options": [chosen], "params_input": {}, "responded_at": datetime.now(timezone.utc),
             "responded_by_user": {"id": "7", "name": "office_manager"}}
    assert task.execute_complete({}, event) == {"answer": answer, "by": "office_manager"}


@pytest.mark.parametrize(("event", "answer", "by"), [
    ({"chosen_options": ["Approve"], "responded_by_user": {"id": "7", "name": "office_manager"}}, "approved",
     "office_manager"),
    ({"chosen_options": ["Reject"], "responded_by_user": {"id": "7", "name": "office_manager"}}, "rejected",
     "office_manager"),
    ({"error": "no response", "error_type": "timeout"}, "timed_out", None),
])
def test_the_answer_is_recorded_where_it_is_given_for_the_imports_still_waiting(monkeypatch, event, answer, by):
    from datetime import datetime, timezone

    from include.patient_import import approval

    task = _approve_task()
    monkeypatch.setattr(task, "decisions", [
        {"import_id": "i1", "waits": True}, {"import_id": "i2", "waits": False},
        {"import_id": "i3", "waits": True, "answer": "approved"}])
    engine = object()
    monkeypatch.setattr(sys.modules[task.__module__], "_engine", lambda prepare=False: engine)
    calls = []
    monkeypatch.setattr(approval, "record_answers", lambda *args: calls.append(args))
    at = datetime(2026, 11, 30, 9, 15, tzinfo=timezone.utc)
    if "error" not in event:
        event = {**event, "params_input": {}, "responded_at": at}
    assert task.execute_complete({}, event) == {"answer": answer, "by": by}
    assert calls == [(engine, ["i1"], answer, by, at if "error" not in event else None)]


def test_approval_is_skipped_when_no_import_waits(monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    task = _approve_task()
    monkeypatch.setattr(task, "practice_id", "demo_clinic")
    monkeypatch.setattr(task, "decisions", [{"import_id": "i1", "waits": False}])
    with pytest.raises(AirflowSkipException):
        task.execute({})


WAITING = {"import_id": "echo_clinic_20261129_0123456789ab", "waits": True, "stored": 0, "capacity": 1000,
           "counts": {"read": 5, "inserted": 5, "updated": 0, "unchanged": 0, "skipped": 0, "rejected": 0},
           "reasons": [{"code": "inserts_over_limit", "message": "would insert 5 new patients"}],
           "timeout_hours": 1}


@pytest.mark.parametrize(("try_number", "asked_again"), [(1, False), (2, True)])
def test_a_retried_approval_tells_the_approver_it_asks_again(monkeypatch, try_number, asked_again):
    """A retry of the approval step waits again and Airflow has cleared the earlier try's answer
    (README "Approval"): its subject and body say so."""
    from types import SimpleNamespace

    from airflow.providers.standard.operators.hitl import HITLOperator

    task = _approve_task()
    for name, value in (("practice_id", "echo_clinic"), ("decisions", [WAITING]), ("subject", task.subject),
                        ("body", task.body), ("response_timeout", task.response_timeout)):
        monkeypatch.setattr(task, name, value)
    monkeypatch.setattr(HITLOperator, "execute", lambda self, context: "waits")
    assert task.execute({"ti": SimpleNamespace(try_number=try_number)}) == "waits"
    assert task.subject.endswith("(asked again)") is asked_again
    assert task.body.startswith(f"**Asked again (try {try_number}):**") is asked_again
    assert f"/import-results/imports/{WAITING['import_id']}" in task.body


def test_trigger_form_params_are_typed_and_explained(patient_import_dag):
    for name in ("practice_id", "export_file", "exported_on", "dry_run"):
        param = patient_import_dag.params.get_param(name)
        assert param.schema.get("title") and param.description, name
        assert "type" in param.schema, name


def test_trigger_form_accepts_an_empty_practice_and_offers_a_date_field(patient_import_dag):
    """The form's Trigger button stays enabled with no practice (every practice's inbox), and the
    export date is a date picker."""
    from airflow.sdk.definitions.param import ParamsDict

    assert "null" in patient_import_dag.params.get_param("practice_id").schema["type"]
    assert patient_import_dag.params.get_param("practice_id").resolve(suppress_exception=True) is None
    assert patient_import_dag.params.get_param("exported_on").schema["format"] == "date"
    params = ParamsDict(dict(patient_import_dag.params))
    params.update({"practice_id": None, "exported_on": "2026-11-20"})
    assert params.validate()["exported_on"] == "2026-11-20"
    # Airflow does not enforce `format`; `planning.check_conf` refuses a malformed date (tested there).


def test_trigger_form_offers_the_registrys_practices(patient_import_dag):
    from include.patient_import.practices import load_practices

    offered = patient_import_dag.params.get_param("practice_id").schema["examples"]
    assert offered == sorted(load_practices()) and offered


# ---------------------------------------------------------------- patient_import_retention


def test_retention_documents_its_task_and_period(retention_dag):
    assert "purge_patient_files" in retention_dag.doc_md and "RETENTION_DAYS" in retention_dag.doc_md
    assert {"patient_import", "retention"} <= set(retention_dag.tags)


def test_runs_daily_without_catchup(retention_dag):
    assert retention_dag.schedule == "@daily"
    assert retention_dag.timetable.expression == "0 0 * * *"
    assert retention_dag.catchup is False
    assert retention_dag.max_active_runs == 1


def test_one_task_purges_patient_files_with_retries(retention_dag):
    [task] = retention_dag.tasks
    assert task.task_id == "purge_patient_files"
    assert task.retries >= 1 and task.retry_exponential_backoff


def test_task_purges_with_the_configured_period_and_returns_counts_only(retention_dag, tmp_path, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path))
    monkeypatch.delenv("PATIENT_IMPORT_STORAGE", raising=False)
    monkeypatch.setenv("PATIENT_IMPORT_RETENTION_DAYS", "7")
    old = tmp_path / "reports" / "demo_clinic" / "old_import.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}", encoding="utf-8")
    os.utime(old, (0, 0))

    counts = retention_dag.get_task("purge_patient_files").python_callable()

    assert not old.exists()
    assert counts["files_removed"] == 1 and counts["older_than_days"] == 7
    assert "old_import" not in json.dumps(counts)


# ---------------------------------------------------------------- patient_import_undo


def test_undo_takes_a_typed_import_id_and_runs_only_when_triggered():
    undo = parse("patient_import_undo")
    param = undo.params.get_param("import_id")

    assert undo.schedule is None and [t.task_id for t in undo.tasks] == ["undo_import"]
    assert param.schema["type"] == "string" and param.schema["title"] and param.description
    param.resolve("demo_clinic_20261120_0123456789ab")
    for bad in ("../../etc", "", "x" * 81):
        with pytest.raises(Exception):
            param.resolve(bad)


def test_undo_task_fails_once_for_an_import_that_cannot_be_undone(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_PATIENT_STORE", raising=False)
    task = parse("patient_import_undo").get_task("undo_import")
    monkeypatch.setattr(f"{task.python_callable.__module__}.get_current_context",
                        lambda: {"dag_run": type("Run", (), {"triggering_user_name": "office.lead"})()})

    with pytest.raises(AirflowFailException, match="no import"):
        task.python_callable(params={"import_id": "demo_clinic_20261120_0123456789ab"})
