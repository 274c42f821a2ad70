"""Inbox safety (files.py): links, paths leaving the inbox and files still being written.

A refused entry is reported in the log, never read, moved or followed; a file still being written
waits in the inbox until it is stable, and is imported then.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from include.patient_import import files, pipeline
from include.patient_import.extract import RunInfo, extract_exports
from include.patient_import.problems import InputRefused
from tools.corpus import PRACTICE_ID, accepted_rows, csv_text, patients_snapshot, prepare_home, run_import

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.fixture
def engine(tmp_path, monkeypatch):
    engine = prepare_home(tmp_path / "home", monkeypatch, limits=False)
    yield engine
    engine.dispose()


@pytest.fixture
def inbox(engine, tmp_path) -> Path:
    path = tmp_path / "home" / "inbox" / PRACTICE_ID
    path.mkdir(parents=True)
    return path


@pytest.fixture
def outside(tmp_path) -> Path:
    """An export outside every inbox (a share, another practice's folder, /etc)."""
    path = tmp_path / "elsewhere" / "Patient List.csv"
    path.parent.mkdir()
    path.write_text(csv_text(accepted_rows(2)), encoding="utf-8")
    return path


def _export(path: Path, *, age_seconds: float = 3600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(csv_text(accepted_rows(2)), encoding="utf-8")
    old = time.time() - age_seconds
    os.utime(path, (old, old))
    return path


def _run(engine, n: int = 1) -> list[str]:
    return extract_exports(engine, PRACTICE_ID, RunInfo(dag_id="t", run_id=f"inbox_{n}", map_index=0))


def _archived(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "home" / "archive").rglob("*") if p.is_file()]


# ---------------------------------------------------------------- links and paths


def test_symlink_to_a_file_outside_is_not_picked_up(inbox, outside):
    (inbox / "link.csv").symlink_to(outside)

    assert files.waiting_inbox_files(PRACTICE_ID, settle_seconds=0) == []


def test_symlink_in_the_inbox_is_reported_in_the_log(inbox, outside, caplog):
    (inbox / "link.csv").symlink_to(outside)

    with caplog.at_level(logging.WARNING, logger="include.patient_import.files"):
        files.waiting_inbox_files(PRACTICE_ID, settle_seconds=0)

    assert "link.csv is a symbolic link" in caplog.text
    assert str(outside) not in caplog.text


def test_symlink_is_neither_followed_moved_nor_archived_by_an_import(engine, inbox, outside, tmp_path):
    link = inbox / "link.csv"
    link.symlink_to(outside)
    content = outside.read_bytes()

    assert _run(engine) == []
    assert link.is_symlink() and os.readlink(link) == str(outside)
    assert outside.read_bytes() == content
    assert _archived(tmp_path) == []
    assert patients_snapshot(engine) == {}


def test_dangling_symlink_and_symlinked_folder_are_refused(inbox, outside):
    (inbox / "gone.csv").symlink_to(outside.parent / "missing.csv")
    (inbox / "folder").symlink_to(outside.parent, target_is_directory=True)

    assert files.waiting_inbox_files(PRACTICE_ID, settle_seconds=0) == []


def test_folder_and_named_pipe_in_the_inbox_are_refused_without_hanging(inbox):
    (inbox / "subfolder").mkdir()
    _export(inbox / "subfolder" / "nested.csv")
    os.mkfifo(inbox / "pipe.csv")  # opening it for reading would block forever

    assert files.waiting_inbox_files(PRACTICE_ID, settle_seconds=0) == []


def test_path_with_dotdot_leaving_the_inbox_is_refused(inbox, outside):
    escaping = inbox / ".." / ".." / ".." / "elsewhere" / outside.name

    assert escaping.is_file()
    assert files.refused_entry(escaping, inbox) == "points outside the inbox"


@pytest.mark.parametrize("practice_id", ["..", "../..", "../archive", f"{PRACTICE_ID}/..", "a/b"])
def test_practice_id_with_a_path_never_turns_another_folder_into_an_inbox(engine, tmp_path, practice_id, caplog):
    home = tmp_path / "home"
    bystanders = [_export(home / "loose_file.csv"), _export(home / "archive" / "note.csv"),
                  _export(home / "archive" / "20260101" / "old.csv")]
    store_files = sorted(p.name for p in home.glob("patient_store.db*"))

    # SPEC §7: the id is refused at entry, before any path is built from it.
    with pytest.raises(InputRefused, match="unknown_practice: .*letters, digits and underscores"):
        extract_exports(engine, practice_id, RunInfo(dag_id="t", run_id="dotdot", map_index=0))

    assert all(p.is_file() for p in bystanders)
    assert sorted(p.name for p in home.glob("patient_store.db*")) == store_files
    with caplog.at_level(logging.WARNING, logger="include.patient_import.files"):
        assert files.waiting_inbox_files(practice_id, settle_seconds=0) == []
    assert "letters, digits and underscores only" in caplog.text


def test_archived_exports_refuse_a_practice_id_with_a_path(engine, tmp_path):
    _export(tmp_path / "home" / "archive" / PRACTICE_ID / "20260101" / "x.csv")

    assert files.archived_exports(f"{PRACTICE_ID}/..") == []
    assert len(files.archived_exports(PRACTICE_ID)) == 1


# ---------------------------------------------------------------- files still being written


def test_file_modified_just_now_waits_in_the_inbox(inbox):
    _export(inbox / "fresh.csv", age_seconds=0)

    assert files.waiting_inbox_files(PRACTICE_ID, settle_seconds=30) == []


def test_file_growing_during_the_second_look_waits_even_with_an_old_mtime(inbox, monkeypatch):
    path = _export(inbox / "copying.csv")
    mtime = path.stat().st_mtime

    def copy_goes_on(_seconds):
        with path.open("a", encoding="utf-8") as handle:
            handle.write(csv_text(accepted_rows(1, 91500), header=None))
        os.utime(path, (mtime, mtime))  # a copier that keeps the source's mtime

    monkeypatch.setattr(files.time, "sleep", copy_goes_on)

    assert files.waiting_inbox_files(PRACTICE_ID, settle_seconds=5) == []


def test_stable_file_is_picked_up(inbox, monkeypatch):
    monkeypatch.setattr(files.time, "sleep", lambda _seconds: None)
    path = _export(inbox / "done.csv", age_seconds=60)

    assert [f.path for f in files.waiting_inbox_files(PRACTICE_ID, settle_seconds=5)] == [path]


def test_file_being_written_is_left_until_stable_then_imported(engine, inbox, tmp_path, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_SETTLE_SECONDS", "5")
    monkeypatch.setattr(files.time, "sleep", lambda _seconds: None)
    path = inbox / "Patient List.csv"
    _export(path, age_seconds=0)

    assert _run(engine, 1) == []
    assert path.is_file() and _archived(tmp_path) == []

    old = time.time() - 60  # the copy finished a minute ago
    os.utime(path, (old, old))
    [import_id] = _run(engine, 2)

    assert not path.exists()
    [archived] = _archived(tmp_path)
    assert " " not in archived.name
    summary = pipeline.run_stages(engine, import_id)["report"]
    assert summary["status"] == "completed"
    assert summary["counts"]["inserted"] == 2


def test_given_export_file_that_is_a_symlink_is_imported_from_its_copy_only(engine, tmp_path, outside):
    # An explicit export_file is the operator's choice: it is copied (never moved), links included.
    link = tmp_path / "link.csv"
    link.symlink_to(outside)

    [imported] = run_import(engine, link, run_id="given_link")

    assert imported.report["status"] == "completed"
    assert outside.is_file() and link.is_symlink()
