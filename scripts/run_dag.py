"""Runs `patient_import` once through the real DAG (`dag.test()`) and prints what happened.

Used by `make run` (the demo) and `make import`. Exits 1 when an import was rejected or failed,
2 when the run could not start.

Each task's log goes where the scheduler would put it (`$AIRFLOW_HOME/logs/dag_id=…/run_id=…/
task_id=…/[map_index=…/]attempt=….log`, Airflow's `log_filename_template`), so the UI's grid shows
it for these runs too; what `dag.test()` itself logs between tasks goes to `dag_test.log` in the
run's folder. The terminal gets the summary and, for a task that failed, its error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--practice", default="", help="practice id (empty: every practice's inbox)")
    parser.add_argument("--file", default="", help="one export file to import")
    parser.add_argument("--exported-on", default="", help="export date YYYY-MM-DD")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--check-only", action="store_true",
                        help="only check the conf (SPEC §7); exit 2 with one line when it is refused")
    return parser.parse_args()


def main() -> int:
    args = _parse()
    from scripts.airflow_stack import default_airflow_home, running_stack

    pid = running_stack(default_airflow_home())
    if pid is not None:
        # `dag.test()` shares the stack's metadata database: the stack's scheduler would take this
        # run's tasks and run them in its own environment (without this run's FILE among its export
        # roots), and the run would fail for a reason that is not the file's (a newcomer's find).
        print(f"error: the local Airflow (`make up`, pid {pid}) is running and would take this run's tasks; "
              "`make down` first, or drop the file into var/inbox/<practice_id>/ and trigger a run from "
              "the UI", file=sys.stderr)
        return 2
    conf: dict = {"practice_id": args.practice or None, "dry_run": args.dry_run}
    if args.file:
        if not args.practice:
            print("error: PRACTICE=<id> is required with FILE", file=sys.stderr)
            return 2
        path = Path(args.file).expanduser().absolute()
        # `make import` may read any local FILE it is given (SPEC §7): the file becomes an export
        # root for this in-process run only. The store, Airflow's home and other practices' areas
        # stay refused by the same check as every run's.
        from include.patient_import.settings import MAKE_IMPORT_FILE

        os.environ[MAKE_IMPORT_FILE] = str(path.resolve())
        conf["export_file"] = str(path)
    if args.exported_on:
        conf["exported_on"] = args.exported_on
    refused = _refused(conf)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    if args.check_only:
        return 0

    from airflow.dag_processing.dagbag import DagBag

    from include.patient_import.records import open_store
    from include.patient_import.store import airflow_store_url
    from include.patient_import.summary import print_run_summary

    logs = _log_folder()
    outer = logs / f".dag_test_{os.getpid()}.log"
    with _output_to(outer):  # Airflow's own INFO lines while it parses the DAG: the log, not the terminal
        bag = DagBag(dag_folder=str(ROOT / "dags" / "patient_import.py"))
    if bag.import_errors:
        print(json.dumps(bag.import_errors, indent=1), file=sys.stderr)
        return 2
    dag = bag.get_dag("patient_import")
    print(f"running patient_import ({'dry run, ' if args.dry_run else ''}task logs under {logs}) ...", flush=True)
    failures: dict[tuple[str, int], str] = {}
    with _output_to(outer, append=True), _task_logs(logs, failures):
        run = dag.test(run_conf=conf)
    run_folder = logs / f"dag_id={dag.dag_id}" / f"run_id={run.run_id}"
    run_folder.mkdir(parents=True, exist_ok=True)
    outer.replace(run_folder / "dag_test.log")
    code = print_run_summary(run.run_id, str(run.state), open_store(airflow_store_url()))
    for (task_id, map_index), error in sorted(failures.items()):
        label = task_id + (f"[{map_index}]" if map_index >= 0 else "")
        print(f"failed task {label}: {error}")
    print(f"task logs: {run_folder} (and in the UI's grid after `make up`)")
    return code


def _log_folder() -> Path:
    from airflow.configuration import conf

    return Path(conf.get("logging", "base_log_folder"))


def _refused(conf: dict) -> str | None:
    """Why the run may not start (`planning.check_conf`, the same check the DAG makes), or None."""
    from include.patient_import.planning import check_conf
    from include.patient_import.problems import ConfigurationError
    from include.patient_import.store import airflow_store_url

    try:
        check_conf(conf)  # without Airflow first: most refusals need no connection lookup
        try:
            store = airflow_store_url()
        except Exception:  # noqa: BLE001 - no Airflow database yet: the default store is still refused
            store = None
        conf.update(export_file=check_conf(conf, store=store)["export_file"])
    except (ConfigurationError, ValueError) as exc:
        return str(exc)
    return None


@contextmanager
def _task_logs(base: Path, failures: dict[tuple[str, int], str]):
    """Run each task of `dag.test()` with its output in its own log file, as a worker would.

    `dag.test()` runs every task in this process through `run_task_in_process`; wrapping it is the
    one place that sees each task instance (for the file name) and its result (for the error).
    """
    from airflow.sdk.execution_time import supervisor
    from airflow.utils.helpers import log_filename_template_renderer

    render = log_filename_template_renderer()
    original = supervisor.run_task_in_process

    def run_logged(ti, task, client=None):
        path = base / render(ti=ti, try_number=ti.try_number)
        with _output_to(path, append=True):
            result = original(ti=ti, task=task, client=client)
        key = (ti.task_id, ti.map_index if ti.map_index is not None else -1)
        if getattr(result.state, "value", result.state) == "failed" and result.error is not None:
            failures[key] = _one_line(result.error)
        else:
            failures.pop(key, None)  # a retry that succeeded
        return result

    supervisor.run_task_in_process = run_logged
    try:
        yield
    finally:
        supervisor.run_task_in_process = original


def _one_line(error: BaseException) -> str:
    """The exception's class and message on one line (messages never hold patient values)."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


@contextmanager
def _output_to(path: Path, append: bool = False):
    """Send stdout and stderr (at the descriptor level: structlog and child processes too) to a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab" if append else "wb") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


if __name__ == "__main__":
    sys.exit(main())
