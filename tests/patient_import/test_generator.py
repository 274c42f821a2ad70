import csv
import datetime
import re
from pathlib import Path

import openpyxl
import pandas as pd
import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email

from include.patient_import import problems
from include.patient_import.schema import FIELD_NAMES, FIELDS, field_for_header
from tools import generator
from tools.generator import (
    EXPECTED_CODE,
    EXPECTED_FIELD,
    add_problems,
    generate_export,
    generate_patients,
    main,
    write_export,
)

pytestmark = pytest.mark.unit

TODAY = datetime.date(2026, 11, 20)
GENESIS_HEADERS = [f.header for f in FIELDS]
DELIMITERS = {"csv": ",", "semicolon": ";", "tsv": "\t"}


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    return generate_patients(2000, seed=7, today=TODAY)


def read_text(path: Path, fmt: str = "csv", encoding: str = "utf-8-sig") -> tuple[list[str], list[list[str]]]:
    """Header and data rows as the csv module reads them, blank and delimiter-only rows left out."""
    with open(path, newline="", encoding=encoding) as f:
        rows = list(csv.reader(f, delimiter=DELIMITERS[fmt]))
    return rows[0], [r for r in rows[1:] if any(cell for cell in r)]


def read_xlsx(path: Path) -> tuple[list, list[list]]:
    workbook = openpyxl.load_workbook(path, read_only=True)
    rows = [list(r) for r in workbook.worksheets[0].iter_rows(values_only=True)]
    workbook.close()
    width = len(rows[0])  # read-only mode leaves out a row's trailing empty cells
    return rows[0], [r + [None] * (width - len(r)) for r in rows[1:] if any(c is not None for c in r)]


def column(header: list[str], rows: list[list], field: str) -> list:
    return [r[header.index(next(f.header for f in FIELDS if f.name == field))] for r in rows]


# --- generate_patients -----------------------------------------------------------------------

def test_same_seed_gives_same_patients_and_another_seed_others():
    first = generate_patients(300, seed=3, today=TODAY)
    pd.testing.assert_frame_equal(first, generate_patients(300, seed=3, today=TODAY))
    assert not first.equals(generate_patients(300, seed=4, today=TODAY))


def test_patients_have_the_schema_columns_as_strings_without_missing_values(patients):
    assert tuple(patients.columns) == FIELD_NAMES
    assert all(pd.api.types.is_string_dtype(patients[c]) for c in patients.columns)
    assert not patients.isna().any().any()


def test_account_numbers_are_unique_digits_counted_from_first_account():
    frame = generate_patients(500, seed=1, first_account=90001, today=TODAY)
    assert frame["account_number"].is_unique
    assert frame["account_number"].str.fullmatch(r"\d+").all()
    assert frame["account_number"].iloc[0] == "90001"


def test_account_numbers_stay_unique_across_blocks(monkeypatch):
    monkeypatch.setattr(generator, "_BLOCK_ROWS", 37)
    frame = generate_patients(200, seed=1, today=TODAY)
    assert len(frame) == 200
    assert frame["account_number"].tolist() == [str(10001 + i) for i in range(200)]
    assert frame["last_name"].iloc[:37].tolist() != frame["last_name"].iloc[37:74].tolist()


def test_zero_patients_is_an_empty_frame_with_the_schema_columns():
    frame = generate_patients(0)
    assert frame.empty and tuple(frame.columns) == FIELD_NAMES


def test_every_phone_is_a_valid_us_number_of_ten_digits(patients):
    phones = [p for p in pd.concat([patients["home_phone"], patients["cell_phone"]]) if p]
    assert len(phones) > 2000
    assert all(re.fullmatch(r"\d{10}", p) for p in phones)
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(p, "US")) for p in phones)


def test_some_phones_and_emails_are_empty(patients):
    assert (patients["home_phone"] == "").any()
    assert (patients["cell_phone"] == "").any()
    assert (patients["email"] == "").any()


def test_every_email_is_valid_and_on_a_reserved_example_domain(patients):
    emails = [e for e in patients["email"] if e]
    assert len(emails) > 1000
    for email in emails:
        try:
            validate_email(email, check_deliverability=False)
        except EmailNotValidError as error:
            pytest.fail(f"{email}: {error}")
    assert all(e.rsplit("@", 1)[1] in ("example.com", "example.net", "example.org") for e in emails)


def test_names_include_accents_apostrophes_and_compound_names(patients):
    names = set(patients["first_name"]) | set(patients["last_name"])
    assert any(re.search(r"[éëèáíóúñüö]", n) for n in names)
    assert any("'" in n for n in names)
    assert any("-" in n for n in names)
    assert any(" " in n for n in names)
    listed = {"O'Brien", "D'Angelo", "McDonald", "Nguyễn", "van der Berg", "Smith-Jones"}
    assert listed <= set(patients["last_name"])


def test_addresses_are_us_cities_with_their_state_and_five_digit_zips(patients):
    assert (patients["address1"] != "").all()
    assert patients["address2"].str.contains(r"^(?:Apt|Unit|Suite|#|Bldg)", regex=True).any()
    assert patients["state"].str.fullmatch(r"[A-Z]{2}").all()
    assert patients["zip"].str.fullmatch(r"\d{5}").all()
    assert (patients["zip"].str[0] == "0").mean() > 0.1  # New England and New Jersey
    boston = patients[patients["city"] == "Boston"]
    assert not boston.empty and (boston["state"] == "MA").all() and boston["zip"].str.startswith("021").all()


def test_some_address2_values_need_csv_quoting(patients):
    assert patients["address2"].str.contains(",", regex=False).any()
    assert patients["address2"].str.contains('"', regex=False).any()


def test_birth_dates_are_m_d_yyyy_between_1_and_100_years_back(patients):
    dates = patients["birth_date"][patients["birth_date"] != ""]
    assert dates.str.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}").all()
    parsed = pd.to_datetime(dates, format="%m/%d/%Y").dt.date
    assert parsed.max() <= TODAY - datetime.timedelta(days=365)
    assert parsed.min() >= TODAY.replace(year=TODAY.year - 101)


def test_last_visits_are_past_dates_after_birth(patients):
    both = patients[(patients["last_visit"] != "") & (patients["birth_date"] != "")]
    visit = pd.to_datetime(both["last_visit"], format="%m/%d/%Y")
    assert (visit.dt.date <= TODAY).all()
    assert (visit > pd.to_datetime(both["birth_date"], format="%m/%d/%Y")).all()


def test_sex_is_m_or_f_and_status_mostly_active(patients):
    assert set(patients["gender"]) == {"M", "F"}
    shares = patients["status"].value_counts(normalize=True)
    assert set(shares.index) == {"Active", "Inactive"}
    assert 0.02 < shares["Inactive"] < 0.09


def test_inactive_share_sets_the_share_of_inactive_patients():
    frame = generate_patients(2000, seed=1, inactive_share=0.5, today=TODAY)
    assert 0.45 < (frame["status"] == "Inactive").mean() < 0.55


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="inactive_share"):
        generate_patients(10, inactive_share=1.5)
    with pytest.raises(ValueError, match="bad_share"):
        add_problems(generate_patients(10), bad_share=-0.1)


# --- write_export ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "semicolon", "tsv"])
@pytest.mark.parametrize("excel_artefacts", [True, False])
def test_text_formats_read_back_with_the_genesis_header_and_every_row(tmp_path, patients, fmt,
                                                                      excel_artefacts):
    path = write_export(patients, tmp_path / f"export.{fmt}", fmt=fmt, excel_artefacts=excel_artefacts)
    header, rows = read_text(path, fmt)
    assert [h for h in header if h] == GENESIS_HEADERS
    assert len(rows) == len(patients)


def test_without_artefacts_every_value_reads_back_as_written(tmp_path, patients):
    header, rows = read_text(write_export(patients, tmp_path / "clean.csv", excel_artefacts=False))
    assert header == GENESIS_HEADERS
    assert rows == patients.values.tolist()
    assert b"\r\n" not in (tmp_path / "clean.csv").read_bytes()


def test_xlsx_first_sheet_holds_the_header_and_every_row(tmp_path, patients):
    path = write_export(patients, tmp_path / "export.xlsx", fmt="xlsx")
    header, rows = read_xlsx(path)
    assert header == GENESIS_HEADERS
    assert len(rows) == len(patients)
    assert openpyxl.load_workbook(path, read_only=True).sheetnames[0] == "Patient List"


def test_xlsx_without_artefacts_holds_the_values_as_text(tmp_path, patients):
    path = write_export(patients, tmp_path / "clean.xlsx", fmt="xlsx", excel_artefacts=False)
    header, rows = read_xlsx(path)
    assert [["" if c is None else c for c in r] for r in rows] == patients.values.tolist()


def test_xlsx_artefacts_store_numbers_and_dates_as_typed_cells(tmp_path, patients):
    header, rows = read_xlsx(write_export(patients, tmp_path / "typed.xlsx", fmt="xlsx"))
    accounts, zips = column(header, rows, "account_number"), column(header, rows, "zip")
    assert any(isinstance(a, int) for a in accounts)
    assert any(isinstance(z, int) and z < 10000 for z in zips)  # 02134 stored as the number 2134
    assert any(isinstance(d, datetime.datetime) for d in column(header, rows, "birth_date"))


def test_cp1252_round_trips_accents_and_replaces_what_it_cannot_hold(tmp_path, patients):
    path = write_export(patients, tmp_path / "ansi.csv", encoding="cp1252", excel_artefacts=False)
    header, rows = read_text(path, encoding="cp1252")
    read_names = [r[2] for r in rows]
    written = patients["first_name"].tolist()
    accented = [i for i, n in enumerate(written) if re.search(r"[éëèáíóúñüö]", n)]
    assert accented and all(read_names[i] == written[i] for i in accented)
    assert "Nguy?n" in {r[1] for r in rows}  # Excel's "?" for a character cp1252 lacks
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")


def test_utf8_sig_starts_with_a_bom_and_utf8_does_not(tmp_path, patients):
    bom = b"\xef\xbb\xbf"
    assert write_export(patients, tmp_path / "a.csv", encoding="utf-8-sig").read_bytes().startswith(bom)
    assert not write_export(patients, tmp_path / "b.csv", encoding="utf-8").read_bytes().startswith(bom)


def test_alias_headers_map_to_every_field_in_a_shuffled_order(tmp_path, patients):
    path = write_export(patients, tmp_path / "aliases.csv", header_style="aliases", excel_artefacts=False)
    header, rows = read_text(path)
    assert sorted(field_for_header(h) for h in header) == sorted(FIELD_NAMES)
    assert [field_for_header(h) for h in header] != list(FIELD_NAMES)
    assert header != GENESIS_HEADERS
    first_name_at = [field_for_header(h) for h in header].index("first_name")
    assert [r[first_name_at] for r in rows] == patients["first_name"].tolist()


def test_a_field_without_a_column_is_left_out_of_the_file(tmp_path, patients):
    path = write_export(patients.drop(columns=["last_name"]), tmp_path / "no_last.csv", excel_artefacts=False)
    header, rows = read_text(path)
    assert header == [h for h in GENESIS_HEADERS if h != "Last Name"]
    assert {len(r) for r in rows} == {len(FIELDS) - 1}


def test_same_seed_writes_the_same_bytes(tmp_path, patients):
    a = write_export(patients, tmp_path / "a.csv", seed=2).read_bytes()
    assert a == write_export(patients, tmp_path / "b.csv", seed=2).read_bytes()
    assert a != write_export(patients, tmp_path / "c.csv", seed=3).read_bytes()


def test_excel_artefacts_damage_account_numbers_zips_phones_dates_and_statuses(tmp_path, patients):
    header, rows = read_text(write_export(patients, tmp_path / "damaged.csv"))
    accounts = column(header, rows, "account_number")
    assert any(re.fullmatch(r'="\d+"', a) for a in accounts)
    assert any(re.fullmatch(r"0+\d+", a) for a in accounts)
    assert any(a.startswith("#") for a in accounts)
    assert any(a.endswith(".0") for a in accounts)
    assert any(re.fullmatch(r"\d{4}", z) for z in column(header, rows, "zip"))
    phones = column(header, rows, "home_phone") + column(header, rows, "cell_phone")
    for pattern in (r"\(\d{3}\) \d{3}-\d{4}", r"\d{3}\.\d{3}\.\d{4}", r"\d{3}-\d{3}-\d{4} (x|ext\.? )\d+"):
        assert any(re.fullmatch(pattern, p) for p in phones), pattern
    dates = column(header, rows, "birth_date") + column(header, rows, "last_visit")
    assert any(re.fullmatch(r"\d{1,2}/\d{1,2}/\d{2}", d) for d in dates)
    assert any(re.fullmatch(r"\d{5}", d) for d in dates)  # Excel serial day numbers
    assert {"A", "I", "Y", "N"} <= set(column(header, rows, "status"))


def test_excel_artefacts_shape_the_file_like_excel(tmp_path, patients):
    path = write_export(patients, tmp_path / "shape.csv")
    text = path.read_bytes().decode("utf-8-sig")
    lines = text.split("\r\n")
    assert len(lines) > len(patients)  # CRLF line endings
    assert all("\n" not in line or '"' in line for line in lines)  # a bare LF only inside a quoted cell
    assert "" in lines[1:-1]  # a blank line among the rows
    assert any(re.fullmatch(",+", line) for line in lines)  # rows of delimiters only
    assert lines[0].endswith(",")  # trailing empty columns
    with open(path, newline="", encoding="utf-8-sig") as f:
        cells = [c for r in csv.reader(f) for c in r]
    assert any("\n" in c for c in cells)  # a line break inside a quoted address2
    assert any("," in c for c in cells) and any('"' in c for c in cells)


def test_excel_artefacts_leave_the_normalised_values_unchanged(tmp_path, patients):
    header, rows = read_text(write_export(patients, tmp_path / "damaged.csv"))
    for field, normalise in (("account_number", _account), ("zip", _zip), ("home_phone", _phone),
                             ("cell_phone", _phone), ("birth_date", _date), ("last_visit", _date),
                             ("status", _status), ("gender", _gender), ("email", _email),
                             ("last_name", _spaces), ("address1", _spaces), ("address2", _spaces),
                             ("state", _state)):
        expected = [normalise(v) for v in patients[field]]
        assert [normalise(v) for v in column(header, rows, field)] == expected, field


def test_excel_artefacts_keep_exact_copies_exact(tmp_path):
    frame = generate_patients(300, seed=2, today=TODAY)
    twice = pd.concat([frame, frame], ignore_index=True)
    header, rows = read_text(write_export(twice, tmp_path / "twice.csv"))
    for field in ("home_phone", "cell_phone", "address2"):
        values = column(header, rows, field)
        assert not any(re.search(r"x\d+$|ext", v) for v in values if field != "address2")
        assert not any("\n" in v for v in values)


def test_rows_too_many_for_a_sheet_are_refused(tmp_path, monkeypatch, patients):
    monkeypatch.setattr(generator, "XLSX_MAX_ROWS", 100)
    with pytest.raises(ValueError, match="xlsx"):
        write_export(patients, tmp_path / "big.xlsx", fmt="xlsx")


@pytest.mark.parametrize("option", [{"fmt": "xls"}, {"encoding": "latin-9"}, {"header_style": "random"}])
def test_unknown_options_are_refused(tmp_path, patients, option):
    with pytest.raises(ValueError):
        write_export(patients, tmp_path / "x.csv", **option)


# --- add_problems and generate_export --------------------------------------------------------

def test_add_problems_breaks_one_rule_per_bad_row_in_every_kind(patients):
    rows = add_problems(patients, seed=1, bad_share=0.05, duplicate_share=0.0, today=TODAY)
    carried = rows[rows[EXPECTED_CODE] != ""]
    assert len(rows) == len(patients) and len(carried) == 100
    kinds = carried.groupby([EXPECTED_CODE, EXPECTED_FIELD]).size()
    assert len(kinds) == 10 and kinds.min() == 10
    for (code, field), group in carried.groupby([EXPECTED_CODE, EXPECTED_FIELD]):
        values = group[field]
        if code == problems.MISSING_REQUIRED_FIELD:
            assert (values == "").all()
        elif code == problems.INVALID_ACCOUNT_NUMBER:
            assert values.str.fullmatch(r"\d\.\d{5}E\+11").all()
        elif field == "email":
            assert not any(_valid_email(v) for v in values)
        elif field in ("home_phone", "cell_phone"):
            assert not any(_valid_phone(v) for v in values)
        elif field == "zip":
            assert not values.str.fullmatch(r"\d{3,5}").any()
        elif field == "birth_date":
            assert (pd.to_datetime(values, format="%m/%d/%Y").dt.date > TODAY).all()
        elif field == "state":
            assert not values.isin(patients["state"]).any()


def test_add_problems_marks_exact_copies_and_same_account_different_data(patients):
    rows = add_problems(patients, seed=1, bad_share=0.0, duplicate_share=0.05, today=TODAY)
    assert len(rows) == len(patients) + 100
    data = rows[list(FIELD_NAMES)]
    copies = rows[EXPECTED_CODE] == problems.DUPLICATE_ROW
    assert copies.sum() == 80
    assert data.duplicated(keep="first")[copies].all()  # each copy repeats a row above it
    conflicting = rows[rows[EXPECTED_CODE] == problems.DUPLICATE_ACCOUNT_NUMBER]
    assert len(conflicting) == 40
    assert (conflicting.groupby("account_number").size() == 2).all()
    assert not conflicting[list(FIELD_NAMES)].duplicated(keep=False).any()
    assert rows.loc[rows[EXPECTED_CODE] == "", "account_number"].is_unique


def test_add_problems_refuses_more_problems_than_patients():
    with pytest.raises(ValueError, match="cannot carry"):
        add_problems(generate_patients(10, today=TODAY), bad_share=0.9, duplicate_share=0.5)


def test_generate_export_writes_exactly_the_rows_asked_for(tmp_path):
    path = generate_export(tmp_path / "export.csv", 1234, seed=3, today=TODAY)
    header, rows = read_text(path)
    assert [h for h in header if h] == GENESIS_HEADERS and len(rows) == 1234


def test_generate_export_bad_rows_and_duplicates_come_at_their_shares(tmp_path):
    rows_asked = 5000
    path = generate_export(tmp_path / "export.csv", rows_asked, seed=3, bad_share=0.04, duplicate_share=0.02,
                           excel_artefacts=False, today=TODAY)
    header, rows = read_text(path)
    frame = pd.DataFrame(rows, columns=FIELD_NAMES)
    accounts = frame["account_number"]
    missing = (frame[["account_number", "last_name", "first_name"]] == "").any(axis=1)
    scientific = accounts.str.contains("E+", regex=False)
    bad_emails = (frame["email"] != "") & ~frame["email"].map(_valid_email)
    assert missing.sum() == pytest.approx(rows_asked * 0.04 * 3 / 10, abs=4)
    assert scientific.sum() == pytest.approx(rows_asked * 0.04 / 10, abs=2)
    assert bad_emails.sum() == pytest.approx(rows_asked * 0.04 / 10, abs=2)
    exact = frame.duplicated(keep="first")
    assert exact.sum() == pytest.approx(rows_asked * 0.02 * 0.8, abs=2)
    clashing = accounts[(accounts != "") & ~scientific & ~frame.duplicated(keep=False)]
    assert clashing.duplicated(keep=False).sum() == pytest.approx(rows_asked * 0.02 * 0.2 * 2, abs=4)


def test_generate_export_with_default_shares_rejects_well_under_a_quarter_of_rows(tmp_path):
    header, rows = read_text(generate_export(tmp_path / "export.csv", 3000, seed=9, excel_artefacts=False,
                                             today=TODAY))
    frame = pd.DataFrame(rows, columns=FIELD_NAMES)
    accounts = frame["account_number"]
    rejected = (frame[["account_number", "last_name", "first_name"]] == "").any(axis=1)
    rejected |= ~accounts.str.fullmatch(r"\d*")
    distinct = frame.drop_duplicates()
    clash = distinct["account_number"][distinct["account_number"].duplicated(keep=False)]
    rejected |= accounts.isin(clash[clash != ""])
    assert 0 < rejected.mean() < 0.05


def test_generate_export_is_deterministic_for_a_seed_and_day(tmp_path):
    a = generate_export(tmp_path / "a.csv", 800, seed=5, today=TODAY).read_bytes()
    assert a == generate_export(tmp_path / "b.csv", 800, seed=5, today=TODAY).read_bytes()
    assert a != generate_export(tmp_path / "c.csv", 800, seed=6, today=TODAY).read_bytes()


def test_generate_export_spans_blocks_with_unique_patients(tmp_path, monkeypatch):
    monkeypatch.setattr(generator, "_BLOCK_ROWS", 250)
    header, rows = read_text(generate_export(tmp_path / "blocks.csv", 1000, seed=1, bad_share=0,
                                             duplicate_share=0, excel_artefacts=False, today=TODAY))
    assert [r[0] for r in rows] == [str(10001 + i) for i in range(1000)]


@pytest.mark.parametrize("fmt", ["semicolon", "tsv", "xlsx"])
def test_generate_export_writes_every_format(tmp_path, fmt):
    path = generate_export(tmp_path / f"export.{fmt}", 400, seed=1, fmt=fmt, today=TODAY)
    header, rows = read_xlsx(path) if fmt == "xlsx" else read_text(path, fmt)
    assert [h for h in header if h] == GENESIS_HEADERS and len(rows) == 400


def test_an_export_of_no_rows_holds_only_the_header(tmp_path):
    header, rows = read_text(generate_export(tmp_path / "empty.csv", 0, today=TODAY))
    assert [h for h in header if h] == GENESIS_HEADERS and rows == []


def test_cli_prints_the_path_and_row_count_and_no_patient_values(tmp_path, capsys):
    out = tmp_path / "inbox" / "export.csv"
    main(["--rows", "120", "--seed", "1", "--format", "csv", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.strip() == f"{out}\t120 rows"
    header, rows = read_text(out)
    assert len(rows) == 120
    assert not any(r[1] and r[1] in printed for r in rows)


# --- a minimal reading of SPEC §2, enough to see that artefacts change no value ---------------

def _account(v: str) -> str:
    v = v.strip().removeprefix("#").removeprefix('="').removesuffix('"').removesuffix(".0")
    return v.lstrip("0") if v.isdigit() else v


def _zip(v: str) -> str:
    return v.zfill(5) if re.fullmatch(r"\d{3,4}", v) else v


def _phone(v: str) -> str:
    digits = re.sub(r"\D", "", re.sub(r"\s*(x|ext\.?)\s*\d+$", "", v))
    return digits[1:] if len(digits) == 11 and digits[0] == "1" else digits


def _date(v: str) -> str:
    if re.fullmatch(r"\d{5}", v):
        return str(datetime.date(1899, 12, 30) + datetime.timedelta(days=int(v)))
    for pattern in ("%m/%d/%Y", "%Y-%m-%d", "%m/%d/%y"):
        try:
            return str(datetime.datetime.strptime(v, pattern).date())
        except ValueError:
            continue
    return v


def _status(v: str) -> str:
    return "inactive" if v.lower() in ("inactive", "i", "n", "no") else "active"


def _gender(v: str) -> str:
    return v[:1].upper()


def _email(v: str) -> str:
    local, _, domain = v.rpartition("@")
    return f"{local}@{domain.lower()}" if local else v


def _spaces(v: str) -> str:
    return " ".join(v.split())


def _state(v: str) -> str:
    full = {name: code for code, name in generator._STATE_NAMES.items()}
    return full.get(v, v.upper())


def _valid_email(v: str) -> bool:
    try:
        validate_email(v, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _valid_phone(v: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(v, "US"))
    except phonenumbers.NumberParseException:
        return False
