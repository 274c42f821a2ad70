"""The store's ORM model, the Alembic migrations and `schema.FIELDS` say the same thing."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from include.patient_import.schema import EXTENSION_FIELDS, EXTENSION_MAX_LENGTH, FIELDS, STORE_COLUMN
from include.patient_import.store import Base, Import, create_store_engine, migrate


def _migrated(tmp_path):
    engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    return engine


def _drift(engine, metadata: sa.MetaData) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, metadata)


def test_the_model_is_what_the_migrations_build(tmp_path):
    assert _drift(_migrated(tmp_path), Base.metadata) == []


def test_a_model_that_drifts_from_the_migrations_is_found(tmp_path):
    engine = _migrated(tmp_path)
    for change in ("width", "column", "nullable"):
        metadata = sa.MetaData()
        for table in Base.metadata.sorted_tables:
            table.to_metadata(metadata)
        patients = metadata.tables["patients"]
        if change == "width":
            patients.c.zip.type = sa.String(12)
        elif change == "column":
            patients.append_column(sa.Column("nickname", sa.Text))
        else:
            patients.c.first_name.nullable = False
        assert _drift(engine, metadata), change


def test_every_field_is_a_store_column_of_its_width(tmp_path):
    columns = {c["name"]: c for c in sa.inspect(_migrated(tmp_path)).get_columns("patients")}
    for field in FIELDS:
        column = columns[STORE_COLUMN.get(field.name, field.name)]
        if field.store_type == "varchar":
            assert isinstance(column["type"], sa.String) and column["type"].length == field.max_length, field.name
        elif field.store_type == "date":
            assert isinstance(column["type"], sa.Date), field.name
        else:
            assert isinstance(column["type"], sa.Text), field.name
        assert column["nullable"] == (field.store_default is None), field.name
    for extension in EXTENSION_FIELDS.values():
        assert columns[extension]["type"].length == EXTENSION_MAX_LENGTH


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request, tmp_path):
    """An empty database of each kind, not migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"unmigrated_{uuid.uuid4().hex[:12]}"
    yield server.create_database(name)
    server.drop_database(name)


def _foreign_keys(engine) -> dict[str, list]:
    inspector = sa.inspect(engine)
    return {table: [(k["constrained_columns"], k["referred_table"]) for k in inspector.get_foreign_keys(table)]
            for table in ("import_rows", "patient_changes", "import_problems", "import_problem_counts",
                          "import_audit", "patients")}


def test_migration_0006_drops_only_the_per_row_logs_keys_and_keeps_their_rows(empty_database_url):
    """Migration 0006 on a store at 0005 holding an import's rows and change log: both kept, and
    `import_rows` / `patient_changes` lose their key to `imports` (a per-row check on PostgreSQL,
    7 s a million rows); the other tables keep theirs."""
    from alembic import command

    from include.patient_import.store import _alembic_config

    engine = create_store_engine(empty_database_url)

    def upgrade(revision: str) -> None:
        cfg = _alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    upgrade("0005")
    assert ([["import_id"]], ["imports"]) == tuple(map(list, zip(*_foreign_keys(engine)["import_rows"])))
    with engine.begin() as conn:
        conn.execute(sa.insert(Import.__table__).values(
            id="imp_1", practice_id="p1", dag_run_id="r", export_name="e.csv", export_sha256="x",
            exported_on=date(2026, 11, 1), status="completed", started_at=datetime.now(timezone.utc)))
        conn.execute(sa.text("INSERT INTO import_rows (import_id, row_number, account_number, outcome) "
                             "VALUES ('imp_1', 2, 'A1', 'inserted'), ('imp_1', 3, 'A2', 'unchanged')"))
        conn.execute(sa.text("INSERT INTO patient_changes (import_id, practice_id, third_party_acct_number, action) "
                             "VALUES ('imp_1', 'p1', 'A1', 'inserted')"))
    upgrade("head")

    keys = _foreign_keys(engine)
    assert keys["import_rows"] == [] and keys["patient_changes"] == []
    for table in ("import_problems", "import_problem_counts", "import_audit"):
        assert keys[table] == [(["import_id"], "imports")], table
    assert keys["patients"] == [(["practice_id"], "practices")]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT row_number, account_number, outcome FROM import_rows "
                                    "ORDER BY row_number")).all() == [(2, "A1", "inserted"), (3, "A2", "unchanged")]
        assert conn.execute(sa.text("SELECT count(*) FROM patient_changes")).scalar() == 1
    assert _drift(engine, Base.metadata) == []
    engine.dispose()
