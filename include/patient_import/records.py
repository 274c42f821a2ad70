"""The import records in the store: registration, progress, final status and queries."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.patient_import import problems as p
from include.patient_import.practices import Practice
from include.patient_import.store import Import, ImportProblem, Practice as PracticeRow

_IMPORTS = Import.__table__


def now() -> datetime:
    return datetime.now(timezone.utc)


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


def register_import(engine: Engine, **values) -> None:
    """Record an import as `processing`; a retried extract finds it and leaves it as it is."""
    with engine.begin() as conn:
        exists = conn.execute(sa.select(_IMPORTS.c.id).where(_IMPORTS.c.id == values["id"])).first()
        if exists is None:
            conn.execute(sa.insert(_IMPORTS).values(status=p.Status.PROCESSING.value, started_at=now(), **values))


def get_import(conn: Connection, import_id: str) -> dict | None:
    row = conn.execute(sa.select(_IMPORTS).where(_IMPORTS.c.id == import_id)).mappings().first()
    return dict(row) if row else None


def update_import(engine: Engine, import_id: str, **values) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(_IMPORTS).where(_IMPORTS.c.id == import_id).values(**values))


def set_details(engine: Engine, import_id: str, details: dict) -> None:
    update_import(engine, import_id, details=json.dumps(details, sort_keys=True))


def import_problems(conn: Connection, import_id: str) -> list[p.Problem]:
    table = ImportProblem.__table__
    rows = conn.execute(sa.select(table).where(table.c.import_id == import_id)).mappings().all()
    return sorted((p.Problem(code=r["code"], message=r["message"], row=r["row_number"],
                             account_number=r["account_number"], field=r["field"], severity=r["severity"])
                   for r in rows), key=p.Problem.sort_key)


def imports_of_archive(conn: Connection, practice_id: str) -> dict[str, list[dict]]:
    """Every import of the practice by the archived original it read."""
    rows = conn.execute(sa.select(_IMPORTS.c.id, _IMPORTS.c.practice_id, _IMPORTS.c.archive_path,
                                  _IMPORTS.c.dag_run_id, _IMPORTS.c.map_index, _IMPORTS.c.status,
                                  _IMPORTS.c.dry_run, _IMPORTS.c.quarantine_path)
                        .where(_IMPORTS.c.practice_id == practice_id)).mappings().all()
    by_path: dict[str, list[dict]] = {}
    for row in rows:
        if row["archive_path"]:
            by_path.setdefault(row["archive_path"], []).append(dict(row))
    return by_path


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
    """Record a file-level problem once, however often the stage that finds it runs."""
    table = ImportProblem.__table__
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.import_id == import_id, table.c.code == problem.code))
        conn.execute(sa.insert(table).values(
            import_id=import_id, row_number=problem.row, account_number=problem.account_number,
            field=problem.field, code=problem.code, severity=problem.severity, message=problem.message))
