"""A throwaway PostgreSQL 15 server for the tests: initdb into a temporary directory, a loopback
port, stopped and removed at the end. A real server, not a mock and not a container.

    with PostgresServer.started() as server:
        url = server.create_database("patient_store")

The server runs as a non-root user (initdb refuses root): the current one, or `postgres` when the
tests run as root. Durability is traded for speed (fsync off); the logging settings are the ones
docs/production.md asks of the production server, so a test can check the log holds no patient
value.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 30
_BINDIR_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/local/pgsql/bin")
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
    "shared_buffers": "64MB",
    # What production must also set (docs/production.md): no statement, bound value or
    # error context (a COPY's context holds the offending value) in the server log.
    "log_statement": "none",
    "log_min_error_statement": "panic",
    "log_error_verbosity": "terse",
    "log_parameter_max_length": "0",
    "log_parameter_max_length_on_error": "0",
    "logging_collector": "off",
}


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries (or a user to run them as) are missing on this machine."""


def find_bindir() -> Path:
    """`$PG_BINDIR`, else PostgreSQL 15's Debian location, else `initdb` on the PATH."""
    candidates = [os.environ["PG_BINDIR"]] if os.environ.get("PG_BINDIR") else list(_BINDIR_CANDIDATES)
    on_path = shutil.which("initdb")
    if on_path and not os.environ.get("PG_BINDIR"):
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise PostgresUnavailable(f"no PostgreSQL server binaries (initdb, pg_ctl) in {candidates}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One server in a temporary directory; `start()` / `stop()`, or the `started()` context."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.run_as = self._server_user()
        self.password = secrets.token_urlsafe(16)
        self.port = 0
        self.root: Path | None = None

    @staticmethod
    def _server_user() -> str | None:
        """None: run as ourselves. As root, the `postgres` system user."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise PostgresUnavailable("running as root and no 'postgres' user to run the server as") from exc
        return "postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "LC_ALL": "C", "LANG": "C"})

    def _checked(self, *args: str, timeout: float = 60) -> None:
        done = self._run(*args, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pg-harness-"))
        (self.root / "socket").mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if self.run_as:
            owner = pwd.getpwnam(self.run_as)
            for path in (self.root, self.root / "socket", pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        self._checked("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync",
                      "--no-instructions")
        pwfile.unlink()
        # The free port may be taken before the server binds it: then try another.
        for attempt in range(3):
            self.port = _free_port()
            if self._pg_ctl_start().returncode == 0:
                self._wait_ready()
                return
            if "could not bind" not in self._log_tail() or attempt == 2:
                raise RuntimeError(f"PostgreSQL did not start on port {self.port}:\n{self._log_tail()}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess:
        options = " ".join(
            [f"-p {self.port}", f"-k {self.root / 'socket'}"]
            + [f"-c {name}={value}" for name, value in _SERVER_SETTINGS.items()])
        return self._run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT_SECONDS), "-D", str(self.data_dir),
                         "-l", str(self.log_path), "-o", options, timeout=START_TIMEOUT_SECONDS + 10)

    def halt(self) -> None:
        """Stop the server as an outage would (clients cut off), keeping its data and port for `resume()`."""
        self._checked("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30")

    def resume(self) -> None:
        """Start a halted server again, on the same port with the same data."""
        if self._pg_ctl_start().returncode != 0:
            raise RuntimeError(f"PostgreSQL did not restart on port {self.port}:\n{self._log_tail()}")
        self._wait_ready()

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def _wait_ready(self) -> None:
        """Until the server accepts connections on its TCP port, or the deadline."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            ready = self._run("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1", timeout=5)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not accept connections within "
                                   f"{START_TIMEOUT_SECONDS}s on port {self.port}:\n{self._log_tail()}")
            time.sleep(0.05)  # polling a readiness probe, not synchronising tests

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    @classmethod
    @contextmanager
    def started(cls, bindir: Path | None = None) -> Iterator["PostgresServer"]:
        server = cls(bindir)
        try:
            server.start()
            yield server
        finally:
            server.stop()

    # ------------------------------------------------------------------ databases

    def url(self, database: str = "postgres") -> str:
        return sa.URL.create("postgresql+psycopg", username=SUPERUSER, password=self.password,
                             host="127.0.0.1", port=self.port, database=database
                             ).render_as_string(hide_password=False)

    def _admin(self, statement: str) -> None:
        # CREATE/DROP DATABASE cannot run inside a transaction block.
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create `name` (a copy of `template` when given) and return its SQLAlchemy URL."""
        statement = f'CREATE DATABASE "{name}"'
        if template:
            # FILE_COPY: a plain file copy, the fastest for a small template (fsync is off).
            statement += f' TEMPLATE "{template}" STRATEGY FILE_COPY'
        self._admin(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

