"""
# empty_import_shape

The yardstick of `bench/scheduled.py`: the shape of `patient_import` (a planning task, then per
practice a mapped group of seven chained tasks: extract, validate, transform, check approval,
approve, load, report) with tasks that do nothing. What it takes on the real scheduler is
Airflow's own cost of running that many task processes; `patient_import` over the same number of
practices, divided by it, is the scheduled-run ratio of issue #14.

Trigger with conf `{"practices": N}`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task, task_group


@task
def plan(params: dict | None = None) -> list[int]:
    return list(range(int((params or {}).get("practices", 1))))


@task
def step(practice: int) -> int:
    return practice


@task_group
def import_practice(practice: int) -> None:
    previous = step.override(task_id="extract")(practice)
    for name in ("validate", "transform", "check_approval", "approve", "load", "report"):
        previous = step.override(task_id=name)(previous)


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, max_active_runs=1,
     tags=["bench"], doc_md=__doc__)
def empty_import_shape() -> None:
    import_practice.expand(practice=plan())


empty_import_shape()
