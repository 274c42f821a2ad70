"""The patient store: tables, engine and the per-practice lock (SPEC §5, §6).

The schema is created by the Alembic migrations in `migrations/`; these models are their mirror for
queries and must change together with a new migration (tests/patient_import/test_store_schema.py
compares them). The patient columns an export sets are built from `schema.FIELDS`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, overload

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from include.patient_import import settings
from include.patient_import.files import IMPORT_ID_LENGTH
from include.patient_import.schema import store_columns

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_SECONDS = 60


class Base(DeclarativeBase):
    if TYPE_CHECKING:
        # Every model here is mapped to one Table; SQLAlchemy types `__table__` as any FromClause,
        # which `insert`, `update` and `delete` do not take.
        __table__: ClassVar[sa.Table]


class Practice(Base):
    __tablename__ = "practices"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    capacity: Mapped[int] = mapped_column(sa.Integer)
    systems: Mapped[str] = mapped_column(sa.Text, default="")  # comma-separated, sorted
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


_STORE_TYPES = {"date": sa.Date, "text": sa.Text}


def _patient_value_columns() -> list[sa.Column]:
    """The patient columns an export sets, from `schema.FIELDS` (types, widths, NOT NULL defaults)."""
    return [sa.Column(name, sa.String(width) if kind == "varchar" else _STORE_TYPES[kind](),
                      nullable=default is None, default=default)
            for name, kind, width, default in store_columns()]


class Patient(Base):
    """One patient of one practice (SPEC §5). `id` is Cash Practice's own id for the patient: the
    upload file's ClientID. The columns an export sets come from `schema.FIELDS`."""

    __table__ = sa.Table(
        "patients", Base.metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("practice_id", sa.String(64), sa.ForeignKey("practices.id"), nullable=False, index=True),
        *_patient_value_columns(),
        sa.Column("last_seen_exported_on", sa.Date),
        sa.Column("created_import_id", sa.String(IMPORT_ID_LENGTH)),
        sa.Column("updated_import_id", sa.String(IMPORT_ID_LENGTH)),
        sa.UniqueConstraint("practice_id", "third_party_acct_number", name="uq_patients_practice_acct"),
    )


class Import(Base):
    __tablename__ = "imports"

    id: Mapped[str] = mapped_column(sa.String(IMPORT_ID_LENGTH), primary_key=True)
    practice_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    dag_run_id: Mapped[str] = mapped_column(sa.Text)
    map_index: Mapped[int] = mapped_column(sa.Integer, default=-1)
    run_type: Mapped[str] = mapped_column(sa.String(32), default="manual")
    export_name: Mapped[str] = mapped_column(sa.Text)
    export_sha256: Mapped[str] = mapped_column(sa.String(64))
    export_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    archive_path: Mapped[str | None] = mapped_column(sa.Text)
    exported_on: Mapped[date] = mapped_column(sa.Date)
    # Where the export date came from: conf, file_name or landed (SPEC §6; migration 0003).
    exported_on_source: Mapped[str | None] = mapped_column(sa.String(16))
    dry_run: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    status: Mapped[str] = mapped_column(sa.String(32), index=True)
    read: Mapped[int] = mapped_column(sa.Integer, default=0)
    inserted: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated: Mapped[int] = mapped_column(sa.Integer, default=0)
    unchanged: Mapped[int] = mapped_column(sa.Integer, default=0)
    skipped: Mapped[int] = mapped_column(sa.Integer, default=0)
    rejected: Mapped[int] = mapped_column(sa.Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    loaded_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    report_path: Mapped[str | None] = mapped_column(sa.Text)
    upload_path: Mapped[str | None] = mapped_column(sa.Text)
    rejected_rows_path: Mapped[str | None] = mapped_column(sa.Text)
    data_docs_path: Mapped[str | None] = mapped_column(sa.Text)
    quarantine_path: Mapped[str | None] = mapped_column(sa.Text)
    details: Mapped[str | None] = mapped_column(sa.Text)  # JSON: figures of a rejection (capacity, ...)
    # SPEC §8 (migration 0004): per field, how many updated patients it changed (JSON object), and
    # when and by whom the import was undone.
    field_changes: Mapped[str | None] = mapped_column(sa.Text)
    undone_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    undone_by: Mapped[str | None] = mapped_column(sa.Text)
    # JSON list of the export's canonical fields, recorded at validate (migration 0005).
    export_columns: Mapped[str | None] = mapped_column(sa.Text)
    # JSON of the approval decision and answer (`approval.py`; migration 0005).
    approval: Mapped[str | None] = mapped_column(sa.Text)


class ImportRow(Base):
    """The one outcome of each row read (SPEC §4)."""

    __tablename__ = "import_rows"

    # No foreign key to `imports` (migration 0006): a million rows an import paid a million
    # per-row key checks on PostgreSQL; only the load writes them, with its import's row in hand.
    import_id: Mapped[str] = mapped_column(sa.String(IMPORT_ID_LENGTH), primary_key=True)
    row_number: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    account_number: Mapped[str | None] = mapped_column(sa.String(32))
    outcome: Mapped[str] = mapped_column(sa.String(16))
    code: Mapped[str | None] = mapped_column(sa.String(64))
    # An updated row's changed field names, comma-separated (SPEC §8; migration 0004): names, no values.
    changed_fields: Mapped[str | None] = mapped_column(sa.Text)


class ImportProblem(Base):
    """The problems an import lists (problem_table: warnings beyond the cap are only counted)."""

    __tablename__ = "import_problems"
    # Import Results pages through these in SQL (migration 0002): in report order, by severity,
    # by code, by account number.
    __table_args__ = (
        sa.Index("ix_import_problems_position", "import_id", "position"),
        sa.Index("ix_import_problems_severity", "import_id", "severity", "position"),
        sa.Index("ix_import_problems_code", "import_id", "code", "position"),
        sa.Index("ix_import_problems_account", "import_id", "account_number", "position"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    import_id: Mapped[str] = mapped_column(sa.String(IMPORT_ID_LENGTH), sa.ForeignKey("imports.id"))
    row_number: Mapped[int | None] = mapped_column(sa.Integer)
    account_number: Mapped[str | None] = mapped_column(sa.String(32))
    field: Mapped[str | None] = mapped_column(sa.Text)
    code: Mapped[str] = mapped_column(sa.String(64))
    severity: Mapped[str] = mapped_column(sa.String(8))
    message: Mapped[str] = mapped_column(sa.Text)
    # Report order (SPEC §4: by row, then field), as one sortable number within the import.
    position: Mapped[int | None] = mapped_column(sa.BigInteger)


class ImportProblemCount(Base):
    """Per import, code and field: how many problems were found and how many are listed."""

    __tablename__ = "import_problem_counts"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    import_id: Mapped[str] = mapped_column(sa.String(IMPORT_ID_LENGTH), sa.ForeignKey("imports.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(64))
    field: Mapped[str | None] = mapped_column(sa.Text)
    severity: Mapped[str] = mapped_column(sa.String(8))
    listed: Mapped[int] = mapped_column(sa.BigInteger)
    total: Mapped[int] = mapped_column(sa.BigInteger)


# The patient columns an import writes and an undo puts back: every stored value and the bookkeeping
# that moves with them (the account number is the key; `created_import_id` never changes after the
# insert).
IMAGE_COLUMNS: tuple[str, ...] = tuple(name for name, *_ in store_columns() if name != "third_party_acct_number") + (
    "last_seen_exported_on", "updated_import_id")


def _image_columns(prefix: str) -> list[sa.Column]:
    patients = Patient.__table__
    return [sa.Column(f"{prefix}{name}", patients.c[name].type, nullable=True) for name in IMAGE_COLUMNS]


class PatientChange(Base):
    """The change log (SPEC §8; migration 0004): one row per patient an import wrote, with the
    values it replaced (`before_*`, all NULL for an insert) and the values it wrote (`after_*`).

    `action` is `inserted`, `updated`, or `seen` (unchanged, but its `last_seen_exported_on`
    moved forward: an undo moves it back). `reverted_at` is set when an undo put the before-image
    back; the entries an undo left because a later import changed the patient again stay NULL.
    """

    __table__ = sa.Table(
        "patient_changes", Base.metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        # No foreign key to `imports`, as `import_rows` (migration 0006).
        sa.Column("import_id", sa.String(IMPORT_ID_LENGTH), nullable=False, index=True),
        sa.Column("practice_id", sa.String(64), nullable=False),
        sa.Column("third_party_acct_number", sa.String(32), nullable=False),
        sa.Column("patient_id", sa.Integer, nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reverted_at", sa.DateTime(timezone=True), nullable=True),
        *_image_columns("before_"),
        *_image_columns("after_"),
    )


class ImportAudit(Base):
    """Who did what to an import and when (SPEC §8; migration 0004): `triggered`, `undone`,
    `approved`, `downloaded` (detail: which file). Names and file kinds, never patient values."""

    __tablename__ = "import_audit"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    import_id: Mapped[str] = mapped_column(sa.String(IMPORT_ID_LENGTH), sa.ForeignKey("imports.id"), index=True)
    action: Mapped[str] = mapped_column(sa.String(32))
    who: Mapped[str | None] = mapped_column(sa.Text)
    detail: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


STORE_CONN_ID = "patient_store"


def url_from_connection(conn_type: str | None, host: str | None = None, login: str | None = None,
                        password: str | None = None, port: int | None = None, schema: str | None = None,
                        extra: str | Mapping[str, object] | None = None) -> str:
    """The SQLAlchemy URL for the fields of an Airflow connection (`patient_store`), without Airflow.

    `conn_type` `sqlite`: the database file's path is in `host` (where Airflow keeps it).
    `postgres` / `postgresql`: a psycopg 3 URL; `extra` (a mapping or its JSON text, as Airflow
    holds it) gives libpq's connection options, e.g. `{"sslmode": "verify-full"}`, as the URL's
    query. Raises ValueError for any other type, or an `extra` that is not a JSON object.
    """
    kind = (conn_type or "").lower()
    if kind == "sqlite":
        return f"sqlite:///{host}"
    if kind in ("postgres", "postgresql"):
        url = sa.URL.create("postgresql+psycopg", username=login or None, password=password or None,
                            host=host or None, port=port or None, database=schema or None,
                            query={key: str(value) for key, value in _extra_options(extra).items()})
        return url.render_as_string(hide_password=False)
    raise ValueError(f"patient_store connection type {conn_type!r} is not supported (use sqlite or postgres)")


def _extra_options(extra: str | Mapping[str, object] | None) -> Mapping[str, object]:
    if not extra:
        return {}
    options = json.loads(extra) if isinstance(extra, str) else extra
    if not isinstance(options, Mapping):
        raise ValueError("the patient_store connection's extra must be a JSON object")
    return {key: value for key, value in options.items() if value is not None}


def airflow_store_url(conn_id: str = STORE_CONN_ID) -> str | None:
    """The `patient_store` connection read through Airflow (`airflow.sdk.Connection`: environment
    variables, secrets backends, and Airflow's database where the process may read it), as a
    SQLAlchemy URL (`url_from_connection`); None when it is not defined: the embedded SQLite store.

    The one way from Airflow to the store, for the DAG, the Import Results plugin, scripts/ and the
    init service (`migrate_store`). Airflow is imported here only, so the package stays Airflow-free.
    """
    from airflow.sdk import Connection as AirflowConnection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = AirflowConnection.get(conn_id)
    except AirflowNotFoundException:
        return None
    return url_from_connection(conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema,
                               conn.extra)


def create_store_engine(url: str | None = None, *, read_only: bool = False) -> Engine:
    """An engine that never prints bound values (patient data) in its errors.

    SQLite: the file's folder is created, WAL lets readers work during a load, and every
    transaction starts with BEGIN IMMEDIATE so writers queue on the busy timeout instead of
    failing half-way; a `read_only` engine (the UI's) begins deferred, so pages never wait for a
    running load.
    """
    url = url or settings.default_store_url()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, hide_parameters=True,
                                  connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})

        @event.listens_for(engine, "connect")
        def _sqlite_on_connect(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN itself
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
            cur.close()

        begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # noqa: ANN001
            conn.exec_driver_sql(begin)

        return engine
    engine = sa.create_engine(url, hide_parameters=True, pool_pre_ping=True)
    # hide_parameters hides the bound values, but not PostgreSQL's own message, whose DETAIL
    # ("Failing row contains (...)") and CONTEXT (a COPY's offending value) quote patient data.
    event.listen(engine, "handle_error", _without_patient_values)
    return engine


def postgres_error_message(error: Exception) -> str | None:
    """A psycopg error's message without the parts that can quote stored values, or None when
    the error did not come from the server (a refused connection, ...).

    Kept: the primary message (it names tables, columns and constraints), except for data
    exceptions (SQLSTATE class 22), whose primary message quotes the value itself.
    """
    diag = getattr(error, "diag", None)
    sqlstate = getattr(diag, "sqlstate", None)
    if diag is None or not sqlstate:
        return None
    where = ", ".join(f"{what} {name}" for what, name in (
        ("table", diag.table_name), ("column", diag.column_name), ("constraint", diag.constraint_name)) if name)
    message = (f"invalid data ({type(error).__name__}); the value is not shown" if sqlstate.startswith("22")
               else diag.message_primary or type(error).__name__)
    return f"{message} [SQLSTATE {sqlstate}{'; ' + where if where else ''}]"


def wrapped_driver_error(conn: Connection, statement: str, error: Exception) -> sa.exc.StatementError:
    """A driver error raised outside SQLAlchemy's execution (a COPY, a fetch straight from the
    driver's cursor) as SQLAlchemy would have raised it: scrubbed of patient values
    (`postgres_error_message`) and wrapped in a `DBAPIError` that hides the parameters. `conn` is
    the SQLAlchemy connection the driver belongs to; raise the result `from error`."""
    message = postgres_error_message(error)
    if message is not None:
        error.args = (message,)
    return sa.exc.DBAPIError.instance(statement, None, error, conn.dialect.loaded_dbapi.Error,
                                      hide_parameters=True, dialect=conn.dialect)


def _without_patient_values(context):  # noqa: ANN001 - sqlalchemy.engine.ExceptionContext
    error = context.original_exception
    message = postgres_error_message(error)
    if message is None or context.sqlalchemy_exception is None:
        return None
    # The driver's exception is chained to the one raised, and printed with it: scrub both.
    error.args = (message,)
    wrapped = context.sqlalchemy_exception
    return type(wrapped)(context.statement, context.parameters, error, hide_parameters=True,
                         connection_invalidated=context.is_disconnect, ismulti=wrapped.ismulti)


def analyze_patient_keys(conn: Connection, table: sa.Table) -> None:
    """PostgreSQL: statistics of a temporary table's patient key (autovacuum never sees one, and
    without them the planner guesses a few dozen rows and probes the store's index row by row).
    The key columns only: sampling every column costs more than the better plan saves."""
    quote = conn.dialect.identifier_preparer
    conn.exec_driver_sql(f"ANALYZE {quote.format_table(table)} "
                         f"({quote.quote('practice_id')}, {quote.quote('third_party_acct_number')})")


def streamed_rows(conn: Connection, query: sa.Executable, batch: int) -> sa.CursorResult:
    """The rows of `query`, fetched `batch` at a time (a server-side cursor on PostgreSQL), so that
    memory stays flat however many there are.

    The options go with this one statement: `Connection.execution_options()` sets them on the
    connection itself (SQLAlchemy 2), and every later statement on it would then run through a
    server-side cursor too, which PostgreSQL refuses for anything but a query."""
    return conn.execute(query, execution_options={"stream_results": True, "yield_per": batch})


def lock_practice(conn: Connection, practice_id: str) -> None:
    """Serialise imports of one practice until the transaction ends (SPEC §3 rule 1, issue #3).

    PostgreSQL: a transaction-scoped advisory lock keyed on the practice. SQLite: the
    transaction already holds the database's write lock (BEGIN IMMEDIATE).
    """
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(practice_id.encode()).digest()[:8], "big", signed=True)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def is_current(engine: Engine) -> bool:
    """Whether the store's schema is at the newest migration; a read, no lock taken."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads()) == heads


def migrate(engine: Engine) -> bool:
    """Bring the store's schema to the newest migration; True when it was behind and migrated.

    The one owner of the store's schema: the init service (`migrate_store`) and every
    `plan_imports` call this; a store already current is only read (no write lock taken).
    """
    if is_current(engine):
        return False
    from alembic import command

    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return True


@overload
def utc(moment: datetime) -> datetime: ...
@overload
def utc(moment: None) -> None: ...
def utc(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive (they are stored in UTC); PostgreSQL, aware."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
