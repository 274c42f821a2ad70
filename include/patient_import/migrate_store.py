"""Brings the patient store to the newest schema: `python -m include.patient_import.migrate_store`.

The deployment's init service runs it after `airflow db migrate` (docker-compose.yml). The store
is the DAG's: the `patient_store` connection as Airflow reads it from `AIRFLOW_CONN_PATIENT_STORE`
(a URI or JSON), else the embedded SQLite store. Parsed here as Airflow parses it, without Airflow.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from include.patient_import.store import create_store_engine, migrate, sqlalchemy_url

CONNECTION_ENV = "AIRFLOW_CONN_PATIENT_STORE"


def store_url_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """The SQLAlchemy URL of the `patient_store` connection set in the environment, or None."""
    raw = environ.get(CONNECTION_ENV, "").strip()
    if not raw:
        return None
    if raw.startswith("{"):
        fields = json.loads(raw)
        return sqlalchemy_url(fields.get("conn_type"), fields.get("host"), fields.get("login"),
                              fields.get("password"), fields.get("port"), fields.get("schema"))
    parts = urlsplit(raw)
    return sqlalchemy_url(parts.scheme.replace("-", "_"), unquote(parts.hostname or ""),
                          unquote(parts.username or ""), unquote(parts.password or ""), parts.port,
                          unquote(parts.path[1:]))


def main() -> int:
    url = store_url_from_env()
    engine = create_store_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    # The URL without its password: this line lands in the init container's log.
    print(f"patient store migrated: {engine.url.render_as_string(hide_password=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
