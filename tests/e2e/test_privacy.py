"""No patient value leaks (issue #7): a full run on the real scheduler with marker values in every field.

Every patient field except the account number holds a unique, valid marker. Afterwards none may
appear in Airflow's logs, its metadata database (XComs, rendered task fields, DAG-run conf,
task-instance notes), the GX validation results or Data Docs, or the reports. Only the store,
the archive, the outbox, the quarantine and the rejected-rows file may hold them; the run's
staging is empty.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PRACTICE = "demo_clinic"
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
    runs = airflow.wait_until_idle()
    run = next(r for r in runs if r["dag_run_id"] == triggered["dag_run_id"])
    assert run["state"] == "success", airflow.explain(run["dag_run_id"])

    leaks = {}
    for name in ("logs", "airflow.db", "standalone.log"):
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
