"""The stored-patient reads (patients.stored_patients) and the decision against the store, on both
stores: dates come back as the same ISO text on SQLite and PostgreSQL, NULLs as None, and the sync
rules (SPEC §3 rules 6 and 7) compare them with the export's values as texts."""

from __future__ import annotations

import re
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from include.patient_import import patients as patients_module
from include.patient_import import problems as p
from include.patient_import import records
from include.patient_import.patients import COMPARED, StoredDateError, decide_against_store, stored_patients
from include.patient_import.practices import Practice
from include.patient_import.rules import CHANGED_FIELDS, OUTCOME, WRITE
from include.patient_import.store import Patient, create_store_engine
from tests.patient_import.frames import normalised

# Tier: unit, the PostgreSQL variants `postgres` (tests/conftest.py).

PRACTICE = Practice(id="demo_clinic", name="Demo", systems=frozenset({"drip_education"}))
# Four-digit padding, leap days and the turns of a year and a millennium: where a date's text
# form differs between one formatter and another.
DAYS = [date(1, 1, 1), date(999, 12, 31), date(1999, 12, 31), date(2000, 1, 1), date(2024, 2, 29),
        date(2025, 12, 31), date(2026, 1, 1), date(9999, 12, 31), None]


@pytest.fixture
def store(store_url):
    engine = create_store_engine(store_url)
    records.sync_practices(engine, {PRACTICE.id: PRACTICE})
    yield engine
    engine.dispose()


def put(engine, *patients: dict) -> None:
    """Store patients of PRACTICE as `normalised` rows name them; values by store column, dates as `date`s."""
    rows = [{"practice_id": PRACTICE.id, "first_name": "Ana", "last_name": "Lopez", "status": "active", **patient}
            for patient in patients]
    keys = {key for row in rows for key in row}  # one executemany takes the first row's keys
    rows = [{**dict.fromkeys(keys), **row} for row in rows]
    with engine.begin() as conn:
        conn.execute(sa.insert(Patient.__table__), rows)


def iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


# ---------------------------------------------------------------- what the read gives


def test_stored_dates_read_as_the_text_isoformat_gives_and_nulls_as_none(store):
    put(store, *[{"third_party_acct_number": str(n), "birth_date": day, "last_visit": day,
                  "last_seen_exported_on": day} for n, day in enumerate(DAYS, start=1)])

    with store.connect() as conn:
        found = stored_patients(conn, PRACTICE.id, ["birth_date", "last_visit", "last_seen_exported_on"])

    expected = {str(n): iso(day) for n, day in enumerate(DAYS, start=1)}
    for column in ("birth_date", "last_visit", "last_seen_exported_on"):
        assert found[column].to_dict() == expected, column
        assert all(value is None or type(value) is str for value in found[column])


def test_stored_dates_ignore_a_postgresql_sessions_date_style_and_time_zone(store):
    if make_url(str(store.url)).get_backend_name() != "postgresql":
        pytest.skip("DateStyle is PostgreSQL's")
    put(store, {"third_party_acct_number": "1", "birth_date": date(2026, 11, 30)})

    with store.connect() as conn:
        conn.exec_driver_sql("SET DateStyle = 'SQL, DMY'")  # a cast to text would give 30/11/2026
        conn.exec_driver_sql("SET TimeZone = 'Pacific/Kiritimati'")  # UTC+14: no day moves either
        found = stored_patients(conn, PRACTICE.id, ["birth_date"])

    assert found["birth_date"].tolist() == ["2026-11-30"]


@pytest.mark.parametrize("style", ["SQL, DMY", "German", "Postgres, MDY", "ISO, YMD"])
def test_the_date_range_check_and_the_years_edges_hold_in_every_postgresql_date_style(store, style):
    if make_url(str(store.url)).get_backend_name() != "postgresql":
        pytest.skip("DateStyle is PostgreSQL's")
    put(store, *[{"third_party_acct_number": str(n), "last_seen_exported_on": day}
                 for n, day in enumerate(DAYS, start=1)])

    with store.connect() as conn:
        conn.exec_driver_sql(f"SET DateStyle = '{style}'")
        conn.exec_driver_sql("SET TimeZone = 'America/Adak'")  # UTC-10 (-9 in summer)
        found = stored_patients(conn, PRACTICE.id, ["last_seen_exported_on"])

    assert found["last_seen_exported_on"].to_dict() == {str(n): iso(day) for n, day in enumerate(DAYS, start=1)}


def test_stored_patients_are_object_columns_indexed_by_account_number(store):
    put(store, {"third_party_acct_number": "7", "city": "Salem"}, {"third_party_acct_number": "12", "city": None},
        {"third_party_acct_number": None, "city": "Dover"})

    with store.connect() as conn:
        found = stored_patients(conn, PRACTICE.id, ["id", "city"])

    assert found.index.name == "third_party_acct_number" and found.index.dtype == object
    assert sorted(found.index) == ["12", "7"]  # a patient without an account number is not read
    assert all(dtype == "object" for dtype in found.dtypes)
    assert found.loc["7", "city"] == "Salem" and found.loc["12", "city"] is None
    assert all(type(value) is int for value in found["id"])


def test_a_practice_without_patients_reads_as_an_empty_frame_of_the_columns(store):
    with store.connect() as conn:
        found = stored_patients(conn, PRACTICE.id, COMPARED)

    assert found.empty
    assert list(found.columns) == list(COMPARED)  # the account number where COMPARED places it


def test_patients_the_import_created_are_left_out_for_a_rerun_stage(store):
    put(store, {"third_party_acct_number": "1"}, {"third_party_acct_number": "2", "created_import_id": "imp_1"})

    with store.connect() as conn:
        found = stored_patients(conn, PRACTICE.id, ["id"], not_created_by="imp_1")

    assert found.index.tolist() == ["1"]


# ---------------------------------------------------------------- the decision against the store


def decide(engine, *rows: dict, exported_on: date) -> pd.DataFrame:
    with engine.connect() as conn:
        return decide_against_store(conn, PRACTICE, normalised(*rows), exported_on)


def test_stored_and_exported_dates_compare_as_equal_texts_at_year_boundaries(store):
    put(store, *[{"third_party_acct_number": str(n), "birth_date": day, "last_visit": day}
                 for n, day in enumerate(DAYS[:-1], start=1)])

    decided = decide(store, *[{"account_number": str(n), "birth_date": iso(day), "last_visit": iso(day)}
                              for n, day in enumerate(DAYS[:-1], start=1)], exported_on=date(2026, 1, 2))

    assert decided[OUTCOME].tolist() == [p.UNCHANGED] * (len(DAYS) - 1)


def test_a_stored_null_date_takes_the_exported_one_and_an_empty_cell_changes_nothing(store):
    put(store, {"third_party_acct_number": "1", "birth_date": None},
        {"third_party_acct_number": "2", "birth_date": date(1980, 2, 3)},
        {"third_party_acct_number": "3", "birth_date": date(1999, 12, 31)},
        {"third_party_acct_number": "4", "birth_date": None, "city": "Salem"})

    decided = decide(store, {"account_number": "1", "birth_date": "1980-02-03"},
                     {"account_number": "2", "birth_date": None},
                     {"account_number": "3", "birth_date": "2000-01-01"},
                     {"account_number": "4", "birth_date": None, "city": None}, exported_on=date(2026, 1, 2))

    assert decided[OUTCOME].tolist() == [p.UPDATED, p.UNCHANGED, p.UPDATED, p.UNCHANGED]
    assert decided[CHANGED_FIELDS].tolist() == ["birth_date", None, "birth_date", None]


def test_rule_7_compares_stored_and_export_dates_across_a_year_boundary(store):
    put(store, {"third_party_acct_number": "1", "last_seen_exported_on": date(2026, 1, 1)},  # same day
        {"third_party_acct_number": "2", "last_seen_exported_on": date(2026, 1, 2)},  # a day later
        {"third_party_acct_number": "3", "last_seen_exported_on": date(2025, 12, 31)},  # a day earlier
        {"third_party_acct_number": "4", "last_seen_exported_on": None})  # never seen

    decided = decide(store, *[{"account_number": str(n)} for n in range(1, 5)], exported_on=date(2026, 1, 1))

    assert decided[OUTCOME].tolist() == [p.UNCHANGED, p.SKIPPED, p.UNCHANGED, p.UNCHANGED]
    assert decided["code"].tolist() == [None, p.OLDER_THAN_STORED, None, None]
    # Only an export date that moves the stored one forward is written (or a first one).
    assert decided[WRITE].tolist() == [False, False, True, True]


# The file's rows: the practice's 3 patients probed for each block (more than twice the file's 1
# row), or read whole once for the stage (at most twice the file's 1,000).
@pytest.mark.parametrize("rows", [1, 1_000], ids=["probed", "read whole"])
def test_client_ids_are_the_store_ids_of_the_files_patients_known_before_the_import(store, rows):
    from types import SimpleNamespace

    from include.patient_import.transform import _client_ids_reader

    put(store, {"third_party_acct_number": "1"}, {"third_party_acct_number": "2", "created_import_id": "imp_1"},
        {"third_party_acct_number": "3"})
    with store.connect() as conn:
        ids = stored_patients(conn, PRACTICE.id, ["id"])["id"].to_dict()
    job = SimpleNamespace(practice_id=PRACTICE.id, import_id="imp_1")
    ids_of = _client_ids_reader(store, job, rows)

    known = ids_of(pd.DataFrame({"account_number": pd.Series(["1", "2", "4", None, "1"], dtype="object")}))

    assert known == {"1": ids["1"]}  # 2 is this import's own, 3 is not in the file, 4 is new
    assert all(type(k) is str and type(v) is int for k, v in known.items())
    assert ids_of(pd.DataFrame({"account_number": pd.Series([], dtype="object")})) == {}


@pytest.mark.parametrize("rows", [0, 1])
def test_a_practice_with_no_patient_has_no_client_ids_to_read(store, rows):
    from types import SimpleNamespace

    from include.patient_import.transform import _client_ids_reader

    job = SimpleNamespace(practice_id=PRACTICE.id, import_id="imp_1")
    assert _client_ids_reader(store, job, rows)(pd.DataFrame({"account_number": ["1"]})) == {}


@pytest.mark.parametrize("rows", [0, 1_000], ids=["probed", "read whole"])
def test_an_account_number_stored_as_a_sqlite_blob_has_no_client_id_either_way(store, rows):
    """A BLOB written by hand in SQLite's account column equals no text: the probe never finds it,
    and the whole read (Arrow takes b'abc' as 'abc', refuses b'\\xff') must not either."""
    from types import SimpleNamespace

    from include.patient_import.transform import _client_ids_reader

    if store.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's text column holds no BLOB")
    put(store, {"third_party_acct_number": "1"})
    with store.begin() as conn:
        for blob in (b"abc", b"\xff"):
            conn.execute(sa.text("INSERT INTO patients (practice_id, third_party_acct_number, first_name, last_name,"
                                 " status) VALUES (:practice, :account, 'Ana', 'Lopez', 'active')"),
                         {"practice": PRACTICE.id, "account": blob})
    job = SimpleNamespace(practice_id=PRACTICE.id, import_id="imp_1")

    known = _client_ids_reader(store, job, rows)(pd.DataFrame({"account_number": ["abc", "1", "\xff"]}))

    assert list(known) == ["1"]


# ---------------------------------------------------------------- stored dates that are not dates


def put_raw(engine, column: str, values: list) -> None:
    """Patients 1, 2, ... of PRACTICE with `column` set to `values` as the driver takes them, no
    Date type in between: what another program or a hand edit leaves in the store."""
    with engine.begin() as conn:
        for n, value in enumerate(values, start=1):
            conn.execute(sa.text(f"INSERT INTO patients (practice_id, third_party_acct_number, first_name, last_name,"
                                 f" status, {column}) VALUES (:practice, :account, 'Ana', 'Lopez', 'active', :value)"),
                         {"practice": PRACTICE.id, "account": str(n), "value": value})


# Kept as they are by SQLite (a DATE column has NUMERIC affinity: the numbers stay numbers). Each
# would compare wrongly as a text: a datetime or an unpadded date sorts after the same day's ISO
# text (rule 7 would skip a same-day export), 30/11/2026 before any (it would apply an older one).
# numpy parses "NaT", year 0, " 202-11-30" and "0002026-11" as days: none is a `date`'s text.
NOT_ISO_DATES = ["2026-11-30 00:00:00", "2026-11-30T00:00:00Z", "2026-11-3", "30/11/2026", "20261130",
                 "2026-W48-1", " 2026-11-30", "", "2026-02-30", "NaT", "0000-01-01", " 202-11-30", "0002026-11",
                 "10000-01-01", 2461009.5, 20261130]


@pytest.mark.parametrize("column", ["birth_date", "last_visit", "last_seen_exported_on"])
def test_a_sqlite_date_column_holding_anything_but_an_iso_date_is_refused_without_its_value(store, column):
    if make_url(str(store.url)).get_backend_name() != "sqlite":
        pytest.skip("a PostgreSQL DATE column holds dates only (out of range: the next test)")
    put_raw(store, column, [*NOT_ISO_DATES, "2026-11-30", None])

    with store.connect() as conn, pytest.raises(StoredDateError) as raised:
        stored_patients(conn, PRACTICE.id, [column])
    with store.connect() as conn, pytest.raises(StoredDateError):
        decide_against_store(conn, PRACTICE, normalised({"account_number": "1"}), date(2026, 11, 30))

    message = str(raised.value)
    assert f"{len(NOT_ISO_DATES)} stored patient(s) have a {column}" in message
    assert re.search(r"account numbers (1?[0-9], ){5}\.\.\.\)", message)  # five of them, no order
    assert "2026" not in message and "30/11" not in message  # no stored value in a message


@pytest.mark.parametrize("value", NOT_ISO_DATES, ids=repr)
def test_one_stored_date_that_is_not_iso_among_iso_ones_is_refused(store, value):
    if make_url(str(store.url)).get_backend_name() != "sqlite":
        pytest.skip("a PostgreSQL DATE column holds dates only")
    put_raw(store, "birth_date", ["0001-01-01", "1999-12-31", "9999-12-31", None, value])

    with store.connect() as conn, pytest.raises(StoredDateError, match=r"account numbers 5\)"):
        stored_patients(conn, PRACTICE.id, ["birth_date"])


@pytest.mark.parametrize("day", ["10000-01-01", "0044-03-15 BC", "infinity", "-infinity"])
def test_a_postgresql_date_no_date_holds_is_refused_not_read_as_another_day_or_null(store, day):
    if make_url(str(store.url)).get_backend_name() != "postgresql":
        pytest.skip("SQLite has no date range (the previous test)")
    put_raw(store, "last_seen_exported_on", [None, day])

    with store.connect() as conn, pytest.raises(StoredDateError, match=r"1 stored patient\(s\).*account numbers 2\)"):
        # to_char gives 10000-01-01 (a text before 2026-...), 0044-03-15 for a BC day, NULL for infinity
        decide_against_store(conn, PRACTICE, normalised({"account_number": "2"}), date(2026, 11, 30))


def test_a_postgresql_date_is_read_as_iso_text_so_only_out_of_range_needs_looking_for(store):
    """On PostgreSQL `_check_iso_dates` looks only for OUT_OF_RANGE: the general check of each
    distinct value must agree that every date a DATE column holds in `date`'s years reads as ISO
    text, the first and last days included (to_char pads the year to four digits)."""
    if make_url(str(store.url)).get_backend_name() != "postgresql":
        pytest.skip("SQLite keeps whatever text was written (the tests above)")
    days = ["0001-01-01", "0099-12-31", "1999-12-31", "2024-02-29", "9999-12-31"]
    put_raw(store, "birth_date", [*days, None])

    with store.connect() as conn:
        read = stored_patients(conn, PRACTICE.id, ["birth_date"])["birth_date"].to_numpy(dtype=object)
    assert sorted(v for v in read.tolist() if v is not None) == days
    assert patients_module._not_iso_dates(pd.unique(read)) == set()


def test_stored_dates_of_another_practice_are_not_checked(store):
    other = Practice(id="other_clinic", name="Other", systems=frozenset())
    records.sync_practices(store, {PRACTICE.id: PRACTICE, other.id: other})
    put(store, {"third_party_acct_number": "1", "birth_date": date(1980, 2, 3)})
    with store.begin() as conn:
        conn.execute(sa.text("INSERT INTO patients (practice_id, third_party_acct_number, first_name, last_name, "
                             "status, birth_date) VALUES ('other_clinic', '1', 'Bo', 'Li', 'active', NULL)"))
        if store.dialect.name == "sqlite":
            conn.execute(sa.text("UPDATE patients SET birth_date = '03/02/1980' WHERE practice_id = 'other_clinic'"))

    decided = decide(store, {"account_number": "1", "birth_date": "1980-02-03"}, exported_on=date(2026, 1, 2))

    assert decided[OUTCOME].tolist() == [p.UNCHANGED]  # the other practice's account 1 is not this one


# ---------------------------------------------------------------- the people born on given days

def test_the_people_born_on_given_days_are_the_whole_reads_people_born_on_them(store):
    """`stored_patients(born_on=...)` (validate's read for possible duplicates, SPEC §8): the rows
    of the whole read whose birth date is one of the days, over more days than one query takes
    (`_BORN_ON_BATCH`); None, NaN and texts that are no ISO day match nobody."""
    from datetime import timedelta

    from include.patient_import.patients import _BORN_ON_BATCH

    first = date(1950, 1, 1)
    put(store, *[{"third_party_acct_number": str(n), "first_name": f"F{n % 7}", "last_name": "L",
                  "birth_date": None if n % 11 == 0 else first + timedelta(days=n % 1_300)} for n in range(1, 1_600)])
    asked = [iso(first + timedelta(days=d)) for d in range(0, 2 * _BORN_ON_BATCH + 7, 2)]
    asked += [asked[0], None, float("nan"), "not a day", "1950-02-30", "1950/01/03", "1899-01-01", DAYS[0].isoformat()]
    fields = ["first_name", "last_name", "birth_date"]

    with store.connect() as conn:
        whole = stored_patients(conn, PRACTICE.id, fields)
        born = stored_patients(conn, PRACTICE.id, fields, born_on=asked)
        nobody = stored_patients(conn, PRACTICE.id, fields, born_on=[None, "", "x"])

    expected = whole[whole["birth_date"].isin([d for d in asked if isinstance(d, str)])]
    assert len(expected) > _BORN_ON_BATCH  # more than one query's days found people
    assert born.sort_index().equals(expected.sort_index())
    assert nobody.empty and list(nobody.columns) == list(whole.columns)


def test_possible_duplicates_against_the_people_born_on_new_rows_days_are_those_against_everyone(store):
    """Validate reads only the stored people born on a new row's day: a possible duplicate shares
    the birth date, so the warnings are those of the whole read (retyped names, namesakes born on
    other days, stored patients without a birth date, an existing patient's own update)."""
    from include.patient_import.rules import CODE, PERSON_FIELDS, new_patients, possible_duplicates

    people = [("Ana", "Lopez"), ("José", "O'Brien"), ("Zoë", "Smith"), ("Li", "Wu")]
    put(store, *[{"third_party_acct_number": str(100 + n), "first_name": people[n % 4][0],
                  "last_name": people[n % 4][1], "birth_date": None if n % 9 == 0 else date(1980, 1, 1 + n % 20)}
                 for n in range(60)])
    rows = [(str(100 + n), people[n % 4][0], people[n % 4][1], f"1980-01-{1 + n % 20:02d}") for n in range(0, 60, 5)]
    rows += [(str(900 + n), people[n % 4][0].upper(), people[n % 4][1].lower(), f"1980-01-{1 + n % 20:02d}")
             for n in range(0, 60, 3)]  # the same people under new accounts, names retyped
    rows += [(str(990 + n), "Ana", "Lopez", f"1990-02-{1 + n:02d}") for n in range(5)]  # namesakes
    frame = pd.DataFrame(rows, columns=["account_number", "first_name", "last_name", "birth_date"], dtype=object)
    frame.insert(0, "row_number", range(2, 2 + len(frame)))
    frame[CODE] = None
    frame["status"] = None

    with store.connect() as conn:
        is_new = new_patients(frame, stored_patients(conn, PRACTICE.id).index, PRACTICE)
        everyone = stored_patients(conn, PRACTICE.id, PERSON_FIELDS)
        born = stored_patients(conn, PRACTICE.id, PERSON_FIELDS,
                               born_on=frame.loc[is_new.to_numpy(dtype=bool), "birth_date"])

    assert len(born) < len(everyone)
    warned = possible_duplicates(frame, is_new, born).listed
    assert warned.equals(possible_duplicates(frame, is_new, everyone).listed)
    assert set(warned["code"]) == {p.POSSIBLE_DUPLICATE_PATIENT} and len(warned) >= 15


# ---------------------------------------------------------------- the account numbers asked for

# Account numbers a joined text or an array literal could mistake: separators, quotes, braces,
# spaces, escapes, the texts of a null, characters beyond the BMP, the longest the column holds.
ODD_ACCOUNTS = ["1", "a,b", '"q"', "{x}", "NULL", " 2 ", "back\\slash", "\\", "😀", "'", ";", "x" * 32]


def test_stored_patients_are_found_by_account_numbers_of_any_text(store):
    put(store, *[{"third_party_acct_number": account} for account in ODD_ACCOUNTS])
    asked = [*ODD_ACCOUNTS, "not stored", "a", "b", None, 5, float("nan")]

    with store.connect() as conn:
        found = stored_patients(conn, PRACTICE.id, ["id"], accounts=asked)

    assert sorted(found.index) == sorted(ODD_ACCOUNTS)


@pytest.mark.parametrize("asked", [[""], ["1", "a\x1fb"], ["a\x1fb"]], ids=repr)
def test_account_numbers_a_joined_text_cannot_carry_are_asked_for_as_a_list(store, asked):
    """On PostgreSQL a block's account numbers go as one text the server splits
    (`patients._account_array`); the empty text alone, or one holding the separator, would be lost
    or split: such a block goes as a list, and its patients are found all the same."""
    from include.patient_import.patients import _account_array

    put(store, *[{"third_party_acct_number": account} for account in ("1", "a", "b", "", "a\x1fb")])

    with store.connect() as conn:
        found = stored_patients(conn, PRACTICE.id, ["id"], accounts=asked)
        joined = stored_patients(conn, PRACTICE.id, ["id"], accounts=["1", "", "a", "z"])

    assert sorted(found.index) == sorted(asked)
    assert sorted(joined.index) == ["", "1", "a"]  # an empty one among others is an element
    assert "string_to_array" not in str(_account_array(asked))
    assert "string_to_array" in str(_account_array(["1", "", "a", "z"]))


def test_the_streamed_reads_leave_their_connection_as_it_was(store):
    """The problems, changed rows and value changes are read through a server-side cursor on
    PostgreSQL, set for their own query only (`store.streamed_rows`): set on the connection, every
    later statement on it would go through one as well, and PostgreSQL refuses that for DDL."""
    from include.patient_import import changes

    with store.connect() as conn:
        before = dict(conn.get_execution_options())
        assert list(records.iter_problems(conn, "imp_none")) == []
        assert list(changes.changed_rows(conn, "imp_none")) == []
        assert list(changes.value_changes(conn, "imp_none")) == []

        assert dict(conn.get_execution_options()) == before
        conn.execute(sa.text("CREATE TEMPORARY TABLE after_streamed_reads (x integer)"))
        conn.execute(sa.text("DROP TABLE after_streamed_reads"))
