"""Faults on real processes and real databases (issue #7): stage processes to kill, a store outage
server, and the ledger of faults injected and survived that `make reliability` reads.

The ledger is written at the end of the session to `$PATIENT_IMPORT_HOME/reliability/faults.json`
(by default `var/reliability/faults.json` at the repository root) as `{"faults_injected",
"faults_survived", "markers_found"}` (plus the figures per kind of fault): a fault counts as
survived when its test passed; `markers_found` counts patient values (e-mails, street addresses
of the exports) found where a fault's evidence lands (the killed processes' output, the reports,
the PostgreSQL server log). It must stay 0.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.faults._stage_child import EXPORTED_ON

ROOT = Path(__file__).resolve().parents[2]
# Where `make reliability` reads recorded figures: the home of the session (`var/` unless
# PATIENT_IMPORT_HOME says otherwise), taken before any test points the pipeline elsewhere.
FAULTS_JSON = Path(os.environ.get("PATIENT_IMPORT_HOME") or ROOT / "var") / "reliability" / "faults.json"
CHILD_TIMEOUT_SECONDS = 120

PRACTICES_YAML = """
practices:
  - id: fault_clinic
    name: Fault Clinic
    capacity: 1000
    systems: [drip_education, auto_debit, cash_plan_calculator]
  - id: tight_clinic
    name: Tight Clinic
    capacity: 30
    systems: [drip_education]
"""


# ---------------------------------------------------------------- the ledger


@dataclass
class Ledger:
    injected: int = 0
    survived: int = 0
    markers: int = 0
    by_fault: dict[str, dict[str, int]] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"faults_injected": self.injected, "faults_survived": self.survived,
                    "markers_found": self.markers, "faults": self.by_fault}
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.fault_test_passed = report.passed


@pytest.fixture(scope="session")
def fault_ledger() -> Iterator[Ledger]:
    ledger = Ledger()
    yield ledger
    if ledger.injected:
        ledger.write(FAULTS_JSON)


class FaultRecorder:
    """One test's faults: each `inject` counts once; all count as survived when the test passes."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.kinds: list[str] = []

    def inject(self, kind: str) -> None:
        self.kinds.append(kind)
        self.ledger.injected += 1
        self.ledger.by_fault.setdefault(kind, {"injected": 0, "survived": 0})["injected"] += 1

    def markers_in(self, values: set[str], texts: list[str]) -> list[str]:
        """The patient values that show up in `texts`; counted in the ledger."""
        found = sorted({v for v in values for text in texts if v in text})
        self.ledger.markers += len(found)
        return found

    def survived(self) -> None:
        for kind in self.kinds:
            self.ledger.survived += 1
            self.ledger.by_fault[kind]["survived"] += 1


@pytest.fixture
def fault(fault_ledger, request) -> Iterator[FaultRecorder]:
    recorder = FaultRecorder(fault_ledger)
    yield recorder
    if getattr(request.node, "fault_test_passed", False):
        recorder.survived()


# ---------------------------------------------------------------- file areas and stores


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "practices.yml"
    path.write_text(PRACTICES_YAML, encoding="utf-8")
    return path


class Areas:
    """A patient-import home and file areas per role (`fault`, `shared`, ...) under one folder."""

    def __init__(self, root: Path, registry: Path, monkeypatch):
        self.root = root
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("PATIENT_IMPORT_PRACTICES", str(registry))
        self.use("fault")

    def use(self, name: str, storage_root: str | None = None) -> str:
        """Point the pipeline at the named home and file areas (or the given storage root, an
        object-store URL); returns the storage root."""
        home = self.root / name / "home"
        storage = storage_root or str(self.root / name / "storage")
        home.mkdir(parents=True, exist_ok=True)
        self.monkeypatch.setenv("PATIENT_IMPORT_HOME", str(home))
        self.monkeypatch.setenv("PATIENT_IMPORT_STORAGE", storage)
        return storage


@pytest.fixture
def areas(tmp_path, registry, monkeypatch) -> Areas:
    return Areas(tmp_path / "areas", registry, monkeypatch)


@pytest.fixture(scope="module")
def fresh_store(request, tmp_path_factory):
    """A factory of fresh, migrated stores of a kind (`sqlite`, `postgresql`) for a whole module:
    the clean runs' stores."""
    created: list[tuple[object, str]] = []

    def make(kind: str) -> str:
        if kind == "sqlite":
            path = tmp_path_factory.mktemp("clean_store") / "patient_store.db"
            shutil.copyfile(request.getfixturevalue("_sqlite_store_template"), path)
            return f"sqlite:///{path}"
        server, name = request.getfixturevalue("postgres_server"), f"clean_{uuid.uuid4().hex[:12]}"
        created.append((server, name))
        return server.create_database(name, template=request.getfixturevalue("_postgres_store_template"))

    yield make
    for server, name in created:
        server.drop_database(name)


# ---------------------------------------------------------------- exports


@dataclass(frozen=True)
class Export:
    path: Path
    patient_values: set[str]  # e-mails and street addresses: what must never leak


def patient_values_of(path: Path) -> set[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {r[c].strip() for r in rows for c in ("Email", "Address") if len((r.get(c) or "").strip()) >= 8}


@pytest.fixture(scope="session")
def export(tmp_path_factory) -> Export:
    """A realistic Genesis export of 200 rows, with the usual bad rows, duplicates and Excel damage.
    Imports copy it, never change it: one file serves every test."""
    from tools.generator import generate_export

    path = generate_export(tmp_path_factory.mktemp("exports") / "Genesis_Patient_List.csv", 200, seed=11,
                           today=EXPORTED_ON)
    return Export(path, patient_values_of(path))


@pytest.fixture
def simple_export(tmp_path):
    """A factory of clean exports, one row per account, with made-up but distinct values."""
    return lambda name, accounts: write_simple_export(tmp_path / "exports" / name, accounts)


def write_simple_export(path: Path, accounts: list[int]) -> Export:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Account #", "Last Name", "First Name", "Address", "City", "State", "Zip", "Email"])
        for acct in accounts:
            writer.writerow([acct, f"Faultline{acct}", "Dana", f"{acct} Quarry Lane", "Boise", "ID", "83705",
                             f"dana.faultline{acct}@example.org"])
    return Export(path, patient_values_of(path))


# ---------------------------------------------------------------- stage processes

# What a stage process starts with: the pipeline's modules imported, nothing run (_stage_child.py).
# Airflow's SDK and the S3 file system too, as a worker's supervisor has them: a stage whose file
# areas are an object store reaches them through `ObjectStoragePath` (storage.path_of), and would
# otherwise import Airflow again in every stage process (seconds each).
_PRELOAD = ["include.patient_import.pipeline", "include.patient_import.validate", "include.patient_import.load",
            "include.patient_import.transform", "include.patient_import.report", "great_expectations",
            "airflow.sdk", "airflow.sdk.io.path", "airflow.providers.amazon.aws.fs.s3", "s3fs",
            "tests.faults._stage_child"]


class StageProcess:
    """A running stage process (`_stage_child.py`); its result, stdout and stderr land in `folder`."""

    def __init__(self, process: multiprocessing.process.BaseProcess, folder: Path, stage: str):
        self.process = process
        self.folder = folder
        self.stage = stage

    @property
    def out(self) -> Path:
        return self.folder / "out.json"

    @property
    def signal_file(self) -> Path:
        return self.folder / "paused"

    @property
    def release_file(self) -> Path:
        return self.folder / "release"

    @property
    def trace_file(self) -> Path:
        return self.folder / "trace.jsonl"

    def running(self) -> bool:
        return self.process.exitcode is None

    def output_text(self) -> str:
        return "".join((self.folder / n).read_text(errors="replace") for n in ("stdout", "stderr")
                       if (self.folder / n).exists())

    def wait_for(self, path: Path, timeout: float = CHILD_TIMEOUT_SECONDS) -> None:
        """Until `path` exists; fails at once if the process ends first."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            if not self.running() and not path.exists():
                pytest.fail(f"{self.stage} process ended ({self.process.exitcode}) before {path.name}:\n"
                            f"{self.output_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.stage} process: no {path.name} after {timeout:.0f} s")
            time.sleep(0.02)  # polling for the child's signal file

    def kill(self) -> int:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(timeout=30)
        return self.process.exitcode

    def release(self) -> None:
        self.release_file.write_text("go", encoding="utf-8")

    def result(self, *, died: bool = False) -> dict:
        """The stage's return value, once the process has ended (by SIGKILL when `died`)."""
        self.process.join(timeout=CHILD_TIMEOUT_SECONDS)
        code, expected = self.process.exitcode, (-signal.SIGKILL if died else 0)
        assert code == expected and self.out.exists(), (
            f"{self.stage} process ended {code}, expected {expected}:\n{self.output_text()[-3000:]}")
        return json.loads(self.out.read_text(encoding="utf-8"))

    def trace(self) -> dict[str, float]:
        """The first time of each traced event."""
        events: dict[str, float] = {}
        for line in self.trace_file.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            events.setdefault(entry["event"], entry["at"])
        return events


class Stages:
    """Starts pipeline stages in processes of their own, with the test's current environment."""

    def __init__(self, root: Path, context: multiprocessing.context.BaseContext):
        self.root = root
        self.context = context
        self.started: list[StageProcess] = []

    def start(self, stage: str, store: str, *, import_id: str | None = None, export: Path | None = None,
              practice: str = "fault_clinic", run_id: str = "manual__faults", pause_at: str | None = None,
              trace: bool = False, start_after: Path | None = None, die: bool = False, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> StageProcess:
        folder = self.root / f"{len(self.started) + 1:02d}_{stage}"
        folder.mkdir(parents=True)
        argv = [stage, "--store", store, "--out", str(folder / "out.json")]
        if import_id:
            argv += ["--import-id", import_id]
        if export is not None:
            argv += ["--practice", practice, "--export-file", str(export), "--exported-on", EXPORTED_ON.isoformat(),
                     "--run-id", run_id]
        if pause_at:
            argv += ["--pause-at", pause_at, "--signal", str(folder / "paused"), "--release", str(folder / "release")]
        if trace:
            argv += ["--trace", str(folder / "trace.jsonl")]
        if start_after is not None:
            argv += ["--start-after", str(start_after)]
        if die:
            argv.append("--die")
        from tests.faults._stage_child import run_stage

        process = self.context.Process(target=run_stage, name=f"stage-{stage}", args=(
            argv, {**os.environ, **(env or {})}, str(cwd or folder), str(folder)))
        process.start()
        self.started.append(StageProcess(process, folder, stage))
        return self.started[-1]


@pytest.fixture(scope="session")
def stage_context() -> multiprocessing.context.BaseContext:
    """Stage processes are forked from a server that has imported the pipeline and run nothing."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


@pytest.fixture
def stages(tmp_path, stage_context) -> Iterator[Stages]:
    launcher = Stages(tmp_path / "processes", stage_context)
    yield launcher
    for process in launcher.started:  # a failed test never leaves a paused child behind
        if process.running():
            process.kill()


# ---------------------------------------------------------------- a store that goes away


@pytest.fixture(scope="session")
def outage_server(postgres_server):
    """A PostgreSQL server of its own, for the test that stops and restarts it: the session's
    server, shared by every other test, is never stopped. (Skipped with `postgres_server` where
    PostgreSQL is missing.)"""
    from tools.harness.postgres import PostgresServer

    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def retrying_dag(airflow_db):
    """The real DAG parsed with 4 retries (the session default is 1): enough tries, with the
    exponential backoff from a 1 s delay (1-2 s, 2-4 s, 4-8 s, ...), to outlast a short outage."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as env:
        env.setenv("PATIENT_IMPORT_RETRIES", "4")  # read when the DAG file is parsed
        bag = DagBag(dag_folder=str(ROOT / "dags" / "patient_import.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("patient_import")
