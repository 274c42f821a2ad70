"""A terminal summary of one DAG run's imports, read from their reports in the store."""

from __future__ import annotations

import json

import sqlalchemy as sa

from include.patient_import.problems import Severity, Status
from include.patient_import.storage import path_of
from include.patient_import.store import Import
from include.patient_import.untrusted import printable


def run_reports(engine, run_id: str) -> list[dict]:
    table = Import.__table__
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.report_path).where(table.c.dag_run_id == run_id)
                            .order_by(table.c.practice_id, table.c.exported_on)).scalars().all()
    return [json.loads(path_of(path).read_text(encoding="utf-8")) | {"report_path": path} for path in rows if path]


def format_report(report: dict) -> str:
    counts = report["counts"]
    lines = [
        f"import {report['import_id']}  practice {report['practice_id']}  "
        f"exported {report['export']['exported_on']}  status {report['status'].upper()}"
        + ("  (dry run)" if report["dry_run"] else ""),
        "  " + "  ".join(f"{k} {v}" for k, v in counts.items()),
    ]
    errors = [x for x in report["problems"] if x["row"] is None and x["severity"] == Severity.ERROR]
    for problem in errors:
        lines.append(f"  {problem['code']}: {problem['message']}")
    by_code: dict[str, int] = {}
    for problem in report["problems"]:
        if problem["row"] is not None:
            by_code[problem["code"]] = by_code.get(problem["code"], 0) + 1
    for counted in report.get("problem_counts") or []:
        # Warnings beyond the cap are counted, not listed (SPEC §7): they are row problems too.
        if counted["total"] > counted["listed"]:
            by_code[counted["code"]] = by_code.get(counted["code"], 0) + counted["total"] - counted["listed"]
    if by_code:
        lines.append("  row problems: " + ", ".join(f"{c} x{n}" for c, n in sorted(by_code.items())))
    for name, path in report["files"].items():
        if path:
            lines.append(f"  {name}: {printable(path, limit=400)}")
    lines.append(f"  report: {report.get('report_path') or ''}".rstrip())
    return "\n".join(lines)


def print_run_summary(run_id: str, state: str, engine=None) -> int:
    """Print each import of the run; 1 when one was rejected or failed, or the run failed."""
    from include.patient_import.pipeline import open_store

    engine = engine or open_store()
    reports = run_reports(engine, run_id)
    print(f"\nDAG run {run_id}: {state}")
    if not reports:
        print("no export was waiting: nothing imported")
    for report in reports:
        print(format_report(report))
    bad = any(r["status"] in (Status.REJECTED.value, Status.FAILED.value) for r in reports)
    return 1 if bad or state.endswith("failed") else 0
