"""Starts and stops the local Airflow (scheduler, API server with the UI, DAG processor, triggerer).

`make up` / `make down` use it on the embedded defaults; the end-to-end tests start one stack per
test session with it. `airflow standalone` runs the components in its own process group, so
stopping the group stops them all.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "patient_import"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_env(airflow_home: Path, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every component shares: the project's DAGs and plugins, a loopback API."""
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # standalone starts each component as `airflow ...`: the project's own.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    })
    env.update(extra or {})
    return env


@dataclass
class Stack:
    airflow_home: Path
    port: int
    pid: int
    password: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def token(self) -> str:
        return self.request("POST", "/auth/token", {"username": "admin", "password": self.password})["access_token"]

    def stop(self, timeout: float = 30) -> None:
        stop_process_group(self.pid, timeout)


def stop_process_group(pid: int, timeout: float = 30) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)  # a dead but unreaped leader still counts as a member of its group
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (`make down` from another shell): its parent reaps it


def healthy(url: str) -> bool:
    """Whether the API server answers and reports its database, scheduler and DAG processor healthy."""
    try:
        with urllib.request.urlopen(url + "/api/v2/monitor/health", timeout=5) as resp:
            health = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return all((health.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "dag_processor"))


def start_stack(airflow_home: Path, port: int | None = None, *, extra_env: dict[str, str] | None = None,
                timeout: float = 300) -> Stack:
    """Start `airflow standalone` in its own process group and wait until it is healthy."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    passwords = airflow_home / "passwords.json"
    if not passwords.exists():
        passwords.write_text(json.dumps({"admin": secrets.token_urlsafe(12)}), encoding="utf-8")
    password = json.loads(passwords.read_text(encoding="utf-8"))["admin"]
    env = stack_env(airflow_home, port, extra_env)
    airflow = Path(sys.executable).with_name("airflow")
    migrate = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True)
    if migrate.returncode:
        raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}{migrate.stderr[-3000:]}")
    log = (airflow_home / "standalone.log").open("ab")
    process = subprocess.Popen([str(airflow), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(airflow_home))
    (airflow_home / "standalone.pid").write_text(str(process.pid), encoding="utf-8")
    stack = Stack(airflow_home=airflow_home, port=port, pid=process.pid, password=password)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"airflow standalone exited; see {airflow_home / 'standalone.log'}")
        if healthy(stack.url):
            return stack
        time.sleep(1)
    stack.stop()
    raise TimeoutError(f"Airflow was not healthy within {timeout:.0f} s; see {airflow_home / 'standalone.log'}")


def wait_for_dag(stack: Stack, token: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stack.request("GET", f"/api/v2/dags/{DAG_ID}", token=token)
            return
        except urllib.error.HTTPError:
            time.sleep(1)
    raise TimeoutError(f"DAG {DAG_ID} was not parsed within {timeout:.0f} s")


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PATIENT_IMPORT_AIRFLOW_PORT", "8080")))
    args = parser.parse_args()
    airflow_home = Path(os.environ.get("AIRFLOW_HOME") or ROOT / "var" / "airflow")
    pid_file = airflow_home / "standalone.pid"
    if args.action == "down":
        if not pid_file.exists():
            print("Airflow is not running (no standalone.pid)")
            return 0
        stop_process_group(int(pid_file.read_text()))
        pid_file.unlink(missing_ok=True)
        print("Airflow stopped")
        return 0
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), 0)
            print(f"Airflow is already running (pid {pid_file.read_text()}); `make down` stops it")
            return 1
        except (ProcessLookupError, ValueError):
            pid_file.unlink()
    stack = start_stack(airflow_home, args.port)
    wait_for_dag(stack, stack.token())
    print(f"Airflow is up: {stack.url}  (user admin, password {stack.password}; "
          f"also in {airflow_home / 'passwords.json'})")
    print(f"DAG {DAG_ID} is unpaused; logs: {airflow_home / 'standalone.log'}; `make down` stops it")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
