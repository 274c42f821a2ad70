"""The report stage: the import's final status in the store and its JSON report (SPEC §4, §6).

The JSON is written whatever happened upstream, also when the store cannot be reached; then it
says `failed` and the task fails so that Airflow retries it. Its problems are streamed from the
store to the file, one line each, never held all at once (SPEC §7); `problem_counts` gives per
code and field how many were found and how many are listed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from include.patient_import import catalogue, changes, files, records, settings, staging, storage
from include.patient_import import problems as p
from include.patient_import.problem_table import ProblemTable
from include.patient_import.problems import Counts
from include.patient_import.staleness import staleness
from include.patient_import.store import create_store_engine

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The store could not be reached to finalise the import; the JSON report says `failed`."""


def report_path(practice_id: str, import_id: str) -> storage.StoragePath:
    return settings.area("reports", files.practice_folder(practice_id), f"{import_id}.json")


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def build_report(record: dict, problems: Iterable[p.Problem], staleness: dict | None = None,
                 problem_counts: list[dict] | None = None, already_imported: list[dict] | None = None) -> dict:
    """The report document of SPEC §6, plus where the import's files are and the practice's staleness.

    `problems` may be left empty and streamed by `write_report` instead; `problem_counts` is the
    store's (records.problem_counts). `export.exported_on_source` is `conf`, `file_name` or
    `landed` (SPEC §6; null for imports recorded before it was kept); `export.already_imported`
    lists the practice's earlier imports of the same file (same sha256), newest first
    (records.earlier_imports_of_file). `changes.fields` counts, per field, the updated patients
    it changed (SPEC §8, dry runs too); `changes.rows` (streamed by `write_report`) names each
    updated row's changed fields; `undo` says when and by whom an undone import was taken back.
    """
    details = json.loads(record["details"]) if record.get("details") else {}
    return {
        "import_id": record["id"],
        "practice_id": record["practice_id"],
        "status": record["status"],
        "dry_run": bool(record["dry_run"]),
        "export": {"name": record["export_name"], "sha256": record["export_sha256"],
                   "exported_on": _iso(record["exported_on"]),
                   "exported_on_source": record.get("exported_on_source"), "bytes": record.get("export_bytes"),
                   "already_imported": already_imported or []},
        "counts": {k: int(record.get(k) or 0) for k in Counts().as_dict()},
        "problems": [x.to_dict() for x in sorted(problems, key=p.Problem.sort_key)],
        "problem_counts": problem_counts or [],
        "details": details,
        "changes": {"fields": json.loads(record["field_changes"]) if record.get("field_changes") else {},
                    "rows": []},
        "undo": ({"undone_at": _iso(record["undone_at"]), "undone_by": record.get("undone_by")}
                 if record.get("undone_at") else None),
        "files": {k: record.get(f"{k}_path") for k in
                  ("archive", "quarantine", "upload", "rejected_rows", "data_docs")},
        "staleness": staleness,
        "dag_run_id": record["dag_run_id"],
        "started_at": _iso(record.get("started_at")),
        "finished_at": _iso(record.get("finished_at")),
    }


_PROBLEMS_HERE = "\x00problems\x00"
_ROWS_HERE = "\x00changed rows\x00"


def write_report(document: dict, problems: Iterable[dict] | None = None,
                 changed_rows: Iterable[dict] | None = None) -> storage.StoragePath:
    """Write the report; with `problems` (report dicts in report order), they are streamed into
    the document's `problems`, one per line, in place of the list it holds; the same for
    `changed_rows` into `changes.rows`."""
    path = report_path(document["practice_id"], document["import_id"])
    if problems is None and changed_rows is None:
        return storage.write_text(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    streamed = {**document}
    lists: list[tuple[str, Iterable[dict], str]] = []
    if problems is not None:
        streamed["problems"] = _PROBLEMS_HERE
        lists.append((_PROBLEMS_HERE, problems, "  "))
    if changed_rows is not None:
        streamed["changes"] = {**document.get("changes", {}), "rows": _ROWS_HERE}
        lists.append((_ROWS_HERE, changed_rows, "    "))
    text = json.dumps(streamed, indent=2, ensure_ascii=False)
    # The placeholders in document order, so the text between them is written in turn.
    lists.sort(key=lambda item: text.index(json.dumps(item[0])))
    with storage.writing(path, "w", encoding="utf-8") as handle:
        for placeholder, items, indent in lists:
            head, text = text.split(json.dumps(placeholder), 1)
            handle.write(head + "[")
            separator = "\n"
            for item in items:
                handle.write(separator + indent + "  " + json.dumps(item, ensure_ascii=False))
                separator = ",\n"
            handle.write(f"\n{indent}]" if separator != "\n" else "]")
        handle.write(text + "\n")
    return path


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
    updates["report_path"] = str(report_path(record["practice_id"], import_id))
    records.update_import(engine, import_id, **updates)
    if status != p.Status.FAILED.value:
        with engine.connect() as conn:
            stored = records.get_import(conn, import_id)
            assert stored is not None  # registered at extract; finalised above
            warning = overwrite_warning(stored, records.problem_counts(conn, import_id))
        if warning:
            records.replace_problem(engine, import_id, warning)
    [practice] = staleness(engine, [record["practice_id"]], records.now().date())
    if practice.stale:
        log.warning("stale: %s", practice.message())
    reader = _reader(engine)
    try:
        with reader.connect() as conn:
            record = records.get_import(conn, import_id)
            assert record is not None  # registered at extract
            document = build_report(record, (), practice.as_dict(), records.problem_counts(conn, import_id),
                                    records.earlier_imports_of_file(conn, record))
            path = write_report(document, records.iter_problems(conn, import_id),
                                changes.changed_rows(conn, import_id))
    finally:
        if reader is not engine:
            reader.dispose()
    return document, path


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
                                older=older, exported_on=_iso(record["exported_on"]), upload=upload)
    return p.Problem(code=p.UPLOAD_OVERWRITES_NEWER_DATA, message=message)


def _reader(engine: Engine) -> Engine:
    """The engine to stream the problems with: on SQLite a read-only one, whose transaction does
    not take the write lock that other practices' loads wait for while the report is written."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    return create_store_engine(engine.url.render_as_string(hide_password=False), read_only=True)


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
        "details": {}, "changes": {"fields": {}, "rows": []}, "undo": None,
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
    first = next((x for x in document["problems"] if x["row"] is None and x["severity"] == p.Severity.ERROR), None)
    if first is None and document["status"] in (p.Status.REJECTED.value, p.Status.FAILED.value):
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
