"""Approval (SPEC §8) in the real scheduler: an import over a threshold waits in Airflow's
human-in-the-loop step until it is answered, while another practice's import of the same run
finishes; approved (in the Airflow UI, in headless Chromium, after following the approver's link
to the import's Import Results page) it loads, rejected (over the REST API) or unanswered it
changes nothing; an import under every threshold never waits."""

from __future__ import annotations

import time
import urllib.parse
from datetime import date, timedelta

import pytest

from tests.e2e.browser import Browser, launch, log_in
from tools.corpus import MARKERS, accepted_rows, csv_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

APPROVE_TASK = "import_practice.approve_imports"
DAY = (date.today() - timedelta(days=1)).isoformat()


def _drop(airflow, practice_id: str, name: str, rows: int, first: int) -> None:
    inbox = airflow.home / "inbox" / practice_id
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / name).write_text(csv_text(accepted_rows(rows, first)), encoding="utf-8")


def _trigger(airflow, conf: dict | None = None) -> str:
    run = airflow.api("POST", "/api/v2/dags/patient_import/dagRuns", {"logical_date": None, "conf": conf or {}})
    return run["dag_run_id"]


def _quoted(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


@pytest.fixture
def browser():
    # Closed after the one test that uses it: left open on Airflow's approval page through the
    # module's other tests (about a minute), its renderer kept polling the UI (14% of a core).
    with launch() as chromium:
        yield chromium


@pytest.fixture(autouse=True)
def no_run_left_waiting(airflow):
    """A run left waiting (a failed test) would hold every later run of the DAG (max_active_runs=1)
    and so every later test on the shared stack: after each test, any run still active is failed."""
    yield
    for run in airflow.runs():
        if run["state"] in ("queued", "running"):
            airflow.api("PATCH", f"/api/v2/dags/patient_import/dagRuns/{_quoted(run['dag_run_id'])}",
                        {"state": "failed"})


def _map_index(instances: list[dict], practice_id: str) -> int | None:
    """The practice's map index, from a finished task of its group (a task renders its practice label
    when it finishes: the waiting approval step is still labelled with its number)."""
    found = {t["map_index"] for t in instances if t.get("rendered_map_index") == practice_id}
    return found.pop() if found else None


def _tasks(airflow, run_id: str, practice_id: str) -> dict[str, str]:
    """The practice's group: task id (without the group) -> state."""
    instances = airflow.task_instances(_quoted(run_id))
    index = _map_index(instances, practice_id)
    return {t["task_id"].split(".")[-1]: t["state"] for t in instances
            if index is not None and t["map_index"] == index}


APPROVAL_SETTLE_SECONDS = 6


def _approval_task(airflow, run_id: str, practice_id: str, timeout: float = 600) -> dict:
    """Wait until the practice's approval step waits for input; returns its task instance."""
    deadline = time.monotonic() + timeout
    seen: float | None = None
    while time.monotonic() < deadline:
        instances = airflow.task_instances(_quoted(run_id))
        index = _map_index(instances, practice_id)
        for ti in instances:
            if ti["task_id"] == APPROVE_TASK and index is not None and ti["map_index"] == index:
                if ti["state"] == "awaiting_input":
                    if seen is None:
                        # Answered within a second or two of the pause, Airflow 3.3's scheduler can fail
                        # the resumed try (the parking process's exit report is taken for it; README
                        # "Approval") and the retry asks again. A person answers later; so does the test.
                        seen = time.monotonic()
                    elif time.monotonic() - seen >= APPROVAL_SETTLE_SECONDS:
                        return ti
                else:
                    seen = None
                assert ti["state"] not in ("success", "failed", "skipped", "upstream_failed"), (
                    ti, airflow.explain(run_id))
        time.sleep(2)
    raise TimeoutError(f"{practice_id}'s approval step did not wait: {airflow.explain(run_id)}")


def _wait_for_run(airflow, run_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while (run := airflow.api("GET", f"/api/v2/dags/patient_import/dagRuns/{_quoted(run_id)}"))["state"] not in (
            "success", "failed"):
        assert time.monotonic() < deadline, run
        time.sleep(2)
    return run["state"]


def _answer(airflow, run_id: str, ti: dict, option: str) -> dict:
    return airflow.api("PATCH", f"/api/v2/dags/patient_import/dagRuns/{_quoted(run_id)}/taskInstances/"
                                f"{APPROVE_TASK}/{ti['map_index']}/hitlDetails",
                       {"chosen_options": [option], "params_input": {}})


def _imports(practice_id: str) -> dict[str, dict]:
    import sqlalchemy as sa

    from include.patient_import.records import open_store
    from include.patient_import.store import Import, ImportProblem

    engine = open_store()
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(Import.__table__).where(Import.__table__.c.practice_id == practice_id)
                                ).mappings().all()
            found = {}
            for r in rows:
                table = ImportProblem.__table__
                codes = set(conn.execute(sa.select(table.c.code).where(
                    table.c.import_id == r["id"], table.c.row_number.is_(None), table.c.severity == "error")).scalars())
                found[r["id"]] = {**dict(r), "file_codes": codes}
            return found
    finally:
        engine.dispose()


def _patients(practice_id: str) -> set[str]:
    import sqlalchemy as sa

    from include.patient_import.records import open_store
    from include.patient_import.store import Patient

    engine = open_store()
    try:
        with engine.connect() as conn:
            table = Patient.__table__
            return set(conn.execute(sa.select(table.c.third_party_acct_number)
                                    .where(table.c.practice_id == practice_id)).scalars())
    finally:
        engine.dispose()


def test_an_import_over_a_threshold_waits_until_approved_while_another_practice_finishes(airflow, browser):
    _drop(airflow, "echo_clinic", f"Patients {DAY}.csv", rows=6, first=71001)
    _drop(airflow, "golf_clinic", f"Patients {DAY}.csv", rows=2, first=72001)
    run_id = _trigger(airflow)

    waiting = _approval_task(airflow, run_id, "echo_clinic")
    assert waiting["rendered_map_index"] == "echo_clinic"  # labelled with its practice while it waits
    # The other practice's group is not held up: it finishes while echo_clinic waits.
    deadline = time.monotonic() + 600
    while (golf := _tasks(airflow, run_id, "golf_clinic")).get("report_imports") != "success":
        assert time.monotonic() < deadline, (golf, airflow.explain(run_id))
        time.sleep(2)
    assert golf["approve_imports"] == "skipped"  # under every threshold: never waited
    assert _patients("golf_clinic") == {"72001", "72002"}
    assert _tasks(airflow, run_id, "echo_clinic")["approve_imports"] == "awaiting_input"
    assert _patients("echo_clinic") == set()

    # What the approver sees: counts, reasons, the Import Results link; no patient value.
    detail = airflow.api("GET", f"/api/v2/dags/patient_import/dagRuns/{_quoted(run_id)}/taskInstances/"
                                f"{APPROVE_TASK}/{waiting['map_index']}/hitlDetails")
    [import_id] = _imports("echo_clinic")
    assert detail["options"] == ["Approve", "Reject"]
    assert "inserts_over_limit" in detail["body"] and "6 inserted" in detail["body"]
    assert f"/import-results/imports/{import_id}" in detail["body"]
    assert [m for m in MARKERS if m in detail["body"] + detail["subject"]] == []

    _approve_in_the_ui(browser, airflow, run_id, import_id)
    assert _wait_for_run(airflow, run_id) == "success", airflow.explain(run_id)
    assert _patients("echo_clinic") == {str(a) for a in range(71001, 71007)}
    record = _imports("echo_clinic")[import_id]
    assert record["status"] == "completed" and '"answer": "approved"' in record["approval"]
    assert '"by": "admin"' in record["approval"]


def _approve_in_the_ui(browser: Browser, airflow, run_id: str, import_id: str) -> None:
    """As the approver: Airflow's Required Actions, the waiting approval, its link to the import's
    Import Results page, back, and Approve."""
    base = airflow.stack.url
    log_in(browser, base, "admin", airflow.stack.password)
    browser.send("Page.navigate", url=f"{base}/required_actions")
    task_page = f"/dags/patient_import/runs/{run_id}/tasks/{APPROVE_TASK}/"
    listed = f"[...document.querySelectorAll('tbody a')].find(a => a.getAttribute('href').startsWith({task_page!r}))"
    browser.wait_for("the waiting approval in Required Actions", f"!!{listed}", timeout=60)
    browser.evaluate(f"{listed}.click()")
    link = "document.querySelector('a[href*=\"/import-results/imports/\"]')"
    browser.wait_for("the approver's body with its Import Results link", f"!!{link}", timeout=60)
    assert browser.evaluate("location.pathname").startswith(task_page)
    assert "inserts_over_limit" in browser.evaluate("document.body.innerText")
    approval_page = browser.evaluate("location.href")
    href = browser.evaluate(f"{link}.href")
    assert href.endswith(f"/import-results/imports/{import_id}"), href

    # The link opens in a new tab (the body's links do); headless, the test follows it in this one.
    browser.send("Page.navigate", url=href)
    browser.wait_for("the import's Import Results page", "!!document.querySelector('#counts')", timeout=60)
    assert import_id in browser.evaluate("document.body.innerText")
    assert "Echo Chiropractic" in browser.evaluate("document.body.innerText")

    browser.send("Page.navigate", url=approval_page)
    approve = "document.querySelector('[data-testid=\"hitl-option-Approve\"]')"
    browser.wait_for("the Approve button", f"!!{approve} && !{approve}.disabled", timeout=60)
    browser.evaluate(f"{approve}.click()")
    browser.wait_for("the answer in the page", "document.body.innerText.includes('Response received at')"
                     " && document.body.innerText.includes('from admin')", timeout=60)


def test_a_rejected_import_changes_nothing(airflow):
    before = _patients("echo_clinic")
    known = set(_imports("echo_clinic"))
    _drop(airflow, "echo_clinic", f"Patients {DAY} second.csv", rows=5, first=73001)
    run_id = _trigger(airflow, {"practice_id": "echo_clinic"})
    waiting = _approval_task(airflow, run_id, "echo_clinic")
    _answer(airflow, run_id, waiting, "Reject")
    assert _wait_for_run(airflow, run_id) == "failed"  # a rejected import fails its run (report_imports)
    [(import_id, record)] = [(i, r) for i, r in _imports("echo_clinic").items() if i not in known]
    assert record["status"] == "rejected" and record["file_codes"] == {"not_approved"}
    assert _patients("echo_clinic") == before
    assert _tasks(airflow, run_id, "echo_clinic")["load_patients"] == "success"


def test_an_unanswered_import_is_rejected_when_its_time_is_up(airflow):
    _drop(airflow, "foxtrot_clinic", f"Patients {DAY}.csv", rows=5, first=74001)
    run_id = _trigger(airflow, {"practice_id": "foxtrot_clinic"})
    _approval_task(airflow, run_id, "foxtrot_clinic")
    assert _wait_for_run(airflow, run_id) == "failed"
    [record] = _imports("foxtrot_clinic").values()
    assert record["status"] == "rejected" and record["file_codes"] == {"approval_timed_out"}
    assert _patients("foxtrot_clinic") == set()
