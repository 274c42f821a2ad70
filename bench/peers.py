"""What a user would pick instead, loading the same clean CSV into the same database.

- **naive pandas**: `read_csv` (every column text, dates parsed) + `to_sql(method="multi")`
  appended into the `patients` table, 1,000 rows a statement. Inserts only: `to_sql` has no upsert.
- **dlt**: a resource with `write_disposition="merge"` and the same primary key, from the CSV
  read as an Arrow table, into a dataset (schema) of the same database with dlt's defaults for
  that destination (PostgreSQL: `postgres`; SQLite: `sqlalchemy`), its Airflow secrets provider off.
"""

from __future__ import annotations

import os
import time

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
