"""The import's JSON report file (SPEC §6): its document built from the store, written with its
problems and changed rows streamed, and written again when the import is undone (SPEC §8).

Below the stages: the report stage (`report.py`) writes it when an import ends, the undo
(`undo.py`) when it takes the import back; neither stage imports the other.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from sqlalchemy.engine import Engine

from include.patient_import import changes, files, records, settings, storage
from include.patient_import import problems as p
from include.patient_import.problems import Counts
from include.patient_import.staleness import staleness
from include.patient_import.store import create_store_engine, utc

log = logging.getLogger(__name__)


def report_path(practice_id: str, import_id: str) -> storage.StoragePath:
    return settings.area("reports", files.practice_folder(practice_id), f"{import_id}.json")


def iso(value) -> str | None:
    """A date or time as ISO text; None stays None."""
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
    updated row's changed fields; `undo` says when and by whom an undone import was taken back
    and where the undo's own report is (`files.undo_report_path`). `approval` is
    `records.approval_summary`: whether the import had to wait for a person, the reason codes, the
    answer, who gave it and when (SPEC §8); null for an import without a recorded decision.
    """
    details = json.loads(record["details"]) if record.get("details") else {}
    return {
        "import_id": record["id"],
        "practice_id": record["practice_id"],
        "status": record["status"],
        "dry_run": bool(record["dry_run"]),
        "export": {"name": record["export_name"], "sha256": record["export_sha256"],
                   "exported_on": iso(record["exported_on"]),
                   "exported_on_source": record.get("exported_on_source"), "bytes": record.get("export_bytes"),
                   "already_imported": already_imported or []},
        "counts": {k: int(record.get(k) or 0) for k in Counts().as_dict()},
        "problems": [x.to_dict() for x in sorted(problems, key=p.Problem.sort_key)],
        "problem_counts": problem_counts or [],
        "details": details,
        "changes": {"fields": json.loads(record["field_changes"]) if record.get("field_changes") else {},
                    "rows": []},
        "approval": records.approval_summary(record.get("approval")),
        # Aware, as the undo's own report gives it (SQLite hands it back naive; it is UTC).
        "undo": ({"undone_at": iso(utc(record["undone_at"])), "undone_by": record.get("undone_by"),
                  "report": str(files.undo_report_path(record["practice_id"], record["id"]))}
                 if record.get("undone_at") else None),
        "files": {k: record.get(f"{k}_path") for k in
                  ("archive", "quarantine", "upload", "rejected_rows", "data_docs")},
        "staleness": staleness,
        "dag_run_id": record["dag_run_id"],
        "started_at": iso(record.get("started_at")),
        "finished_at": iso(record.get("finished_at")),
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



def write_from_store(engine: Engine, import_id: str, practice_id: str) -> tuple[dict, storage.StoragePath]:
    """Build the import's report from the store and write it, its problems and changed rows streamed."""
    [practice] = staleness(engine, [practice_id], records.now().date())
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


def rewrite_after_undo(engine: Engine, import_id: str) -> storage.StoragePath | None:
    """Write an undone import's report again, from the store: `status` `undone` and `undo`
    (`undone_at`, `undone_by`, the undo's own report) (SPEC §8). Returns its path; None when the
    import has no report any more (purged by retention) or is not undone: nothing is written then.

    Why the file is rewritten rather than every reader overlaying the store's status: SPEC §6 makes
    this file the interface that scripts outside the project read, without the store; left as it
    was, it would say `completed` for an import whose patients were taken back, and a script could
    act on it (upload its file, count it as loaded). What the file records of the import as it ran
    is kept: counts, problems, per-field changes and approval are rebuilt from the same store rows
    the report stage wrote them from, and an import completed with errors shows it in
    `counts.rejected`; only `status`, `undo` and `staleness` (the practice's, as of this writing)
    are new. A purged report is not brought back: retention removed it on purpose.
    """
    with engine.connect() as conn:
        record = records.get_import(conn, import_id)
    if record is None or record["status"] != p.Status.UNDONE.value or record["dry_run"]:
        return None
    path = report_path(record["practice_id"], import_id)
    if not path.exists():
        return None
    _, written = write_from_store(engine, import_id, record["practice_id"])
    log.info("import %s: report written again as undone: %s", import_id, written)
    return written


def _reader(engine: Engine) -> Engine:
    """The engine to stream the problems with: on SQLite a read-only one, whose transaction does
    not take the write lock that other practices' loads wait for while the report is written."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    return create_store_engine(engine.url.render_as_string(hide_password=False), read_only=True)


