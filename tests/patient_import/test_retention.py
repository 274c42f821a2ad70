"""Retention (retention.py): patient files older than the period go, everything else stays."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from include.patient_import.retention import PURGED_AREAS, main, purge
from tools.corpus import accepted_rows, csv_text, patients_snapshot, prepare_home, run_import

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(home))
    monkeypatch.delenv("PATIENT_IMPORT_STORAGE", raising=False)
    monkeypatch.delenv("PATIENT_IMPORT_RETENTION_DAYS", raising=False)
    return home


def _file(root: Path, relative: str, age_days: float, now: datetime = NOW) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 10)
    when = now.timestamp() - age_days * 86400
    os.utime(path, (when, when))
    return path


OLD_FILES = {
    "archive": "archive/demo_clinic/20250101/Patient_List_1a2b3c4d.csv",
    "quarantine": "quarantine/demo_clinic/Patient_List_1a2b3c4d.csv",
    "outbox": "outbox/demo_clinic/demo_clinic_20250101_abc.csv",
    "reports": "reports/demo_clinic/demo_clinic_20250101_abc.json",
    "data_docs": "data_docs/demo_clinic/demo_clinic_20250101_abc/index.html",
}


def test_removes_files_older_than_the_period_from_every_purged_area(home):
    for relative in OLD_FILES.values():
        _file(home, relative, age_days=400)

    result = purge(365, now=NOW)

    assert sorted(map(str, result.removed)) == sorted(OLD_FILES.values())
    assert not any((home / r).exists() for r in OLD_FILES.values())
    assert result.by_area == dict.fromkeys(PURGED_AREAS, 1)
    assert result.bytes_removed == 50


def test_keeps_files_younger_than_the_period(home):
    young = [_file(home, r, age_days=364) for r in OLD_FILES.values()]

    result = purge(365, now=NOW)

    assert result.removed == [] and result.kept == len(young)
    assert all(p.exists() for p in young)


@pytest.mark.parametrize("relative", [
    "inbox/demo_clinic/waiting_export.csv",
    "staging/demo_clinic_20250101_abc/rows.parquet",
    "patient_store.db",
    "airflow/airflow.cfg",
    "reliability/faults.json",
])
def test_never_touches_inbox_staging_store_or_anything_outside_the_purged_areas(home, relative):
    path = _file(home, relative, age_days=4000)

    purge(1, now=NOW)

    assert path.exists()


def test_removes_the_folders_it_empties_but_keeps_the_area_roots(home):
    _file(home, OLD_FILES["data_docs"], age_days=400)
    _file(home, "data_docs/demo_clinic/demo_clinic_20250101_abc/static/styles.css", age_days=400)

    result = purge(365, now=NOW)

    assert not (home / "data_docs" / "demo_clinic").exists()
    assert (home / "data_docs").is_dir()
    assert {str(p) for p in result.removed_dirs} == {
        "data_docs/demo_clinic/demo_clinic_20250101_abc/static", "data_docs/demo_clinic/demo_clinic_20250101_abc",
        "data_docs/demo_clinic"}


def test_keeps_a_fresh_empty_folder_a_running_import_may_have_just_made(home):
    fresh = home / "outbox" / "new_clinic"
    fresh.mkdir(parents=True)

    result = purge(1)

    assert fresh.is_dir() and result.removed_dirs == []


def test_keeps_a_folder_that_still_holds_young_files(home):
    _file(home, "archive/demo_clinic/20250101/old.csv", age_days=400)
    young = _file(home, "archive/demo_clinic/20250101/young.csv", age_days=1)

    purge(365, now=NOW)

    assert young.exists()


def test_symbolic_links_are_neither_followed_nor_removed(home, tmp_path):
    outside = _file(tmp_path, "outside/precious.csv", age_days=4000)
    (home / "archive").mkdir()
    (home / "archive" / "link.csv").symlink_to(outside)
    (home / "archive" / "folder").symlink_to(outside.parent, target_is_directory=True)
    os.utime(home / "archive" / "link.csv", (0, 0), follow_symlinks=False)

    result = purge(1, now=NOW)

    assert outside.exists()
    assert (home / "archive" / "link.csv").is_symlink() and (home / "archive" / "folder").is_symlink()
    assert sorted(map(str, result.links_left)) == ["archive/folder", "archive/link.csv"]


def test_dry_run_removes_nothing_and_lists_what_would_go(home):
    paths = [_file(home, r, age_days=400) for r in OLD_FILES.values()]

    result = purge(365, now=NOW, dry_run=True)

    assert all(p.exists() for p in paths)
    assert len(result.removed) == len(paths)
    assert "data_docs/demo_clinic/demo_clinic_20250101_abc" in {str(p) for p in result.removed_dirs}


def test_counts_for_the_dag_hold_figures_and_no_paths(home):
    for relative in OLD_FILES.values():
        _file(home, relative, age_days=400)

    counts = purge(365, now=NOW).counts()

    assert counts["files_removed"] == 5 and counts["by_area"]["archive"] == 1
    assert "demo_clinic" not in json.dumps(counts)


def test_purges_the_storage_areas_when_they_are_not_under_the_home(home, tmp_path, monkeypatch):
    storage = tmp_path / "storage"
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", str(storage))
    old_in_storage = _file(storage, OLD_FILES["reports"], age_days=400)
    old_in_home = _file(home, OLD_FILES["reports"], age_days=400)

    purge(365, now=NOW)

    assert not old_in_storage.exists() and old_in_home.exists()


def test_refuses_a_period_under_one_day(home):
    with pytest.raises(ValueError, match="at least 1"):
        purge(0)


def test_command_prints_what_it_removed_using_the_configured_period(home, monkeypatch, capsys):
    monkeypatch.setenv("PATIENT_IMPORT_RETENTION_DAYS", "30")
    old = _file(home, OLD_FILES["quarantine"], age_days=31, now=datetime.now(timezone.utc))
    young = _file(home, OLD_FILES["reports"], age_days=29, now=datetime.now(timezone.utc))

    assert main([]) == 0

    out = capsys.readouterr().out
    assert f"removed {OLD_FILES['quarantine']}" in out
    assert "removed 1 files" in out and "older than 30 days" in out
    assert not old.exists() and young.exists()


def test_command_dry_run_says_would_remove_and_removes_nothing(home, capsys):
    old = _file(home, OLD_FILES["outbox"], age_days=10, now=datetime.now(timezone.utc))

    main(["--days", "5", "--dry-run"])

    assert f"would remove {OLD_FILES['outbox']}" in capsys.readouterr().out
    assert old.exists()


def test_make_purge_runs_the_command_with_days_and_dry_run(tmp_path):
    # DAYS reaches the command through the environment (the Makefile never expands a user's value).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "AIRFLOW_HOME")}
    result = subprocess.run(["make", "-s", "purge", "DAYS=30", "DRY_RUN=1"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, env={**env, "PATIENT_IMPORT_HOME": str(tmp_path)})

    assert result.returncode == 0, result.stderr
    assert "would remove" in result.stdout and "older than 30 days" in result.stdout


def test_purge_after_the_period_removes_an_import_files_but_keeps_its_patients(tmp_path, monkeypatch):
    engine = prepare_home(tmp_path / "home", monkeypatch, limits=False)
    export = tmp_path / "Patient List.csv"
    export.write_text(csv_text(accepted_rows(3)), encoding="utf-8")
    [imported] = run_import(engine, export, run_id="retention")
    written = [Path(p) for p in imported.report["files"].values() if p] + [Path(imported.summary["report"])]
    patients = patients_snapshot(engine)

    result = purge(365, now=datetime.now(timezone.utc) + timedelta(days=366))

    assert written and not any(p.exists() for p in written)
    assert {str(tmp_path / "home" / p) for p in result.removed} >= {str(p) for p in written}
    assert patients_snapshot(engine) == patients and len(patients) == 3
    assert export.exists()
    engine.dispose()
