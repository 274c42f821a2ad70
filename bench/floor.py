"""The floor: the fastest plain SQL a sharp data team would write to give the store the same
patients from an already clean CSV, with the same sync rules ours applies.

PostgreSQL, two variants, both measured (the report keeps the faster one, per case, as "floor"):

- `merge`: COPY into an UNLOGGED staging table, ANALYZE it, then one `MERGE` (PostgreSQL 15),
  which the planner runs as a hash join of staging and patients;
- `on_conflict`: the same staging table, then one `INSERT … SELECT … ON CONFLICT DO UPDATE`.

Both with `SET jit = off` (the JIT's compile time is a loss at these sizes). UNLOGGED rather than
TEMPORARY: a temporary table is never scanned by parallel workers.

SQLite has no `MERGE`: one transaction, one executemany of the `ON CONFLICT` upsert.

The rules honoured, as ours does (SPEC §3):
- rule 6: an empty cell never erases a stored value (`COALESCE(incoming, stored)`);
- rule 7: a row from an export older than the patient's `last_seen_exported_on` changes nothing;
  one of the same date or newer applies, and `last_seen_exported_on` moves forward even when no
  other value changed (the *newer but identical export* case);
- `updated_import_id` is this import's only when a value changed; `created_import_id` only on insert;
- rows that would change nothing are not written (an unchanged re-import writes no row).
"""

from __future__ import annotations

import csv
import time

import sqlalchemy as sa

from bench.common import KEY, written_columns

PG_METHODS = ("merge", "on_conflict")
_BOOKKEEPING = ("practice_id", "last_seen_exported_on", "created_import_id", "updated_import_id")


def _data_columns(columns: list[str]) -> list[str]:
    """The patient values an import may change (not the key, not the bookkeeping)."""
    return [c for c in columns if c not in KEY and c not in _BOOKKEEPING]


def _changed(data: list[str], incoming: str, stored: str, distinct: str) -> str:
    """SQL true when a stored value would change under rule 6 (an empty incoming cell keeps it)."""
    return (f"({', '.join(f'COALESCE({incoming}.{c}, {stored}.{c})' for c in data)}) {distinct} "
            f"({', '.join(f'{stored}.{c}' for c in data)})")


def _applies(incoming: str, stored: str) -> str:
    """Rule 7: an export of the same date or newer applies; an older one changes nothing."""
    return (f"({stored}.last_seen_exported_on IS NULL "
            f"OR {incoming}.last_seen_exported_on >= {stored}.last_seen_exported_on)")


def _set_list(data: list[str], incoming: str, stored: str, changed: str, import_id: str) -> str:
    sets = [f"{c} = COALESCE({incoming}.{c}, {stored}.{c})" for c in data]
    # Applied rows only: the incoming date is the newest (rule 7), so it is taken as is.
    sets.append(f"last_seen_exported_on = {incoming}.last_seen_exported_on")
    sets.append(f"updated_import_id = CASE WHEN {changed} THEN {import_id} ELSE {stored}.updated_import_id END")
    return ", ".join(sets)


def on_conflict_sql(columns: list[str], source: str | None, import_id: str, dialect: str) -> str:
    """INSERT … ON CONFLICT DO UPDATE … WHERE (rows that change something); from `source` (a
    table) on PostgreSQL, from one row of `?` placeholders on SQLite (`source=None`)."""
    data = _data_columns(columns)
    inserted = [c for c in columns if c != "updated_import_id"]
    distinct = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    if source is None:
        values = ", ".join("?" if c != "created_import_id" else import_id for c in inserted)
        select = f"VALUES ({values})"
        incoming = "excluded"
    else:
        select = (f"SELECT {', '.join(c if c != 'created_import_id' else import_id for c in inserted)} "
                  f"FROM {source}")
        incoming = "EXCLUDED"
    changed = _changed(data, incoming, "patients", distinct)
    return (f"INSERT INTO patients ({', '.join(inserted)}) {select} "
            f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
            f"{_set_list(data, incoming, 'patients', changed, import_id)} "
            f"WHERE {_applies(incoming, 'patients')} AND ({changed} OR patients.last_seen_exported_on "
            f"{distinct} {incoming}.last_seen_exported_on)")


def merge_sql(columns: list[str], source: str, import_id: str) -> str:
    """PostgreSQL 15's MERGE of `source` into patients, the same rules as `on_conflict_sql`."""
    data = _data_columns(columns)
    inserted = [c for c in columns if c != "updated_import_id"]
    changed = _changed(data, "s", "p", "IS DISTINCT FROM")
    return (f"MERGE INTO patients p USING {source} s ON "
            + " AND ".join(f"p.{k} = s.{k}" for k in KEY)
            + f" WHEN MATCHED AND {_applies('s', 'p')} AND ({changed} OR p.last_seen_exported_on "
            f"IS DISTINCT FROM s.last_seen_exported_on) THEN UPDATE SET "
            + _set_list(data, "s", "p", changed, import_id)
            + f" WHEN NOT MATCHED THEN INSERT ({', '.join(inserted)}) VALUES ("
            + ", ".join(f"s.{c}" if c != "created_import_id" else import_id for c in inserted) + ")")


def run_floor(url: str, clean_csv: str, import_id: str = "floor", method: str = "on_conflict") -> dict:
    """Load `clean_csv` (a header of `written_columns()`) into the store at `url`:
    {"seconds", "stages": {label: seconds}, "written": rows the statement wrote, "method"}."""
    columns = written_columns()
    target = sa.engine.make_url(url)
    if target.get_backend_name() == "postgresql":
        if method not in PG_METHODS:
            raise ValueError(f"unknown floor method {method!r}; expected one of {PG_METHODS}")
        return _postgres(target, clean_csv, columns, import_id, method)
    if method != "on_conflict":
        raise ValueError("SQLite has no MERGE: its floor is `on_conflict` only")
    return _sqlite(target, clean_csv, columns, import_id)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _postgres(target: sa.URL, clean_csv: str, columns: list[str], import_id: str, method: str) -> dict:
    import psycopg

    stages = {}
    begin = time.perf_counter()
    names = ", ".join(columns)
    with psycopg.connect(host=target.host, port=target.port, user=target.username,
                         password=target.password, dbname=target.database) as conn:
        with conn.cursor() as cur:
            cur.execute("SET jit = off")
            cur.execute("DROP TABLE IF EXISTS floor_staging")
            cur.execute(f"CREATE UNLOGGED TABLE floor_staging AS SELECT {names} FROM patients WITH NO DATA")
            with open(clean_csv, "rb") as handle, \
                    cur.copy(f"COPY floor_staging ({names}) FROM STDIN (FORMAT csv, HEADER true)") as copy:
                while chunk := handle.read(1 << 20):
                    copy.write(chunk)
            # Without statistics the planner guesses the staging table's size and may pick a
            # nested loop; ANALYZE samples at most 30,000 rows, whatever the file's size.
            cur.execute("ANALYZE floor_staging")
            stages["copy"] = time.perf_counter() - begin
            sql = (merge_sql(columns, "floor_staging", _literal(import_id)) if method == "merge"
                   else on_conflict_sql(columns, "floor_staging", _literal(import_id), "postgresql"))
            cur.execute(sql)
            written = cur.rowcount
            cur.execute("DROP TABLE floor_staging")
        conn.commit()
    seconds = time.perf_counter() - begin
    stages[method] = seconds - stages["copy"]
    return {"seconds": seconds, "stages": stages, "written": written, "method": method}


def _sqlite(target: sa.URL, clean_csv: str, columns: list[str], import_id: str) -> dict:
    import sqlite3

    begin = time.perf_counter()
    inserted = [columns.index(c) for c in columns if c not in ("created_import_id", "updated_import_id")]
    with open(clean_csv, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header != columns:
            raise ValueError(f"the clean CSV's header is {header}, expected {columns}")
        rows = [tuple(row[i] or None for i in inserted) for row in reader]
    read = time.perf_counter() - begin
    conn = sqlite3.connect(target.database, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.executemany(on_conflict_sql(columns, None, _literal(import_id), "sqlite"), rows)
        written = cur.rowcount
        conn.execute("COMMIT")
    finally:
        conn.close()
    seconds = time.perf_counter() - begin
    return {"seconds": seconds, "stages": {"read": read, "on_conflict": seconds - read}, "written": written,
            "method": "on_conflict"}


def write_clean_csv(url: str, out: str, last_seen_exported_on: str | None = None) -> dict:
    """The store's patients after an import, as the clean CSV the floor and the peers load.

    Not measured: it stands for a file someone already cleaned. Empty values are empty cells
    (NULL to COPY's csv format), dates ISO. With `last_seen_exported_on` (ISO date), every row
    carries that export date instead: the same rows exported again later.
    """
    columns = written_columns()
    seen = columns.index("last_seen_exported_on")
    engine = sa.create_engine(url)
    rows = 0
    try:
        with engine.connect() as conn, open(out, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            result = conn.execution_options(stream_results=True).exec_driver_sql(
                f"SELECT {', '.join(columns)} FROM patients ORDER BY id")
            for batch in result.partitions(50_000):
                for row in batch:
                    values = ["" if v is None else str(v) for v in row]
                    if last_seen_exported_on:
                        values[seen] = last_seen_exported_on
                    writer.writerow(values)
                rows += len(batch)
    finally:
        engine.dispose()
    return {"rows": rows}


def store_digest(url: str, schema: str | None = None, table: str = "patients") -> dict:
    """What an import left in a store, independent of who wrote it: the patient values, the key
    and `last_seen_exported_on` of every row, as a count and a SHA-256 over the sorted rows.
    Import ids and surrogate keys are left out (each loader names its own imports)."""
    import hashlib

    columns = [c for c in written_columns() if c not in ("created_import_id", "updated_import_id")]
    engine = sa.create_engine(url)
    qualified = f"{schema}.{table}" if schema else table
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT {', '.join(columns)} FROM {qualified}").all()
    finally:
        engine.dispose()
    text = sorted("\x1f".join("" if v is None else str(v) for v in row) for row in rows)
    return {"rows": len(rows), "sha256": hashlib.sha256("\x1e".join(text).encode()).hexdigest()}
