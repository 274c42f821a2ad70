"""One real Airflow (scheduler, API server, DAG processor, triggerer) per test session, up while its tests run."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.airflow_stack import DAG_IDS, Stack, stack_env, start_stack, unpause, wait_for_dag

E2E_PRACTICES = """
practices:
  - id: alpha_clinic
    name: Alpha Chiropractic
    capacity: 1000
    systems: [drip_education]
  - id: bravo_clinic
    name: Bravo Chiropractic
    capacity: 1000
    systems: [drip_education, auto_debit]
  - id: charlie_clinic
    name: Charlie Chiropractic
    capacity: 1000
    systems: [drip_education]
  - id: demo_clinic
    name: Demo Chiropractic
    capacity: 1000
    systems: [drip_education, auto_debit, cash_plan_calculator]
  - id: results_clinic  # tests/e2e/test_import_results_browser.py: the demo export, seen and undone in the UI
    name: Results Chiropractic
    capacity: 1000
    systems: [drip_education, auto_debit, cash_plan_calculator]
  - id: echo_clinic  # approval (tests/e2e/test_approval.py): more than 3 new patients waits
    name: Echo Chiropractic
    capacity: 1000
    systems: [drip_education]
    approval: {max_inserts: 3, timeout_hours: 1}
  - id: foxtrot_clinic  # approval: nobody answers within 18 seconds
    name: Foxtrot Chiropractic
    capacity: 1000
    systems: [drip_education]
    approval: {max_inserts: 3, timeout_hours: 0.005}
  - id: golf_clinic  # approval with the defaults: a small import is under every threshold
    name: Golf Chiropractic
    capacity: 1000
    systems: [drip_education]
    approval: {}
  - id: privacy_clinic  # tests/e2e/test_privacy.py: its marker import waits for approval, then is undone
    name: Privacy Chiropractic
    capacity: 1000
    systems: [drip_education, auto_debit, cash_plan_calculator]
    approval: {max_inserts: 3, timeout_hours: 1}
"""


# `airflow db migrate` then `airflow dags reserialize` through the `airflow` command's own entry point,
# in one Python process: Airflow's start (about 6 s of CPU) is paid once, not twice (issue #16).
LOCAL_RUN_COMMANDS = """
import sys
from airflow.__main__ import main
for command in (["db", "migrate"], ["dags", "reserialize"]):
    sys.argv = ["airflow", *command]
    main()
"""

# An account with Airflow's `User` role (it may trigger DAG runs): the role SPEC §7 guards against.
USER_ROLE_ACCOUNT = ("clerk", secrets.token_urlsafe(12))


class Airflow:
    """The running stack, its REST API with a token, and the patient-import home it works on."""

    def __init__(self, stack: Stack, home: Path):
        self.stack = stack
        self.home = home
        self.token = stack.token()
        # What the stack's start found and did (tests/e2e/test_stack_unpause.py): DAG id -> is_paused
        # before `unpause`, and the ids `unpause` reported unpaused.
        self.paused_at_start: dict[str, bool] = {}
        self.unpaused: list[str] = []

    def is_paused(self) -> dict[str, bool]:
        """DAG id -> is_paused, as the REST API reports it now."""
        return {d: self.api("GET", f"/api/v2/dags/{d}")["is_paused"] for d in DAG_IDS}

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        return self.stack.request(method, path, body, token=self.token)

    def runs(self, **query) -> list[dict]:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return self.api("GET", f"/api/v2/dags/patient_import/dagRuns?limit=100&{params}")["dag_runs"]

    def wait_until_idle(self, timeout: float = 900) -> list[dict]:
        """Poll until no run of the DAG is queued or running; returns all runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs()
            if runs and all(r["state"] in ("success", "failed") for r in runs):
                return runs
            time.sleep(1)
        raise TimeoutError(f"runs still active after {timeout:.0f} s: "
                           f"{[(r['dag_run_id'], r['state']) for r in self.runs()]}")

    def explain(self, run_id: str) -> str:
        """The failed tasks of a run and the error lines of their logs, for an assertion message."""
        lines = []
        for ti in self.task_instances(run_id):
            if ti["state"] not in ("success", "skipped"):
                lines.append(f"{ti['task_id']}[{ti['map_index']}]: {ti['state']}")
        logs = self.stack.airflow_home / "logs" / "dag_id=patient_import" / f"run_id={run_id}"
        for log in sorted(logs.rglob("*.log")) if logs.is_dir() else []:
            errors = [line[:400] for line in log.read_text(errors="replace").splitlines()
                      if "error" in line.lower() or "exception" in line.lower()]
            if errors:
                lines.append(f"{log.relative_to(logs)}:")
                lines += errors[-15:]
        return "\n".join(lines)

    def task_instances(self, run_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/patient_import/dagRuns/{run_id}/taskInstances?limit=200")[
            "task_instances"]


# Package scope, not session: the stack stops as soon as the last test of tests/e2e/ on this worker
# is done (under `make test` the shared-stack modules are one xdist scope, run together), instead of
# idling to the end of the session (about 5% of a core: its scheduler's, triggerer's and DAG
# processor's loops), and its stop (about 11 s) is no longer the session's last teardown.
@pytest.fixture(scope="package")
def airflow(tmp_path_factory) -> Airflow:
    root = tmp_path_factory.mktemp("e2e")
    home = root / "home"
    home.mkdir()
    registry = root / "practices.yml"
    registry.write_text(E2E_PRACTICES, encoding="utf-8")
    env = {
        "PATIENT_IMPORT_HOME": str(home),
        "PATIENT_IMPORT_PRACTICES": str(registry),
        "PATIENT_IMPORT_SETTLE_SECONDS": "0",
        "PATIENT_IMPORT_RETRIES": "1",
        "PATIENT_IMPORT_RETRY_DELAY_SECONDS": "1",
        "AIRFLOW__CORE__PARALLELISM": "4",
        # The DAG files do not change during a session: the processor parses them once at its start
        # (after `dags reserialize` below) instead of every 10 s, a parse costing about a second of
        # CPU and a write to the SQLite metadata database each time (issue #16: `make test` time).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3600",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{USER_ROLE_ACCOUNT[0]}:user",
        # The scheduler fails an unanswered approval (`awaiting_input` past its timeout) when it next
        # checks, every 15 s by default: tests/e2e/test_approval.py's 18-second timeout then waited up
        # to 15 s more. One cheap query every 2 s instead (product default unchanged).
        "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
    }
    (home / "airflow").mkdir()
    (home / "airflow" / "passwords.json").write_text(json.dumps(
        {"admin": secrets.token_urlsafe(12), USER_ROLE_ACCOUNT[0]: USER_ROLE_ACCOUNT[1]}), encoding="utf-8")
    os.environ.update({k: v for k, v in env.items() if k.startswith("PATIENT_IMPORT")})
    # What `make run` / `make import` leave before `make up`: `dag.test()` creates the DAGs paused
    # when it is the first to see them; the stack must unpause them (test_stack_unpause.py).
    local_run = stack_env(home / "airflow", 0, env | {"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"})
    done = subprocess.run([sys.executable, "-c", LOCAL_RUN_COMMANDS], env=local_run, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    stack = start_stack(home / "airflow", extra_env=env)
    try:
        client = Airflow(stack, home)
        wait_for_dag(stack, client.token)
        client.paused_at_start = client.is_paused()
        client.unpaused = unpause(stack, client.token)  # as `make up` does
        client.wait_until_idle()  # the first scheduled run, on empty inboxes
        yield client
    finally:
        stack.stop()
