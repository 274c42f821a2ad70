"""The Import Results app's fixtures: a filled store behind the `patient_store` connection and the
app mounted with Airflow's real plugin loading and auth manager (module-scoped: one per test module)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tools.harness.registry import practice, registry_yaml

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"admin": "admin-secret", "viewer": "viewer-secret"}
PRACTICES_YAML = registry_yaml(practice("demo_clinic", "Demo Chiropractic"),
                               practice("small_clinic", "Small Clinic", capacity=5),
                               practice("plan_clinic", "Payment Plan Clinic", systems=["auto_debit"]))
# Patient values that the pages must never show; they are in the store and in the patient files.
PATIENT_VALUES = ("Zebediah", "Quuxington", "zeb.quux@example.org", "5558675309", "742 Evergreen Terrace")
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


def _record(engine, import_id: str, practice_id: str, status: str, started: datetime, *,
            counts: dict | None = None, finished: bool = True, dry_run: bool = False, **paths) -> None:
    from include.patient_import import records

    records.register_import(engine, id=import_id, practice_id=practice_id, dag_run_id=f"manual__{import_id}",
                            map_index=0, run_type="manual", export_name=f"{import_id}.csv",
                            export_sha256="0" * 64, export_bytes=100, archive_path=None,
                            exported_on=started.date(), dry_run=dry_run)
    records.update_import(engine, import_id, status=status, started_at=started,
                          finished_at=started + timedelta(seconds=42) if finished else None,
                          **(counts or {}), **paths)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with seven imports of three practices, one with files, problems and Data Docs."""
    import sqlalchemy as sa

    from include.patient_import import problems as p
    from include.patient_import import records
    from include.patient_import.records import open_store
    from include.patient_import.store import Patient

    base = tmp_path_factory.mktemp("import_results_api")
    home = base / "home"
    registry = base / "practices.yml"
    registry.write_text(PRACTICES_YAML, encoding="utf-8")
    database = base / "elsewhere" / "store.db"  # not the default path: only the connection leads here
    env = {"PATIENT_IMPORT_HOME": str(home), "PATIENT_IMPORT_PRACTICES": str(registry),
           "AIRFLOW_CONN_PATIENT_STORE": json.dumps({"conn_type": "sqlite", "host": str(database)})}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PATIENT_IMPORT_STORAGE", raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        engine = open_store(f"sqlite:///{database}", prepare=True)

        outbox = home / "outbox" / "demo_clinic"
        outbox.mkdir(parents=True)
        upload = outbox / "demo_clinic_20261120_a.csv"
        upload.write_text('"ClientID","TPSID","Email","FirstName","LastName"\n'
                          '"","10001","zeb.quux@example.org","Zebediah","Quuxington"\n', encoding="utf-8")
        rejected_rows = outbox / "demo_clinic_20261120_a_rejected_rows.csv"
        rejected_rows.write_text("Account #,Last Name,First Name\n,Quuxington,Zebediah\n", encoding="utf-8")
        docs = home / "data_docs" / "demo_clinic" / "demo_clinic_20261120_a"
        (docs / "validations").mkdir(parents=True)
        (docs / "index.html").write_text("<html><body>Data Docs index</body></html>", encoding="utf-8")
        (docs / "validations" / "run.html").write_text("<html>one validation</html>", encoding="utf-8")
        outside = base / "outside.csv"
        outside.write_text("secret,data\n", encoding="utf-8")

        _record(engine, "demo_clinic_20261120_a", "demo_clinic", "completed_with_errors", T0,
                counts={"read": 5, "inserted": 3, "updated": 0, "unchanged": 0, "skipped": 0, "rejected": 2},
                upload_path=str(upload), rejected_rows_path=str(rejected_rows),
                data_docs_path=str(docs / "index.html"))
        with engine.begin() as conn:
            conn.execute(sa.insert(Patient.__table__).values(
                practice_id="demo_clinic", third_party_acct_number="10001", first_name="Zebediah",
                last_name="Quuxington", email="zeb.quux@example.org", home_phone="5558675309",
                address1="742 Evergreen Terrace", status="active"))
        for problem in (p.Problem(code="missing_required_field", message="Last Name is required", row=3,
                                  account_number="10442", field="last_name", severity="error"),
                        p.Problem(code="invalid_account_number", message="1.23E+11 lost its digits to Excel",
                                  row=4, account_number=None, field="account_number", severity="error"),
                        p.Problem(code="unknown_column", message="column 'Referral' is not imported",
                                  row=None, account_number=None, field="Referral", severity="warning")):
            records.replace_problem(engine, "demo_clinic_20261120_a", problem)
        _record(engine, "demo_clinic_20261121_b", "demo_clinic", "completed", T0 + timedelta(days=1),
                counts={"read": 4, "inserted": 1, "updated": 3, "unchanged": 0, "skipped": 0, "rejected": 0})
        _record(engine, "small_clinic_20261121_c", "small_clinic", "rejected", T0 + timedelta(days=1, hours=1),
                counts={"read": 9, "rejected": 9})
        records.set_details(engine, "small_clinic_20261121_c", {"capacity": 5, "stored": 0, "new": 9, "overflow": 4})
        _record(engine, "plan_clinic_20261122_d", "plan_clinic", "completed", T0 + timedelta(days=2),
                counts={"read": 2, "inserted": 2})
        _record(engine, "plan_clinic_20261122_e", "plan_clinic", "failed", T0 + timedelta(days=2, hours=1),
                upload_path=str(outside))
        _record(engine, "plan_clinic_20261123_f", "plan_clinic", "completed", T0 + timedelta(days=3),
                counts={"read": 7, "unchanged": 7}, dry_run=True)
        _record(engine, "demo_clinic_20261124_g", "demo_clinic", "processing", T0 + timedelta(days=4),
                finished=False)
        engine.dispose()
        yield {"home": home, "database": database, "docs": docs, "upload": upload,
               "rejected_rows": rejected_rows, "env": env}


@pytest.fixture(scope="module")
def client(airflow_db, store, tmp_path_factory):
    """Airflow's own plugin mounting and auth manager around the app, as in `airflow api-server`."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in store["env"].items():
            mp.setenv(key, value)
        mp.setenv("AIRFLOW__CORE__AUTH_MANAGER",
                  "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer")
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
        mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", os.urandom(64).hex())
        from airflow.api_fastapi.app import init_auth_manager, init_plugins

        app = FastAPI()
        init_plugins(app)
        init_auth_manager(app)
        with TestClient(app) as test_client:
            yield test_client


def _token(client, user: str) -> str:
    response = client.post("/auth/token", json={"username": user, "password": PASSWORDS[user]})
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def admin(client) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(client, 'admin')}"}


@pytest.fixture(scope="module")
def viewer(client) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(client, 'viewer')}"}
