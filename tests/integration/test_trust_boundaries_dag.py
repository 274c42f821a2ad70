"""Trust boundaries (SPEC §7) crossed from outside, through the real DAG (`dag.test()`).

The package-level variants are in tests/patient_import/test_trust_boundaries.py.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from tests.integration.test_patient_import_dag import patient, write_export

pytestmark = pytest.mark.integration


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _alerts(sink) -> str:
    return "\n".join(f"{m['subject']}\n{m.get_body().get_content()}" for m in sink.messages)


def _old(path: Path) -> Path:
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


def test_export_file_outside_the_roots_fails_the_run_before_anything_is_copied(runner, home, tmp_path, smtp,
                                                                               monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", str(tmp_path / "exports"))
    outside = write_export(tmp_path / "outside" / "Patient List.csv", [patient("1")])
    digest, mtime = hashlib.sha256(outside.read_bytes()).hexdigest(), outside.stat().st_mtime_ns

    state, reports = runner.run(practice_id="demo_clinic", export_file=str(outside))

    assert state == "failed" and reports == []
    assert "export_file_not_allowed" in _alerts(smtp)
    for area in ("archive", "quarantine", "outbox", "staging", "reports"):
        assert _files(home / area) == [], area
    assert hashlib.sha256(outside.read_bytes()).hexdigest() == digest and outside.stat().st_mtime_ns == mtime
    assert runner.patients("demo_clinic") == {}


def test_another_practices_archive_is_not_an_export_of_this_one(runner, home, tmp_path):
    export = write_export(tmp_path / "small 20261120.csv", [patient("7")])
    state, [summary] = runner.run(practice_id="small_clinic", export_file=str(export))
    assert state == "success"
    theirs = runner.report(summary)["files"]["archive"]

    state, reports = runner.run(practice_id="demo_clinic", export_file=theirs)

    assert state == "failed" and reports == []
    assert runner.patients("demo_clinic") == {}
    assert not (home / "archive" / "demo_clinic").exists()


def test_a_practice_id_with_a_path_fails_the_plan_and_writes_nothing(runner, home, tmp_path, smtp):
    export = write_export(tmp_path / "x.csv", [patient("1")])

    state, reports = runner.run(practice_id="../../elsewhere/x", export_file=str(export))

    assert state == "failed" and reports == []
    assert "unknown_practice" in _alerts(smtp) and "known practices: demo_clinic" in _alerts(smtp)
    assert not (tmp_path / "elsewhere").exists() and not (home.parent / "elsewhere").exists()
    assert _files(home / "reports") == [] and _files(home / "staging") == []


def test_symlinked_inbox_folder_leaves_the_linked_folder_unchanged(runner, home, tmp_path):
    linked = tmp_path / "someone_elses_share"
    export = _old(write_export(linked / "Patient List 20261120.csv", [patient("1")]))
    before = sorted((p.name, p.stat().st_mtime_ns, p.read_bytes()) for p in linked.iterdir())
    (home / "inbox").mkdir()
    (home / "inbox" / "demo_clinic").symlink_to(linked, target_is_directory=True)

    state, reports = runner.run()

    assert state == "success" and reports == []
    assert sorted((p.name, p.stat().st_mtime_ns, p.read_bytes()) for p in linked.iterdir()) == before
    assert export.exists() and _files(home / "archive") == []
    assert runner.patients("demo_clinic") == {}


def test_poison_pill_is_quarantined_after_its_third_failure_and_the_others_are_imported(runner, home,
                                                                                       monkeypatch):
    from include.patient_import import staging
    from include.patient_import import validate as validate_stage

    inbox = home / "inbox" / "demo_clinic"
    _old(write_export(inbox / "pill 20261101.csv", [patient("1")]))
    validate = validate_stage.validate_import

    def crash_on_the_pill(engine, import_id):
        if staging.Job.load(import_id).export_name.startswith("pill"):
            raise MemoryError("the worker ran out of memory")  # as a killed task would end
        return validate(engine, import_id)

    monkeypatch.setattr(validate_stage, "validate_import", crash_on_the_pill)
    for _ in range(3):
        state, [summary] = runner.run()
        assert state == "failed" and summary["status"] == "failed"
    waiting = [_old(write_export(inbox / f"next 2026110{d}.csv", [patient(str(d * 10))])) for d in (2, 3)]

    state, reports = runner.run()

    assert state == "success", reports
    assert sorted(r["export"]["name"] for r in reports) == sorted(p.name for p in waiting)
    assert {r["status"] for r in reports} == {"completed"}
    [quarantined] = _files(home / "quarantine" / "demo_clinic")
    assert quarantined.name.startswith("pill_20261101")
    state, reports = runner.run()  # the pill stays out of scheduled runs
    assert state == "success" and reports == []


def test_a_failed_extract_fails_the_run_and_alerts(runner, home, monkeypatch, smtp):
    from include.patient_import import extract

    _old(write_export(home / "inbox" / "demo_clinic" / "x 20261120.csv", [patient("1")]))

    def broken(*args, **kwargs):
        raise OSError("the file share went away")

    monkeypatch.setattr(extract, "extract_exports", broken)
    state, reports = runner.run()

    assert state == "failed" and reports == []
    assert "nothing of demo_clinic was imported" in _alerts(smtp)


@pytest.mark.parametrize("practice, file_of", [
    ("../../elsewhere/x", lambda home, export: export),
    ("nobody_clinic", lambda home, export: export),
    ("demo_clinic", lambda home, export: home / "patient_store.db"),
    ("demo_clinic", lambda home, export: home / "airflow" / "airflow.cfg"),
    ("demo_clinic", lambda home, export: home / "archive" / "small_clinic" / "20261120" / "theirs_abcdef12.csv"),
])
def test_make_import_refuses_in_one_line_before_the_run(home, tmp_path, airflow_db, practice, file_of):
    import subprocess

    from tests.integration.conftest import ROOT

    export = write_export(tmp_path / "x.csv", [patient("1")])
    for path in (home / "patient_store.db", home / "airflow" / "airflow.cfg",
                 home / "archive" / "small_clinic" / "20261120" / "theirs_abcdef12.csv"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not an export\n", encoding="utf-8")
    before = _files(tmp_path)

    result = subprocess.run(["make", "-s", "import", f"PRACTICE={practice}", f"FILE={file_of(home, export)}"],
                            cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=600)

    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "unknown_practice" in line or "export_file_not_allowed" in line
    assert "running patient_import" not in result.stdout
    assert _files(tmp_path) == before
