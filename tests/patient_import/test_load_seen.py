"""The load's "seen again" path (load._seen_rows, load.seen_statement, changes.start_log): stored
patients an export only sees again on a later day are staged as keys alone and one UPDATE moves
their `last_seen_exported_on` forward (SPEC §3 rule 7). It must leave the store and the change log
(SPEC §8) exactly as writing every such row whole did, on both databases, for every mix of
outcomes, retried after dying inside its transaction, and undone."""

import datetime
import random
import shutil
import uuid

import pytest
import sqlalchemy as sa

from include.patient_import import changes as changes_module
from include.patient_import import load as load_module
from include.patient_import import records
from include.patient_import.catalogue import DUPLICATE_ROW, MISSING_REQUIRED_FIELD
from include.patient_import.practices import Practice
from include.patient_import.rules import WRITE
from include.patient_import.store import Patient, PatientChange, create_store_engine
from include.patient_import.undo import undo_import
from tests.patient_import.test_load import ANN, APRIL, BOB, DRIP, MARCH, MAY, PLAIN, export, load, outcomes, stored
from tests.patient_import.test_load_paths import _contents

# Tier: unit, PostgreSQL (`postgres`).

# Account numbers a key-only staging table and an `IN (SELECT ...)` must carry exactly.
ODD_ACCOUNTS = ["a\nb", "t\tb", "0101", "101", " 7 ", "a'b\"c", "Zoë-ß", "9" * 32, "1,2", "e\u0301", "\\N",
                "N\\N", "007", "x;--"]
SAME_DAY_LATER = datetime.datetime(2025, 4, 1, 13, 5)  # an export date given as a datetime
JUNE = datetime.date(2025, 6, 1)
BIG = Practice(id="drip_clinic", name="Big", capacity=100_000, systems=frozenset({"drip_education"}))

UNDO, NULL_SEEN, DIES = "undo", "null_seen", "dies"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_stores(request, tmp_path):
    """Two fresh migrated stores on one database (conftest's `store_url`, twice)."""
    if request.param == "sqlite":
        paths = [tmp_path / f"patient_store_{n}.db" for n in range(2)]
        for path in paths:
            shutil.copyfile(request.getfixturevalue("_sqlite_store_template"), path)
        yield [f"sqlite:///{path}" for path in paths]
        return
    server = request.getfixturevalue("postgres_server")
    names = [f"seen_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    template = request.getfixturevalue("_postgres_store_template")
    yield [server.create_database(name, template=template) for name in names]
    for name in names:
        server.drop_database(name)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Undo writes its report under the storage root."""
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", str(tmp_path / "home"))


def _whole_rows(monkeypatch) -> None:
    """The write before the seen path: every row the load writes staged whole and written by the
    upsert / UPDATE+INSERT (`changes.log_before` names the unchanged ones `seen`)."""

    def whole_rows_stager(write, practice, exported_on):
        def stage(decided):
            written = decided[decided[WRITE]]
            write.stage(load_module._patient_rows(written, practice.id, write.import_id, exported_on),
                        load_module._seen_rows(written.iloc[:0], practice.id))
        return None if write is None else stage

    monkeypatch.setattr(load_module, "_stager", whole_rows_stager)


class Died(Exception):
    """A load killed inside its transaction."""


def _dying(monkeypatch, after_log: bool) -> None:
    """The next load dies at the change log's after-images (`log_after`, after the patients' whole
    write, before the seen UPDATE): before (`after_log` False) or after writing them."""
    real = changes_module.log_after

    def log_after(conn):
        if after_log:
            real(conn)
        raise Died("at the change log's after-images")

    monkeypatch.setattr(changes_module, "log_after", log_after)


def _run(url: str, steps: list, monkeypatch) -> dict:
    """Run `steps` on a fresh store: (practice, rows, export date[, DIES]) loads, (UNDO, n) the
    n-th load's undo, NULL_SEEN (every other patient's `last_seen_exported_on` emptied). A dying
    load is retried twice under its import id. Returns test_load_paths' `_contents`."""
    engine = create_store_engine(url)
    done: list[str] = []
    try:
        for number, step in enumerate(steps):
            if step == NULL_SEEN:
                with engine.begin() as conn:
                    table = Patient.__table__
                    conn.execute(sa.update(table).where(table.c.id % 2 == 0).values(last_seen_exported_on=None))
                continue
            if step[0] == UNDO:
                undo_import(engine, done[step[1]], by="breaker")
                continue
            practice, rows, exported_on, *dies = step
            import_id = f"{practice.id}_{number:012d}"
            if dies:
                with monkeypatch.context() as patched:
                    _dying(patched, after_log=number % 2 == 0)
                    try:
                        load(engine, practice, export(*rows), exported_on, import_id=import_id)
                    except Died:
                        pass  # (a load that writes nothing never reaches the change log)
                for _ in range(2):
                    load_module.load_import(engine, import_id=import_id, practice=practice, exported_on=exported_on,
                                            frame=export(*rows), problems=[], rejection=None, dry_run=False)
            else:
                load(engine, practice, export(*rows), exported_on, import_id=import_id)
            done.append(import_id)
        return _contents(engine)
    finally:
        engine.dispose()


def _comparable(contents: dict) -> dict:
    return {**contents, "patient_changes": [{**c, "reverted_at": c["reverted_at"] and "set"}
                                            for c in contents["patient_changes"]]}


def _random_steps(seed: int) -> list:
    """A seeded mix: rows sent again as they are, with empty cells, changed, rejected, copies;
    export dates older, equal, later, as a datetime; stored dates emptied; undos; dying loads."""
    rng = random.Random(seed)
    steps: list = []
    last: dict[str, dict] = {}
    for _ in range(rng.randint(4, 9)):
        kind = rng.random()
        if kind < 0.1 and steps:
            loads = [n for n, s in enumerate(steps) if s != NULL_SEEN and s[0] != UNDO]
            if loads:
                steps.append((UNDO, rng.randrange(len(loads))))
                continue
        if kind < 0.16:
            steps.append(NULL_SEEN)
            continue
        rows = []
        for account in rng.sample(ODD_ACCOUNTS, rng.randint(0, len(ODD_ACCOUNTS))):
            draw = rng.random()
            if account in last and draw < 0.6:
                row = dict(last[account])
            elif account in last and draw < 0.8:
                row = {**last[account], "city": None, "status": None}  # empty cells erase nothing
            else:
                row = {"account_number": account, "last_name": rng.choice("AB"), "first_name": "F",
                       "city": rng.choice([None, "Salem", "Rye"]), "status": rng.choice([None, "active", "inactive"])}
            last[account] = row
            if rng.random() < 0.06:
                row = {**row, "code": rng.choice([MISSING_REQUIRED_FIELD, DUPLICATE_ROW])}
            rows.append(row)
        step = (rng.choice([DRIP, DRIP, PLAIN]), rows, rng.choice([MARCH, APRIL, SAME_DAY_LATER, MAY]))
        steps.append(step + (DIES,) if rng.random() < 0.15 else step)
    return steps + [(DRIP, list(last.values()), JUNE)]  # a later day's full export: mostly seen


CASES = {
    "only seen rows, a later day": [(DRIP, [ANN, BOB], MARCH), (DRIP, [ANN, BOB], APRIL)],
    "seen, updated, inserted, older and rejected rows in one import": [
        (DRIP, [ANN, BOB], APRIL), (PLAIN, [ANN, BOB], MARCH),
        (DRIP, [ANN, {**BOB, "city": "Rye"}, {"account_number": "103", "last_name": "C", "first_name": "C"},
                {"account_number": "104", "last_name": None, "first_name": "D", "code": MISSING_REQUIRED_FIELD}],
         MAY),
        (DRIP, [ANN], MARCH)],
    "the same day again, as a date and as a datetime": [
        (DRIP, [ANN, BOB], APRIL), (DRIP, [ANN, BOB], APRIL), (DRIP, [ANN, BOB], SAME_DAY_LATER),
        (DRIP, [ANN, BOB], datetime.datetime(2025, 5, 1, 8, 0))],  # a later day, as a datetime: seen
    "stored export dates emptied, then seen": [(DRIP, [ANN, BOB], MARCH), NULL_SEEN, (DRIP, [ANN, BOB], MARCH)],
    "empty cells only, a later day": [
        (DRIP, [ANN, BOB], MARCH), (DRIP, [{**ANN, "city": None, "email": None}, {**BOB, "city": None}], APRIL)],
    "odd account numbers seen again": [
        (DRIP, [{"account_number": a, "last_name": "L", "first_name": "F"} for a in ODD_ACCOUNTS], MARCH),
        (PLAIN, [{"account_number": a, "last_name": "L", "first_name": "F"} for a in ODD_ACCOUNTS[::2]], MARCH),
        (DRIP, [{"account_number": a, "last_name": "L", "first_name": "F"} for a in ODD_ACCOUNTS], APRIL)],
    "undo of an import that only saw, of a later one, twice": [
        (DRIP, [ANN, BOB], MARCH), (DRIP, [ANN, BOB], APRIL), (DRIP, [{**ANN, "city": "Rye"}, BOB], MAY),
        (UNDO, 1), (UNDO, 2), (UNDO, 1), (UNDO, 1), (UNDO, 2)],
    "a load of seen rows dies and is retried": [
        (DRIP, [ANN, BOB], MARCH), (DRIP, [ANN, BOB], APRIL, DIES), (DRIP, [ANN, BOB], MAY, DIES)],
    # Two seeds here (180 per database agreed when the path was written; each costs 1-3 s).
    **{f"seeded mix {seed}": _random_steps(seed) for seed in range(2)},
}


@pytest.mark.parametrize("case", list(CASES))
def test_seen_keys_leave_the_store_and_change_log_as_the_whole_row_write(case, two_stores, home, monkeypatch):
    steps = CASES[case]
    staged: list[str] = []
    real_insert = load_module._bulk_insert
    with monkeypatch.context() as patched:
        patched.setattr(load_module, "_bulk_insert",
                        lambda conn, table, rows: (staged.append(table.name), real_insert(conn, table, rows))[1])
        seen_keys = _run(two_stores[0], steps, monkeypatch)
    with monkeypatch.context() as patched:
        _whole_rows(patched)
        whole = _run(two_stores[1], steps, monkeypatch)

    assert "patient_seen_staging" in staged, "the case takes the seen path"
    assert _comparable(seen_keys) == _comparable(whole)  # patient ids included


def _last_seen(engine, practice_id: str) -> dict[str, str | None]:
    return {account: row["last_seen_exported_on"] and str(row["last_seen_exported_on"])
            for account, row in stored(engine, practice_id).items()}


def _set_last_seen(engine, practice_id: str, dates: dict[str, datetime.date | None]) -> None:
    table = Patient.__table__
    with engine.begin() as conn:
        for account, day in dates.items():
            conn.execute(sa.update(table).where(table.c.practice_id == practice_id,
                                                table.c.third_party_acct_number == account)
                         .values(last_seen_exported_on=day))


def _logged(engine, import_id: str) -> dict[str, tuple[str, str | None, str | None]]:
    """{account: (action, before last seen, after last seen)} of an import's change-log entries."""
    table = PatientChange.__table__
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.third_party_acct_number, table.c.action,
                                      table.c.before_last_seen_exported_on, table.c.after_last_seen_exported_on)
                            .where(table.c.import_id == import_id)).all()
    return {a: (action, b and str(b), f and str(f)) for a, action, b, f in rows}


@pytest.fixture
def store(store_url):
    engine = create_store_engine(store_url)
    yield engine
    engine.dispose()


CARL = {"account_number": "0103", "last_name": "Cole", "first_name": "Carl"}
DORA = {"account_number": "103", "last_name": "Dunn", "first_name": "Dora"}


@pytest.mark.parametrize("exported_on", [APRIL, datetime.datetime(2025, 4, 1, 23, 59)], ids=["date", "datetime"])
def test_a_stored_export_date_moves_forward_from_empty_or_earlier_never_back(exported_on, store):
    """Stored `last_seen_exported_on` empty, earlier, equal, later; the other practice's patients
    with the same account numbers and an account differing only by a leading zero stay as they were."""
    records.sync_practices(store, {PLAIN.id: PLAIN})
    load(store, DRIP, export(ANN, BOB, CARL, DORA), MARCH)
    load(store, PLAIN, export(ANN, BOB, CARL, DORA), MARCH)
    _set_last_seen(store, DRIP.id, {"101": None, "102": MARCH, "0103": APRIL, "103": MAY})
    before_plain = stored(store, PLAIN.id)

    _, _, import_id = load(store, DRIP, export(ANN, BOB, CARL, DORA), exported_on)

    assert outcomes(store, import_id) == {2: ("unchanged", None), 3: ("unchanged", None), 4: ("unchanged", None),
                                          5: ("skipped", "older_than_stored")}
    assert _last_seen(store, DRIP.id) == {"101": "2025-04-01", "102": "2025-04-01", "0103": "2025-04-01",
                                          "103": "2025-05-01"}
    logged = _logged(store, import_id)
    assert logged["101"] == ("seen", None, "2025-04-01")
    assert logged["102"] == ("seen", "2025-03-01", "2025-04-01")
    assert "103" not in logged  # older than stored: not written
    assert set(logged) <= {"101", "102", "0103"}
    assert stored(store, PLAIN.id) == before_plain


def test_only_the_export_date_of_a_patient_seen_again_changes(store):
    load(store, DRIP, export(ANN, BOB), MARCH)
    before = stored(store, DRIP.id)
    _, _, import_id = load(store, DRIP, export({**ANN, "city": None, "email": None}, BOB), APRIL)

    after = stored(store, DRIP.id)
    assert after == {a: {**row, "last_seen_exported_on": APRIL} for a, row in before.items()}
    assert _logged(store, import_id) == {"101": ("seen", "2025-03-01", "2025-04-01"),
                                         "102": ("seen", "2025-03-01", "2025-04-01")}


def test_undo_of_an_import_that_only_saw_puts_the_export_dates_back_once(store, home):
    _, _, first = load(store, DRIP, export(ANN, BOB), MARCH)
    _, _, seen = load(store, DRIP, export(ANN, BOB), APRIL)
    _, _, later = load(store, DRIP, export({**ANN, "city": "Rye"}, BOB), MAY)

    undo_import(store, seen, by="breaker")  # a later import saw them again: their date stays
    assert _last_seen(store, DRIP.id) == {"101": "2025-05-01", "102": "2025-05-01"}
    undo_import(store, later, by="breaker")
    assert _last_seen(store, DRIP.id) == {"101": "2025-04-01", "102": "2025-04-01"}
    assert stored(store, DRIP.id)["101"]["city"] == "Salem"
    again = undo_import(store, seen, by="breaker")
    assert again.already_undone
    assert _last_seen(store, DRIP.id) == {"101": "2025-04-01", "102": "2025-04-01"}

    _, _, fresh = load(store, DRIP, export(ANN, BOB), APRIL.replace(day=2))
    undo_import(store, fresh, by="breaker")
    assert _last_seen(store, DRIP.id) == {"101": "2025-04-01", "102": "2025-04-01"}
    undo_import(store, fresh, by="breaker")
    assert _last_seen(store, DRIP.id) == {"101": "2025-04-01", "102": "2025-04-01"}
    undo_import(store, first, by="breaker")
    assert stored(store, DRIP.id) == {}


def _temporary_tables(engine) -> list[str]:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return conn.exec_driver_sql("SELECT relname FROM pg_class WHERE relpersistence = 't' "
                                        "AND pg_table_is_visible(oid)").scalars().all()
        return conn.exec_driver_sql("SELECT name FROM sqlite_temp_master WHERE type = 'table'").scalars().all()


@pytest.mark.parametrize("after_log", [False, True], ids=["after the seen update", "after the change log"])
@pytest.mark.parametrize("mix", ["only seen", "seen and changed"])
def test_a_load_dying_after_its_seen_update_leaves_nothing_and_a_retry_finishes_once(after_log, mix, store,
                                                                                   monkeypatch):
    load(store, DRIP, export(ANN, BOB), MARCH)
    rows = [ANN, BOB] if mix == "only seen" else [ANN, {**BOB, "city": "Rye"}, DORA]
    before = _contents(store)
    import_id = "drip_clinic_000000000009"

    with monkeypatch.context() as patched:
        _dying(patched, after_log)
        with pytest.raises(Died):
            load(store, DRIP, export(*rows), APRIL, import_id=import_id)
    assert {k: v for k, v in _contents(store).items() if k != "imports"} == {
        k: v for k, v in before.items() if k != "imports"}
    assert _logged(store, import_id) == {}
    assert _temporary_tables(store) == []

    for _ in range(2):
        result, _ = load_module.load_import(store, import_id=import_id, practice=DRIP, exported_on=APRIL,
                                            frame=export(*rows), problems=[], rejection=None, dry_run=False)
    assert result.already_loaded
    assert _last_seen(store, DRIP.id)["101"] == "2025-04-01"
    logged = _logged(store, import_id)
    assert logged["101"] == ("seen", "2025-03-01", "2025-04-01")
    assert len(logged) == len(rows)
    assert _temporary_tables(store) == []


def test_more_than_a_batch_of_patients_seen_again(two_stores, monkeypatch):
    """More than `_SQLITE_BATCH` keys staged (set to 50 here: 7,500 rows against 5,000 cost the
    same path 12 s), a few changed rows among them."""
    monkeypatch.setattr(load_module, "_SQLITE_BATCH", 50)
    many = [{"account_number": f"{n:07d}", "last_name": f"L{n % 97}", "first_name": "F"} for n in range(75)]
    again = [{**row, "city": "Rye"} if n % 10 == 0 else row for n, row in enumerate(many)]
    steps = [(BIG, many, MARCH), (BIG, again, APRIL)]

    seen_keys = _run(two_stores[0], steps, monkeypatch)
    with monkeypatch.context() as patched:
        _whole_rows(patched)
        whole = _run(two_stores[1], steps, monkeypatch)

    assert seen_keys == whole
    assert {p["last_seen_exported_on"] for p in seen_keys["patients"]} == {"2025-04-01"}
    assert sum(c["action"] == "seen" for c in seen_keys["patient_changes"]) == 75 - 8


def test_a_dry_run_of_patients_seen_again_changes_no_patient_and_logs_nothing(store):
    load(store, DRIP, export(ANN, BOB), MARCH)
    before = stored(store, DRIP.id)
    _, _, import_id = load(store, DRIP, export(ANN, BOB, DORA), APRIL, dry_run=True)

    assert outcomes(store, import_id) == {2: ("unchanged", None), 3: ("unchanged", None), 4: ("inserted", None)}
    assert stored(store, DRIP.id) == before
    assert _logged(store, import_id) == {}
