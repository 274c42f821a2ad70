"""The practice's stored patients as the stages read them, and the decision against them.

Validate reads the account numbers (which rows are new, for capacity) with the names and birth
dates of the people born on a new row's day (possible duplicates, SPEC §8), transform the store
ids of the patients known before the import (Cash Practice's ClientID); the load, under the
practice's lock, and approval read every column the sync rules compare (SPEC §3) of the patients
one block of the export names, block by block (`decided_rows`). Dates are read as ISO text, as
the normaliser writes them (`iso_date_text`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.patient_import.normalize import is_iso_date
from include.patient_import.practices import Practice
from include.patient_import.rules import DATA_COLUMNS, decide_outcomes
from include.patient_import.schema import STORE_COLUMN
from include.patient_import.store import Patient, wrapped_driver_error

ACCOUNT_COLUMN = "third_party_acct_number"
# The stored columns the sync rules compare (SPEC §3) and the bookkeeping they advance.
COMPARED = ("last_seen_exported_on", *(STORE_COLUMN.get(c, c) for c in DATA_COLUMNS))
# What `iso_date_text` gives for a PostgreSQL date no `date` holds: never a valid ISO date.
OUT_OF_RANGE = "out of range"


class StoredDateError(ValueError):
    """A stored date column holds a value that is not a date as YYYY-MM-DD (written by hand or by
    another program: a datetime text, another format, a number, a date no `date` holds)."""


def iso_date_text(column: sa.ColumnElement, dialect: str) -> sa.ColumnElement[str]:
    """A DATE column read as its ISO text, YYYY-MM-DD (NULL stays NULL), as `date.isoformat()` and
    the normaliser write it, so stored and exported dates compare as texts with no parsing.

    SQLite stores a DATE as that text already: it is read as it is. PostgreSQL's `to_char`, not a
    cast to text: a cast follows the session's DateStyle ('SQL, DMY' gives 30/11/2026). Of a
    timestamp without time zone: `to_char` has no date form, and would otherwise take the date as
    a `timestamptz` in the session's TimeZone.

    A PostgreSQL date outside years 1 to 9999 (BC, 10000 and later, +-infinity), which `to_char`
    would give as a misleading text or NULL, is read as `OUT_OF_RANGE`: not a date, so
    `stored_patients` refuses it, as the driver refused to load it as a `date` before.
    """
    if dialect == "postgresql":
        in_range = column.between(sa.literal(date.min, sa.Date), sa.literal(date.max, sa.Date))
        text = sa.func.to_char(sa.cast(column, sa.DateTime(timezone=False)), "YYYY-MM-DD", type_=sa.String)
        return sa.case((in_range, text), (column.is_not(None), sa.literal(OUT_OF_RANGE, sa.String)))
    return sa.type_coerce(column, sa.String)


def stored_patients(conn: Connection, practice_id: str, columns: Sequence[str] = (), *,
                    not_created_by: str | None = None, born_on: Iterable[object] | None = None,
                    accounts: Iterable[object] | None = None) -> pd.DataFrame:
    """The practice's patients that carry an account number, indexed by it.

    Args:
        columns: store column names (`Patient`), in the order wanted; the account number column
            is always there (first, unless `columns` places it).
        not_created_by: leave out the patients this import inserted, so that a re-run stage sees the
            store as it was before the import.
        born_on: only the patients born on one of these days (ISO texts, `YYYY-MM-DD`; anything
            else, None included, matches nobody): one `IN` query for up to `_BORN_ON_BATCH` days,
            else one read of everyone filtered here.
        accounts: only the patients with one of these account numbers (texts; anything else, None
            included, and on PostgreSQL a text holding NUL, matches nobody), `_ACCOUNT_BATCH` to
            a query through the practice's unique key: a block of an export needs its own
            patients, not the whole practice. Not with `born_on`.

    Returns a frame of object columns, one row per patient, indexed by the account number (object
    dtype; empty when the practice has no patient). Values are as stored, texts and integers, with
    None for a null, except dates: ISO texts, YYYY-MM-DD (`iso_date_text`), never `date` objects.

    Raises StoredDateError when a date column holds anything else: compared as a text, a
    '2026-11-30 00:00:00' or '30/11/2026' would make rule 7 (SPEC §3) skip or apply rows wrongly
    and every import report the date changed.
    """
    table = Patient.__table__
    names = list(columns) if ACCOUNT_COLUMN in columns else [ACCOUNT_COLUMN, *columns]
    dialect = conn.dialect.name
    selected = [iso_date_text(table.c[c], dialect).label(c) if isinstance(table.c[c].type, sa.Date) else table.c[c]
                for c in names]
    query = sa.select(*selected).where(table.c.practice_id == practice_id)
    if not_created_by is not None:
        query = query.where(sa.or_(table.c.created_import_id.is_(None), table.c.created_import_id != not_created_by))
    if born_on is not None and accounts is not None:
        raise TypeError("stored_patients: born_on or accounts, not both")
    if accounts is not None:
        return _indexed(_fetched_by_account(conn, query, accounts, len(names)), names, practice_id, dialect)
    query = query.where(table.c[ACCOUNT_COLUMN].is_not(None))
    if born_on is None:
        values = _fetched(conn, query, len(names))
    else:
        # Each distinct value checked once: an export repeats its birth dates (100,000 rows, 30,000 days).
        days = sorted({date.fromisoformat(d) for d in set(born_on) if isinstance(d, str) and is_iso_date(d)})
        if len(days) <= _BORN_ON_BATCH:
            values = (_fetched(conn, query.where(table.c.birth_date.in_(days)), len(names)) if days
                      else np.empty((0, len(names)), dtype=object))
        else:
            # Many days (a large export): everyone in one read, the days kept here. birth_date has
            # no index, so each `IN` query scans all the practice's patients: 88 queries of 500
            # days over 100,000 patients took 18 times the one read (SQLite). The ISO texts
            # compare as the days do (`iso_date_text`); a text that is no ISO day matches none.
            day_text = iso_date_text(table.c.birth_date, dialect).label("born_on_day")
            wide = _fetched(conn, query.add_columns(day_text), len(names) + 1)
            wanted = {day.isoformat() for day in days}
            kept = np.fromiter((v in wanted for v in wide[:, -1].tolist()), dtype=bool, count=len(wide))
            values = wide[kept, :-1]
    return _indexed(values, names, practice_id, dialect)


def _indexed(values: np.ndarray, names: list[str], practice_id: str, dialect: str) -> pd.DataFrame:
    """`stored_patients`' frame of the fetched `values` (rows x `names`), its dates checked."""
    table = Patient.__table__
    for position, name in enumerate(names):
        if isinstance(table.c[name].type, sa.Date):
            _check_iso_dates(values, position, names.index(ACCOUNT_COLUMN), name, practice_id, dialect)
    frame = pd.DataFrame(values, columns=names, dtype="object", copy=False)
    return frame.set_index(pd.Index(frame[ACCOUNT_COLUMN].to_numpy(), dtype="object", name=ACCOUNT_COLUMN))


# The most days `stored_patients(born_on=...)` asks for in one `IN` query: well under the bound
# parameters SQLite allows; beyond, one read of everyone costs less than a scan per batch.
_BORN_ON_BATCH = 500
# The most account numbers `stored_patients(accounts=...)` asks for in one `IN` query: within the
# bound parameters of both databases (SQLite 32,766, PostgreSQL 65,535), each a probe of the key.
_ACCOUNT_BATCH = 10_000
# On PostgreSQL the account numbers go as one text[] parameter (`= ANY(...)`), this many a query:
# 10,000 bound parameters each cost SQLAlchemy's expansion and the server's parse and plan, which
# made the load's read of 100,000 patients 2-3 s slower than one read of the whole practice.
_ACCOUNT_ARRAY = 100_000


def _fetched_by_account(conn: Connection, query: sa.Select, accounts: Iterable[object], width: int) -> np.ndarray:
    """`_fetched` of `query` for the patients whose account number is one of `accounts` (texts;
    anything else matches nobody), each distinct one asked for once: on SQLite `_ACCOUNT_BATCH`
    bound parameters a query, on PostgreSQL one text[] (`= ANY`, `_account_array`) of `_ACCOUNT_ARRAY`.

    `IN` alone, no `IS NOT NULL` beside it: with both, SQLite takes the not-null test as a range
    of the unique key and scans all the practice's patients for every query (2.0 s against 0.48 s
    for 100,000 accounts out of 976,000 patients). PostgreSQL's text holds no NUL, so no stored
    patient has such an account number, and the driver refuses to send one: a rejected row's
    invalid cell may hold it (an .xlsx cell's `_x0000_` reads as NUL), and asking for it would
    fail the whole load; it is left out there."""
    key = Patient.__table__.c[ACCOUNT_COLUMN]
    postgres = conn.dialect.name == "postgresql"
    wanted = pd.unique(np.fromiter((a for a in accounts if isinstance(a, str) and not (postgres and "\x00" in a)),
                                   dtype=object)).tolist()
    batch = _ACCOUNT_ARRAY if postgres else _ACCOUNT_BATCH
    parts = []
    for start in range(0, len(wanted), batch):
        some = wanted[start:start + batch]
        if postgres:
            matching = key == sa.any_(_account_array(some))
        else:
            matching = key.in_(some)
        parts.append(_fetched(conn, query.where(matching), width))
    return np.concatenate(parts) if parts else np.empty((0, width), dtype=object)


# What joins a block's account numbers into `_account_array`'s one text: a control character no
# valid account number holds (SPEC §2: digits), checked in every block all the same.
_ACCOUNT_SEPARATOR = "\x1f"


def _account_array(accounts: list[str]) -> sa.ColumnElement:
    """`accounts` as one PostgreSQL text[]: one text parameter of them all, split by the server
    (`string_to_array`, folded into a constant array before planning, so the plan is the same).
    psycopg sends a text as it is and dumps a list element by element in Python: for a million
    rows' load, 20 blocks of 50,000, 0.63-0.67 s -> 0.10-0.12 s (issue #14).

    An account number may be any text (a rejected row's invalid cell), so a block with one that
    holds `_ACCOUNT_SEPARATOR`, or of the empty text alone (`string_to_array` of '' has no
    element), goes as a list instead."""
    from sqlalchemy.dialects.postgresql import ARRAY

    joined = _ACCOUNT_SEPARATOR.join(accounts)
    if not joined or joined.count(_ACCOUNT_SEPARATOR) != len(accounts) - 1:
        return sa.bindparam("accounts", accounts, type_=ARRAY(sa.String))
    return sa.func.string_to_array(sa.bindparam("accounts", joined, type_=sa.Text), _ACCOUNT_SEPARATOR,
                                   type_=ARRAY(sa.String))


def _not_iso_dates(distinct: np.ndarray) -> set:
    """The values of `distinct` (an object array, no repeats) that are neither None nor ISO dates.

    numpy parses them all at once first (four times faster than `date` per value; a store holds tens
    of thousands of distinct birth dates); what its parse and its text of the parsed day do not
    match exactly, in `date`'s years, is looked at one by one."""
    present = distinct[pd.notna(distinct)]
    if pd.api.types.infer_dtype(present, skipna=False) in ("string", "empty"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a text with a time zone: not ISO anyway
                days = present.astype("datetime64[D]")
        except ValueError:
            pass
        else:
            same = np.datetime_as_string(days) == present.astype(str)
            if (same & (days >= np.datetime64(date.min)) & (days <= np.datetime64(date.max))).all():
                return set()
    return {v for v in present.tolist() if not is_iso_date(v)}


def _check_iso_dates(values: np.ndarray, position: int, account_position: int, column: str,
                     practice_id: str, dialect: str) -> None:
    """Raise StoredDateError unless column `position` of `values` holds ISO dates or None only.

    Each distinct value is checked once (a store repeats its dates). On PostgreSQL only
    `OUT_OF_RANGE` is looked for: `iso_date_text` reads a date there as `to_char` of a day in
    years 1 to 9999, ISO text by construction, or as `OUT_OF_RANGE` (the distinct values of a
    million patients' two dates took ~1.5 s of the load; issue #14). SQLite keeps whatever text
    was written. The message names the column and a few account numbers, never the values (birth
    dates are patient data)."""
    texts = values[:, position]
    if dialect == "postgresql":
        wrong = {OUT_OF_RANGE} if (texts == OUT_OF_RANGE).any() else set()
    else:
        wrong = _not_iso_dates(pd.unique(texts))
    if wrong:
        rows = [row for row, v in enumerate(texts.tolist()) if v is not None and v in wrong]
        accounts = ", ".join(str(a) for a in values[rows[:5], account_position].tolist())
        raise StoredDateError(
            f"practice {practice_id}: {len(rows)} stored patient(s) have a {column} that is not a date as "
            f"YYYY-MM-DD (account numbers {accounts}{', ...' if len(rows) > 5 else ''}); correct them in the store")


def _fetched(conn: Connection, query: sa.Select, width: int) -> np.ndarray:
    """The rows of `query` as one 2-D object array (rows x `width`), values as the driver gives them
    (`_driver_blocks`, all at once)."""
    [rows] = _driver_blocks(conn, query, None)
    return _object_matrix(rows, width)


def _driver_blocks(conn: Connection, query: sa.Select, block: int | None) -> Iterator[Sequence[tuple]]:
    """The rows of `query` as the driver's row tuples, `block` at a time (None: one list of them all).

    Executed through SQLAlchemy (its events and error scrubbing apply), fetched from the driver's
    cursor: SQLAlchemy's `Row`s cost more than the driver's own fetch for a narrow query (the
    account numbers and ids, 3x at 100,000 rows). A driver error while fetching is scrubbed and
    wrapped as the engine does (`wrapped_driver_error`); the result is closed however the reading
    ends."""
    result = conn.execute(query)
    driver_error = conn.dialect.loaded_dbapi.Error
    try:
        if block is None:
            yield result.cursor.fetchall()
        else:
            while rows := result.cursor.fetchmany(block):
                yield rows
    except driver_error as error:
        raise wrapped_driver_error(conn, str(query), error) from error
    finally:
        result.close()


def _object_matrix(rows: Sequence[tuple], width: int) -> np.ndarray:
    """The driver's row tuples as one 2-D object array (rows x `width`): numpy copies the
    references in C, where `zip(*rows)` and a list per column cost two to four times as much.
    The values are scalars (texts, integers, None), so numpy never descends into one."""
    return np.array(rows, dtype=object).reshape(len(rows), width) if rows else np.empty((0, width), dtype=object)


def stored_account_numbers(conn: Connection, practice_id: str, *, block: int = 100_000) -> pa.ChunkedArray:
    """The practice's stored account numbers (those not null; the index of `stored_patients`),
    as Arrow text, fetched `block` rows at a time: the rows of one block are Python values at
    once, not a million row tuples and texts (~120 MB at validate's peak; issue #14)."""
    query = sa.select(Patient.__table__.c[ACCOUNT_COLUMN])
    return _arrow_columns(conn, _with_text_accounts(conn, query, practice_id),
                          pa.schema([(ACCOUNT_COLUMN, pa.string())]), block)[ACCOUNT_COLUMN]


def stored_client_ids(conn: Connection, practice_id: str, *, not_created_by: str | None = None,
                      block: int = 100_000) -> pa.Table:
    """The practice's patients that carry an account number, as an Arrow table of two columns:
    `third_party_acct_number` (string) and `id` (int64, the store's id: Cash Practice's ClientID,
    SPEC §5), in no particular order, one row per patient; fetched `block` rows at a time as
    `stored_account_numbers` is (a million patients take ~20 MB so, ~150 MB as Python values).
    `not_created_by` as for `stored_patients`."""
    table = Patient.__table__
    query = _with_text_accounts(conn, sa.select(table.c[ACCOUNT_COLUMN], table.c.id), practice_id)
    if not_created_by is not None:
        query = query.where(sa.or_(table.c.created_import_id.is_(None), table.c.created_import_id != not_created_by))
    return _arrow_columns(conn, query, pa.schema([(ACCOUNT_COLUMN, pa.string()), ("id", pa.int64())]), block)


def _with_text_accounts(conn: Connection, query: sa.Select, practice_id: str) -> sa.Select:
    """`query` kept to the practice's patients whose account number is a text, as the Arrow reads
    (`_arrow_columns`) need it: SQLite keeps a BLOB written by hand as it is, which no text equals
    (`stored_patients(accounts=...)` never finds it), while Arrow would read b'abc' as the text
    'abc' (and refuse a BLOB that is no UTF-8)."""
    account = Patient.__table__.c[ACCOUNT_COLUMN]
    query = query.where(Patient.__table__.c.practice_id == practice_id, account.is_not(None))
    return query.where(sa.func.typeof(account) == "text") if conn.dialect.name == "sqlite" else query


def _arrow_columns(conn: Connection, query: sa.Select, schema: pa.Schema, block: int) -> pa.Table:
    """The rows of `query` as an Arrow table of `schema` (its columns in the query's order),
    fetched `block` rows at a time: only one block's rows are Python values at once, as one
    `_object_matrix` whose columns Arrow converts (a million patients on PostgreSQL: ~0.8 s
    against ~2 s through `zip(*rows)` for `stored_client_ids`)."""
    batches = []
    for rows in _driver_blocks(conn, query, block):
        values = _object_matrix(rows, len(schema))
        batches.append(pa.record_batch([pa.array(values[:, i], type=field.type)
                                        for i, field in enumerate(schema)], schema=schema))
    return pa.Table.from_batches(batches, schema=schema)


def count_patients(conn: Connection, practice_id: str, *, without_account: bool = False) -> int:
    """How many patients the practice has in the store; with `without_account`, only those without
    an account number (SPEC §3: their presence rejects every import of the practice)."""
    table = Patient.__table__
    query = sa.select(sa.func.count()).select_from(table).where(table.c.practice_id == practice_id)
    if without_account:
        query = query.where(table.c[ACCOUNT_COLUMN].is_(None))
    return int(conn.execute(query).scalar_one())


def decide_against_store(conn: Connection, practice: Practice, frame: pd.DataFrame, exported_on: date) -> pd.DataFrame:
    """`rules.decide_outcomes` for `frame` against the practice's patients as `conn` sees them:
    what the load applies (under the practice's lock) and what approval counts before it, without
    writing (SPEC §3, §8). Returns the frame with `outcome`, `code`, `changed`, `is_new`, `write`.

    Only the stored patients `frame`'s account numbers name are read (a row is decided against its
    own patient alone), so `frame` may be one block of an export at a time: the whole practice's
    patients as Python values take about a gigabyte per million. Raises StoredDateError when one
    of them holds a date that is not YYYY-MM-DD."""
    stored = stored_patients(conn, practice.id, COMPARED, accounts=frame["account_number"].tolist())
    return decide_outcomes(frame, stored, practice, exported_on)


def decided_rows(conn: Connection, practice: Practice, blocks: Iterable[pd.DataFrame], exported_on: date,
                 columns: Sequence[str], each: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """`decide_against_store` for an export a block at a time (`staging.validated_row_blocks`):
    what the load and approval decide (SPEC §3, §8) without holding the whole export or the whole
    practice's patients.

    `each` is called with every block's whole decided frame (the load stages its rows to write).
    Returns `columns` of the decided rows, in block order, index from 0; an empty frame of those
    columns when there is no block. Raises StoredDateError as `decide_against_store` does."""
    parts = []
    for block in blocks:
        decided = decide_against_store(conn, practice, block, exported_on)
        if each is not None:
            each(decided)
        # A copy of the columns kept: a selection alone may be a view that keeps the block alive.
        parts.append(decided[list(columns)].copy())
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    return pd.concat(parts, ignore_index=True)
