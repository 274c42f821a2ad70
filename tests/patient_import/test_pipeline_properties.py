"""Property: whatever small table of strings is dropped, the in-process stages (read, normalise,
rules, load, report) end without an unhandled exception, and the report's counts add up to the
rows read, with one recorded outcome per row."""

from __future__ import annotations

import csv
import io
import itertools

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from include.patient_import.problems import Status
from include.patient_import.schema import FIELDS
from include.patient_import.store import ImportRow
from tools.corpus import prepare_home, run_import

pytestmark = [pytest.mark.unit, pytest.mark.timeout(300)]

OUTCOMES = ("inserted", "updated", "unchanged", "skipped", "rejected")
ODD = ["", " ", "\t", "0", "00123", "1.23457E+11", '="00123"', "#123", "123.0", "=1+1", "-", "@x",
       "Renée", "Zoë", "\u202eevil", "\u200b", "😀", "O'Brien", 'say "hi"', "a,b", "a;b", "line\nbreak",
       "1/1/1900", "2/30/2020", "99999", "N", "Inactive", "x" * 120, "ǅ", "\ufeff", "ß", "İ"]
cells = st.one_of(st.none(), st.sampled_from(ODD), st.text(max_size=12),
                  st.from_regex(r"[0-9]{1,6}", fullmatch=True))
REQUIRED = ["Account #", "Last Name", "First Name"]
headers = st.lists(st.sampled_from([f.header for f in FIELDS if not f.required] + ["Notes", ""]),
                   min_size=1, max_size=6, unique=True)
# Rows that are mostly valid where it matters, so that imports get as far as the rules and the load.
names = st.sampled_from(["Doe", "Renée", "O'Brien", "Zoë Ann", "  Lee  ", "=cmd", "李"])


def _mostly(draw, valid):
    return draw(valid) if draw(st.integers(0, 19)) else draw(cells)
_runs = itertools.count()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        engine = prepare_home(tmp_path_factory.mktemp("property_home"), mp)
        yield engine
        engine.dispose()


@st.composite
def tables(draw) -> tuple[list[str], list[list[str | None]]]:
    """A header (often the required columns first) and up to 8 rows, ragged ones included."""
    extra = draw(headers)
    real = draw(st.sampled_from([True, True, True, False]))
    header = [*REQUIRED, *extra] if real else extra
    rows = []
    for index in range(draw(st.integers(0, 8))):
        ragged = st.integers(min_value=0, max_value=len(header) + (0 if real else 1))
        width = len(header) if draw(st.integers(0, 9)) else draw(ragged)
        row = draw(st.lists(cells, min_size=width, max_size=width))
        if real and width >= 3 and draw(st.integers(0, 19)):
            # Distinct account numbers, or most tables would be rejected for duplicates.
            account = st.sampled_from([str(1000 + index), f"00{1000 + index}", f"#{1000 + index}"])
            row[:3] = [_mostly(draw, account), _mostly(draw, names), _mostly(draw, names)]
        rows.append(row)
    return header, rows


def _csv(header: list[str], rows: list[list[str | None]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(table=tables())
def test_any_small_table_ends_with_counts_adding_up_to_the_rows_read(engine, tmp_path_factory, table):
    path = tmp_path_factory.mktemp("table") / "export.csv"
    path.write_text(_csv(*table), encoding="utf-8")

    [imported] = run_import(engine, path, run_id=f"property_{next(_runs)}")

    report = imported.report
    counts = report["counts"]
    event(f"{report['status']}, read {'0' if not counts['read'] else '>0'}")
    event(", ".join(sorted({x["code"] for x in report["problems"] if x["row"] is None and x["severity"] == "error"})))
    assert report["status"] in {s.value for s in Status} - {Status.PROCESSING.value, Status.FAILED.value}
    assert counts["read"] == sum(counts[k] for k in OUTCOMES)
    if report["status"] == Status.REJECTED.value:
        assert counts["rejected"] == counts["read"]
    table_ = ImportRow.__table__
    with engine.connect() as conn:
        recorded = conn.execute(sa.select(sa.func.count()).select_from(table_)
                                .where(table_.c.import_id == report["import_id"])).scalar_one()
    assert recorded in (0, counts["read"])
    if report["status"] != Status.REJECTED.value:
        assert recorded == counts["read"]
