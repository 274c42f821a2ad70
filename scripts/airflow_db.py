"""`airflow db migrate`, skipped when the local Airflow metadata database is already current.

`make run` / `make import` call it before every run. `airflow db migrate` costs about 10 s even when
nothing changed (it imports Airflow and every model to find that out); this check reads the head
revision from Airflow's migration scripts and the database's `alembic_version` with `sqlite3`, in
milliseconds and without importing Airflow. Anything it cannot decide cheaply (a database other than
SQLite, a database without `alembic_version`, external DB managers) runs the real migrate.

Exit status: 0 when current or migrated, 1 when the migrate failed (its output printed).
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

_REVISION = re.compile(r"""^revision\s*(?::\s*str\s*)?=\s*["'](\w+)["']""", re.M)
_DOWN = re.compile(r"""^down_revision\s*(?::[^=]*)?=\s*(.+)$""", re.M)


def head_revision() -> str | None:
    """The one head of Airflow's migration graph, read from its scripts (None when not exactly one)."""
    spec = importlib.util.find_spec("airflow")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    versions = Path(next(iter(spec.submodule_search_locations))) / "migrations" / "versions"
    revisions, parents = set(), set()
    for script in versions.glob("*.py"):
        text = script.read_text(encoding="utf-8")
        found = _REVISION.search(text)
        down = _DOWN.search(text)
        if not found:
            continue
        revisions.add(found.group(1))
        if down:
            parents.update(re.findall(r"""["'](\w+)["']""", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def sqlite_path(airflow_home: Path) -> Path | None:
    """The SQLite file of the metadata database, or None when it is not SQLite (or not known)."""
    url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if url is None:
        cfg = configparser.ConfigParser(interpolation=None, strict=False)
        cfg.read(airflow_home / "airflow.cfg", encoding="utf-8")
        if cfg.has_option("database", "external_db_managers") and cfg.get("database", "external_db_managers"):
            return None
        url = cfg.get("database", "sql_alchemy_conn", fallback=f"sqlite:///{airflow_home / 'airflow.db'}")
    if os.environ.get("AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS"):
        return None
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0])


def database_revision(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return rows[0][0] if len(rows) == 1 else None


def is_current(airflow_home: Path) -> bool:
    """Whether the metadata database is at the installed Airflow's head revision."""
    path = sqlite_path(airflow_home)
    if path is None:
        return False
    head = head_revision()
    return head is not None and database_revision(path) == head


def main() -> int:
    airflow_home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    airflow_home.mkdir(parents=True, exist_ok=True)
    if is_current(airflow_home):
        return 0
    log = airflow_home / "db_migrate.log"
    airflow = Path(sys.executable).with_name("airflow")
    with log.open("wb") as out:
        done = subprocess.run([str(airflow), "db", "migrate"], stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.stdout.write(log.read_text(encoding="utf-8", errors="replace"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
