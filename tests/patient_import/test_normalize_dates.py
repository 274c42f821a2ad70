"""The vectorised date path (normalize.normalize_dates) against the per-value one
(normalize_date / normalize_birth_date, SPEC §2): the same value and warning for every string,
hostile or real, and the common formats decided without a Python call per value."""

import datetime
import itertools
import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.patient_import import normalize
from include.patient_import.normalize import normalize_birth_date, normalize_date, normalize_dates, normalize_export

pytestmark = pytest.mark.unit

# Days that move the rules' edges: a leap day, the turn of a year, a day before pandas' oldest.
TODAYS = (datetime.date(2025, 6, 1), datetime.date(2024, 2, 29), datetime.date(2026, 12, 31),
          datetime.date(2027, 1, 1), datetime.date(2028, 2, 28))
YEARS = ("0000", "0001", "0099", "0999", "1000", "1582", "1677", "1678", "1899", "1900", "1904", "1905",
         "1906", "1999", "2000", "2023", "2024", "2025", "2026", "2027", "2028", "2100", "2262", "2263",
         "9999", "02024", "10000", "999", "20", "26", "27", "99", "00", "5")
MONTHS = ("0", "00", "1", "01", "2", "02", "6", "9", "09", "10", "12", "13", "001", "1 ")
DAYS = ("0", "00", "1", "01", "9", "28", "29", "30", "31", "32", "001")
# Every kind of damage the per-value path reads or refuses (module docstring of normalize).
HOSTILE = (
    "", " ", "\t", "\u00a0", "x", "1", "0", "61", "45000", "45000.5", "2958465", "2958466", "1.5", "-1",
    "1/2/2025 10:30", "1/2/2025 10:30 PM", "1/2/2025 13:30 PM", "1/2/2025 24:00", "1/2/2025\u00a010:30",
    "2025-01-02T10:30:00", "2025-01-02 10:30:00.123", "2025-01-02 25:00", "2025-1-2", "2025-01-2",
    " 1/2/2025", "1/2/2025 ", "\t1/2/2025\r\n", "1/2/2025\n", "1 /2/2025", "1/2 /2025",
    "1\u200b/2/2025", "\u20601/2/2025", "\ufeff1/2/2025", "1/2/2025\u00ad", "1/2/2025\u200e",
    "2025\u201301\u201302", "2025\u221201\u221202", "2025\u201101\u201102", "2025\u00a0-01-02",
    "\u0661/\u0662/\u0662\u0660\u0662\u0665", "\uff11/\uff12/\uff12\uff10\uff12\uff15", "１/2/2025",
    "2025-01-02\u0000", "+1/2/2025", "-1/2/2025", "1/-2/2025", "1/2/-2025", "1/2/+2025", "1//2025",
    "1/2/2025/1", "1-2-2025", "1.2.2025", "2025/01/02", "02/01/2025", "2/29/2023", "2/29/2024",
    "2/29/1900", "2/29/2000", "2023-02-29", "2024-02-29", "2/29/23", "2/29/24", "2/29/25", "2/29/28",
    "12/31/26", "1/1/27", "11/30/26", "12/15/26", "6/1/1905", "5/31/1905", "6/2/1905", "2/28/1904",
    "=DATE(2025,1,2)", "'1/2/2025", '"1/2/2025"', "1/2/2025;", "Jan 2 2025", "2 January 2025",
    "0/0/0000", "99/99/9999", "1/2/20255", "1/2/202", "12/12/12", "1e5", "4.5e4",
)


def test_text_arrow_cannot_hold_takes_the_per_value_path():
    texts = ["1/2/2025", "\ud800", "1/2/2025\udc80", "2025-01-02"]  # lone surrogates are no UTF-8
    for kind in ("birth_date", "date"):
        assert _vectorised(texts, kind, TODAYS[0]) == _one_by_one(texts, kind, TODAYS[0])


def _real_strings() -> list[str]:
    """The shapes an export holds, over the edges of months, years and pandas' range."""
    mdy = [f"{m}/{d}/{y}" for m, d, y in itertools.product(MONTHS, DAYS, YEARS)]
    iso = [f"{y}-{m}-{d}" for y, m, d in itertools.product(YEARS, MONTHS, DAYS)]
    rng = random.Random(14)
    start = datetime.date(1890, 1, 1)
    days = [start + datetime.timedelta(days=rng.randrange(0, 60_000)) for _ in range(3_000)]
    genesis = [f"{d.month}/{d.day}/{d.year}" for d in days] + [f"{d.month:02}/{d.day:02}/{d.year}" for d in days]
    return mdy + iso + genesis + [d.isoformat() for d in days] + [f"{d.month}/{d.day}/{d.year % 100:02}" for d in days]


ALL = list(dict.fromkeys([*HOSTILE, *_real_strings()]))


def _one_by_one(texts: list[str], kind: str, today: datetime.date) -> list[tuple]:
    normalizer = normalize_birth_date if kind == "birth_date" else normalize_date
    field = "birth_date" if kind == "birth_date" else "last_visit"
    return [normalizer(text, today=today, field=field) for text in texts]


def _vectorised(texts: list[str], kind: str, today: datetime.date) -> list[tuple]:
    field = "birth_date" if kind == "birth_date" else "last_visit"
    values, codes = normalize_dates(pd.Series(texts, dtype="object"), kind, field, today)
    return list(zip(values.tolist(), codes.tolist()))


@pytest.mark.parametrize("today", TODAYS, ids=str)
@pytest.mark.parametrize("kind", ["birth_date", "date"])
def test_the_vectorised_path_gives_the_per_value_result_for_every_string(kind, today):
    assert _vectorised(ALL, kind, today) == _one_by_one(ALL, kind, today)


def test_the_results_are_plain_python_strings():
    values, codes = normalize_dates(pd.Series(["1/2/2025", "2025-01-02", "1/2/25", "x"]), "date", "last_visit",
                                    TODAYS[0])
    assert [type(v) for v in values] == [str, str, str, type(None)]
    assert [type(c) for c in codes] == [type(None), type(None), type(None), str]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.text(alphabet="0123456789/- :.TAPMap\u00a0\u2013\u200b\u0661\uff11", max_size=14),
    st.builds(lambda m, d, y: f"{m}/{d}/{y}", st.integers(0, 14), st.integers(0, 33), st.integers(0, 10_000)),
    st.builds(lambda y, m, d: f"{y:04}-{m:02}-{d:02}", st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32)),
), max_size=40), st.sampled_from(["birth_date", "date"]), st.sampled_from(TODAYS))
def test_the_paths_agree_on_generated_strings(texts, kind, today):
    assert _vectorised(texts, kind, today) == _one_by_one(texts, kind, today)


def test_normalize_export_takes_the_vectorised_path_for_both_date_fields():
    texts = ["1/2/1990", "12/31/2024", "1990-05-06", "2/30/2001", "", "5/6/90", " 7/8/1999 "]
    frame = pd.DataFrame({"row_number": range(2, 2 + len(texts)), "account_number": "1",
                          "birth_date": texts, "last_visit": texts[::-1]})
    result = normalize_export(frame, today=TODAYS[0])
    assert list(zip(result.frame["birth_date"], dict((n, c) for n, _, c in result.flagged)["birth_date"])) \
        == _one_by_one(texts, "birth_date", TODAYS[0])
    assert list(zip(result.frame["last_visit"], dict((n, c) for n, _, c in result.flagged)["last_visit"])) \
        == _one_by_one(texts[::-1], "date", TODAYS[0])


def test_common_formats_are_decided_without_parsing_each_value_in_python(monkeypatch):
    calls: list[str] = []
    parse = normalize.parse_date
    monkeypatch.setattr(normalize, "parse_date", lambda raw, **kw: calls.append(raw) or parse(raw, **kw))
    rng = np.random.default_rng(3)
    days = pd.Timestamp("1950-01-01") + pd.to_timedelta(rng.integers(0, 25_000, 2_000), unit="D")
    texts = [f"{d.month}/{d.day}/{d.year}" for d in days] + [d.date().isoformat() for d in days]
    texts += ["5/6/90", "2/30/2001", " 1/2/2003", "0/1/2003", "2003-1-2"]  # a two-digit year, no such
    # day, a space, no such month, ISO without leading zeros

    values, codes = normalize_dates(pd.Series(texts), "date", "last_visit", TODAYS[0])

    assert sorted(calls) == sorted(["5/6/90", " 1/2/2003"])
    assert values[-5:].tolist() == ["1990-05-06", None, "2003-01-02", None, "2003-01-02"]
    assert codes[-5:].tolist() == [None, "invalid_last_visit", None, "invalid_last_visit", None]
