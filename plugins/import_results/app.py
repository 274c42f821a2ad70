"""The Import Results web app, mounted by the Airflow API server under `/import-results`.

Security: plugin routes are not protected by Airflow, so every route here depends on Airflow's own
`requires_access_dag` for the `patient_import` DAG: no valid token (the `Authorization: Bearer`
header, or the `_token` cookie the UI sets) → 401; reading needs the DAG's read permission; the
downloads of patient files (upload, rejected rows, changes) need permission to run it (a viewer
gets 403), and each download is recorded in the import's audit with the user's name. Pages show
account numbers and never any other patient value. The Undo button is shown only to users Airflow
lets run `patient_import_undo`; it triggers that DAG through Airflow's own REST API (see
`import_detail`). The data comes from the patient store through
`include.patient_import.queries`, read with the `patient_store` connection when one is defined.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import mimetypes
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path as FilePath
from typing import Annotated, Literal
from urllib.parse import quote, urlencode

import jinja2
import sqlalchemy as sa
from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.configuration import conf
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from markupsafe import Markup
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from import_results.chart import SERIES, practice_chart
from include.patient_import import audit, changes, queries, settings, storage
from include.patient_import.catalogue import Severity
from include.patient_import.files import IMPORT_ID_PATTERN, MAX_ID_LENGTH
from include.patient_import.problem_table import LISTED_PER_CODE_AND_FIELD
from include.patient_import.problems import Status
from include.patient_import.store import Practice, airflow_store_url, create_store_engine, utc

log = logging.getLogger(__name__)

DAG_ID = "patient_import"
UNDO_DAG_ID = "patient_import_undo"
PROBLEMS_PER_PAGE = queries.PROBLEMS_PER_PAGE

ImportId = Annotated[str, Path(pattern=IMPORT_ID_PATTERN)]
PracticeFilter = Annotated[str, Query(pattern=rf"^[A-Za-z0-9_]{{0,{MAX_ID_LENGTH}}}$")]
StatusFilter = Annotated[Literal["", *[s.value for s in Status]], Query()]  # "" = every status
PageNumber = Annotated[int, Query(ge=1, le=100_000)]
PageSize = Annotated[int, Query(ge=1, le=queries.MAX_PER_PAGE)]
# Problems are paged in SQL: an import can list millions (every error and skip, SPEC §7).
ProblemPageNumber = Annotated[int, Query(ge=1, le=100_000_000)]
ProblemPageSize = Annotated[int, Query(ge=1, le=queries.MAX_PROBLEMS_PER_PAGE)]
SeverityFilter = Annotated[Literal["", *[s.value for s in Severity]], Query()]  # "" = every severity
CodeFilter = Annotated[str, Query(pattern=r"^[a-z0-9_]{0,64}$")]
# A DAG run id as Airflow makes them ("manual__2026-11-20T09:00:00+00:00", "backfill__…"); printable only.
RunIdFilter = Annotated[str, Query(max_length=250, pattern=r"^[^\x00-\x1f\x7f]*$")]
DagIdFilter = Annotated[str, Query(max_length=250, pattern=r"^[A-Za-z0-9_.-]*$")]
# Typed as the office writes it ("#00123", " 123 "): normalised as the import stores it. The page's
# Account # box holds no more (`account_search_length`), so the form never meets the API's 422.
ACCOUNT_SEARCH_LENGTH = 64
AccountSearch = Annotated[str, Query(max_length=ACCOUNT_SEARCH_LENGTH)]

_read_access = requires_access_dag(method="GET", param_dag_id=DAG_ID)
_run_access = requires_access_dag(method="POST", access_entity=DagAccessEntity.RUN, param_dag_id=DAG_ID)

app = FastAPI(title="Import Results", dependencies=[Depends(_read_access)],
              docs_url=None, redoc_url=None, openapi_url=None)

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(FilePath(__file__).with_name("templates")),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_templates.globals["account_search_length"] = ACCOUNT_SEARCH_LENGTH


# ---------------------------------------------------------------- the store

def _store_url() -> str:
    """The `patient_store` connection as a SQLAlchemy URL; the embedded SQLite store without one."""
    return airflow_store_url() or settings.default_store_url()


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    return create_store_engine(url, read_only=True)


@lru_cache(maxsize=4)
def _audit_engine(url: str) -> Engine:
    """The one writer of the UI: audit entries of downloads (SPEC §8)."""
    return create_store_engine(url)


def store() -> Iterator[Connection | None]:
    """A connection to the store; None before the first import has created it."""
    with _engine(_store_url()).connect() as conn:
        yield conn if queries.store_ready(conn) else None


Store = Annotated[Connection | None, Depends(store)]


# ---------------------------------------------------------------- rendering

# The pages load nothing from elsewhere (they must work offline) and are framed only by Airflow.
# `connect-src 'self'`: the Undo button posts to Airflow's REST API on the same origin, nowhere else.
_PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
                "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'")
# Data Docs are generated HTML served from Airflow's origin: sandboxed into an origin of their own,
# their scripts can reach neither the user's session nor the API.
_DATA_DOCS_POLICY = ("sandbox allow-scripts; default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:; "
                     "form-action 'none'; base-uri 'none'; frame-ancestors 'self'")


def _security_headers(referrer: str, policy: str, **more: str):
    """The middleware of both apps: the headers every response carries (`more`: extra ones)."""
    async def middleware(request: Request, call_next):
        response = await call_next(request)
        # Pages and files hold patient references: never kept by a browser or a proxy.
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = referrer
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers.update(more)
        return response
    return middleware


app.middleware("http")(_security_headers("same-origin", _PAGE_POLICY))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    if "text/html" in request.headers.get("accept", ""):
        return _page(request, "error.html", status_code=exc.status_code, status=exc.status_code,
                     detail=str(exc.detail), login_url=f"{_airflow_root(request)}/auth/login")
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _url(request: Request, name: str, query: dict | None = None, **params) -> str:
    # Path parameters are quoted: an id recorded from a hostile conf before ids were checked
    # ("../../x") must give a dead link, not a 500 on every list page (SPEC §7).
    params = {key: value if key == "path" else quote(str(value), safe="") for key, value in params.items()}
    path = request.scope.get("root_path", "") + request.app.url_path_for(name, **params)
    query = {k: v for k, v in (query or {}).items() if v not in (None, "")}
    return f"{path}?{urlencode(query)}" if query else path


def _airflow_root(request: Request) -> str:
    return request.scope.get("app_root_path", "").rstrip("/")


def _run_url(request: Request, run_id: str) -> str:
    """The DAG run in the Airflow grid."""
    return f"{_airflow_root(request)}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"


def _duration(value: timedelta | None) -> str:
    if value is None:
        return ""
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _when(value: datetime | str | None, zone: bool = True) -> Markup:
    """A UTC time to the minute (or its ISO text, as the approval's `answered_at`), in a `<time>` the
    page's script shows in the time zone chosen in Airflow's UI (UTC without script)."""
    if value is None:
        return Markup("")
    if isinstance(value, str):
        value = utc(datetime.fromisoformat(value))
    text = f"{value:%Y-%m-%d %H:%M}" + (" UTC" if zone else "")
    return Markup('<time datetime="{}"{}>{}</time>').format(
        value.isoformat(), Markup(" data-zone") if zone else Markup(""), text)


_templates.filters.update(duration=_duration, when=_when)


def _page(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    context.setdefault("home_url", _url(request, "import_list"))
    html = _templates.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code)


def _may_run(user, dag_id: str = DAG_ID) -> bool:
    """Whether the user may run the DAG (`patient_import`: download patient files;
    `patient_import_undo`: undo); only decides what the page offers, the routes check for themselves."""
    return get_auth_manager().is_authorized_dag(
        method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user)


def _summary_json(request: Request, item: queries.ImportSummary) -> dict:
    data = jsonable_encoder(item)
    duration = item.duration
    data["duration_seconds"] = round(duration.total_seconds(), 3) if duration is not None else None
    data["dag_run_url"] = _run_url(request, item.dag_run_id)
    data["run_imports_url"] = _url(request, "import_list", {"run_id": item.dag_run_id})
    data["url"] = _url(request, "import_detail", import_id=item.id)
    return data


def _registry(conn: Connection | None) -> dict[str, str]:
    """The registry's practices, id -> name: the practices the pages offer (SPEC §6).

    Ids that only old imports name (a typo in a run's conf before conf was checked) are not
    practices; the list page names them apart. Without a readable registry, the store's practice
    rows (kept in step with the registry by every import) stand in.
    """
    from include.patient_import.practices import load_practices
    from include.patient_import.problems import ConfigurationError

    try:
        return {p.id: p.name for p in sorted(load_practices().values(), key=lambda p: p.id)}
    except ConfigurationError:
        if conn is None:
            return {}
        return dict(conn.execute(sa.select(Practice.__table__.c.id, Practice.__table__.c.name)
                                 .order_by(Practice.__table__.c.id)).all())


def _list(conn: Connection | None, practice: str, status: str, page: int, per_page: int, run_id: str = "",
          registered: set[str] | None = None) -> queries.ImportPage:
    if conn is None:
        return queries.ImportPage(items=[], total=0, page=page, per_page=per_page)
    return queries.list_imports(conn, practice_id=practice or None, status=status or None, run_id=run_id or None,
                                page=page, per_page=per_page, registered=registered)


def _problem_filter(severity: str, code: str, account: str) -> queries.ProblemFilter:
    account_number = None
    if account.strip():
        from include.patient_import.normalize import normalize_account_number

        # An account number the import could not have stored matches nothing ("-" never is one).
        account_number = normalize_account_number(account) or "-"
    return queries.ProblemFilter(severity=severity or None, code=code or None, account_number=account_number)


def _detail(conn: Connection | None, import_id: str, problems: queries.ProblemFilter = queries.ProblemFilter(),
            page: int = 1, per_page: int = queries.PROBLEMS_PER_PAGE) -> queries.ImportDetail:
    detail = (queries.import_detail(conn, import_id, problems, page=page, per_page=per_page,
                                    registered=set(_registry(conn)))
              if conn is not None else None)
    if detail is None:
        raise HTTPException(404, f"no import {import_id}")
    return detail


# ---------------------------------------------------------------- pages

@app.get("/", response_class=HTMLResponse, name="import_list")
def import_list(request: Request, conn: Store, practice: PracticeFilter = "", status: StatusFilter = "",
                run_id: RunIdFilter = "", dag_id: DagIdFilter = "",
                page: PageNumber = 1, per_page: PageSize = 25) -> HTMLResponse:
    registry = _registry(conn)
    result = _list(conn, practice, status, page, per_page, run_id, set(registry))
    unregistered = queries.unregistered_practices(conn, set(registry)) if conn is not None else {}
    series = queries.daily_counts(conn, practice_id=practice or None) if conn is not None else {}
    # A typo's imports get no chart of their own unless asked for by name.
    charts = [practice_chart(pid, registry.get(pid, pid), days) for pid, days in series.items()
              if pid in registry or pid == practice]
    filters = {"practice": practice, "status": status, "run_id": run_id,
               "per_page": per_page if per_page != 25 else None}
    return _page(
        request, "list.html", result=result, practices=registry, unregistered=unregistered,
        unregistered_urls={pid: _url(request, "import_list", {"practice": pid}) for pid in unregistered},
        statuses=[s.value for s in Status], practice=practice, status=status, run_id=run_id,
        # The DAG-run tab of Airflow opens this page for every DAG's runs; only patient_import imports.
        other_dag=dag_id if dag_id and dag_id != DAG_ID else "",
        run_url=_run_url(request, run_id) if run_id else None,
        charts=charts, series=SERIES,
        rows=[(item, _url(request, "import_detail", import_id=item.id), _run_url(request, item.dag_run_id),
               _url(request, "import_list", {"run_id": item.dag_run_id}))
              for item in result.items],
        prev_url=_url(request, "import_list", {**filters, "page": page - 1}) if page > 1 else None,
        next_url=_url(request, "import_list", {**filters, "page": page + 1}) if page < result.pages else None,
        refresh=any(item.status == Status.PROCESSING for item in result.items))


@app.get("/imports/{import_id}", response_class=HTMLResponse, name="import_detail")
def import_detail(request: Request, import_id: ImportId, conn: Store, user: GetUserDep,
                  problems_page: ProblemPageNumber = 1, severity: SeverityFilter = "", code: CodeFilter = "",
                  account: AccountSearch = "") -> HTMLResponse:
    detail = _detail(conn, import_id, _problem_filter(severity, code, account), problems_page, PROBLEMS_PER_PAGE)
    pages = detail.problems_pages
    filters = {"severity": severity, "code": code, "account": account.strip()}

    def link(number: int) -> str:
        return _url(request, "import_detail", {**filters, "problems_page": number}, import_id=import_id)

    return _page(
        request, "detail.html", detail=detail, item=detail.summary,
        problems=detail.problems, problems_page=problems_page, filters=filters,
        severities=[s.value for s in Severity], listed_cap=LISTED_PER_CODE_AND_FIELD,
        capped=any(c.listed < c.total for c in detail.problem_summary),
        filter_url=_url(request, "import_detail", import_id=import_id),
        code_urls={c.code: _url(request, "import_detail", {"code": c.code}, import_id=import_id)
                   for c in detail.problem_summary},
        problems_pages=pages, prev_url=link(problems_page - 1) if problems_page > 1 else None,
        next_url=link(problems_page + 1) if problems_page < pages else None,
        run_url=_run_url(request, detail.summary.dag_run_id), may_download=_may_run(user),
        required_actions_url=f"{_airflow_root(request)}/required_actions",
        run_imports_url=_url(request, "import_list", {"run_id": detail.summary.dag_run_id}),
        downloads=[(kind, label, _url(request, "download", import_id=import_id, kind=kind))
                   for kind, label in (("upload", "Upload-ready Cash Practice CSV"),
                                       ("rejected_rows", "Rejected rows CSV"),
                                       ("changes", "Changes CSV (before and after)"))
                   if detail.files.get(kind) or (kind == "changes" and detail.has_changes)],
        # The Undo button posts to Airflow's REST API from the page (the browser's `_token` cookie
        # authenticates it, as it does the UI's own requests): Airflow validates the typed param,
        # checks the user may run the undo DAG and records who triggered it. Without a user who may,
        # no button (and the API would refuse with 403 anyway).
        may_undo=detail.undoable and _may_run(user, UNDO_DAG_ID),
        undo_api_url=f"{_airflow_root(request)}/api/v2/dags/{UNDO_DAG_ID}/dagRuns",
        undo_runs_url=f"{_airflow_root(request)}/dags/{UNDO_DAG_ID}/runs/",
        data_docs_url=_url(request, "data_docs", import_id=import_id, path="index.html")
        if detail.has_data_docs else None,
        undo_report_url=_url(request, "undo_report", import_id=import_id) if detail.has_undo_report else None)


@app.get("/imports/{import_id}/undo-report", name="undo_report")
def undo_report(import_id: ImportId, conn: Store) -> Response:
    """The undo's own JSON report (SPEC §8): counts, and the account numbers left `changed_since`.
    Account numbers only, as the pages show them: readers of the DAG may read it."""
    path = queries.undo_report(conn, import_id) if conn is not None else None
    if path is None:
        raise HTTPException(404, f"import {import_id} has no undo report")
    return _file_response(path, media_type="application/json")


@app.get("/imports/{import_id}/files/{kind}", name="download", dependencies=[Depends(_run_access)])
def download(import_id: ImportId, kind: Literal["upload", "rejected_rows", "changes"], conn: Store,
             user: GetUserDep) -> Response:
    """One of the import's patient files, as an attachment; only a file the store records for it.
    The changes file (SPEC §8) is made from the store's change log as it is sent. Every download is
    recorded in the import's audit first: a download that cannot be recorded is not served."""
    if kind == "changes":
        if conn is None or not changes.has_value_changes(conn, import_id):
            raise HTTPException(404, f"import {import_id} changed no patient: it has no changes file")
        _record_download(import_id, kind, user)
        url = _store_url()

        def blocks() -> Iterator[bytes]:
            # A connection of its own: the request's closes once the route returns.
            with _engine(url).connect() as reader:
                for text in changes.changes_csv(reader, import_id):
                    yield text.encode("utf-8")

        return StreamingResponse(blocks(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{import_id}_changes.csv"'})
    path = queries.import_file(conn, import_id, kind) if conn is not None else None
    if path is None:
        raise HTTPException(404, f"import {import_id} has no {kind.replace('_', ' ')} file")
    _record_download(import_id, kind, user)
    return _file_response(path, media_type="text/csv; charset=utf-8", filename=path.name)


def _record_download(import_id: str, kind: str, user) -> None:
    """Audit a download before it is served (SPEC §8). On SQLite a long load holds the one write
    lock; after the busy timeout the answer is 503, "try again", and the file is not served."""
    try:
        audit.record(_audit_engine(_store_url()), import_id, audit.DOWNLOADED, user.get_name(), kind)
    except OperationalError:
        log.warning("download of the %s file of import %s not recorded: the store is busy", kind, import_id)
        raise HTTPException(503, "the patient store is busy with an import: try again in a minute",
                            headers={"Retry-After": "60"}) from None


@app.get("/imports/{import_id}/data-docs/{path:path}", name="data_docs")
def data_docs(request: Request, import_id: ImportId, path: str, conn: Store) -> Response:
    """The import's Great Expectations Data Docs (counts and row numbers, no patient values): a
    redirect to the same file under a signed address that holds for `DATA_DOCS_LINK_HOURS`.

    Why signed: the pages are sandboxed into an origin of their own (`_DATA_DOCS_POLICY`), and a
    browser sends the UI's `_token` cookie (SameSite=Lax) with none of their requests: not their
    styles, scripts and fonts, not their links to the validation pages. The signature, made here
    for a user Airflow let read the DAG, stands in for the cookie for the whole site.
    """
    found = queries.data_docs_file(conn, import_id, path) if conn is not None else None
    if found is None:
        raise HTTPException(404, "no such Data Docs page")
    expires = int(datetime.now().timestamp()) + DATA_DOCS_LINK_HOURS * 3600
    target = (f"{_airflow_root(request)}{DATA_DOCS_PREFIX}/{quote(import_id, safe='')}/{expires}/"
              f"{_signature(import_id, expires)}/{quote(path)}")
    return RedirectResponse(target, status_code=307)


# ---------------------------------------------------------------- Data Docs, signed

DATA_DOCS_PREFIX = "/import-results-docs"
DATA_DOCS_LINK_HOURS = 12
_SIGNING_KEY_FALLBACK = os.urandom(32)


def _signing_key() -> bytes:
    """Derived from Airflow's JWT secret (shared by every API server worker); one of the process's own
    when none is set (a link then holds on the worker that made it only)."""
    secret = conf.get("api_auth", "jwt_secret", fallback="") or ""
    return hashlib.sha256(b"import-results-data-docs\0" + secret.encode()).digest() if secret \
        else _SIGNING_KEY_FALLBACK


def _signature(import_id: str, expires: int) -> str:
    mac = hmac.new(_signing_key(), f"{import_id}\0{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


docs_app = FastAPI(title="Import Results Data Docs", docs_url=None, redoc_url=None, openapi_url=None)


# Scripts yes, but in an opaque origin: they reach neither the user's session nor the API;
# styles, scripts, fonts and images only from this server (the site's own `static/vendor/`). No
# route here sets a policy of its own. Fonts are fetched in CORS mode, and a sandboxed page's
# origin is "null": any origin may read them.
docs_app.middleware("http")(_security_headers("no-referrer", _DATA_DOCS_POLICY,
                                              **{"Access-Control-Allow-Origin": "*"}))


@docs_app.get("/{import_id}/{expires}/{signature}/{path:path}", name="signed_data_docs")
def signed_data_docs(import_id: ImportId, expires: int, signature: str, path: str, conn: Store) -> Response:
    """A file of the import's Data Docs site, for a valid unexpired signature; 404 otherwise (an
    expired link says so: reopen it from the import's page)."""
    if not hmac.compare_digest(signature, _signature(import_id, expires)):
        raise HTTPException(404, "no such Data Docs page")
    if expires < datetime.now().timestamp():
        raise HTTPException(410, "this Data Docs link has expired: open Data Docs again from Import Results")
    found = queries.data_docs_file(conn, import_id, path) if conn is not None else None
    if found is None:
        raise HTTPException(404, "no such Data Docs page")
    return _file_response(found)


def _file_response(path, *, media_type: str | None = None, filename: str | None = None,
                   headers: dict | None = None) -> Response:
    """A file of the file areas: sent from the disk, or read from the object store."""
    if storage.is_local(path):
        return FileResponse(path, media_type=media_type, filename=filename, headers=headers)
    headers = dict(headers or {})
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    media_type = media_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"

    def blocks() -> Iterator[bytes]:
        # An upload file can be hundreds of megabytes: streamed, never held whole in memory.
        with path.open("rb") as handle:
            while block := handle.read(1024 * 1024):
                yield block

    return StreamingResponse(blocks(), media_type=media_type, headers=headers)


# ---------------------------------------------------------------- JSON, for scripts and tests

@app.get("/api/imports", name="api_import_list")
def api_import_list(request: Request, conn: Store, practice: PracticeFilter = "", status: StatusFilter = "",
                    run_id: RunIdFilter = "", page: PageNumber = 1, per_page: PageSize = 25) -> dict:
    result = _list(conn, practice, status, page, per_page, run_id, set(_registry(conn)))
    return {"imports": [_summary_json(request, item) for item in result.items], "total": result.total,
            "page": result.page, "per_page": result.per_page, "pages": result.pages}


@app.get("/api/imports/{import_id}", name="api_import_detail")
def api_import_detail(request: Request, import_id: ImportId, conn: Store, problems_page: ProblemPageNumber = 1,
                      problems_per_page: ProblemPageSize = queries.PROBLEMS_PER_PAGE, severity: SeverityFilter = "",
                      code: CodeFilter = "", account: AccountSearch = "") -> dict:
    """One import, one page of its problems (filtered by severity, code, account number) and the
    per-code summary of all of them."""
    detail = _detail(conn, import_id, _problem_filter(severity, code, account), problems_page, problems_per_page)
    return {"import": _summary_json(request, detail.summary),
            "problems": jsonable_encoder(detail.problems), "problems_total": detail.problems_total,
            "problems_page": detail.problems_page, "problems_per_page": detail.problems_per_page,
            "problems_pages": detail.problems_pages,
            "problem_summary": jsonable_encoder(detail.problem_summary), "files": detail.files,
            "data_docs": detail.has_data_docs, "details": detail.details,
            "changes": {"fields": detail.field_changes, "file": detail.has_changes},
            "undo": {"undone_at": jsonable_encoder(detail.undone_at), "undone_by": detail.undone_by,
                     "pending": detail.undo_pending, "undoable": detail.undoable,
                     "report_url": _url(request, "undo_report", import_id=import_id)
                     if detail.has_undo_report else None},
            "approval": detail.approval, "audit": jsonable_encoder(detail.audit)}
