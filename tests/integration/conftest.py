"""Runs the real DAG in-process with `dag.test()` against a real store in a temporary home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.harness.registry import practice, registry_yaml

ROOT = Path(__file__).resolve().parents[2]

PRACTICES_YAML = registry_yaml(
    practice("demo_clinic", "Demo Chiropractic", systems=["drip_education", "auto_debit", "cash_plan_calculator"]),
    practice("small_clinic", "Small Clinic", capacity=5),
    practice("plan_clinic", "Payment Plan Clinic", systems=["auto_debit"], payment_plan_accounts=["1001", "001002"]),
    practice("nodrip_clinic", "No Drip Clinic", systems=["auto_debit", "cash_plan_calculator"]),
)


def parsed_dag(dag_id: str):
    """The DAG `dags/<dag_id>.py` holds, parsed as the DAG processor does (no import errors)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


@pytest.fixture(scope="session")
def patient_import_dag(airflow_db):
    return parsed_dag("patient_import")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh patient-import home: store, file areas and practice registry."""
    home = tmp_path / "home"
    home.mkdir()
    registry = tmp_path / "practices.yml"
    registry.write_text(PRACTICES_YAML, encoding="utf-8")
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(home))
    monkeypatch.delenv("PATIENT_IMPORT_STORAGE", raising=False)
    monkeypatch.setenv("PATIENT_IMPORT_PRACTICES", str(registry))
    return home


class Runner:
    def __init__(self, dag, home: Path):
        self.dag = dag
        self.home = home

    def run(self, **conf) -> tuple[str, list[dict]]:
        """Trigger one run; returns its state and the reports of its imports."""
        from include.patient_import.records import open_store
        from include.patient_import.summary import run_reports

        # Every param explicitly: dag.test() keeps earlier runs' values as defaults otherwise.
        conf = {"practice_id": "", "export_file": None, "exported_on": None, "dry_run": False} | conf
        run = self.dag.test(run_conf=conf)
        return str(run.state), run_reports(open_store(), run.run_id)

    def engine(self):
        from include.patient_import.records import open_store

        return open_store()

    def patients(self, practice_id: str) -> dict[str, dict]:
        import sqlalchemy as sa

        from include.patient_import.store import Patient

        with self.engine().connect() as conn:
            rows = conn.execute(sa.select(Patient.__table__).where(
                Patient.__table__.c.practice_id == practice_id)).mappings().all()
        return {r["third_party_acct_number"]: dict(r) for r in rows}

    def report(self, summary: dict) -> dict:
        from include.patient_import.storage import path_of

        return json.loads(path_of(summary["report_path"]).read_text(encoding="utf-8"))


@pytest.fixture
def runner(patient_import_dag, home) -> Runner:
    return Runner(patient_import_dag, home)


@pytest.fixture
def smtp(monkeypatch):
    """A loopback SMTP sink behind the `patient_import_alerts` connection; `.messages` holds what was sent."""
    from tests.integration.smtp_sink import SmtpSink

    sink = SmtpSink()
    monkeypatch.setenv("AIRFLOW_CONN_PATIENT_IMPORT_ALERTS",
                       f"smtp://127.0.0.1:{sink.port}?to=data-team%40example.org"
                       "&from_email=airflow%40example.org&disable_tls=true&disable_ssl=true")
    yield sink
    sink.close()
