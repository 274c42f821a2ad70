"""Import Results in a real browser: a real import, a real `airflow api-server`, headless Chromium.

Chromium is driven over its DevTools protocol (tests/e2e/browser.py). The first test logs in on
Airflow's login page, opens Import Results from the navigation, checks the import's counts in the
list and on its detail page, saves `docs/import_results.png`, and follows the DAG-run link into the
Airflow grid and its Imports tab; on the way it filters the problems, switches the UI to dark mode
and another time zone, and it ends by opening Data Docs with their vendored assets. The second
undoes the import with the Undo button on its page.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.browser import Browser, launch, log_in, stop, wait

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
# The README's screenshots are refreshed only on request, so a test run leaves the tree clean.
_SHOTS = (ROOT / "docs" if os.environ.get("PATIENT_IMPORT_UPDATE_SCREENSHOTS")
          else Path(tempfile.gettempdir()) / "patient_import_screenshots")
_SHOTS.mkdir(parents=True, exist_ok=True)
SCREENSHOT = _SHOTS / "import_results.png"
DETAIL_SCREENSHOT = _SHOTS / "import_results_detail.png"
USERNAME, PASSWORD = "admin", "e2e-admin-password"
PRACTICE = "demo_clinic"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- Airflow

@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("import_results_e2e")
    home = base / "home"
    (home / "airflow").mkdir(parents=True)
    passwords = base / "passwords.json"
    passwords.write_text(json.dumps({USERNAME: PASSWORD}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PATIENT_IMPORT_", "AIRFLOW_CONN_", "AIRFLOW__"))}
    env.update({
        "PATIENT_IMPORT_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(64).hex(),
        "PATIENT_IMPORT_RETRIES": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    })
    return env


def _run(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def airflow_server(airflow_env):
    """A migrated Airflow, one real import of the demo export, and the API server serving the UI."""
    env = airflow_env
    bin_dir = Path(sys.executable).parent
    _run(env, str(bin_dir / "airflow"), "db", "migrate")
    # Every DAG in the database, as a DAG processor would leave them: the Undo button triggers
    # `patient_import_undo`, which no `dag.test()` run has serialized.
    _run(env, str(bin_dir / "airflow"), "dags", "reserialize")
    _run(env, sys.executable, "-m", "tools.demo")

    port = _free_port()
    log = open(Path(env["AIRFLOW_HOME"]) / "api_server.log", "w")
    server = subprocess.Popen(
        [str(bin_dir / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The import and the server's start-up overlap: both take a while.
        # The demo export has a few bad rows on purpose: the import completes with errors (exit 0).
        _run(env, sys.executable, "scripts/run_dag.py", "--practice", PRACTICE)
        base_url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert server.poll() is None, Path(log.name).read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait("the API server's health endpoint", healthy, timeout=90)
        yield base_url
    finally:
        stop(server)
        log.close()


@pytest.fixture(scope="module")
def imported(airflow_env, airflow_server) -> dict:
    """The import that the run made, as the store records it."""
    page = _imports(airflow_env)
    assert page.total == 1, page
    item = page.items[0]
    assert item.status == "completed_with_errors" and item.counts.inserted > 0 and item.counts.rejected > 0
    return {"id": item.id, "run_id": item.dag_run_id, "counts": item.counts.__dict__}


def _imports(env: dict[str, str]):
    """The store's imports (`queries.list_imports`)."""
    from include.patient_import import queries
    from include.patient_import.store import create_store_engine

    engine = create_store_engine(f"sqlite:///{Path(env['PATIENT_IMPORT_HOME']) / 'patient_store.db'}")
    try:
        with engine.connect() as conn:
            return queries.list_imports(conn)
    finally:
        engine.dispose()


def _api(base_url: str, path: str) -> dict:
    """GET an Airflow REST API path as the admin (a token from `/auth/token`, as scripts get one)."""
    login = urllib.request.Request(f"{base_url}/auth/token", method="POST",
                                   data=json.dumps({"username": USERNAME, "password": PASSWORD}).encode(),
                                   headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(login, timeout=30) as response:
        token = json.load(response)["access_token"]
    request = urllib.request.Request(f"{base_url}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


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


def test_user_logs_in_opens_import_results_from_the_nav_and_sees_the_import(browser, airflow_server, imported):
    base = airflow_server
    expected = imported["counts"]

    log_in(browser, base, USERNAME, PASSWORD)

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
    code = browser.evaluate(f"{_FRAME_DOC}.querySelector('#problems tbody td.code').textContent")
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


def test_user_undoes_the_import_with_the_undo_button(browser, airflow_env, airflow_server, imported):
    """Runs after the test above (same Chromium, still logged in): the undo changes the import."""
    base, import_id = airflow_server, imported["id"]
    _open_detail_page(browser, base, import_id)
    button = f"{_FRAME_DOC}.querySelector('#undo-import')"
    assert browser.evaluate(f"!!{button}"), "the admin, who may run patient_import_undo, sees no Undo button"
    status = f"{_FRAME_DOC}.querySelector('#undo-status')"

    def undo_runs() -> list[dict]:
        return _api(base, "/api/v2/dags/patient_import_undo/dagRuns?limit=100")["dag_runs"]

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

    # No scheduler here: the run's one task runs as a worker would, in the run (its triggering user);
    # `tasks test` checks the params before it reads the run, so they are given as the run's conf.
    bin_dir = Path(sys.executable).parent
    _run(airflow_env, str(bin_dir / "airflow"), "tasks", "test", "patient_import_undo", "undo_import", run_id,
         "--task-params", json.dumps(run["conf"]))
    [item] = _imports(airflow_env).items
    assert item.id == import_id and item.status == "undone"

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
