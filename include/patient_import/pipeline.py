"""One practice's imports from start to end: extract, then per import validate → transform → load,
and the report whatever happened before it.

The DAG runs each stage as its own task (`dags/patient_import.py`); everything else that runs an
import in one process — the tests, the fault children, the bench, the reliability figures — runs
it through `run_import` here, so the sequence is written once. Every stage takes the store's engine
and an import id, reads what the stage before it left in staging (`staging.py`), and is safe to run
again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import date

from sqlalchemy.engine import Engine

from include.patient_import.approval import assess_import
from include.patient_import.extract import RunInfo, extract_exports
from include.patient_import.load import load_patients
from include.patient_import.report import report_import
from include.patient_import.transform import transform_import
from include.patient_import.validate import validate_import

# The stages after extract, in order; the report runs after them whatever they did.
STAGES: dict[str, Callable[[Engine, str], dict]] = {
    "validate": validate_import,
    "transform": transform_import,
    # In one process nobody can answer: an import that waits is loaded as not approved (SPEC §8).
    "approval": assess_import,
    "load": load_patients,
}

# A context each stage runs in, by its name ("extract", "validate", ..., "report"): the bench
# times and measures the stages with one.
StageContext = Callable[[str], AbstractContextManager]


def _no_context(_stage: str) -> AbstractContextManager:
    return nullcontext()


def run_stage(engine: Engine, name: str, import_id: str) -> dict:
    """One stage after extract, by name (a name of `STAGES`, or "report"), as its task runs it:
    what a process that runs a single stage (a fault child, a memory probe) calls."""
    if name == "report":
        return report_import(engine, import_id)
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; the stages are {[*STAGES, 'report']}")
    return STAGES[name](engine, import_id)


def run_stages(engine: Engine, import_id: str, stages: Sequence[str] = tuple(STAGES), *, report: bool = True,
               each_stage: StageContext = _no_context) -> dict[str, dict]:
    """Run `stages` (names of `STAGES`, in order) for one extracted import, then, with `report`, the
    report stage in a `finally`, as the DAG's `report_imports` runs after a failed stage.

    Returns each stage's summary by stage name ("report" included). Raises what a stage raised,
    once the report is written.
    """
    unknown = [name for name in stages if name not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; the stages are {list(STAGES)}")
    done: dict[str, dict] = {}
    try:
        for name in stages:
            with each_stage(name):
                done[name] = STAGES[name](engine, import_id)
    finally:
        if report:
            with each_stage("report"):
                done["report"] = report_import(engine, import_id)
    return done


def run_import(engine: Engine, practice_id: str, run: RunInfo, *, export_file: str | None = None,
               exported_on: date | None = None, dry_run: bool = False, stages: Sequence[str] = tuple(STAGES),
               report: bool = True, each_stage: StageContext = _no_context) -> list[dict]:
    """Extract the practice's exports (the one `export_file`, or what waits for it: see
    `extract.extract_exports`), then run `run_stages` for each import, oldest export first.

    Returns one dict per import: {"import_id": ..., and each stage's summary by stage name}.
    Raises `problems.InputRefused` / `ConfigurationError` from extract before any import exists.
    """
    with each_stage("extract"):
        import_ids = extract_exports(engine, practice_id, run, export_file=export_file, exported_on=exported_on,
                                     dry_run=dry_run)
    return [{"import_id": import_id, **run_stages(engine, import_id, stages, report=report, each_stage=each_stage)}
            for import_id in import_ids]
