"""The report stage: the import's final status in the store and its JSON report (SPEC §4, §6).

The JSON is written whatever happened upstream, also when the store cannot be reached; then it
says `failed` and the task fails so that Airflow retries it. Its problems are streamed from the
store to the file, one line each, never held all at once (SPEC §7); `problem_counts` gives per
code and field how many were found and how many are listed.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from include.patient_import import catalogue, files, records, staging, storage
from include.patient_import import problems as p
from include.patient_import.problem_table import ProblemTable
from include.patient_import.problems import Counts

# The report file itself (its document, streaming, the rewrite after an undo) is one layer down,
# shared with the undo; `build_report` and `write_report` are re-exported where callers found them.
from include.patient_import.report_file import build_report, iso, report_path, write_from_store, write_report  # noqa: F401, E501
from include.patient_import.rules import approval_rejection

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The store could not be reached to finalise the import; the JSON report says `failed`."""


def _failed_problem(case: str) -> p.Problem:
    return p.Problem(code=p.IMPORT_FAILED, message=catalogue.message(p.IMPORT_FAILED, case))


def _finalise_in_store(engine: Engine, import_id: str) -> tuple[dict, storage.StoragePath]:
    with engine.connect() as conn:
        record = records.get_import(conn, import_id)
    if record is None:
        raise LookupError(f"import {import_id} is not registered in the store")
    updates: dict = {"finished_at": records.now()}
    if record["loaded_at"] is None:
        # Load never committed: an infrastructure fault retries could not overcome.
        read = staging.staged_read(import_id)
        updates |= {"status": p.Status.FAILED.value, "read": read, "rejected": read,
                    **{k: 0 for k in ("inserted", "updated", "unchanged", "skipped")}}
        records.replace_problem(engine, import_id, _failed_problem("not_completed"))
    status = updates.get("status", record["status"])
    if status == p.Status.REJECTED.value and not record["dry_run"] and record["archive_path"]:
        archived = storage.path_of(record["archive_path"])
        if archived.exists():
            folder = files.practice_folder(record["practice_id"])
            updates["quarantine_path"] = str(files.quarantine(archived, folder))
    if not record["dry_run"]:
        updates["upload_path"] = _publish_upload(record, status)
        decision = records.decision_of(record)
        if status == p.Status.REJECTED.value and approval_rejection(decision):
            records.withdraw_rejected_rows(engine, import_id)  # done by load; again after a crash there
    updates["report_path"] = str(report_path(record["practice_id"], import_id))
    records.update_import(engine, import_id, **updates)
    if status != p.Status.FAILED.value:
        with engine.connect() as conn:
            stored = records.get_import(conn, import_id)
            assert stored is not None  # registered at extract; finalised above
            warning = overwrite_warning(stored, records.problem_counts(conn, import_id))
        if warning:
            records.replace_problem(engine, import_id, warning)
    return write_from_store(engine, import_id, record["practice_id"])


# The final statuses whose upload file the office may upload (SPEC §4, §5).
_UPLOADABLE = (p.Status.COMPLETED.value, p.Status.COMPLETED_WITH_ERRORS.value)


def _publish_upload(record: dict, status: str) -> str | None:
    """Move the upload file transform staged into the outbox when the import's final `status`
    lets the office upload it; else make sure none is there (an import that waited and was
    rejected, timed out or failed must leave nothing that someone could upload by mistake).
    Safe to run again: a file published by an earlier try stays. Returns the published path or None."""
    target = files.upload_file(record["practice_id"], record["id"])
    if status not in _UPLOADABLE:
        target.unlink(missing_ok=True)
        return None
    if storage.move(staging.staged_upload(record["id"]), target):
        log.info("import %s: upload file published to the outbox", record["id"])
    return str(target) if target.exists() else None


def overwrite_warning(record: dict, problem_counts: list[dict]) -> p.Problem | None:
    """`upload_overwrites_newer_data` when rows of the upload file are older than what the store
    holds (skipped `older_than_stored`, SPEC §3 rule 7): the upload file carries every valid row
    whatever the store holds, so uploading it would put their older data into Cash Practice.
    None for a rejected import (it has no upload file) or when no row is older."""
    if record["status"] == p.Status.REJECTED.value:
        return None
    older = sum(x["total"] for x in problem_counts if x["code"] == p.OLDER_THAN_STORED)
    if not older:
        return None
    current = sum(int(record.get(k) or 0) for k in ("inserted", "updated", "unchanged"))
    upload = "its upload file" if record.get("upload_path") else "an upload file of it"
    message = catalogue.message(p.UPLOAD_OVERWRITES_NEWER_DATA, "every_row" if current == 0 else None,
                                older=older, exported_on=iso(record["exported_on"]), upload=upload)
    return p.Problem(code=p.UPLOAD_OVERWRITES_NEWER_DATA, message=message)


def _report_from_staging(import_id: str, case: str) -> dict:
    """The report when the store cannot be reached: what staging knows, status `failed`."""
    job = staging.Job.load(import_id)
    read = staging.staged_read(import_id)
    return {
        "import_id": import_id, "practice_id": job.practice_id, "status": p.Status.FAILED.value,
        "dry_run": job.dry_run,
        "export": {"name": job.export_name, "sha256": job.sha256, "exported_on": job.exported_on,
                   "exported_on_source": job.exported_on_source, "bytes": job.size, "already_imported": []},
        "counts": Counts.all_rejected(read).as_dict(),
        "problems": [_failed_problem(case).to_dict()],
        "problem_counts": ProblemTable.of([_failed_problem(case)]).counts(),
        "details": {}, "changes": {"fields": {}, "rows": []}, "approval": None, "undo": None,
        "files": {"archive": job.archive_path}, "staleness": None, "dag_run_id": None,
        "started_at": None, "finished_at": records.now().isoformat(),
    }


def report_import(engine: Engine, import_id: str) -> dict:
    """The report stage: finalise one import in the store and write its JSON report (SPEC §4, §6),
    whatever happened upstream; safe to run again.

    Raises StoreUnavailable (after writing the report from staging, status `failed`) when the store
    cannot be reached, so that Airflow retries the task. The engine connects lazily: an unreachable
    store surfaces here, not where the engine was made.

    Returns {"import_id", "practice_id", "status", "dry_run", "counts", "report": path, "code",
    "message"} (the first file-level error's code and message when the import was rejected or
    failed): ids, counts and codes, never a patient value.
    """
    try:
        document, path = _finalise_in_store(engine, import_id)
    except SQLAlchemyError as exc:
        log.error("import %s: the store could not be reached (%s); writing the report from staging",
                  import_id, type(exc).__name__)
        document = _report_from_staging(import_id, "store_unreachable")
        path = write_report(document)
        raise StoreUnavailable(f"import {import_id}: store unreachable; report written to {path}") from None
    files.clear_staging(import_id)
    _log_outcome(document, path)
    # The report's problems are streamed to its file from the store; the store names the first one.
    first = None
    if document["status"] in (p.Status.REJECTED.value, p.Status.FAILED.value):
        with engine.connect() as conn:
            first = records.first_file_error(conn, import_id)
    return {"import_id": import_id, "practice_id": document["practice_id"], "status": document["status"],
            "dry_run": document["dry_run"], "counts": document["counts"], "report": str(path),
            "code": first["code"] if first else None, "message": first["message"] if first else None}


def _log_outcome(document: dict, path) -> None:
    """What the report stage decided, in counts and codes (never a patient value)."""
    counts = document["counts"]
    export = document["export"]
    log.info("import %s: status %s; %s; exported %s (date from %s); report %s", document["import_id"],
             document["status"], ", ".join(f"{v} {k}" for k, v in counts.items()), export["exported_on"],
             export.get("exported_on_source") or "unknown", path)
    by_severity: dict[str, int] = {}
    for item in document["problem_counts"]:
        by_severity[item["severity"]] = by_severity.get(item["severity"], 0) + item["total"]
    if by_severity:
        log.info("import %s: problems %s", document["import_id"],
                 ", ".join(f"{by_severity[s]} {s}" for s in ("error", "warning", "info") if s in by_severity))
    for item in document["problem_counts"]:
        if item["code"] in (p.UPLOAD_OVERWRITES_NEWER_DATA, p.EXPORT_DATE_FROM_LANDING_TIME) or (
                item["severity"] == "error" and item["field"] is None and item["code"] in p.FILE_ERROR_CODES):
            log.warning("import %s: %s", document["import_id"], item["code"])
    for earlier in export.get("already_imported") or []:
        log.warning("import %s: the same file was already imported as %s on %s UTC (%s)", document["import_id"],
                    earlier["import_id"], earlier["imported_at"], earlier["status"])
