"""No patient value leaks (issues #7, #15): a full run on the real scheduler with marker values in every field.

Every patient field except the account number holds a unique, valid marker. The import is over its
practice's approval threshold: it waits in Airflow's human-in-the-loop step, is approved over the
REST API, loads, its changes file is downloaded, and it is undone through `patient_import_undo`.
Afterwards none may appear in Airflow's logs, its metadata database (XComs, rendered task fields,
DAG-run conf, task-instance notes, the HITL records: subject, body, params, chosen options), the GX
validation results or Data Docs, the reports (the import's, rewritten as undone, and the undo's),
or the import's Import Results page and API (audit rows included). Only the store, the archive,
the outbox, the quarantine, the rejected-rows file and the role-gated changes file may hold them;
the run's staging is empty. One import run and one undo run: `make test` time matters.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PRACTICE = "privacy_clinic"  # approval {max_inserts: 3} (tests/e2e/conftest.py): this import waits
APPROVE_TASK = "import_practice.approve_imports"
# Answered within a second of the pause, an answer can be lost (tests/e2e/test_approval.py): a person
# answers later, so the test waits until the pause has settled.
APPROVAL_SETTLE_SECONDS = 6
ALLOWED_AREAS = ("archive", "outbox", "quarantine")
# Valid, distinct values for each marker row: area codes and exchanges that phonenumbers accepts.
PHONES = ["2089478877", "3122485290", "8136245454", "8564249817", "6035828294", "4136912125"]


def marker_rows() -> tuple[list[list[str]], list[str]]:
    header = ["Account #", "Last Name", "First Name", "MI", "Address", "Address 2", "City", "State", "Zip",
              "Home Phone", "Cell Phone", "Email", "Birth Date", "Sex", "Status"]
    rows, markers = [header], []
    for i in range(3):
        values = {
            "last": f"Qzlast{i}mrk", "first": f"Qzfirst{i}mrk", "mi": "", "addr": f"{i + 10} Qzstreet{i}mrk Rd",
            "addr2": f"Qzsuite{i}mrk", "city": f"Qzcity{i}mrk", "home": PHONES[2 * i], "cell": PHONES[2 * i + 1],
            "email": f"qzmail{i}mrk@example.org", "dob": f"{i + 2}/{i + 11}/19{41 + i}",
        }
        rows.append([str(5000 + i), values["last"], values["first"], values["mi"], values["addr"], values["addr2"],
                     values["city"], "ID", "83705", values["home"], values["cell"], values["email"], values["dob"],
                     "F", "Active"])
        markers += [values[k] for k in ("last", "first", "addr2", "city", "home", "cell", "email")]
        markers += [f"Qzstreet{i}mrk", f"19{41 + i}-{i + 2:02d}-{i + 11:02d}", values["dob"]]
    # A rejected row too: its values may only reach the rejected-rows file.
    rows.append(["", "Qzrejectedmrk", "Qzrejfirstmrk", "", "1 Qzrejstreetmrk", "", "Boise", "ID", "83705", "", "",
                 "", "", "", ""])
    markers += ["Qzrejectedmrk", "Qzrejfirstmrk", "Qzrejstreetmrk"]
    return rows, markers


def files_holding(root: Path, markers: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        hits = [m for m in markers if m.encode() in data]
        if hits:
            found[str(path)] = hits
    return found


def _get(airflow, path: str) -> bytes:
    """A page or file of Airflow's API server as the admin (not JSON: the Import Results pages)."""
    request = urllib.request.Request(airflow.stack.url + path, headers={"Authorization": f"Bearer {airflow.token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def _approve_when_waiting(airflow, run_id: str, timeout: float = 600) -> None:
    """Wait until the run's approval step has waited for input for a while, then approve it."""
    quoted = urllib.parse.quote(run_id, safe="")
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        waiting = [t for t in airflow.task_instances(quoted)
                   if t["task_id"] == APPROVE_TASK and t["state"] == "awaiting_input"]
        if not waiting:
            seen = None
            state = airflow.api("GET", f"/api/v2/dags/patient_import/dagRuns/{quoted}")["state"]
            assert state not in ("success", "failed"), f"the import did not wait for approval: {state}"
        elif seen is None:
            seen = time.monotonic()
        elif time.monotonic() - seen >= APPROVAL_SETTLE_SECONDS:
            airflow.api("PATCH", f"/api/v2/dags/patient_import/dagRuns/{quoted}/taskInstances/{APPROVE_TASK}/"
                                 f"{waiting[0]['map_index']}/hitlDetails", {"chosen_options": ["Approve"],
                                                                            "params_input": {}})
            return
        time.sleep(2)
    raise TimeoutError(f"the approval step did not wait: {airflow.explain(run_id)}")


def _undo(airflow, import_id: str, timeout: float = 600) -> None:
    """Undo the import through the `patient_import_undo` DAG, as the Undo button does."""
    run = airflow.api("POST", "/api/v2/dags/patient_import_undo/dagRuns",
                      {"logical_date": None, "conf": {"import_id": import_id}})
    quoted = urllib.parse.quote(run["dag_run_id"], safe="")
    deadline = time.monotonic() + timeout
    while (state := airflow.api("GET", f"/api/v2/dags/patient_import_undo/dagRuns/{quoted}")["state"]) not in (
            "success", "failed"):
        assert time.monotonic() < deadline, state
        time.sleep(2)
    assert state == "success"


def _hitl_records(airflow_db: Path) -> list[str]:
    """Every HITL record of the metadata database (request and answer, and their history), as text."""
    with sqlite3.connect(f"file:{airflow_db}?mode=ro", uri=True) as conn:
        rows = [" | ".join(str(value) for value in row) for table in ("hitl_detail", "hitl_detail_history")
                for row in conn.execute(f"select * from {table}")]  # noqa: S608 - fixed table names
    return rows


def test_no_marker_value_leaves_the_patient_files(airflow, tmp_path):
    rows, markers = marker_rows()
    rows += [[str(6000 + i), "Plain", "Patient", "", "", "", "Boise", "ID", "83705", "", "", "", "", "", ""]
             for i in range(6)]  # keeps the rejected share under a quarter
    export = airflow.home / "inbox" / PRACTICE / "privacy_export.csv"
    export.parent.mkdir(parents=True, exist_ok=True)
    with export.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    landed = time.time() - 120
    os.utime(export, (landed, landed))

    triggered = airflow.api("POST", "/api/v2/dags/patient_import/dagRuns",
                            {"logical_date": None, "conf": {"practice_id": PRACTICE}})
    _approve_when_waiting(airflow, triggered["dag_run_id"])
    runs = airflow.wait_until_idle()
    run = next(r for r in runs if r["dag_run_id"] == triggered["dag_run_id"])
    assert run["state"] == "success", airflow.explain(run["dag_run_id"])
    [listed] = json.loads(_get(airflow, f"/import-results/api/imports?practice={PRACTICE}"))["imports"]
    import_id = listed["id"]
    changes_file = _get(airflow, f"/import-results/imports/{import_id}/files/changes").decode("utf-8-sig")
    _undo(airflow, import_id)

    report = json.loads((airflow.home / "reports" / PRACTICE / f"{import_id}.json").read_text(encoding="utf-8"))
    assert report["status"] == "undone" and report["approval"]["answer"] == "approved"
    assert Path(report["undo"]["report"]).is_file()
    hitl = _hitl_records(airflow.stack.airflow_home / "airflow.db")
    # The request (subject, body, options) and the answer (chosen options, who) of this import.
    assert any(PRACTICE in row and '["Approve"]' in row for row in hitl), hitl
    page = _get(airflow, f"/import-results/imports/{import_id}").decode("utf-8")
    api = _get(airflow, f"/import-results/api/imports/{import_id}").decode("utf-8")
    audit = {entry["action"]: entry for entry in json.loads(api)["audit"]}
    assert {"triggered", "approved", "downloaded", "undone"} <= set(audit), audit
    assert json.loads(api)["import"]["status"] == "undone" and 'id="undo-report"' in page

    leaks = {}
    for name, text in (("hitl records", "\n".join(hitl)), ("import results page", page),
                       ("import results api", api)):
        if hits := [m for m in markers if m in text]:
            leaks[name] = hits
    for name in ("logs", "airflow.db", "airflow.db-wal", "standalone.log"):
        target = airflow.stack.airflow_home / name
        if target.is_file():
            hits = [m for m in markers if m.encode() in target.read_bytes()]
            if hits:
                leaks[str(target)] = hits
        elif target.is_dir():
            leaks |= files_holding(target, markers)
    for area in ("reports", "data_docs", "staging"):
        leaks |= files_holding(airflow.home / area, markers)
    xcoms = json.dumps(airflow.api("GET", "/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries?limit=1000"))
    if any(m in xcoms for m in markers):
        leaks["xcom api"] = [m for m in markers if m in xcoms]
    figures = ROOT / "var" / "reliability" / "privacy.json"
    figures.parent.mkdir(parents=True, exist_ok=True)
    figures.write_text(json.dumps({"markers_found": sum(len(v) for v in leaks.values())}), encoding="utf-8")
    assert leaks == {}

    staging = airflow.home / "staging"
    assert not staging.exists() or not any(p.is_file() for p in staging.rglob("*"))
    allowed = {}
    for area in ALLOWED_AREAS:
        allowed |= files_holding(airflow.home / area, markers)
    assert allowed, "the markers should be in the archive and the outbox"
    assert [m for m in markers if m in changes_file], "the changes file holds the values (role-gated)"
