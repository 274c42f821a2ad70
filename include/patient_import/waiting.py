"""Which archived exports wait for a run (SPEC §6): the one rule the planner (which practices a
run maps over, `planning.practices_to_import`) and extract (which files it imports,
`extract._candidate_exports`) both follow.

Light on purpose (files and the store's records, no pandas): the planning task imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from enum import Enum
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from include.patient_import import files, records
from include.patient_import.problems import Status
from include.patient_import.storage import StoragePath

# Failed imports after which an archived export is quarantined instead of picked up again (SPEC §7).
POISON_PILL_FAILURES = 3


class RunWindow(Protocol):
    """What of a run (`extract.RunInfo`) decides what waits for it."""

    @property
    def run_id(self) -> str: ...
    @property
    def run_type(self) -> str: ...
    @property
    def interval_start(self) -> datetime | None: ...
    @property
    def interval_end(self) -> datetime | None: ...


class Archived(Enum):
    """What a run does with an archived original (`archived_choice`)."""

    TAKE = "take"  # a backfill's own day, or an import this run started (a retried extract continues it)
    UNSETTLED = "unsettled"  # never imported for good: taken, unless it is a poison pill
    NOT_THIS_RUN = "not_this_run"


def before_interval_end(day: date, end: datetime | None) -> bool:
    """An export dated `day` belongs to a run whose data interval ends at `end` (SPEC §6)."""
    return end is None or datetime.combine(day, datetime.min.time(), end.tzinfo) < end


def archived_choice(run: RunWindow, filed_on: date, earlier: list[dict[str, Any]]) -> Archived:
    """What `run` does with an archived original filed on `filed_on` whose imports so far are
    `earlier` (`records.imports_of_archive`): a backfill run takes the originals of its data
    interval, imported or not; another run continues what it started itself, at whatever map index
    (a whole-run clear plans again, and a practice newly waiting may shift this one's index: the
    import it left `processing` is still its own, never failed as abandoned by this run) and takes
    what was never imported for good (only failed or dry-run imports). Nothing dated at or after
    the interval's end.
    """
    if not before_interval_end(filed_on, run.interval_end):
        return Archived.NOT_THIS_RUN
    if run.run_type == "backfill":
        start = run.interval_start.date() if run.interval_start else None
        return Archived.TAKE if start is None or filed_on >= start else Archived.NOT_THIS_RUN
    if any(i["dag_run_id"] == run.run_id for i in earlier):
        return Archived.TAKE
    if any(not i["dry_run"] and i["status"] != Status.FAILED.value for i in earlier):
        return Archived.NOT_THIS_RUN
    return Archived.UNSETTLED


def failed_imports(earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failed (not dry-run) imports among `earlier`: `POISON_PILL_FAILURES` of them make a pill."""
    return [i for i in earlier if not i["dry_run"] and i["status"] == Status.FAILED.value]


def quarantined_pill(earlier: list[dict[str, Any]]) -> bool:
    """Whether an archived original is a poison pill already quarantined: it waits for nobody
    until someone re-runs it explicitly (SPEC §7)."""
    failures = failed_imports(earlier)
    return len(failures) >= POISON_PILL_FAILURES and any(i["quarantine_path"] for i in failures)


def archived_choices(engine: Engine, practice_id: str,
                     run: RunWindow) -> Iterator[tuple[StoragePath, date, list[dict[str, Any]], Archived]]:
    """(archived original, its date, its earlier imports, `archived_choice`) for each of the
    practice's archived exports with a date, in path order; one query for the imports."""
    archived = files.archived_exports(practice_id)
    if not archived:
        return
    with engine.connect() as conn:
        imported = records.imports_of_archive(conn, practice_id)
    for path in archived:
        filed_on = files.archived_date(path)
        if filed_on is not None:
            earlier = imported.get(str(path), [])
            yield path, filed_on, earlier, archived_choice(run, filed_on, earlier)
