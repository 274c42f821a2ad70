"""What a user would pick instead, loading the same clean CSV into the same database.

- **naive pandas**: `read_csv` (every column text, dates parsed) + `to_sql(method="multi")`
  appended into the `patients` table, 1,000 rows a statement. Inserts only: `to_sql` has no upsert.
- **dlt**: a resource with `write_disposition="merge"` and the same primary key, from the CSV
  read as an Arrow table, into a dataset (schema) of the same database with dlt's defaults for
  that destination (PostgreSQL: `postgres`; SQLite: `sqlalchemy`), its Airflow secrets provider off.
- **DuckDB**: DuckDB reads the CSV and applies the same normalisations in SQL (every column text,
  empty cells NULL, the date columns cast to dates), the result is loaded into a staging table of
  the store and merged into `patients` with one `INSERT … ON CONFLICT DO UPDATE` (what a DuckDB
  user writes: the incoming row wins, rows equal to the stored ones are not written).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import sqlalchemy as sa

from bench.common import DATE_COLUMNS, KEY

_PANDAS_CHUNK_ROWS = 1_000


def run_pandas(url: str, clean_csv: str) -> dict:
    import pandas as pd

    begin = time.perf_counter()
    frame = pd.read_csv(clean_csv, dtype=str, keep_default_na=False, na_values=[""])
    for column in DATE_COLUMNS:
        frame[column] = pd.to_datetime(frame[column], format="%Y-%m-%d").dt.date
    frame = frame.astype(object).where(frame.notna(), None)
    read = time.perf_counter() - begin
    engine = sa.create_engine(url)
    try:
        frame.to_sql("patients", engine, if_exists="append", index=False, method="multi",
                     chunksize=_PANDAS_CHUNK_ROWS)
    finally:
        engine.dispose()
    seconds = time.perf_counter() - begin
    return {"seconds": seconds, "stages": {"read": read, "to_sql": seconds - read}}


def run_dlt(url: str, clean_csv: str, pipelines_dir: str) -> dict:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no network from the bench
    # dlt as a user runs it outside Airflow: with Airflow installed, its Airflow secrets provider
    # would import Airflow on the first configuration look-up (7-10 s here, inside `pipeline.run`).
    os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")
    started = time.perf_counter()
    import dlt
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    imports = time.perf_counter() - started
    target = sa.engine.make_url(url)
    if target.get_backend_name() == "postgresql":
        credentials = target.set(drivername="postgresql").render_as_string(hide_password=False)
        destination = dlt.destinations.postgres(credentials=credentials)
    else:
        destination = dlt.destinations.sqlalchemy(credentials=url)

    begin = time.perf_counter()
    with open(clean_csv, encoding="utf-8") as handle:
        names = handle.readline().rstrip("\n").split(",")
    table = pa_csv.read_csv(clean_csv, convert_options=pa_csv.ConvertOptions(
        column_types={c: (pa.date32() if c in DATE_COLUMNS else pa.string()) for c in names},
        strings_can_be_null=True))
    read = time.perf_counter() - begin

    @dlt.resource(name="patients", write_disposition="merge", primary_key=list(KEY))
    def patients():
        yield table

    pipeline = dlt.pipeline(pipeline_name="bench_patients", destination=destination,
                            dataset_name="bench_dlt", pipelines_dir=pipelines_dir, progress=None)
    info = pipeline.run(patients())
    info.raise_on_failed_jobs()
    seconds = time.perf_counter() - begin
    return {"seconds": seconds, "imports_seconds": imports, "stages": {"read": read, "dlt_run": seconds - read}}


def _duckdb_select(clean_csv: str, names: list[str]) -> str:
    """The normalising query: text columns, '' as NULL, ISO dates cast to DATE."""
    columns = ", ".join(
        f"CAST(NULLIF({c}, '') AS DATE) AS {c}" if c in DATE_COLUMNS else f"NULLIF({c}, '') AS {c}"
        for c in names)
    path = clean_csv.replace("'", "''")
    return (f"SELECT {columns} FROM read_csv('{path}', header = true, all_varchar = true, "
            f"quote = '\"', escape = '\"')")


def _duckdb_merge_sql(names: list[str], source: str, dialect: str) -> str:
    updated = [c for c in names if c not in KEY and c != "created_import_id"]
    distinct = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    return (f"INSERT INTO patients ({', '.join(names)}) SELECT {', '.join(names)} FROM {source} WHERE true "
            f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in updated)
            + f" WHERE ({', '.join('patients.' + c for c in updated)}) {distinct} "
            + f"({', '.join('excluded.' + c for c in updated)})")


def run_duckdb(url: str, clean_csv: str, work_dir: str) -> dict:
    """DuckDB reads and normalises the CSV; the rows go to a staging table of the store; one
    upsert merges them. DuckDB's own `postgres` extension (ATTACH a PostgreSQL database and
    INSERT into it) is used when it is installed; it is downloaded on first use, and offline (as
    on the bench machine, where `INSTALL postgres` fails) DuckDB instead writes the normalised
    rows to a CSV file (its parallel writer) and psycopg COPYs that file into the staging table.
    `path` in the result says which way the rows went. SQLite: DuckDB's
    rows (fetched in batches) go through one executemany into a temporary staging table."""
    started = time.perf_counter()
    import duckdb

    imports = time.perf_counter() - started
    target = sa.engine.make_url(url)
    begin = time.perf_counter()
    with open(clean_csv, encoding="utf-8") as handle:
        names = handle.readline().rstrip("\n").split(",")
    duck = duckdb.connect()
    duck.execute("SET preserve_insertion_order = false")
    select = _duckdb_select(clean_csv, names)
    stages: dict[str, float] = {}
    try:
        if target.get_backend_name() == "postgresql":
            path = _duckdb_to_postgres(duck, select, names, target, work_dir, stages, begin)
        else:
            path = _duckdb_to_sqlite(duck, select, names, target, stages, begin)
    finally:
        duck.close()
    seconds = time.perf_counter() - begin
    stages["merge"] = seconds - sum(stages.values())
    return {"seconds": seconds, "imports_seconds": imports, "stages": stages, "path": path}


def _duckdb_postgres_extension(duck) -> bool:
    """Whether DuckDB's postgres extension is installed here (then it is loaded). The bench never
    downloads it: offline, `INSTALL postgres` waits on the network before it fails, and that wait
    would be timed. Run `INSTALL postgres` once online to measure that path."""
    installed = duck.execute("SELECT installed FROM duckdb_extensions() "
                             "WHERE extension_name = 'postgres_scanner'").fetchone()
    if not installed or not installed[0]:
        return False
    duck.execute("LOAD postgres")
    return True


def _duckdb_to_postgres(duck, select: str, names: list[str], target: sa.URL, work_dir: str,
                        stages: dict, begin: float) -> str:
    import psycopg

    with psycopg.connect(host=target.host, port=target.port, user=target.username,
                         password=target.password, dbname=target.database) as conn:
        with conn.cursor() as cur:
            cur.execute("SET jit = off")
            cur.execute("DROP TABLE IF EXISTS duckdb_staging")
            cur.execute(f"CREATE UNLOGGED TABLE duckdb_staging AS SELECT {', '.join(names)} "
                        f"FROM patients WITH NO DATA")
            conn.commit()
            if _duckdb_postgres_extension(duck):
                path = "postgres extension"
                dsn = (f"host={target.host} port={target.port} user={target.username} "
                       f"password={target.password} dbname={target.database}")
                duck.execute(f"ATTACH '{dsn}' AS store (TYPE postgres)")
                duck.execute(f"INSERT INTO store.public.duckdb_staging {select}")
                duck.execute("DETACH store")
                stages["read_normalise_copy"] = time.perf_counter() - begin
            else:
                path = "csv file + COPY (the postgres extension cannot be downloaded)"
                out = str(Path(work_dir) / "duckdb_normalised.csv")
                duck.execute(f"COPY ({select}) TO '{out}' (HEADER false, DELIMITER ',')")
                stages["read_normalise"] = time.perf_counter() - begin
                with open(out, "rb") as handle, cur.copy(
                        f"COPY duckdb_staging ({', '.join(names)}) FROM STDIN (FORMAT csv)") as copy:
                    while chunk := handle.read(1 << 20):
                        copy.write(chunk)
                Path(out).unlink()
                stages["copy"] = time.perf_counter() - begin - stages["read_normalise"]
            cur.execute("ANALYZE duckdb_staging")
            cur.execute(_duckdb_merge_sql(names, "duckdb_staging", "postgresql"))
            cur.execute("DROP TABLE duckdb_staging")
        conn.commit()
    return path


def _duckdb_to_sqlite(duck, select: str, names: list[str], target: sa.URL, stages: dict, begin: float) -> str:
    import sqlite3

    result = duck.execute(select)
    conn = sqlite3.connect(target.database, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"CREATE TEMPORARY TABLE duckdb_staging AS SELECT {', '.join(names)} FROM patients WHERE 0")
        insert = f"INSERT INTO duckdb_staging VALUES ({', '.join('?' * len(names))})"
        while batch := result.fetchmany(50_000):
            # DuckDB hands dates as datetime.date; the store keeps ISO text, as SQLAlchemy writes it.
            conn.executemany(insert, ([v.isoformat() if hasattr(v, "isoformat") else v for v in row]
                                      for row in batch))
        stages["read_normalise_stage"] = time.perf_counter() - begin
        conn.execute(_duckdb_merge_sql(names, "duckdb_staging", "sqlite"))
        conn.execute("DROP TABLE duckdb_staging")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return "fetch + executemany (sqlite)"
