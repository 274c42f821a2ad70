"""Breaking validate's narrowed read for possible duplicates (SPEC §8): the stored people born on a
new row's birth date only (`stored_patients(born_on=...)`) must give exactly the warnings of the
whole read, on SQLite and PostgreSQL, and a malformed stored birth date must still stop the import
saying which column and accounts, never a value."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from include.patient_import import problems as p
from include.patient_import.patients import StoredDateError, stored_patients
from include.patient_import.practices import PAYMENT_PLAN_SYSTEMS, Practice
from include.patient_import.rules import CODE, PERSON_FIELDS, new_patients, possible_duplicates
from include.patient_import.schema import ROW_NUMBER
from include.patient_import.store import Patient
from tests.patient_import import test_patients

# Tier: unit, the PostgreSQL variants `postgres` (tests/conftest.py).


# test_patients' practice, and its fixture: a fresh store on each database with the practice synced.
PRACTICE = test_patients.PRACTICE
store = test_patients.store
TODAY = date(2026, 11, 30)
# Four-digit padding, leap days, the turns of a year and a millennium, the ends of `date`.
EDGE_DAYS = [date(1, 1, 1), date(999, 12, 31), date(1899, 12, 31), date(1900, 2, 28), date(1999, 12, 31),
             date(2000, 1, 1), date(2000, 2, 29), date(2024, 2, 29), date(9999, 12, 31)]
NAMES = [("Ana", "Lopez"), ("José", "O'Brien"), ("Zoë", "Smith"), ("Li", "Wu"), ("Renée", "Lefèvre")]
RETYPED = {"Ana": " ANA", "José": "jose", "Zoë": "ZOE", "Li": "li ", "Renée": "Renee",
           "Lopez": "LOPEZ", "O'Brien": "obrien", "Smith": "smith", "Wu": "WU", "Lefèvre": "LEFEVRE"}



def put(engine, patients: list[dict]) -> None:
    rows = [{"practice_id": PRACTICE.id, "status": "active", "birth_date": None, **patient} for patient in patients]
    with engine.begin() as conn:
        conn.execute(sa.insert(Patient.__table__), rows)


def frame_of(rows: list[tuple], codes: list | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["account_number", "first_name", "last_name", "birth_date"], dtype=object)
    frame.insert(0, ROW_NUMBER, range(2, 2 + len(frame)))
    frame[CODE] = codes if codes is not None else [None] * len(frame)
    frame["status"] = None
    return frame


def both_reads(engine, frame: pd.DataFrame, practice: Practice = PRACTICE):
    """(is_new, whole read's warnings, narrowed read's warnings, narrowed people), as validate on
    `main` and on this branch read them."""
    with engine.connect() as conn:
        is_new = new_patients(frame, stored_patients(conn, practice.id).index, practice)
        everyone = stored_patients(conn, practice.id, PERSON_FIELDS)
        born = stored_patients(conn, practice.id, PERSON_FIELDS,
                               born_on=frame.loc[is_new.to_numpy(dtype=bool), "birth_date"])
    whole = possible_duplicates(frame, is_new, everyone).listed
    narrowed = possible_duplicates(frame, is_new, born).listed
    return is_new, whole, narrowed, born, everyone


def _store_and_export(seed: int, days: list[date]):
    """A store of people on `days` (several per day, some without a birth date, accounts with
    leading zeros) and an export mixing: the same people retyped under new accounts, their own
    updates, namesakes born on other days, rejected rows, rows without a birth date (None, NaN,
    empty), and copies of new rows under other new accounts."""
    rnd = random.Random(seed)
    stored = []
    for n, day in enumerate(days):
        for k in range(rnd.randint(1, 3)):
            first, last = NAMES[(n + k) % len(NAMES)]
            account = f"{n:05d}{k}" if k == 2 else f"{n}-{k}"
            stored.append({"third_party_acct_number": account, "first_name": first, "last_name": last,
                           "birth_date": None if rnd.random() < 0.05 else day})
    rows, codes = [], []
    for patient in rnd.sample(stored, min(len(stored), 900)):
        day = patient["birth_date"]
        iso = day.isoformat() if day else rnd.choice([None, float("nan"), ""])
        first, last = RETYPED[patient["first_name"]], RETYPED[patient["last_name"]]
        kind = rnd.random()
        if kind < 0.2:  # the patient's own update: never warned
            rows.append((patient["third_party_acct_number"], first, last, iso))
        elif kind < 0.3:  # the stored account without its leading zeros: a new account
            rows.append((patient["third_party_acct_number"].lstrip("0") + "x", first, last, iso))
        elif kind < 0.4:  # a namesake born the next day
            nxt = (day + timedelta(days=1)).isoformat() if day and day < date.max else None
            rows.append((f"N{len(rows)}", first, last, nxt))
        else:
            rows.append((f"{len(rows):07d}", first, last, iso))  # leading zeros too
        codes.append(rnd.choice([None] * 8 + sorted(p.ROW_ERROR_CODES)[:1]))
    for i in range(0, 60, 3):  # another new row of the same new person under another new account
        acct, first, last, iso = rows[i]
        rows.append((f"C{i}", first.upper(), last, iso))
        codes.append(None)
    return stored, frame_of(rows, codes)


def test_whole_and_narrowed_reads_warn_the_same_over_edge_days_and_more_days_than_one_in_query(store):
    """More new birth dates than one `IN` query takes (`_BORN_ON_BATCH`), the ends of `date`,
    leap days and pre-1900 days, retyped names, updates, rejected rows, leading zeros: the warnings
    of the narrowed read are those of the whole read, message for message."""
    from include.patient_import.patients import _BORN_ON_BATCH

    days = EDGE_DAYS + [date(1930, 1, 1) + timedelta(days=3 * d) for d in range(2 * _BORN_ON_BATCH + 50)]
    stored, frame = _store_and_export(1, days)
    put(store, stored)

    is_new, whole, narrowed, born, everyone = both_reads(store, frame)

    assert frame.loc[is_new.to_numpy(dtype=bool), "birth_date"].nunique() > 2 * _BORN_ON_BATCH // 3
    assert len(born) < len(everyone)
    assert len(whole) > 100 and set(whole["code"]) == {p.POSSIBLE_DUPLICATE_PATIENT}
    assert narrowed.equals(whole)
    # The ends of `date` were among the matches.
    warned_days = set(frame.set_index(ROW_NUMBER).loc[whole["row"].astype("int64"), "birth_date"])
    assert {"0001-01-01", "9999-12-31", "2000-02-29"} & warned_days


def test_the_narrowed_read_does_not_depend_on_the_stored_order(store):
    """The narrowed read comes back query by query, not in the whole read's order: the warnings
    (which name the lowest account numbers first) must not depend on it."""
    stored, frame = _store_and_export(2, EDGE_DAYS * 3)
    put(store, list(reversed(stored)))

    is_new, whole, narrowed, born, everyone = both_reads(store, frame)

    shuffled = born.sample(frac=1.0, random_state=3)
    assert possible_duplicates(frame, is_new, shuffled).listed.equals(whole)
    assert narrowed.equals(whole)


def is_stored(engine, frame: pd.DataFrame):
    with engine.connect() as conn:
        return frame["account_number"].isin(stored_patients(conn, PRACTICE.id).index).to_numpy()


@pytest.mark.parametrize("rule", ["payment_plan", "inactive_without_drip"])
def test_rules_2_and_3_decide_which_rows_are_read_and_warn_the_same_with_either_read(store, rule):
    """Rules 2 (new inactive patients without drip education) and 3 (payment-plan list) decide
    which rows are new: a skipped row's birth date is not read, and the warnings are still those of
    the whole read (other rows matching a skipped one included)."""
    stored, frame = _store_and_export(4, EDGE_DAYS * 2)
    put(store, stored)
    if rule == "payment_plan":
        plan = frozenset(frame["account_number"].iloc[::4].astype(str))
        practice = replace(PRACTICE, systems=PAYMENT_PLAN_SYSTEMS, payment_plan_accounts=plan)
        skipped = ~frame["account_number"].isin(plan).to_numpy() & ~is_stored(store, frame)
    else:
        frame.loc[frame.index[1::3], "status"] = "inactive"
        practice = replace(PRACTICE, systems=frozenset())
        skipped = frame["status"].eq("inactive").to_numpy() & ~is_stored(store, frame)

    is_new, whole, narrowed, _, _ = both_reads(store, frame, practice)

    assert skipped.any() and not is_new[skipped].any() and is_new.any()
    assert narrowed.equals(whole)


def test_a_person_under_more_accounts_than_named_counts_the_same_rest_with_either_read(store):
    """A person stored under more accounts than a warning names (`DUPLICATE_ACCOUNTS_NAMED`), and
    namesakes on every other day: the named accounts and the count of the rest come from that
    birth date alone, so the narrowed read gives the same messages."""
    from include.patient_import.rules import DUPLICATE_ACCOUNTS_NAMED

    day = date(2000, 2, 29)
    many = DUPLICATE_ACCOUNTS_NAMED + 4
    put(store, [{"third_party_acct_number": f"{n:03d}", "first_name": "Zoë", "last_name": "Smith",
                 "birth_date": day if n % 2 else day + timedelta(days=n)} for n in range(1, 2 * many + 1)])
    frame = frame_of([("900", "zoe", "SMITH", day.isoformat()), ("0900", "ZOË", "smith", day.isoformat()),
                      ("001", "Zoe", "Smith", day.isoformat()), ("901", "Zoe", "Smith", "2000-03-01")])

    is_new, whole, narrowed, born, everyone = both_reads(store, frame)

    assert len(born) == many and len(everyone) == 2 * many
    assert list(whole["row"]) == [2, 3] and whole["message"].str.contains("more").all()
    assert narrowed.equals(whole)


def selects_of_patients(engine) -> list[str]:
    """The statements reading the patients table, as the engine runs them (appended to as it goes)."""
    seen: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "FROM patients" in statement:
            seen.append(statement)

    return seen


@pytest.mark.parametrize("spread", ["one_query", "many_days"])
def test_many_new_birth_dates_are_read_in_one_query_with_the_same_people(store, spread):
    """Defect found: more than `_BORN_ON_BATCH` new birth dates (a large export) made one `IN`
    query per 500 days, each scanning every patient of the practice (no index on birth_date): 88
    queries over 100,000 patients took 18 times main's one read. Now any number of days is one
    query, with the same people: those born on the days; None, NaN, non-ISO texts and stored
    patients without a birth date or with a stored value that is no ISO day match none."""
    from include.patient_import.patients import _BORN_ON_BATCH

    first = date(1920, 1, 1)
    count = 3 * _BORN_ON_BATCH if spread == "many_days" else _BORN_ON_BATCH
    put(store, [{"third_party_acct_number": str(n), "first_name": "Ana", "last_name": "Lopez",
                 "birth_date": None if n % 13 == 0 else first + timedelta(days=n % (count + 40))}
                for n in range(1, 2 * count)])
    sqlite = make_url(str(store.url)).get_backend_name() == "sqlite"
    # A hand edit on an asked-for day: a datetime text (SQLite), a date no `date` holds (PostgreSQL).
    edit = "birth_date || ' 00:00:00'" if sqlite else "'infinity'"
    with store.begin() as conn:
        conn.execute(sa.text(f"UPDATE patients SET birth_date = {edit} WHERE third_party_acct_number = '2'"))
    asked = [(first + timedelta(days=d)).isoformat() for d in range(count)] + [None, float("nan"), "x", "1920-13-01"]
    fields = ["first_name", "last_name", "birth_date"]
    seen = selects_of_patients(store)

    with store.connect() as conn:
        born = stored_patients(conn, PRACTICE.id, fields, born_on=asked)

    assert len(seen) == 1
    expected = {str(n) for n in range(1, 2 * count) if n % 13 and n % (count + 40) < count and n != 2}
    assert set(born.index) == expected and set(born["birth_date"]) <= set(asked)


RAW_BIRTH_DATES = ["01/02/1980", "1/2/80", "1980-01-02", "29221", "2/29/00", "02/29/2000", "  1/2/1980 ", 29221,
                   29221.0, pd.Timestamp("1980-01-02"), date(1980, 1, 2), "", None, "12/31/1899", "2/30/2000"]


def test_every_birth_date_form_the_normaliser_takes_reaches_the_narrowed_read(store):
    """The narrowed read takes only plain `str` ISO days (`is_iso_date`): every form the
    normaliser accepts (m/d/yy, mm/dd/yyyy, ISO, Excel serials as text and numbers, typed cells)
    must come out as one, or its stored namesakes would silently not be read."""
    from include.patient_import.normalize import normalize_export

    put(store, [{"third_party_acct_number": f"S{n}", "first_name": "Ana", "last_name": "Lopez", "birth_date": day}
                for n, day in enumerate([date(1980, 1, 1), date(1980, 1, 2), date(2000, 2, 29), date(1899, 12, 31)])])
    count = len(RAW_BIRTH_DATES)
    raw = pd.DataFrame({ROW_NUMBER: range(2, 2 + count), "account_number": [f"N{n}" for n in range(count)],
                        "first_name": ["ana"] * count, "last_name": ["LOPEZ"] * count, "birth_date": RAW_BIRTH_DATES},
                       dtype=object)
    frame = normalize_export(raw, today=TODAY).frame
    frame[CODE] = None
    frame["status"] = None

    assert all(type(v) is str or v is None for v in frame["birth_date"])
    _, whole, narrowed, born, _ = both_reads(store, frame)

    assert len(whole) >= 11 and set(born.index) == {"S0", "S1", "S2"}
    assert narrowed.equals(whole)


# ---------------------------------------------------------------- the whole import

REGISTRY = "practices:\n  - id: demo_clinic\n    name: Demo\n    capacity: 5000\n    systems: [drip_education]\n"


def raw_patients(engine) -> list[tuple]:
    """Every stored row as the driver gives it (no Date type: a malformed stored date reads too)."""
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text("SELECT * FROM patients ORDER BY id"))]


@pytest.mark.parametrize("dry_run", [False, True], ids=["import", "dry_run"])
def test_a_malformed_stored_birth_date_still_stops_the_import_naming_column_and_account_only(
        tmp_path, monkeypatch, dry_run):
    """Validate reads no date no new row is born on, and the load reads only the patients the export
    names (`decide_against_store`, a block at a time): an export naming the patient stops at the
    load, on a dry run too, before writing any patient or publishing an upload file, saying the
    column and the account number, never the stored value; an export not naming it imports, and
    leaves the value as it is."""
    from tools.corpus import prepare_home, run_import
    from tools.generator import generate_patients, write_export

    engine = prepare_home(tmp_path / "home", monkeypatch, limits=False, practices_yaml=REGISTRY)
    first = generate_patients(60, seed=8, first_account=10_001, today=TODAY)
    [a] = run_import(engine, write_export(first, tmp_path / "first.csv", seed=1), run_id="manual__a",
                     exported_on=TODAY)
    assert a.report["counts"]["inserted"] == 60
    with engine.begin() as conn:  # a hand edit: a datetime text where a day belongs
        conn.execute(sa.text("UPDATE patients SET birth_date = '1961-07-04 00:00:00' "
                             "WHERE third_party_acct_number = '10007'"))
    before = raw_patients(engine)
    again = first.iloc[:20]  # names account 10007 among others

    with pytest.raises(StoredDateError) as raised:
        run_import(engine, write_export(again, tmp_path / "again.csv", seed=2), run_id="manual__b",
                   exported_on=TODAY, dry_run=dry_run)

    message = str(raised.value)
    assert "birth_date" in message and "account numbers 10007)" in message
    assert "1961" not in message and "00:00" not in message
    assert raw_patients(engine) == before
    # The failed import's report says nothing of the value, and no upload file was published for it.
    home = tmp_path / "home"
    written = [f for area in ("reports", "outbox") for f in (home / area).rglob("*") if f.is_file()]
    assert len(list((home / "reports").rglob("*.json"))) == 2
    assert not [f for f in written if "1961-07-04" in f.read_text(encoding="utf-8-sig")]
    assert len(list((home / "outbox").rglob("*.csv"))) == 1  # the first import's upload only

    others = generate_patients(60, seed=8, first_account=50_001, today=TODAY).iloc[:20]
    [c] = run_import(engine, write_export(others, tmp_path / "others.csv", seed=3), run_id="manual__c",
                     exported_on=TODAY, dry_run=dry_run)
    assert c.report["counts"]["inserted"] == 20
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT birth_date FROM patients WHERE third_party_acct_number = '10007'")).scalar()
    assert kept == "1961-07-04 00:00:00"
    engine.dispose()


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_generated_near_duplicates_against_the_store_warn_as_the_whole_read_does(tmp_path, monkeypatch, fmt):
    """The whole pipeline with the generator's near-duplicates (retyped names, namesakes) against a
    store, birth dates as Excel leaves them (m/d/yy, mm/dd/yyyy, ISO, serial numbers, typed xlsx
    cells): validate's warnings are exactly those of `possible_duplicates` over the whole read."""
    from tools.corpus import prepare_home, run_import
    from tools.generator import add_problems, generate_patients, write_export

    engine = prepare_home(tmp_path / "home", monkeypatch, limits=False, practices_yaml=REGISTRY)
    first = generate_patients(200, seed=5, first_account=10_001, today=TODAY)
    run_import(engine, write_export(first, tmp_path / "first.csv", seed=1), run_id="manual__a", exported_on=TODAY)
    again = generate_patients(200, seed=5, first_account=60_001, today=TODAY).iloc[:50]
    mixed = pd.concat([first.iloc[100:140], again], ignore_index=True)
    mixed = add_problems(mixed, seed=6, bad_share=0.05, duplicate_share=0.02, near_duplicate_share=0.1, today=TODAY)
    path = write_export(mixed, tmp_path / f"mixed.{fmt}", fmt=fmt, seed=3)

    from include.patient_import import pipeline, staging

    # Validate alone, its staged rows kept (the report stage cleans them up).
    [done] = pipeline.run_import(engine, "demo_clinic", pipeline.RunInfo(dag_id="t", run_id="manual__b", map_index=0),
                                 export_file=str(path), exported_on=TODAY, stages=["validate"], report=False)
    validation = staging.load_validation(done["import_id"])
    listed = validation.problems.listed
    warned = listed[listed["code"] == p.POSSIBLE_DUPLICATE_PATIENT].reset_index(drop=True)
    _, whole, narrowed, _, _ = both_reads(engine, validation.frame)

    assert len(warned) >= 40
    assert narrowed.equals(whole)
    assert warned[list(whole.columns)].equals(whole.reset_index(drop=True))
    engine.dispose()
