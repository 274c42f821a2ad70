"""The load's bulk write (load._bulk_insert, load.iso_dates) on every kind of value a frame can
hold: each missing marker of each dtype stored as NULL, numpy numbers as numbers, dates of every
type as their day, text bound as it is only where it is a Date's own ISO text; and a load across
the SQLite feed's batch boundary read back, logged in the change log and undone."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from include.patient_import import changes
from include.patient_import import load as load_module
from include.patient_import.practices import Practice
from include.patient_import.schema import ROW_NUMBER
from include.patient_import.store import create_store_engine
from include.patient_import.undo import undo_import
from tests.patient_import.test_load import APRIL, export, load, outcomes, stored

# Tier: unit, the PostgreSQL variants `postgres` (tests/conftest.py).

_TABLE = sa.Table("values_written", sa.MetaData(), sa.Column("number", sa.Integer), sa.Column("text", sa.Text),
                  sa.Column("day", sa.Date), sa.Column("moment", sa.DateTime), sa.Column("flag", sa.Boolean))


def _written(frame: pd.DataFrame) -> list[tuple]:
    """`frame` through _bulk_insert into a fresh SQLite table: each cell and its storage class."""
    engine = sa.create_engine("sqlite://")
    _TABLE.metadata.create_all(engine)
    names = list(frame.columns)
    with engine.begin() as conn:
        load_module._bulk_insert(conn, _TABLE, frame)
        found = conn.exec_driver_sql(f"SELECT {', '.join(names)}, {', '.join(f'typeof({n})' for n in names)} "
                                     "FROM values_written ORDER BY rowid").all()
    engine.dispose()
    return [tuple(row) for row in found]


MISSING = [None, np.nan, pd.NA, pd.NaT, float("nan")]


@pytest.mark.parametrize("column, values, dtype, first", [
    ("flag", [True, None], "boolean", (1, "integer")),
    ("flag", [True, None], "bool[pyarrow]", (1, "integer")),
    ("number", [7, None], "Int64", (7, "integer")),
    ("number", [7, None], "int64[pyarrow]", (7, "integer")),
    ("moment", [pd.Timestamp("2025-01-02 03:04:05"), pd.NaT], "datetime64[ns]", ("2025-01-02 03:04:05.000000", "text")),
    ("moment", [pd.Timestamp("2025-01-02 03:04:05", tz="UTC"), pd.NaT], None, ("2025-01-02 03:04:05.000000", "text")),
    ("day", [pd.Timestamp("2025-01-02"), pd.NaT], "datetime64[s]", ("2025-01-02", "text")),
    ("text", ["a", None], "str", ("a", "text")),
    ("text", ["a", None], "string", ("a", "text")),
    ("text", ["a", None], "category", ("a", "text")),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_missing_value_of_every_dtype_is_stored_as_null(column, values, dtype, first):
    """NA of the masked and Arrow dtypes and a tz-naive column's NaT were handed to sqlite3 or
    the type's processor as they are (refused, or a float NaN for a boolean)."""
    assert _written(pd.DataFrame({column: pd.Series(values, dtype=dtype)})) == [first, (None, "null")]


@pytest.mark.parametrize("column, present", [("text", "a"), ("day", "2025-01-02"), ("number", 7),
                                              ("moment", datetime(2025, 1, 2, 3, 4, 5))])
def test_every_missing_marker_in_an_object_column_is_stored_as_null(column, present):
    rows = _written(pd.DataFrame({column: pd.Series([present, *MISSING], dtype="object")}))
    assert rows[1:] == [(None, "null")] * len(MISSING)
    assert rows[0][1] != "null"


def test_numpy_numbers_in_an_object_column_are_stored_as_numbers_not_blobs():
    """sqlite3 binds a numpy integer through the buffer protocol: an 8-byte BLOB, which an
    INTEGER PRIMARY KEY (the SQLite staging table's row number) refuses and ORDER BY misplaces."""
    frame = pd.DataFrame({"number": pd.Series([np.int64(5), np.int32(6), np.uint8(7), None], dtype="object"),
                          "flag": pd.Series([np.bool_(True), np.bool_(False), None, True], dtype="object"),
                          "text": pd.Series([np.float64(1.5), np.int64(2), "x", None], dtype="object")})

    assert _written(frame) == [(5, 1, "1.5", "integer", "integer", "text"), (6, 0, "2", "integer", "integer", "text"),
                               (7, None, "x", "integer", "null", "text"), (None, 1, None, "null", "integer", "null")]


def test_date_objects_of_every_type_are_stored_as_their_day():
    values = pd.Series([date(1500, 1, 2), datetime(2025, 1, 3, 23, 59), pd.Timestamp("2025-01-04"),
                        pd.Timestamp("2025-01-05 23:30", tz="America/New_York"), "2025-01-06", "0001-01-01", None],
                       dtype="object")
    assert [day for day, _ in _written(pd.DataFrame({"day": values}))] == [
        "1500-01-02", "2025-01-03", "2025-01-04", "2025-01-05", "2025-01-06", "0001-01-01", None]


@pytest.mark.parametrize("text", ["1/2/2025", "2025-02-30", "2025-1-2", " 2025-01-02", "2025-01-02 00:00",
                                  "\u0662\u0660\u0662\u0665-\u0660\u0661-\u0660\u0662", "yesterday"])
def test_text_that_is_no_iso_day_is_refused_for_a_date_column_not_stored(text):
    """Bound as it is it would be stored, and SQLAlchemy's read of the row fail ever after. The
    message names the column, never the value."""
    with pytest.raises(TypeError, match="day") as raised:
        _written(pd.DataFrame({"day": pd.Series(["2025-01-02", text], dtype="object")}))
    assert text.strip() not in str(raised.value)


@pytest.mark.parametrize("text", ["2025-01-02 03:04:05", "2025-01-02"])
def test_text_for_a_datetime_column_goes_through_its_processor(text):
    """Only a Date's ISO text is SQLite's own form; a DateTime's is `YYYY-MM-DD HH:MM:SS.ffffff`,
    and text of another shape, stored as it is, would sort wrongly against it."""
    with pytest.raises(TypeError):
        _written(pd.DataFrame({"moment": pd.Series([text], dtype="object")}))


def test_iso_dates_reads_numpy_datetimes_of_any_unit():
    values = pd.Series([np.datetime64("1500-01-02"), np.datetime64("2025-01-03T10:00:00"),
                        np.datetime64("2025-01-04T23:59:59.999999999"), np.datetime64("NaT"),
                        np.datetime64("10000-01-01")], dtype="object")
    assert load_module.iso_dates(values).tolist() == ["1500-01-02", "2025-01-03", "2025-01-04", None, None]
    column = pd.Series(pd.to_datetime(["2025-01-05", None]))
    assert load_module.iso_dates(column).tolist() == ["2025-01-05", None]


# --- a whole load, across the SQLite feed's batches ---------------------------------------------

@pytest.fixture
def store(store_url):
    engine = create_store_engine(store_url)
    yield engine
    engine.dispose()


BIG = Practice(id="big_clinic", name="Big Clinic", capacity=100_000, systems=frozenset({"drip_education"}))
# The cells as the normaliser leaves them (ISO text, None), with pandas' other missing markers.
_DAYS = ["1901-02-03", "1950-06-07", "2000-02-29", "0001-01-01", "9999-12-31", None, np.nan, pd.NA]
_CITIES = ["Salem", None, np.nan, pd.NA, "=cmd", "Dover"]


def _export(count: int, city_offset: int = 0) -> pd.DataFrame:
    frame = export(*[{"account_number": str(1000 + n), "last_name": f"L{n}", "first_name": "F",
                      "city": _CITIES[(n + city_offset) % len(_CITIES)], "birth_date": _DAYS[n % len(_DAYS)],
                      "last_visit": _DAYS[(n + 3) % len(_DAYS)]} for n in range(count)])
    frame[ROW_NUMBER] = pd.Series([np.int64(n) for n in frame[ROW_NUMBER]], dtype="object", index=frame.index)
    return frame


@pytest.mark.parametrize("count", [load_module._SQLITE_BATCH, load_module._SQLITE_BATCH + 1])
def test_a_load_of_every_kind_of_value_across_batches_is_stored_logged_and_undone(store, count):
    first = _export(count)
    result, _, import_a = load(store, BIG, first)
    assert result.counts.inserted == count

    patients = stored(store, BIG.id)
    for n in range(count):
        patient = patients[str(1000 + n)]
        for field, day in (("birth_date", _DAYS[n % len(_DAYS)]), ("last_visit", _DAYS[(n + 3) % len(_DAYS)])):
            assert (patient[field].isoformat() if patient[field] else None) == (day if isinstance(day, str) else None)
        city = _CITIES[n % len(_CITIES)]
        assert patient["city"] == (city if isinstance(city, str) else None)
    # New patients take their ids in file order (the staging table's key is the row number).
    assert sorted(patients, key=lambda a: patients[a]["id"]) == [str(1000 + n) for n in range(count)]
    assert sorted(outcomes(store, import_a)) == list(range(2, count + 2))
    with store.connect() as conn:
        assert len({account for account, *_ in changes.value_changes(conn, import_a)}) == count

    # Every city moves one place on: an update wherever the new cell has a value and differs.
    second = _export(count, city_offset=1)
    result, _, import_b = load(store, BIG, second, APRIL)
    with store.connect() as conn:
        changed = {row["account_number"]: row["fields"] for row in changes.changed_rows(conn, import_b)}
    expected = {str(1000 + n) for n in range(count)
                if isinstance(_CITIES[(n + 1) % len(_CITIES)], str)
                and _CITIES[(n + 1) % len(_CITIES)] != patients[str(1000 + n)]["city"]}
    assert set(changed) == expected
    assert all(fields == ["city"] for fields in changed.values())

    undo_import(store, import_b, by="test")
    assert {a: p["city"] for a, p in stored(store, BIG.id).items()} == {a: p["city"] for a, p in patients.items()}


def test_a_load_written_in_chunks_stores_logs_and_records_what_one_write_does(store, monkeypatch):
    """`_bulk_insert` sends `_INSERT_CHUNK` rows at a time (memory: a million rows' cells as Python
    values at once take gigabytes). Chunks of 7 rows against one chunk of all, for the patients,
    the change log and the row outcomes of an insert and of an update."""
    def run(practice_id: str, chunk: int) -> tuple:
        monkeypatch.setattr(load_module, "_INSERT_CHUNK", chunk)
        practice = Practice(id=practice_id, name="Chunk Clinic", capacity=100_000,
                            systems=frozenset({"drip_education"}))
        imports = [load(store, practice, _export(50))[2], load(store, practice, _export(50, city_offset=1), APRIL)[2]]
        patients = stored(store, practice_id)
        # The same file order, hence the same order of ids.
        order = sorted(patients, key=lambda a: patients[a]["id"])
        values = {a: {k: v for k, v in p.items() if k not in ("id", "practice_id", "created_import_id",
                                                                "updated_import_id")} for a, p in patients.items()}
        with store.connect() as conn:
            logged = [sorted(changes.value_changes(conn, i), key=repr) for i in imports]
        return order, values, [outcomes(store, i) for i in imports], logged

    assert run("chunked_clinic", 7) == run("whole_clinic", 1_000_000)


def test_rows_sharing_a_row_number_write_nothing(store):
    """The reader numbers rows uniquely; should two rows to write share a number, the load fails
    whole on both stores (SQLite's staging table is keyed by it, and every store's import rows
    are), not writes one of them."""
    frame = export({"account_number": "1", "last_name": "A", "first_name": "B"},
                   {"account_number": "2", "last_name": "C", "first_name": "D"})
    frame[ROW_NUMBER] = [2, 2]

    with pytest.raises(sa.exc.IntegrityError):
        load(store, BIG, frame)
    assert stored(store, BIG.id) == {}


@pytest.mark.parametrize("exported_on", [datetime(2025, 3, 1, 12, 30), pd.Timestamp("2025-03-01 23:59")])
def test_an_export_date_given_as_a_datetime_is_stored_as_its_day(store, exported_on):
    """Its ISO text (`2025-03-01T12:30:00`) bound as it is would sort after the day itself, and
    SPEC §3 rule 7 compares the stored export dates."""
    load(store, BIG, export({"account_number": "1", "last_name": "A", "first_name": "B"}), exported_on)

    assert stored(store, BIG.id)["1"]["last_seen_exported_on"] == date(2025, 3, 1)
    with store.connect() as conn:
        assert conn.exec_driver_sql("SELECT CAST(last_seen_exported_on AS TEXT) FROM patients").scalar() \
            == "2025-03-01"
