"""PostgreSQL's COPY input built from the frame's own columns (load._arrow_column) against the one
built from their Python values (load._python_column, the path it replaced): byte for byte the same
CSV on hostile columns of every dtype; and load.iso_dates' Arrow check of ISO text against the
value-by-value one."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from include.patient_import import load as load_module

# Tier: unit, the PostgreSQL round trip `postgres` (tests/conftest.py).

TEXTS = ["a,b", 'say "hi"', "line\r\nbreak", "cr\ronly", "", None, np.nan, pd.NA, "nan", "NULL", "\\N", " lead ",
         "é✓", "1.0"]
_TEXT_DTYPES = ["object", "str", "string", pd.StringDtype("python"), pd.ArrowDtype(pa.large_string()),
                pd.ArrowDtype(pa.string())]


def _texts(dtype) -> pd.Series:
    return pd.Series(TEXTS, dtype=dtype)


# Columns the new path builds without Python values (it must not call _python_values for them).
FAST = {
    **{f"text {d}": (lambda d=d: _texts(d)) for d in _TEXT_DTYPES},
    "ints with missing (float64)": lambda: pd.Series([1, None, 3, -40, 2**40]),
    "floats": lambda: pd.Series([0.1, -0.0, 1e20, 2.5, np.inf, np.nan, 1.0], dtype="float64"),
    "float32": lambda: pd.Series([0.1, np.nan, 3.0], dtype="float32"),
    "int64": lambda: pd.Series([1, -2, 2**62], dtype="int64"),
    "int32": lambda: pd.Series([1, -2, 3], dtype="int32"),
    "uint8": lambda: pd.Series([0, 255], dtype="uint8"),
    "bool": lambda: pd.Series([True, False]),
    "Int64": lambda: pd.Series([7, None, -1], dtype="Int64"),
    "all NA Int64": lambda: pd.Series([None, None], dtype="Int64"),
    "boolean": lambda: pd.Series([True, None, False], dtype="boolean"),
    "int64[pyarrow]": lambda: pd.Series([7, None], dtype="int64[pyarrow]"),
    "bool[pyarrow]": lambda: pd.Series([True, None], dtype="bool[pyarrow]"),
    "numpy ints in objects": lambda: pd.Series([np.int64(5), 2**53 + 1, None, np.int32(-2), np.nan, np.uint8(3)],
                                               dtype="object"),
    "bools in objects": lambda: pd.Series([np.True_, False, None], dtype="object"),
    "numpy texts in objects": lambda: pd.Series([np.str_("x,y"), "z", None], dtype="object"),
    "all None": lambda: pd.Series([None, np.nan, pd.NA], dtype="object"),
    "iso dates": lambda: load_module.iso_dates(pd.Series(["2025-01-02", None, "2023-02-30", date(2025, 1, 3)],
                                                         dtype="object")),
}
# Columns left to the Python values (the new path must still give their CSV, or None, as before).
SLOW = {
    "dates in objects": lambda: pd.Series([date(2025, 1, 2), None, pd.NaT], dtype="object"),
    "datetimes": lambda: pd.Series([pd.Timestamp("2025-01-02 03:04:05"), pd.NaT]),
    "texts and ints": lambda: pd.Series(["a", 12, None], dtype="object"),
    "ints and floats in objects": lambda: pd.Series([1, 2.5, None], dtype="object"),
    "uint64": lambda: pd.Series([1, 2**62], dtype="uint64"),
    "Float64": lambda: pd.Series([1.5, None], dtype="Float64"),
    "category": lambda: pd.Series(["a", None, "b"], dtype="category"),
    # missing markers that infer_dtype or Arrow does not take as no value
    "texts and NaT": lambda: pd.Series(["a", pd.NaT, None], dtype="object"),
    "texts and a float32 NaN": lambda: pd.Series(["a", np.float32("nan"), None], dtype="object"),
    "ints and a float32 NaN": lambda: pd.Series([1, np.float32("nan"), None], dtype="object"),
    "ints and NaT": lambda: pd.Series([1, pd.NaT], dtype="object"),
}


def _csv(frame: pd.DataFrame, column=None) -> bytes | None:
    text = load_module._copy_csv(frame, column)
    return None if text is None else bytes(text)


def _frame(series: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"c": series, "n": np.arange(len(series), dtype="int64")}, index=series.index)


@pytest.mark.parametrize("name", list(FAST))
def test_a_column_the_frame_hands_to_arrow_is_the_csv_of_its_python_values(name, monkeypatch):
    frame = _frame(FAST[name]())
    parts = (frame, frame.iloc[1:])  # a chunk is a slice of the frame
    expected = [_csv(part, load_module._python_column) for part in parts]

    def refused(values):
        raise AssertionError(f"{name}: the column went by its Python values")

    monkeypatch.setattr(load_module, "_python_values", refused)
    assert None not in expected
    assert [_csv(part) for part in parts] == expected


@pytest.mark.parametrize("name", list(SLOW))
def test_a_column_left_to_its_python_values_gives_the_csv_it_gave(name):
    frame = _frame(SLOW[name]())

    assert _csv(frame) == _csv(frame, load_module._python_column)


def test_the_csv_of_a_hostile_frame_is_pinned():
    """The reference itself: every text quoted (a comma, a quote, CR/LF inside), '' apart from
    None, NaN and NA (an empty unquoted field), the text 'nan' kept, integers held as floats
    written as integers, never 'nan' or '1.0'."""
    frame = pd.DataFrame({
        "text": pd.Series(["a,b", 'say "hi"', "x\r\ny", "", None, np.nan, pd.NA, "nan"], dtype="object"),
        "number": pd.Series([1, None, 3, 4, 5, 6, 7, 8]),
        "flag": pd.Series([True, None, False, True, True, True, True, True], dtype="boolean"),
        "arrow": pd.Series(["q", None, "", "r", "s", "t", "u", "v"], dtype=pd.ArrowDtype(pa.large_string())),
    })
    expected = (b'"a,b",1,true,"q"\n'
                b'"say ""hi""",,,\n'
                b'"x\r\ny",3,false,""\n'
                b'"",4,true,"r"\n'
                b',5,true,"s"\n'
                b',6,true,"t"\n'
                b',7,true,"u"\n'
                b'"nan",8,true,"v"\n')

    assert _csv(frame) == expected
    assert _csv(frame, load_module._python_column) == expected


def test_a_hostile_frame_of_every_column_at_once_and_in_slices_gives_the_same_csv():
    columns = {**FAST, **{k: v for k, v in SLOW.items() if k not in ("texts and ints",
                                                                       "ints and floats in objects")}}
    frame = pd.DataFrame({name: pd.concat([make()] * len(TEXTS)).iloc[:len(TEXTS)].reset_index(drop=True)
                          for name, make in columns.items()})
    for part in (frame, frame.iloc[3:9], frame.iloc[0:0]):
        assert _csv(part) == _csv(part, load_module._python_column)
    assert _csv(frame.iloc[0:0]) == b""


def test_a_frame_with_a_column_mixing_types_has_no_csv():
    frame = pd.DataFrame({"t": _texts("object"), "mixed": pd.Series(["a", 1] * 7, dtype="object")})

    assert load_module._copy_csv(frame) is None


# ---------------------------------------------------------------- iso_dates

DATE_TEXTS = ["2025-01-02", "0001-01-01", "9999-12-31", "2000-02-29", "1900-02-29", "2023-02-30", "2023-13-01",
              "0000-01-01", "10000-01-01", "2023-1-01", "20230101", "2023-W01-1", " 2023-01-01", "2023-01-01 ",
              "2023-01-01T00:00", "٢٠٢٣-٠١-٠١", "", "1/2/2025", "2025-01-02", None]


def _by_value(values: list) -> list:
    return [None if pd.isna(v) else load_module._date_text(v) for v in values]


@pytest.mark.parametrize("extra", [[], [float("nan")], [1.5], [np.str_("2025-01-05")], [date(2025, 1, 3)],
                                   [datetime(2025, 1, 4, 5, 6)], [pd.NaT], ["2025-01-06\ud800"]], ids=ascii)
def test_iso_dates_checked_by_arrow_are_those_checked_one_by_one(extra):
    values = pd.Series(DATE_TEXTS + extra, index=range(5, 5 + len(DATE_TEXTS) + len(extra)), dtype="object")
    found = load_module.iso_dates(values)

    assert found.tolist() == _by_value(DATE_TEXTS + extra)
    assert found.index.tolist() == values.index.tolist() and found.dtype == object


@pytest.mark.parametrize("dtype", ["object", "str", pd.ArrowDtype(pa.large_string())])
def test_iso_dates_of_iso_text_ask_nothing_of_any_value_one_by_one(monkeypatch, dtype):
    values = pd.Series(["2025-01-02", None, "1950-06-30", np.nan] * 4, dtype=dtype)
    monkeypatch.setattr(load_module, "_date_text", lambda value: pytest.fail("decided value by value"))

    assert load_module.iso_dates(values).tolist() == ["2025-01-02", None, "1950-06-30", None] * 4


def test_iso_dates_of_a_numpy_text_keep_refusing_it():
    """is_iso_date takes a `str` only: a numpy text among ISO texts stays no date."""
    values = pd.Series(["2025-01-02", np.str_("2025-01-03")], dtype="object")

    assert load_module.iso_dates(values).tolist() == ["2025-01-02", None]


# ---------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_a_hostile_frame_copied_into_postgresql_reads_back_as_it_was(postgres_url):
    from include.patient_import.store import create_store_engine

    table = sa.Table("copy_values", sa.MetaData(), sa.Column("text", sa.Text), sa.Column("arrow", sa.Text),
                     sa.Column("number", sa.Integer), sa.Column("nullable", sa.BigInteger),
                     sa.Column("day", sa.Date), sa.Column("flag", sa.Boolean))
    texts = ["a,b", 'say "hi"', "x\r\ny", "", None, "nan", "\\N"]
    frame = pd.DataFrame({
        "text": pd.Series(texts[:4] + [np.nan, "nan", "\\N"], dtype="object"),
        "arrow": pd.Series(texts, dtype=pd.ArrowDtype(pa.large_string())),
        "number": pd.Series([1, None, 3, 4, 5, 6, 7]),
        "nullable": pd.Series([None, 2, 3, 4, 5, 6, 2**40], dtype="Int64"),
        "day": load_module.iso_dates(pd.Series(["2025-01-02", None, "2023-02-30", "", "0001-01-01",
                                                "9999-12-31", "2000-02-29"], dtype="object")),
        "flag": pd.Series([True, None, False, True, True, True, True], dtype="boolean"),
    })
    engine = create_store_engine(postgres_url)
    try:
        with engine.begin() as conn:
            table.create(conn)
            load_module._bulk_insert(conn, table, frame)
            stored = [tuple(row) for row in conn.execute(sa.select(table))]
            table.drop(conn)
    finally:
        engine.dispose()
    days = [date(2025, 1, 2), None, None, None, date(1, 1, 1), date(9999, 12, 31), date(2000, 2, 29)]
    assert stored == list(zip(texts, texts, [1, None, 3, 4, 5, 6, 7], [None, 2, 3, 4, 5, 6, 2**40], days,
                              [True, None, False, True, True, True, True]))
