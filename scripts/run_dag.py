"""Runs `patient_import` once through the real DAG (`dag.test()`) and prints what happened.

Used by `make run` (the demo) and `make import`. Exits 1 when an import was rejected or failed,
2 when the run could not start.
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
    conf: dict = {"practice_id": args.practice or None, "dry_run": args.dry_run}
    if args.file:
        if not args.practice:
            print("error: PRACTICE=<id> is required with FILE", file=sys.stderr)
            return 2
        path = Path(args.file).expanduser().absolute()
        # `make import` may read any local FILE it is given (SPEC §7): the file becomes an export
        # root for this in-process run only. The store, Airflow's home and other practices' areas
        # stay refused by the same check as every run's.
        os.environ["PATIENT_IMPORT_EXPORT_ROOTS"] = ":".join(
            filter(None, [os.environ.get("PATIENT_IMPORT_EXPORT_ROOTS", ""), str(path.resolve())]))
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

    from include.patient_import.pipeline import open_store
    from include.patient_import.summary import print_run_summary

    bag = DagBag(dag_folder=str(ROOT / "dags" / "patient_import.py"))
    if bag.import_errors:
        print(json.dumps(bag.import_errors, indent=1), file=sys.stderr)
        return 2
    dag = bag.get_dag("patient_import")
    log_path = Path(os.environ.get("AIRFLOW_HOME") or ROOT / "var" / "airflow") / "logs" / "last_run.log"
    print(f"running patient_import ({'dry run, ' if args.dry_run else ''}task logs: {log_path}) ...", flush=True)
    with _output_to(log_path):
        run = dag.test(run_conf=conf)
    return print_run_summary(run.run_id, str(run.state), open_store(_store_url()))


def _refused(conf: dict) -> str | None:
    """Why the run may not start (`planning.check_conf`, the same check the DAG makes), or None."""
    from include.patient_import.planning import check_conf
    from include.patient_import.problems import ConfigurationError

    try:
        check_conf(conf)  # without Airflow first: most refusals need no connection lookup
        try:
            store = _store_url()
        except Exception:  # noqa: BLE001 - no Airflow database yet: the default store is still refused
            store = None
        conf.update(export_file=check_conf(conf, store=store)["export_file"])
    except (ConfigurationError, ValueError) as exc:
        return str(exc)
    return None


@contextmanager
def _output_to(path: Path):
    """Send the run's task logs (stdout and stderr, at the descriptor level) to a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("wb") as log:
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


def _store_url() -> str | None:
    """The store the DAG used: the `patient_store` connection when defined (as in the task)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models import Connection

    from include.patient_import.store import sqlalchemy_url

    try:
        conn = Connection.get_connection_from_secrets("patient_store")
    except AirflowNotFoundException:
        return None
    return sqlalchemy_url(conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema)


if __name__ == "__main__":
    sys.exit(main())
