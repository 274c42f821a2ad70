"""The production topology without containers (issue #5): the CeleryExecutor end to end.

As in docker-compose.yml, each Airflow component is its own process: the API server, the
scheduler, the DAG processor and a Celery worker, with PostgreSQL for Airflow's metadata (and
Celery's result backend), a real Redis broker, and the patient store on PostgreSQL. The file areas
(`PATIENT_IMPORT_STORAGE`, staging included) live in a directory that is not the worker's working
directory, as they do on a volume in production. A run triggered through the REST API imports one
export; the report, the store and Celery's own records must agree.

`scripts/install_redis.sh` installs Debian's Redis server when it is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from include.executors import PRELOADED_MODULES
from scripts.airflow_stack import ROOT, Stack, free_port, healthy, stack_env, wait_for_dag
from tests.e2e.conftest import E2E_PRACTICES, Airflow

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

PRACTICE = "alpha_clinic"
CELERY_CONFIG_OPTIONS = "include.celery_config.CELERY_CONFIG"
START_TIMEOUT = 240
RUN_TIMEOUT = 300
AIRFLOW = Path(sys.executable).with_name("airflow")
COMPONENTS = {
    # name: the command after `airflow`
    "api-server": ["api-server", "--workers", "1"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
    "celery-worker": ["celery", "worker", "--concurrency", "2"],
}


@dataclass
class Topology:
    root: Path
    airflow: Airflow
    storage: Path
    worker_cwd: Path
    metadata_url: str
    store_url: str
    logs: dict[str, Path] = field(default_factory=dict)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace")[-chars:] if path and path.exists() else ""


# ------------------------------------------------------------------------------------ processes


def _popen(command: list[str], log: Path, *, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """A component in its own process group, so stopping the group stops its children too."""
    with log.open("ab") as handle:
        return subprocess.Popen(command, env=env, cwd=str(cwd), stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _wait(condition, what: str, timeout: float, processes: dict[str, subprocess.Popen], logs: dict[str, Path]):
    """Poll `condition` until it holds; fail at once when a process it depends on has exited."""
    deadline = time.monotonic() + timeout
    while True:
        for name, process in processes.items():
            if process.poll() is not None:
                tail = logs[name].read_text(errors="replace")[-3000:] if name in logs else ""
                raise RuntimeError(f"{name} exited ({process.returncode}) while waiting for {what}:\n{tail}")
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)  # polling a readiness probe, not synchronising the test


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(processes: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM every process group at once, SIGKILL what is left after `timeout`.

    Each leader is reaped as it exits: an unreaped leader stays a zombie member of its group, and
    the group would look alive until the deadline.
    """
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            process.poll()
        if not any(_group_alive(p.pid) for p in processes):
            return
        time.sleep(0.2)  # polling for exits, not synchronising the test
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def _redis_ready(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping())
    except redis.exceptions.ConnectionError:
        return False


def _redis_server() -> str:
    if shutil.which("redis-server") is None:
        done = subprocess.run(["bash", str(ROOT / "scripts" / "install_redis.sh")], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0 or shutil.which("redis-server") is None:
            reason = f"redis-server could not be installed: {done.stderr.strip()[-500:]}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    return shutil.which("redis-server")


def _airflow_conn_uri(sqlalchemy_url: str) -> str:
    """The store as Airflow's `patient_store` connection URI (`postgresql://...`, no driver)."""
    return sa.make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def topology(postgres_server, tmp_path_factory) -> Iterator[Topology]:
    redis_server = _redis_server()
    root = tmp_path_factory.mktemp("celery_topology")
    airflow_home, home, storage, worker_cwd, logs_dir, redis_dir = (
        root / name for name in ("airflow", "home", "storage", "worker_cwd", "logs", "redis"))
    for folder in (airflow_home, home, storage, worker_cwd, logs_dir, redis_dir):
        folder.mkdir()
    registry = root / "practices.yml"
    registry.write_text(E2E_PRACTICES, encoding="utf-8")
    password = secrets.token_urlsafe(12)
    (airflow_home / "passwords.json").write_text(json.dumps({"admin": password}), encoding="utf-8")

    suffix = uuid.uuid4().hex[:8]
    databases = (f"airflow_celery_{suffix}", f"store_celery_{suffix}")
    metadata_url, store_url = (postgres_server.create_database(name) for name in databases)
    redis_port, api_port = free_port(), free_port()
    env = stack_env(airflow_home, api_port, {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        # Airflow derives its async URL as `postgresql+asyncpg`, a driver the project does not
        # install; psycopg 3 is async too.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url.replace("+psycopg://", "+psycopg_async://", 1),
        # A small pool per process: four components share the session's PostgreSQL server.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "4",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        # psycopg 3, as the metadata database: `db+postgresql://` would mean psycopg2.
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_url}",
        "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",
        # The worker imports the tasks' modules once, before its pool forks (docker-compose.yml too).
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": CELERY_CONFIG_OPTIONS,
        # Every component must share these (docker-compose.yml takes them from .env).
        "AIRFLOW__CORE__FERNET_KEY": urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # The DAG files do not change during the test: parsed once, at the processor's start, not
        # every 10 s (tests/e2e/conftest.py does the same; issue #16: `make test` time).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3600",
        # Not the default 8793: another stack of the session may serve its logs there.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW_CONN_PATIENT_STORE": _airflow_conn_uri(store_url),
        "PATIENT_IMPORT_HOME": str(home),
        "PATIENT_IMPORT_STORAGE": str(storage),
        "PATIENT_IMPORT_PRACTICES": str(registry),
        "PATIENT_IMPORT_SETTLE_SECONDS": "0",
        "PATIENT_IMPORT_RETRIES": "1",
        "PATIENT_IMPORT_RETRY_DELAY_SECONDS": "1",
    })

    logs = {name: logs_dir / f"{name}.log" for name in ["redis", *COMPONENTS]}
    processes: dict[str, subprocess.Popen] = {}
    try:
        processes["redis"] = _popen(
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(redis_dir)], logs["redis"], env=env, cwd=redis_dir)
        migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, cwd=str(airflow_home),
                                 capture_output=True, text=True, timeout=300)
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        _wait(lambda: _redis_ready(redis_port), "Redis", 30, processes, logs)
        for name, command in COMPONENTS.items():
            # The worker runs the tasks from a directory of its own: a relative path in the
            # pipeline would land here instead of under the storage root.
            cwd = worker_cwd if name == "celery-worker" else airflow_home
            processes[name] = _popen([str(AIRFLOW), *command], logs[name], env=env, cwd=cwd)
        stack = Stack(airflow_home=airflow_home, port=api_port, pid=processes["api-server"].pid, password=password)
        _wait(lambda: healthy(stack.url), "API server, scheduler and DAG processor healthy", START_TIMEOUT,
              processes, logs)
        client = Airflow(stack, home)
        wait_for_dag(stack, client.token)
        yield Topology(root=root, airflow=client, storage=storage, worker_cwd=worker_cwd,
                       metadata_url=metadata_url, store_url=store_url, logs=logs)
    finally:
        _stop(list(processes.values()), timeout=30)
        for name in databases:
            postgres_server.drop_database(name)


# ------------------------------------------------------------------------------------ the test


def _wait_for_run(topology: Topology, run_id: str) -> dict:
    quoted = urllib.parse.quote(run_id, safe="")
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        run = topology.airflow.api("GET", f"/api/v2/dags/patient_import/dagRuns/{quoted}")
        if run["state"] in ("success", "failed"):
            return run
        if time.monotonic() > deadline:
            states = [(t["task_id"], t["map_index"], t["state"]) for t in topology.airflow.task_instances(quoted)]
            raise TimeoutError(f"run {run_id} still {run['state']} after {RUN_TIMEOUT} s: {states}\n"
                               f"worker log:\n{topology.log_tail('celery-worker')}")
        time.sleep(2)


# "[<celery task id>] Executing workload in Celery: ... ti=TaskInstanceDTO(id=UUID('<ti id>'), ..."
_WORKLOAD = re.compile(r"\[([0-9a-f-]{36})\] Executing workload in Celery: "
                       r".*?ti=TaskInstanceDTO\(id=UUID\('([0-9a-f-]{36})'\)")


def _celery_task_ids(worker_log: str) -> dict[str, str]:
    """Task instance id -> the id of the Celery task that ran it, from the worker's log."""
    return {ti_id: celery_id for celery_id, ti_id in _WORKLOAD.findall(worker_log)}


def _celery_results(topology: Topology, celery_ids: set[str], timeout: float = 60) -> dict[str, str]:
    """The states Celery's result backend holds for these tasks, once none is pending any more.

    The worker stores a task's result after the task instance has reported its own state, so the
    run can be over a moment before its last result is.
    """
    engine = sa.create_engine(topology.metadata_url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                states = dict(conn.execute(
                    sa.text("SELECT task_id, status FROM celery_taskmeta WHERE task_id IN :ids")
                    .bindparams(sa.bindparam("ids", expanding=True)), {"ids": sorted(celery_ids)}).all())
            if len(states) == len(celery_ids) and not {"PENDING", "STARTED"} & set(states.values()):
                return states
            if time.monotonic() > deadline:
                return states
            time.sleep(0.5)
    finally:
        engine.dispose()


def test_a_triggered_run_imports_an_export_on_the_celery_worker(topology, tmp_path):
    from include.patient_import.store import create_store_engine
    from tools.generator import generate_export

    (tmp_path / "downloads").mkdir()
    export = generate_export(tmp_path / "downloads" / "genesis_patients.csv", 200, seed=11)
    landed = time.time() - 120
    os.utime(export, (landed, landed))
    original_sha256 = hashlib.sha256(export.read_bytes()).hexdigest()
    exported_on = datetime.now(timezone.utc).date().isoformat()

    triggered = topology.airflow.api("POST", "/api/v2/dags/patient_import/dagRuns", {
        "logical_date": None,
        "conf": {"practice_id": PRACTICE, "export_file": str(export), "exported_on": exported_on}})
    run_id = triggered["dag_run_id"]
    run = _wait_for_run(topology, run_id)
    tis = topology.airflow.task_instances(urllib.parse.quote(run_id, safe=""))
    assert run["state"] == "success", (
        [(t["task_id"], t["map_index"], t["state"]) for t in tis], topology.log_tail("celery-worker"))

    # The tasks ran on the Celery worker: it logged each task instance it executed, and Celery's
    # result backend (the metadata database, through psycopg 3) recorded them.
    ran = [t for t in tis if t["state"] == "success"]
    assert {t["task_id"] for t in ran} >= {"plan_imports", "import_practice.load_patients",
                                           "import_practice.report_imports"}
    worker_log = topology.logs["celery-worker"].read_text(errors="replace")
    # It had imported every task's modules before its pool forked (include/celery_config.py).
    assert f"preloaded {len(PRELOADED_MODULES)} modules for the Celery worker's tasks" in worker_log
    celery_ids = _celery_task_ids(worker_log)
    assert [t["task_id"] for t in ran if t["id"] not in celery_ids] == []
    assert all(t["queue"] == "default" and t["hostname"] for t in ran)
    results = _celery_results(topology, {celery_ids[t["id"]] for t in ran})
    assert set(results.values()) == {"SUCCESS"}

    # The report, under the storage root, adds up and matches the store.
    reports = list((topology.storage / "reports" / PRACTICE).glob("*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text(encoding="utf-8"))
    counts = report["counts"]
    assert report["practice_id"] == PRACTICE and report["dry_run"] is False
    assert {k: report["export"][k] for k in ("name", "sha256", "exported_on")} == {
        "name": export.name, "sha256": original_sha256, "exported_on": exported_on}
    assert counts["read"] == 200
    assert counts["read"] == counts["inserted"] + counts["updated"] + counts["unchanged"] + counts["skipped"] \
        + counts["rejected"]
    assert counts["inserted"] > 150 and counts["rejected"] > 0
    assert report["status"] == "completed_with_errors"

    store = create_store_engine(topology.store_url)
    try:
        with store.connect() as conn:
            record = conn.execute(sa.text("SELECT * FROM imports WHERE id = :id"),
                                  {"id": report["import_id"]}).mappings().one()
            outcomes = dict(conn.execute(sa.text(
                "SELECT outcome, count(*) FROM import_rows WHERE import_id = :id GROUP BY outcome"),
                {"id": report["import_id"]}).all())
            stored = conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT third_party_acct_number), count(*) FILTER "
                "(WHERE created_import_id = :id AND last_seen_exported_on = :day) FROM patients "
                "WHERE practice_id = :practice"),
                {"id": report["import_id"], "day": exported_on, "practice": PRACTICE}).one()
    finally:
        store.dispose()
    assert record["dag_run_id"] == run_id and record["status"] == report["status"]
    assert {k: record[k] for k in counts} == counts
    assert {k: v for k, v in outcomes.items() if v} == {k: v for k, v in counts.items() if k != "read" and v}
    assert tuple(stored) == (counts["inserted"],) * 3

    # The original is untouched; staging is empty; nothing landed in the worker's directory.
    assert hashlib.sha256(export.read_bytes()).hexdigest() == original_sha256
    staging = topology.storage / "staging"
    assert staging.is_dir() and [p for p in staging.rglob("*") if p.is_file()] == []
    assert list(topology.worker_cwd.iterdir()) == []
