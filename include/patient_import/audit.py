"""Who did what to an import, and when (SPEC §8 "Audit"): kept in the store's `import_audit`.

Actions: `triggered` (the DAG run that made the import), `approved` / `not_approved` (a person's
answer to an approval request), `undone`, `downloaded` (detail: which patient file). `who` is the
Airflow user's name as Airflow gives it; nothing here ever holds a patient value.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.patient_import.store import ImportAudit

TRIGGERED, APPROVED, NOT_APPROVED, UNDONE, DOWNLOADED = (
    "triggered", "approved", "not_approved", "undone", "downloaded")
ACTIONS = frozenset({TRIGGERED, APPROVED, NOT_APPROVED, UNDONE, DOWNLOADED})
_AUDIT = ImportAudit.__table__


def record(engine: Engine | Connection, import_id: str, action: str, who: str | None,
           detail: str | None = None) -> None:
    """Add one audit entry for a registered import.

    Args:
        engine: the store; a Connection writes in the caller's transaction (an undo records itself
            with the changes it makes), an Engine in a transaction of its own.
        action: one of `ACTIONS`.
        who: the user's name (None when Airflow names nobody, e.g. a scheduled run).
        detail: a file kind, a reason code: never a patient value.

    Raises:
        ValueError: an action not in `ACTIONS`.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; one of {sorted(ACTIONS)}")
    values = {"import_id": import_id, "action": action, "who": who, "detail": detail,
              "at": datetime.now(timezone.utc)}
    if isinstance(engine, Connection):
        engine.execute(sa.insert(_AUDIT).values(**values))
        return
    with engine.begin() as conn:
        conn.execute(sa.insert(_AUDIT).values(**values))


def entries(conn: Connection, import_id: str) -> list[dict]:
    """The import's audit entries, oldest first: [{"action", "who", "detail", "at"}]."""
    rows = conn.execute(sa.select(_AUDIT.c.action, _AUDIT.c.who, _AUDIT.c.detail, _AUDIT.c.at)
                        .where(_AUDIT.c.import_id == import_id).order_by(_AUDIT.c.at, _AUDIT.c.id)).mappings()
    return [dict(r) for r in rows]
