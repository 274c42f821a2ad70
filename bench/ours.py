"""Ours, in process: extract → read → normalise → validate (the real GX suites) → transform →
load → report, each stage timed, through the same stage functions the DAG's tasks call.

Runs in the worker process the parent starts for it; the environment (PATIENT_IMPORT_HOME,
PATIENT_IMPORT_PRACTICES) is set by the parent.
"""

from __future__ import annotations

import resource
import time
import uuid
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from bench.common import PRACTICE_ID, StageTimer


def prepare_store(url: str) -> dict:
    """Migrate the store and sync the bench practice into it (not measured)."""
    from include.patient_import.records import open_store

    open_store(url, prepare=True).dispose()
    return {}


def run_ours(url: str, export: str, exported_on: str, profile: str | None = None) -> dict:
    started = time.perf_counter()
    # Imported before the clock starts: an Airflow task pays them once per process, and the
    # Airflow figures measure them.
    import great_expectations  # noqa: F401

    from include.patient_import import gx_runner, normalize, pipeline, reader, records, transform, validate  # noqa: F401
    from include.patient_import import load as load_module  # noqa: F401

    imports = time.perf_counter() - started
    timer = StageTimer()
    timer.wrap(reader, "read_export", "read")
    timer.wrap(normalize, "normalize_export", "normalise")
    timer.wrap(gx_runner.SuiteRunner, "run", "gx_suites")
    timer.wrap(gx_runner.SuiteRunner, "build_docs", "gx_docs")

    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    begin = time.perf_counter()
    engine = records.open_store(url)
    run = pipeline.RunInfo(dag_id="bench", run_id=f"bench_{uuid.uuid4().hex[:12]}")
    peak_mb = {"start": _peak_mb()}  # the process's peak RSS once each stage is done

    @contextmanager
    def measured(stage: str):
        with timer.stage(stage):
            yield
        if stage != "extract":
            peak_mb[stage] = _peak_mb()

    [done] = pipeline.run_import(engine, PRACTICE_ID, run, export_file=export,
                                 exported_on=date.fromisoformat(exported_on), each_stage=measured)
    counts, status = done["load"]["counts"], done["load"]["status"]
    seconds = time.perf_counter() - begin
    if profiler is not None:
        profiler.stop()
        Path(profile).write_text(profiler.output_text(unicode=False, color=False, show_all=False),
                                 encoding="utf-8")
        profiler.write_html(str(Path(profile).with_suffix(".html")))
    engine.dispose()
    return {"seconds": seconds, "imports_seconds": imports, "stages": timer.seconds,
            "counts": counts, "status": status, "peak_rss_mb_after": peak_mb}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
