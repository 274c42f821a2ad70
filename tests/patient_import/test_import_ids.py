"""Import ids fit the store (SPEC §6): the longest practice id the registry accepts makes an import
id the store's `imports.id` column holds, on SQLite and PostgreSQL; a longer one is refused when the
registry is read, before any export is archived."""

from __future__ import annotations

import re
from datetime import date

import pytest

from include.patient_import import audit, files, records
from include.patient_import import problems as p
from include.patient_import.extract import RunInfo, import_id_for
from include.patient_import.practices import Practice, load_practices
from include.patient_import.store import Import, create_store_engine
from tools.harness.registry import practice, registry_yaml

# Tier: unit, the PostgreSQL variant `postgres` (tests/conftest.py).

LONGEST = "a" * files.MAX_ID_LENGTH


def _longest_import_id() -> str:
    run = RunInfo(dag_id="patient_import", run_id="scheduled__2026-11-30T02:00:00+00:00", map_index=199)
    return import_id_for(run, LONGEST, date(2026, 11, 30), "0" * 64, "export.csv")


def test_the_longest_practice_id_makes_an_import_id_as_wide_as_the_store_column():
    import_id = _longest_import_id()
    assert len(import_id) == files.IMPORT_ID_LENGTH == Import.__table__.c.id.type.length
    assert re.fullmatch(files.IMPORT_ID_PATTERN, import_id)


def test_the_store_holds_the_longest_import_id(store_url):
    # On PostgreSQL a 64-character practice id made an 86-character id: "value too long for type
    # character varying(80)" once its export had been archived.
    engine = create_store_engine(store_url)
    records.sync_practices(engine, {LONGEST: Practice(id=LONGEST, name="Long")})
    import_id = _longest_import_id()
    records.register_import(engine, id=import_id, practice_id=LONGEST, dag_run_id="manual__x", map_index=0,
                            run_type="manual", export_name="x.csv", export_sha256="0" * 64, export_bytes=1,
                            archive_path=None, exported_on=date(2026, 11, 30), dry_run=False, triggered_by="x")
    with engine.connect() as conn:
        assert [e["action"] for e in audit.entries(conn, import_id)] == [audit.TRIGGERED]
    engine.dispose()


def test_a_practice_id_one_longer_is_refused_when_the_registry_is_read(tmp_path):
    registry = tmp_path / "practices.yml"
    registry.write_text(registry_yaml(practice(LONGEST + "a", "Long")), encoding="utf-8")
    with pytest.raises(p.ConfigurationError, match=f"at most {files.MAX_ID_LENGTH}"):
        load_practices(registry)
    registry.write_text(registry_yaml(practice(LONGEST, "Long")), encoding="utf-8")
    assert list(load_practices(registry)) == [LONGEST]
