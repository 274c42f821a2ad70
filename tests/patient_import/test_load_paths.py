"""The load's two writes of the patients agree: PostgreSQL's `UPDATE ... FROM` + ordered `INSERT`
(load.update_insert_statements, its default) and the `INSERT ... ON CONFLICT` upsert (SQLite's
only write) leave the same store, the same outcomes and the same change log on the same imports."""

from datetime import date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from include.patient_import import load as load_module
from include.patient_import.store import Import, ImportRow, Patient, PatientChange, create_store_engine
from tests.patient_import.test_load import ANN, APRIL, BOB, DRIP, MARCH, MAY, PLAIN, export, load

# Tier: unit, PostgreSQL (`postgres`): each case runs on three fresh stores, PostgreSQL with
# each write and SQLite, and their contents are compared.

CAROL = {"account_number": "103", "last_name": "Cole", "first_name": "Carol", "city": "Bath", "zip": "02134"}
DAN = {"account_number": "104", "last_name": "Dunn", "first_name": "Dan", "status": "inactive"}
EVE = {"account_number": "105", "last_name": "Eden", "first_name": "Eve", "phone": "5551234567"}

RETRY = "the previous load again, under its import id"
# Each case: the imports, in order, as (practice, rows, export date), or RETRY.
CASES = {
    "empty store": [(DRIP, [ANN, BOB, CAROL], MARCH)],
    "same file again (unchanged)": [(DRIP, [ANN, BOB], MARCH), (DRIP, [ANN, BOB], MARCH)],
    "newer but identical export": [(DRIP, [ANN, BOB], MARCH), (DRIP, [ANN, BOB], MAY)],
    "older export after a newer one": [(DRIP, [ANN, BOB], MAY), (DRIP, [{**ANN, "city": "Lyme"}, CAROL], MARCH)],
    "empty cells never erase": [
        (DRIP, [ANN, BOB], MARCH),
        (DRIP, [{**ANN, "email": None, "city": None, "status": None, "first_name": "Anne"}, {**BOB, "city": None}],
         APRIL)],
    "inactive rows": [
        (PLAIN, [BOB, DAN], MARCH),  # a new inactive patient is skipped without Drip-Education
        (PLAIN, [{**BOB, "status": "inactive"}, DAN], APRIL)],  # a stored one becomes inactive
    # New patients between stored ones, in a store with more rows than the import: their ids
    # must still follow the file's order.
    "new rows among stored ones": [
        (DRIP, [ANN, BOB, CAROL], MARCH),
        (DRIP, [EVE, {**BOB, "city": "Wells"}, DAN, ANN, {**CAROL, "account_number": "099"}], APRIL)],
    # Dates as the normaliser writes them (ISO text), from any era, stored as the same days on
    # both databases, and the same file again leaves them unchanged.
    "dates of every era": [
        (DRIP, [{**ANN, "birth_date": "1905-06-01", "last_visit": "1500-01-01"},
                {**BOB, "birth_date": "2024-02-29", "last_visit": "0001-01-01"}, {**CAROL, "last_visit": "9999-12-31"}],
         MARCH),
        (DRIP, [{**ANN, "birth_date": "1905-06-01", "last_visit": "1500-01-01"},
                {**BOB, "birth_date": "2024-02-29", "last_visit": "0001-01-01"}], APRIL)],
    # The same load run again (a retried task): it finds its recorded result and writes nothing twice.
    "a retried load": [(DRIP, [ANN, BOB], MARCH), (DRIP, [ANN, {**BOB, "city": "Wells"}, CAROL], APRIL), RETRY],
}


def _contents(engine) -> dict:
    """Every table the load writes, as comparable text (import ids are the same in every store)."""
    def rows(table, order):
        with engine.connect() as conn:
            found = conn.execute(sa.select(table).order_by(*order)).mappings().all()
        return [{k: (None if v is None else str(v)) for k, v in row.items()
                 if k not in ("id", "loaded_at", "started_at", "registered_at")} | (
                    {"id": str(row["id"])} if table is Patient.__table__ else {}) for row in found]

    patients, changes, imports = Patient.__table__, PatientChange.__table__, Import.__table__
    return {
        "patients": rows(patients, [patients.c.id]),
        "import_rows": rows(ImportRow.__table__, [ImportRow.__table__.c.import_id, ImportRow.__table__.c.row_number]),
        "patient_changes": rows(changes, [changes.c.import_id, changes.c.third_party_acct_number]),
        "imports": [{k: v for k, v in row.items() if k in (
            "id", "status", "read", "inserted", "updated", "unchanged", "skipped", "rejected", "field_changes")}
            for row in rows(imports, [imports.c.id])],
    }


def _run(url: str, imports: list, write: str, monkeypatch) -> dict:
    monkeypatch.setattr(load_module, "POSTGRES_WRITE", write)
    engine = create_store_engine(url)
    try:
        last = None  # (import id, practice, rows, export date) of the load before
        for number, step in enumerate(imports):
            if step == RETRY:
                assert last is not None, "a retry follows a load"
                import_id, practice, patients, exported_on = last
                load_module.load_import(engine, import_id=import_id, practice=practice, exported_on=exported_on,
                                        frame=export(*patients), problems=[], rejection=None, dry_run=False)
                continue
            practice, patients, exported_on = step
            last = (f"{practice.id}_{number:012d}", practice, patients, exported_on)
            load(engine, practice, export(*patients), exported_on, import_id=last[0])
        return _contents(engine)
    finally:
        engine.dispose()


@pytest.fixture
def three_stores(request, tmp_path):
    """Fresh migrated stores: two on PostgreSQL (one per write), one SQLite."""
    import shutil
    import uuid

    server = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("_postgres_store_template")
    names = [f"paths_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    urls = [server.create_database(name, template=template) for name in names]
    path = tmp_path / "patient_store.db"
    shutil.copyfile(request.getfixturevalue("_sqlite_store_template"), path)
    yield {"update_insert": urls[0], "on_conflict": urls[1], "sqlite": f"sqlite:///{path}"}
    for name in names:
        server.drop_database(name)


@pytest.mark.postgres
@pytest.mark.parametrize("case", list(CASES))
def test_both_writes_leave_the_same_store_outcomes_and_change_log(case, three_stores, monkeypatch):
    imports = CASES[case]

    two_statements = _run(three_stores["update_insert"], imports, "update_insert", monkeypatch)
    upserted = _run(three_stores["on_conflict"], imports, "on_conflict", monkeypatch)
    on_sqlite = _run(three_stores["sqlite"], imports, "update_insert", monkeypatch)

    assert two_statements["patients"], "every case leaves patients to compare"
    assert _ids_ranked(two_statements) == _ids_ranked(upserted)
    assert two_statements == on_sqlite  # ids included: both take one id per new patient, none else


def _ids_ranked(contents: dict) -> dict:
    """`contents` with each patient id replaced by its rank: PostgreSQL's ON CONFLICT takes a
    sequence value for every row it proposes, stored ones included, so its ids have gaps."""
    rank = {p["id"]: str(n) for n, p in enumerate(contents["patients"])}
    return {**contents,
            "patients": [{**p, "id": rank[p["id"]]} for p in contents["patients"]],
            "patient_changes": [{**c, "patient_id": rank[c["patient_id"]]} for c in contents["patient_changes"]]}


@pytest.mark.postgres
def test_the_update_insert_write_takes_no_id_for_a_stored_patient(three_stores, monkeypatch):
    """Cash Practice's ClientIDs: a daily sync that advances every stored patient must not use up
    an id for each of them (the ON CONFLICT upsert does, on PostgreSQL)."""
    store = _run(three_stores["update_insert"], CASES["new rows among stored ones"], "update_insert", monkeypatch)

    assert [int(p["id"]) for p in store["patients"]] == list(range(1, 7))


@pytest.mark.postgres
def test_the_writes_follow_the_sync_rules(three_stores, monkeypatch):
    """The comparison above is only worth what the cases show: a few of the rules, checked on the
    update_insert path's store (SPEC §3 rules 2, 6, 7)."""
    empty_cells = _run(three_stores["update_insert"], CASES["empty cells never erase"], "update_insert", monkeypatch)
    ann = next(p for p in empty_cells["patients"] if p["third_party_acct_number"] == "101")
    assert (ann["email"], ann["city"], ann["status"], ann["first_name"]) == (
        "ann@example.com", "Salem", "active", "Anne")
    assert ann["last_seen_exported_on"] == str(APRIL)

    older = _run(three_stores["on_conflict"], CASES["older export after a newer one"], "update_insert", monkeypatch)
    ann = next(p for p in older["patients"] if p["third_party_acct_number"] == "101")
    assert (ann["city"], ann["last_seen_exported_on"]) == ("Salem", str(MAY))
    assert [r["outcome"] for r in older["import_rows"][-2:]] == ["skipped", "inserted"]


@pytest.mark.postgres
def test_new_patients_get_ids_in_file_order_on_both_writes(three_stores, monkeypatch):
    for write in ("update_insert", "on_conflict"):
        store = _run(three_stores[write], CASES["new rows among stored ones"], write, monkeypatch)
        second = [p for p in store["patients"] if p["created_import_id"] == "drip_clinic_000000000001"]
        assert [p["third_party_acct_number"] for p in second] == ["105", "104", "099"], write
        ids = [int(p["id"]) for p in second]
        assert ids == sorted(ids), write


@pytest.mark.postgres
def test_dates_are_stored_as_the_days_the_normaliser_wrote(three_stores, monkeypatch):
    """ISO text goes to the store as it is (no parse-and-format on the way): a day before pandas'
    oldest timestamp is kept, not dropped, on both databases."""
    for write, url in (("update_insert", three_stores["update_insert"]), ("sqlite", three_stores["sqlite"])):
        store = _run(url, CASES["dates of every era"], "update_insert", monkeypatch)
        days = {p["third_party_acct_number"]: (p["birth_date"], p["last_visit"]) for p in store["patients"]}
        assert days == {"101": ("1905-06-01", "1500-01-01"), "102": ("2024-02-29", "0001-01-01"),
                        "103": (None, "9999-12-31")}, write
        assert [r["outcome"] for r in store["import_rows"][-2:]] == ["unchanged", "unchanged"], write


def test_iso_dates_keeps_iso_text_formats_dates_and_drops_the_rest():
    values = pd.Series(["2025-01-02", "0001-01-01", "2023-02-29", "2025-1-2", " 2025-01-02", "1/2/2025",
                        date(2025, 1, 3), datetime(2025, 1, 4, 23, 59), pd.Timestamp("2025-01-05"),
                        None, float("nan"), "", 20250106], index=range(10, 23), dtype="object")

    assert load_module.iso_dates(values).tolist() == [
        "2025-01-02", "0001-01-01", None, None, None, None, "2025-01-03", "2025-01-04", "2025-01-05",
        None, None, None, None]
    assert load_module.iso_dates(values).index.tolist() == list(range(10, 23))
    assert load_module.iso_dates(pd.Series([date(2025, 1, 3)], dtype="object")).tolist() == ["2025-01-03"]


def test_an_unknown_dialect_has_no_upsert():
    with pytest.raises(ValueError, match="does not support"):
        load_module.upsert_statement("mysql", load_module._staging_table())



# What SQLite's executemany binds as it is into a Date column: checked by Arrow at once
# (`load._refuse_non_iso_text`), the same verdict as `normalize.is_iso_date` on each value.
DATE_TEXTS = ["2026-11-30", "0001-01-01", "9999-12-31", "2024-02-29", "2023-02-29", "2026-11-3", "2026-11-30 ",
              " 2026-11-30", "20261130", "2026-W48-1", "30/11/2026", "", "NaT", "0000-01-01", "10000-01-01",
              "2026-11-30T00:00:00", "２０２６-11-30", "2026-11-3\ud800", "2026\u221211\u221230"]


@pytest.mark.parametrize("text", DATE_TEXTS, ids=repr)
def test_the_sqlite_date_check_refuses_exactly_what_is_iso_date_refuses(text):
    from include.patient_import.normalize import is_iso_date

    values = ["2026-11-30", None, text, "1999-12-31", date(2026, 11, 30)]
    if is_iso_date(text):
        load_module._refuse_non_iso_text("birth_date", values)
    else:
        with pytest.raises(TypeError, match="birth_date: a text that is not a YYYY-MM-DD day"):
            load_module._refuse_non_iso_text("birth_date", values)
