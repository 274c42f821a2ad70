"""Problem volume figures (issue 11): the Import Results page of a huge import, and the report stage.

    python scripts/problem_volume.py [--problems 900000] [--rows 250000] [--errors] [--skip-page] [--skip-stages]

Prints figures; asserts nothing (a benchmark, not a test). Each part runs in processes of its own,
in a temporary home with a SQLite store:

- **page**: an import with `--problems` problems (two errors per row, written straight into the
  store's tables), then the Import Results detail page and its JSON API through FastAPI's
  TestClient, as a viewer: seconds and bytes per request, and the serving process's peak RSS.
- **stages**: an export of `--rows` rows with nine invalid optional values each (every warning
  code the normaliser has), imported stage by stage, each stage in a new process as an Airflow
  worker runs it: seconds and peak RSS per stage, and the report's size, problems listed and
  `problem_counts`. With `--errors` every row also lacks its last name: as many errors as rows,
  all listed (the file is then rejected, too many rejected rows), streamed to the store and report.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "plugins"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

PRACTICE = "volume_clinic"
IMPORT_ID = "volume_clinic_20261120_volume"
REGISTRY = f"""practices:
  - id: {PRACTICE}
    name: Volume Clinic
    capacity: 5000000
    systems: [drip_education]
"""
HEADER = ["Account #", "Last Name", "First Name", "Zip", "Home Phone", "Cell Phone", "Email", "State",
          "Birth Date", "Sex", "Status", "Last Visit"]
# One invalid value for each optional field the normaliser checks: nine warnings per row.
INVALID = ["12", "555", "12", "not-an-email", "ZZ", "13/45/1980", "Q", "maybe", "99/99/2020"]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _environment(home: Path) -> dict[str, str]:
    registry = home / "practices.yml"
    registry.write_text(REGISTRY, encoding="utf-8")
    env = {**os.environ, "PATIENT_IMPORT_HOME": str(home), "PATIENT_IMPORT_PRACTICES": str(registry),
           "PATIENT_IMPORT_EXPORT_ROOTS": str(home / "exports"), "AIRFLOW_HOME": str(home / "airflow"),
           "AIRFLOW_CONN_PATIENT_STORE": json.dumps({"conn_type": "sqlite", "host": str(home / "store.db")}),
           "PYTHONWARNINGS": "ignore"}
    env.pop("PATIENT_IMPORT_STORAGE", None)
    return env


def _child(env: dict[str, str], *args: str) -> dict:
    """Run this script's `args` in a new process; its last stdout line is its JSON result."""
    done = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- page

def populate(problem_count: int) -> dict:
    """An import with `problem_count` problems, written with the columns the store has."""
    import sqlalchemy as sa

    from include.patient_import import records
    from include.patient_import.records import open_store

    started = time.perf_counter()
    database = Path(os.environ["PATIENT_IMPORT_HOME"]) / "store.db"
    engine = open_store(f"sqlite:///{database}", prepare=True)
    from datetime import date
    records.register_import(engine, id=IMPORT_ID, practice_id=PRACTICE, dag_run_id="manual__volume", map_index=0,
                            run_type="manual", export_name="volume.csv", export_sha256="0" * 64,
                            export_bytes=0, archive_path=None, exported_on=date(2026, 11, 20), dry_run=False)
    records.update_import(engine, IMPORT_ID, status="completed_with_errors", read=problem_count // 2,
                          rejected=problem_count // 2)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("import_problems")}
        has_counts = sa.inspect(conn).has_table("import_problem_counts")
    engine.dispose()
    positioned = "position" in columns
    fields = (("last_name", "Last Name"), ("first_name", "First Name"))

    def problems():
        for i in range(problem_count):
            field, header = fields[i % 2]
            row = (IMPORT_ID, i // 2 + 2, str(10_000 + i // 2), field, "missing_required_field", "error",
                   f"{header} is required")
            yield (*row, i) if positioned else row

    names = "import_id, row_number, account_number, field, code, severity, message" + (
        ", position" if positioned else "")
    with sqlite3.connect(database) as db:
        db.executemany(f"INSERT INTO import_problems ({names}) VALUES ({', '.join('?' * len(names.split(',')))})",
                       problems())
        if has_counts:
            for field, _ in fields:
                db.execute("INSERT INTO import_problem_counts (import_id, code, field, severity, listed, total) "
                           "VALUES (?, 'missing_required_field', ?, 'error', ?, ?)",
                           (IMPORT_ID, field, problem_count // 2, problem_count // 2))
    return {"problems": problem_count, "seconds": round(time.perf_counter() - started, 1)}


def serve() -> dict:
    """The detail page and its JSON API, through the app's own routes (auth stubbed as a viewer)."""
    import import_results.app as results
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    results._may_run = lambda user: False  # a viewer: no auth manager needed for the page
    app = FastAPI()
    app.mount("/import-results", results.app)
    results.app.dependency_overrides[results._read_access] = lambda: None
    results.app.dependency_overrides[get_user] = lambda: None
    base = f"/import-results/imports/{IMPORT_ID}"
    last_page = -(-int(os.environ["VOLUME_PROBLEMS"]) // 200)
    requests = [
        ("page, first problems page", base, {}),
        ("page, last problems page", base, {"problems_page": last_page}),
        ("page, severity=error", base, {"severity": "error"}),
        ("page, code=missing_required_field", base, {"code": "missing_required_field"}),
        ("page, account search", base, {"account": "#00123456"}),
        ("api, first page", f"/import-results/api/imports/{IMPORT_ID}", {}),
        ("api, last page", f"/import-results/api/imports/{IMPORT_ID}", {"problems_page": last_page}),
        ("api, code + account", f"/import-results/api/imports/{IMPORT_ID}",
         {"code": "missing_required_field", "account": "123456"}),
    ]
    figures = []
    with TestClient(app) as client:
        client.get(f"/import-results/api/imports/{IMPORT_ID}", params={"problems_per_page": 1})  # warm-up
        for label, url, params in requests:
            started = time.perf_counter()
            response = client.get(url, params=params)
            figures.append({"request": label, "status": response.status_code,
                            "seconds": round(time.perf_counter() - started, 3), "bytes": len(response.content)})
    return {"requests": figures, "peak_rss_mb": round(_peak_mb())}


# ---------------------------------------------------------------- stages

def write_export(path: Path, rows: int, errors: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(HEADER) + "\r\n")
        tail = "," + ",".join(INVALID) + "\r\n"
        for i in range(rows):
            handle.write(f"{100_000 + i},{'' if errors else f'Last{i}'},First{i}{tail}")


def stage(name: str, export: str) -> dict:
    from datetime import date

    from include.patient_import import pipeline, records

    engine = records.open_store(prepare=name == "extract")
    started = time.perf_counter()
    if name == "extract":
        run = pipeline.RunInfo(dag_id="patient_import", run_id="manual__volume", map_index=0)
        [import_id] = pipeline.extract_exports(engine, PRACTICE, run, export_file=export,
                                               exported_on=date(2026, 11, 20))
        Path(os.environ["PATIENT_IMPORT_HOME"], "import_id").write_text(import_id)
        result = {"import_id": import_id}
    else:
        import_id = Path(os.environ["PATIENT_IMPORT_HOME"], "import_id").read_text()
        result = pipeline.run_stage(engine, name, import_id)
    return {"stage": name, "seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(_peak_mb()),
            "result": result}


def report_figures(summary: dict) -> dict:
    path = Path(summary["result"]["report"])
    document = json.loads(path.read_text(encoding="utf-8"))
    return {"report_mb": round(path.stat().st_size / 2**20, 1), "problems_listed": len(document["problems"]),
            "counts": document["counts"], "problem_counts": document.get("problem_counts")}


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=900_000)
    parser.add_argument("--rows", type=int, default=250_000)
    parser.add_argument("--errors", action="store_true", help="every row also misses its last name")
    parser.add_argument("--skip-page", action="store_true")
    parser.add_argument("--skip-stages", action="store_true")
    args = parser.parse_args(argv)

    if not args.skip_page:
        with tempfile.TemporaryDirectory(prefix="problem_volume_") as tmp:
            env = _environment(Path(tmp)) | {"VOLUME_PROBLEMS": str(args.problems)}
            made = _child(env, "populate", str(args.problems))
            print(f"store: {made['problems']:,} problems written in {made['seconds']} s")
            served = _child(env, "serve")
            for item in served["requests"]:
                print(f"  {item['request']:<36} {item['status']}  {item['seconds']:>8.3f} s"
                      f"  {item['bytes']:>12,} bytes")
            print(f"  serving process peak RSS: {served['peak_rss_mb']:,} MB")

    if not args.skip_stages:
        with tempfile.TemporaryDirectory(prefix="problem_volume_") as tmp:
            env = _environment(Path(tmp))
            export = Path(tmp) / "exports" / "volume_20261120.csv"
            write_export(export, args.rows, args.errors)
            print(f"export: {args.rows:,} rows x {len(INVALID)} invalid optional values"
                  f"{' and a missing last name' if args.errors else ''}, {export.stat().st_size / 2**20:.1f} MB")
            summary = None
            for name in ("extract", "validate", "transform", "load", "report"):
                summary = _child(env, "stage", name, str(export))
                print(f"  {name:<10} {summary['seconds']:>7.1f} s   peak RSS {summary['peak_rss_mb']:>6,} MB")
            figures = report_figures(summary)
            print(f"  report: {figures['report_mb']} MB, {figures['problems_listed']:,} problems listed, "
                  f"counts {figures['counts']}")
            for item in figures["problem_counts"] or []:
                print(f"    {item['code']:<28} {item['field'] or '-':<14} listed {item['listed']:>9,} "
                      f"of {item['total']:>9,}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("populate", "serve", "stage"):
        import logging
        import warnings

        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        command, rest = sys.argv[1], sys.argv[2:]
        if command == "populate":
            out = populate(int(rest[0]))
        elif command == "serve":
            out = serve()
        else:
            out = stage(rest[0], rest[1])
        print(json.dumps(out, default=str))
        sys.exit(0)
    sys.exit(main())
