"""End to end through the real DAG (`dag.test()`), on a real SQLite store and real file areas."""

from __future__ import annotations

import codecs
import csv
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HEADER = ["Account #", "Last Name", "First Name", "Address", "City", "State", "Zip", "Home Phone",
          "Cell Phone", "Email", "Birth Date", "Sex", "Status"]


def patient(acct: str, last: str = "Lopez", first: str = "Ana", *, city: str = "Boise", zip_: str = "83705",
            email: str = "", status: str = "Active", phone: str = "2089478877") -> list[str]:
    return [acct, last, first, "15 Sunset Blvd", city, "ID", zip_, phone, "", email, "4/5/1980", "F", status]


def write_export(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def codes(report: dict) -> dict[int | None, set[str]]:
    found: dict[int | None, set[str]] = {}
    for problem in report["problems"]:
        found.setdefault(problem["row"], set()).add(problem["code"])
    return found


def test_clean_export_given_as_file_is_imported_and_left_untouched(runner, tmp_path):
    export = write_export(tmp_path / "drop" / "patients.csv", [patient("00101"), patient("102", "O'Brien", "Renée")])
    before = digest(export)

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(export), exported_on="2026-11-20")

    assert state == "success"
    report = runner.report(summary)
    assert report["status"] == "completed"
    assert report["counts"] == {"read": 2, "inserted": 2, "updated": 0, "unchanged": 0, "skipped": 0, "rejected": 0}
    assert digest(export) == before
    stored = runner.patients("demo_clinic")
    assert set(stored) == {"101", "102"}
    assert stored["102"]["first_name"] == "Renée" and stored["102"]["last_name"] == "O'Brien"
    assert str(stored["101"]["last_seen_exported_on"]) == "2026-11-20"
    archive = Path(report["files"]["archive"])
    assert archive.read_bytes() == export.read_bytes() and "-" not in archive.name and " " not in archive.name
    upload = Path(report["files"]["upload"])
    assert upload.read_bytes().startswith(codecs.BOM_UTF8)  # Excel on Windows reads it as UTF-8 (SPEC §5)
    first_line = upload.read_text(encoding="utf-8-sig").splitlines()[0]
    assert first_line == ('"ClientID","TPSID","Email","FirstName","LastName","Address","City","State","Zip",'
                          '"Phone","WorkPhone","Cell"')
    assert Path(report["files"]["data_docs"]).is_file()


def test_bad_rows_are_rejected_and_kept_for_the_office(runner, tmp_path):
    rows = [patient("201"), patient("", "Nobody"), patient("1.23457E+11"), patient("204", last=""),
            patient("205"), patient("205"), patient("206", "Smith"), patient("206", "Smyth"),
            patient("207", email="not-an-email"), patient("208"), patient("209"), patient("210")]
    rows += [patient(str(211 + i)) for i in range(10)]  # under a quarter of the rows rejected
    export = write_export(tmp_path / "bad rows.csv", rows)

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(export), exported_on="2026-11-20")

    report = runner.report(summary)
    assert state == "success" and report["status"] == "completed_with_errors"
    assert report["counts"] == {"read": 22, "inserted": 16, "updated": 0, "unchanged": 0, "skipped": 1, "rejected": 5}
    found = codes(report)
    assert "missing_required_field" in found[3] and "invalid_account_number" in found[4]
    assert "missing_required_field" in found[5] and found[7] == {"duplicate_row"}
    assert found[8] == found[9] == {"duplicate_account_number"} and "invalid_email" in found[10]
    assert set(runner.patients("demo_clinic")) == ({"201", "205", "207", "208", "209"}
                                                   | {str(i) for i in range(210, 221)})
    rejected = Path(report["files"]["rejected_rows"]).read_text(encoding="utf-8-sig")
    assert rejected.splitlines()[0].startswith('"Account #","Last Name"') and "Import Problem" in rejected
    assert len(rejected.strip().splitlines()) == 1 + 5


def test_reimporting_the_same_file_changes_nothing(runner, tmp_path):
    export = write_export(tmp_path / "p.csv", [patient("301"), patient("302")])
    runner.run(practice_id="demo_clinic", export_file=str(export), exported_on="2026-11-20")
    before = runner.patients("demo_clinic")

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(export), exported_on="2026-11-20")

    report = runner.report(summary)
    assert state == "success"
    assert report["counts"] == {"read": 2, "inserted": 0, "updated": 0, "unchanged": 2, "skipped": 0, "rejected": 0}
    assert runner.patients("demo_clinic") == before


def test_newer_export_updates_and_older_export_never_regresses(runner, tmp_path):
    runner.run(practice_id="demo_clinic", exported_on="2026-11-10",
               export_file=str(write_export(tmp_path / "a.csv", [patient("401", city="Boise"), patient("402")])))
    state, [newer] = runner.run(
        practice_id="demo_clinic", exported_on="2026-11-20",
        export_file=str(write_export(tmp_path / "b.csv", [patient("401", city="Nampa"), patient("402")])))
    assert runner.report(newer)["counts"]["updated"] == 1
    assert runner.report(newer)["counts"]["unchanged"] == 1

    state, [older] = runner.run(
        practice_id="demo_clinic", exported_on="2026-11-15",
        export_file=str(write_export(tmp_path / "c.csv",
                                     [patient("401", city="Meridian"), patient("402", city="Eagle")])))

    report = runner.report(older)
    assert report["counts"] == {"read": 2, "inserted": 0, "updated": 0, "unchanged": 0, "skipped": 2, "rejected": 0}
    assert codes(report)[2] == {"older_than_stored"} and codes(report)[3] == {"older_than_stored"}
    stored = runner.patients("demo_clinic")
    # 402 was not changed by the newer export, yet its newer export date still protects it.
    assert stored["401"]["city"] == "Nampa" and stored["402"]["city"] == "Boise"
    assert str(stored["402"]["last_seen_exported_on"]) == "2026-11-20"


def test_more_than_a_quarter_of_rows_rejected_rejects_the_file(runner, tmp_path):
    export = write_export(tmp_path / "wrong.csv", [patient("1"), patient(""), patient("x1"), patient("4")])

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(export), exported_on="2026-11-20")

    report = runner.report(summary)
    assert state == "failed" and report["status"] == "rejected"
    assert report["counts"] == {"read": 4, "inserted": 0, "updated": 0, "unchanged": 0, "skipped": 0, "rejected": 4}
    assert "too_many_rejected_rows" in codes(report)[None]
    assert runner.patients("demo_clinic") == {}


def test_capacity_exceeded_rejects_the_whole_import_and_fails_the_run(runner, tmp_path):
    export = write_export(tmp_path / "big.csv", [patient(str(500 + i)) for i in range(6)])

    state, [summary] = runner.run(practice_id="small_clinic", export_file=str(export), exported_on="2026-11-20")

    report = runner.report(summary)
    assert state == "failed"
    assert report["status"] == "rejected"
    assert report["counts"] == {"read": 6, "inserted": 0, "updated": 0, "unchanged": 0, "skipped": 0, "rejected": 6}
    [problem] = [x for x in report["problems"] if x["row"] is None]
    assert problem["code"] == "capacity_exceeded" and "capacity of 5" in problem["message"]
    assert report["details"] == {"capacity": 5, "stored": 0, "new": 6, "overflow": 1}
    assert runner.patients("small_clinic") == {}
    assert Path(report["files"]["quarantine"]).is_file() and report["files"]["upload"] is None


def test_a_file_that_is_not_an_export_is_rejected_quarantined_and_left_intact(runner, tmp_path):
    pdf = tmp_path / "patients.csv"
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n")
    before = digest(pdf)

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(pdf), exported_on="2026-11-20")

    report = runner.report(summary)
    assert state == "failed" and report["status"] == "rejected"
    assert [x["code"] for x in report["problems"]] == ["unsupported_file_type"]
    assert report["counts"]["read"] == 0 and report["counts"]["rejected"] == 0
    assert digest(pdf) == before
    assert Path(report["files"]["quarantine"]).read_bytes() == pdf.read_bytes()
    assert Path(report["files"]["archive"]).read_bytes() == pdf.read_bytes()


def test_dry_run_changes_nothing_but_its_report(runner, home, tmp_path):
    export = write_export(tmp_path / "dry.csv", [patient("601"), patient("602")])

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(export),
                                  exported_on="2026-11-20", dry_run=True)

    report = runner.report(summary)
    assert state == "success" and report["dry_run"] is True
    assert report["counts"]["inserted"] == 2
    assert runner.patients("demo_clinic") == {}
    for area in ("archive", "outbox", "quarantine", "inbox"):
        assert not any(p.is_file() for p in (home / area).rglob("*")), area


def test_inbox_file_with_spaces_is_moved_to_the_archive_and_imported(runner, home):
    inbox_file = write_export(home / "inbox" / "demo_clinic" / "Patient List - Nov 20261119.csv",
                              [patient("701"), patient("702", status="Inactive")])
    landed = time.time() - 60
    os.utime(inbox_file, (landed, landed))

    state, [summary] = runner.run(practice_id="demo_clinic")

    report = runner.report(summary)
    assert state == "success" and report["export"]["exported_on"] == "2026-11-19"
    assert not inbox_file.exists()
    assert Path(report["files"]["archive"]).parent.name == "20261119"
    assert runner.patients("demo_clinic")["702"]["status"] == "inactive"
    upload = Path(report["files"]["upload"])
    assert " " not in upload.name and "-" not in upload.name


def test_inactive_new_patient_is_skipped_without_drip_education(runner, tmp_path):
    export = write_export(tmp_path / "x.csv", [patient("801"), patient("802", status="Inactive")])

    state, [summary] = runner.run(practice_id="nodrip_clinic", export_file=str(export), exported_on="2026-11-20")

    report = runner.report(summary)
    assert codes(report)[3] == {"inactive_without_drip_education"}
    assert set(runner.patients("nodrip_clinic")) == {"801"}


def test_make_import_runs_a_file_with_spaces_and_fails_on_rejection(home, tmp_path, airflow_db):
    good = write_export(tmp_path / "My Export 20261120.csv", [patient("901")])
    bad = tmp_path / "not an export.csv"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    env = os.environ.copy()

    ok = subprocess.run(["make", "-s", "import", "PRACTICE=demo_clinic", f"FILE={good}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
    rejected = subprocess.run(["make", "-s", "import", "PRACTICE=demo_clinic", f"FILE={bad}"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)

    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "status COMPLETED" in ok.stdout and "inserted 1" in ok.stdout and "report:" in ok.stdout
    assert rejected.returncode != 0 and "unsupported_file_type" in rejected.stdout


def test_a_run_with_the_file_areas_in_an_object_store_keeps_every_file_there(runner, home, s3_storage,
                                                                              object_store):
    from include.patient_import import settings, storage

    inbox_file = settings.area("inbox", "demo_clinic") / "Patient List 20261118.csv"
    rows = [patient("801"), patient("802", "O'Brien", "Renée"), patient("803"), patient("804"), patient("805", last="")]
    with storage.writing(inbox_file, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *rows])

    state, [summary] = runner.run(practice_id="demo_clinic")

    report = runner.report(summary)
    assert state == "success" and report["status"] == "completed_with_errors"
    assert report["counts"]["inserted"] == 4 and report["counts"]["rejected"] == 1
    assert not inbox_file.exists()
    for kind in ("archive", "upload", "rejected_rows", "data_docs"):
        assert report["files"][kind].startswith(f"{s3_storage}/"), kind
        assert storage.path_of(report["files"][kind]).is_file(), kind
    assert summary["report_path"].startswith(f"{s3_storage}/reports/demo_clinic/")
    assert not [k for k in object_store.keys(s3_storage) if k.startswith(("staging/", "inbox/"))]
    # Nothing else on the local disk: the store (SQLite here) and no file area.
    assert [p.name for p in home.iterdir() if not p.name.startswith("patient_store.db")] == []
