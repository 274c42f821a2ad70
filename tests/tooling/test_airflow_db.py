"""`make airflow-db` (scripts/airflow_db.py): the cheap check that skips `airflow db migrate`."""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from scripts import airflow_db
from scripts.airflow_db import database_revision, head_revision, is_current, sqlite_path

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


def _database(home, revision: str | None):
    home.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(home / "airflow.db") as conn:
        if revision is not None:
            conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
            conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    return home


@pytest.fixture
def no_db_env(monkeypatch):
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)
    monkeypatch.delenv("AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS", raising=False)


def test_head_read_from_the_scripts_is_alembics_head():
    from airflow.utils.db import _get_script_object

    assert head_revision() == _get_script_object().get_current_head()


def test_current_only_at_the_head_revision(tmp_path, no_db_env):
    assert is_current(_database(tmp_path / "a", head_revision()))
    assert not is_current(_database(tmp_path / "b", "4bc4d934e2bc"))  # an older Airflow's
    assert not is_current(_database(tmp_path / "c", None))  # created, never migrated
    assert not is_current(tmp_path / "d")  # no database yet


def test_a_database_other_than_sqlite_is_always_migrated(tmp_path, monkeypatch, no_db_env):
    home = _database(tmp_path, head_revision())
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg://u:p@127.0.0.1/airflow")
    assert sqlite_path(home) is None and not is_current(home)


def test_external_db_managers_are_always_migrated(tmp_path, monkeypatch, no_db_env):
    home = _database(tmp_path, head_revision())
    (home / "airflow.cfg").write_text("[database]\nexternal_db_managers = some.Manager\n", encoding="utf-8")
    assert not is_current(home)


def test_the_database_named_in_airflow_cfg_is_read(tmp_path, no_db_env):
    other = _database(tmp_path / "elsewhere", head_revision()) / "airflow.db"
    home = tmp_path / "home"
    home.mkdir()
    (home / "airflow.cfg").write_text(f"[database]\nsql_alchemy_conn = sqlite:///{other}\n", encoding="utf-8")
    assert sqlite_path(home) == other and database_revision(other) == head_revision()


def test_main_skips_the_migrate_when_current_and_runs_it_otherwise(tmp_path, monkeypatch, no_db_env):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or subprocess.CompletedProcess(a, 0))
    monkeypatch.setenv("AIRFLOW_HOME", str(_database(tmp_path / "current", head_revision())))
    assert airflow_db.main() == 0 and calls == []

    monkeypatch.setenv("AIRFLOW_HOME", str(_database(tmp_path / "old", "4bc4d934e2bc")))
    assert airflow_db.main() == 0
    assert [c[0][1:] for c in calls] == [["db", "migrate"]]


def test_main_prints_the_migrate_output_when_it_fails(tmp_path, monkeypatch, capsys, no_db_env):
    home = tmp_path / "home"

    def failing(args, stdout, stderr):
        stdout.write(b"migration exploded\n")
        return subprocess.CompletedProcess(args, 1)

    monkeypatch.setattr(subprocess, "run", failing)
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    assert airflow_db.main() == 1
    assert "migration exploded" in capsys.readouterr().out
