"""What a run imports: the practices to map over and the request a run's conf makes (SPEC §6)."""

from __future__ import annotations

import logging
from datetime import date, timedelta

from sqlalchemy.engine import Engine

from include.patient_import import files, records
from include.patient_import.practices import load_practices
from include.patient_import.problems import ConfigurationError, Status

log = logging.getLogger(__name__)

# How long an import may stay `processing` before the next run takes it for abandoned by a crash.
ABANDONED_AFTER = timedelta(hours=6)


def export_request(params: dict) -> dict:
    """The run conf's export file, export date and dry-run flag, checked."""
    exported_on = params.get("exported_on") or None
    if exported_on:
        try:
            exported_on = date.fromisoformat(str(exported_on))
        except ValueError:
            raise ConfigurationError(f"exported_on must be a date as YYYY-MM-DD, got {exported_on!r}") from None
    dry_run = params.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ConfigurationError("dry_run must be true or false")
    return {"export_file": params.get("export_file") or None, "exported_on": exported_on, "dry_run": dry_run}


def practices_to_import(engine: Engine, run, params: dict) -> list[str]:
    """The conf's practice, or every registered practice with something waiting; sorted.

    Also marks `failed` the imports an earlier crash left `processing` (SPEC §4).
    """
    request = export_request(params)
    practice_id = (params.get("practice_id") or "").strip()
    abandoned = records.fail_abandoned_imports(engine, current_run_id=run.run_id, older_than=ABANDONED_AFTER)
    if abandoned:
        log.warning("marked %d abandoned imports failed: %s", len(abandoned), abandoned)
    if request["export_file"] and not practice_id:
        raise ConfigurationError("export_file needs a practice_id")
    if practice_id:
        return [practice_id]
    practices = load_practices()
    return sorted(pid for pid in practices if files.waiting_inbox_files(pid, settle_seconds=0)
                  or files.archived_exports(pid))


def stale_practices(engine: Engine) -> list[str]:
    """Messages for the registered practices whose newest export is too old; each is logged."""
    from include.patient_import.pipeline import today
    from include.patient_import.staleness import staleness

    found = [s.message() for s in staleness(engine, load_practices(), today()) if s.stale]
    for message in found:
        log.warning("stale: %s", message)
    return found


def unsuccessful(summaries: list[dict]) -> str | None:
    """The message that fails the run when an import was rejected or failed."""
    bad = [s for s in summaries if s["status"] in (Status.REJECTED.value, Status.FAILED.value)]
    if not bad:
        return None
    return "; ".join(f"import {s['import_id']} {s['status']} (report: {s['report']})" for s in bad)
