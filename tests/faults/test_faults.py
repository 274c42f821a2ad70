"""Faults on real processes and real databases (issue #7): killed loads and reports, a store that
goes away, two imports racing for one practice, workers that die between tasks.

Each stage that a fault strikes runs in a process of its own (`_stage_child.py`, forked from a
server that has only imported the pipeline) and is killed with SIGKILL; the store outage stops and
restarts a real PostgreSQL server under the real DAG (`dag.test()`), whose task retries must carry
the import through. A run that met a fault must end up equal to one clean run of the same export.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from include.patient_import import load, pipeline, records, storage
from include.patient_import.files import staging_dir
from include.patient_import.report import report_import, report_path
from include.patient_import.store import Import, ImportProblem, ImportRow, Patient, create_store_engine
from tests.faults._stage_child import EXPORTED_ON, run_info

pytestmark = pytest.mark.integration

PRACTICE = "fault_clinic"
OUTAGE_SECONDS = 3.0  # longer than the first retry delay (1-2 s): at least two tries fail


def store_snapshot(url: str, practice_id: str) -> dict:
    """What a load leaves in the store for a practice, without the ids a database hands out
    (a PostgreSQL sequence is not rolled back with a killed transaction) and without times and
    paths."""
    patients, imports = Patient.__table__, Import.__table__
    rows, problems = ImportRow.__table__, ImportProblem.__table__
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            ids = sa.select(imports.c.id).where(imports.c.practice_id == practice_id)
            return {
                "patients": [{k: v for k, v in r.items() if k != "id"} for r in conn.execute(
                    sa.select(patients).where(patients.c.practice_id == practice_id)
                    .order_by(patients.c.third_party_acct_number)).mappings()],
                "imports": [dict(r) for r in conn.execute(sa.select(
                    imports.c.id, imports.c.status, imports.c.read, imports.c.inserted, imports.c.updated,
                    imports.c.unchanged, imports.c.skipped, imports.c.rejected, imports.c.details,
                    imports.c.loaded_at.is_not(None).label("loaded"),
                ).where(imports.c.practice_id == practice_id).order_by(imports.c.id)).mappings()],
                "rows": [tuple(r) for r in conn.execute(
                    sa.select(rows.c.import_id, rows.c.row_number, rows.c.account_number, rows.c.outcome,
                              rows.c.code).where(rows.c.import_id.in_(ids))
                    .order_by(rows.c.import_id, rows.c.row_number))],
                "problems": sorted(tuple(r) for r in conn.execute(
                    sa.select(problems.c.import_id, problems.c.row_number, problems.c.account_number,
                              problems.c.field, problems.c.code, problems.c.severity, problems.c.message)
                    .where(problems.c.import_id.in_(ids))).all()),
            }
    finally:
        engine.dispose()


def comparable_report(report: dict) -> dict:
    """A report without what differs between two correct runs: times and where the files are."""
    return {k: v for k, v in report.items() if k not in ("started_at", "finished_at", "files", "staleness")}


def stage_first_three(store: str, export: Path, *, practice: str = PRACTICE,
                      run_id: str = "manual__faults") -> str:
    """Extract, validate, transform and the approval step (the DAG's `check_approval`) in this
    process; returns the import id."""
    engine = records.open_store(store, prepare=True)
    try:
        [done] = pipeline.run_import(engine, practice, run_info(run_id), export_file=str(export),
                                     exported_on=EXPORTED_ON, stages=("validate", "transform", "approval"),
                                     report=False)
        return done["import_id"]
    finally:
        engine.dispose()


def load_and_report(store: str, import_id: str) -> tuple[dict, dict]:
    """The load and report stages in this process: (load result, report summary)."""
    engine = records.open_store(store)
    try:
        done = pipeline.run_stages(engine, import_id, ("load",))
        return done["load"], done["report"]
    finally:
        engine.dispose()


def run_in_process(store: str, export: Path, *, run_id: str = "manual__faults") -> tuple[str, dict]:
    """The five stages in this process, as one clean DAG run: (import id, report summary)."""
    import_id = stage_first_three(store, export, run_id=run_id)
    return import_id, load_and_report(store, import_id)[1]


@dataclass(frozen=True)
class CleanRun:
    """One clean run of the export: what a run that met a fault must end up equal to."""

    import_id: str
    counts: dict
    report: dict
    snapshot: dict
    outputs: dict[str, bytes]  # the upload and rejected-rows files


def outputs_of(report: dict) -> dict[str, bytes]:
    return {name: storage.path_of(report["files"][name]).read_bytes() for name in ("upload", "rejected_rows")}


@pytest.fixture(scope="module")
def clean_run(export, fresh_store, registry, tmp_path_factory):
    """`clean_run(store_url, run_id)`: the export run once, cleanly, in this process, on a fresh
    store of the same database; computed once per database and run id."""
    done: dict[tuple[str, str], CleanRun] = {}

    def get(store_url: str, run_id: str = "manual__faults") -> CleanRun:
        kind = sa.make_url(store_url).get_backend_name()
        if (kind, run_id) not in done:
            url, home = fresh_store(kind), tmp_path_factory.mktemp("clean_home")
            with pytest.MonkeyPatch.context() as env:
                env.setenv("PATIENT_IMPORT_HOME", str(home))
                env.setenv("PATIENT_IMPORT_STORAGE", str(home / "storage"))
                env.setenv("PATIENT_IMPORT_PRACTICES", str(registry))
                import_id, summary = run_in_process(url, export.path, run_id=run_id)
            report = json.loads(Path(summary["report"]).read_text(encoding="utf-8"))
            done[kind, run_id] = CleanRun(import_id, summary["counts"], report, store_snapshot(url, PRACTICE),
                                          outputs_of(report))
        return done[kind, run_id]

    return get


def row_count(store: str, table: sa.Table, *where) -> int:
    engine = create_store_engine(store)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())
    finally:
        engine.dispose()


def assert_loaded_once(store: str, import_id: str, counts: dict) -> None:
    """The counts add up, every row read has one recorded outcome, and each inserted patient is
    stored exactly once."""
    assert counts["read"] == sum(counts[k] for k in ("inserted", "updated", "unchanged", "skipped", "rejected"))
    assert row_count(store, ImportRow.__table__, ImportRow.__table__.c.import_id == import_id) == counts["read"]
    patients = Patient.__table__
    assert row_count(store, patients, patients.c.created_import_id == import_id) == counts["inserted"]
    engine = create_store_engine(store)
    try:
        with engine.connect() as conn:
            duplicates = conn.execute(
                sa.select(patients.c.practice_id, patients.c.third_party_acct_number)
                .group_by(patients.c.practice_id, patients.c.third_party_acct_number)
                .having(sa.func.count() > 1)).all()
    finally:
        engine.dispose()
    assert duplicates == []


@pytest.mark.usefixtures("areas")
def test_a_load_killed_inside_its_transaction_and_retried_equals_one_clean_run(
        store_url, clean_run, export, stages, fault):
    clean = clean_run(store_url)
    import_id = stage_first_three(store_url, export.path)
    loader = stages.start("load", store_url, import_id=import_id, pause_at="upsert")
    loader.wait_for(loader.signal_file)  # the patients are upserted, the transaction still open

    fault.inject("sigkill_load_mid_transaction")
    assert loader.kill() == -signal.SIGKILL

    killed = store_snapshot(store_url, PRACTICE)
    assert killed["patients"] == [] and killed["rows"] == [] and killed["problems"] == []
    assert [(i["status"], i["loaded"]) for i in killed["imports"]] == [("processing", False)]
    loaded, summary = load_and_report(store_url, import_id)
    assert import_id == clean.import_id
    assert loaded["counts"] == summary["counts"] == clean.counts
    assert store_snapshot(store_url, PRACTICE) == clean.snapshot
    assert_loaded_once(store_url, import_id, summary["counts"])
    assert fault.markers_in(export.patient_values, [loader.output_text()]) == []


@pytest.mark.usefixtures("areas")
def test_a_load_that_finds_the_store_down_retries_with_backoff_and_writes_once(
        retrying_dag, outage_server, export, monkeypatch, fault):
    url = outage_server.create_database(f"outage_{uuid.uuid4().hex[:8]}")
    parsed = sa.make_url(url)
    monkeypatch.setenv("AIRFLOW_CONN_PATIENT_STORE", json.dumps({
        "conn_type": "postgres", "host": parsed.host, "port": parsed.port, "login": parsed.username,
        "password": parsed.password, "schema": parsed.database}))
    monkeypatch.setenv("PATIENT_IMPORT_RETRIES", "4")  # as `retrying_dag` was parsed
    real_load = load.load_patients
    attempts: list[str] = []
    restarts: list[threading.Thread] = []

    def load_after_outage(engine, import_id):  # noqa: ANN001
        if not attempts:
            # The store goes away as the load task starts, and comes back a little later.
            outage_server.halt()
            fault.inject("store_down_when_load_starts")
            restart = threading.Timer(OUTAGE_SECONDS, outage_server.resume)
            restart.start()
            restarts.append(restart)
        try:
            result = real_load(engine, import_id)
        except Exception as exc:
            attempts.append(type(exc).__name__)
            raise
        attempts.append("loaded")
        return result

    monkeypatch.setattr(load, "load_patients", load_after_outage)
    try:
        run = retrying_dag.test(run_conf={"practice_id": PRACTICE, "export_file": str(export.path),
                                          "exported_on": EXPORTED_ON.isoformat(), "dry_run": False})
    finally:
        for restart in restarts:
            restart.join()

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from include.patient_import.summary import run_reports

    with create_session() as session:
        tries = {ti.task_id: ti.try_number for ti in session.scalars(sa.select(TaskInstance).where(
            TaskInstance.dag_id == "patient_import", TaskInstance.run_id == run.run_id))}
    assert str(run.state) == "success", (tries, attempts)
    assert attempts[0] == "OperationalError" and attempts[-1] == "loaded"
    assert tries.pop("import_practice.load_patients") == len(attempts) >= 2
    assert set(tries.values()) == {1}  # only the load was retried
    engine = create_store_engine(url)
    [report] = run_reports(engine, run.run_id)
    engine.dispose()
    assert report["status"] in ("completed", "completed_with_errors")
    assert report["counts"]["inserted"] > 0
    assert row_count(url, Import.__table__, Import.__table__.c.dag_run_id == run.run_id) == 1
    assert_loaded_once(url, report["import_id"], report["counts"])
    assert fault.markers_in(export.patient_values, [outage_server.log_path.read_text(errors="replace"),
                                                    json.dumps(report, ensure_ascii=False)]) == []


@pytest.mark.usefixtures("areas")
def test_a_crash_between_load_and_report_then_the_tasks_cleared_continue_the_same_import(
        store_url, clean_run, export, stages, fault):
    clean = clean_run(store_url)
    import_id = stage_first_three(store_url, export.path)
    engine = records.open_store(store_url)
    load.load_patients(engine, import_id)
    engine.dispose()
    reporter = stages.start("report", store_url, import_id=import_id, pause_at="report")
    reporter.wait_for(reporter.signal_file)  # the import finalised in the store, its JSON not written

    fault.inject("sigkill_between_load_and_report")
    assert reporter.kill() == -signal.SIGKILL
    assert not report_path(PRACTICE, import_id).exists() and staging_dir(import_id).is_dir()

    # The import's tasks cleared and run again, in the same DAG run.
    again = stage_first_three(store_url, export.path)
    reloaded, summary = load_and_report(store_url, import_id)
    report = json.loads(report_path(PRACTICE, import_id).read_text(encoding="utf-8"))
    assert again == import_id == clean.import_id
    assert reloaded["counts"] == summary["counts"] == report["counts"] == clean.counts
    assert comparable_report(report) == comparable_report(clean.report)
    assert store_snapshot(store_url, PRACTICE) == clean.snapshot
    assert_loaded_once(store_url, import_id, report["counts"])
    assert outputs_of(report) == clean.outputs
    assert not staging_dir(import_id).exists()
    assert fault.markers_in(export.patient_values, [reporter.output_text()]) == []


def _wait_until_waiting_for_the_lock(store: str, loader) -> None:  # noqa: ANN001
    """Until the second load asks for the practice's lock; on PostgreSQL, until the server shows
    it waiting on the advisory lock."""
    loader.wait_for(loader.trace_file)
    if not store.startswith("postgresql"):
        return
    engine = create_store_engine(store)
    deadline = time.monotonic() + 60
    try:
        while True:
            with engine.connect() as conn:
                waiting = conn.execute(sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).scalar_one()
            if waiting:
                return
            assert time.monotonic() < deadline, "the second load never waited for the practice's lock"
            time.sleep(0.05)  # polling the server's lock table
    finally:
        engine.dispose()


@pytest.mark.usefixtures("areas")
def test_two_imports_of_one_practice_at_once_are_serialised_and_cannot_both_pass_capacity(
        store_url, stages, simple_export, fault):
    # Capacity 30: either export fits alone (20 new); after the first, the second's 15 new do not.
    first = simple_export("tight_first.csv", list(range(1001, 1021)))
    second = simple_export("tight_second.csv", list(range(1016, 1036)))
    first_id = stage_first_three(store_url, first.path, practice="tight_clinic", run_id="manual__first")
    second_id = stage_first_three(store_url, second.path, practice="tight_clinic", run_id="manual__second")
    a = stages.start("load", store_url, import_id=first_id, pause_at="upsert", trace=True)
    # The second starts its load once the first holds the practice's lock, its patients upserted.
    b = stages.start("load", store_url, import_id=second_id, trace=True, start_after=a.signal_file)
    a.wait_for(a.signal_file)
    fault.inject("concurrent_imports_of_one_practice")
    _wait_until_waiting_for_the_lock(store_url, b)
    time.sleep(1.0)  # the first keeps the lock a moment longer: the second must wait all of it
    assert "locked" not in b.trace()
    a.release()
    first_result, second_result = a.result(), b.result()

    # The second asked for the lock while the first held it, and got it only once the first committed.
    assert b.trace()["locking"] < a.trace()["commit"] <= b.trace()["locked"]
    assert first_result["status"] == "completed" and first_result["counts"]["inserted"] == 20
    assert second_result["status"] == "rejected" and second_result["counts"]["rejected"] == 20
    engine = records.open_store(store_url)
    reports = {i: report_import(engine, i) for i in (first_id, second_id)}
    engine.dispose()
    second_report = json.loads(Path(reports[second_id]["report"]).read_text(encoding="utf-8"))
    assert [x["code"] for x in second_report["problems"] if x["row"] is None] == ["capacity_exceeded"]
    assert second_report["details"] == {"capacity": 30, "stored": 20, "new": 15, "overflow": 5}
    snapshot = store_snapshot(store_url, "tight_clinic")
    assert [p["third_party_acct_number"] for p in snapshot["patients"]] == [str(n) for n in range(1001, 1021)]
    assert {i["id"]: (i["status"], i["loaded"]) for i in snapshot["imports"]} == {
        first_id: ("completed", True), second_id: ("rejected", True)}
    for import_id, summary in reports.items():
        assert_loaded_once(store_url, import_id, summary["counts"])
    assert fault.markers_in(first.patient_values | second.patient_values,
                            [a.output_text(), b.output_text()]) == []


# What a worker needs comes from the file areas and the store, whatever the database: PostgreSQL,
# the store that workers on several machines share; the file areas a folder every worker mounts,
# or an object store (S3 API) that workers reach over the network.
@pytest.mark.parametrize("file_areas", ["shared_folder", "object_store"])
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_stages_on_workers_that_die_between_tasks_find_what_they_need_in_the_file_areas(
        store_url, file_areas, clean_run, areas, export, stages, tmp_path, fault, request):
    clean = clean_run(store_url, "manual__workers")
    if file_areas == "object_store":
        root = areas.use("workers", storage_root=request.getfixturevalue("object_store").new_root())
    else:
        root = areas.use("shared")
    records.open_store(store_url, prepare=True).dispose()  # plan_imports' part
    workers: list[Path] = []

    def on_a_new_worker(stage: str, **kwargs) -> dict:
        """The stage on a fresh worker: its own process, working directory and home; the worker
        dies (SIGKILL) as soon as the stage has returned."""
        workdir = tmp_path / "workers" / stage
        workdir.mkdir(parents=True)
        workers.append(workdir)
        process = stages.start(stage, store_url, cwd=workdir, die=True, run_id="manual__workers",
                               env={"PATIENT_IMPORT_HOME": str(workdir / "home")}, **kwargs)
        result = process.result(died=True)
        fault.inject("worker_died_after_task")
        assert fault.markers_in(export.patient_values, [process.output_text()]) == []
        return result

    [import_id] = on_a_new_worker("extract", export=export.path)["import_ids"]
    for stage in pipeline.STAGES:
        on_a_new_worker(stage, import_id=import_id)
    summary = on_a_new_worker("report", import_id=import_id)

    assert summary["report"].startswith(root)
    report = json.loads(storage.path_of(summary["report"]).read_text(encoding="utf-8"))
    assert import_id == clean.import_id and summary["counts"] == clean.counts
    assert comparable_report(report) == comparable_report(clean.report)
    assert store_snapshot(store_url, PRACTICE) == clean.snapshot
    assert outputs_of(report) == clean.outputs
    assert not staging_dir(import_id).exists()
    assert {w.name: sorted(p.name for p in w.rglob("*")) for w in workers} == {w.name: [] for w in workers}
