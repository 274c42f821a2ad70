"""Export dates and upload warnings through the real DAG (`dag.test()`): where the date came from,
the landing-time warning, the overwrite warning and the same file imported twice."""

from __future__ import annotations

import logging
import os
import time

import pytest

from tests.integration.test_patient_import_dag import patient, write_export

pytestmark = pytest.mark.integration


def _file_problems(report: dict) -> dict[str, dict]:
    return {x["code"]: x for x in report["problems"] if x["row"] is None}


def test_a_run_reports_the_date_source_and_warns_about_landing_dates_older_exports_and_repeats(
        runner, home, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATIENT_IMPORT_SETTLE_SECONDS", "0")
    caplog.set_level(logging.INFO, logger="include.patient_import")
    inbox_file = write_export(home / "inbox" / "demo_clinic" / "Genesis export 2026-11-25.csv",
                              [patient("801"), patient("802")])
    landed = time.time() - 60
    os.utime(inbox_file, (landed, landed))

    state, [by_name] = runner.run(practice_id="demo_clinic")

    report = runner.report(by_name)
    assert state == "success"
    assert (report["export"]["exported_on"], report["export"]["exported_on_source"]) == ("2026-11-25", "file_name")
    assert "export_date_from_landing_time" not in _file_problems(report)
    messages = [r.getMessage() for r in caplog.records]
    assert (f"import {report['import_id']}: 2 inserted, 0 updated, 0 unchanged, 0 skipped, 0 rejected (of 2 read); "
            "status completed") in messages
    # Each task's line for all its imports, besides Airflow's "Done. Returned value was ...".
    assert ("load_patients demo_clinic: 1 imports; 1 completed; 2 read, 2 inserted, 0 updated, 0 unchanged, "
            "0 skipped, 0 rejected") in messages
    assert any(m.startswith("report_imports demo_clinic: 1 imports; 1 completed; 2 read") for m in messages)

    # An older export, dated by when it landed: both warnings; its upload would overwrite newer data.
    undated = write_export(tmp_path / "Genesis export.csv", [patient("801", city="Nampa"), patient("802")])
    two_days_before = time.mktime((2026, 11, 20, 12, 0, 0, 0, 0, -1))
    os.utime(undated, (two_days_before, two_days_before))
    state, [older] = runner.run(practice_id="demo_clinic", export_file=str(undated))

    report = runner.report(older)
    problems = _file_problems(report)
    assert report["export"]["exported_on_source"] == "landed"
    assert problems["export_date_from_landing_time"]["severity"] == "warning"
    assert problems["upload_overwrites_newer_data"]["message"].startswith("every row is older")
    assert report["counts"]["skipped"] == 2 and state == "success"

    # The same file again, with its date given: the report names the earlier import.
    state, [again] = runner.run(practice_id="demo_clinic", export_file=str(undated), exported_on="2026-11-26")

    report = runner.report(again)
    assert report["export"]["exported_on_source"] == "conf"
    assert "export_date_from_landing_time" not in _file_problems(report)
    assert [e["import_id"] for e in report["export"]["already_imported"]] == [older["import_id"]]
