"""SPEC §7 from outside: an account with Airflow's `User` role triggers a run over the REST API with an
`export_file` outside `PATIENT_IMPORT_EXPORT_ROOTS`; the run fails with `export_file_not_allowed`
before anything is copied."""

from __future__ import annotations

import hashlib
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.e2e.conftest import USER_ROLE_ACCOUNT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_user_role_run_with_export_file_outside_the_roots_fails_before_anything_is_copied(airflow):
    # Outside the session's temporary folder, the only export root the stack was given.
    outside = Path(tempfile.mkdtemp(prefix="patient_import_not_a_root_")) / "Patient List.csv"
    outside.write_text("Account #,Last Name,First Name\n1,Lopez,Ana\n", encoding="utf-8")
    digest, mtime = hashlib.sha256(outside.read_bytes()).hexdigest(), outside.stat().st_mtime_ns
    areas = {area: _files(airflow.home / area) for area in ("archive", "quarantine", "outbox", "reports")}
    user, password = USER_ROLE_ACCOUNT
    token = airflow.stack.request("POST", "/auth/token", {"username": user, "password": password})["access_token"]

    triggered = airflow.stack.request("POST", "/api/v2/dags/patient_import/dagRuns", {
        "logical_date": None, "conf": {"practice_id": "demo_clinic", "export_file": str(outside)}}, token=token)
    run_id = urllib.parse.quote(triggered["dag_run_id"], safe="")
    deadline = time.monotonic() + 600
    while (run := airflow.api("GET", f"/api/v2/dags/patient_import/dagRuns/{run_id}"))["state"] not in (
            "success", "failed"):
        assert time.monotonic() < deadline, run
        time.sleep(2)

    assert run["state"] == "failed"
    states = {(t["task_id"], t["state"]) for t in airflow.task_instances(run_id)}
    assert ("plan_imports", "failed") in states, states
    logs = airflow.stack.airflow_home / "logs" / "dag_id=patient_import" / f"run_id={triggered['dag_run_id']}"
    plan_log = "".join(p.read_text(errors="replace") for p in logs.rglob("*.log") if "plan_imports" in str(p))
    assert "export_file_not_allowed" in plan_log, airflow.explain(triggered["dag_run_id"])
    assert {area: _files(airflow.home / area) for area in areas} == areas
    assert hashlib.sha256(outside.read_bytes()).hexdigest() == digest and outside.stat().st_mtime_ns == mtime
    outside.unlink()
    outside.parent.rmdir()
