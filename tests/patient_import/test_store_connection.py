"""One way to the store: the `patient_store` connection's fields to a SQLAlchemy URL
(`store.url_from_connection`), read through Airflow (`store.airflow_store_url`), and one owner of
the store's migrations (`store.migrate`: a store already current is only read)."""

import json

import pytest
import sqlalchemy as sa

from include.patient_import import store
from include.patient_import.store import (
    airflow_store_url,
    create_store_engine,
    is_current,
    migrate,
    url_from_connection,
)

pytestmark = pytest.mark.unit


def test_a_sqlite_connection_keeps_its_file_in_host(tmp_path):
    assert url_from_connection("sqlite", str(tmp_path / "store.db")) == f"sqlite:///{tmp_path / 'store.db'}"


@pytest.mark.parametrize("conn_type", ["postgres", "postgresql", "Postgres"])
def test_a_postgres_connection_becomes_a_psycopg_url(conn_type):
    url = sa.make_url(url_from_connection(conn_type, "db", "user", "p@ss:/word", 5433, "store"))

    assert (url.drivername, url.host, url.port, url.database, url.username, url.password) == (
        "postgresql+psycopg", "db", 5433, "store", "user", "p@ss:/word")
    assert dict(url.query) == {}


@pytest.mark.parametrize("extra", [{"sslmode": "verify-full", "connect_timeout": 10, "unset": None},
                                   json.dumps({"sslmode": "verify-full", "connect_timeout": 10})])
def test_a_postgres_connections_extra_becomes_libpq_options(extra):
    url = sa.make_url(url_from_connection("postgres", "db", "u", "p", None, "s", extra))

    assert dict(url.query) == {"sslmode": "verify-full", "connect_timeout": "10"}


@pytest.mark.parametrize("conn_type", [None, "", "mysql", "http"])
def test_other_connection_types_are_refused(conn_type):
    with pytest.raises(ValueError, match="not supported"):
        url_from_connection(conn_type, "db")


@pytest.mark.parametrize("extra", ["[1, 2]", '"sslmode"', "not json"])
def test_an_extra_that_is_not_a_json_object_is_refused(extra):
    with pytest.raises(ValueError):
        url_from_connection("postgres", "db", extra=extra)


def test_no_connection_means_the_embedded_store(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_PATIENT_STORE", raising=False)

    assert airflow_store_url() is None


@pytest.mark.parametrize("value", [
    "postgresql://u:p%40ss@db:5433/s?sslmode=require",
    json.dumps({"conn_type": "postgres", "host": "db", "login": "u", "password": "p@ss", "port": 5433,
                "schema": "s", "extra": {"sslmode": "require"}}),
])
def test_the_connection_is_read_as_airflow_reads_it(monkeypatch, value):
    monkeypatch.setenv("AIRFLOW_CONN_PATIENT_STORE", value)

    assert airflow_store_url() == "postgresql+psycopg://u:p%40ss@db:5433/s?sslmode=require"


def test_migrate_brings_a_new_store_to_the_newest_revision_once(tmp_path, monkeypatch):
    engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        assert not is_current(engine)
        assert migrate(engine) is True
        assert is_current(engine)

        def no_upgrade(*_args, **_kwargs):
            raise AssertionError("a current store must not be migrated again")

        monkeypatch.setattr("alembic.command.upgrade", no_upgrade)
        assert migrate(engine) is False
    finally:
        engine.dispose()


def test_a_store_behind_the_newest_revision_is_migrated(tmp_path):
    from alembic import command

    engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        migrate(engine)
        cfg = store._alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "-1")
        assert not is_current(engine)

        assert migrate(engine) is True
        assert is_current(engine)
    finally:
        engine.dispose()
