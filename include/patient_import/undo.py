"""Taking a completed import back (SPEC §8 "Undo").

One transaction under the practice's lock (the load's, `store.lock_practice`) reads the import's
change log (`changes.py`): a patient still exactly as the import left it (every value equal to the
entry's after-image) is put back: removed when the import inserted it, given its before-image when
the import updated it or only moved its `last_seen_exported_on` forward. A patient that something
later changed again (another import, an undo of one) is left as it is and listed `changed_since`;
its entry stays pending, so undoing that later import first and then this one again completes it.

Each entry put back is marked (`patient_changes.reverted_at`) in the same transaction: undoing
twice changes nothing the second time, and a crash part-way rolls everything back for a re-run.
The import becomes `undone` (`undone_at`, `undone_by`, an audit entry), and the undo writes its
own JSON report beside the import's: counts and account numbers, never a patient value; the
import's own report is written again to say `undone` and link it (`report_file.rewrite_after_undo`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.patient_import import audit, files, storage
from include.patient_import import problems as p
from include.patient_import.changes import INSERTED, SEEN, UPDATED, VALUE_COLUMNS, pending_accounts, undo_refusal
from include.patient_import.files import undo_report_path
from include.patient_import.report_file import rewrite_after_undo
from include.patient_import.store import IMAGE_COLUMNS, Import, Patient, PatientChange, lock_practice, utc

BOOKKEEPING = tuple(c for c in IMAGE_COLUMNS if c not in VALUE_COLUMNS)

log = logging.getLogger(__name__)



class NotUndoable(Exception):
    """The import cannot be undone (unknown, a dry run, rejected, failed, still running, or loaded
    before the change log existed). The message names the import id and why, nothing else."""


@dataclass(frozen=True)
class UndoResult:
    """What one undo did. `removed`: patients the import inserted, deleted now; `restored`: patients
    it updated, given their before-image back now (patients it only saw get their export date back
    but are not counted); `removed_in_all` / `restored_in_all`: the same over every undo of the
    import so far (a re-run after a crash, a second pass after undoing a later import);
    `changed_since`: account numbers left as a later change made them (all still pending, from this
    undo or an earlier one); `already_undone`: nothing was left to put back."""

    import_id: str
    practice_id: str
    status: str
    removed: int = 0
    restored: int = 0
    removed_in_all: int = 0
    restored_in_all: int = 0
    changed_since: list[str] = field(default_factory=list)
    undone_at: str | None = None
    undone_by: str | None = None
    already_undone: bool = False
    report: str | None = None

    def summary(self) -> dict:
        """The small, value-free summary a task returns and `make undo` prints."""
        return {"import_id": self.import_id, "practice_id": self.practice_id, "status": self.status,
                "removed": self.removed, "restored": self.restored, "changed_since": len(self.changed_since),
                "already_undone": self.already_undone, "report": self.report}


def _as_left(changes: sa.Table, patients: sa.Table) -> sa.ColumnElement[bool]:
    """The patient holds the values the entry's import wrote (NULL-safe on both databases).

    Values only: a later import that found the patient unchanged moved its `last_seen_exported_on`
    on, and that alone does not make it "changed since".
    """
    return sa.and_(*[patients.c[c].is_not_distinct_from(changes.c[f"after_{c}"]) for c in VALUE_COLUMNS])


def _before_image(changes: sa.Table, patients: sa.Table) -> dict[str, sa.ColumnElement]:
    """What an undo writes for an updated patient: the values before the import, and the bookkeeping."""
    return {**{c: changes.c[f"before_{c}"] for c in VALUE_COLUMNS}, **_bookkeeping_before(changes, patients)}


def _bookkeeping_before(changes: sa.Table, patients: sa.Table) -> dict[str, sa.ColumnElement]:
    """The bookkeeping before the import, unless a later import moved it on (its
    `last_seen_exported_on` stays: that export did see the patient)."""
    return {column: sa.case(
        (patients.c[column].is_not_distinct_from(changes.c[f"after_{column}"]), changes.c[f"before_{column}"]),
        else_=patients.c[column]) for column in BOOKKEEPING}


def undo_import(engine: Engine, import_id: str, *, by: str | None) -> UndoResult:
    """Undo one import (SPEC §8); safe to run again, and again after a crash.

    Args:
        engine: the patient store.
        import_id: a completed (or already undone) import.
        by: who asked (the Airflow user, or the shell user for `make undo`); recorded.

    Returns the result; its report is written after the transaction commits.

    Raises:
        NotUndoable: see the class.
    """
    stamp = datetime.now(timezone.utc)
    with engine.begin() as conn:
        # Checked again once the lock is held: a concurrent undo of the same import finished first.
        lock_practice(conn, _undoable(conn, import_id)["practice_id"])
        record = _undoable(conn, import_id)
        marked, removed, restored = _put_back(conn, import_id, stamp)
        in_all = _put_back_in_all(conn, import_id)
        changed_since = pending_accounts(conn, import_id)
        first = record["status"] != p.Status.UNDONE.value
        if first or marked:
            imports = Import.__table__
            conn.execute(sa.update(imports).where(imports.c.id == import_id).values(
                status=p.Status.UNDONE.value, undone_at=stamp, undone_by=by))
            audit.record(conn, import_id, audit.UNDONE, by,
                         f"removed {removed}, restored {restored}, changed since {len(changed_since)}")
            undone_at, undone_by = stamp, by
        else:
            undone_at, undone_by = utc(record["undone_at"]), record["undone_by"]
    result = UndoResult(import_id=import_id, practice_id=record["practice_id"], status=p.Status.UNDONE.value,
                        removed=removed, restored=restored, removed_in_all=in_all[0], restored_in_all=in_all[1],
                        changed_since=changed_since,
                        undone_at=undone_at.isoformat() if undone_at else None, undone_by=undone_by,
                        already_undone=not (first or marked))
    path = _write_report(result)
    # Written again on every undo, a repeated one too: a crash after the commit left it as it was.
    rewrite_after_undo(engine, import_id)
    result = UndoResult(**{**asdict(result), "report": str(path)})
    log.info("undo %s: %d removed, %d restored, %d changed since (left as they are)%s; report %s", import_id,
             removed, restored, len(changed_since), " (already undone: nothing changed)" if result.already_undone
             else "", path)
    return result


def _undoable(conn: Connection, import_id: str) -> dict:
    if not re.fullmatch(files.IMPORT_ID_PATTERN, import_id):
        raise NotUndoable(f"not an import id (letters, digits and underscores, at most {files.IMPORT_ID_LENGTH})")
    imports = Import.__table__
    record = conn.execute(sa.select(imports).where(imports.c.id == import_id)).mappings().first()
    if record is None:
        raise NotUndoable(f"no import {import_id}")
    refusal = undo_refusal(conn, record)
    if refusal:
        raise NotUndoable(refusal)
    return dict(record)


def _put_back(conn: Connection, import_id: str, stamp: datetime) -> tuple[int, int, int]:
    """Mark the pending entries whose patient is as the import left it, then, for exactly those,
    delete the inserted patients, give the updated ones their before-images and move the seen
    ones' bookkeeping back. Returns (entries marked, patients removed, patients restored) now."""
    changes, patients = PatientChange.__table__, Patient.__table__
    pending = sa.and_(changes.c.import_id == import_id, changes.c.reverted_at.is_(None))
    as_left = sa.exists().where(patients.c.id == changes.c.patient_id, _as_left(changes, patients))
    # An inserted patient that is gone already (nothing to remove) counts as put back too; a seen
    # one changed no value, so nothing later can stand in its way.
    gone = sa.and_(changes.c.action == INSERTED,
                   ~sa.exists().where(patients.c.id == changes.c.patient_id))
    marked = conn.execute(sa.update(changes).where(
        pending, sa.or_(changes.c.action == SEEN, as_left, gone)).values(reverted_at=stamp)).rowcount

    now_reverted = sa.and_(changes.c.import_id == import_id, changes.c.reverted_at == stamp)
    removed = conn.execute(sa.delete(patients).where(patients.c.id.in_(
        sa.select(changes.c.patient_id).where(now_reverted, changes.c.action == INSERTED)))).rowcount
    restored = conn.execute(sa.update(patients).where(
        patients.c.id == changes.c.patient_id, now_reverted, changes.c.action == UPDATED,
    ).values(_before_image(changes, patients))).rowcount
    conn.execute(sa.update(patients).where(
        patients.c.id == changes.c.patient_id, now_reverted, changes.c.action == SEEN,
    ).values(_bookkeeping_before(changes, patients)))
    return int(marked or 0), int(removed or 0), int(restored or 0)


def _put_back_in_all(conn: Connection, import_id: str) -> tuple[int, int]:
    """(removed, restored) over every undo of the import so far: its inserted and updated entries
    put back. From the log, so a re-run or a second pass reports the whole undo, not its own part."""
    changes = PatientChange.__table__
    counts: dict[str, int] = dict(conn.execute(sa.select(changes.c.action, sa.func.count()).where(
        changes.c.import_id == import_id, changes.c.reverted_at.is_not(None)).group_by(changes.c.action)).all())
    return counts.get(INSERTED, 0), counts.get(UPDATED, 0)


def _write_report(result: UndoResult) -> storage.StoragePath:
    document = {
        "import_id": result.import_id, "practice_id": result.practice_id, "status": result.status,
        "undone_at": result.undone_at, "undone_by": result.undone_by, "already_undone": result.already_undone,
        # In all, from the log: a re-run, or a second pass after undoing a later import, rewrites
        # this report with the whole undo's figures, not with its own part.
        "counts": {"removed": result.removed_in_all, "restored": result.restored_in_all,
                   "changed_since": len(result.changed_since)},
        "this_undo": {"removed": result.removed, "restored": result.restored},
        "changed_since": [{"account_number": account} for account in result.changed_since],
    }
    return storage.write_text(undo_report_path(result.practice_id, result.import_id),
                              json.dumps(document, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """`make undo IMPORT=<id>`: undo one import in the store the `patient_store` connection names
    (the embedded SQLite store without one). Exit 0 when undone (or already), 1 when it cannot be."""
    parser = argparse.ArgumentParser(prog="python -m include.patient_import.undo",
                                     description="Undo one completed import (SPEC §8).")
    parser.add_argument("import_id", help="the import's id, as Import Results and its report give it")
    parser.add_argument("--by", default=None, help="who undoes it, for the audit (default: the shell user)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from include.patient_import.store import airflow_store_url, create_store_engine, migrate

    engine = create_store_engine(airflow_store_url())
    try:
        migrate(engine)
        result = undo_import(engine, args.import_id, by=args.by or f"shell:{getpass.getuser()}")
    except NotUndoable as exc:
        print(f"undo: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(json.dumps(result.summary(), indent=2))
    if result.changed_since:
        print(f"{len(result.changed_since)} patients were changed again by a later import and were left as they "
              f"are; their account numbers are in {result.report}. Undo that import first, then this one again.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
