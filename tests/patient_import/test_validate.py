"""The validate stage with the real suites: outcomes from GX results, and no patient value in them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from include.patient_import import problems as p
from include.patient_import.gx_runner import SuiteRunner
from include.patient_import.practices import Practice
from include.patient_import.rules import CODE
from include.patient_import.staging import Job
from include.patient_import.store import create_store_engine, migrate
from include.patient_import.suites import build_suites, render, suite_path
from include.patient_import.validate import validate_export

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]

HEADER = "Account #,Last Name,First Name,Email,Home Phone\n"
MARKERS = ("Zebulonmarker", "markerfirst", "marker@example.com", "2089478877")


@pytest.fixture
def area(tmp_path, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path))
    monkeypatch.delenv("PATIENT_IMPORT_STORAGE", raising=False)
    engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    return tmp_path, engine


def run(area, text: str, practice: Practice | None = None):
    root, engine = area
    export = root / "export.csv"
    export.write_text(text, encoding="utf-8")
    job = Job(import_id="imp1", practice_id="c", source=str(export), export_name="export.csv", sha256="0" * 64,
              size=export.stat().st_size, exported_on="2026-11-20", dry_run=False)
    practice = practice or Practice(id="c", name="C", capacity=100, systems=frozenset({"drip_education"}))
    return validate_export(engine, job, practice, today=date(2026, 11, 27))


def test_committed_suites_are_the_ones_built_from_the_schema():
    for name, suite in build_suites().items():
        assert suite_path(name).read_text(encoding="utf-8") == render(suite), f"run `make suites` ({name})"


def test_missing_required_column_rejects_the_file(area):
    result = run(area, "Account #,Last Name\n1,Lopez\n")

    assert result.rejection.code == p.MISSING_REQUIRED_COLUMNS
    assert "First Name" in result.rejection.message


def test_row_errors_come_from_the_row_suite_with_every_duplicate(area):
    rows = "".join(f"{i},Lopez,Ana,,\n" for i in range(10, 30))
    result = run(area, HEADER + rows + ",Lopez,Ana,,\n7,Smith,Ana,,\n7,Smyth,Ana,,\n9,Lopez,Ana,,\n9,Lopez,Ana,,\n")

    assert result.rejection is None
    frame = result.rows_frame()
    by_row = dict(zip(frame["row_number"], frame[CODE]))
    assert by_row[22] == p.MISSING_REQUIRED_FIELD
    assert by_row[23] == by_row[24] == p.DUPLICATE_ACCOUNT_NUMBER
    assert by_row[25] is None and by_row[26] == p.DUPLICATE_ROW


def test_more_than_a_quarter_rejected_rejects_the_file(area):
    result = run(area, HEADER + "1,Lopez,Ana,,\n,Lopez,Ana,,\n3,,Ana,,\n4,Lopez,Ana,,\n")

    assert result.rejection.code == p.TOO_MANY_REJECTED_ROWS
    assert "2 of 4" in result.rejection.message


def test_capacity_is_checked_against_the_store_with_the_capacity_suite(area):
    small = Practice(id="c", name="C", capacity=2, systems=frozenset({"drip_education"}))

    result = run(area, HEADER + "1,Lopez,Ana,,\n2,Lopez,Ana,,\n3,Lopez,Ana,,\n", small)

    assert result.rejection.code == p.CAPACITY_EXCEEDED
    assert result.rejection.details == {"capacity": 2, "stored": 0, "new": 3, "overflow": 1}


def test_validation_results_and_data_docs_hold_no_patient_value(area):
    root, _ = area
    rows = "".join(f"{i},Lopez,Ana,,\n" for i in range(10, 20))
    result = run(area, HEADER + rows + "1.2E+11,Zebulonmarker,markerfirst,marker@example.com,2089478877\n"
                 + ",Zebulonmarker,markerfirst,marker@example.com,2089478877\n")

    assert result.docs_index and result.docs_index.is_file()
    written = [f for f in root.rglob("*") if f.is_file() and f.suffix in (".json", ".html")
               and ("gx" in f.parts or "data_docs" in f.parts)]
    assert written
    for path in written:
        text = path.read_text(encoding="utf-8", errors="replace")
        for marker in MARKERS:
            assert marker not in text, (path, marker)


def test_suite_runner_reports_every_row_of_a_grouped_failure():
    import pandas as pd

    frame = pd.DataFrame({"row_number": [2, 3, 4], "account_data_variants": [2, 2, 1], "earlier_copies": [0, 0, 0],
                          "account_number": ["7", "7", "8"], "last_name": ["a", "b", "c"], "first_name": ["x"] * 3})

    failures = SuiteRunner().run("patient_rows", frame)

    assert [(f.code, f.rows) for f in failures] == [(p.DUPLICATE_ACCOUNT_NUMBER, (2, 3))]


def test_data_docs_render_offline_from_local_assets_without_gx_footer(area):
    """Every script, style, font and image a Data Docs page loads is a file of the site itself."""
    import re

    root, _ = area
    result = run(area, HEADER + "".join(f"{i},Lopez,Ana,,\n" for i in range(10, 20)) + ",Lopez,Ana,,\n")

    site = result.docs_index.parent
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 1
    for page in pages:
        html = page.read_text(encoding="utf-8")
        loaded = re.findall(r"<(?:script|link|img)\b[^>]*?\s(?:src|href)=[\"']([^\"']+)", html)
        assert loaded, page
        remote = [u for u in loaded if re.match(r"(?:https?:)?//", u)]
        assert remote == [], (page, remote)
        for url in loaded:
            assert (page.parent / url.split("?")[0]).is_file(), (page, url)
        assert "newsletter" not in html.lower() and "integrity=" not in html, page
        assert not re.search(r"(?:src|href)=[\"']https?://", html), page
        assert not re.search(r"url\(\s*[\"']?(?:https?:)?//", html), page
    for css in site.rglob("*.css"):
        assert not re.search(r"url\(\s*[\"']?(?:https?:)?//", css.read_text(encoding="utf-8")), css


def test_great_expectations_logs_no_registration_chatter_nor_progress_bars(tmp_path):
    """In a fresh process (GX logs its chatter when first imported), as a task runs it: INFO and up."""
    import subprocess
    import sys

    script = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
import pandas as pd
from include.patient_import.gx_runner import SuiteRunner
frame = pd.DataFrame({"row_number": [2, 3], "account_data_variants": [1, 1], "earlier_copies": [0, 0],
                      "account_number": ["7", "8"], "last_name": ["a", "b"], "first_name": ["x", "y"]})
print(SuiteRunner().run("patient_rows", frame))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    gx_lines = [line for line in done.stderr.splitlines() if " great_expectations" in line]
    assert [line for line in gx_lines if line.startswith(("INFO", "DEBUG"))] == []
    assert "Skipping registering" not in done.stderr
    assert "Calculating Metrics" not in done.stderr and "%|" not in done.stderr  # tqdm's bars


# --- messages the office can act on (issue 12) -------------------------------------------------

GOOD_ROWS = "".join(f"{i},Lopez,Ana,,\n" for i in range(10, 30))


@pytest.mark.parametrize("value, says", [
    ("1.23457E+11", "scientific notation"),
    ("5-Mar", "looks like a date"),
    ("Mar-05", "looks like a date"),
    ("3/5/2026", "looks like a date"),
    ("Total Patients: 8", "a total or a footer"),
    ("Account #", "repeats the header"),
    ("Acct No", "repeats the header"),
    ("12AB34", "holds letters"),
    ("12.5", "not a whole number"),
])
def test_invalid_account_number_says_what_the_value_looks_like_without_showing_it(area, value, says):
    result = run(area, HEADER + GOOD_ROWS + f"{value},Lopez,Ana,,\n")

    [problem] = [x for x in result.problems if x.code == p.INVALID_ACCOUNT_NUMBER]
    assert says in problem.message
    assert value not in problem.message and problem.row == 22
    if says != "scientific notation":
        assert "scientific" not in problem.message


def test_title_lines_above_the_header_name_the_line_that_looks_like_the_header(area):
    text = "Patient List,,\nPrinted 11/20/2026,,\n,,\nAccount #,Last Name,First Name\n1,Lopez,Ana\n"
    result = run(area, text)

    assert result.rejection.code == p.MISSING_REQUIRED_COLUMNS
    assert "line 4 looks like the header (Account #, Last Name, First Name)" in result.rejection.message
    assert "delete the lines above it" in result.rejection.message


def test_title_line_narrower_than_the_header_names_the_line_that_looks_like_the_header(area):
    result = run(area, "Patient List\nAccount #,Last Name,First Name\n1,Lopez,Ana\n")

    assert result.rejection.code == p.UNREADABLE_FILE
    assert "row 2 looks like the header" in result.rejection.message


def _workbook(root, sheets: dict[str, list[list[str]]]):
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    path = root / "export.xlsx"
    book.save(path)
    return path


def run_file(area, path):
    _, engine = area
    job = Job(import_id="imp1", practice_id="c", source=str(path), export_name=path.name, sha256="0" * 64,
              size=path.stat().st_size, exported_on="2026-11-20", dry_run=False)
    practice = Practice(id="c", name="C", capacity=100, systems=frozenset({"drip_education"}))
    return validate_export(engine, job, practice, today=date(2026, 11, 27))


def test_cover_sheet_first_in_a_workbook_names_the_sheets(area):
    root, _ = area
    path = _workbook(root, {"Cover": [["Genesis patient list"], ["Printed for the front desk"], ["Page 1"]],
                            "Patients": [["Account #", "Last Name", "First Name"], ["1", "Lopez", "Ana"]]})
    result = run_file(area, path)

    assert result.rejection.code == p.MISSING_REQUIRED_COLUMNS
    assert "'Cover', 'Patients'" in result.rejection.message and "first sheet" in result.rejection.message


def test_one_line_cover_sheet_first_in_a_workbook_names_the_sheets(area):
    root, _ = area
    path = _workbook(root, {"Cover": [["Genesis patient list"]],
                            "Patients": [["Account #", "Last Name", "First Name"], ["1", "Lopez", "Ana"]]})
    result = run_file(area, path)

    assert result.rejection.code == p.NO_DATA_ROWS
    assert "'Cover', 'Patients'" in result.rejection.message


def test_title_rows_above_the_header_in_a_workbook_name_the_row(area):
    root, _ = area
    path = _workbook(root, {"Sheet1": [["Patient List", None, None], [None, None, None],
                                       ["Account #", "Last Name", "First Name"], ["1", "Lopez", "Ana"]]})
    result = run_file(area, path)

    assert "row 3 looks like the header" in result.rejection.message


def test_a_rejected_row_reports_why_it_was_rejected_and_no_field_warnings(area):
    header = "Account #,Last Name,First Name,Status,Zip,Email\n"
    rows = "".join(f"{i},Lopez,Ana,Active,62704,\n" for i in range(10, 30))
    result = run(area, header + rows + "7,,Ana,Maybe,123,not-an-email\n8,Lopez,Ana,Maybe,123,\n")

    rejected = {(x.code, x.field) for x in result.problems if x.row == 22}
    kept = {(x.code, x.field) for x in result.problems if x.row == 23}
    assert rejected == {(p.MISSING_REQUIRED_FIELD, "last_name")}
    assert kept == {("invalid_status", "status"), ("zip_padded", "zip")}


def test_data_docs_compile_each_template_once_per_process_and_render_the_same_pages(area, monkeypatch):
    """gx_views: a second import's Data Docs load every template from the compiled code the first
    left (Jinja's bytecode cache), and its pages are the same but for their times and ids."""
    import re

    import jinja2

    compiled = []
    original = jinja2.Environment.compile

    def counted(env, source, *args, **kwargs):
        compiled.append(1)
        return original(env, source, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "compile", counted)
    volatile = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{8}T\d{6}\.\d+Z|"
                          r"\d{4}-\d\d-\d\d[T ][\d:.]+|_run_time_sort': [\d.]+|[0-9a-f]{8}_")

    def pages(site: Path) -> dict[str, str]:
        return {volatile.sub("", str(page.relative_to(site))): volatile.sub("", page.read_text(encoding="utf-8"))
                for page in sorted(site.rglob("*.html"))}

    text = HEADER + "".join(f"{i},Lopez,Ana,,\n" for i in range(10, 20))
    first = pages(run(area, text).docs_index.parent)
    compiled.clear()
    second = pages(run(area, text).docs_index.parent)

    assert compiled == []
    assert len(second) > 4 and second == first


def test_suites_run_in_an_in_memory_context_that_writes_no_project():
    """gx_runner: an ephemeral GX context (a file context rewrote its YAML on every `add`)."""
    import pandas as pd
    from great_expectations.data_context import EphemeralDataContext

    runner = SuiteRunner()
    runner.run("export_columns", pd.DataFrame({"row_number": [2]}))
    assert isinstance(runner._context, EphemeralDataContext)
