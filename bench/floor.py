"""The floor: the least SQL that gives the store the same patients from an already clean CSV.

PostgreSQL: COPY into a temporary staging table, then one INSERT ... ON CONFLICT DO UPDATE.
SQLite: one transaction, one executemany of the same upsert. Both skip rows whose values are
all unchanged (`IS DISTINCT FROM` / `IS NOT`), so an unchanged re-import writes nothing: the
lowest floor, not the naive one.
"""

from __future__ import annotations

import csv
import time

import sqlalchemy as sa

from bench.common import KEY, written_columns


def _upsert_sql(columns: list[str], source: str, incoming: str, placeholder: bool) -> str:
    updated = [c for c in columns if c not in KEY and c != "created_import_id"]
    names = ", ".join(columns)
    select = f"VALUES ({', '.join('?' * len(columns))})" if placeholder else f"SELECT {names} FROM {source}"
    where_kw = "IS NOT" if placeholder else "IS DISTINCT FROM"
    return (f"INSERT INTO patients ({names}) {select} "
            f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
            + ", ".join(f"{c} = {incoming}.{c}" for c in updated)
            + f" WHERE ({', '.join('patients.' + c for c in updated)}) {where_kw} "
            + f"({', '.join(incoming + '.' + c for c in updated)})")


def run_floor(url: str, clean_csv: str) -> dict:
    columns = written_columns()
    target = sa.engine.make_url(url)
    if target.get_backend_name() == "postgresql":
        return _postgres(target, clean_csv, columns)
    return _sqlite(target, clean_csv, columns)


def _postgres(target: sa.URL, clean_csv: str, columns: list[str]) -> dict:
    import psycopg

    stages = {}
    begin = time.perf_counter()
    with psycopg.connect(host=target.host, port=target.port, user=target.username,
                         password=target.password, dbname=target.database) as conn:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TEMPORARY TABLE staging ON COMMIT DROP AS "
                        f"SELECT {', '.join(columns)} FROM patients WITH NO DATA")
            with open(clean_csv, "rb") as handle, \
                    cur.copy(f"COPY staging ({', '.join(columns)}) FROM STDIN (FORMAT csv, HEADER true)") as copy:
                while chunk := handle.read(1 << 20):
                    copy.write(chunk)
            stages["copy"] = time.perf_counter() - begin
            cur.execute(_upsert_sql(columns, "staging", "EXCLUDED", placeholder=False))
            written = cur.rowcount
        conn.commit()
    seconds = time.perf_counter() - begin
    stages["upsert"] = seconds - stages["copy"]
    return {"seconds": seconds, "stages": stages, "written": written}


def _sqlite(target: sa.URL, clean_csv: str, columns: list[str]) -> dict:
    import sqlite3

    begin = time.perf_counter()
    with open(clean_csv, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header != columns:
            raise ValueError(f"the clean CSV's header is {header}, expected {columns}")
        rows = [tuple(v if v else None for v in row) for row in reader]
    read = time.perf_counter() - begin
    conn = sqlite3.connect(target.database, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.executemany(_upsert_sql(columns, "", "excluded", placeholder=True), rows)
        written = cur.rowcount
        conn.execute("COMMIT")
    finally:
        conn.close()
    seconds = time.perf_counter() - begin
    return {"seconds": seconds, "stages": {"read": read, "upsert": seconds - read}, "written": written}


def write_clean_csv(url: str, out: str) -> dict:
    """The store's patients after an import, as the clean CSV the floor and the peers load.

    Not measured: it stands for a file someone already cleaned. Empty values are empty cells
    (NULL to COPY's csv format), dates ISO.
    """
    columns = written_columns()
    engine = sa.create_engine(url)
    rows = 0
    try:
        with engine.connect() as conn, open(out, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            result = conn.execution_options(stream_results=True).exec_driver_sql(
                f"SELECT {', '.join(columns)} FROM patients ORDER BY id")
            for batch in result.partitions(50_000):
                writer.writerows(["" if v is None else str(v) for v in row] for row in batch)
                rows += len(batch)
    finally:
        engine.dispose()
    return {"rows": rows}
