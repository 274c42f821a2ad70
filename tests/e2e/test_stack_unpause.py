"""`make up` after `make run` / `make import`: both DAGs end unpaused, checked over the REST API.

`dag.test()` creates a DAG paused when it is the first to see it; `dags_are_paused_at_creation`
only applies to DAGs not yet in the database, so the stack must unpause what is already there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.airflow_stack import DAG_IDS, stack_env, start_stack, unpause

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_stack_start_unpauses_dags_a_local_run_created_paused(tmp_path):
    airflow_home = tmp_path / "airflow"
    airflow_home.mkdir()
    env = stack_env(airflow_home, 0, {"PATIENT_IMPORT_HOME": str(tmp_path),
                                      "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"})
    airflow = str(Path(sys.executable).with_name("airflow"))
    for command in (["db", "migrate"], ["dags", "reserialize"]):  # what dag.test() leaves: both DAGs, paused
        done = subprocess.run([airflow, *command], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    stack = start_stack(airflow_home, extra_env={"PATIENT_IMPORT_HOME": str(tmp_path)})
    try:
        token = stack.token()
        before = {d: stack.request("GET", f"/api/v2/dags/{d}", token=token)["is_paused"] for d in DAG_IDS}
        assert before == {d: True for d in DAG_IDS}  # the stack's paused-at-creation default changed nothing

        assert unpause(stack, token) == list(DAG_IDS)

        after = {d: stack.request("GET", f"/api/v2/dags/{d}", token=token)["is_paused"] for d in DAG_IDS}
        assert after == {d: False for d in DAG_IDS}
    finally:
        stack.stop()
