"""load_import on both stores (SQLite, PostgreSQL): the rules of SPEC §3 as the store applies them."""

import threading
import traceback
import uuid
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from include.patient_import import problems as p
from include.patient_import import records
from include.patient_import.load import load_import
from include.patient_import.practices import Practice
from include.patient_import.rules import CODE, DATA_COLUMNS
from include.patient_import.schema import ROW_NUMBER
from include.patient_import.store import ImportProblem, ImportRow, Patient, create_store_engine

# Tier: unit, the PostgreSQL variants `postgres` (tests/conftest.py).

MARCH = date(2025, 3, 1)
APRIL = date(2025, 4, 1)
MAY = date(2025, 5, 1)
DRIP = Practice(id="drip_clinic", name="Drip Clinic", systems=frozenset({"drip_education"}))
PLAIN = Practice(id="plain_clinic", name="Plain Clinic")
ANN = {"account_number": "101", "last_name": "Avery", "first_name": "Ann", "city": "Salem",
       "email": "ann@example.com", "birth_date": "1980-02-03", "status": "active"}
BOB = {"account_number": "102", "last_name": "Byrne", "first_name": "Bob", "city": "Dover"}


@pytest.fixture
def store(store_url):
    engine = create_store_engine(store_url)
    yield engine
    engine.dispose()


def export(*patients: dict) -> pd.DataFrame:
    """A normalised export as validation leaves it: one row per patient from row 2, no suite code."""
    rows = [{ROW_NUMBER: n, **dict.fromkeys(DATA_COLUMNS), CODE: None, **patient}
            for n, patient in enumerate(patients, start=2)]
    return pd.DataFrame(rows, columns=[ROW_NUMBER, *DATA_COLUMNS, CODE], dtype="object").astype(
        {ROW_NUMBER: "int64"})


def load(engine, practice, frame, exported_on=MARCH, *, import_id=None, dry_run=False):
    import_id = import_id or f"{practice.id}_{uuid.uuid4().hex[:12]}"
    records.sync_practices(engine, {practice.id: practice})
    records.register_import(engine, id=import_id, practice_id=practice.id, dag_run_id="manual__test",
                            map_index=-1, run_type="manual", export_name="export.csv",
                            export_sha256="0" * 64, export_bytes=0, archive_path=None,
                            exported_on=exported_on, dry_run=dry_run)
    result, problems = load_import(engine, import_id=import_id, practice=practice, exported_on=exported_on,
                                   frame=frame, problems=[], rejection=None, dry_run=dry_run)
    return result, problems, import_id


def stored(engine, practice_id) -> dict[str, dict]:
    table = Patient.__table__
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.practice_id == practice_id)).mappings().all()
    return {r["third_party_acct_number"]: dict(r) for r in rows}


def outcomes(engine, import_id) -> dict[int, tuple[str, str | None]]:
    table = ImportRow.__table__
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.row_number, table.c.outcome, table.c.code)
                            .where(table.c.import_id == import_id)).all()
    return {r: (o, c) for r, o, c in rows}


def counts(result) -> dict[str, int]:
    return result.counts.as_dict()


def test_new_patients_are_inserted_with_their_account_number_and_export_date(store):
    result, _, import_id = load(store, DRIP, export(ANN, BOB))

    assert result.status == p.Status.COMPLETED
    assert counts(result) == {"read": 2, "inserted": 2, "updated": 0, "unchanged": 0, "skipped": 0, "rejected": 0}
    ann, bob = stored(store, DRIP.id)["101"], stored(store, DRIP.id)["102"]
    assert ((ann["last_name"], ann["first_name"], ann["city"], ann["email"])
            == ("Avery", "Ann", "Salem", "ann@example.com"))
    assert ann["birth_date"] == date(1980, 2, 3)
    assert ann["last_seen_exported_on"] == MARCH
    assert ann["created_import_id"] == import_id and ann["updated_import_id"] is None
    assert bob["status"] == "active"  # an empty status means active for a new patient
    assert outcomes(store, import_id) == {2: (p.INSERTED, None), 3: (p.INSERTED, None)}


def test_new_patients_get_their_ids_in_file_order(store):
    frame = export(*[{"account_number": str(900 - n), "last_name": f"L{n}", "first_name": "F"} for n in range(20)])

    load(store, DRIP, frame)

    by_row = sorted(stored(store, DRIP.id).values(), key=lambda r: -int(r["third_party_acct_number"]))
    ids = [r["id"] for r in by_row]
    assert ids == sorted(ids)


def test_changed_values_update_the_stored_patient(store):
    load(store, DRIP, export(ANN, BOB))

    result, _, import_id = load(store, DRIP, export({**ANN, "city": "Boston"}, BOB), APRIL)

    assert (result.counts.updated, result.counts.unchanged) == (1, 1)
    ann = stored(store, DRIP.id)["101"]
    assert ann["city"] == "Boston" and ann["updated_import_id"] == import_id
    assert stored(store, DRIP.id)["102"]["updated_import_id"] is None


def test_an_empty_cell_never_erases_a_stored_value(store):
    load(store, DRIP, export(ANN))

    blanked = {**ANN, "email": None, "birth_date": None, "status": None, "city": "Boston"}
    result, _, _ = load(store, DRIP, export(blanked), APRIL)

    assert result.counts.updated == 1
    ann = stored(store, DRIP.id)["101"]
    assert (ann["email"], ann["birth_date"], ann["status"], ann["city"]) == (
        "ann@example.com", date(1980, 2, 3), "active", "Boston")


def test_an_empty_status_keeps_a_stored_inactive_patient_inactive(store):
    load(store, DRIP, export({**ANN, "status": "inactive"}))

    result, _, _ = load(store, DRIP, export({**ANN, "status": None, "city": "Boston"}), APRIL)

    assert result.counts.updated == 1
    assert stored(store, DRIP.id)["101"]["status"] == "inactive"


def test_a_row_whose_only_difference_is_empty_cells_is_unchanged(store):
    load(store, DRIP, export(ANN))

    result, _, _ = load(store, DRIP, export({**ANN, "email": None, "city": None}), APRIL)

    assert result.counts.unchanged == 1
    assert stored(store, DRIP.id)["101"]["email"] == "ann@example.com"


def test_reimporting_the_same_export_changes_nothing(store):
    load(store, DRIP, export(ANN, BOB))
    before = stored(store, DRIP.id)

    result, _, import_id = load(store, DRIP, export(ANN, BOB))

    assert counts(result) == {"read": 2, "inserted": 0, "updated": 0, "unchanged": 2, "skipped": 0, "rejected": 0}
    assert stored(store, DRIP.id) == before
    assert outcomes(store, import_id) == {2: (p.UNCHANGED, None), 3: (p.UNCHANGED, None)}


def _patient_writes(engine) -> list[str]:
    """The statements that write the patients table, recorded while the block runs."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO PATIENTS"):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    return seen


def test_a_reimport_that_changes_nothing_writes_no_patient(store):
    load(store, DRIP, export(ANN, BOB), MARCH)
    writes = _patient_writes(store)

    result, _, _ = load(store, DRIP, export(ANN, BOB), MARCH)
    assert result.counts.unchanged == 2 and writes == []  # no staging table, no upsert

    result, _, _ = load(store, DRIP, export(ANN, {**BOB, "city": "Exeter"}), MARCH)
    assert result.counts.updated == 1 and len(writes) == 1
    assert stored(store, DRIP.id)["102"]["city"] == "Exeter"


def test_odd_text_survives_the_bulk_write_on_both_databases(store):
    odd = {"account_number": "103", "last_name": 'O"Neil, Jr.', "first_name": "Zoë\nMarie", "city": "",
           "address2": "Apt 4\tB", "email": None, "birth_date": "1975-12-31"}
    load(store, DRIP, export(odd))

    row = stored(store, DRIP.id)["103"]
    assert (row["last_name"], row["first_name"], row["address2"]) == ('O"Neil, Jr.', "Zoë\nMarie", "Apt 4\tB")
    assert row["email"] is None and str(row["birth_date"]) == "1975-12-31"
    assert row["city"] in ("", None)  # an empty text stays empty or null, never the text 'None' or 'NaN'


def test_a_newer_export_that_changes_nothing_still_moves_last_seen_forward(store):
    load(store, DRIP, export(ANN), MARCH)

    result, _, _ = load(store, DRIP, export(ANN), MAY)

    assert result.counts.unchanged == 1
    assert stored(store, DRIP.id)["101"]["last_seen_exported_on"] == MAY


def test_an_export_older_than_the_stored_patient_is_skipped(store):
    load(store, DRIP, export(ANN), MARCH)
    load(store, DRIP, export(ANN), MAY)  # newer, changed nothing
    before = stored(store, DRIP.id)

    result, problems, import_id = load(store, DRIP, export({**ANN, "city": "Boston"}, BOB), APRIL)

    assert (result.counts.skipped, result.counts.inserted) == (1, 1)
    assert outcomes(store, import_id)[2] == (p.SKIPPED, p.OLDER_THAN_STORED)
    assert stored(store, DRIP.id)["101"] == before["101"]  # city and last_seen_exported_on as they were
    assert stored(store, DRIP.id)["102"]["last_seen_exported_on"] == APRIL
    assert [(x.row, x.code, x.severity) for x in problems] == [(2, p.OLDER_THAN_STORED, "info")]


def test_an_export_of_the_same_date_applies_the_later_import(store):
    load(store, DRIP, export(ANN), APRIL)

    result, _, _ = load(store, DRIP, export({**ANN, "city": "Boston"}), APRIL)

    assert result.counts.updated == 1
    assert stored(store, DRIP.id)["101"]["city"] == "Boston"


def test_capacity_exceeded_rejects_the_whole_import_and_changes_no_patient(store):
    small = Practice(id="small_clinic", name="Small", capacity=3, systems=frozenset({"drip_education"}))
    load(store, small, export(ANN, BOB))
    before = stored(store, small.id)
    newcomers = [{"account_number": str(200 + n), "last_name": "New", "first_name": f"N{n}"} for n in range(2)]

    result, problems, import_id = load(store, small, export({**ANN, "city": "Boston"}, *newcomers), APRIL)

    assert result.status == p.Status.REJECTED
    assert counts(result) == {"read": 3, "inserted": 0, "updated": 0, "unchanged": 0, "skipped": 0, "rejected": 3}
    assert stored(store, small.id) == before
    assert [x.code for x in problems if x.row is None] == [p.CAPACITY_EXCEEDED]
    assert set(outcomes(store, import_id).values()) == {(p.REJECTED, p.CAPACITY_EXCEEDED)}
    with store.connect() as conn:
        details = records.get_import(conn, import_id)["details"]
    assert all(part in details for part in ('"capacity": 3', '"stored": 2', '"new": 2', '"overflow": 1'))


def test_updates_alone_never_hit_capacity(store):
    full = Practice(id="full_clinic", name="Full", capacity=2, systems=frozenset({"drip_education"}))
    load(store, full, export(ANN, BOB))

    result, _, _ = load(store, full, export({**ANN, "city": "Boston"}, BOB), APRIL)

    assert result.status == p.Status.COMPLETED and result.counts.updated == 1


def test_stored_patients_without_an_account_number_reject_the_import(store):
    records.sync_practices(store, {DRIP.id: DRIP})
    with store.begin() as conn:
        conn.execute(sa.insert(Patient.__table__).values(practice_id=DRIP.id, third_party_acct_number=None,
                                                         last_name="Manual", first_name="Entry", status="active"))

    result, problems, _ = load(store, DRIP, export(ANN))

    assert result.status == p.Status.REJECTED and result.counts.rejected == 1
    assert [x.code for x in problems] == [p.EXISTING_PATIENTS_WITHOUT_ACCOUNT_NUMBER]
    assert list(stored(store, DRIP.id)) == [None]


def test_running_a_load_again_returns_the_recorded_result_and_writes_nothing_twice(store):
    first, first_problems, import_id = load(store, DRIP, export(ANN, BOB))
    before = stored(store, DRIP.id)

    again, again_problems = load_import(store, import_id=import_id, practice=DRIP, exported_on=MARCH,
                                        frame=export({**ANN, "city": "Boston"}, BOB), problems=[],
                                        rejection=None, dry_run=False)

    assert again.already_loaded and again.counts == first.counts and again.status == first.status
    assert again_problems == first_problems
    assert stored(store, DRIP.id) == before
    with store.connect() as conn:
        recorded = conn.execute(sa.select(sa.func.count()).select_from(ImportRow.__table__)
                                .where(ImportRow.__table__.c.import_id == import_id)).scalar_one()
    assert recorded == 2


def test_a_dry_run_records_the_outcomes_but_changes_no_patient(store):
    result, _, import_id = load(store, DRIP, export(ANN, BOB), dry_run=True)

    assert result.counts.inserted == 2
    assert stored(store, DRIP.id) == {}
    assert outcomes(store, import_id) == {2: (p.INSERTED, None), 3: (p.INSERTED, None)}


def test_a_new_inactive_patient_is_skipped_without_drip_education(store):
    result, problems, import_id = load(store, PLAIN, export({**ANN, "status": "inactive"}, BOB))

    assert (result.counts.skipped, result.counts.inserted) == (1, 1)
    assert outcomes(store, import_id)[2] == (p.SKIPPED, p.INACTIVE_WITHOUT_DRIP_EDUCATION)
    assert set(stored(store, PLAIN.id)) == {"102"}
    assert [(x.row, x.code) for x in problems] == [(2, p.INACTIVE_WITHOUT_DRIP_EDUCATION)]


def test_a_new_inactive_patient_is_imported_with_drip_education(store):
    result, _, _ = load(store, DRIP, export({**ANN, "status": "inactive"}))

    assert result.counts.inserted == 1
    assert stored(store, DRIP.id)["101"]["status"] == "inactive"


def test_a_stored_patient_becomes_inactive_without_drip_education(store):
    load(store, PLAIN, export(ANN))

    result, _, _ = load(store, PLAIN, export({**ANN, "status": "inactive"}), APRIL)

    assert result.counts.updated == 1
    assert stored(store, PLAIN.id)["101"]["status"] == "inactive"


def test_a_payment_plan_list_skips_the_other_accounts(store):
    plans = Practice(id="plan_clinic", name="Plans", systems=frozenset({"auto_debit"}),
                     payment_plan_accounts=frozenset({"101"}))

    result, problems, import_id = load(store, plans, export(ANN, BOB))

    assert (result.counts.inserted, result.counts.skipped) == (1, 1)
    assert outcomes(store, import_id)[3] == (p.SKIPPED, p.NOT_ON_PAYMENT_PLAN_LIST)
    assert set(stored(store, plans.id)) == {"101"}
    assert [(x.row, x.code) for x in problems] == [(3, p.NOT_ON_PAYMENT_PLAN_LIST)]


@pytest.mark.parametrize(("new", "warned"), [(50, False), (51, True)])
def test_a_large_import_for_a_payment_plan_practice_without_a_list_warns(store, new, warned):
    plans = Practice(id="calc_clinic", name="Calculator", systems=frozenset({"cash_plan_calculator"}))
    frame = export(*[{"account_number": str(1000 + n), "last_name": "L", "first_name": f"F{n}"} for n in range(new)])

    result, problems, _ = load(store, plans, frame)

    assert result.counts.inserted == new
    found = [x for x in problems if x.code == p.LARGE_IMPORT_FOR_PAYMENT_PLAN_PRACTICE]
    assert [(x.row, x.severity) for x in found] == ([(None, "warning")] if warned else [])


def test_concurrent_loads_of_one_practice_serialise_and_respect_capacity(store):
    small = Practice(id="busy_clinic", name="Busy", capacity=3, systems=frozenset({"drip_education"}))
    records.sync_practices(store, {small.id: small})
    frames = [export(*[{"account_number": str(base + n), "last_name": "L", "first_name": "F"} for n in range(2)])
              for base in (300, 400)]
    ids = [f"{small.id}_{n}" for n in range(2)]
    for import_id in ids:
        records.register_import(store, id=import_id, practice_id=small.id, dag_run_id="manual__test", map_index=-1,
                                run_type="manual", export_name="export.csv", export_sha256="0" * 64,
                                export_bytes=0, archive_path=None, exported_on=MARCH, dry_run=False)
    start = threading.Barrier(2)
    results, errors = {}, []

    def run(import_id, frame):
        try:
            start.wait(timeout=30)
            results[import_id], _ = load_import(store, import_id=import_id, practice=small, exported_on=MARCH,
                                                frame=frame, problems=[], rejection=None, dry_run=False)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(ids, frames)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sorted(r.status for r in results.values()) == [p.Status.COMPLETED, p.Status.REJECTED]
    assert len(stored(store, small.id)) == 2


def _leaks(text: str) -> list[str]:
    return [value for value in ("Quixote", "Zelda", "zq@example.org", "77 Sunset", "1961-07-04") if value in text]


SECRET = {"account_number": "555", "last_name": "Quixote", "first_name": "Zelda", "email": "zq@example.org",
          "address1": "77 Sunset Strip", "birth_date": "1961-07-04"}


def test_a_constraint_violation_shows_no_patient_value(store, request, caplog):
    ghost = Practice(id="ghost_clinic", name="Not in the practices table", systems=frozenset({"drip_education"}))
    records.register_import(store, id="ghost_1", practice_id=ghost.id, dag_run_id="manual__test", map_index=-1,
                            run_type="manual", export_name="export.csv", export_sha256="0" * 64, export_bytes=0,
                            archive_path=None, exported_on=MARCH, dry_run=False)

    with pytest.raises(sa.exc.IntegrityError) as raised:
        load_import(store, import_id="ghost_1", practice=ghost, exported_on=MARCH, frame=export(SECRET),
                    problems=[], rejection=None, dry_run=False)

    printed = "".join(traceback.format_exception(raised.value))
    assert "parameters hidden" in printed or "[SQL:" in printed
    assert _leaks(printed) == [] and _leaks(caplog.text) == []
    if make_url(store.url).get_backend_name() == "postgresql":
        assert _leaks(request.getfixturevalue("postgres_server").log_path.read_text()) == []


def test_a_value_too_long_for_its_column_is_reported_by_row_without_the_value(store, request):
    if make_url(store.url).get_backend_name() == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths")

    with pytest.raises(sa.exc.DataError) as raised:
        load(store, DRIP, export(BOB, {**SECRET, "state": SECRET["last_name"]}))

    printed = "".join(traceback.format_exception(raised.value))
    assert "spreadsheet row 3" in printed
    assert _leaks(printed) == []
    assert _leaks(request.getfixturevalue("postgres_server").log_path.read_text()) == []
    assert stored(store, DRIP.id) == {}


def test_a_value_too_long_in_a_later_chunk_of_the_write_is_reported_by_its_own_row(store, monkeypatch):
    """The rows reach the store `_INSERT_CHUNK` at a time (one COPY each on PostgreSQL); the
    server counts lines within a COPY, and the note must still name the row's spreadsheet row."""
    if make_url(store.url).get_backend_name() == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    from include.patient_import import load as load_module

    monkeypatch.setattr(load_module, "_INSERT_CHUNK", 2)
    rows = [{**BOB, "account_number": str(700 + n)} for n in range(4)]
    with pytest.raises(sa.exc.DataError) as raised:
        load(store, DRIP, export(*rows, {**SECRET, "state": SECRET["last_name"]}))

    printed = "".join(traceback.format_exception(raised.value))
    assert "spreadsheet row 6" in printed and _leaks(printed) == []
    assert stored(store, DRIP.id) == {}


def test_a_store_error_on_postgresql_quotes_no_failing_row(store, request):
    if make_url(store.url).get_backend_name() == "sqlite":
        pytest.skip("PostgreSQL's DETAIL (`Failing row contains ...`) is what is scrubbed")
    records.sync_practices(store, {DRIP.id: DRIP})

    with pytest.raises(sa.exc.IntegrityError) as raised, store.begin() as conn:
        conn.execute(sa.insert(Patient.__table__).values(practice_id=DRIP.id, third_party_acct_number="555",
                                                         last_name="Quixote", first_name="Zelda", status=None))

    printed = "".join(traceback.format_exception(raised.value))
    assert "not-null" in printed and "status" in printed
    assert _leaks(printed) == []
    assert _leaks(request.getfixturevalue("postgres_server").log_path.read_text()) == []


def test_the_import_problems_are_recorded_with_the_outcomes(store):
    _, problems, import_id = load(store, PLAIN, export({**ANN, "status": "inactive"}))

    table = ImportProblem.__table__
    with store.connect() as conn:
        rows = conn.execute(sa.select(table.c.row_number, table.c.account_number, table.c.code, table.c.severity)
                            .where(table.c.import_id == import_id)).all()
    assert [tuple(r) for r in rows] == [(2, "101", p.INACTIVE_WITHOUT_DRIP_EDUCATION, "info")]
    assert len(problems) == 1
