"""The extract stage: pick a practice's exports, archive the originals, register each import.

Reads the inbox (stable files only), the practice's archived exports never imported, or the one
`export_file` of the run's conf (SPEC §6, §7); each export is read once through one handle
(`files.snapshot`), rejected here when it is too large, not a patient export or dated in the future,
and handed to the next stages as a `staging.Job`. Nothing here knows about Airflow: the DAG hands
in the run's identity (`RunInfo`) and the store's engine.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.engine import Engine

from include.patient_import import boundaries, catalogue, files, records, settings, storage
from include.patient_import import problems as p
from include.patient_import.practices import Practice, load_practices
from include.patient_import.rules import export_date_rejection
from include.patient_import.staging import Job
from include.patient_import.untrusted import printable
from include.patient_import.waiting import (
    POISON_PILL_FAILURES,
    Archived,
    archived_choices,
    before_interval_end,
    failed_imports,
)

log = logging.getLogger(__name__)

# An archived export whose import ended `failed` this many times is quarantined (SPEC §7).


@dataclass(frozen=True)
class RunInfo:
    """Who runs the import: the identity an import id follows from (SPEC §6)."""

    dag_id: str
    run_id: str
    run_type: str = "manual"
    map_index: int = -1
    attempt: int = 1  # the run's planning attempt: a run cleared as a whole imports again
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    triggered_by: str | None = None  # the Airflow user who triggered the run, for the audit (SPEC §8)


def import_id_for(run: RunInfo, practice_id: str, exported_on: date, sha256: str, name: str) -> str:
    """Same run, map index and export → same import (a cleared task continues it); a new run, or a
    run cleared as a whole (a new planning attempt, as a backfill's reprocessing does) → a new one."""
    key = "|".join([run.dag_id, run.run_id, str(run.map_index), str(run.attempt), sha256, name])
    digest = hashlib.sha256(key.encode()).hexdigest()[:files.IMPORT_ID_DIGEST_LENGTH]
    return f"{practice_id}_{exported_on:%Y%m%d}_{digest}"


def _candidate_exports(engine: Engine, practice_id: str, run: RunInfo,
                       exported_on: date | None) -> list[tuple[storage.StoragePath, bool, date, str]]:
    """(path, in_inbox, export date, its source) of every export waiting for this practice and this run.

    Waiting: stable files in the inbox, and archived originals never imported (only failed or
    dry-run imports), or imported by this very run (a retried extract continues them), dated
    before the end of the run's data interval. A backfill run takes the originals archived for
    its data interval, imported or not.
    """
    chosen: list[tuple[storage.StoragePath, bool, date, str]] = []
    for archived, filed_on, earlier, choice in archived_choices(engine, practice_id, run):
        if choice is Archived.NOT_THIS_RUN or (choice is Archived.UNSETTLED
                                               and _poison_pill(engine, archived, earlier)):
            continue
        chosen.append((archived, False, filed_on, _archived_date_source(archived, filed_on, earlier)))
    if run.run_type != "backfill":
        for waiting in files.waiting_inbox_files(practice_id):
            day, source = files.dated_export(waiting.path, exported_on)
            if before_interval_end(day, run.interval_end):
                chosen.append((waiting.path, True, day, source))
    return chosen


def _archived_date_source(archived, filed_on: date, earlier: list[dict]) -> str:
    """Where an archived export's date (its archive folder) first came from: what its first import
    recorded; for an import from before that was recorded, the name when it holds that date."""
    recorded = [i for i in sorted(earlier, key=lambda i: str(i["started_at"])) if i.get("exported_on_source")]
    if recorded:
        return recorded[0]["exported_on_source"]
    if files.date_in_name(files.original_name(archived)) == filed_on:
        return files.FROM_FILE_NAME
    return files.FROM_LANDING


def _poison_pill(engine: Engine, archived, earlier: list[dict]) -> bool:
    """Whether an archived export failed too often to be picked up by a scheduled run (SPEC §7).

    After `POISON_PILL_FAILURES` failed imports (a worker killed, out of memory) it is copied to the
    quarantine, its last import records `import_failed` with the quarantine path, and it waits until
    someone re-runs it explicitly (conf `export_file` pointing at the archived original).
    """
    failures = failed_imports(earlier)
    if len(failures) < POISON_PILL_FAILURES:
        return False
    last = max(failures, key=lambda i: i["id"])
    if not any(i["quarantine_path"] for i in failures):
        quarantined = files.quarantine(archived, last["practice_id"])
        records.update_import(engine, last["id"], quarantine_path=str(quarantined))
        records.replace_problem(engine, last["id"], p.Problem(
            code=p.IMPORT_FAILED, message=catalogue.message(p.IMPORT_FAILED, "quarantined", failures=len(failures))))
        log.warning("%s failed %d times: quarantined, not picked up again until re-run explicitly",
                    printable(archived.name), len(failures))
    return True


def extract_exports(engine: Engine, practice_id: str, run: RunInfo, *, export_file: str | None = None,
                    exported_on: date | None = None, dry_run: bool = False,
                    practices: dict[str, Practice] | None = None) -> list[str]:
    """Pick the practice's exports, archive the originals, register each import; oldest first.

    The practice id and `export_file` are checked again here (SPEC §7, after `planning.check_conf`):
    a refused one raises `InputRefused` before any file is opened. A file over the size limit is
    hashed in one streaming pass and rejected `file_too_large` without being copied anywhere.

    Returns the import ids in export-date order.
    """
    practices = practices if practices is not None else load_practices()
    boundaries.check_practice_id(practice_id, practices)
    if export_file:
        given = boundaries.check_export_file(export_file, practice_id, store=engine)
        archived = storage.is_inside(given, settings.area("archive"))
        candidates = [(given, False, *files.dated_export(
            given, exported_on, files.original_name(given) if archived else None))]
    else:
        candidates = _candidate_exports(engine, practice_id, run, exported_on)

    jobs: list[Job] = []
    for path, in_inbox, export_on, source in candidates:
        if in_inbox and _left_in_inbox(engine, practice_id, path):
            continue
        job = _extract_one(engine, practice_id, run, path, in_inbox, export_on, dry_run, source)
        if job is None:
            continue
        log.info("import %s: %s (%d bytes, exported %s, date from %s)%s", job.import_id, printable(path.name),
                 job.size, export_on, source, f" rejected: {job.rejection['code']}" if job.rejection else "")
        jobs.append(job)
    jobs.sort(key=lambda j: (j.exported_on, j.export_name))
    log.info("extract %s: %d exports to import (%d rejected at extract)", practice_id, len(jobs),
             sum(1 for j in jobs if j.rejection))
    return [j.import_id for j in jobs]


def _shown(path) -> str:
    """The export's name as it is recorded and reported (store, report, Import Results): through
    `printable` (SPEC §7), whole (names are at most 255 bytes), so that a name's newline, terminal
    escape or bidi override never reaches a terminal (`jq -r`) or a page."""
    return printable(path.name, limit=4096)


def _left_in_inbox(engine: Engine, practice_id: str, path) -> bool:
    """Whether an inbox file is left where it is: it turned into a link (or its folder did) since it
    was listed, or it is a file already refused as too large (it is never moved: SPEC §7)."""
    reason = files.refused_entry(path, path.parent) if files.practice_inbox(practice_id) else "is in a linked folder"
    if reason:
        log.warning("inbox %s: %s %s; left alone", practice_id, printable(path.name), reason)
        return True
    size = path.stat().st_size
    if size > settings.Limits.from_env().max_file_bytes:
        with engine.connect() as conn:
            if records.refused_as_too_large(conn, practice_id, _shown(path), size):
                log.warning("inbox %s: %s (%d bytes) was already refused as too large; remove or replace it",
                            practice_id, printable(path.name), size)
                return True
    return False


def _extract_one(engine: Engine, practice_id: str, run: RunInfo, path, in_inbox: bool, export_on: date,
                 dry_run: bool, date_source: str) -> Job | None:
    """Register one export; None when an inbox file turned unsafe or is still being written (it is
    left where it is). A local file is read once through one handle (`files.snapshot`, SPEC §7)."""
    limits = settings.Limits.from_env()
    if not storage.is_local(path):
        return _extract_object(engine, practice_id, run, path, in_inbox, export_on, dry_run, limits, date_source)
    local_tmp = settings.area("staging") if storage.is_local(settings.storage_root()) else None
    try:
        with files.snapshot(path, limits.max_file_bytes, folder=local_tmp) as snap:
            return _extract_snapshot(engine, practice_id, run, path, snap, in_inbox, export_on, dry_run, limits,
                                     date_source)
    except (files.UnsafeFile, files.ChangedWhileRead) as exc:
        if in_inbox:
            log.warning("inbox %s: %s %s; left alone", practice_id, printable(path.name), exc)
            return None
        if isinstance(exc, files.UnsafeFile):
            raise boundaries.refusal(str(path), "unsafe", reason=exc) from None
        raise p.ConfigurationError(f"export_file {printable(str(path))!r} {exc}; run again once it is "
                                   "complete") from None


def _too_large(size: int, limits: settings.Limits) -> dict:
    # Checked before any copy (SPEC §7): the name, size and checksum are recorded, nothing is kept.
    return {"code": p.FILE_TOO_LARGE,
            "message": catalogue.message(p.FILE_TOO_LARGE, size_mb=size / 1024 / 1024,
                                         limit_mb=limits.max_file_bytes / 1024 / 1024)}


def _type_rejection(local, head: bytes) -> dict | None:
    # Here, not at the top: a scheduled run without waiting exports never pays for the reader.
    from include.patient_import.reader import detect_file_type

    try:
        detect_file_type(local, head)
    except p.ExportRejected as exc:
        return {"code": exc.code, "message": exc.message}
    return None


def _future_rejection(export_on: date) -> dict | None:
    future = export_date_rejection(export_on, settings.today())
    return {"code": future.code, "message": future.message} if future is not None else None


def _extract_snapshot(engine: Engine, practice_id: str, run: RunInfo, path, snap: files.Snapshot, in_inbox: bool,
                      export_on: date, dry_run: bool, limits: settings.Limits, date_source: str) -> Job:
    size, sha = snap.size, snap.sha256
    rejection: dict | None
    if snap.copy is None:
        rejection = _too_large(size, limits)
    else:
        rejection = _type_rejection(snap.copy, snap.head()) or _future_rejection(export_on)
    import_id = import_id_for(run, practice_id, export_on, sha, path.name)
    archive_path = None
    source = path
    if storage.is_inside(path, settings.area("archive")):
        archive_path = path  # the practice's own archived original, re-run: it is never changed
    elif snap.copy is not None and not dry_run:
        # What is archived is the snapshot: exactly the bytes hashed and sniffed, whatever the
        # name holds by now.
        archive_path = files.archive_path(practice_id, export_on, path.name, sha)
        if not archive_path.exists():
            storage.copy(snap.copy, archive_path)
        if in_inbox:
            files.remove_original(path, snap)
        source = archive_path
    elif snap.copy is not None:
        # A dry run archives nothing; its stages read a copy of the snapshot in staging (cleared by
        # the report), never the original by name again.
        source = files.staging_dir(import_id) / f"original{files.safe_name('x' + path.suffix)[1:]}"
        storage.copy(snap.copy, source)
    return _register(engine, practice_id, run, import_id, path, source, archive_path, sha, size, export_on,
                     dry_run, rejection, date_source)


def _extract_object(engine: Engine, practice_id: str, run: RunInfo, path, in_inbox: bool, export_on: date,
                    dry_run: bool, limits: settings.Limits, date_source: str) -> Job:
    """An export in an object store: no links, and objects do not change once written."""
    size = path.stat().st_size
    rejection: dict | None
    if size > limits.max_file_bytes:
        sha = files.sha256_of(path)
        rejection = _too_large(size, limits)
    else:
        with storage.local_file(path) as local:
            with local.open("rb") as handle:
                rejection = _type_rejection(local, handle.read(8192))
            sha = files.sha256_of(local)
        rejection = rejection or _future_rejection(export_on)
    import_id = import_id_for(run, practice_id, export_on, sha, path.name)
    archive_path = None
    source = path
    if storage.is_inside(path, settings.area("archive")):
        archive_path = path
    elif not dry_run and (rejection is None or rejection["code"] != p.FILE_TOO_LARGE):
        archive_path = files.archive(path, practice_id, export_on, sha, move=in_inbox)
        source = archive_path
    return _register(engine, practice_id, run, import_id, path, source, archive_path, sha, size, export_on,
                     dry_run, rejection, date_source)


def _register(engine: Engine, practice_id: str, run: RunInfo, import_id: str, path, source, archive_path,
              sha: str, size: int, export_on: date, dry_run: bool, rejection: dict | None, date_source: str) -> Job:
    job = Job(import_id=import_id, practice_id=practice_id, source=str(source), export_name=_shown(path),
              sha256=sha, size=size, exported_on=export_on.isoformat(), dry_run=dry_run,
              archive_path=str(archive_path) if archive_path else None, rejection=rejection,
              exported_on_source=date_source)
    job.save()
    records.register_import(
        engine, id=import_id, practice_id=practice_id, dag_run_id=run.run_id, map_index=run.map_index,
        run_type=run.run_type, export_name=_shown(path), export_sha256=sha, export_bytes=size,
        archive_path=job.archive_path, exported_on=export_on, exported_on_source=date_source, dry_run=dry_run,
        triggered_by=run.triggered_by)
    return job
