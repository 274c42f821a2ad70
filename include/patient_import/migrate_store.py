"""Brings the patient store to the newest schema: `python -m include.patient_import.migrate_store`.

The deployment's init service runs it after `airflow db migrate` (docker-compose.yml), so the
store is current before any task starts; `plan_imports` calls the same `store.migrate`, which only
reads the schema's revision when the store is already current (docs/production.md, Migrations).
The store is the DAG's: the `patient_store` connection as Airflow reads it (`AIRFLOW_CONN_PATIENT_STORE`,
a URI or JSON, or a secrets backend), else the embedded SQLite store.
"""

from __future__ import annotations

import sys

from include.patient_import.store import airflow_store_url, create_store_engine, migrate


def main() -> int:
    engine = create_store_engine(airflow_store_url())
    try:
        migrated = migrate(engine)
    finally:
        engine.dispose()
    # The URL without its password: this line lands in the init container's log.
    state = "migrated" if migrated else "already current"
    print(f"patient store {state}: {engine.url.render_as_string(hide_password=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
