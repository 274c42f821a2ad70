"""What a run imports: the practices to map over and the request a run's conf makes (SPEC §6)."""

from __future__ import annotations

import logging
import re
from datetime import date, timedelta

from sqlalchemy.engine import Engine

from include.patient_import import boundaries, catalogue, files, records, settings, storage
from include.patient_import.practices import load_practices
from include.patient_import.problems import EXPORT_DATE_IN_FUTURE, ConfigurationError, InputRefused, Status
from include.patient_import.untrusted import printable
from include.patient_import.waiting import Archived, RunWindow, archived_choices, quarantined_pill

log = logging.getLogger(__name__)

# How long an import may stay `processing` before the next run takes it for abandoned by a crash.
ABANDONED_AFTER = timedelta(hours=6)


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def check_conf(params: dict, *, store=None, practices: dict | None = None) -> dict:
    """A run's conf checked in one place, before any task reads a file (SPEC §6, §7).

    Used by `plan_imports`, by extract again, and by `make import` before it starts the run.

    Args:
        params: the run's conf: `practice_id`, `export_file`, `exported_on`, `dry_run`.
        store: the store's Engine or URL (its SQLite file is never an export); None: the default.
        practices: the registry; None reads it.

    Returns `{"practice_id": str ("" = every practice), "export_file": str | None (links resolved),
    "exported_on": date | None, "dry_run": bool}`.

    Raises:
        InputRefused: `unknown_practice` (not registered, or not letters/digits/underscore),
            `export_file_not_allowed` (SPEC §7), `export_date_in_future`.
        ConfigurationError: anything else malformed (a bad date, `export_file` without a practice).
    """
    # Only a missing value, null or "" means "not given": a 0, [] or {} is a wrong value, refused
    # like any other, not read as "every practice" or "no export_file".
    practice_id = _given(params, "practice_id")
    if practice_id is None:
        practice_id = ""
    else:
        practices = practices if practices is not None else load_practices()
        practice_id = boundaries.check_practice_id(practice_id, practices)
    exported_on = _given(params, "exported_on")
    if exported_on is not None:
        if not isinstance(exported_on, str) or not _DATE.fullmatch(exported_on):
            raise ConfigurationError(f"exported_on must be a date as YYYY-MM-DD, got {printable(exported_on)!r}")
        try:
            exported_on = date.fromisoformat(exported_on)
        except ValueError:
            raise ConfigurationError(f"exported_on {exported_on!r} is not a real date") from None
        if exported_on > settings.today():
            raise InputRefused(EXPORT_DATE_IN_FUTURE, catalogue.message(EXPORT_DATE_IN_FUTURE, "conf",
                                                                        exported_on=exported_on.isoformat()))
    dry_run = params.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ConfigurationError("dry_run must be true or false")
    export_file = _given(params, "export_file")
    if export_file is not None:
        if not practice_id:
            raise ConfigurationError("export_file needs a practice_id")
        export_file = str(boundaries.check_export_file(export_file, practice_id, store=store))
    return {"practice_id": practice_id, "export_file": export_file, "exported_on": exported_on,
            "dry_run": dry_run}


def _given(params: dict, key: str) -> object:
    value = params.get(key)
    return None if value is None or value == "" else value


def export_request(params: dict, *, store=None) -> dict:
    """The conf's export file, export date and dry-run flag, checked by `check_conf`."""
    request = check_conf(params, store=store)
    return {k: request[k] for k in ("export_file", "exported_on", "dry_run")}


def practices_to_import(engine: Engine, run: RunWindow, params: dict) -> list[str]:
    """The conf's practice, or every registered practice with something waiting for this run
    (`exports_waiting`); sorted.

    Also marks `failed` the imports an earlier crash left `processing` (SPEC §4).
    """
    request = check_conf(params, store=engine)
    abandoned = records.fail_abandoned_imports(engine, current_run_id=run.run_id, older_than=ABANDONED_AFTER)
    if abandoned:
        log.warning("marked %d abandoned imports failed: %s", len(abandoned), abandoned)
    if request["practice_id"]:
        return [request["practice_id"]]
    practices = load_practices()
    _warn_unregistered_inboxes(practices)
    return sorted(pid for pid in practices if exports_waiting(engine, pid, run))


def exports_waiting(engine: Engine, practice_id: str, run: RunWindow) -> bool:
    """Whether extract may find an export of the practice for this run (`waiting.archived_choice`,
    the rule extract follows): a file in its inbox (for any run but a backfill; still settling
    counts), or an archived original the run takes. Errs towards mapping: a practice mapped for
    nothing costs a group of empty tasks, one left out waits for the next run. Only a poison pill
    already quarantined waits for nobody. Reads only."""
    if run.run_type != "backfill" and files.waiting_inbox_files(practice_id, settle_seconds=0):
        return True
    return any(choice is Archived.TAKE or (choice is Archived.UNSETTLED and not quarantined_pill(earlier))
               for _, _, earlier, choice in archived_choices(engine, practice_id, run))


def _warn_unregistered_inboxes(practices: dict) -> None:
    """An inbox folder never becomes a practice id: folders of unregistered names are left alone."""
    inbox = settings.area("inbox")
    if not inbox.is_dir() or (storage.is_local(inbox) and inbox.is_symlink()):
        return
    for folder in sorted(inbox.iterdir()):
        if folder.name not in practices and not folder.name.startswith("."):
            log.warning("inbox folder %s is not a registered practice; left alone", printable(folder.name))


def stale_practices(engine: Engine) -> list[str]:
    """Messages for the registered practices whose newest export is too old; each is logged."""
    from include.patient_import.staleness import staleness

    found = [s.message() for s in staleness(engine, load_practices(), settings.today()) if s.stale]
    for message in found:
        log.warning("stale: %s", message)
    return found


def unsuccessful(summaries: list[dict]) -> str | None:
    """The message that fails the run when an import was rejected or failed: each import's status,
    its first file-level problem (code: message) and its report."""
    bad = [s for s in summaries if s["status"] in (Status.REJECTED.value, Status.FAILED.value)]
    if not bad:
        return None
    return "; ".join(f"import {s['import_id']} {s['status']}"
                     + (f" with {s['code']}: {s['message']}" if s.get("code") else "")
                     + f" (report: {s['report']})" for s in bad)
