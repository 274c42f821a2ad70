"""Ours, in process: extract → read → normalise → validate (the real GX suites) → transform →
load → report, each stage timed, through the same stage functions the DAG's tasks call.

Runs in the worker process the parent starts for it; the environment (PATIENT_IMPORT_HOME,
PATIENT_IMPORT_PRACTICES) is set by the parent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
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

    from include.patient_import import (  # noqa: F401
        changes,
        gx_runner,
        normalize,
        patients,
        pipeline,
        reader,
        records,
        transform,
        validate,
    )
    from include.patient_import import load as load_module

    imports = time.perf_counter() - started
    timer = StageTimer()
    timer.wrap(reader, "read_export", "read")
    timer.wrap(normalize, "normalize_export", "normalise")
    timer.wrap(gx_runner.SuiteRunner, "run", "gx_suites")
    timer.wrap(gx_runner.SuiteRunner, "build_docs", "gx_docs")
    # The load's parts (`LOAD_PARTS`), each timed apart from the stage: what is left under "load"
    # is reading the validated blocks and the load's own bookkeeping. (Approval's own decision, for
    # a practice with an approval threshold, would count under "decide" too; the bench's has none.)
    timer.wrap(patients, "decide_against_store", "decide")
    timer.wrap(load_module._PatientWrite, "stage", "staging")
    timer.wrap(load_module._PatientWrite, "apply", "write")
    for log in ("start_log", "log_before", "log_after", "log_seen"):
        timer.wrap(changes, log, "change_log")
    timer.wrap(load_module, "_record_outcomes", "outcomes")

    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    begin = time.perf_counter()
    engine = records.open_store(url)
    run = pipeline.RunInfo(dag_id="bench", run_id=f"bench_{uuid.uuid4().hex[:12]}")
    peak_mb = {"start": _peak_mb()}  # the process's peak RSS once each stage is done
    stage_peak_mb: dict[str, float] = {}  # each stage's own peak RSS (`_stage_peak_reset`)
    resetting = 0.0  # seconds spent resetting the peak, taken out of the run's

    @contextmanager
    def measured(stage: str):
        nonlocal resetting
        reset_started = time.perf_counter()
        counted = _stage_peak_reset()
        resetting += time.perf_counter() - reset_started
        with timer.stage(stage):
            yield
        if counted:
            stage_peak_mb[stage] = _high_water_mb()
        if stage != "extract":
            peak_mb[stage] = _peak_mb()

    [done] = pipeline.run_import(engine, PRACTICE_ID, run, export_file=export,
                                 exported_on=date.fromisoformat(exported_on), each_stage=measured)
    counts, status = done["load"]["counts"], done["load"]["status"]
    seconds = time.perf_counter() - begin - resetting
    if profiler is not None:
        profiler.stop()
        Path(profile).write_text(profiler.output_text(unicode=False, color=False, show_all=False),
                                 encoding="utf-8")
        profiler.write_html(str(Path(profile).with_suffix(".html")))
    engine.dispose()
    return {"seconds": seconds, "imports_seconds": imports, "stages": timer.seconds,
            "counts": counts, "status": status, "peak_rss_mb_after": peak_mb, "stage_peak_rss_mb": stage_peak_mb}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stage_peak_reset() -> bool:
    """Start a stage's own peak RSS: give the memory earlier stages freed back to the system (glibc
    and Arrow's pool keep it otherwise, and a task process would not have it), then reset the
    kernel's high-water mark (VmHWM) to the RSS now (Linux: writing 5 to /proc/self/clear_refs). A
    DAG runs each stage in a task process of its own; this is as near as one process comes. False
    where it cannot."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    libc_name = ctypes.util.find_library("c")
    try:
        if libc_name:
            ctypes.CDLL(libc_name).malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except (OSError, AttributeError):
        return False
    return True


def _high_water_mb() -> float:
    """The RSS high-water mark since the last `_stage_peak_reset` (VmHWM), in MB."""
    with open("/proc/self/status") as handle:
        return int(re.search(r"VmHWM:\s+(\d+) kB", handle.read()).group(1)) / 1024
