"""Headless Chromium over its DevTools protocol, for the e2e tests that look at the UI.

Driven with `websockets` (already in the environment); `scripts/install_chromium.sh` installs
Debian's Chromium when it is missing. A test module starts one Chromium (`launch`, in a
module-scoped fixture: starting it costs seconds) and logs in with `log_in`.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from base64 import b64decode
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# What Chromium answers to an evaluation that a navigation interrupted (the login's redirect).
_NAVIGATING = ("Inspected target navigated or closed", "Cannot find context with specified id",
               "Execution context was destroyed")


def wait(what: str, check, timeout: float, interval: float = 0.2):
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, with everything it started."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class Browser:
    """Just enough of the Chrome DevTools protocol: navigate, evaluate, type, screenshot."""

    def __init__(self, websocket) -> None:
        self.ws = websocket
        self._ids = itertools.count(1)

    def send(self, method: str, **params) -> dict:
        message_id = next(self._ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, what: str, expression: str, timeout: float = 30):
        def check():
            try:
                return self.evaluate(expression)
            except RuntimeError as exc:
                if any(reason in str(exc) for reason in _NAVIGATING):
                    return None  # evaluated while the page navigates (a redirect): not there yet
                raise

        return wait(what, check, timeout=timeout)

    def type_into(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b64decode(data))


def chromium_path() -> Path:
    """Debian's Chromium, installed first when missing."""
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install_chromium.sh")], check=True, timeout=900)
    return CHROMIUM


@contextmanager
def launch() -> Iterator[Browser]:
    """One headless Chromium with a fresh profile, its first tab as a `Browser`; stopped on exit."""
    from websockets.sync.client import connect

    chromium = chromium_path()
    profile = Path(tempfile.mkdtemp(prefix="chromium_profile_"))
    process = subprocess.Popen(
        [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--window-size=1280,860", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        active = profile / "DevToolsActivePort"

        def devtools_port() -> str | bool:
            if process.poll() is not None:
                pytest.fail(f"Chromium exited with {process.returncode} before opening its DevTools port")
            return active.exists() and active.read_text().split("\n")[0]

        # 90 s, not 30: a first start on two cores beside the shared Airflow stack and the other
        # workers' tests once took longer than 30 s (a CI-like run, 2026-12-02).
        port = wait("Chromium's DevTools port", devtools_port, timeout=90)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            browser = Browser(ws)
            browser.send("Page.enable")
            browser.send("Runtime.enable")
            browser.send("Emulation.setDeviceMetricsOverride", width=1280, height=800, deviceScaleFactor=1,
                         mobile=False)
            yield browser
    finally:
        stop(process)
        subprocess.run(["rm", "-rf", str(profile)], check=False)


def log_in(browser: Browser, base_url: str, username: str, password: str) -> None:
    """Sign in on Airflow's login page; returns on the home page with the `_token` cookie set."""
    browser.send("Network.clearBrowserCookies")
    browser.send("Page.navigate", url=f"{base_url}/auth/login?next=/")
    browser.wait_for("the login form", "!!document.querySelector('input[name=password]')")
    browser.type_into("input[name=username]", username)
    browser.type_into("input[name=password]", password)
    browser.wait_for("the enabled sign-in button", "!document.querySelector('button[type=submit]').disabled")
    browser.evaluate("document.querySelector('button[type=submit]').click()")
    browser.wait_for("the Airflow home page after login",
                     "location.pathname === '/' && document.cookie.includes('_token=')")
