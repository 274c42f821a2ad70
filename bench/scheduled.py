"""Scheduled runs on the real scheduler (issue #14): `patient_import` over N practices of R rows
each, beside the same-shape empty DAG (`bench/dags/empty_import_shape.py`), with the preloading
LocalExecutor (`include/executors.py`, what `make up` runs) and, as the baseline, Airflow's plain
LocalExecutor.

    python -m bench.scheduled [--practices 1,20] [--rows 1000] [--executors preloading,local]
                              [--without-empty] [--write]

For each executor one `airflow standalone` stack starts in a temporary home (the machine's
sizing, as `make up`), with a registry of max(N) practices. For each N, a fresh export of R
generated patients lands in each of N inboxes; one `patient_import` run imports them all, then one
run of the empty DAG maps over N. A figure is the run's own start-to-end seconds as the API reports
it (scheduling before the start is not in it). It prints one line per figure and, per N, the ratios
patient_import / empty DAG and plain / preloading executor, measured in the same process.
`--without-empty` leaves the empty DAG out (at 200 practices its run alone takes about 20 minutes
on 2 cores): such a figure has seconds and practices per minute per core, no ratio. `--write` adds
the preloading figures to bench/results/latest.json (`scheduled`), each practice count replacing
only its own earlier figure, for `python -m bench.report`, which shows them against the targets
(≤ 2× the empty DAG at 20 practices; 200 practices measured) in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.common import ROOT

EXECUTORS = {"preloading": "include.executors.PreloadingLocalExecutor", "local": "LocalExecutor"}
DAG_FILES = (ROOT / "dags" / "patient_import.py", ROOT / "bench" / "dags" / "empty_import_shape.py")
RESULTS = ROOT / "bench" / "results" / "latest.json"
RUN_TIMEOUT_SECONDS = 3600


def practice_ids(count: int) -> list[str]:
    return [f"bench_p{i:03d}" for i in range(count)]


def registry(count: int) -> str:
    entries = "".join(f"  - id: {p}\n    name: Bench {p}\n    capacity: 1000000\n    systems: [drip_education]\n"
                      for p in practice_ids(count))
    return "practices:\n" + entries


def land_exports(home: Path, count: int, rows: int, round_: int) -> None:
    """A fresh export of `rows` patients in each of the first `count` practices' inboxes."""
    from tools.generator import generate_patients, write_export

    for n, practice in enumerate(practice_ids(count)):
        patients = generate_patients(rows, seed=1000 * round_ + n, first_account=10001 + 100_000 * round_)
        inbox = home / "inbox" / practice
        inbox.mkdir(parents=True, exist_ok=True)
        write_export(patients, inbox / f"Patients {round_}.csv", excel_artefacts=False)


def run_seconds(stack, token: str, dag_id: str, conf: dict) -> float:
    """Trigger `dag_id` with `conf`, wait for the run, return its start-to-end seconds."""
    run = stack.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}, token=token)
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        found = stack.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", token=token)
        if found["state"] in ("success", "failed"):
            if found["state"] != "success":
                raise RuntimeError(f"{dag_id} run {run_id} failed; see {stack.airflow_home / 'logs'}")
            start, end = (datetime.fromisoformat(found[k].replace("Z", "+00:00")) for k in ("start_date", "end_date"))
            return (end - start).total_seconds()
        time.sleep(1)
    raise TimeoutError(f"{dag_id} run {run_id} not done within {RUN_TIMEOUT_SECONDS} s")


def measure(executor: str, practices: list[int], rows: int, with_empty: bool = True) -> dict[int, dict]:
    """{N: {"seconds", "empty_seconds"}} for one executor, on a stack of its own (`empty_seconds`
    None without the empty DAG)."""
    from scripts.airflow_stack import start_stack, unpause

    base = Path(tempfile.mkdtemp(prefix="bench_scheduled_"))
    home, dags = base / "home", base / "dags"
    dags.mkdir(parents=True)
    for dag_file in DAG_FILES:
        shutil.copy(dag_file, dags / dag_file.name)
    (base / "practices.yml").write_text(registry(max(practices)), encoding="utf-8")
    env = {"PATIENT_IMPORT_HOME": str(home), "PATIENT_IMPORT_PRACTICES": str(base / "practices.yml"),
           "PATIENT_IMPORT_SETTLE_SECONDS": "0", "PATIENT_IMPORT_RETRIES": "0",
           "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__EXECUTOR": EXECUTORS[executor],
           "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64"}
    started = time.perf_counter()
    stack = start_stack(home / "airflow", extra_env=env)
    figures: dict[int, dict] = {}
    try:
        token = stack.token()
        unpause(stack, token, ("patient_import", "empty_import_shape"))
        print(f"  {executor}: stack up in {time.perf_counter() - started:.0f} s", flush=True)
        for round_, count in enumerate(practices, start=1):
            land_exports(home, count, rows, round_)
            seconds = run_seconds(stack, token, "patient_import", {})
            empty = run_seconds(stack, token, "empty_import_shape", {"practices": count}) if with_empty else None
            figures[count] = {"seconds": seconds, "empty_seconds": empty}
            print(f"  {executor}: {count} practices × {rows:,} rows: patient_import {seconds:.1f} s"
                  + (f", empty DAG {empty:.1f} s, ratio {seconds / empty:.2f}×" if empty else ""), flush=True)
    finally:
        stack.stop()
        shutil.rmtree(base, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduled", description=__doc__.split("\n")[0])
    parser.add_argument("--practices", default="1,20", help="practice counts, comma-separated (default 1,20)")
    parser.add_argument("--rows", type=int, default=1000, help="patients per export (default 1000)")
    parser.add_argument("--executors", default="preloading,local", help="of: " + ", ".join(EXECUTORS))
    parser.add_argument("--without-empty", action="store_true",
                        help="do not run the same-shape empty DAG (no ratio; saves its run's time)")
    parser.add_argument("--write", action="store_true", help="add the figures to bench/results/latest.json")
    args = parser.parse_args(argv)
    practices = sorted({int(n) for n in args.practices.split(",")})
    executors = [e.strip() for e in args.executors.split(",")]
    if args.write and "preloading" not in executors:
        parser.error("--write records the preloading executor's figures: measure it (--executors preloading,...)")
    cores = os.cpu_count() or 1
    found = {executor: measure(executor, practices, args.rows, not args.without_empty) for executor in executors}
    for count in practices:
        line = []
        for executor, figures in found.items():
            f = figures[count]
            ratio = f"{f['seconds'] / f['empty_seconds']:.2f}× the empty DAG, " if f["empty_seconds"] else ""
            line.append(f"{executor} {f['seconds']:.1f} s ({ratio}"
                        f"{count / (f['seconds'] / 60) / cores:.2f} practices/min/core)")
        if {"preloading", "local"} <= found.keys():
            plain, preloading = found["local"][count]["seconds"], found["preloading"][count]["seconds"]
            line.append(f"plain / preloading executor {plain / preloading:.2f}×")
        print(f"BENCH_SCHEDULED {count} practices: " + "; ".join(line))
    if args.write:
        results = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
        measured_at = datetime.now().astimezone().isoformat(timespec="seconds")
        results["scheduled"] = recorded(results.get("scheduled"), found, executors, args.rows, cores, measured_at)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"written to {RESULTS}; `python -m bench.report` regenerates docs/performance.md")
    return 0


def recorded(previous: dict | None, found: dict[str, dict[int, dict]], executors: list[str], rows: int,
             cores: int, measured_at: str) -> dict:
    """latest.json's `scheduled` after a run: the preloading executor's figure per practice count
    measured now (seconds, the ratio to the empty DAG when it ran, practices per minute per core,
    the plain executor's seconds when it ran, when it was measured), beside the earlier figures of
    the counts not measured now. An earlier run of other rows per practice is not kept."""
    kept = previous.get("practices", {}) if previous and previous.get("rows_per_practice") == rows else {}
    # Figures written before each carried its own date were all measured at the run's.
    practices = {n: {"measured_at": previous.get("measured_at"), **f} for n, f in kept.items()} if previous else {}
    for n, f in found["preloading"].items():
        practices[str(n)] = {
            **f, "ratio": f["seconds"] / f["empty_seconds"] if f["empty_seconds"] else None,
            "practices_per_minute_per_core": n / (f["seconds"] / 60) / cores, "measured_at": measured_at,
            **({"plain_local_executor_seconds": found["local"][n]["seconds"]} if "local" in found else {})}
    return {"rows_per_practice": rows, "cores": cores, "executors": executors, "measured_at": measured_at,
            "practices": dict(sorted(practices.items(), key=lambda kv: int(kv[0])))}


if __name__ == "__main__":
    raise SystemExit(main())
