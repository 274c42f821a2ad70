"""Loads one validated export into the patient store, in one transaction, exactly once.

The transaction takes the practice's lock, decides every row's outcome (rules.decide_outcomes) a
block of the export at a time against the stored patients that block names
(`patients.decided_rows`: a million rows and a practice's million patients never in memory at
once), stages each block's rows to write into temporary tables as it is decided
(`_PatientWrite`), re-checks capacity under the lock with the `practice_capacity` suite on all
the new ones, then upserts the staged patients keyed on (practice, account number) and records
the row outcomes and problems. `imports.loaded_at` is set in the same transaction: a retried load finds it and
returns the recorded result instead of applying the rows twice.

The write is set-based on both databases: the rows to write go into a temporary staging table
(COPY on PostgreSQL, executemany on SQLite) and the sync rules (`_updated_values`, SPEC §3 rules
6 and 7) are applied to all of them at once:

- PostgreSQL (`update_insert_statements`): the staging table's key is analysed, then one `UPDATE ... FROM`
  of the stored patients (a hash join, as the bench's floor's `MERGE`) and one `INSERT ... SELECT`
  of the new ones in spreadsheet row order; the transaction runs with the JIT off and enough
  work_mem to hash in memory. `INSERT ... ON CONFLICT` is slower there (it inserts speculatively
  and probes the unique index row by row: 1.5 s against 1.0 s for 100,000 new patients) and takes
  a patient id from the sequence for every stored patient it updates;
- SQLite (`upsert_statement`): one `INSERT ... SELECT ... ON CONFLICT DO UPDATE`. SQLite has no
  MERGE, and its upsert is already a B-tree probe per row, the same work an UPDATE and an INSERT
  would do in two passes.

A stored patient an export only sees again on a later day (unchanged, rule 7: most rows of a
daily full export) is not staged whole: its key goes into a narrow staging table and one `UPDATE`
moves its `last_seen_exported_on` forward (`seen_statement`), which is all the whole-row write
changed for it.

The change log's entries (changes.log_before / log_after for the patients written whole,
changes.log_seen for those only seen again) and the row outcomes (`import_rows`, one COPY of a
narrow frame: the staging table holds only the rows written, and the outcomes are decided in
pandas anyway) are written in the same transaction.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.patient_import import changes, files
from include.patient_import import problems as p
from include.patient_import.catalogue import IS_NEW, PRACTICE_CAPACITY
from include.patient_import.gx_runner import SuiteRunner
from include.patient_import.normalize import ACTIVE, is_iso_date, object_array
from include.patient_import.patients import count_patients, decided_rows
from include.patient_import.practices import Practice, load_practices
from include.patient_import.problem_table import ProblemTable, identifying
from include.patient_import.problems import Counts
from include.patient_import.records import approval_of, import_problems, withdraw_rejected_rows
from include.patient_import.rules import (
    CHANGED_FIELDS,
    CODE,
    DATA_COLUMNS,
    OUTCOME,
    WRITE,
    accountless_rejection,
    approval_rejection,
    capacity_parameters,
    capacity_rejection,
    export_day,
    field_counts,
    landing_time_warning,
    payment_plan_warning,
    skip_messages,
)
from include.patient_import.schema import ROW_NUMBER, STORE_COLUMN
from include.patient_import.staging import Job, load_validation, validated_row_blocks
from include.patient_import.store import (
    Import,
    ImportProblem,
    ImportProblemCount,
    ImportRow,
    Patient,
    analyze_patient_keys,
    lock_practice,
    wrapped_driver_error,
)

log = logging.getLogger(__name__)

_DATE_COLUMNS = ("birth_date", "last_visit")


@dataclass(frozen=True)
class LoadResult:
    status: str
    counts: Counts
    already_loaded: bool = False


# The patient columns an import writes: every export field, the bookkeeping, never the id.
_WRITTEN = tuple(STORE_COLUMN.get(c, c) for c in DATA_COLUMNS) + (
    "practice_id", "last_seen_exported_on", "created_import_id", "updated_import_id")


def _staging_table(dialect: str = "postgresql") -> sa.Table:
    """A temporary table shaped like the written patient columns, plus the spreadsheet row number
    (kept so new patients get their ids in file order).

    On SQLite the row number is the table's INTEGER PRIMARY KEY, its rowid: the rows arrive in
    spreadsheet order, so the key costs nothing to build and the write's ORDER BY reads the table
    in key order instead of sorting it. (On PostgreSQL a key would be an index COPY must update.)"""
    patients = Patient.__table__
    return sa.Table("patient_staging", sa.MetaData(),
                    sa.Column(ROW_NUMBER, sa.Integer, primary_key=dialect == "sqlite", autoincrement=False),
                    *[sa.Column(c, patients.c[c].type) for c in _WRITTEN], prefixes=["TEMPORARY"])


def _updated_values(incoming: Any, stored: sa.Table) -> dict[str, sa.ColumnElement[Any]]:
    """What a stored patient becomes when a staged row is written over it, for both writes (the
    upsert's ON CONFLICT branch and PostgreSQL's UPDATE ... FROM): an empty cell never erases a
    stored value and `last_seen_exported_on` only moves forward (SPEC §3 rules 6 and 7).
    `incoming` is the written row's columns (`excluded`, or the staging table's `c`)."""
    keep = {STORE_COLUMN.get(c, c) for c in DATA_COLUMNS} - {"third_party_acct_number"}
    updates: dict[str, sa.ColumnElement[Any]] = {
        c: sa.func.coalesce(incoming[c], stored.c[c]) for c in sorted(keep | {"updated_import_id"})}
    updates["last_seen_exported_on"] = sa.case(
        (stored.c.last_seen_exported_on.is_(None), incoming.last_seen_exported_on),
        (incoming.last_seen_exported_on > stored.c.last_seen_exported_on, incoming.last_seen_exported_on),
        else_=stored.c.last_seen_exported_on,
    )
    return updates


def _same_patient(staging: sa.Table, stored: Any) -> sa.ColumnElement[bool]:
    return sa.and_(stored.c.practice_id == staging.c.practice_id,
                   stored.c.third_party_acct_number == staging.c.third_party_acct_number)


def upsert_statement(dialect: str, staging: sa.Table):
    """The one statement that writes an import's patients on SQLite (and on PostgreSQL when
    `POSTGRES_WRITE` says so): inserts the new ones and updates the stored ones from the staging
    table, by `_updated_values`' rules."""
    table = Patient.__table__
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        # The same ON CONFLICT API on the other dialect's own Insert class.
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        raise ValueError(f"the patient store does not support {dialect}")
    stored = table.alias("stored")
    values: list[sa.ColumnElement[Any]] = [staging.c[c] for c in _WRITTEN]
    # Both databases check NOT NULL on the proposed row before ON CONFLICT, so the status is
    # settled here: an empty one keeps the stored patient's, and a new patient is active (SPEC §2).
    values[_WRITTEN.index("status")] = sa.func.coalesce(staging.c.status, stored.c.status, ACTIVE)
    rows = (sa.select(*values)
            .select_from(staging.outerjoin(stored, _same_patient(staging, stored)))
            .where(sa.true())  # else SQLite reads ON CONFLICT as a join constraint
            .order_by(staging.c[ROW_NUMBER]))
    stmt = insert(table).from_select(list(_WRITTEN), rows)
    return stmt.on_conflict_do_update(index_elements=["practice_id", "third_party_acct_number"],
                                      set_=_updated_values(stmt.excluded, table))


def update_insert_statements(staging: sa.Table) -> tuple[sa.Update, sa.Insert]:
    """PostgreSQL's write of an import's patients, the same rules as `upsert_statement`: one
    `UPDATE ... FROM` of the stored patients the staging table names, then one `INSERT ... SELECT`
    of the others in spreadsheet row order.

    Set-based like the floor's `MERGE` (a hash join of staging and patients; `INSERT ... ON
    CONFLICT` instead inserts speculatively row by row and probes the unique index for each), but
    two statements, not one MERGE: MERGE has no ORDER BY for the rows it inserts, and the planner
    may hash the staging table, so new patients would not get their ids in file order. The
    practice's lock (`lock_practice`) keeps other imports' rows out between the two.
    """
    table = Patient.__table__
    update = (sa.update(table).where(_same_patient(staging, table))
              .values(_updated_values(staging.c, table)))
    values: list[sa.ColumnElement[Any]] = [staging.c[c] for c in _WRITTEN]
    values[_WRITTEN.index("status")] = sa.func.coalesce(staging.c.status, ACTIVE)  # a new patient is active (SPEC §2)
    new = (sa.select(*values)
           .where(~sa.exists().where(_same_patient(staging, table)))
           .order_by(staging.c[ROW_NUMBER]))
    return update, sa.insert(table).from_select(list(_WRITTEN), new)


# Per hash or sort of the load's statements (a few at a time): 100,000 staged rows take about 40 MB.
_WORK_MEM = "128MB"

# How PostgreSQL writes the patients: "update_insert" (`update_insert_statements`) or "on_conflict"
# (`upsert_statement`, SQLite's only way). Both are kept so that tests can hold them to the same
# results; "update_insert" is faster (docs/performance.md).
POSTGRES_WRITE = "update_insert"


def _patient_rows(applied: pd.DataFrame, practice_id: str, import_id: str, exported_on: date) -> pd.DataFrame:
    """The staging table's rows: store column names, None for empty, the dates as ISO text.

    The dates stay the `YYYY-MM-DD` text the normaliser wrote (normalize_date): that text is how
    SQLite stores a `Date` and what PostgreSQL's COPY reads, so parsing it into `date` objects only
    for the driver to format them back cost a Python call per cell. A value that is not an ISO
    date (none comes from the normaliser) is no value, as before.
    """
    frame = applied[list(DATA_COLUMNS)].rename(columns=STORE_COLUMN)
    for column in _DATE_COLUMNS:
        frame[column] = iso_dates(frame[column])
    frame["practice_id"] = practice_id
    frame["last_seen_exported_on"] = export_day(exported_on).isoformat()
    frame["created_import_id"] = import_id
    frame["updated_import_id"] = applied[OUTCOME].map({"updated": import_id}).where(
        applied[OUTCOME].eq("updated"), None)
    frame.insert(0, ROW_NUMBER, applied[ROW_NUMBER].astype("int64"))
    return frame[[ROW_NUMBER, *_WRITTEN]]


def iso_dates(values: pd.Series) -> pd.Series:
    """A column of dates as `YYYY-MM-DD` text (object dtype, same index), None where a cell holds
    no valid date. ISO text is kept as it is, `date` objects are formatted, anything else (a
    malformed or impossible date such as 2023-02-30) is None.

    A column of texts (and None) is checked at once by Arrow (`_iso_texts`): the normaliser wrote
    ISO text, so that is nearly every cell. What it does not keep, and any other column, is
    decided once per distinct value (`_date_text`)."""
    texts = values.to_numpy(dtype=object, copy=True)
    rest = ~_iso_texts(texts)
    if rest.any():
        positions, distinct = pd.factorize(texts[rest])
        texts[rest] = object_array([_date_text(value) for value in distinct.tolist()] + [None])[positions]
    return pd.Series(texts, index=values.index, dtype="object")  # -1 (empty) reads the None


def _iso_texts(objects: np.ndarray) -> np.ndarray:
    """Which cells of `objects` (a 1-D object array) are texts `is_iso_date` takes, as a bool
    array; all False unless every cell is a `str`, None, NaN or NA (a numpy or other text type
    is not ISO text to `is_iso_date`). Arrow parses the texts and writes the days back: a text is
    kept when that is the text itself (which refuses 2023-02-30, which Arrow rolls over into
    March, and every non-canonical spelling) and its year is `date`'s."""
    nothing = np.zeros(len(objects), dtype=bool)
    if not set(map(type, objects)) <= {str, type(None), float, type(pd.NA)}:
        return nothing
    try:
        texts = pa.array(objects, type=pa.string(), from_pandas=True)  # NaN, NA as null; 1.5 refused
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):  # a lone surrogate is no UTF-8
        return nothing
    days = pc.strptime(texts, format="%Y-%m-%d", unit="s", error_is_null=True).cast(pa.date32())
    same = pc.and_(pc.equal(days.cast(pa.string()), texts),
                   pc.and_(pc.greater_equal(days, pa.scalar(date.min)), pc.less_equal(days, pa.scalar(date.max))))
    return same.fill_null(False).to_numpy(zero_copy_only=False)


def _date_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value if is_iso_date(value) else None
    if isinstance(value, np.datetime64):  # any unit, days before pandas' oldest timestamp too
        return None if np.isnat(value) else _date_text(str(np.datetime_as_string(value, unit="D")))
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return None


class UnkeyedStagedRows(RuntimeError):
    """Rows to write that the store cannot key by (practice, account number): two rows with one
    account number, or a row without one. Validation (`missing_required_field`,
    `duplicate_account_number`, `duplicate_row`, SPEC §3 rules 4 and 5) keeps them out; should one
    get through, the load raises this before anything is written, and its transaction leaves the
    store as it was."""


def _refuse_unkeyed_rows(rows: pd.DataFrame) -> None:
    """Raise UnkeyedStagedRows when `rows` (the decided rows to write: `ROW_NUMBER` and
    `account_number`) repeat an account number or lack one.

    Why checked here and not left to the database: the writes disagree on a repeated key.
    PostgreSQL's `UPDATE ... FROM` applies an arbitrary one of the matching rows, SQLite's ON
    CONFLICT applies each in turn (the last wins), PostgreSQL's ON CONFLICT refuses to touch a row
    twice; a patient must never be silently written from one of two rows (SPEC §3 rule 6). And a
    patient stored without an account number would reject every later import of the practice
    (SPEC §3 rule 4). The message names rows and account numbers only."""
    account = rows["account_number"]  # one practice's rows: the account number alone is the key
    unkeyed = rows[account.isna() | account.duplicated(keep=False)]
    if not unkeyed.empty:
        shown = ", ".join(f"row {r} (account {a})" for r, a in
                          unkeyed[[ROW_NUMBER, "account_number"]].head(10).itertuples(index=False))
        raise UnkeyedStagedRows(f"{len(unkeyed)} rows to write repeat an account number or have none: "
                                f"{shown}; nothing was written")


class _PatientWrite:
    """An import's patient write (SPEC §3 rules 6 and 7, §8), staged a block of the export at a time
    as the blocks are decided (`stage`) and applied once, whole, when all are (`apply`), in the
    load's transaction: no block's patients are in the store before the capacity check has seen
    every block's new ones.

    The new and changed patients go whole into a temporary staging table (`_staging_table`,
    `_patient_rows`); the stored patients an export only saw again on a later day go into a
    narrow one of keys (`_seen_table`, `_seen_rows`): for those only `last_seen_exported_on` moves
    forward. A daily full export is mostly such patients, and staging each one's every column to
    rewrite it with the values it already holds cost the load most of its time
    (docs/performance.md). The tables are made when a block first needs them."""

    def __init__(self, conn: Connection, practice_id: str, import_id: str, exported_on: date) -> None:
        self.conn, self.practice_id, self.import_id, self.exported_on = conn, practice_id, import_id, exported_on
        self.rows: sa.Table | None = None
        self.seen: sa.Table | None = None

    def stage(self, rows: pd.DataFrame, seen: pd.DataFrame) -> None:
        """Add one block's rows: `rows` the staging table's (`_patient_rows`), `seen` the keys of
        the patients only seen again (`_seen_rows`)."""
        if not rows.empty:
            if self.rows is None:
                self.rows = _staging_table(self.conn.dialect.name)
                self.rows.create(self.conn)
            _bulk_insert(self.conn, self.rows, rows)
        if not seen.empty:
            if self.seen is None:
                self.seen = _seen_table()
                self.seen.create(self.conn)
            _bulk_insert(self.conn, self.seen, seen.drop(columns=[ROW_NUMBER]))

    def apply(self, written: pd.DataFrame) -> None:
        """Write the staged patients and log the change; nothing when nothing was staged (no
        statement). `written`: the `ROW_NUMBER` and `account_number` of every staged row (the
        decided rows `_written` picks). Raises UnkeyedStagedRows before the store is written."""
        if self.rows is None and self.seen is None:
            return
        _refuse_unkeyed_rows(written)
        conn, import_id = self.conn, self.import_id
        postgres = conn.dialect.name == "postgresql"
        changes.start_log(conn, import_id)
        if self.rows is not None:
            if postgres:
                analyze_patient_keys(conn, self.rows)
            # The change log's before-images are read before the write, its after-images after it.
            changes.log_before(conn, self.rows, import_id)
            if postgres and POSTGRES_WRITE == "update_insert":
                for statement in update_insert_statements(self.rows):
                    conn.execute(statement)
            else:
                conn.execute(upsert_statement(conn.dialect.name, self.rows))
        changes.log_after(conn)
        if self.seen is not None:
            if postgres:
                analyze_patient_keys(conn, self.seen)
            changes.log_seen(conn, self.seen, import_id, export_day(self.exported_on))
            conn.execute(seen_statement(self.seen, self.practice_id, self.exported_on))
        self.discard()

    def discard(self) -> None:
        """Drop the staging tables (the connection outlives the transaction in the engine's pool)."""
        for table in (self.rows, self.seen):
            if table is not None:
                table.drop(self.conn)
        self.rows = self.seen = None


def _seen_table() -> sa.Table:
    """A temporary table of patient keys: the stored patients an import only saw again."""
    patients = Patient.__table__
    return sa.Table("patient_seen_staging", sa.MetaData(),
                    *[sa.Column(c, patients.c[c].type) for c in ("practice_id", "third_party_acct_number")],
                    prefixes=["TEMPORARY"])


def seen_statement(keys: sa.Table, practice_id: str, exported_on: date) -> sa.Update:
    """The one `UPDATE` that moves `last_seen_exported_on` forward to `exported_on` for the
    practice's patients `keys` names (`_seen_table`), and only forward (SPEC §3 rule 7, as
    `_updated_values` has it for a whole row). `IN (SELECT ...)`: a hash semi-join on PostgreSQL;
    on SQLite a probe of the patients' unique key per account."""
    table = Patient.__table__
    day = sa.literal(export_day(exported_on), table.c.last_seen_exported_on.type)
    last_seen = table.c.last_seen_exported_on
    return (sa.update(table)
            .where(table.c.practice_id == practice_id,
                   table.c.third_party_acct_number.in_(sa.select(keys.c.third_party_acct_number)),
                   sa.or_(last_seen.is_(None), last_seen < day))
            .values(last_seen_exported_on=day))


def _seen_rows(seen: pd.DataFrame, practice_id: str) -> pd.DataFrame:
    """(row number, practice, account number) of the decided rows `seen`: written rows that change
    no value, their stored patient only seen again on a later day (`rules.decide_outcomes`)."""
    return pd.DataFrame({ROW_NUMBER: seen[ROW_NUMBER].astype("int64"), "practice_id": practice_id,
                         "third_party_acct_number": seen["account_number"].astype("object")})


def _bulk_insert(conn: Connection, table: sa.Table, rows: pd.DataFrame) -> None:
    """Plain inserts of many rows (`rows`' columns are the table's): COPY on PostgreSQL; on SQLite
    executemany of positional rows, which skips SQLAlchemy's per-value work (a DataFrame's
    `to_dict` and per-row parameter processing cost more than the database's).

    `_INSERT_CHUNK` rows at a time become COPY's CSV (or SQLite's Python values): a million rows'
    cells as Python objects at once would take gigabytes beside the frame."""
    quote = conn.dialect.identifier_preparer
    target = f"{quote.format_table(table)} ({', '.join(quote.quote(str(c)) for c in rows.columns)})"
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows.iloc[start:start + _INSERT_CHUNK]
        if conn.dialect.name == "postgresql":
            _copy_rows(conn, table, target, chunk)
        else:
            _insert_sqlite_rows(conn, table, target, chunk,
                                {name: _python_values(values) for name, values in chunk.items()})


def _insert_sqlite_rows(conn: Connection, table: sa.Table, target: str, rows: pd.DataFrame,
                        columns: dict[str, list]) -> None:
    """`rows` by executemany; `columns` are their cells as Python values (`_python_values`)."""
    for name, values in columns.items():
        column_type = table.c[name].type
        bind = column_type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        if bind is None:
            continue
        if not isinstance(column_type, sa.Date):  # (sa.DateTime is no Date)
            # Every value through the type's processor, text too: text bound as it is would
            # skip its rendering (a DateTime's microseconds, a JSON's quoting) or check.
            columns[name] = [None if v is None else bind(v) for v in values]
            continue
        # A Date's ISO text is bound as it is (it is SQLite's own representation of a date),
        # once checked; other values (date and datetime objects) go through the processor.
        _refuse_non_iso_text(name, values)
        if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            columns[name] = [v if v is None or isinstance(v, str) else bind(v) for v in values]
    placeholders = ", ".join("?" * len(columns))  # sqlite3's paramstyle
    insert, feed = f"INSERT INTO {target} VALUES ({placeholders})", zip(*columns.values())
    # A batch at a time: a list of every row's tuple would be that many more live objects,
    # and the garbage collector's full passes over the process's heap grow with them.
    while batch := list(itertools.islice(feed, _SQLITE_BATCH)):
        conn.exec_driver_sql(insert, batch)


def _copy_rows(conn: Connection, table: sa.Table, target: str, rows: pd.DataFrame) -> None:
    """`rows` by one COPY: the CSV Arrow renders (`_copy_csv`), or, when a column mixes Python
    types, the rows' Python values (`_python_values`) rendered by the driver."""
    csv_text = _copy_csv(rows)
    copy_sql = f"COPY {target} FROM STDIN" + (" (FORMAT csv)" if csv_text is not None else "")
    driver_error = conn.dialect.loaded_dbapi.Error
    try:
        driver = conn.connection.driver_connection  # psycopg's connection, open while `conn` is
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
            if csv_text is not None:
                for start in range(0, len(csv_text), _COPY_BLOCK):
                    copy.write(csv_text[start:start + _COPY_BLOCK])
            else:
                for row in zip(*(_python_values(values) for _, values in rows.items())):
                    copy.write_row(row)
    except driver_error as error:
        # Raised by the driver, not through SQLAlchemy: scrubbed here as the engine scrubs the
        # others (the server's context quotes the offending value), and wrapped the same way.
        failed = _copy_line(error)
        wrapped = wrapped_driver_error(conn, copy_sql, error)
        if failed and ROW_NUMBER in rows.columns and failed <= len(rows):
            wrapped.add_note(f"COPY into {table.name} failed at spreadsheet row {rows[ROW_NUMBER].iloc[failed - 1]}")
        raise wrapped from error


_INSERT_CHUNK = 100_000
_COPY_BLOCK = 8 * 1024 * 1024
_SQLITE_BATCH = 5_000


def _python_values(values: pd.Series) -> list:
    """A column as a list of plain Python values, None for every missing cell whatever the dtype
    (pandas' NaN would be stored as the text 'NaN'; its NA and NaT are refused by the type
    processors), in one pass and without copying the frame. Numpy numbers in an object column
    become Python ones: sqlite3 would store a numpy integer as an 8-byte BLOB."""
    missing = values.isna().to_numpy(dtype=bool)
    if values.dtype.kind in "iub" and not missing.any():
        return values.to_numpy().tolist()
    objects = values.to_numpy(dtype=object)  # may be a read-only view of the frame's own array
    if missing.any():
        objects = np.where(missing, None, objects)
    if pd.api.types.infer_dtype(objects, skipna=True) in ("string", "empty"):
        return objects.tolist()
    return [v.item() if isinstance(v, (np.number, np.bool_)) else v for v in objects.tolist()]


def _refuse_non_iso_text(name: str, values: list) -> None:
    """Raises TypeError (as SQLite's `Date` processor does for text) when a text in `values` is
    not a `YYYY-MM-DD` day: bound as it is, it would be stored, and every read of the row fail.
    Each distinct text checked once, all at once by Arrow (`_iso_texts`, which takes what
    `is_iso_date` takes: a tenth of the time of a call per text for 100,000 rows' birth dates);
    the message names the column, never the value."""
    texts = object_array([v for v in set(values) if isinstance(v, str)])
    if len(texts) and not _iso_texts(texts).all():
        raise TypeError(f"{name}: a text that is not a YYYY-MM-DD day, for a Date column")


def _copy_csv(rows: pd.DataFrame, column: Callable[[pd.Series], pa.Array] | None = None) -> memoryview | None:
    """The rows as COPY's CSV, rendered by Arrow in one pass: a null is an empty unquoted field
    and every text is quoted, so NULL and '' stay apart. None when a column mixes Python types
    (then the driver renders row by row).

    Each column becomes Arrow by `column`: `_arrow_column` (the frame's own arrays, no Python
    values where the dtype allows), or `_python_column` (the column's Python values, the
    reference: both give the same CSV)."""
    column = column or _arrow_column
    try:
        table = pa.table({name: column(values) for name, values in rows.items()})
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    return memoryview(sink.getvalue())


def _python_column(values: pd.Series) -> pa.Array:
    """The column as Arrow by way of its Python values (`_python_values`): Arrow infers the type
    (str → string, int → int64, float → double, bool, all None → null). Raises ArrowInvalid or
    ArrowTypeError when the values mix Python types."""
    return pa.array(_python_values(values))


def _arrow_column(values: pd.Series) -> pa.Array:
    """The column as Arrow, the array `_python_column` makes (same type where it matters to the
    CSV, same values, same nulls: NaN, None, NA and NaT), built from the frame's own arrays without
    a Python value per cell where the dtype allows: numpy numbers and bools, nullable integers and
    bools, pandas' and Arrow's text, object columns of only texts, only integers or only bools.
    Any other column (dates, mixed types, floats in an object column, ...) goes by
    `_python_column`, as does one whose conversion Arrow refuses (an integer beyond int64)."""
    try:
        array = _arrow_of_dtype(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        array = None
    return _python_column(values) if array is None else array


def _arrow_of_dtype(values: pd.Series) -> pa.Array | None:
    dtype = values.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind == "O":
            return _arrow_of_objects(values)
        numbers = values.to_numpy()
        if dtype.kind == "b":
            return pa.array(numbers)
        if dtype.kind == "i" or (dtype.kind == "u" and dtype.itemsize < 8):
            return pa.array(numbers.astype(np.int64, copy=False))
        if dtype.kind == "f":  # Python floats are doubles; NaN is no value
            doubles = numbers.astype(np.float64, copy=False)
            return pa.array(doubles, mask=np.isnan(doubles))
        return None
    array = pa.array(values.array)  # an extension dtype: Arrow's, pandas' text, nullable numbers, ...
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return array.cast(pa.string())
    if pa.types.is_signed_integer(kind) or (pa.types.is_unsigned_integer(kind) and kind.bit_width < 64):
        return array.cast(pa.int64())
    if pa.types.is_boolean(kind) or pa.types.is_null(kind):
        return array
    return None  # floats (NaN and NA apart in Arrow), dates, ...: by their Python values


# What Arrow makes of an object column's Python values of one kind (pandas' infer_dtype).
_ARROW_OF_KIND = {"string": pa.string(), "integer": pa.int64(), "boolean": pa.bool_()}


def _arrow_of_objects(values: pd.Series) -> pa.Array | None:
    # infer_dtype skips None, NaN and NA (NaT among texts makes the column "mixed"), and Arrow's
    # `from_pandas` takes those three as null; what else it skips (a float32 NaN) Arrow refuses,
    # and the column goes by its Python values.
    objects = values.to_numpy(dtype=object)
    kind = pd.api.types.infer_dtype(objects, skipna=True)
    if kind == "empty":
        return pa.nulls(len(objects))
    if kind not in _ARROW_OF_KIND:
        return None
    return pa.array(objects, type=_ARROW_OF_KIND[kind], from_pandas=True)


def _copy_line(error: Exception) -> int | None:
    """The COPY line the server reports in its error context (`COPY t, line 7, column c: ...`)."""
    context = getattr(getattr(error, "diag", None), "context", None) or ""
    found = re.search(r"\bline (\d+)", context)
    return int(found.group(1)) if found else None


# Problems go to the store this many at a time: an import lists every error and skip (SPEC §7).
_PROBLEM_BATCH = 50_000


def _record_outcomes(conn: Connection, import_id: str, decided: pd.DataFrame,
                     problems: ProblemTable) -> None:
    conn.execute(sa.delete(ImportRow.__table__).where(ImportRow.__table__.c.import_id == import_id))
    conn.execute(sa.delete(ImportProblem.__table__).where(ImportProblem.__table__.c.import_id == import_id))
    conn.execute(sa.delete(ImportProblemCount.__table__).where(ImportProblemCount.__table__.c.import_id == import_id))
    # An invalid account number is whatever the cell held (a note, a whole row split on the wrong
    # delimiter): no identifier, and maybe longer than the column, which PostgreSQL refuses.
    accounts = identifying(decided["account_number"].astype("object"))
    rows = pd.DataFrame({
        "import_id": import_id,
        "row_number": decided[ROW_NUMBER].astype("int64"),
        "account_number": accounts.where(accounts.notna(), None),
        "outcome": decided[OUTCOME],
        "code": decided[CODE],
        "changed_fields": decided[CHANGED_FIELDS] if CHANGED_FIELDS in decided else None,
    })
    _bulk_insert(conn, ImportRow.__table__, rows)
    listed = problems.listed  # in report order: its position is the store's `position`
    for start in range(0, len(listed), _PROBLEM_BATCH):
        batch = listed.iloc[start:start + _PROBLEM_BATCH]
        _bulk_insert(conn, ImportProblem.__table__, pd.DataFrame({
            "import_id": import_id, "row_number": batch["row"].astype("object"),
            "account_number": batch["account_number"], "field": batch["field"], "code": batch["code"],
            "severity": batch["severity"], "message": batch["message"],
            "position": range(start, start + len(batch))}, index=batch.index))
    counts = pd.DataFrame(problems.counts(), columns=["code", "field", "severity", "listed", "total"])
    counts.insert(0, "import_id", import_id)
    _bulk_insert(conn, ImportProblemCount.__table__, counts)


def recorded_result(conn: Connection, import_id: str) -> LoadResult | None:
    record = conn.execute(sa.select(Import.__table__).where(Import.__table__.c.id == import_id)).mappings().one()
    if record["loaded_at"] is None:
        return None
    counts = Counts(**{k: record[k] for k in ("read", "inserted", "updated", "unchanged", "skipped", "rejected")})
    return LoadResult(status=record["status"], counts=counts, already_loaded=True)


def _finish_load(conn: Connection, import_id: str, status: str, counts: Counts, details: dict | None,
                 fields: dict[str, int] | None = None) -> None:
    table = Import.__table__
    conn.execute(sa.update(table).where(table.c.id == import_id).values(
        status=status, loaded_at=datetime.now(timezone.utc), details=json.dumps(details) if details else None,
        field_changes=json.dumps(fields) if fields is not None else None, **counts.as_dict()))


def _file_rejection_outcomes(frame: pd.DataFrame, rejection: p.ExportRejected) -> pd.DataFrame:
    decided = frame[[ROW_NUMBER, "account_number"]].copy()
    own = frame[CODE] if CODE in frame else pd.Series(None, index=frame.index, dtype="object")
    decided[CODE] = own.where(own.isin(p.ROW_ERROR_CODES), rejection.code)
    decided[OUTCOME] = p.REJECTED
    return decided


# An export's rows a block at a time, in file order: called with the columns wanted (None: all),
# as `staging.validated_row_blocks(import_id, columns)` is.
RowBlocks = Callable[[Sequence[str] | None], Iterable[pd.DataFrame]]
# What the load keeps of each decided row once its block is staged (`patients.decided_rows`):
# what the outcomes, the problems, the counts and the capacity check read (`rules.decide_outcomes`'
# other columns, the row's data above all, go with the block).
_DECIDED = (ROW_NUMBER, "account_number", OUTCOME, CODE, CHANGED_FIELDS, IS_NEW, WRITE)
# The columns a rejected file's outcomes need (`_file_rejection_outcomes`).
_REJECTED = (ROW_NUMBER, "account_number", CODE)


def _blocks_of(frame: pd.DataFrame | RowBlocks | None) -> RowBlocks:
    """`load_import`'s rows as RowBlocks: a whole frame is one block (a test's, a small file's);
    None (the file could not be read) none."""
    if frame is None or isinstance(frame, pd.DataFrame):
        whole = frame

        def blocks(columns: Sequence[str] | None) -> Iterable[pd.DataFrame]:
            if whole is not None:
                yield whole if columns is None else whole[[c for c in columns if c in whole]]
        return blocks
    return frame


def _written(decided: pd.DataFrame) -> pd.Series:
    """Booleans: the decided rows the load writes. Only an outcome that writes is written, whatever
    `write` says (the rules set it for no other): a skipped or rejected row must never reach the
    store."""
    return decided[WRITE] & decided[OUTCOME].isin([p.INSERTED, p.UPDATED, p.UNCHANGED])


def _stager(write: _PatientWrite | None, practice: Practice,
            exported_on: date) -> Callable[[pd.DataFrame], None] | None:
    """What the load does with each decided block (`patients.decided_rows`): stage the rows to
    write into `write` (None: a dry run, nothing staged)."""
    if write is None:
        return None

    def stage(decided: pd.DataFrame) -> None:
        written = decided[_written(decided)]
        only_seen = written[OUTCOME].eq(p.UNCHANGED)  # rule 7: the export date alone moves
        write.stage(_patient_rows(written[~only_seen], practice.id, write.import_id, exported_on),
                    _seen_rows(written[only_seen], practice.id))
    return stage


def load_import(engine: Engine, *, import_id: str, practice: Practice, exported_on: date,
                frame: pd.DataFrame | RowBlocks | None, problems: ProblemTable | list[p.Problem],
                rejection: p.ExportRejected | None, dry_run: bool,
                runner: SuiteRunner | None = None) -> tuple[LoadResult, ProblemTable]:
    """Apply one import's rows, or record its rejection, in one transaction.

    Args:
        frame: the normalised rows with their suite `code`, whole or a block at a time
            (`RowBlocks`: the load stage reads a million rows `staging.ROW_BLOCK` at a time, and holds only
            each decided row's outcome columns between blocks); None when the file could not be
            read.
        problems: what validation found (warnings, row errors, duplicate copies).
        rejection: a file-level rejection decided before the load, if any.
        dry_run: decide and record every outcome, but change no patient.

    Returns the result and the problems recorded for the import (problem_table: warnings beyond
    the cap per code and field are counted, not listed).
    """
    runner = runner or SuiteRunner()
    blocks = _blocks_of(frame)
    with engine.begin() as conn:
        lock_practice(conn, practice.id)
        if conn.dialect.name == "postgresql":
            # JIT off as the bench's floor has it: compiling the load's few large statements is a
            # loss at these sizes. With
            # the default 4 MB of work_mem the joins of staging and store spill to disk, and a
            # merge join sorts both sides by the account number's collation (slow, and never
            # needed: nothing arrives sorted), where a hash join reads each once.
            conn.exec_driver_sql("SET LOCAL jit = off")
            conn.exec_driver_sql(f"SET LOCAL work_mem = '{_WORK_MEM}'")
            conn.exec_driver_sql("SET LOCAL enable_mergejoin = off")
        done = recorded_result(conn, import_id)
        if done is not None:
            return done, import_problems(conn, import_id)

        if rejection is None:
            rejection = accountless_rejection(count_patients(conn, practice.id, without_account=True))
        decided = None
        write = None if dry_run else _PatientWrite(conn, practice.id, import_id, exported_on)
        if rejection is None:
            decided = decided_rows(conn, practice, blocks(None), exported_on, _DECIDED,
                                   each=_stager(write, practice, exported_on))
            new = int((decided[OUTCOME] == p.INSERTED).sum())
            if new:
                stored = count_patients(conn, practice.id)
                if runner.run(PRACTICE_CAPACITY, decided[[ROW_NUMBER, IS_NEW]],
                              capacity_parameters(practice, stored)):
                    rejection = capacity_rejection(practice, stored, new)
        problems = ProblemTable.of(problems)
        if rejection is not None:
            if write is not None:
                write.discard()  # staged before capacity refused the file: nothing is written
            if decided is None:
                parts = list(blocks(list(_REJECTED)))
                decided = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(_REJECTED))
            decided = _file_rejection_outcomes(decided, rejection)
            problems += [rejection.problem()]
            status = p.Status.REJECTED
        else:
            assert decided is not None  # decided above whenever nothing rejected the file
            problems += _skip_problems(decided)
            warning = payment_plan_warning(practice, int((decided[OUTCOME] == p.INSERTED).sum()))
            if warning:
                problems += [warning]
            if write is not None:
                write.apply(decided.loc[_written(decided), [ROW_NUMBER, "account_number"]])
            status = p.Status.COMPLETED_WITH_ERRORS if (decided[OUTCOME] == p.REJECTED).any() else p.Status.COMPLETED
        counts = Counts.of(decided[OUTCOME]) if rejection is None else Counts.all_rejected(len(decided))
        _record_outcomes(conn, import_id, decided, problems)
        _finish_load(conn, import_id, str(status), counts, rejection.details if rejection else None,
                     field_counts(decided) if rejection is None else None)
    return LoadResult(status=str(status), counts=counts), problems


def _skip_problems(decided: pd.DataFrame) -> ProblemTable:
    # The duplicate copies' problems came with validation (the suite decided them).
    skips = decided[decided[CODE].isin([code for code in p.SKIP_CODES if code != p.DUPLICATE_ROW])]
    codes = skips[CODE].astype("object").reset_index(drop=True)
    return ProblemTable.of_rows(skips[ROW_NUMBER].to_numpy(), code=codes, message=skip_messages(codes),
                                account_numbers=skips["account_number"].to_numpy(dtype=object))


# ---------------------------------------------------------------- the stage

def load_patients(engine: Engine, import_id: str) -> dict:
    """The load stage: apply the staged rows to the store in one transaction (or record the
    rejection); safe to run again (a committed load is found and its result returned).

    Returns {"import_id", "status", "counts": {read, inserted, ...}}: ids and counts only.
    """
    job = Job.load(import_id)
    practices = load_practices()
    practice = practices.get(job.practice_id) or Practice(id=job.practice_id, name=job.practice_id)
    validation = load_validation(import_id, rows=False)  # the rows a block at a time, below
    problems = validation.problems
    if job.exported_on_source == files.FROM_LANDING:
        problems = problems + [landing_time_warning(job.exported_on)]
    rejection = validation.rejection
    if rejection is None:  # an import that waited for approval loads only when approved (SPEC §8)
        with engine.connect() as conn:
            rejection = approval_rejection(approval_of(conn, import_id))
    result, recorded = load_import(engine, import_id=import_id, practice=practice, exported_on=job.export_date,
                                   frame=partial(validated_row_blocks, import_id), problems=problems,
                                   rejection=rejection, dry_run=job.dry_run)
    if rejection is not None and validation.rejection is None and not job.dry_run:
        withdraw_rejected_rows(engine, import_id)  # rejected at approval: the whole file
    counts = result.counts
    log.info("import %s: %d inserted, %d updated, %d unchanged, %d skipped, %d rejected (of %d read); "
             "status %s%s%s", import_id, counts.inserted, counts.updated, counts.unchanged, counts.skipped,
             counts.rejected, counts.read, result.status, " (dry run: no patient changed)" if job.dry_run else "",
             " (loaded by an earlier try)" if result.already_loaded else "")
    if validation.rejection is None and result.status == p.Status.REJECTED:
        log.info("import %s rejected at load: %s", import_id,
                 ", ".join(x["code"] for x in recorded.counts() if x["severity"] == p.Severity.ERROR) or "?")
    elif result.status != p.Status.REJECTED:
        log.info("import %s: problems recorded: %s", import_id, recorded.severity_summary())
    return {"import_id": import_id, "status": result.status, "counts": result.counts.as_dict()}
