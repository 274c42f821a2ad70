"""Export dates (contract §6): from the conf, the file name or the landing day, and what the report,
the summary and the logs say about them; the upload-file warnings of contract §3 rule 7."""

from __future__ import annotations

import json
import logging
import os
from datetime import date, datetime

import pytest

from include.patient_import import files, pipeline, storage
from include.patient_import import problems as p
from include.patient_import.staging import Job
from include.patient_import.summary import format_report
from tools.corpus import PRACTICE_ID, accepted_rows, csv_text, prepare_home

# ---------------------------------------------------------------- the date in a file name

@pytest.mark.parametrize("name, expected", [
    ("Genesis export 2026-11-25.csv", date(2026, 11, 25)),
    ("Patients 11.25.2026.csv", date(2026, 11, 25)),
    ("Patients 11-25-2026.csv", date(2026, 11, 25)),
    ("20261125", date(2026, 11, 25)),
    ("Genesis Patient List 20261130.csv", date(2026, 11, 30)),
    ("export_2026_11_25.xlsx", date(2026, 11, 25)),
    ("export 2026.11.25.txt", date(2026, 11, 25)),
    ("Patients 1-5-2026.csv", date(2026, 1, 5)),
    ("Patients 01_05_2026.csv", date(2026, 1, 5)),
    ("Patients 11 25 2026.csv", date(2026, 11, 25)),
    ("export 2026-11-25T14-30-00.csv", date(2026, 11, 25)),
    ("Patients Nov 25 2026.csv", date(2026, 11, 25)),
    ("Patients November 25, 2026.csv", date(2026, 11, 25)),
    ("Patients 25-Nov-2026.csv", date(2026, 11, 25)),
    ("export 2026\u201011\u201025.csv", date(2026, 11, 25)),       # Unicode hyphens
    ("export \uff12\uff10\uff12\uff16-11-25.csv", date(2026, 11, 25)),  # full-width digits
    ("a 2026-11-25 (11.25.2026).csv", date(2026, 11, 25)),         # the same date twice
    ("Genesis_Patient_List_20261130_14352e5f.csv", date(2026, 11, 30)),  # an archived name
])
def test_the_common_date_forms_in_a_file_name_are_read(name, expected):
    assert files.date_in_name(name) == expected


@pytest.mark.parametrize("name", [
    "Patient List.csv",
    "Patient List 11-20.csv",            # no year
    "Patients 11-25-26.csv",             # two-digit year: which century, which order?
    "Patients 25-11-2026.csv",           # day first: impossible as month first
    "Patients 02-30-2026.csv",           # no such day
    "Patients 20261325.csv",             # no such month
    "Patients 2026-13-01.csv",
    "a 20261101-20261125.csv",           # two different dates: ambiguous
    "Patients 11-05-2026 (from 2026-11-04).csv",
    "v2 123456789.csv",                  # digits, not a date
    "Patients 202611251.csv",            # a date inside a longer number
    "Patients 11-25.2026.csv",           # mixed separators
    "Mayday 5 2026.csv",                 # a word that begins like a month
    "list.20261125",                     # the extension is not searched
    "Top 10 2 2026.csv",                 # one-digit numbers between spaces
])
def test_an_ambiguous_impossible_or_partial_date_in_a_name_is_not_used(name):
    assert files.date_in_name(name) is None


def test_the_export_date_comes_from_the_conf_then_the_name_then_the_landing_day(tmp_path, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_TIMEZONE", "UTC")
    named = tmp_path / "Genesis export 2026-11-25.csv"
    plain = tmp_path / "Genesis export.csv"
    for path in (named, plain):
        path.write_text("x", encoding="utf-8")
        landed = datetime(2026, 11, 27, 12).timestamp()
        os.utime(path, (landed, landed))

    assert files.dated_export(named, date(2026, 11, 20)) == (date(2026, 11, 20), files.FROM_CONF)
    assert files.dated_export(named) == (date(2026, 11, 25), files.FROM_FILE_NAME)
    assert files.dated_export(plain) == (date(2026, 11, 27), files.FROM_LANDING)


# ---------------------------------------------------------------- through the stages

@pytest.fixture
def engine(tmp_path, monkeypatch):
    return prepare_home(tmp_path / "home", monkeypatch)


def _export(folder, name: str, rows, landed: datetime | None = None):
    path = folder / name
    path.write_text(csv_text(rows), encoding="utf-8")
    if landed:
        os.utime(path, (landed.timestamp(), landed.timestamp()))
    return path


def _import(engine, path, run_id: str, exported_on: date | None = None) -> tuple[dict, dict]:
    run = pipeline.RunInfo(dag_id="dates", run_id=run_id, map_index=0)
    [done] = pipeline.run_import(engine, PRACTICE_ID, run, export_file=str(path), exported_on=exported_on)
    summary = done["report"]
    return json.loads(storage.path_of(summary["report"]).read_text(encoding="utf-8")), summary


def _file_codes(report: dict) -> set[str]:
    return {x["code"] for x in report["problems"] if x["row"] is None}


def test_the_report_says_where_the_export_date_came_from(engine, tmp_path):
    rows = accepted_rows(3)
    landed = datetime(2026, 11, 2, 12)
    by_conf, _ = _import(engine, _export(tmp_path, "Patients 11-01-2026.csv", rows, landed), "r1", date(2026, 11, 3))
    by_name, _ = _import(engine, _export(tmp_path, "Genesis export 2026-11-04.csv", rows, landed), "r2")
    by_landing, _ = _import(engine, _export(tmp_path, "Genesis export.csv", rows, landed), "r3")

    assert (by_conf["export"]["exported_on"], by_conf["export"]["exported_on_source"]) == ("2026-11-03", "conf")
    assert (by_name["export"]["exported_on"], by_name["export"]["exported_on_source"]) == ("2026-11-04", "file_name")
    assert by_landing["export"]["exported_on_source"] == "landed"
    assert p.EXPORT_DATE_FROM_LANDING_TIME not in _file_codes(by_conf) | _file_codes(by_name)
    [warning] = [x for x in by_landing["problems"] if x["code"] == p.EXPORT_DATE_FROM_LANDING_TIME]
    assert warning["severity"] == "warning" and warning["row"] is None
    assert by_landing["status"] == p.Status.COMPLETED.value  # a warning, not an error
    assert "(date from the file name)" in format_report(by_name)
    assert "WARNING export_date_from_landing_time" in format_report(by_landing)


def test_an_impossible_date_in_the_name_falls_back_to_the_landing_day_with_a_warning(engine, tmp_path):
    report, _ = _import(engine, _export(tmp_path, "Patients 25-11-2026.csv", accepted_rows(2),
                                        datetime(2026, 11, 9, 12)), "r1")

    assert report["export"]["exported_on_source"] == "landed"
    assert p.EXPORT_DATE_FROM_LANDING_TIME in _file_codes(report)


def test_an_export_older_than_the_store_warns_that_its_upload_would_overwrite_newer_data(engine, tmp_path):
    rows = accepted_rows(4)
    newer, _ = _import(engine, _export(tmp_path, "Patients 2026-11-20.csv", rows), "r1")
    older, _ = _import(engine, _export(tmp_path, "Patients 2026-11-10.csv", rows), "r2")

    assert p.UPLOAD_OVERWRITES_NEWER_DATA not in _file_codes(newer)
    assert older["counts"]["skipped"] == 4
    [warning] = [x for x in older["problems"] if x["code"] == p.UPLOAD_OVERWRITES_NEWER_DATA]
    assert warning["severity"] == "warning" and warning["message"].startswith("every row is older")
    assert older["files"]["upload"]  # the file the warning is about is still written
    text = format_report(older)
    assert "WARNING upload_overwrites_newer_data: every row is older" in text
    # No patient value in the warning: the rows' names are not in it.
    assert all(value not in warning["message"] for value in rows[0][1:3])


def test_a_partly_older_export_says_how_many_of_its_rows_would_overwrite_newer_data(engine, tmp_path):
    _import(engine, _export(tmp_path, "Patients 2026-11-20.csv", accepted_rows(2)), "r1")
    mixed, _ = _import(engine, _export(tmp_path, "Patients 2026-11-10.csv", accepted_rows(5)), "r2")

    [warning] = [x for x in mixed["problems"] if x["code"] == p.UPLOAD_OVERWRITES_NEWER_DATA]
    assert warning["message"].startswith("2 rows are older")


def test_a_newer_or_rejected_export_carries_no_overwrite_warning(engine, tmp_path):
    _import(engine, _export(tmp_path, "Patients 2026-11-10.csv", accepted_rows(3)), "r1")
    newer, _ = _import(engine, _export(tmp_path, "Patients 2026-11-20.csv", accepted_rows(3)), "r2")
    picture = tmp_path / "Patients 2026-11-05.csv"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    rejected, _ = _import(engine, picture, "r3")

    assert p.UPLOAD_OVERWRITES_NEWER_DATA not in _file_codes(newer) | _file_codes(rejected)
    assert rejected["status"] == p.Status.REJECTED.value


def test_the_same_file_imported_again_is_named_with_the_earlier_import_and_when(engine, tmp_path):
    export = _export(tmp_path, "Patients 2026-11-20.csv", accepted_rows(3))
    first, _ = _import(engine, export, "r1")
    second, _ = _import(engine, export, "r2")
    other, _ = _import(engine, _export(tmp_path, "Patients 2026-11-21.csv", accepted_rows(4)), "r3")

    assert first["export"]["already_imported"] == []
    assert other["export"]["already_imported"] == []
    [earlier] = second["export"]["already_imported"]
    assert earlier["import_id"] == first["import_id"] and earlier["status"] == first["status"]
    assert earlier["imported_at"][:10] == first["finished_at"][:10]
    assert f"was already imported: {first['import_id']} on " in format_report(second)
    assert "already imported" not in format_report(first)


def test_the_stages_log_what_they_decided_in_counts(engine, tmp_path, caplog):
    rows = accepted_rows(3) + [["", "NoAccount", "Row"] + accepted_rows(1)[0][3:]]
    caplog.set_level(logging.INFO, logger="include.patient_import")
    report, _ = _import(engine, _export(tmp_path, "Patients 2026-11-20.csv", rows), "r1")
    import_id = report["import_id"]
    messages = [r.getMessage() for r in caplog.records]

    assert f"import {import_id}: validated 4 rows; 1 errors, 0 warnings, 0 info" in messages
    assert f"import {import_id}: upload file with 3 rows; rejected-rows file written" in messages
    assert (f"import {import_id}: 3 inserted, 0 updated, 0 unchanged, 0 skipped, 1 rejected (of 4 read); "
            "status completed_with_errors") in messages
    assert any(m.startswith(f"import {import_id}: status completed_with_errors; 4 read, 3 inserted") for m in messages)
    assert any(m.startswith(f"extract {PRACTICE_ID}: 1 exports to import") for m in messages)
    # Counts and codes only: no name from the rows.
    assert not any(value in m for m in messages for row in rows for value in row[1:3] if value)


# ---------------------------------------------------------------- the migration

def test_migration_0003_keeps_older_imports_with_an_unknown_date_source(tmp_path):
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from include.patient_import import records
    from include.patient_import.report import build_report
    from include.patient_import.store import MIGRATIONS_DIR, Import, create_store_engine

    engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.execute(sa.text(
            "INSERT INTO imports (id, practice_id, dag_run_id, map_index, run_type, export_name, export_sha256,"
            " export_bytes, exported_on, dry_run, status, read, inserted, updated, unchanged, skipped, rejected,"
            " started_at) VALUES ('old_1', 'demo', 'r', 0, 'manual', 'e.csv', '0', 0, '2025-03-01', false,"
            " 'completed', 0, 0, 0, 0, 0, 0, '2025-03-01 00:00:00')"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    columns = {c["name"] for c in sa.inspect(engine).get_columns("imports")}
    assert columns == set(Import.__table__.columns.keys())  # store.py's model in step with the migrations
    with engine.connect() as conn:
        record = records.get_import(conn, "old_1")
    assert build_report(record, ())["export"]["exported_on_source"] is None
    engine.dispose()


def test_a_backfill_reimport_keeps_where_the_archived_exports_date_came_from(engine, tmp_path, monkeypatch):
    from datetime import timezone

    monkeypatch.setenv("PATIENT_IMPORT_TIMEZONE", "UTC")
    inbox = tmp_path / "home" / "inbox" / PRACTICE_ID
    inbox.mkdir(parents=True)
    _export(inbox, "Patients 2026-11-20.csv", accepted_rows(2), datetime(2026, 11, 22, 12))
    _export(inbox, "Patients.csv", accepted_rows(2, first=92001), datetime(2026, 11, 20, 12))
    scheduled = pipeline.RunInfo(dag_id="dates", run_id="scheduled", map_index=0)
    first = pipeline.extract_exports(engine, PRACTICE_ID, scheduled)
    given = _export(tmp_path, "Patients 2026-11-18.csv", accepted_rows(2, first=93001))  # dated by the conf
    first += pipeline.extract_exports(engine, PRACTICE_ID, scheduled, export_file=str(given),
                                      exported_on=date(2026, 11, 20))
    backfill = pipeline.RunInfo(dag_id="dates", run_id="backfill", run_type="backfill", map_index=0,
                                interval_start=datetime(2026, 11, 20, tzinfo=timezone.utc),
                                interval_end=datetime(2026, 11, 21, tzinfo=timezone.utc))

    again = pipeline.extract_exports(engine, PRACTICE_ID, backfill)

    def sources(ids):
        return sorted((Job.load(i).sha256, Job.load(i).exported_on_source) for i in ids)

    assert sorted(source for _, source in sources(first)) == ["conf", "file_name", "landed"]
    assert sources(again) == sources(first)
