"""Ours through Airflow: `airflow dags test` of `patient_import` on a small export beside the
trivial five-task DAG of `bench/dags/`, and the time Airflow takes to parse each DAG file."""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import ROOT

PATIENT_IMPORT_DAG = ROOT / "dags" / "patient_import.py"
TRIVIAL_DAG = ROOT / "bench" / "dags" / "trivial_five_tasks.py"


def parse_dag_file(dag_file: str) -> dict:
    """Seconds for a DagBag to parse one file, Airflow itself already imported (as in the DAG
    processor, which parses files in a process that has Airflow loaded)."""
    import airflow.sdk  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag

    begin = time.perf_counter()
    bag = DagBag(dag_folder=dag_file)
    seconds = time.perf_counter() - begin
    if bag.import_errors:
        raise RuntimeError(f"{Path(dag_file).name} does not parse: {list(bag.import_errors.values())[0][:500]}")
    return {"seconds": seconds, "dags": sorted(bag.dag_ids)}
