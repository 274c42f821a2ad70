"""Starts and stops the local Airflow (scheduler, API server with the UI, DAG processor, triggerer).

`make up` / `make down` use it on the embedded defaults; the end-to-end tests start one stack per
test session with it. `airflow standalone` runs the components in its own process group, so
stopping the group stops them all.
"""

from __future__ import annotations

import argparse
import errno
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
# What `make up` unpauses: every DAG of the project (a paused `patient_import_undo` left the Undo
# button's runs queued for good).
DAG_IDS = (DAG_ID, "patient_import_retention", "patient_import_undo")


class StackError(RuntimeError):
    """The stack could not start; the message is one line saying why and what to do."""


def log_server_ports(port: int, env: dict[str, str] | None = None) -> dict[str, int]:
    """The ports of Airflow's worker and triggerer log servers: the two after the API port.

    Airflow's defaults (8793, 8794) are the same for every Airflow on a machine, so a second one
    collides; deriving them from `PATIENT_IMPORT_AIRFLOW_PORT` moves them with it. The Airflow
    settings `AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT` / `..._TRIGGER_LOG_SERVER_PORT` still win.
    """
    env = os.environ if env is None else env
    names = ("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT")
    return {name: int(env.get(name) or port + offset) for offset, name in enumerate(names, start=1)}


def machine_sizing(env: dict[str, str] | None = None) -> dict[str, str]:
    """Parallelism and API server workers sized to this machine's cores, unless already configured.

    Airflow's default parallelism (32) is also the LocalExecutor's worker count: 32 processes
    on a 2-core machine. Each entry is only set when its Airflow setting is not in `env`.
    """
    env = os.environ if env is None else env
    cores = os.cpu_count() or 2
    sizing = {
        "AIRFLOW__CORE__PARALLELISM": str(max(2, cores)),
        "AIRFLOW__API__WORKERS": str(max(1, min(4, cores // 2))),
    }
    return {k: v for k, v in sizing.items() if not env.get(k)}


def port_in_use(port: int) -> bool:
    """Whether something listens on `port` on any local address (IPv4 or IPv6)."""
    families = [(socket.AF_INET, "0.0.0.0")] + ([(socket.AF_INET6, "::")] if socket.has_ipv6 else [])
    for family, host in families:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                # SO_REUSEADDR: a port left in TIME_WAIT by an earlier stack is free for the servers too.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE or exc.errno == errno.EACCES:
                return True
            if family == socket.AF_INET6:
                continue  # no IPv6 on this machine
            raise
    return False


def check_ports(port: int, env: dict[str, str] | None = None) -> None:
    """Raise StackError naming the first busy port of the stack (API server, log servers)."""
    wanted = {"the API server and UI": port}
    names = {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "the worker log server",
             "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "the triggerer log server"}
    wanted.update({names[k]: v for k, v in log_server_ports(port, env).items()})
    for role, number in wanted.items():
        if port_in_use(number):
            airflow = healthy(f"http://127.0.0.1:{number}", any_state=True)
            what = " (it answers like an Airflow API server)" if airflow else ""
            raise StackError(
                f"port {number} ({role}) is already in use{what}: stop what uses it, or choose another "
                f"port with PATIENT_IMPORT_AIRFLOW_PORT=<port> (the log servers take the two after it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_stack_port() -> int:
    """A free port whose two successors (the log servers') are free too."""
    while True:
        port = free_port()
        if port < 65534 and not any(port_in_use(port + i) for i in (1, 2)):
            return port


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
    # The LocalExecutor with the tasks' imports done once before its workers fork
    # (include/executors.py), unless an executor is configured.
    env.setdefault("AIRFLOW__CORE__EXECUTOR", "include.executors.PreloadingLocalExecutor")
    env.update(extra or {})
    env.update({k: str(v) for k, v in log_server_ports(port, env).items()})
    env.update(machine_sizing(env))
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


def healthy(url: str, *, any_state: bool = False) -> bool:
    """Whether the API server answers and reports its database, scheduler and DAG processor healthy.

    With `any_state`, whether something there answers the health endpoint like Airflow at all.
    """
    try:
        with urllib.request.urlopen(url + "/api/v2/monitor/health", timeout=2 if any_state else 5) as resp:
            health = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    if any_state:
        return isinstance(health, dict) and "metadatabase" in health
    return all((health.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "dag_processor"))


def start_stack(airflow_home: Path, port: int | None = None, *, extra_env: dict[str, str] | None = None,
                timeout: float = 300) -> Stack:
    """Start `airflow standalone` in its own process group and wait until it is healthy.

    Every port is checked first (StackError naming the busy one, before anything starts). Whatever
    goes wrong after the start (the stack exits, never becomes healthy, an interrupt), the process
    group is stopped before the error propagates: no half-started stack is left running.
    """
    airflow_home.mkdir(parents=True, exist_ok=True)
    port = port or free_stack_port()
    env = stack_env(airflow_home, port, extra_env)
    check_ports(port, env)
    passwords = airflow_home / "passwords.json"
    if not passwords.exists():
        passwords.write_text(json.dumps({"admin": secrets.token_urlsafe(12)}), encoding="utf-8")
    password = json.loads(passwords.read_text(encoding="utf-8"))["admin"]
    airflow = Path(sys.executable).with_name("airflow")
    migrate = subprocess.run([sys.executable, str(ROOT / "scripts" / "airflow_db.py")], env=env,
                             capture_output=True, text=True)
    if migrate.returncode:
        raise StackError(f"airflow db migrate failed; see {airflow_home / 'db_migrate.log'}")
    log = (airflow_home / "standalone.log").open("ab")
    process = subprocess.Popen([str(airflow), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(airflow_home))
    (airflow_home / "standalone.pid").write_text(str(process.pid), encoding="utf-8")
    stack = Stack(airflow_home=airflow_home, port=port, pid=process.pid, password=password)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StackError(f"airflow standalone exited with status {process.returncode}; "
                                 f"see {airflow_home / 'standalone.log'}")
            if healthy(stack.url):
                return stack
            time.sleep(1)
        raise StackError(f"Airflow was not healthy within {timeout:.0f} s; see {airflow_home / 'standalone.log'}")
    except BaseException:
        stack.stop()
        (airflow_home / "standalone.pid").unlink(missing_ok=True)
        raise


def wait_for_dag(stack: Stack, token: str, timeout: float = 180, dag_id: str = DAG_ID) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stack.request("GET", f"/api/v2/dags/{dag_id}", token=token)
            return
        except urllib.error.HTTPError:
            time.sleep(1)
    raise StackError(f"DAG {dag_id} was not parsed within {timeout:.0f} s; see {stack.airflow_home / 'standalone.log'}")


def unpause(stack: Stack, token: str, dag_ids: tuple[str, ...] = DAG_IDS) -> list[str]:
    """Unpause the DAGs over the REST API and return the ids the API then reports unpaused.

    `dag.test()` (`make run`, `make import`) creates a DAG paused when it runs first, and
    `dags_are_paused_at_creation` only applies to DAGs not yet known, so this is what makes a
    stack started after a local run schedule at all.
    """
    unpaused = []
    for dag_id in dag_ids:
        wait_for_dag(stack, token, dag_id=dag_id)
        _retried(lambda: stack.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}, token=token))
        if _retried(lambda: stack.request("GET", f"/api/v2/dags/{dag_id}", token=token)).get("is_paused") is False:
            unpaused.append(dag_id)
    return unpaused


def _retried(call, attempts: int = 8):
    """`call()`, again after a server error: on its SQLite metadata database the API server answers
    500 while the scheduler's first runs hold the write lock (a flaky resource, not a bad request)."""
    for attempt in range(attempts):
        try:
            return call()
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == attempts - 1:
                raise
            time.sleep(min(0.5 * 2 ** attempt, 8))


def running_url(pid: int) -> str | None:
    """The API URL a running stack was started with (its environment), or None when unreadable.

    Read from /proc (Linux): the pid file holds only the process-group id, and a second `make up`
    may be given another port than the running stack's.
    """
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        key, _, value = entry.partition(b"=")
        if key == b"AIRFLOW__API__BASE_URL":
            return value.decode(errors="replace")
    return None


def running_stack(airflow_home: Path) -> int | None:
    """The process group of the stack `make up` started with `airflow_home`, while it runs (its
    `standalone.pid`); None when none does. A pid file left by a stack that is gone is removed."""
    pid_file = airflow_home / "standalone.pid"
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text())
        os.killpg(pid, 0)
    except (ProcessLookupError, ValueError):
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def default_airflow_home() -> Path:
    """The Airflow home `make up`, `make run` and `make import` use: $AIRFLOW_HOME, else var/airflow."""
    return Path(os.environ.get("AIRFLOW_HOME") or ROOT / "var" / "airflow")


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--port", default=os.environ.get("PATIENT_IMPORT_AIRFLOW_PORT") or "8080")
    args = parser.parse_args()
    if not args.port.isdigit() or not 0 < int(args.port) < 65534:
        print(f"make up: PATIENT_IMPORT_AIRFLOW_PORT must be a port number (1-65533), got {args.port!r}",
              file=sys.stderr)
        return 2
    args.port = int(args.port)
    airflow_home = default_airflow_home()
    pid_file = airflow_home / "standalone.pid"
    if args.action == "down":
        if not pid_file.exists():
            print("Airflow is not running (no standalone.pid)")
            return 0
        stop_process_group(int(pid_file.read_text()))
        pid_file.unlink(missing_ok=True)
        print("Airflow stopped")
        return 0
    pid = running_stack(airflow_home)
    if pid is not None:
        where = running_url(pid)
        print(f"Airflow is already running{f' at {where}' if where else ''} (pid {pid}; login in "
              f"{airflow_home / 'passwords.json'}); `make down` stops it")
        return 1
    try:
        stack = start_stack(airflow_home, args.port)
    except StackError as exc:
        print(f"make up: {exc}", file=sys.stderr)
        return 1
    try:
        unpaused = unpause(stack, stack.token())
    except (StackError, urllib.error.URLError, OSError) as exc:
        stack.stop()
        pid_file.unlink(missing_ok=True)
        print(f"make up: {exc}; the stack was stopped", file=sys.stderr)
        return 1
    print(f"Airflow is up: {stack.url}  (user admin, password {stack.password}; "
          f"also in {airflow_home / 'passwords.json'})")
    paused = [d for d in DAG_IDS if d not in unpaused]
    print(f"DAGs {', '.join(unpaused) or 'none'} unpaused"
          + (f"; still paused: {', '.join(paused)} (unpause them in the UI)" if paused else "")
          + f"; logs: {airflow_home / 'standalone.log'}; `make down` stops it")
    roots = os.environ.get("PATIENT_IMPORT_EXPORT_ROOTS", "")
    print(f"export_file roots: {roots}" if roots else
          "export_file roots: none (runs read only the inboxes; set PATIENT_IMPORT_EXPORT_ROOTS "
          "before `make up` to trigger runs with conf export_file: README, Security)")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
