"""Undo (SPEC §8): on SQLite and PostgreSQL, an undone import leaves the store as it was before it;
patients changed since are left and listed; undoing twice changes nothing; a killed undo changes
nothing and its re-run ends where a clean one does."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from include.patient_import import audit
from include.patient_import import problems as p
from include.patient_import.store import Import
from include.patient_import.undo import NotUndoable, undo_import, undo_report_path
from tests.patient_import import generated as g
from tools import corpus
from tools.corpus import MARKERS

# Tier: unit, the PostgreSQL variants `postgres` (tests/conftest.py).

CHILD_TIMEOUT_SECONDS = 120


@pytest.fixture
def imports(store_url, tmp_path, monkeypatch):
    found = g.Imports(tmp_path, monkeypatch, url=store_url)
    found.url = store_url
    yield found
    found.engine.dispose()


def _record(engine, import_id: str) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(Import.__table__).where(Import.__table__.c.id == import_id))
                    .mappings().one())


def test_undoing_b_gives_back_the_store_as_a_left_it(imports):
    imports.run("a")
    after_a = imports.patients()
    b = imports.run("b")
    assert imports.patients() != after_a

    result = undo_import(imports.engine, b.report["import_id"], by="office.lead")

    assert imports.patients() == after_a
    assert (result.removed, result.changed_since) == (g.NEW, [])
    # 9 updated; the 21 whose export date only moved on get it back but are not "restored"
    assert result.restored == g.UPDATED


def test_undo_leaves_patients_changed_since_as_the_later_import_made_them(imports):
    a = imports.run("a")
    imports.run("c")
    after_c = imports.patients()

    result = undo_import(imports.engine, a.report["import_id"], by="office.lead")

    changed = sorted(g.account(r) for r in g.C_LAST_ROWS)
    assert result.changed_since == changed
    assert imports.patients() == {k: after_c[k] for k in changed}
    assert result.removed == g.PATIENTS - len(changed)


def test_undoing_the_later_import_first_completes_the_earlier_undo(imports):
    a, c = imports.run("a"), imports.run("c")
    undo_import(imports.engine, a.report["import_id"], by="office.lead")

    undo_import(imports.engine, c.report["import_id"], by="office.lead")
    again = undo_import(imports.engine, a.report["import_id"], by="office.lead")

    assert (again.removed, again.changed_since, again.already_undone) == (len(g.C_LAST_ROWS), [], False)
    assert imports.patients() == {}
    # Its report is the whole undo's, not the second pass's part.
    document = json.loads(Path(again.report).read_text(encoding="utf-8"))
    assert document["counts"] == {"removed": g.PATIENTS, "restored": 0, "changed_since": 0}
    assert document["this_undo"] == {"removed": len(g.C_LAST_ROWS), "restored": 0}
    assert (again.removed_in_all, again.restored_in_all) == (g.PATIENTS, 0)


def test_a_patient_a_later_import_only_saw_is_neither_restored_nor_changed_since(imports):
    imports.run("a")
    values_after_a = _values(imports.patients())
    b = imports.run("b")
    imports.run("b_again")  # the same file a day later: every patient of B only seen

    result = undo_import(imports.engine, b.report["import_id"], by="office.lead")

    assert (result.removed, result.restored, result.changed_since) == (g.NEW, g.UPDATED, [])
    assert _values(imports.patients()) == values_after_a
    # The later export did see them: their export date stays where it moved.
    assert {row["last_seen_exported_on"] for row in imports.patients().values()} == {g.B_AGAIN_ON}


def _values(patients: dict[str, dict]) -> dict[str, dict]:
    return {account: {f: v for f, v in row.items() if f != "last_seen_exported_on"}
            for account, row in patients.items()}


def test_undoing_twice_changes_nothing_the_second_time(imports):
    imports.run("a")
    b = imports.run("b")
    first = undo_import(imports.engine, b.report["import_id"], by="office.lead")
    store, record = imports.patients(), _record(imports.engine, b.report["import_id"])

    second = undo_import(imports.engine, b.report["import_id"], by="someone.else")

    assert imports.patients() == store
    assert _record(imports.engine, b.report["import_id"]) == record
    assert (second.removed, second.restored, second.already_undone) == (0, 0, True)
    assert (second.undone_at, second.undone_by) == (first.undone_at, "office.lead")
    with imports.engine.connect() as conn:
        assert [e["action"] for e in audit.entries(conn, b.report["import_id"])] == ["triggered", "undone"]


def test_undo_records_status_who_when_and_its_own_report_without_values(imports):
    imports.run("a")
    b = imports.run("b")

    result = undo_import(imports.engine, b.report["import_id"], by="office.lead")

    record = _record(imports.engine, b.report["import_id"])
    assert record["status"] == p.Status.UNDONE == result.status
    assert record["undone_by"] == "office.lead" and record["undone_at"] is not None
    path = undo_report_path("demo_clinic", b.report["import_id"])
    assert str(path) == result.report
    assert Path(b.summary["report"]).parent == Path(result.report).parent
    document = json.loads(Path(result.report).read_text(encoding="utf-8"))
    assert document["counts"] == {"removed": g.NEW, "restored": g.UPDATED, "changed_since": 0}
    assert document["undone_by"] == "office.lead"
    assert not [m for m in MARKERS if m in json.dumps(document)]
    with imports.engine.connect() as conn:
        undone = [e for e in audit.entries(conn, b.report["import_id"]) if e["action"] == audit.UNDONE]
    assert [e["who"] for e in undone] == ["office.lead"]


def test_an_undone_import_says_so_in_its_report_when_finalised_again(imports):
    from include.patient_import import report

    imports.run("a")
    b = imports.run("b")
    undo_import(imports.engine, b.report["import_id"], by="office.lead")
    with imports.engine.connect() as conn:
        record = dict(conn.execute(sa.select(Import.__table__).where(
            Import.__table__.c.id == b.report["import_id"])).mappings().one())
    document = report.build_report(record, ())
    assert document["status"] == "undone" and document["undo"]["undone_by"] == "office.lead"


@pytest.mark.parametrize("which", ["dry_run", "rejected", "unknown"])
def test_what_changed_no_patient_cannot_be_undone(imports, which, tmp_path):
    imports.run("a")
    if which == "dry_run":
        import_id = imports.run("b", dry_run=True).report["import_id"]
    elif which == "rejected":
        empty = tmp_path / "exports" / "empty.csv"
        empty.write_text("", encoding="utf-8")
        imports.files["empty"], imports.dates["empty"] = empty, g.B_ON
        import_id = imports.run("empty").report["import_id"]
    else:
        import_id = "demo_clinic_20261103_000000000000"
    store = imports.patients()

    with pytest.raises(NotUndoable, match=import_id):
        undo_import(imports.engine, import_id, by="office.lead")
    assert imports.patients() == store


# ---------------------------------------------------------------- killed in the middle


def _undo_until_killed(url: str, env: dict[str, str], import_id: str, signal_file: str) -> None:
    """A child process: the undo, paused for good once it has changed patients in its transaction."""
    os.environ.clear()
    os.environ.update(env)
    from sqlalchemy import event

    from include.patient_import.store import create_store_engine
    from include.patient_import.undo import undo_import as undo

    engine = create_store_engine(url)

    @event.listens_for(engine, "after_cursor_execute")
    def _pause(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.lstrip().upper().startswith(("DELETE FROM PATIENTS", "UPDATE PATIENTS")):
            Path(signal_file).write_text(str(os.getpid()), encoding="utf-8")
            while True:
                time.sleep(0.05)  # until the parent's SIGKILL

    undo(engine, import_id, by="killed.worker")


def test_a_killed_undo_changes_nothing_and_its_rerun_ends_as_a_clean_one(imports, tmp_path):
    imports.run("a")
    after_a = imports.patients()
    b = imports.run("b")
    after_b = imports.patients()
    signal_file = tmp_path / "paused"
    child = multiprocessing.get_context("spawn").Process(
        target=_undo_until_killed, args=(imports.url, dict(os.environ), b.report["import_id"], str(signal_file)))
    child.start()
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
    while not signal_file.exists():
        assert child.exitcode is None, f"the undo process ended ({child.exitcode}) before it changed a patient"
        assert time.monotonic() < deadline, "the undo process never reached its first patient write"
        time.sleep(0.05)  # polling for the child's signal file
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL

    assert imports.patients() == after_b
    assert _record(imports.engine, b.report["import_id"])["status"] == p.Status.COMPLETED
    result = undo_import(imports.engine, b.report["import_id"], by="office.lead")

    assert imports.patients() == after_a
    assert (result.removed, result.restored, result.already_undone) == (g.NEW, g.UPDATED, False)


# ---------------------------------------------------------------- make undo


def test_the_command_undoes_and_says_what_it_did(tmp_path, monkeypatch, capsys):
    from include.patient_import.undo import main

    monkeypatch.delenv("AIRFLOW_CONN_PATIENT_STORE", raising=False)
    found = g.Imports(tmp_path, monkeypatch)  # the home's own store: the one `make undo` opens
    found.run("a")
    b = found.run("b")
    found.engine.dispose()

    assert main([b.report["import_id"], "--by", "office.lead"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert (summary["status"], summary["removed"], summary["changed_since"]) == ("undone", g.NEW, 0)
    assert main(["../../etc/passwd"]) == 1
    assert "not an import id" in capsys.readouterr().err


# ---------------------------------------------------------------- the practice's lock


def test_undo_waits_for_the_practice_lock_an_import_holds(imports):
    """The undo runs under the lock the load takes (`store.lock_practice`): while another
    transaction of the practice holds it, the undo changes nothing; once released, it completes."""
    import threading

    from include.patient_import.store import create_store_engine, lock_practice

    imports.run("a")
    b = imports.run("b")
    after_b = imports.patients()
    holder = create_store_engine(imports.url)
    done: dict = {}
    with holder.begin() as conn:
        lock_practice(conn, "demo_clinic")  # on SQLite, BEGIN IMMEDIATE is the lock
        worker = threading.Thread(target=lambda: done.setdefault(
            "result", undo_import(imports.engine, b.report["import_id"], by="office.lead")))
        worker.start()
        _wait_until_blocked(imports.url, worker)
        reader = create_store_engine(imports.url, read_only=True)  # SQLite: reads beside the held lock
        assert corpus.patients_snapshot(reader) == after_b and "result" not in done
        reader.dispose()
    worker.join(timeout=CHILD_TIMEOUT_SECONDS)
    holder.dispose()

    assert done["result"].removed == g.NEW


def _wait_until_blocked(url: str, worker) -> None:
    """Until the undo waits on the lock: PostgreSQL shows it waiting on an advisory lock; SQLite's
    waiting writer is in its busy handler, which has no probe: there the undo's thread alive after
    the lock holder's read is what can be checked."""
    if not url.startswith("postgresql"):
        assert worker.is_alive()
        return
    from include.patient_import.store import create_store_engine

    probe = create_store_engine(url)
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
    try:
        while True:
            with probe.connect() as conn:
                waiting = conn.execute(sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).scalar_one()
            if waiting:
                return
            assert worker.is_alive(), "the undo finished while the practice was locked"
            assert time.monotonic() < deadline, "the undo never asked for the practice's lock"
            time.sleep(0.05)  # polling the server's lock table
    finally:
        probe.dispose()


def test_the_undone_imports_own_report_says_undone_and_links_the_undos(imports):
    """The report file (SPEC §6, read by scripts without the store) is written again: `undone`,
    who and when, the undo's report; what the import did is kept as it ran."""
    imports.run("a")
    b = imports.run("b")
    path = Path(b.summary["report"])
    as_ran = json.loads(path.read_text(encoding="utf-8"))

    result = undo_import(imports.engine, b.report["import_id"], by="office.lead")

    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["status"] == p.Status.UNDONE and as_ran["status"] == p.Status.COMPLETED
    assert document["undo"] == {"undone_at": result.undone_at, "undone_by": "office.lead", "report": result.report}
    assert Path(document["undo"]["report"]).is_file()
    for key in ("counts", "problems", "problem_counts", "changes", "export", "approval", "files", "finished_at"):
        assert document[key] == as_ran[key], key
    assert not [m for m in MARKERS if m in path.read_text(encoding="utf-8")]

    undo_import(imports.engine, b.report["import_id"], by="someone.else")  # nothing left: the same report
    assert json.loads(path.read_text(encoding="utf-8"))["undo"]["undone_by"] == "office.lead"


def test_an_undo_does_not_bring_back_a_report_retention_purged(imports):
    imports.run("a")
    b = imports.run("b")
    Path(b.summary["report"]).unlink()

    result = undo_import(imports.engine, b.report["import_id"], by="office.lead")

    assert not Path(b.summary["report"]).exists()
    assert Path(result.report).is_file()
