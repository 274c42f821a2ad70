"""Import Results in a real browser: a real import on the session's Airflow stack, headless Chromium.

The import is the demo export, dropped into its own practice's inbox and imported by a run the
real scheduler runs (the session's stack, tests/e2e/conftest.py). Chromium is driven over its
DevTools protocol (tests/e2e/browser.py). The first test logs in on Airflow's login page as the
stack's admin, opens Import Results from the navigation, checks the import's counts in the list and
on its detail page, saves `docs/import_results.png`, and follows the DAG-run link into the Airflow
grid and its Imports tab; on the way it filters the problems, switches the UI to dark mode and
another time zone, and it ends by opening Data Docs with their vendored assets. The second undoes
the import with the Undo button on its page; the scheduler runs the undo.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.e2e.browser import Browser, launch, log_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
# The README's screenshots are refreshed only on request, so a test run leaves the tree clean.
_SHOTS = (ROOT / "docs" if os.environ.get("PATIENT_IMPORT_UPDATE_SCREENSHOTS")
          else Path(tempfile.gettempdir()) / "patient_import_screenshots")
_SHOTS.mkdir(parents=True, exist_ok=True)
SCREENSHOT = _SHOTS / "import_results.png"
DETAIL_SCREENSHOT = _SHOTS / "import_results_detail.png"
USERNAME = "admin"  # the stack's admin; its password is in <airflow home>/passwords.json
# This module's own practice (E2E_PRACTICES): the shared store holds the other tests' imports too.
PRACTICE = "results_clinic"
RUN_TIMEOUT = 300


# ---------------------------------------------------------------- Airflow


def _finished(airflow, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
    """Poll the run until the scheduler has finished it; returns its state."""
    quoted = urllib.parse.quote(run_id, safe="")
    deadline = time.monotonic() + timeout
    while (state := airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")["state"]) not in (
            "success", "failed"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")
        time.sleep(1)  # polling the scheduler's progress, not synchronising the test
    return state


@pytest.fixture(scope="module")
def imported(airflow) -> dict:
    """The demo export imported by a run on the stack, as the store records it."""
    from tools.demo import drop_demo_export

    export = Path(drop_demo_export(practice=PRACTICE))
    assert export.is_relative_to(airflow.home / "inbox" / PRACTICE), export
    run = airflow.api("POST", "/api/v2/dags/patient_import/dagRuns",
                      {"logical_date": None, "conf": {"practice_id": PRACTICE}})
    # The demo export has a few bad rows on purpose: the import completes with errors, the run succeeds.
    assert _finished(airflow, "patient_import", run["dag_run_id"]) == "success", airflow.explain(run["dag_run_id"])
    page = _imports(airflow)
    assert page.total == 1, page
    item = page.items[0]
    assert item.dag_run_id == run["dag_run_id"], item
    assert item.status == "completed_with_errors" and item.counts.inserted > 0 and item.counts.rejected > 0
    return {"id": item.id, "run_id": item.dag_run_id, "counts": item.counts.__dict__}


def _imports(airflow):
    """This module's practice's imports in the stack's store (`queries.list_imports`)."""
    from include.patient_import import queries
    from include.patient_import.store import create_store_engine

    engine = create_store_engine(f"sqlite:///{airflow.home / 'patient_store.db'}")
    try:
        with engine.connect() as conn:
            return queries.list_imports(conn, practice_id=PRACTICE)
    finally:
        engine.dispose()


# ---------------------------------------------------------------- Chromium

@pytest.fixture(scope="module")
def browser():
    with launch() as chromium:
        yield chromium


# ---------------------------------------------------------------- the test

_FRAME = "document.querySelector('iframe[title=\"Imports\"]')"
_FRAME_DOC = f"({_FRAME} && {_FRAME}.contentDocument)"


def _counts_in_frame(browser: Browser, scope_selector: str) -> dict[str, int]:
    """The counts shown under `scope_selector`: {name: number} from its `data-count` elements."""
    return browser.evaluate(
        f"Object.fromEntries([...{_FRAME_DOC}.querySelectorAll('{scope_selector} [data-count]')].map(e => "
        "[e.dataset.count, parseInt((e.querySelector('.value') || e).textContent, 10)]))")


def test_user_logs_in_opens_import_results_from_the_nav_and_sees_the_import(browser, airflow, imported):
    base = airflow.stack.url
    expected = imported["counts"]

    password = json.loads((airflow.stack.airflow_home / "passwords.json").read_text(encoding="utf-8"))[USERNAME]
    log_in(browser, base, USERNAME, password)

    nav_link = "document.querySelector('a[href$=\"plugin/import-results\"]')"
    browser.wait_for("Import Results in the navigation", f"!!{nav_link}", timeout=60)
    assert browser.evaluate(f"{nav_link}.textContent") == "Imports"
    # The label is whole: not cut with an ellipsis by the 56 px nav button.
    assert browser.evaluate(f"(e => e.scrollWidth <= e.clientWidth)([...{nav_link}.querySelectorAll('div')].pop())")
    browser.evaluate(f"{nav_link}.click()")

    row = f"tr[data-import-id=\"{imported['id']}\"]"
    browser.wait_for("the import in the Import Results list",
                     f"!!({_FRAME_DOC} && {_FRAME_DOC}.querySelector('{row}'))", timeout=60)
    assert browser.evaluate("location.pathname").startswith("/plugin/import-results")
    listed = _counts_in_frame(browser, row)
    assert listed == expected
    assert browser.evaluate(f"{_FRAME_DOC}.querySelector('{row} .badge').textContent") == "completed with errors"
    assert browser.evaluate(f"!!{_FRAME_DOC}.querySelector('svg rect')"), "the chart has no bars"
    # Times in the UI's time zone: the browser's own until one is chosen (this Chromium's is UTC).
    assert browser.evaluate(f"{_FRAME_DOC}.documentElement.dataset.timezone")

    browser.screenshot(SCREENSHOT)

    # The colour mode follows Airflow's, live.
    browser.evaluate("document.documentElement.classList.remove('light');"
                     " document.documentElement.classList.add('dark')")
    browser.wait_for("the frame in dark mode", f"{_FRAME_DOC}.documentElement.dataset.theme === 'dark'")
    assert browser.evaluate(f"getComputedStyle({_FRAME_DOC}.body).backgroundColor") == "rgb(17, 24, 39)"
    browser.screenshot(Path(tempfile.gettempdir()) / "patient_import_screenshots" / "import_results_dark.png")
    browser.evaluate("document.documentElement.classList.remove('dark');"
                     " document.documentElement.classList.add('light')")
    browser.wait_for("the frame in light mode", f"{_FRAME_DOC}.documentElement.dataset.theme === 'light'")

    # The run's imports, by the run id.
    browser.evaluate(f"{_FRAME_DOC}.querySelector('{row} a[data-run-imports]').click()")
    browser.wait_for("the list of the run's imports", f"!!({_FRAME_DOC} && {_FRAME_DOC}.querySelector('#run-filter'))")
    assert browser.evaluate(f"[...{_FRAME_DOC}.querySelectorAll('tr[data-import-id]')].map(r => r.dataset.importId)"
                            ) == [imported["id"]]
    assert imported["run_id"] in browser.evaluate(f"{_FRAME_DOC}.querySelector('#run-filter').textContent")

    browser.evaluate(f"{_FRAME_DOC}.querySelector('{row} td a').click()")
    browser.wait_for("the import's detail page", f"!!({_FRAME_DOC} && {_FRAME_DOC}.querySelector('#problems'))")
    assert _counts_in_frame(browser, "#counts") == expected
    problems = browser.evaluate(f"{_FRAME_DOC}.querySelectorAll('#problems tbody tr').length")
    assert problems > 0
    assert browser.evaluate(f"!!{_FRAME_DOC}.querySelector('#download-upload')"), "admin sees no upload download"
    assert browser.evaluate(f"!!{_FRAME_DOC}.querySelector('#download-rejected_rows')")
    assert browser.evaluate(f"!!{_FRAME_DOC}.querySelector('#data-docs')")
    # The UI keeps the frame's page in its own address: the detail page can be linked to.
    assert f"/imports/{imported['id']}" in browser.evaluate("location.pathname")
    # Taller, so that the README's picture shows problem lines under the per-code summary.
    browser.send("Emulation.setDeviceMetricsOverride", width=1280, height=1280, deviceScaleFactor=1, mobile=False)
    browser.wait_for("the frame at the new height", f"{_FRAME}.getBoundingClientRect().height > 1000")
    browser.screenshot(DETAIL_SCREENSHOT)
    browser.send("Emulation.setDeviceMetricsOverride", width=1280, height=800, deviceScaleFactor=1, mobile=False)

    # Times follow the time zone chosen in the UI (its localStorage "timezone"), live.
    started = f"{_FRAME_DOC}.querySelector('time[data-zone]')"
    browser.evaluate("localStorage.setItem('timezone', JSON.stringify('UTC'))")
    browser.wait_for("the times in UTC", f"{started}.textContent.endsWith(' UTC')")
    utc = browser.evaluate(f"{started}.textContent")
    browser.evaluate("localStorage.setItem('timezone', JSON.stringify('Asia/Kolkata'))")
    browser.wait_for("the times in the chosen zone", f"{started}.textContent.endsWith('GMT+5:30')")
    assert browser.evaluate(f"{started}.textContent") != utc.replace("UTC", "GMT+5:30")
    browser.evaluate("localStorage.setItem('timezone', JSON.stringify('UTC'))")
    browser.wait_for("the times in UTC again", f"{started}.textContent === {json.dumps(utc)}")

    _filter_problems(browser, severity="error")
    severities = browser.evaluate(f"[...{_FRAME_DOC}.querySelectorAll('#problems tbody tr')].map(r => r.className)")
    assert severities and set(severities) == {"sev-error"}, severities
    # The code of an error row that names an account, for the account filter below: the demo export
    # is seeded with the day, and on some days (2 December 2026) the first error had no account.
    code = browser.evaluate(f"[...{_FRAME_DOC}.querySelectorAll('#problems tbody tr')]"
                            ".find(r => r.cells[1].textContent).querySelector('td.code').textContent")
    _filter_problems(browser, severity="", code=code)
    codes = browser.evaluate(f"[...{_FRAME_DOC}.querySelectorAll('#problems tbody td.code')].map(c => c.textContent)")
    assert codes and set(codes) == {code}
    account = browser.evaluate(
        f"[...{_FRAME_DOC}.querySelectorAll('#problems tbody tr')].map(r => r.cells[1].textContent).find(a => a)")
    _filter_problems(browser, code="", account=account)
    accounts = browser.evaluate(
        f"[...{_FRAME_DOC}.querySelectorAll('#problems tbody tr')].map(r => r.cells[1].textContent)")
    assert accounts and set(accounts) == {account}
    _filter_problems(browser, account="no-such-account-99")
    assert "No problems match" in browser.evaluate(f"{_FRAME_DOC}.querySelector('#problems tbody').textContent")

    data_docs = browser.evaluate(f"{_FRAME_DOC}.querySelector('#data-docs').href")
    browser.evaluate(f"{_FRAME_DOC}.querySelector('a[data-airflow-link]').click()")
    run_path = "/dags/patient_import/runs/"
    browser.wait_for("the DAG run in the Airflow grid", f"location.pathname.startsWith('{run_path}')")
    browser.wait_for("the Airflow grid in place of the Import Results frame", f"!{_FRAME}")

    # The run's page has a tab with its imports.
    tab = "document.querySelector('a[href$=\"/plugin/imports\"]')"
    browser.wait_for("the run's Imports tab", f"!!{tab}", timeout=60)
    browser.evaluate(f"{tab}.click()")
    browser.wait_for("the run's imports in the tab",
                     f"!!({_FRAME_DOC} && {_FRAME_DOC}.querySelector('{row}')"
                     f" && {_FRAME_DOC}.querySelector('#run-filter'))",
                     timeout=60)

    # Data Docs render styled from the vendored assets (sandboxed page, no cookie, no network).
    browser.send("Page.navigate", url=data_docs)
    browser.wait_for("Data Docs with jQuery and Bootstrap loaded",
                     "document.readyState === 'complete' && typeof window.jQuery === 'function' "
                     "&& typeof window.jQuery.fn.modal === 'function'", timeout=60)
    browser.screenshot(Path(tempfile.gettempdir()) / "patient_import_screenshots" / "data_docs.png")
    assert browser.evaluate("location.pathname").startswith("/import-results-docs/")
    assert browser.evaluate("getComputedStyle(document.body).fontFamily").startswith("-apple-system")
    # The icon font, fetched in CORS mode from the sandboxed page's "null" origin.
    assert browser.evaluate("document.fonts.load('900 16px \"Font Awesome 6 Free\"')"
                            ".then(faces => faces.length > 0, () => false)")


def _open_detail_page(browser: Browser, base: str, import_id: str) -> None:
    """From the Import Results list in the UI, the import's detail page (in the UI's frame)."""
    row = f"tr[data-import-id=\"{import_id}\"]"
    browser.send("Page.navigate", url=f"{base}/plugin/import-results")
    browser.wait_for("the import in the Import Results list",
                     f"!!({_FRAME_DOC} && {_FRAME_DOC}.querySelector('{row}'))", timeout=60)
    browser.evaluate(f"{_FRAME_DOC}.querySelector('{row} td a').click()")
    browser.wait_for("the import's detail page", f"!!({_FRAME_DOC} && {_FRAME_DOC}.querySelector('#problems'))")


def test_user_undoes_the_import_with_the_undo_button(browser, airflow, imported):
    """Runs after the test above (same Chromium, still logged in): the undo changes the import."""
    base, import_id = airflow.stack.url, imported["id"]
    _open_detail_page(browser, base, import_id)
    button = f"{_FRAME_DOC}.querySelector('#undo-import')"
    assert browser.evaluate(f"!!{button}"), "the admin, who may run patient_import_undo, sees no Undo button"
    status = f"{_FRAME_DOC}.querySelector('#undo-status')"

    def undo_runs() -> list[dict]:
        """The undo runs of this import (the session's other tests undo theirs too)."""
        runs = airflow.api("GET", "/api/v2/dags/patient_import_undo/dagRuns?limit=100")["dag_runs"]
        return [r for r in runs if (r["conf"] or {}).get("import_id") == import_id]

    # The page asks first (window.confirm): "Cancel" starts nothing.
    browser.evaluate(f"{_FRAME}.contentWindow.confirm = () => false")
    browser.evaluate(f"{button}.click()")
    assert not browser.evaluate(f"{button}.disabled")
    assert undo_runs() == []

    browser.evaluate(f"{_FRAME}.contentWindow.confirm = () => true")
    browser.evaluate(f"{button}.click()")
    run_id = browser.wait_for("the started undo's run in the page", f"{status}.querySelector('a')?.textContent")
    assert browser.evaluate(f"{status}.textContent") == f"Undo started: {run_id}"
    assert browser.evaluate(f"{button}.disabled"), "a second click could start a second undo"
    link = browser.evaluate(f"{status}.querySelector('a').href")
    assert urllib.parse.unquote(link).endswith(f"/dags/patient_import_undo/runs/{run_id}")

    [run] = undo_runs()
    assert run["dag_run_id"] == run_id and run["conf"] == {"import_id": import_id}
    assert run["triggering_user_name"] == USERNAME  # the undo records who (SPEC §8)

    # The stack's scheduler runs it (the stack unpaused patient_import_undo).
    assert _finished(airflow, "patient_import_undo", run_id) == "success"
    [item] = _imports(airflow).items
    assert item.id == import_id and item.status == "undone"
    assert [r["dag_run_id"] for r in undo_runs()] == [run_id]

    _open_detail_page(browser, base, import_id)
    browser.wait_for("the undone import's page", f"!!{_FRAME_DOC}.querySelector('#undone')")
    assert f"by {USERNAME}" in browser.evaluate(f"{_FRAME_DOC}.querySelector('#undone').textContent")
    assert not browser.evaluate(f"!!{button}"), "an undone import still offers Undo"


def _filter_problems(browser: Browser, **fields: str) -> None:
    """Set the detail page's problem filters and submit; wait for the filtered page."""
    form = f"{_FRAME_DOC}.querySelector('#problem-filters')"
    browser.evaluate(f"{_FRAME_DOC}.documentElement.dataset.before = 'filtering'")
    for name, value in fields.items():
        browser.evaluate(f"{form}.elements[{json.dumps(name)}].value = {json.dumps(value)}")
    browser.evaluate(f"{form}.requestSubmit()")
    browser.wait_for("the filtered problems",
                     f"{_FRAME_DOC} && {_FRAME_DOC}.readyState === 'complete' "
                     f"&& !{_FRAME_DOC}.documentElement.dataset.before && !!{_FRAME_DOC}.querySelector('#problems')")
