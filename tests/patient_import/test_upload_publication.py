"""The Cash Practice upload file reaches the outbox only when its import completes (SPEC §5, §8):
while the import waits for approval, and when it is rejected (not approved, timed out) or fails in
load, there is nothing in the outbox that the office could upload."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from include.patient_import import approval, files, pipeline, report, settings, staging, storage
from include.patient_import import problems as p
from include.patient_import.extract import RunInfo
from tools.corpus import PRACTICE_ID, patients_snapshot, prepare_home
from tools.generator import generate_patients, write_export

pytestmark = [pytest.mark.unit, pytest.mark.timeout(300)]

DAY = date.today() - timedelta(days=1)
REGISTRY = f"""
practices:
  - id: {PRACTICE_ID}
    name: Upload Clinic
    capacity: 1000
    systems: [drip_education]
    approval: {{max_inserts: 5, timeout_hours: 2}}
"""


@pytest.fixture
def engine(tmp_path, monkeypatch):
    return prepare_home(tmp_path / "home", monkeypatch, limits=False, practices_yaml=REGISTRY)


def _extracted(engine, tmp_path, name: str, rows: int = 10, first_account: int = 10001,
               bad_rows: int = 0) -> str:
    path = tmp_path / f"{name}.csv"
    patients = generate_patients(rows, seed=3, first_account=first_account, inactive_share=0.0)
    if bad_rows:
        patients.loc[:bad_rows - 1, "first_name"] = ""  # missing_required_field: a row error
    write_export(patients, path, excel_artefacts=False)
    [import_id] = pipeline.extract_exports(engine, PRACTICE_ID, RunInfo(dag_id="t", run_id=name, map_index=0),
                                           export_file=str(path), exported_on=DAY)
    return import_id


def _outbox_uploads() -> list[str]:
    outbox = settings.area("outbox", PRACTICE_ID)
    return sorted(f.name for f in outbox.iterdir() if not f.name.endswith("_rejected_rows.csv")) \
        if outbox.exists() else []


def test_an_import_waiting_for_approval_has_no_upload_file_in_the_outbox(engine, tmp_path):
    import_id = _extracted(engine, tmp_path, "waiting")
    done = pipeline.run_stages(engine, import_id, ("validate", "transform", "approval"), report=False)
    assert done["approval"]["waits"] is True
    assert _outbox_uploads() == []
    assert done["transform"]["upload"] == str(staging.staged_upload(import_id))  # kept in staging meanwhile
    with engine.connect() as conn:
        from include.patient_import import records

        assert records.get_import(conn, import_id)["upload_path"] is None  # nothing offered for download


@pytest.mark.parametrize("answer", ["rejected", "timed_out"])
def test_an_import_not_approved_leaves_no_upload_file_anywhere(engine, tmp_path, answer):
    import_id = _extracted(engine, tmp_path, answer)
    pipeline.run_stages(engine, import_id, ("validate", "transform", "approval"), report=False)
    approval.record_answers(engine, [import_id], answer, by="office_manager")
    done = pipeline.run_stages(engine, import_id, ("load",))
    assert done["report"]["status"] == p.Status.REJECTED
    assert _outbox_uploads() == []
    assert not staging.staged_upload(import_id).exists()
    document = json.loads(storage.path_of(done["report"]["report"]).read_text(encoding="utf-8"))
    assert document["files"]["upload"] is None


@pytest.mark.parametrize("answer", ["rejected", "timed_out"])
def test_an_import_not_approved_leaves_no_rejected_rows_file_of_a_few_rows_either(engine, tmp_path, answer):
    # Every row is rejected with the import; a file listing only the rows with errors would have the
    # office fix and re-drop those few.
    import_id = _extracted(engine, tmp_path, f"{answer}_with_a_bad_row", rows=10, bad_rows=1)
    done = pipeline.run_stages(engine, import_id, ("validate", "transform", "approval"), report=False)
    assert done["transform"]["rejected_rows"] and done["approval"]["waits"]
    approval.record_answers(engine, [import_id], answer, by="office_manager")
    pipeline.run_stages(engine, import_id, ("load",), report=False)
    outbox = settings.area("outbox", PRACTICE_ID)
    # Gone once the load has recorded the rejection: Import Results offers nothing meanwhile.
    assert not outbox.exists() or [f.name for f in outbox.iterdir()] == []
    with engine.connect() as conn:
        from include.patient_import import records

        assert records.get_import(conn, import_id)["rejected_rows_path"] is None
    done = pipeline.run_stages(engine, import_id, ())
    assert done["report"]["status"] == p.Status.REJECTED and done["report"]["counts"]["rejected"] == 10
    assert not outbox.exists() or [f.name for f in outbox.iterdir()] == []
    document = json.loads(storage.path_of(done["report"]["report"]).read_text(encoding="utf-8"))
    assert document["files"]["rejected_rows"] is None


def test_an_import_that_fails_in_load_leaves_no_upload_file_in_the_outbox(engine, tmp_path, monkeypatch):
    import_id = _extracted(engine, tmp_path, "failing")
    pipeline.run_stages(engine, import_id, ("validate", "transform", "approval"), report=False)
    approval.record_answers(engine, [import_id], "approved", by="office_manager")

    def store_gone(_engine, _import_id):
        raise ConnectionError("the store went away mid-load")

    monkeypatch.setitem(pipeline.STAGES, "load", store_gone)
    with pytest.raises(ConnectionError):
        pipeline.run_stages(engine, import_id, ("load",))
    assert _outbox_uploads() == []
    assert patients_snapshot(engine) == {}


def test_a_completed_import_publishes_its_upload_file_once_and_a_rerun_keeps_it(engine, tmp_path):
    import_id = _extracted(engine, tmp_path, "approved")
    pipeline.run_stages(engine, import_id, ("validate", "transform", "approval"), report=False)
    approval.record_answers(engine, [import_id], "approved", by="office_manager")
    done = pipeline.run_stages(engine, import_id, ("load",))
    assert done["report"]["status"] == p.Status.COMPLETED
    published = files.upload_file(PRACTICE_ID, import_id)
    assert _outbox_uploads() == [f"{import_id}.csv"]
    document = json.loads(storage.path_of(done["report"]["report"]).read_text(encoding="utf-8"))
    assert document["files"]["upload"] == str(published)
    lines = published.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith('"ClientID","TPSID"') and len(lines) == 11
    # A retried report (its staging already cleared) keeps the published file and its record.
    again = report.report_import(engine, import_id)
    assert again["status"] == p.Status.COMPLETED and published.exists()
    document = json.loads(storage.path_of(again["report"]).read_text(encoding="utf-8"))
    assert document["files"]["upload"] == str(published)


def test_an_import_under_every_threshold_publishes_without_waiting(engine, tmp_path):
    import_id = _extracted(engine, tmp_path, "small", rows=3)
    done = pipeline.run_stages(engine, import_id, tuple(pipeline.STAGES))
    assert done["approval"]["waits"] is False and done["report"]["status"] == p.Status.COMPLETED
    assert _outbox_uploads() == [f"{import_id}.csv"]


def test_move_is_whole_and_a_second_move_finds_nothing(tmp_path):
    source, target = tmp_path / "staging" / "upload.csv", tmp_path / "outbox" / "x" / "i.csv"
    source.parent.mkdir()
    source.write_text("a,b\n", encoding="utf-8")
    assert storage.move(source, target) is True
    assert target.read_text(encoding="utf-8") == "a,b\n" and not source.exists()
    assert storage.move(source, target) is False and target.exists()
