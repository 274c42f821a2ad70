"""The import audit (SPEC §8): who triggered, undid, approved an import and who downloaded which file."""

from __future__ import annotations

from datetime import date

import pytest

from include.patient_import import audit, records
from include.patient_import.practices import Practice
from include.patient_import.store import create_store_engine

# Tier: unit, the PostgreSQL variants `postgres` (tests/conftest.py).


@pytest.fixture
def store(store_url):
    engine = create_store_engine(store_url)
    records.sync_practices(engine, {"demo_clinic": Practice(id="demo_clinic", name="Demo")})
    yield engine
    engine.dispose()


def _register(engine, import_id: str, **extra) -> None:
    records.register_import(engine, id=import_id, practice_id="demo_clinic", dag_run_id="manual__x", map_index=0,
                            run_type="manual", export_name="x.csv", export_sha256="0" * 64, export_bytes=1,
                            archive_path=None, exported_on=date(2026, 11, 20), dry_run=False, **extra)


def test_registering_an_import_records_who_triggered_its_run_once(store):
    _register(store, "demo_clinic_20261120_a", triggered_by="office.lead")
    _register(store, "demo_clinic_20261120_a", triggered_by="someone.else")  # a retried extract

    with store.connect() as conn:
        entries = audit.entries(conn, "demo_clinic_20261120_a")
    assert [(e["action"], e["who"], e["detail"]) for e in entries] == [("triggered", "office.lead", "manual__x")]


def test_entries_come_oldest_first_with_their_time(store):
    _register(store, "demo_clinic_20261120_b")
    audit.record(store, "demo_clinic_20261120_b", audit.APPROVED, "approver", "inserts over 500")
    audit.record(store, "demo_clinic_20261120_b", audit.DOWNLOADED, "office.lead", "changes")

    with store.connect() as conn:
        entries = audit.entries(conn, "demo_clinic_20261120_b")
    assert [e["action"] for e in entries] == ["triggered", "approved", "downloaded"]
    assert entries[0]["who"] is None and all(e["at"] is not None for e in entries)


def test_an_unknown_action_is_refused(store):
    _register(store, "demo_clinic_20261120_c")
    with pytest.raises(ValueError, match="unknown audit action"):
        audit.record(store, "demo_clinic_20261120_c", "deleted", "office.lead")
