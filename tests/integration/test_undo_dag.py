"""The `patient_import_undo` DAG run for real (`dag.test()`): the typed conf reaches the undo, the
run's triggering user is recorded as who undid the import, and an import that cannot be undone
fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import parsed_dag
from tests.patient_import import generated as g

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def undo_dag(airflow_db):
    return parsed_dag("patient_import_undo")


@pytest.fixture
def imports(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_PATIENT_STORE", raising=False)
    found = g.Imports(tmp_path, monkeypatch)  # the home's own store: the one the DAG opens
    yield found
    found.engine.dispose()


def test_the_undo_dag_takes_the_import_back_and_records_who_triggered_it(undo_dag, imports):
    from include.patient_import import audit, records

    imports.run("a")
    after_a = imports.patients()
    import_id = imports.run("b").report["import_id"]

    run = undo_dag.test(run_conf={"import_id": import_id})

    assert str(run.state) == "success"
    assert imports.patients() == after_a
    with imports.engine.connect() as conn:
        record = records.get_import(conn, import_id)
        undone = [e for e in audit.entries(conn, import_id) if e["action"] == audit.UNDONE]
    assert record["status"] == "undone"
    assert record["undone_by"] == run.triggering_user_name and undone[0]["who"] == run.triggering_user_name


def test_an_import_that_cannot_be_undone_fails_the_run(undo_dag, imports):
    imports.run("a")
    store = imports.patients()

    run = undo_dag.test(run_conf={"import_id": "demo_clinic_20261120_0123456789ab"})

    assert str(run.state) == "failed"
    assert imports.patients() == store


def test_the_import_dag_records_who_triggered_it_and_its_page_data_shows_the_undo(runner, undo_dag, tmp_path):
    """patient_import's run → the audit's `triggered` (the run's user); the undo DAG → `undone`;
    Import Results' query of the import gives both, the per-field counts and the undone time."""
    from include.patient_import import queries

    g.write(g.frame_a(), tmp_path / "exports" / "a.csv")
    g.write(g.frame_b(), tmp_path / "exports" / "b.csv")
    runner.run(practice_id="demo_clinic", export_file=str(tmp_path / "exports" / "a.csv"), exported_on="2026-11-02")
    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(tmp_path / "exports" / "b.csv"),
                                  exported_on="2026-11-03")
    assert state == "success"

    undo_dag.test(run_conf={"import_id": summary["import_id"]})

    with runner.engine().connect() as conn:
        detail = queries.import_detail(conn, summary["import_id"])
    assert detail is not None and detail.field_changes == g.B_FIELDS and detail.undone_at is not None
    assert [(e["action"], e["who"]) for e in detail.audit] == [("triggered", "dag_test"), ("undone", "dag_test")]
    assert not detail.undoable
