"""`make up`'s start checks (scripts/airflow_stack.py): busy ports, machine sizing, no half-started stack."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from scripts.airflow_stack import (
    DAG_IDS,
    StackError,
    check_ports,
    free_stack_port,
    log_server_ports,
    machine_sizing,
    stack_env,
)

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


def _up(home: Path, port: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__LOGGING__")}
    env.update(AIRFLOW_HOME=str(home), PATIENT_IMPORT_AIRFLOW_PORT=str(port))
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "airflow_stack.py"), "up"],
                          env=env, capture_output=True, text=True, timeout=90)


def _processes_of(home: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("AIRFLOW_HOME") == str(home):
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.mark.integration  # runs `airflow_stack.py up` against listening sockets
@pytest.mark.parametrize("offset, role", [(0, "API server and UI"), (1, "worker log server"),
                                          (2, "triggerer log server")])
def test_a_busy_port_fails_fast_with_one_line_and_starts_nothing(tmp_path, offset, role):
    port = free_stack_port()
    with _listen(port + offset):
        done = _up(tmp_path / "airflow", port)

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"port {port + offset} ({'the ' + role}) is already in use" in lines[0]
    assert "PATIENT_IMPORT_AIRFLOW_PORT" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "airflow" / "standalone.pid").exists()
    assert _processes_of(tmp_path / "airflow") == []


@pytest.mark.integration  # a loopback HTTP server stands in for the other Airflow
def test_a_port_answering_like_another_airflow_is_named_as_such(tmp_path):
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = json.dumps({"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"},
                               "dag_processor": {"status": "healthy"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    port = free_stack_port()
    server = http.server.HTTPServer(("127.0.0.1", port), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = _up(tmp_path / "airflow", port)
    finally:
        server.shutdown()
        server.server_close()

    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "answers like an Airflow API server" in done.stderr
    assert _processes_of(tmp_path / "airflow") == []


@pytest.mark.unit
def test_check_ports_passes_on_free_ports():
    check_ports(free_stack_port(), env={})


@pytest.mark.unit
def test_check_ports_names_a_busy_configured_log_server_port():
    port, other = free_stack_port(), free_stack_port()
    with _listen(other):
        with pytest.raises(StackError, match=f"port {other} \\(the worker log server\\)"):
            check_ports(port, env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(other)})


@pytest.mark.unit
def test_log_server_ports_follow_the_api_port_unless_configured():
    assert log_server_ports(9100, env={}) == {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": 9101,
                                               "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": 9102}
    assert log_server_ports(9100, env={"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "7000"})[
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == 7000


@pytest.mark.unit
def test_stack_env_derives_log_ports_and_sizes_to_the_machine(tmp_path, monkeypatch):
    for name in ("AIRFLOW__CORE__PARALLELISM", "AIRFLOW__API__WORKERS", "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
                 "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)

    env = stack_env(tmp_path, 9200)

    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "9201"
    assert env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "9202"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert env["AIRFLOW__API__WORKERS"] == "1"


@pytest.mark.unit
def test_machine_sizing_leaves_configured_values_alone(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert machine_sizing({"AIRFLOW__CORE__PARALLELISM": "4"}) == {"AIRFLOW__API__WORKERS": "4"}
    assert machine_sizing({}) == {"AIRFLOW__CORE__PARALLELISM": "16", "AIRFLOW__API__WORKERS": "4"}
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert machine_sizing({})["AIRFLOW__CORE__PARALLELISM"] == "2"


@pytest.mark.unit
def test_every_dag_of_the_project_is_unpaused():
    assert {p.stem for p in (ROOT / "dags").glob("*.py")} == set(DAG_IDS)


@pytest.mark.integration
@pytest.mark.parametrize("port", ["abc", "70000", "-1"])
def test_a_port_that_is_not_a_port_number_is_refused_in_one_line(tmp_path, port):
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path / "airflow"), PATIENT_IMPORT_AIRFLOW_PORT=port)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "airflow_stack.py"), "up"], env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"make up: PATIENT_IMPORT_AIRFLOW_PORT must be a port number (1-65533), got {port!r}"]
    assert not (tmp_path / "airflow").exists()


def test_unpause_retries_the_api_servers_server_errors():
    """A 500 while the scheduler holds SQLite's write lock is retried, not a failed `make up`."""
    import urllib.error

    from scripts.airflow_stack import unpause

    class FlakyStack:
        airflow_home = Path("/nonexistent")
        patches = 0

        def request(self, method, path, body=None, token=None):
            if method == "PATCH":
                self.patches += 1
                if self.patches <= 2:
                    raise urllib.error.HTTPError(path, 500, "Internal Server Error", None, None)
            return {"is_paused": False}

    stack = FlakyStack()

    assert unpause(stack, "token", ("patient_import",)) == ["patient_import"]
    assert stack.patches == 3


def test_up_while_running_names_the_running_stacks_url(tmp_path):
    """A second `make up` says where the first one is, even when asked for another port."""
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                start_new_session=True,
                                env={**os.environ, "AIRFLOW__API__BASE_URL": "http://127.0.0.1:18765"})
    try:
        (tmp_path / "standalone.pid").write_text(str(stand_in.pid))
        done = _up(tmp_path, free_stack_port())
    finally:
        stand_in.kill()
        stand_in.wait()
    assert done.returncode == 1
    assert "already running at http://127.0.0.1:18765" in done.stdout
    assert str(tmp_path / "passwords.json") in done.stdout


def test_make_run_and_make_import_refuse_while_the_local_stack_runs(tmp_path):
    """`dag.test()` beside a running `make up` had its tasks taken by that stack's scheduler and
    failed in its environment (a newcomer's find): run_dag.py refuses first, in one line, and
    goes ahead once the stack is gone (its stale pid file removed)."""
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    command = [sys.executable, str(ROOT / "scripts" / "run_dag.py"), "--check-only", "--practice", "demo_clinic",
               "--file", str(tmp_path / "no such export.csv")]
    try:
        (tmp_path / "standalone.pid").write_text(str(stand_in.pid))
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
    finally:
        stand_in.kill()
        stand_in.wait()
    assert refused.returncode == 2
    assert f"the local Airflow (`make up`, pid {stand_in.pid}) is running" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    after = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
    assert "the local Airflow" not in after.stderr
    assert not (tmp_path / "standalone.pid").exists()
