"""Migration 0006 on a used store (hostile review of d55b1fe): a store at 0005 with two
imports, their rows, problems, change log, audit and an undone import; upgraded to head, downgraded
and upgraded again: every table's rows the same, the two rebuilt tables' indexes and keys kept."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from include.patient_import.store import _alembic_config, migrate
from include.patient_import.undo import undo_import
from tests.patient_import import generated as g


def _to(engine, revision: str, *, down: bool = False) -> None:
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _dump(engine) -> dict[str, list]:
    inspector = sa.inspect(engine)
    tables = sorted(t for t in inspector.get_table_names() if t != "alembic_version")
    with engine.connect() as conn:
        return {t: sorted(map(repr, conn.execute(sa.text(f"SELECT * FROM {t}")).all())) for t in tables}


def _shape(engine, table: str) -> dict:
    inspector = sa.inspect(engine)
    return {"pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in inspector.get_indexes(table)),
            "uniques": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            "fks": sorted((tuple(k["constrained_columns"]), k["referred_table"])
                          for k in inspector.get_foreign_keys(table))}


@pytest.fixture
def used_store_at_0005(store_url, tmp_path, monkeypatch):
    imports = g.Imports(tmp_path, monkeypatch, url=store_url)
    _to(imports.engine, "0005", down=True)
    imports.run("a")
    b = imports.run("b")
    undo_import(imports.engine, b.report["import_id"], by="office.lead")
    yield imports
    imports.engine.dispose()


def test_0006_up_down_up_keeps_every_row_and_the_tables_shape(used_store_at_0005):
    engine = used_store_at_0005.engine
    before = _dump(engine)
    assert all(before[t] for t in ("imports", "import_rows", "patient_changes", "import_audit", "patients"))
    shape_0005 = {t: _shape(engine, t) for t in ("import_rows", "patient_changes")}

    _to(engine, "head")
    assert _dump(engine) == before
    for table, shape in shape_0005.items():
        now = _shape(engine, table)
        assert now["fks"] == []
        assert {k: v for k, v in now.items() if k != "fks"} == {k: v for k, v in shape.items() if k != "fks"}, table

    _to(engine, "0005", down=True)
    assert _dump(engine) == before
    assert {t: _shape(engine, t) for t in shape_0005} == shape_0005

    _to(engine, "head")
    assert _dump(engine) == before
    assert migrate(engine) is False  # a store at head: only read
    assert _dump(engine) == before


_IMPORT = ("INSERT INTO imports (id, practice_id, dag_run_id, map_index, run_type, export_name, export_sha256, "
           "export_bytes, exported_on, dry_run, status, read, inserted, updated, unchanged, skipped, rejected, "
           "started_at) VALUES ('imp_1', 'p1', 'r', 0, 'manual', 'e.csv', 'x', 1, '2026-11-01', false, "
           "'running', 0, 0, 0, 0, 0, 0, now())")


@pytest.mark.postgres
def test_migrating_to_0006_beside_a_running_load_does_not_deadlock_it(postgres_server):
    """A store at 0005 and a load in the middle of `_PatientWrite.apply` (its change log started,
    its row outcomes not yet written) when a new `plan_imports` migrates: 0006 takes `import_rows`
    first and then waits for `patient_changes`, which the load holds; the load then waits for
    `import_rows`: PostgreSQL's deadlock detector aborts the load. Migration 0005 beside the same
    load only waited for it (no cycle)."""
    import threading
    import uuid

    from include.patient_import.store import create_store_engine

    name = f"deadlock_{uuid.uuid4().hex[:12]}"
    engine = create_store_engine(postgres_server.create_database(name))
    try:
        _to(engine, "0005")
        with engine.begin() as conn:
            conn.exec_driver_sql(_IMPORT)
        migrated: dict[str, object] = {}
        with engine.connect() as load:
            with load.begin():
                load.exec_driver_sql("SELECT id FROM imports WHERE id = 'imp_1'")  # recorded_result
                load.exec_driver_sql("DELETE FROM patient_changes WHERE import_id = 'imp_1'")  # start_log
                load.exec_driver_sql("INSERT INTO patient_changes (import_id, practice_id, third_party_acct_number, "
                                     "action) VALUES ('imp_1', 'p1', 'A1', 'inserted')")  # log_before

                def migrate() -> None:
                    try:
                        _to(engine, "head")
                        migrated["done"] = True
                    except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                        migrated["error"] = type(exc).__name__

                worker = threading.Thread(target=migrate)
                worker.start()
                worker.join(2)  # the migration is now waiting for the load's lock
                # _record_outcomes, then _finish_load
                load.exec_driver_sql("DELETE FROM import_rows WHERE import_id = 'imp_1'")
                load.exec_driver_sql("INSERT INTO import_rows (import_id, row_number, account_number, outcome) "
                                     "VALUES ('imp_1', 2, 'A1', 'inserted')")
                load.exec_driver_sql("UPDATE imports SET status = 'completed' WHERE id = 'imp_1'")
            worker.join(60)
        assert migrated == {"done": True}
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM import_rows")).scalar() == 1
    finally:
        engine.dispose()
        postgres_server.drop_database(name)
