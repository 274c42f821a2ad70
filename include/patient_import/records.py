"""The import records in the store: registration, progress, final status and queries."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.patient_import import audit, storage
from include.patient_import import problems as p
from include.patient_import.practices import Practice, load_practices
from include.patient_import.problems import PROBLEM_COLUMNS
from include.patient_import.store import (
    Import,
    ImportProblem,
    ImportProblemCount,
    create_store_engine,
    migrate,
    streamed_rows,
)
from include.patient_import.store import Practice as PracticeRow

if TYPE_CHECKING:
    from include.patient_import.problem_table import ProblemTable

_IMPORTS = Import.__table__
_PROBLEMS = ImportProblem.__table__
_COUNTS = ImportProblemCount.__table__
# The store's column for each of the report's problem keys.
_PROBLEM_COLUMNS = {"row": "row_number", "account_number": "account_number", "field": "field",
                    "code": "code", "severity": "severity", "message": "message"}
_STREAM_BATCH = 10_000


def now() -> datetime:
    return datetime.now(timezone.utc)


def open_store(url: str | None = None, *, prepare: bool = False) -> Engine:
    """The store's engine (`url`: a SQLAlchemy URL; the embedded default when None); with
    `prepare`, migrate it to the newest revision and sync the practice registry into it (what
    plan_imports does once per run: the one owner of migrations outside the deployment's init)."""
    engine = create_store_engine(url)
    if prepare:
        migrate(engine)
        sync_practices(engine, load_practices())
    return engine


def sync_practices(engine: Engine, practices: dict[str, Practice]) -> None:
    """Keep the store's practice rows in step with the registry (patients reference them)."""
    table = PracticeRow.__table__
    with engine.begin() as conn:
        known = set(conn.execute(sa.select(table.c.id)).scalars())
        for practice in practices.values():
            values = {"name": practice.name, "capacity": practice.capacity,
                      "systems": ",".join(sorted(practice.systems)), "updated_at": now()}
            if practice.id in known:
                conn.execute(sa.update(table).where(table.c.id == practice.id).values(**values))
            else:
                conn.execute(sa.insert(table).values(id=practice.id, **values))


def register_import(engine: Engine, *, triggered_by: str | None = None, **values) -> None:
    """Record an import as `processing`, and in the audit who triggered its run (SPEC §8; detail:
    the DAG run id); a retried extract finds it and leaves it as it is."""
    with engine.begin() as conn:
        exists = conn.execute(sa.select(_IMPORTS.c.id).where(_IMPORTS.c.id == values["id"])).first()
        if exists is None:
            conn.execute(sa.insert(_IMPORTS).values(status=p.Status.PROCESSING.value, started_at=now(), **values))
            audit.record(conn, values["id"], audit.TRIGGERED, triggered_by, values.get("dag_run_id"))


def get_import(conn: Connection, import_id: str) -> dict | None:
    row = conn.execute(sa.select(_IMPORTS).where(_IMPORTS.c.id == import_id)).mappings().first()
    return dict(row) if row else None


def update_import(engine: Engine, import_id: str, **values) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(_IMPORTS).where(_IMPORTS.c.id == import_id).values(**values))


def withdraw_rejected_rows(engine: Engine, import_id: str) -> None:
    """Remove an import's rejected-rows file and its record: for an import rejected as a whole at
    approval (SPEC §8), whose rows to fix are the whole file, not the few with row errors that
    transform listed before the approval. Safe to run again."""
    with engine.connect() as conn:
        record = get_import(conn, import_id)
    if record and record["rejected_rows_path"]:
        storage.path_of(record["rejected_rows_path"]).unlink(missing_ok=True)
        update_import(engine, import_id, rejected_rows_path=None)


def set_details(engine: Engine, import_id: str, details: dict) -> None:
    update_import(engine, import_id, details=json.dumps(details, sort_keys=True))


def approval_of(conn: Connection, import_id: str) -> dict | None:
    """The import's recorded approval (`approval.py`), None when none was decided (SPEC §8)."""
    text = conn.execute(sa.select(_IMPORTS.c.approval).where(_IMPORTS.c.id == import_id)).scalar()
    return _decision(text)


def decision_of(record: Mapping[str, Any] | None) -> dict | None:
    """The approval decision an `imports` row (`get_import`) records, parsed from its JSON text;
    None when none was decided (SPEC §8)."""
    return _decision(record.get("approval") if record else None)


def _decision(text: str | None) -> dict | None:
    return json.loads(text) if text else None


def set_approval(engine: Engine | Connection, import_id: str, approval: dict) -> None:
    """Record the import's approval; a Connection writes in the caller's transaction (the answer
    with its audit entry, `approval.record_answers`), an Engine in a transaction of its own."""
    text = json.dumps(approval, sort_keys=True)
    if isinstance(engine, Connection):
        engine.execute(sa.update(_IMPORTS).where(_IMPORTS.c.id == import_id).values(approval=text))
        return
    update_import(engine, import_id, approval=text)


def approval_summary(stored: str | dict | None) -> dict | None:
    """What the import's report and its Import Results page say of its approval (SPEC §8), from the
    decision and answer `approval.py` records in `imports.approval` (its JSON text, or that parsed):

        {"required": bool, "reasons": [{"code", "message"}], "answer": a `rules.Answer` value or None,
         "by": the approver's user name or None, "answered_at": ISO time or None,
         "why_not": why it did not wait, or None}

    Reason codes and messages are counts, shares and field names, never a patient value. `answer`
    None on a required approval: nobody answered before the load ran (it was rejected
    `not_approved`). None when no decision was recorded (an import from before approval existed,
    or one that ended before `check_approval`).
    """
    decision = _decision(stored) if isinstance(stored, str) else stored
    if not isinstance(decision, dict):
        return None
    required = bool(decision.get("waits"))
    return {"required": required,
            "reasons": [{"code": r.get("code"), "message": r.get("message")} for r in decision.get("reasons") or []],
            "answer": decision.get("answer") if required else None,
            "by": decision.get("by") if required else None,
            "answered_at": decision.get("answered_at") if required else None,
            "why_not": None if required else decision.get("why_not") or "under every threshold"}


def last_completed_columns(conn: Connection, practice_id: str, before: str) -> tuple[str, list[str]] | None:
    """The id and export columns (canonical field names) of the practice's newest completed,
    loaded, non-dry-run import other than `before` that recorded them; None when there is none."""
    done = (p.Status.COMPLETED.value, p.Status.COMPLETED_WITH_ERRORS.value)
    row = conn.execute(sa.select(_IMPORTS.c.id, _IMPORTS.c.export_columns).where(
        _IMPORTS.c.practice_id == practice_id, _IMPORTS.c.id != before, _IMPORTS.c.status.in_(done),
        _IMPORTS.c.dry_run.is_(False), _IMPORTS.c.export_columns.is_not(None))
        .order_by(_IMPORTS.c.loaded_at.desc(), _IMPORTS.c.id.desc()).limit(1)).first()
    return (row.id, json.loads(row.export_columns)) if row else None


def _problems_in_order(import_id: str) -> sa.Select:
    return (sa.select(*[_PROBLEMS.c[_PROBLEM_COLUMNS[name]].label(name) for name in PROBLEM_COLUMNS])
            .where(_PROBLEMS.c.import_id == import_id).order_by(_PROBLEMS.c.position, _PROBLEMS.c.id))


def import_problems(conn: Connection, import_id: str) -> ProblemTable:
    """The problems the store lists for an import, in report order, with the counts of the rest."""
    # Here, not at the top: planning and extract read the records without paying for pandas.
    import pandas as pd

    from include.patient_import.problem_table import ProblemTable

    rows = conn.execute(_problems_in_order(import_id)).all()
    listed = pd.DataFrame({name: pd.Series(values, dtype="object") for name, values in
                           zip(PROBLEM_COLUMNS, zip(*rows) if rows else ((),) * len(PROBLEM_COLUMNS))})
    omitted: dict[str, list] = {"code": [], "field": [], "severity": [], "count": []}
    for item in problem_counts(conn, import_id):
        if item["total"] > item["listed"]:
            for key in ("code", "field", "severity"):
                omitted[key].append(item[key])
            omitted["count"].append(item["total"] - item["listed"])
    return ProblemTable.from_omitted_columns(listed, omitted)


def iter_problems(conn: Connection, import_id: str) -> Iterator[dict]:
    """The import's listed problems in report order, as the report's dicts, read in batches (a
    server-side cursor on PostgreSQL): memory stays flat however many there are (SPEC §7)."""
    for row in streamed_rows(conn, _problems_in_order(import_id), _STREAM_BATCH):
        yield dict(zip(PROBLEM_COLUMNS, row))


def first_file_error(conn: Connection, import_id: str) -> dict | None:
    """The import's first file-level error (`row` null) in report order, as the report's dict; None
    when there is none. What a failed run's message names (code and message, SPEC §7)."""
    rows = _problems_in_order(import_id).where(
        _PROBLEMS.c[_PROBLEM_COLUMNS["row"]].is_(None),
        _PROBLEMS.c[_PROBLEM_COLUMNS["severity"]] == str(p.Severity.ERROR)).limit(1)
    found = conn.execute(rows).first()
    return dict(zip(PROBLEM_COLUMNS, found)) if found else None


def problem_counts(conn: Connection, import_id: str) -> list[dict]:
    """The report's `problem_counts`: per code and field, `listed` and `total`, by code then field."""
    rows = conn.execute(sa.select(_COUNTS.c.code, _COUNTS.c.field, _COUNTS.c.severity,
                                  _COUNTS.c.listed, _COUNTS.c.total)
                        .where(_COUNTS.c.import_id == import_id)).all()
    rows = sorted(rows, key=lambda r: (r.code, r.field or ""))
    return [{"code": r.code, "field": r.field, "severity": r.severity, "listed": int(r.listed),
             "total": int(r.total)} for r in rows]


def imports_of_archive(conn: Connection, practice_id: str) -> dict[str, list[dict]]:
    """Every import of the practice by the archived original it read."""
    rows = conn.execute(sa.select(_IMPORTS.c.id, _IMPORTS.c.practice_id, _IMPORTS.c.archive_path,
                                  _IMPORTS.c.dag_run_id, _IMPORTS.c.map_index, _IMPORTS.c.status,
                                  _IMPORTS.c.dry_run, _IMPORTS.c.quarantine_path,
                                  _IMPORTS.c.exported_on_source, _IMPORTS.c.started_at)
                        .where(_IMPORTS.c.practice_id == practice_id)).mappings().all()
    by_path: dict[str, list[dict]] = {}
    for row in rows:
        if row["archive_path"]:
            by_path.setdefault(row["archive_path"], []).append(dict(row))
    return by_path


def earlier_imports_of_file(conn: Connection, record: dict, limit: int = 5) -> list[dict]:
    """The practice's other imports of the same file (same sha256) started before this one, newest
    first, at most `limit`: [{"import_id", "imported_at" (ISO, when it finished, else started),
    "exported_on", "status", "dry_run"}]. Ids, dates and statuses only."""
    rows = conn.execute(sa.select(_IMPORTS.c.id, _IMPORTS.c.started_at, _IMPORTS.c.finished_at,
                                  _IMPORTS.c.exported_on, _IMPORTS.c.status, _IMPORTS.c.dry_run)
                        .where(_IMPORTS.c.practice_id == record["practice_id"],
                               _IMPORTS.c.export_sha256 == record["export_sha256"],
                               _IMPORTS.c.id != record["id"],
                               _IMPORTS.c.started_at <= record["started_at"])
                        .order_by(_IMPORTS.c.started_at.desc(), _IMPORTS.c.id.desc()).limit(limit)).mappings().all()
    return [{"import_id": r["id"], "imported_at": (r["finished_at"] or r["started_at"]).isoformat(),
             "exported_on": r["exported_on"].isoformat() if r["exported_on"] else None,
             "status": r["status"], "dry_run": bool(r["dry_run"])} for r in rows]


def refused_as_too_large(conn: Connection, practice_id: str, name: str, size: int) -> bool:
    """Whether an inbox file of this name and size was already taken and left unarchived: only a
    file over the size limit is (SPEC §7), so it is not taken again."""
    found = conn.execute(sa.select(_IMPORTS.c.id).where(
        _IMPORTS.c.practice_id == practice_id, _IMPORTS.c.export_name == name, _IMPORTS.c.export_bytes == size,
        _IMPORTS.c.archive_path.is_(None), _IMPORTS.c.dry_run.is_(False)).limit(1)).first()
    return found is not None


def fail_abandoned_imports(engine: Engine, *, current_run_id: str, older_than: timedelta) -> list[str]:
    """Mark `failed` the imports a crash left `processing` and nobody re-ran (SPEC §4)."""
    cutoff = now() - older_than
    with engine.begin() as conn:
        ids = list(conn.execute(sa.select(_IMPORTS.c.id).where(
            _IMPORTS.c.status == p.Status.PROCESSING.value,
            _IMPORTS.c.dag_run_id != current_run_id,
            _IMPORTS.c.started_at < cutoff)).scalars())
        if ids:
            conn.execute(sa.update(_IMPORTS).where(_IMPORTS.c.id.in_(ids)).values(
                status=p.Status.FAILED.value, finished_at=now()))
    return ids


def newest_export_dates(conn: Connection) -> dict[str, date]:
    """Each practice's newest export date among its non-dry-run imports."""
    rows = conn.execute(sa.select(_IMPORTS.c.practice_id, sa.func.max(_IMPORTS.c.exported_on))
                        .where(_IMPORTS.c.dry_run.is_(False))
                        .group_by(_IMPORTS.c.practice_id)).all()
    return {practice_id: newest for practice_id, newest in rows}


def replace_problem(engine: Engine, import_id: str, problem: p.Problem) -> None:
    """Record a file-level problem once, however often the stage that finds it runs.

    It is placed before the problems already listed (file problems come first, SPEC §4), or,
    with a row, after them.
    """
    table = _PROBLEMS
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.import_id == import_id, table.c.code == problem.code))
        conn.execute(sa.delete(_COUNTS).where(_COUNTS.c.import_id == import_id, _COUNTS.c.code == problem.code))
        low, high = conn.execute(sa.select(sa.func.min(table.c.position), sa.func.max(table.c.position))
                                 .where(table.c.import_id == import_id)).one()
        position = (0 if low is None else low - 1) if problem.row is None else (0 if high is None else high + 1)
        conn.execute(sa.insert(table).values(
            import_id=import_id, row_number=problem.row, account_number=problem.account_number,
            field=problem.field, code=problem.code, severity=problem.severity, message=problem.message,
            position=position))
        conn.execute(sa.insert(_COUNTS).values(import_id=import_id, code=problem.code, field=problem.field,
                                               severity=problem.severity, listed=1, total=1))
