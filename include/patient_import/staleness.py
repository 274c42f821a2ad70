"""Practices whose newest export is older than the data team expects (issue #3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.engine import Engine

from include.patient_import import records, settings


@dataclass(frozen=True)
class Staleness:
    practice_id: str
    newest_export: date | None
    stale_after_days: int
    today: date

    @property
    def stale(self) -> bool:
        return self.newest_export is None or (self.today - self.newest_export).days > self.stale_after_days

    def as_dict(self) -> dict:
        return {"newest_export": self.newest_export.isoformat() if self.newest_export else None,
                "stale_after_days": self.stale_after_days, "stale": self.stale}

    def message(self) -> str:
        if self.newest_export is None:
            return f"practice {self.practice_id}: no export imported yet"
        return (f"practice {self.practice_id}: newest export is from {self.newest_export} "
                f"({(self.today - self.newest_export).days} days ago; expected within {self.stale_after_days})")


def staleness(engine: Engine, practice_ids, today: date) -> list[Staleness]:
    """The staleness of each practice, from the export dates of its imports (dry runs excluded)."""
    with engine.connect() as conn:
        newest = records.newest_export_dates(conn)
    limit = settings.stale_after_days()
    return [Staleness(pid, newest.get(pid), limit, today) for pid in sorted(practice_ids)]
