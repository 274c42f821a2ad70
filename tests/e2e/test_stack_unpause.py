"""`make up` after `make run` / `make import`: every DAG ends unpaused, checked over the REST API.

`dag.test()` creates a DAG paused when it is the first to see it; `dags_are_paused_at_creation`
only applies to DAGs not yet in the database, so the stack must unpause what is already there.
The session's stack (tests/e2e/conftest.py) starts on such a database: every DAG serialized, paused.
"""

from __future__ import annotations

import pytest

from scripts.airflow_stack import DAG_IDS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_stack_start_unpauses_dags_a_local_run_created_paused(airflow):
    # The stack's paused-at-creation default (False) changed nothing by itself.
    assert airflow.paused_at_start == {d: True for d in DAG_IDS}

    assert airflow.unpaused == list(DAG_IDS)

    assert airflow.is_paused() == {d: False for d in DAG_IDS}
