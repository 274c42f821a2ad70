"""The store's ORM model, the Alembic migrations and `schema.FIELDS` say the same thing."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from include.patient_import.schema import EXTENSION_FIELDS, EXTENSION_MAX_LENGTH, FIELDS, STORE_COLUMN
from include.patient_import.store import Base, create_store_engine, migrate


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
