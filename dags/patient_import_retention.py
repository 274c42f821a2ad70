"""
# patient_import_retention

Deletes the patient files older than the retention period, once a day.

One task, **purge_patient_files**, removes from `archive/`, `quarantine/`, `outbox/`, `reports/`
and `data_docs/` (under `$PATIENT_IMPORT_STORAGE`) every file last modified more than
`$PATIENT_IMPORT_RETENTION_DAYS` days ago (default 365), and the folders that leaves empty. It
never touches `inbox/` (exports still waiting), `staging/` (imports running) or the patient store.
Its log lists the files it removed; its return value holds counts only. `make purge` does the
same by hand (`DAYS=N`, `DRY_RUN=1`). See docs/security.md.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

_TIMEZONE = os.environ.get("PATIENT_IMPORT_TIMEZONE", "UTC")
_RETRIES = int(os.environ.get("PATIENT_IMPORT_RETRIES", "3"))
_RETRY_DELAY = timedelta(seconds=int(os.environ.get("PATIENT_IMPORT_RETRY_DELAY_SECONDS", "30")))


@task(multiple_outputs=True)
def purge_patient_files() -> dict:
    """Remove the patient files older than the retention period; returns figures, no paths."""
    from include.patient_import import settings
    from include.patient_import.retention import purge

    return purge(settings.retention_days()).counts()


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz=_TIMEZONE),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["patient_import", "retention"],
    default_args={"retries": _RETRIES, "retry_delay": _RETRY_DELAY, "retry_exponential_backoff": True,
                  "max_retry_delay": timedelta(minutes=10)},
)
def patient_import_retention() -> None:
    purge_patient_files()


patient_import_retention()
