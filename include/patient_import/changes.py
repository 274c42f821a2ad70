"""The change log and the changes file (SPEC §8 "What changed, per field").

Which fields an updated row changes is decided with its outcome, by the one comparison of incoming
with stored values (`rules.decide_outcomes`); the load records the names per row
(`import_rows.changed_fields`) and the counts per field (`imports.field_changes`). This module keeps
the values: in the load's transaction, an `INSERT ... SELECT` of the staging table of whole rows
reads the before-image of every patient the import is about to write, joined to the store, into a
temporary table, and one `INSERT ... SELECT` after the write logs each entry whole, with what it
wrote (the after-image). The patients only seen again (the load's table of their keys) are logged
by one `INSERT ... SELECT` of their keys joined to the store, before their export date moves: their
after-image is known without reading it back (`log_seen`). Dry runs write neither.

The values are patient data: they stay in the store and in the changes file (`changes_csv`),
served role-gated by Import Results; reports, logs and XComs carry field names and counts only.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.patient_import.problems import Status
from include.patient_import.store import (
    IMAGE_COLUMNS,
    Import,
    ImportRow,
    Patient,
    PatientChange,
    analyze_patient_keys,
    streamed_rows,
)
from include.patient_import.untrusted import defuse, quoted_csv_writer

INSERTED, UPDATED, SEEN = "inserted", "updated", "seen"
# The values an export sets, as the changes file names them: the bookkeeping columns are left out.
VALUE_COLUMNS: tuple[str, ...] = tuple(c for c in IMAGE_COLUMNS if c not in ("last_seen_exported_on",
                                                                             "updated_import_id"))
CHANGES_HEADER = ("account_number", "field", "before", "after")
_UNDOABLE = frozenset({Status.COMPLETED.value, Status.COMPLETED_WITH_ERRORS.value, Status.UNDONE.value})
_STREAM_BATCH = 5_000
# What a `seen` entry keeps (its value columns are NULL in both images).
_BOOKKEEPING = ("last_seen_exported_on", "updated_import_id")


def _before_images() -> sa.Table:
    """The load's temporary table of before-images: `patient_changes`' columns but the after-images
    (and the id and the undo's mark), filled by `log_before`, read and dropped by `log_after`."""
    changes = PatientChange.__table__
    kept = [c for c in changes.c if c.name not in ("id", "reverted_at") and not c.name.startswith("after_")]
    return sa.Table("patient_changes_before", sa.MetaData(), *[sa.Column(c.name, c.type) for c in kept],
                    prefixes=["TEMPORARY"])


def start_log(conn: Connection, import_id: str) -> None:
    """Before the load's first write: drop what an earlier try of the import logged and create the
    temporary table of before-images that `log_before` fills and `log_after` reads and drops."""
    changes = PatientChange.__table__
    conn.execute(sa.delete(changes).where(changes.c.import_id == import_id))
    _before_images().create(conn)


def log_before(conn: Connection, staging: sa.Table, import_id: str) -> None:
    """Read, before the write, every staged patient with the stored values it will replace
    (`start_log` first; callable once per staging table, the tables naming different patients).

    `staging` is one of the load's staging tables: the written patient columns, or only the
    patient key (`practice_id`, `third_party_acct_number`) for the patients an import only saw
    (the load logs those with `log_seen`, which needs no temporary table).
    The action is `inserted` for an account not stored yet, `updated` for a row the rules decided
    changes the patient (its `updated_import_id` is set), else `seen`: only `last_seen_exported_on`
    moves forward, so only the bookkeeping is kept (a daily full export would otherwise copy every
    patient's values into the log on every import). The images wait in a temporary table for
    `log_after`, which writes each log entry once, whole: an entry inserted now and updated after
    the write would cost the store's table and its indexes every row twice.
    """
    stored = Patient.__table__.alias("stored")
    before = _before_images()
    inserted = stored.c.id.is_(None)
    updated = (staging.c.updated_import_id.is_not(None) if "updated_import_id" in staging.c
               else sa.false())
    action = sa.case((inserted, INSERTED), (updated, UPDATED), else_=SEEN)
    rows = sa.select(
        sa.literal(import_id, sa.String), staging.c.practice_id, staging.c.third_party_acct_number,
        stored.c.id, action, *[_kept(stored.c[c], c, inserted | updated) for c in IMAGE_COLUMNS],
    ).select_from(staging.outerjoin(stored, sa.and_(
        stored.c.practice_id == staging.c.practice_id,
        stored.c.third_party_acct_number == staging.c.third_party_acct_number)))
    conn.execute(sa.insert(before).from_select(
        ["import_id", "practice_id", "third_party_acct_number", "patient_id", "action",
         *[f"before_{c}" for c in IMAGE_COLUMNS]], rows))


def log_seen(conn: Connection, keys: sa.Table, import_id: str, day: date) -> None:
    """Log the patients an import only saw again (`seen` entries), each whole, before the load's
    `UPDATE` of their `last_seen_exported_on` (load.seen_statement) and after `log_after`, so that
    they follow the written patients' entries as when all went through the temporary table.

    `keys` is the load's narrow staging table (`practice_id`, `third_party_acct_number`) of stored
    patients, `day` the export day the `UPDATE` moves them to. A seen entry keeps the bookkeeping
    only, and its after-image needs no read after the write: `last_seen_exported_on` becomes
    `day` where it was older or NULL (SPEC §3 rule 7) and `updated_import_id` stays. One
    `INSERT ... SELECT` of the keys joined to the store: no temporary table of before-images
    (a daily full export's million patients went through it, and through a second join with the
    store after the write)."""
    changes, stored = PatientChange.__table__, Patient.__table__
    moved = sa.literal(day, stored.c.last_seen_exported_on.type)
    last_seen = stored.c.last_seen_exported_on
    after = {"last_seen_exported_on": sa.case((sa.or_(last_seen.is_(None), last_seen < moved), moved),
                                              else_=last_seen),
             "updated_import_id": stored.c.updated_import_id}
    rows = sa.select(
        sa.literal(import_id, sa.String), keys.c.practice_id, keys.c.third_party_acct_number, stored.c.id,
        sa.literal(SEEN, sa.String), *[stored.c[c] for c in _BOOKKEEPING], *[after[c] for c in _BOOKKEEPING],
    ).select_from(keys.join(stored, sa.and_(
        stored.c.practice_id == keys.c.practice_id,
        stored.c.third_party_acct_number == keys.c.third_party_acct_number)))
    conn.execute(sa.insert(changes).from_select(
        ["import_id", "practice_id", "third_party_acct_number", "patient_id", "action",
         *[f"before_{c}" for c in _BOOKKEEPING], *[f"after_{c}" for c in _BOOKKEEPING]], rows))


def log_after(conn: Connection) -> None:
    """After the write: the log entries of `log_before`'s images, each with its patient's id (new
    ones have theirs now) and what the patient holds (for `seen` entries, the bookkeeping only)."""
    changes, patients, before = PatientChange.__table__, Patient.__table__, _before_images()
    if conn.dialect.name == "postgresql":
        analyze_patient_keys(conn, before)
    changed = before.c.action != SEEN
    columns = ["import_id", "practice_id", "third_party_acct_number", "patient_id", "action",
               *[f"before_{c}" for c in IMAGE_COLUMNS], *[f"after_{c}" for c in IMAGE_COLUMNS]]
    rows = sa.select(
        before.c.import_id, before.c.practice_id, before.c.third_party_acct_number, patients.c.id,
        before.c.action, *[before.c[f"before_{c}"] for c in IMAGE_COLUMNS],
        *[_kept(patients.c[c], c, changed) for c in IMAGE_COLUMNS],
    ).select_from(before.join(patients, sa.and_(
        patients.c.practice_id == before.c.practice_id,
        patients.c.third_party_acct_number == before.c.third_party_acct_number)))
    # No filter on the import: the table is this load's own (`start_log`), and a filter on a column
    # without statistics made the planner guess 0.5 % of the rows and probe the store's index once
    # per row: at a million inserted patients the statement took 6.2 s so, 5.4 s with a hash join
    # (EXPLAIN ANALYZE, issue #14).
    conn.execute(sa.insert(changes).from_select(columns, rows))
    before.drop(conn)


def _kept(value: sa.ColumnElement, column: str, values_logged: sa.ColumnElement[bool]) -> sa.ColumnElement:
    """A column's image as the log keeps it: the bookkeeping always, the values only where the
    import changed them (`values_logged`)."""
    return value if column not in VALUE_COLUMNS else sa.case((values_logged, value), else_=sa.null())


def undo_refusal(conn: Connection, record: Mapping) -> str | None:
    """Why an import cannot be undone (SPEC §8), or None when it can: the one rule the undo, its
    DAG and Import Results' button follow. `record` is the import's `imports` row. An undone import
    can be undone again (to complete it after undoing a later one).

    Returns a sentence naming the import id and why, never a patient value.
    """
    import_id = record["id"]
    if record["dry_run"]:
        return f"import {import_id} is a dry run: it changed no patient"
    if record["status"] not in _UNDOABLE or record["loaded_at"] is None:
        return f"import {import_id} is {record['status']}: only a completed import can be undone"
    changes = PatientChange.__table__
    logged = conn.execute(sa.select(changes.c.id).where(changes.c.import_id == import_id).limit(1)).first()
    if logged is None and (record["inserted"] or record["updated"]):
        return f"import {import_id} was loaded before the change log was kept: it cannot be undone"
    return None


def _not_put_back(import_id: str) -> tuple:
    """The import's change-log entries no undo has put back yet (`patient_changes.reverted_at`)."""
    changes = PatientChange.__table__
    return changes.c.import_id == import_id, changes.c.reverted_at.is_(None)


def pending_undo(conn: Connection, import_id: str) -> int:
    """How many of the import's change-log entries no undo has put back yet: after an undo, the
    patients left `changed_since` (undoing the later import first lets a new undo finish them)."""
    return conn.execute(sa.select(sa.func.count()).select_from(PatientChange.__table__)
                        .where(*_not_put_back(import_id))).scalar_one()


def pending_accounts(conn: Connection, import_id: str) -> list[str]:
    """The account numbers of the entries `pending_undo` counts, in order."""
    account = PatientChange.__table__.c.third_party_acct_number
    return list(conn.execute(sa.select(account).where(*_not_put_back(import_id)).order_by(account)).scalars())


def recorded_field_counts(conn: Connection, import_id: str) -> dict[str, int]:
    """The import's `changes.fields` as the load recorded it: {field: updated patients}; {} when none."""
    text = conn.execute(sa.select(Import.__table__.c.field_changes)
                        .where(Import.__table__.c.id == import_id)).scalar()
    return json.loads(text) if text else {}


def has_value_changes(conn: Connection, import_id: str) -> bool:
    """Whether the import inserted or updated a patient: whether its changes file has a line."""
    changes = PatientChange.__table__
    found = conn.execute(sa.select(changes.c.id).where(
        changes.c.import_id == import_id, changes.c.action.in_([INSERTED, UPDATED])).limit(1)).first()
    return found is not None


def changed_rows(conn: Connection, import_id: str) -> Iterator[dict]:
    """Per updated row, in row order: {"row", "account_number", "fields": [names]}; read in batches."""
    rows = ImportRow.__table__
    query = (sa.select(rows.c.row_number, rows.c.account_number, rows.c.changed_fields)
             .where(rows.c.import_id == import_id, rows.c.changed_fields.is_not(None))
             .order_by(rows.c.row_number))
    for row in streamed_rows(conn, query, _STREAM_BATCH):
        yield {"row": row.row_number, "account_number": row.account_number,
               "fields": row.changed_fields.split(",")}


def value_changes(conn: Connection, import_id: str) -> Iterator[tuple[str, str, object, object]]:
    """(account number, field, before, after) of every value the import inserted or changed, by
    account number then field order. Patient values: for the changes file only."""
    changes = PatientChange.__table__
    query = (sa.select(changes.c.third_party_acct_number, changes.c.action,
                       *[changes.c[f"before_{c}"] for c in VALUE_COLUMNS],
                       *[changes.c[f"after_{c}"] for c in VALUE_COLUMNS])
             .where(changes.c.import_id == import_id, changes.c.action.in_([INSERTED, UPDATED]))
             .order_by(changes.c.third_party_acct_number, changes.c.id))
    width = len(VALUE_COLUMNS)
    for row in streamed_rows(conn, query, _STREAM_BATCH):
        before, after = row[2:2 + width], row[2 + width:]
        for column, old, new in zip(VALUE_COLUMNS, before, after):
            if old != new:
                yield row[0], column, old, new


def changes_csv(conn: Connection, import_id: str) -> Iterator[str]:
    """The changes file (SPEC §8) as text blocks: UTF-8 with a byte-order mark when encoded, every
    field quoted, cells defused like the upload file's (SPEC §5), header
    `account_number,field,before,after`; an empty value is an empty cell."""
    buffer = io.StringIO()
    writer = quoted_csv_writer(buffer)
    buffer.write("\ufeff")
    writer.writerow(CHANGES_HEADER)
    for count, (account, field, before, after) in enumerate(value_changes(conn, import_id), start=1):
        writer.writerow([defuse(account), field, defuse(_text(before)), defuse(_text(after))])
        if count % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _text(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value
