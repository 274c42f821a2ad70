"""A terminal summary of one DAG run's imports, read from their reports in the store."""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from include.patient_import.problems import Severity, Status
from include.patient_import.storage import path_of
from include.patient_import.store import Import
from include.patient_import.untrusted import printable

log = logging.getLogger(__name__)


def run_reports(engine, run_id: str) -> list[dict]:
    table = Import.__table__
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.report_path).where(table.c.dag_run_id == run_id)
                            .order_by(table.c.practice_id, table.c.exported_on)).scalars().all()
    return [json.loads(path_of(path).read_text(encoding="utf-8")) | {"report_path": path} for path in rows if path]


# How the summary names where the export date came from (the report's `export.exported_on_source`).
_DATE_SOURCES = {"conf": " (date given)", "file_name": " (date from the file name)",
                 "landed": " (date the file landed)"}


def format_report(report: dict) -> str:
    counts = report["counts"]
    export = report["export"]
    source = _DATE_SOURCES.get(export.get("exported_on_source") or "", "")
    lines = [
        f"import {report['import_id']}  practice {report['practice_id']}  "
        f"exported {export['exported_on']}{source}  status {report['status'].upper()}"
        + ("  (dry run)" if report["dry_run"] else ""),
        "  " + "  ".join(f"{k} {v}" for k, v in counts.items()),
    ]
    errors = [x for x in report["problems"] if x["row"] is None and x["severity"] == Severity.ERROR]
    for problem in errors:
        lines.append(f"  {problem['code']}: {problem['message']}")
    for problem in report["problems"]:
        if problem["row"] is None and problem["severity"] == "warning":
            lines.append(f"  WARNING {problem['code']}: {problem['message']}")
    earlier = export.get("already_imported") or []
    if earlier:
        lines.append(f"  WARNING the same file (sha256 {export['sha256'][:12]}…) was already imported: "
                     + "; ".join(f"{e['import_id']} on {e['imported_at'][:16].replace('T', ' ')} UTC, {e['status']}"
                                 + (" (dry run)" if e.get("dry_run") else "") for e in earlier))
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
    from include.patient_import.records import open_store

    engine = engine or open_store()
    reports = run_reports(engine, run_id)
    print(f"\nDAG run {run_id}: {state}")
    if not reports:
        print("no export was waiting: nothing imported")
    for report in reports:
        print(format_report(report))
    bad = any(r["status"] in (Status.REJECTED.value, Status.FAILED.value) for r in reports)
    return 1 if bad or state.endswith("failed") else 0


def log_stage_totals(stage: str, practice_id: str, summaries: list[dict]) -> None:
    """One log line of a task's imports together: how many, their statuses and summed counts, as
    returned by `load.load_patients` / `report.report_import` (ids and counts only)."""
    statuses: dict[str, int] = {}
    totals: dict[str, int] = {}
    for summary in summaries:
        statuses[summary["status"]] = statuses.get(summary["status"], 0) + 1
        for key, value in (summary.get("counts") or {}).items():
            totals[key] = totals.get(key, 0) + int(value)
    log.info("%s %s: %d imports%s%s", stage, practice_id, len(summaries),
             "; " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) if statuses else "",
             "; " + ", ".join(f"{v} {k}" for k, v in totals.items()) if totals else "")
