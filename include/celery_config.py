"""Airflow's Celery configuration, with the pipeline's imports done once per Celery worker.

The CeleryExecutor's worker (`airflow celery worker`, docker-compose.yml's `airflow-worker`) runs
each task in a process forked, through Airflow's supervisor, from one of the worker's prefork pool
processes; those are forked from the worker's main process. Without this, every task imported
pandas, pyarrow, SQLAlchemy, Great Expectations and the package's stage modules anew: seconds per
task (issue #14, "Celery workers preloading"). Celery sends `import_modules` in the worker's main
process before it forks its pool (Airflow's own provider preloads a few of its modules there the
same way), so importing `include.executors.PRELOADED_MODULES` then gives every pool process, and
every task, the modules already loaded. The list is the preloading LocalExecutor's: one place.

Selected with `AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=include.celery_config.CELERY_CONFIG` on every
Airflow component (the scheduler publishes with the same configuration). Importing this module
loads nothing heavy: only a worker preloads. The configuration itself is Airflow's default,
unchanged.
"""

from __future__ import annotations

import logging

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import import_modules

from include.executors import preload

log = logging.getLogger(__name__)

# Airflow's own (its `[celery]` settings); a copy, so that changing it here would not change Airflow's.
CELERY_CONFIG = dict(DEFAULT_CELERY_CONFIG)


@import_modules.connect
def preload_for_tasks(sender=None, **kwargs) -> dict[str, float]:
    """Import `PRELOADED_MODULES` in the worker's main process, before its pool forks.

    Connected to Celery's `import_modules` signal (sent by `app.loader.init_worker()`); returns
    {module: seconds} as `include.executors.preload` does. A module that fails to import is left to
    the task that needs it.
    """
    took = preload()
    log.info("preloaded %d modules for the Celery worker's tasks in %.1f s", len(took), sum(took.values()))
    return took
