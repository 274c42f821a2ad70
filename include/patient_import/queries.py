"""Read-only queries behind the Import Results pages (issue #4): the list, one import, the chart.

What they return identifies patients by account number only: counts, problem lines and the
paths the store records for an import's files, never a stored patient's data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.patient_import import audit, changes, files, records, settings, storage
from include.patient_import.problems import OUTCOMES, Counts, Severity, Status
from include.patient_import.storage import StoragePath, path_of
from include.patient_import.store import Import, ImportProblem, ImportProblemCount, Practice, utc

_IMPORTS = Import.__table__
_PRACTICES = Practice.__table__
_PROBLEMS = ImportProblem.__table__
_PROBLEM_COUNTS = ImportProblemCount.__table__

MAX_PER_PAGE = 100
PROBLEMS_PER_PAGE = 200
MAX_PROBLEMS_PER_PAGE = 1_000
CHART_DAYS = 30

# The files of an import that can be downloaded: the column recording each, and its file area.
DOWNLOADS: dict[str, tuple[str, str]] = {
    "upload": ("upload_path", "outbox"),
    "rejected_rows": ("rejected_rows_path", "outbox"),
}


@dataclass(frozen=True)
class ImportSummary:
    id: str
    practice_id: str
    practice_name: str | None
    dag_run_id: str
    export_name: str
    exported_on: date
    dry_run: bool
    status: str
    counts: Counts
    started_at: datetime
    finished_at: datetime | None
    # The name the office gave the file: a backfill re-imports the archived copy, named
    # `<name>_<sha8>.<ext>` (`files.archive_path`); this is the name before archiving.
    original_name: str = ""
    # Whether the practice is in the registry; False for an id that exists only in old imports (a typo).
    registered: bool = True

    @property
    def duration(self) -> timedelta | None:
        """Wall time from registration to the final report; None while it is processing."""
        if self.finished_at is None or self.started_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class ImportPage:
    items: list[ImportSummary]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True)
class ProblemLine:
    row: int | None
    account_number: str | None
    field: str | None
    code: str
    severity: str
    message: str


@dataclass(frozen=True)
class CodeCount:
    """How many problems of one code an import has (`total`) and lists (`listed`; fewer for
    warnings beyond 1,000 per code and field, which are only counted)."""

    code: str
    severity: str
    total: int
    listed: int


@dataclass(frozen=True)
class ProblemFilter:
    """Which of an import's problems to show: by severity, by code, by account number (exact)."""

    severity: str | None = None
    code: str | None = None
    account_number: str | None = None

    def where(self, import_id: str) -> list:
        where = [_PROBLEMS.c.import_id == import_id]
        if self.severity:
            where.append(_PROBLEMS.c.severity == self.severity)
        if self.code:
            where.append(_PROBLEMS.c.code == self.code)
        if self.account_number:
            where.append(_PROBLEMS.c.account_number == self.account_number)
        return where


@dataclass(frozen=True)
class ImportDetail:
    summary: ImportSummary
    # One page of the problems the filter selects, in report order (SPEC §4).
    problems: list[ProblemLine]
    # Which of the import's files exist (recorded in the store and still on disk).
    files: dict[str, bool] = field(default_factory=dict)
    has_data_docs: bool = False
    # Figures of a file-level rejection (capacity, stored, new, ...): numbers, never patient data.
    details: dict = field(default_factory=dict)
    problems_total: int = 0  # listed problems the filter selects, on every page
    problems_page: int = 1
    problems_per_page: int = PROBLEMS_PER_PAGE
    problem_summary: list[CodeCount] = field(default_factory=list)
    # SPEC §8: per field, how many updated patients it changed; whether a changes file exists (the
    # import inserted or changed a value); the undo, and who did what (names, never patient values).
    field_changes: dict[str, int] = field(default_factory=dict)
    has_changes: bool = False
    undone_at: datetime | None = None
    undone_by: str | None = None
    audit: list[dict] = field(default_factory=list)
    # Whether the import waited for a person, why, and the answer (`records.approval_summary`, as
    # its report says it); None without a recorded decision.
    approval: dict | None = None
    has_undo_report: bool = False

    # `changes.undo_refusal` finds nothing against it, and it is not undone yet (an undone one may
    # be undone again to complete it, from `make undo` or the DAG's form).
    undoable: bool = False
    # An undone import's patients no undo could put back yet (a later import changed them again).
    undo_pending: int = 0

    @property
    def problems_pages(self) -> int:
        return max(1, -(-self.problems_total // self.problems_per_page))


@dataclass(frozen=True)
class DayCounts:
    day: date
    inserted: int
    updated: int
    rejected: int


def store_ready(conn: Connection) -> bool:
    """False before the first import has created the store's tables."""
    return sa.inspect(conn).has_table(_IMPORTS.name)


def _summary(row, names: dict[str, str], original: dict[str, str] | None = None,
             registered: set[str] | None = None) -> ImportSummary:
    return ImportSummary(
        id=row["id"], practice_id=row["practice_id"], practice_name=names.get(row["practice_id"]),
        dag_run_id=row["dag_run_id"], export_name=row["export_name"], exported_on=row["exported_on"],
        dry_run=bool(row["dry_run"]), status=row["status"],
        counts=Counts(**{name: int(row[name] or 0) for name in ("read", *OUTCOMES)}),
        started_at=utc(row["started_at"]), finished_at=utc(row["finished_at"]),
        original_name=(original or {}).get(row["id"], row["export_name"]),
        registered=registered is None or row["practice_id"] in registered)


def _archived_stem(name: str, sha256: str) -> str | None:
    """`name` without the `_<sha8>` that `files.archive_path` adds; None when it has none."""
    stem, dot, ext = name.rpartition(".")
    stem, ext = (stem, f".{ext}") if dot else (name, "")
    suffix = f"_{(sha256 or '')[:8]}"
    if len(suffix) < 9 or not stem.endswith(suffix):
        return None
    return stem[:-len(suffix)] + ext


def original_names(conn: Connection, rows) -> dict[str, str]:
    """Import id -> the file name the office dropped, for the rows that re-import an archived copy.

    The name recorded by the first import of the same file (practice and checksum) under another
    name; without one, the archived name less its `_<sha8>` (which `files.safe_name` may have changed).
    """
    archived = {row["id"]: stripped for row in rows
                if (stripped := _archived_stem(row["export_name"], row["export_sha256"])) is not None}
    if not archived:
        return {}
    wanted = {(row["practice_id"], row["export_sha256"]) for row in rows if row["id"] in archived}
    first: dict[tuple[str, str], str] = {}
    for practice_id, sha, name in conn.execute(
            sa.select(_IMPORTS.c.practice_id, _IMPORTS.c.export_sha256, _IMPORTS.c.export_name)
            .where(_IMPORTS.c.export_sha256.in_({sha for _, sha in wanted}))
            .order_by(_IMPORTS.c.started_at, _IMPORTS.c.id)):
        if (practice_id, sha) in wanted and _archived_stem(name, sha) is None:
            first.setdefault((practice_id, sha), name)
    return {row["id"]: first.get((row["practice_id"], row["export_sha256"]), archived[row["id"]])
            for row in rows if row["id"] in archived}


def practice_names(conn: Connection) -> dict[str, str]:
    """Every practice known to the store or named by an import, with its display name."""
    names = dict(conn.execute(sa.select(_PRACTICES.c.id, _PRACTICES.c.name)).all())
    for practice_id in conn.execute(sa.select(_IMPORTS.c.practice_id).distinct()).scalars():
        names.setdefault(practice_id, practice_id)
    return dict(sorted(names.items()))


def unregistered_practices(conn: Connection, registered: set[str]) -> dict[str, int]:
    """Practice ids that imports name but the registry does not (a typo in an old run's conf,
    a practice since removed), with how many imports each has; sorted by id."""
    rows = conn.execute(sa.select(_IMPORTS.c.practice_id, sa.func.count())
                        .where(_IMPORTS.c.practice_id.not_in(registered) if registered else sa.true())
                        .group_by(_IMPORTS.c.practice_id).order_by(_IMPORTS.c.practice_id)).all()
    return {practice_id: int(count) for practice_id, count in rows}


def list_imports(conn: Connection, *, practice_id: str | None = None, status: str | None = None,
                 run_id: str | None = None, page: int = 1, per_page: int = 25,
                 registered: set[str] | None = None) -> ImportPage:
    """Imports newest first (by when they started), filtered and paginated.

    Args:
        practice_id: only this practice's imports.
        status: only imports in this status (`processing` included).
        run_id: only the imports of this DAG run (exact `dag_run_id`).
        registered: the registry's practice ids, to mark the others' imports (`registered=False`);
            None marks none.
        page: 1-based; a page past the end is empty.
        per_page: 1 to `MAX_PER_PAGE`.
    Raises:
        ValueError: for an unknown status or a page or page size out of range.
    """
    if status is not None and status not in {s.value for s in Status}:
        raise ValueError(f"unknown import status {status!r}")
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"page must be >= 1 and per_page 1..{MAX_PER_PAGE}")
    where = []
    if practice_id:
        where.append(_IMPORTS.c.practice_id == practice_id)
    if status:
        where.append(_IMPORTS.c.status == status)
    if run_id:
        where.append(_IMPORTS.c.dag_run_id == run_id)
    total = conn.execute(sa.select(sa.func.count()).select_from(_IMPORTS).where(*where)).scalar_one()
    rows = conn.execute(sa.select(_IMPORTS).where(*where)
                        .order_by(_IMPORTS.c.started_at.desc(), _IMPORTS.c.id.desc())
                        .limit(per_page).offset((page - 1) * per_page)).mappings().all()
    names = practice_names(conn)
    original = original_names(conn, rows)
    return ImportPage(items=[_summary(r, names, original, registered) for r in rows], total=total, page=page,
                      per_page=per_page)


def _existing(path: str | None) -> bool:
    return bool(path and path_of(path).is_file())


def problem_summary(conn: Connection, import_id: str) -> list[CodeCount]:
    """Per code: severity, how many found and how many listed; errors first, then by code."""
    rows = conn.execute(sa.select(_PROBLEM_COUNTS.c.code, _PROBLEM_COUNTS.c.severity,
                                  sa.func.sum(_PROBLEM_COUNTS.c.total), sa.func.sum(_PROBLEM_COUNTS.c.listed))
                        .where(_PROBLEM_COUNTS.c.import_id == import_id)
                        .group_by(_PROBLEM_COUNTS.c.code, _PROBLEM_COUNTS.c.severity)).all()
    rank = {s.value: i for i, s in enumerate(Severity)}
    return sorted((CodeCount(code, severity, int(total), int(listed)) for code, severity, total, listed in rows),
                  key=lambda c: (rank.get(c.severity, len(rank)), c.code))


def problem_page(conn: Connection, import_id: str, problems: ProblemFilter = ProblemFilter(), *,
                 page: int = 1, per_page: int = PROBLEMS_PER_PAGE) -> tuple[list[ProblemLine], int]:
    """One page of an import's listed problems in report order, and how many the filter selects.

    Paged in SQL on the store's report position (index `ix_import_problems_*`): a page of an
    import with a million problems reads one page of rows.

    Raises:
        ValueError: for a page or page size out of range.
    """
    if page < 1 or not 1 <= per_page <= MAX_PROBLEMS_PER_PAGE:
        raise ValueError(f"page must be >= 1 and per_page 1..{MAX_PROBLEMS_PER_PAGE}")
    where = problems.where(import_id)
    if problems.account_number:
        total = conn.execute(sa.select(sa.func.count()).select_from(_PROBLEMS).where(*where)).scalar_one()
    else:
        # The listed counts the load recorded: a sum over a few codes, not a count over a million rows.
        counted = [_PROBLEM_COUNTS.c.import_id == import_id]
        if problems.severity:
            counted.append(_PROBLEM_COUNTS.c.severity == problems.severity)
        if problems.code:
            counted.append(_PROBLEM_COUNTS.c.code == problems.code)
        total = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(_PROBLEM_COUNTS.c.listed), 0))
                             .where(*counted)).scalar_one()
    rows = conn.execute(sa.select(_PROBLEMS.c.row_number, _PROBLEMS.c.account_number, _PROBLEMS.c.field,
                                  _PROBLEMS.c.code, _PROBLEMS.c.severity, _PROBLEMS.c.message)
                        .where(*where).order_by(_PROBLEMS.c.position, _PROBLEMS.c.id)
                        .limit(per_page).offset((page - 1) * per_page)).all()
    return [ProblemLine(*row) for row in rows], int(total)


def import_detail(conn: Connection, import_id: str, problems: ProblemFilter = ProblemFilter(), *,
                  page: int = 1, per_page: int = PROBLEMS_PER_PAGE,
                  registered: set[str] | None = None) -> ImportDetail | None:
    """One import with one page of its problems in report order (SPEC §4) and the per-code summary;
    None when there is no such import. Raises ValueError as `problem_page` does."""
    row = records.get_import(conn, import_id)
    if row is None:
        return None
    lines, total = problem_page(conn, import_id, problems, page=page, per_page=per_page)
    pending = changes.pending_undo(conn, import_id) if row["status"] == Status.UNDONE else 0
    try:
        details = json.loads(row["details"]) if row["details"] else {}
    except ValueError:
        details = {}
    return ImportDetail(
        summary=_summary(row, practice_names(conn), original_names(conn, [row]), registered), problems=lines,
        files={kind: _existing(row[column]) for kind, (column, _area) in DOWNLOADS.items()},
        has_data_docs=_existing(row["data_docs_path"]),
        details=details if isinstance(details, dict) else {},
        problems_total=total, problems_page=page, problems_per_page=per_page,
        problem_summary=problem_summary(conn, import_id),
        field_changes=changes.recorded_field_counts(conn, import_id),
        has_changes=changes.has_value_changes(conn, import_id),
        undoable=changes.undo_refusal(conn, row) is None and (row["status"] != Status.UNDONE or pending > 0),
        undo_pending=pending,
        undone_at=utc(row.get("undone_at")), undone_by=row.get("undone_by"),
        audit=[{**entry, "at": utc(entry["at"])} for entry in audit.entries(conn, import_id)],
        approval=records.approval_summary(row.get("approval")),
        has_undo_report=row.get("undone_at") is not None and undo_report(conn, import_id) is not None)


def undo_report(conn: Connection, import_id: str) -> StoragePath | None:
    """The undo's own report of an undone import (`files.undo_report_path`), when it exists inside
    the reports area; None otherwise. It holds counts and account numbers, no other patient value."""
    row = records.get_import(conn, import_id)
    if row is None or row.get("undone_at") is None:
        return None
    return _inside(files.undo_report_path(row["practice_id"], import_id), settings.area("reports"))


def _inside(path: StoragePath, root: StoragePath) -> StoragePath | None:
    if not storage.is_inside(path, root):
        return None
    found = path.resolve() if storage.is_local(path) else path
    return found if found.is_file() else None


def import_file(conn: Connection, import_id: str, kind: str) -> StoragePath | None:
    """The file of kind `upload` or `rejected_rows` that the store records for the import.

    Only a file inside its file area is returned (a path edited in the store cannot reach
    elsewhere); None when none is recorded or it is gone.
    """
    column, area = DOWNLOADS[kind]
    row = records.get_import(conn, import_id)
    if row is None or not row[column]:
        return None
    return _inside(path_of(row[column]), settings.area(area))


def data_docs_file(conn: Connection, import_id: str, relative: str) -> StoragePath | None:
    """A file of the import's Data Docs site, by its path inside the site; None outside or missing."""
    row = records.get_import(conn, import_id)
    if row is None or not row["data_docs_path"]:
        return None
    site = path_of(row["data_docs_path"]).parent
    if not storage.is_inside(site, settings.area("data_docs")):
        return None
    return _inside(site / (relative or "index.html"), site)


def daily_counts(conn: Connection, *, practice_id: str | None = None,
                 days: int = CHART_DAYS) -> dict[str, list[DayCounts]]:
    """Patients inserted, updated and rejected per practice per day (UTC day the import started).

    Covers the `days` days up to the newest import; dry runs are left out (they change nothing).
    Every day of the window is present, with zeros on days without imports.
    """
    where: list[sa.ColumnElement[bool]] = [_IMPORTS.c.dry_run.is_(False)]
    if practice_id:
        where.append(_IMPORTS.c.practice_id == practice_id)
    newest = conn.execute(sa.select(sa.func.max(_IMPORTS.c.started_at)).where(*where)).scalar()
    if newest is None:
        return {}
    last = utc(newest).date()
    first = last - timedelta(days=days - 1)
    rows = conn.execute(sa.select(_IMPORTS.c.practice_id, _IMPORTS.c.started_at, _IMPORTS.c.inserted,
                                  _IMPORTS.c.updated, _IMPORTS.c.rejected)
                        .where(*where, _IMPORTS.c.started_at >= datetime.combine(first, time.min, timezone.utc)))
    totals: dict[str, dict[date, list[int]]] = {}
    for practice, started_at, inserted, updated, rejected in rows:
        day = totals.setdefault(practice, {}).setdefault(utc(started_at).date(), [0, 0, 0])
        day[0] += inserted or 0
        day[1] += updated or 0
        day[2] += rejected or 0
    window = [first + timedelta(days=i) for i in range(days)]
    return {practice: [DayCounts(d, *by_day.get(d, (0, 0, 0))) for d in window]
            for practice, by_day in sorted(totals.items())}
