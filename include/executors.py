"""Airflow's LocalExecutor with the pipeline's imports done once, before its workers fork.

Each task of `patient_import` runs in a process Airflow forks from one of the LocalExecutor's
worker processes; everything that process has imported, the task has too. Airflow's own worker
has `airflow` loaded, but every task then imported pandas, pyarrow, SQLAlchemy, the package's
stage modules and (for `validate_exports`) Great Expectations anew: seconds per task, paid by all
five tasks of every practice of every run (issue #14: "per-task overhead near Airflow's own").
`PreloadingLocalExecutor` imports them in the scheduler before it forks the workers, so each task
starts with them loaded. Only imports: no engine, file or thread exists before the fork (checked
by tests/tooling/test_executors.py), and a module that fails to import is left to the task that
needs it, which then fails with the real error.

Used by `make up` and the test stacks (`scripts/airflow_stack.py`):
`AIRFLOW__CORE__EXECUTOR=include.executors.PreloadingLocalExecutor`. On macOS (spawn, not fork)
it is the plain LocalExecutor. `python -m bench.task_overhead` prints what a task pays with and
without it.
"""

from __future__ import annotations

import importlib
import logging
import time

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

# What the tasks of dags/patient_import.py and dags/patient_import_undo.py import in their bodies
# (and gx_runner on first use): heavy libraries first, then the package's entry points.
PRELOADED_MODULES = (
    "pandas",
    "pyarrow",
    "sqlalchemy",
    "great_expectations",
    "include.patient_import.planning",
    "include.patient_import.extract",
    "include.patient_import.validate",
    "include.patient_import.gx_runner",
    "include.patient_import.transform",
    "include.patient_import.approval",
    "include.patient_import.load",
    "include.patient_import.report",
    "include.patient_import.summary",
    "include.patient_import.undo",
    "include.patient_import.staleness",
    "include.patient_import.retention",
)


def preload(modules: tuple[str, ...] = PRELOADED_MODULES) -> dict[str, float]:
    """Import `modules`; returns {module: seconds} of those imported, leaving out any that failed."""
    took = {}
    for name in modules:
        start = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:  # the task that needs it imports it again and fails with the real error
            log.warning("preloading %s failed (%s): tasks will import it themselves", name, type(exc).__name__)
            continue
        took[name] = time.perf_counter() - start
    return took


class PreloadingLocalExecutor(LocalExecutor):
    """The LocalExecutor, with `PRELOADED_MODULES` imported before its workers are forked."""

    def start(self) -> None:
        if self.is_mp_using_fork:
            took = preload()
            log.info("preloaded %d modules for the task processes in %.1f s", len(took), sum(took.values()))
        super().start()
