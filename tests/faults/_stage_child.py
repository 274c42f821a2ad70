"""One pipeline stage in a process of its own, as an Airflow worker runs it, for the fault tests.

    run_stage(argv, env, cwd, log_dir)   # the target of a multiprocessing Process (see conftest)
    python tests/faults/_stage_child.py STAGE ...   # the same, by hand

    STAGE --store URL --out RESULT.json
        [--import-id ID | --practice P --export-file F --exported-on D --run-id R]
        [--pause-at upsert|report --signal PATH [--release PATH]] [--start-after PATH]
        [--trace PATH] [--die]

The tests start it from a multiprocessing forkserver that has imported the pipeline's modules and
nothing else, as Airflow's task processes are forked from a supervisor: each stage process is new,
with no state of any earlier stage, and costs no interpreter start-up. The environment
(`PATIENT_IMPORT_HOME`, `_STORAGE`, `_PRACTICES`) and the working directory are the parent's choice.
The hooks are test-only: SQLAlchemy event listeners on this process's engine and a wrapper around
the report writer, installed here; the pipeline's code is untouched.

- `--pause-at upsert`: once the patients' upsert has run inside the load's transaction, write
  `--signal` and wait for `--release` (without one, wait until killed).
- `--pause-at report`: the same, once the report stage has finalised the import in the store and
  is about to write the JSON report.
- `--start-after`: start the stage only once PATH exists.
- `--trace`: append JSON lines `{"event", "at"}`: `locking` (the practice lock is requested),
  `locked` (granted), `commit` (the load's transaction commits; the lock is held until then).
- `--die`: SIGKILL this process once the stage's result is written: a worker that dies between
  tasks, without its clean-up.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import date
from pathlib import Path

from sqlalchemy import event

from include.patient_import import pipeline, records, report_file
from include.patient_import.extract import RunInfo, extract_exports

EXPORTED_ON = date(2026, 11, 20)  # every fault test's imports: a past date, fixed


def run_info(run_id: str) -> RunInfo:
    """The identity of the DAG run a fault test plays (SPEC §6): the same run id, the same import."""
    return RunInfo(dag_id="patient_import", run_id=run_id, map_index=0)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _pause(signal_file: Path, release: Path | None) -> None:
    _write_atomic(signal_file, str(os.getpid()))
    while release is None or not release.exists():
        time.sleep(0.02)  # the parent kills or releases this process


def _trace(path: Path, name: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": name, "at": time.time()}) + "\n")


def _is_lock(statement: str) -> bool:
    # PostgreSQL: the practice's advisory lock. SQLite: BEGIN IMMEDIATE takes the write lock.
    return "pg_advisory_xact_lock" in statement or statement.strip().upper() == "BEGIN IMMEDIATE"


def _install_hooks(engine, args: argparse.Namespace) -> None:
    release = Path(args.release) if args.release else None
    if args.pause_at == "upsert":
        @event.listens_for(engine, "after_cursor_execute")
        def _after_upsert(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            if statement.lstrip().upper().startswith("INSERT INTO PATIENTS "):
                _pause(Path(args.signal), release)
    elif args.pause_at == "report":
        # The report stage writes through report_file (write_from_store): pause there.
        write_report = report_file.write_report

        def _pause_then_write(document: dict, *problems) -> Path:
            _pause(Path(args.signal), release)
            return write_report(document, *problems)

        report_file.write_report = _pause_then_write
    if args.trace:
        trace = Path(args.trace)

        @event.listens_for(engine, "before_cursor_execute")
        def _locking(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            if _is_lock(statement):
                _trace(trace, "locking")

        @event.listens_for(engine, "after_cursor_execute")
        def _locked(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            if _is_lock(statement):
                _trace(trace, "locked")

        @event.listens_for(engine, "commit")
        def _commit(conn):  # noqa: ANN001
            _trace(trace, "commit")


def run_stage(argv: list[str], env: dict[str, str], cwd: str, log_dir: str) -> None:
    """A stage process's entry: its own environment, working directory and output files."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(Path(log_dir) / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(target, fd)
        os.close(target)
    main(argv)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["extract", "validate", "transform", "approval", "load", "report"])
    parser.add_argument("--store", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--import-id")
    parser.add_argument("--practice")
    parser.add_argument("--export-file")
    parser.add_argument("--exported-on")
    parser.add_argument("--run-id")
    parser.add_argument("--pause-at", choices=["upsert", "report"])
    parser.add_argument("--signal")
    parser.add_argument("--release")
    parser.add_argument("--start-after")
    parser.add_argument("--trace")
    parser.add_argument("--die", action="store_true")
    args = parser.parse_args(argv)

    engine = records.open_store(args.store)
    _install_hooks(engine, args)
    if args.start_after:
        while not Path(args.start_after).exists():
            time.sleep(0.02)  # the parent's go
    if args.stage == "extract":
        result = {"import_ids": extract_exports(
            engine, args.practice, run_info(args.run_id), export_file=args.export_file,
            exported_on=date.fromisoformat(args.exported_on or EXPORTED_ON.isoformat()))}
    else:
        result = pipeline.run_stage(engine, args.stage, args.import_id)
    _write_atomic(Path(args.out), json.dumps(result, default=str))
    if args.die:
        os.kill(os.getpid(), signal.SIGKILL)
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1:])
