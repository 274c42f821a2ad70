"""
# trivial_five_tasks

The benchmark's yardstick for `patient_import`: five chained tasks that do nothing, except that
one imports Great Expectations (a cost the real DAG cannot avoid). `bench/airflow_overhead.py`
runs it with `airflow dags test` beside `patient_import`, and times the parsing of both files.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@task
def extract_export() -> str:
    return "extracted"


@task
def validate_export(previous: str) -> str:
    import great_expectations  # noqa: F401

    return "validated"


@task
def transform_export(previous: str) -> str:
    return "transformed"


@task
def load_export(previous: str) -> str:
    return "loaded"


@task
def report_export(previous: str) -> str:
    return "reported"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, doc_md=__doc__,
     tags=["bench"])
def trivial_five_tasks() -> None:
    report_export(load_export(transform_export(validate_export(extract_export()))))


trivial_five_tasks()
