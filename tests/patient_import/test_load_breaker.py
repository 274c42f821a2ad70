"""Hostile cases for the load's PostgreSQL write (load.update_insert_statements): it must leave what
the `INSERT ... ON CONFLICT` upsert leaves, and every guarantee of SPEC §3, §4 and §8 must hold
(a retried load equals one clean load, nothing is lost, duplicated or silently changed, undo
restores exactly, the load's session settings stay inside its transaction)."""

import datetime
import shutil
import threading
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from include.patient_import import changes as changes_module
from include.patient_import import load as load_module
from include.patient_import import records
from include.patient_import.normalize import (
    normalize_account_number,
    normalize_export,
    normalize_phone,
    normalize_zip,
)
from include.patient_import.practices import Practice
from include.patient_import.rules import CODE
from include.patient_import.schema import ROW_NUMBER
from include.patient_import.store import Patient, create_store_engine
from include.patient_import.undo import undo_import
from tests.patient_import.test_load import ANN, APRIL, BOB, DRIP, MARCH, MAY, PLAIN, export, load
from tests.patient_import.test_load_paths import _contents, three_stores  # noqa: F401 - fixture

# Tier: unit, PostgreSQL (`postgres`).

OTHER = Practice(id="other_clinic", name="Other Clinic", systems=frozenset({"drip_education"}))
WIDE = {"account_number": "9" * 32, "last_name": "L" * 200, "first_name": "F" * 200, "state": "MA",
        "zip": "02134-1234", "home_phone": "5551234567", "gender": "X", "status": "inactive"}

UNDO = "undo"  # ("undo", n): undo the n-th import of the case
RETRY = "retry"  # the load before again, under its import id
FAIL = "fail"  # (FAIL, step): the step's load dies after its write, inside its transaction

CASES = {
    "another practice holds the same account number": [
        (OTHER, [ANN, BOB], MARCH), (DRIP, [{**ANN, "city": "Lyme"}, BOB], APRIL), (OTHER, [ANN], MAY)],
    "equal export date, changed value (the later import wins)": [
        (DRIP, [ANN, BOB], MARCH), (DRIP, [{**ANN, "city": "Lyme"}, {**BOB, "city": None}], MARCH)],
    "every value equal to the stored one, newer export": [(DRIP, [ANN], MARCH), (DRIP, [ANN], APRIL)],
    "older export, new and stored rows": [
        (DRIP, [ANN], MAY), (DRIP, [{**ANN, "city": "Lyme"}, BOB], MARCH), (DRIP, [ANN, BOB], APRIL)],
    "inactive rows with and without drip education": [
        (DRIP, [{**ANN, "status": "inactive"}, BOB], MARCH), (PLAIN, [{**ANN, "status": "inactive"}, BOB], MARCH),
        (PLAIN, [{**BOB, "status": "inactive"}], APRIL), (DRIP, [{**ANN, "status": None}], APRIL)],
    "values at the column limits": [(DRIP, [WIDE], MARCH), (DRIP, [{**WIDE, "city": "C" * 300}], APRIL)],
    "one row": [(DRIP, [BOB], MARCH)],
    "zero rows written (an older export only)": [(DRIP, [ANN], MAY), (DRIP, [ANN], MARCH)],
    "undo after an update_insert-written import": [
        (DRIP, [ANN, BOB], MARCH), (DRIP, [{**ANN, "city": "Lyme", "email": None}, {**BOB, "zip": "02134"},
                                          {"account_number": "7", "last_name": "N", "first_name": "M"}], APRIL),
        (UNDO, 1)],
    "undo of the first import after a later one changed a patient again": [
        (DRIP, [ANN], MARCH), (DRIP, [{**ANN, "city": "Lyme"}, BOB], APRIL), (DRIP, [{**ANN, "city": "Rye"}], MAY),
        (UNDO, 1), (UNDO, 2), (UNDO, 1)],
    "undo of an import that only saw its patients (newer export, nothing changed)": [
        (DRIP, [ANN, BOB], MARCH), (DRIP, [ANN, BOB], APRIL), (UNDO, 1), (DRIP, [ANN, {**BOB, "city": "Rye"}], MAY)],
    "a load dies inside its transaction after the write, then is retried": [
        (DRIP, [ANN, BOB], MARCH), (FAIL, (DRIP, [{**ANN, "city": "Lyme"}, {**BOB, "state": "NH"},
                                             {"account_number": "8", "last_name": "N", "first_name": "M"}], APRIL)),
        RETRY, RETRY],
}


class Died(Exception):
    """A load killed inside its transaction (after its patients were written, before the commit)."""


def _run(url: str, steps: list, write: str, monkeypatch) -> dict:
    monkeypatch.setattr(load_module, "POSTGRES_WRITE", write)
    engine = create_store_engine(url)
    done: list[str] = []
    try:
        last = None
        for number, step in enumerate(steps):
            if step == RETRY:
                import_id, practice, rows, exported_on = last
                load_module.load_import(engine, import_id=import_id, practice=practice, exported_on=exported_on,
                                        frame=export(*rows), problems=[], rejection=None, dry_run=False)
                continue
            if step[0] == UNDO:
                undo_import(engine, done[step[1]], by="breaker")
                continue
            dies = step[0] == FAIL
            practice, rows, exported_on = step[1] if dies else step
            last = (f"{practice.id}_{number:012d}", practice, rows, exported_on)
            if dies:
                real = changes_module.log_after

                def dying(conn):
                    real(conn)
                    raise Died(last[0])

                monkeypatch.setattr(changes_module, "log_after", dying)
                with pytest.raises(Died):
                    load(engine, practice, export(*rows), exported_on, import_id=last[0])
                monkeypatch.setattr(changes_module, "log_after", real)
            else:
                load(engine, practice, export(*rows), exported_on, import_id=last[0])
            done.append(last[0])
        return _contents(engine)
    finally:
        engine.dispose()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Undo writes its report under the storage root."""
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", str(tmp_path / "home"))


def _ids_ranked(contents: dict) -> dict:
    """test_load_paths' ranking, for stores where an undo removed a logged patient ("gone")."""
    rank = {p["id"]: str(n) for n, p in enumerate(contents["patients"])}
    return {**contents,
            "patients": [{**p, "id": rank[p["id"]]} for p in contents["patients"]],
            "patient_changes": [{**c, "patient_id": rank.get(c["patient_id"], "gone")}
                                for c in contents["patient_changes"]]}


def _without_undo_stamps(contents: dict) -> dict:
    return {**contents, "patient_changes": [{**c, "reverted_at": c["reverted_at"] and "set"}
                                            for c in contents["patient_changes"]]}


@pytest.mark.postgres
@pytest.mark.parametrize("case", list(CASES))
def test_both_writes_agree_on_hostile_sequences(case, three_stores, home, monkeypatch):  # noqa: F811
    steps = CASES[case]

    two_statements = _without_undo_stamps(_run(three_stores["update_insert"], steps, "update_insert", monkeypatch))
    upserted = _without_undo_stamps(_run(three_stores["on_conflict"], steps, "on_conflict", monkeypatch))
    on_sqlite = _without_undo_stamps(_run(three_stores["sqlite"], steps, "update_insert", monkeypatch))

    assert _ids_ranked(two_statements) == _ids_ranked(upserted)
    assert _ids_ranked(two_statements) == _ids_ranked(on_sqlite)


@pytest.mark.postgres
def test_a_load_that_died_in_its_transaction_then_retried_equals_one_clean_load(three_stores, home, monkeypatch):  # noqa: F811
    steps = CASES["a load dies inside its transaction after the write, then is retried"]
    clean = [steps[0], steps[1][1]]
    for store in ("update_insert", "sqlite"):
        died = _run(three_stores[store], steps, "update_insert", monkeypatch)
        assert died["patients"], store
    fresh = _run(three_stores["on_conflict"], clean, "update_insert", monkeypatch)
    assert died == fresh  # sqlite's, ids included


@pytest.mark.postgres
def test_undo_after_the_update_insert_write_restores_exactly(three_stores, home, monkeypatch):  # noqa: F811
    first = [(DRIP, [ANN, BOB], MARCH)]
    before = _run(three_stores["update_insert"], first, "update_insert", monkeypatch)["patients"]
    after = _run(three_stores["on_conflict"], [*first, *CASES["undo after an update_insert-written import"][1:]],
                 "update_insert", monkeypatch)["patients"]
    assert after == before


# ------------------------------------------------------------------ duplicates reaching the write


def _duplicated(account: str, cities: tuple[str, str]):
    return export({**BOB, "account_number": account, "city": cities[0]},
                  {**BOB, "account_number": account, "city": cities[1]})


@pytest.mark.postgres
@pytest.mark.parametrize("write", ["update_insert", "on_conflict"])
@pytest.mark.parametrize("stored_first", [True, False], ids=["stored", "new"])
def test_two_rows_for_one_account_never_reach_the_store(write, stored_first, postgres_store, monkeypatch):
    """Validation marks a repeated account number (`duplicate_account_number`); should a frame reach
    the load without that mark, the write must refuse it whole, never store one of the two rows
    at the database's whim (PostgreSQL's `UPDATE ... FROM` applies an arbitrary one of the
    matches; ON CONFLICT refuses to touch a row twice)."""
    monkeypatch.setattr(load_module, "POSTGRES_WRITE", write)
    if stored_first:
        load(postgres_store, DRIP, export(BOB), MARCH)
    snapshot = _patients(postgres_store)

    with pytest.raises(load_module.UnkeyedStagedRows):
        load(postgres_store, DRIP, _duplicated("102", ("Wells", "Rye")), APRIL)

    assert _patients(postgres_store) == snapshot


def test_two_rows_for_one_account_never_reach_the_sqlite_store(tmp_path, _sqlite_store_template):
    shutil.copyfile(_sqlite_store_template, tmp_path / "store.db")
    engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        load(engine, DRIP, export(BOB), MARCH)
        snapshot = _patients(engine)
        with pytest.raises(load_module.UnkeyedStagedRows):
            load(engine, DRIP, _duplicated("102", ("Wells", "Rye")), APRIL)
        assert _patients(engine) == snapshot
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("write", ["update_insert", "on_conflict"])
def test_a_row_without_an_account_number_never_reaches_the_store(write, postgres_store, monkeypatch):
    """Stored without an account number, a patient would reject every later import of the
    practice (SPEC §3 rule 4): a row that reached the load without its `missing_required_field`
    mark is refused, whole, by both writes."""
    monkeypatch.setattr(load_module, "POSTGRES_WRITE", write)
    load(postgres_store, DRIP, export(BOB), MARCH)
    snapshot = _patients(postgres_store)

    with pytest.raises(load_module.UnkeyedStagedRows, match=r"row 3 \(account None\)") as raised:
        load(postgres_store, DRIP, export(ANN, {**BOB, "account_number": None}), APRIL)

    assert "Byrne" not in str(raised.value) and "Dover" not in str(raised.value)
    assert _patients(postgres_store) == snapshot


def _patients(engine) -> list[dict]:
    table = Patient.__table__
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]


# ------------------------------------------------------------------ the pooled connection afterwards


@pytest.fixture
def postgres_store(request):
    server = request.getfixturevalue("postgres_server")
    name = f"breaker_{uuid.uuid4().hex[:12]}"
    engine = create_store_engine(server.create_database(name, template=request.getfixturevalue(
        "_postgres_store_template")))
    yield engine
    engine.dispose()
    server.drop_database(name)


_SETTINGS = ("jit", "work_mem", "enable_mergejoin")


def _settings(conn) -> dict:
    return {name: conn.exec_driver_sql(f"SHOW {name}").scalar_one() for name in _SETTINGS}


@pytest.mark.postgres
@pytest.mark.parametrize("ending", ["committed", "died", "already loaded"])
def test_the_loads_settings_and_tables_stay_inside_its_transaction(ending, postgres_store, monkeypatch):
    """The load's JIT, work_mem and join settings and its temporary tables end with its transaction:
    the pooled connection's next user (another load, a report query) finds the server's defaults
    and no table of the load's."""
    with postgres_store.connect() as conn:
        pid, defaults = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one(), _settings(conn)
    import_id = "drip_clinic_000000000001"
    if ending == "already loaded":
        load(postgres_store, DRIP, export(ANN), MARCH, import_id=import_id)
    if ending == "died":
        monkeypatch.setattr(changes_module, "log_after", lambda conn: (_ for _ in ()).throw(Died()))
        with pytest.raises(Died):
            load(postgres_store, DRIP, export(ANN, BOB), MARCH, import_id=import_id)
    elif ending == "already loaded":
        load_module.load_import(postgres_store, import_id=import_id, practice=DRIP, exported_on=MARCH,
                                frame=export(ANN), problems=[], rejection=None, dry_run=False)
    else:
        load(postgres_store, DRIP, export(ANN, BOB), MARCH, import_id=import_id)

    with postgres_store.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() == pid, "the same pooled connection"
        assert _settings(conn) == defaults
        temporary = conn.exec_driver_sql(
            "SELECT relname FROM pg_class WHERE relpersistence = 't' AND pg_table_is_visible(oid)").scalars().all()
        assert temporary == []


@pytest.mark.postgres
def test_two_loads_on_one_pooled_connection_in_a_row(postgres_store):
    """The temporary tables' fixed names: a second load on the connection the first one used."""
    records.sync_practices(postgres_store, {OTHER.id: OTHER})
    load(postgres_store, DRIP, export(ANN, BOB), MARCH)
    load(postgres_store, OTHER, export(ANN, BOB), MARCH)
    load(postgres_store, DRIP, export({**ANN, "city": "Lyme"}), APRIL)

    rows = _patients(postgres_store)
    assert sorted((r["practice_id"], r["third_party_acct_number"], r["city"]) for r in rows) == [
        ("drip_clinic", "101", "Lyme"), ("drip_clinic", "102", "Dover"),
        ("other_clinic", "101", "Salem"), ("other_clinic", "102", "Dover")]


@pytest.mark.postgres
def test_twelve_thousand_rows_both_writes_agree(three_stores, monkeypatch):  # noqa: F811
    many = [{"account_number": str(10_000 + n), "last_name": f"L{n % 97}", "first_name": "F",
             "city": None if n % 3 else "Salem"} for n in range(12_000)]
    again = [{**row, "city": "Rye"} if n % 5 == 0 else row for n, row in enumerate(many)]
    big = Practice(id="drip_clinic", name="Big", capacity=100_000, systems=frozenset({"drip_education"}))
    steps = [(big, many[:7_000], MARCH), (big, again, APRIL)]  # more than a batch (5,000) of each

    two_statements = _run(three_stores["update_insert"], steps, "update_insert", monkeypatch)
    upserted = _run(three_stores["on_conflict"], steps, "on_conflict", monkeypatch)

    assert _ids_ranked(two_statements) == _ids_ranked(upserted)
    assert len(two_statements["patients"]) == 12_000
    assert two_statements["imports"][-1]["updated"] == "1400"


# ------------------------------------------------------------------ two imports at once


@pytest.mark.postgres
@pytest.mark.parametrize("practices", ["one practice", "two practices"])
def test_overlapping_imports_at_once_write_each_patient_once(practices, postgres_store):
    """Two loads racing on the same account numbers (one practice: serialised by its lock, the
    second finds the first's patients stored; two practices: neither sees the other's). The
    update_insert write has no ON CONFLICT to fall back on: a race it lost would be a unique
    violation or a second copy of a patient."""
    second = DRIP if practices == "one practice" else OTHER
    records.sync_practices(postgres_store, {DRIP.id: DRIP, OTHER.id: OTHER})
    people = [{"account_number": str(500 + n), "last_name": f"L{n}", "first_name": "F"} for n in range(400)]
    jobs = [(DRIP, "drip_clinic_race_a", people[:300]),
            (second, f"{second.id}_race_b", [{**r, "city": "Rye"} for r in people[100:]])]
    for practice, import_id, _ in jobs:
        records.register_import(postgres_store, id=import_id, practice_id=practice.id, dag_run_id="manual__race",
                                map_index=-1, run_type="manual", export_name="export.csv", export_sha256="0" * 64,
                                export_bytes=0, archive_path=None, exported_on=MARCH, dry_run=False)
    start, results, errors = threading.Barrier(2), {}, []

    def run(practice, import_id, rows):
        try:
            start.wait(timeout=30)
            results[import_id], _ = load_module.load_import(
                postgres_store, import_id=import_id, practice=practice, exported_on=MARCH,
                frame=export(*rows), problems=[], rejection=None, dry_run=False)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    written = {(r["practice_id"], r["third_party_acct_number"]): r for r in _patients(postgres_store)}
    if practices == "two practices":
        assert len(written) == 600
        return
    assert len(written) == 400
    counts = {i: r.counts.as_dict() for i, r in results.items()}
    inserted = sum(c["inserted"] for c in counts.values())
    assert inserted == 400
    # Whichever ran second found the 200 shared patients stored: the later one (b) updates them
    # when it ran second, a's rows leave b's city (an empty cell never erases) when a ran second.
    shared = [written[("drip_clinic", str(500 + n))]["city"] for n in range(100, 300)]
    assert set(shared) == {"Rye"}
    with postgres_store.connect() as conn:
        logged = conn.execute(sa.text(
            "SELECT import_id, action, count(*) FROM patient_changes GROUP BY import_id, action")).all()
    assert sum(n for _, action, n in logged if action == "inserted") == 400


# ------------------------------------------------------------------ cells that only look empty

# What a copied web page leaves in a cell that shows nothing, or at the edge of a value: zero-width
# space, BOM, word joiner, direction marks (Unicode format characters, category Cf).
INVISIBLE = ("\u200b", "\ufeff", "\u2060", "\u200e", "\u200f \u200b")


@pytest.mark.parametrize("mark", INVISIBLE, ids=lambda m: "+".join(f"U{ord(c):04X}" for c in m))
def test_a_cell_that_only_looks_empty_never_erases_a_stored_value(mark, store_url):
    """SPEC §3 rule 6 through normalisation and both stores: an invisible cell is an empty cell,
    and an invisible mark at a value's edge is no change (the row stays `unchanged`)."""
    def normalised(**cells):
        raw = pd.DataFrame({ROW_NUMBER: [2], **{k: [v] for k, v in cells.items()}})
        frame = normalize_export(raw, today=datetime.date(2026, 11, 30)).frame
        frame[CODE] = None
        return frame

    engine = create_store_engine(store_url)
    try:
        first = normalised(account_number="102", last_name="Byrne", first_name="Bob", city="Dover",
                           address1="1 Main St")
        load(engine, DRIP, first, MARCH)
        again = normalised(account_number="102", last_name=f"Byrne{mark}", first_name=f"{mark}Bob", city=mark,
                           address1=mark)
        result, _, _ = load(engine, DRIP, again, APRIL)

        [bob] = _patients(engine)
        assert (bob["last_name"], bob["first_name"], bob["city"], bob["address1"]) == (
            "Byrne", "Bob", "Dover", "1 Main St")
        assert (result.counts.updated, result.counts.unchanged) == (0, 1)
    finally:
        engine.dispose()


@pytest.mark.parametrize("mark", INVISIBLE, ids=lambda m: "+".join(f"U{ord(c):04X}" for c in m))
def test_invisible_marks_in_an_account_number_do_not_make_another_patient(mark):
    """The store keys on the account number (SPEC §3 rule 4): `123` with a zero-width space or a
    direction mark copied along is the account 123, not a rejected row or a second patient. The
    same for the other structured values."""
    assert normalize_account_number(f"{mark}00123{mark}") == "123"
    assert normalize_account_number(f"1{mark.replace(' ', '')}23") == "123"
    assert normalize_zip(f"02134{mark}")[0] == "02134"
    assert normalize_phone(f"{mark}(617) 253-1000")[0] == "6172531000"
