"""Reading dropped exports: every accepted form, the row-number rule and every file-level rejection."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import zipfile
from pathlib import Path

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.patient_import.problems import (
    DUPLICATE_COLUMNS,
    EMPTY_FILE,
    FIELD_TOO_LONG,
    FILE_TOO_LARGE,
    NO_DATA_ROWS,
    TOO_MANY_COLUMNS,
    TOO_MANY_ROWS,
    UNKNOWN_COLUMN,
    UNREADABLE_FILE,
    UNSUPPORTED_FILE_TYPE,
    ExportRejected,
)
from include.patient_import.reader import ParsedExport, detect_file_type, read_export
from include.patient_import.schema import FIELDS, ROW_NUMBER
from include.patient_import.settings import Limits
from tools.corpus import Reader
from tools.corpus import write_export as write

pytestmark = pytest.mark.unit

LIMITS = Limits(
    max_file_bytes=5_000_000, max_rows=1_000, max_columns=40, max_field_length=200,
    max_uncompressed_bytes=20_000_000,
)
HEADER = "Account #,Last Name,First Name,Birth Date"
# Distinctive patient values: none of them may appear in a message.
PATIENT = ("77341", "Quixote", "Zebulon", "1987-03-14")
ROW = ",".join(PATIENT)
SECRETS = (*PATIENT, "Renée", "O'Brien", "Müller")


read = Reader(LIMITS)


def rejection(path: Path, **limits: int) -> ExportRejected:
    exc = read.rejection(path, **limits)
    text = f"{exc} {exc.problem().to_dict()} {exc.details}"
    for secret in SECRETS:
        assert secret not in text, f"patient value {secret!r} leaked into {text!r}"
    return exc


def column(parsed: ParsedExport, name: str) -> list[str]:
    return parsed.frame[name].tolist()


def rows_of(parsed: ParsedExport) -> list[list]:
    return parsed.frame.astype(object).values.tolist()


def workbook(tmp_path: Path, rows: list[list], *, top_left: str = "A1", name: str = "export.xlsx",
             second_sheet: list[list] | None = None) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    first = sheet[top_left]
    for r, values in enumerate(rows):
        for c, value in enumerate(values):
            if value is not None:
                sheet.cell(first.row + r, first.column + c, value)
    if second_sheet:
        other = book.create_sheet("Other")
        for values in second_sheet:
            other.append(values)
    path = tmp_path / name
    book.save(path)
    return path


def zip_file(tmp_path: Path, members: dict[str, bytes], name: str = "export.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


# --- accepted forms --------------------------------------------------------------------------


def test_reads_comma_delimited_utf8_csv(tmp_path):
    parsed = read(write(tmp_path, f"{HEADER}\n{ROW}\n"))

    assert parsed.columns == ["account_number", "last_name", "first_name", "birth_date"]
    assert parsed.headers == ["Account #", "Last Name", "First Name", "Birth Date"]
    assert rows_of(parsed) == [[2, *PATIENT]]
    assert (parsed.file_type, parsed.encoding, parsed.delimiter) == ("csv", "utf-8", ",")
    assert parsed.problems == []


def test_frame_has_int64_row_number_first_and_string_values(tmp_path):
    parsed = read(write(tmp_path, f"{HEADER}\n{ROW}\n"))

    assert list(parsed.frame.columns) == [ROW_NUMBER, *parsed.columns]
    assert str(parsed.frame[ROW_NUMBER].dtype) == "int64"
    assert all(isinstance(v, str) for name in parsed.columns for v in column(parsed, name))


def test_repr_of_parsed_export_holds_no_patient_values(tmp_path):
    parsed = read(write(tmp_path, f"{HEADER}\n{ROW}\n"))

    assert not any(secret in repr(parsed) for secret in PATIENT)


def test_reads_semicolon_delimited_csv(tmp_path):
    parsed = read(write(tmp_path, "Account #;Last Name;First Name\n77341;Quixote;Zebulon, Jr\n"))

    assert parsed.delimiter == ";"
    assert column(parsed, "first_name") == ["Zebulon, Jr"]


@pytest.mark.parametrize("name", ["export.txt", "export.tsv", "export.csv"])
def test_reads_tab_separated_text_whatever_its_extension(tmp_path, name):
    text = "Account #\tLast Name\tFirst Name\r\n77341\tQuixote, Jr\tZebulon\r\n"
    parsed = read(write(tmp_path, text, name))

    assert (parsed.file_type, parsed.delimiter) == ("tsv", "\t")
    assert column(parsed, "last_name") == ["Quixote, Jr"]


def test_reads_utf8_with_bom_without_bom_in_first_header(tmp_path):
    parsed = read(write(tmp_path, codecs.BOM_UTF8 + "Account #,Last Name\n77341,Renée\n".encode()))

    assert parsed.encoding == "utf-8-sig"
    assert parsed.headers[0] == "Account #"
    assert column(parsed, "last_name") == ["Renée"]


def test_reads_windows_1252_accents_and_apostrophes(tmp_path):
    text = "Account #,Last Name,First Name\r\n1,O’Brien,Renée\r\n2,Müller,Zoë\r\n"
    parsed = read(write(tmp_path, text, encoding="cp1252"))

    assert parsed.encoding == "cp1252"
    assert column(parsed, "last_name") == ["O’Brien", "Müller"]
    assert column(parsed, "first_name") == ["Renée", "Zoë"]


def test_reads_plain_ascii_as_utf8(tmp_path):
    assert read(write(tmp_path, "Account #,Last Name\n1,O'Brien\n")).encoding == "utf-8"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_reads_utf16_tab_text_as_saved_by_excel_unicode_text(tmp_path, encoding):
    bom = codecs.BOM_UTF16_LE if encoding == "utf-16-le" else codecs.BOM_UTF16_BE
    text = "Account #\tLast Name\tFirst Name\r\n77341\tRenée\tO'Brien\r\n"
    parsed = read(write(tmp_path, bom + text.encode(encoding), "export.txt"))

    assert (parsed.encoding, parsed.file_type) == ("utf-16", "tsv")
    assert rows_of(parsed) == [[2, "77341", "Renée", "O'Brien"]]


def test_crlf_and_lf_files_read_the_same(tmp_path):
    lf = read(write(tmp_path, f"{HEADER}\n{ROW}\n\n{ROW}\n", "lf.csv"))
    crlf = read(write(tmp_path, f"{HEADER}\r\n{ROW}\r\n\r\n{ROW}\r\n", "crlf.csv"))

    assert rows_of(lf) == rows_of(crlf) == [[2, *PATIENT], [4, *PATIENT]]


def test_file_name_with_spaces_and_hyphens_is_read(tmp_path):
    assert len(read(write(tmp_path, f"{HEADER}\n{ROW}\n", "Patient List - Nov 2026.csv")).frame) == 1


def test_file_without_final_line_break_keeps_its_last_row(tmp_path):
    assert column(read(write(tmp_path, f"{HEADER}\n{ROW}")), "account_number") == ["77341"]


def test_drops_trailing_empty_columns_excel_writes(tmp_path):
    parsed = read(write(tmp_path, "Account #,Last Name,,,\r\n77341,Quixote,,,\r\n"))

    assert parsed.columns == ["account_number", "last_name"]
    assert parsed.problems == []


def test_drops_empty_middle_column_without_header_or_values(tmp_path):
    parsed = read(write(tmp_path, "Account #,,Last Name\n77341,,Quixote\n"))

    assert parsed.columns == ["account_number", "last_name"]


def test_keeps_headerless_column_with_values_as_unknown_column(tmp_path):
    parsed = read(write(tmp_path, "Account #,Last Name,,\n77341,Quixote,,note\n2,Smith,,\n"))

    assert parsed.headers == ["Account #", "Last Name", "(column 4)"]
    assert parsed.columns == ["account_number", "last_name", "__extra_4"]
    assert column(parsed, "__extra_4") == ["note", ""]
    assert [(p.code, p.field) for p in parsed.problems] == [(UNKNOWN_COLUMN, "(column 4)")]


def test_skips_blank_lines_and_rows_of_empty_cells(tmp_path):
    parsed = read(write(tmp_path, f"{HEADER}\n\n{ROW}\n,,,\n  ,\t, ,\n   \n{ROW}\n"))

    assert column(parsed, ROW_NUMBER) == [3, 7]


def test_quoted_values_hold_commas_quotes_and_line_breaks(tmp_path):
    text = 'Account #,Last Name,Address\r\n1,"O""Brien, Jr","12 Main St\r\nApt 3"\r\n2,"Smith","a\nb"\r\n'
    parsed = read(write(tmp_path, text))

    assert column(parsed, "last_name") == ['O"Brien, Jr', "Smith"]
    assert column(parsed, "address1") == ["12 Main St\r\nApt 3", "a\nb"]


def test_values_are_kept_as_written(tmp_path):
    parsed = read(write(tmp_path, 'Account #,Last Name,Zip,Email\n00123, Quixote ,="02134",\n'))

    assert rows_of(parsed) == [[2, "00123", " Quixote ", '="02134"', ""]]


def test_short_rows_are_padded_with_empty_values(tmp_path):
    parsed = read(write(tmp_path, f"{HEADER}\n77341,Quixote\n"))

    assert rows_of(parsed) == [[2, "77341", "Quixote", "", ""]]


def test_extra_empty_cells_beyond_the_header_are_fine(tmp_path):
    parsed = read(write(tmp_path, f"{HEADER}\n{ROW},,  ,\n"))

    assert rows_of(parsed) == [[2, *PATIENT]]


def test_header_matching_ignores_case_spaces_punctuation_and_order(tmp_path):
    text = "first  NAME, birth-date ,ACCOUNT#,last_name\nZebulon,1987-03-14,77341,Quixote\n"
    parsed = read(write(tmp_path, text))

    assert parsed.columns == ["first_name", "birth_date", "account_number", "last_name"]
    assert parsed.headers == ["first  NAME", " birth-date ", "ACCOUNT#", "last_name"]
    assert column(parsed, "account_number") == ["77341"]


@pytest.mark.parametrize(
    ("alias", "field"), [(alias, f.name) for f in FIELDS for alias in f.aliases],
)
def test_aliases_map_to_their_field(tmp_path, alias, field):
    parsed = read(write(tmp_path, f'"{alias}"\nx\n'))

    assert parsed.columns == [field]


def test_unknown_columns_are_kept_and_reported_as_warnings(tmp_path):
    parsed = read(write(tmp_path, "Account #,Balance,Last Name,Referral\n77341,12.50,Quixote,Zebulon\n"))

    assert parsed.columns == ["account_number", "__extra_2", "last_name", "__extra_4"]
    assert column(parsed, "__extra_4") == ["Zebulon"]
    assert [p.to_dict() for p in parsed.problems] == [
        {"row": None, "account_number": None, "field": header, "code": UNKNOWN_COLUMN,
         "severity": "warning", "message": f"column {header!r} is not a patient field and is ignored"}
        for header in ("Balance", "Referral")
    ]


def test_import_problem_column_is_dropped_silently(tmp_path):
    parsed = read(write(tmp_path, f'{HEADER},Import Problem\n{ROW},"{"x" * 500}"\n'))

    assert parsed.columns == ["account_number", "last_name", "first_name", "birth_date"]
    assert parsed.problems == []


def test_excel_sep_hint_line_sets_the_delimiter_and_is_not_the_header(tmp_path):
    parsed = read(write(tmp_path, "sep=;\r\nAccount #;Last Name\r\n77341;Quixote, Jr\r\n"))

    assert parsed.delimiter == ";"
    assert rows_of(parsed) == [[3, "77341", "Quixote, Jr"]]


def test_delimiter_is_detected_outside_quotes(tmp_path):
    parsed = read(write(tmp_path, '"Last; Name; (a;b;c)",Account #\nQuixote,77341\n'))

    assert parsed.delimiter == ","


def test_csv_named_xlsx_is_read_as_csv(tmp_path):
    parsed = read(write(tmp_path, f"{HEADER}\n{ROW}\n", "export.xlsx"))

    assert parsed.file_type == "csv"
    assert rows_of(parsed) == [[2, *PATIENT]]


def test_reads_first_sheet_of_xlsx(tmp_path):
    path = workbook(tmp_path, [["Account #", "Last Name"], ["77341", "Quixote"]],
                    second_sheet=[["Account #", "Last Name"], ["1", "Other"]])
    parsed = read(path)

    assert (parsed.file_type, parsed.encoding, parsed.delimiter) == ("xlsx", None, None)
    assert rows_of(parsed) == [[2, "77341", "Quixote"]]


def test_xlsx_named_csv_is_read_as_workbook(tmp_path):
    path = workbook(tmp_path, [["Account #"], ["77341"]], name="export.csv")

    assert read(path).file_type == "xlsx"


def test_xlsx_cells_become_text_as_excel_shows_them(tmp_path):
    path = workbook(tmp_path, [
        ["Account #", "Zip", "Birth Date", "Last Visit", "Status", "Phone", "Last Name"],
        [77341, 2134.0, dt.datetime(1987, 3, 14), dt.date(2024, 1, 2), True, 2.5, None],
        [123456789012, 0.1, None, None, False, 1e-7, "Quixote"],
    ])
    parsed = read(path)

    assert rows_of(parsed) == [
        [2, "77341", "2134", "1987-03-14", "2024-01-02", "TRUE", "2.5", ""],
        [3, "123456789012", "0.1", "", "", "FALSE", "1e-07", "Quixote"],
    ]


def test_xlsx_headerless_column_with_values_is_named_by_sheet_column(tmp_path):
    parsed = read(workbook(tmp_path, [["Account #", None, "Last Name"], ["1", "note", "Quixote"]],
                           top_left="B1"))

    assert parsed.headers == ["Account #", "(column 3)", "Last Name"]
    assert parsed.columns == ["account_number", "__extra_3", "last_name"]


@pytest.mark.parametrize(("head", "expected"), [
    (b"Account #,Last Name\r\n1,a\r\n", "csv"),
    (b"Account #;Last Name\r\n", "csv"),
    (b"Account #\tLast Name\r\n", "tsv"),
    (codecs.BOM_UTF16_LE + "Account #\tLast Name\r\n".encode("utf-16-le"), "tsv"),
])
def test_detect_file_type_tells_csv_from_tab_text(tmp_path, head, expected):
    assert detect_file_type(tmp_path / "whatever.xlsx", head) == expected


def test_detect_file_type_recognises_a_workbook_by_content(tmp_path):
    path = workbook(tmp_path, [["Account #"], ["1"]], name="export.dat")

    assert detect_file_type(path, path.read_bytes()[:4096]) == "xlsx"


def test_default_limits_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_MAX_ROWS", "1")
    path = write(tmp_path, f"{HEADER}\n{ROW}\n{ROW}\n")

    with pytest.raises(ExportRejected) as info:
        read_export(path)

    assert info.value.code == TOO_MANY_ROWS


# --- row numbers -----------------------------------------------------------------------------


def test_first_patient_is_row_2_when_the_header_is_line_1(tmp_path):
    assert column(read(write(tmp_path, f"{HEADER}\n{ROW}\n{ROW}\n")), ROW_NUMBER) == [2, 3]


def test_blank_lines_before_the_header_count(tmp_path):
    assert column(read(write(tmp_path, f"\n\r\n  \n{HEADER}\n{ROW}\n")), ROW_NUMBER) == [5]


def test_multi_line_record_starts_on_its_first_line_and_shifts_the_next(tmp_path):
    text = f'{HEADER}\n77341,"Quixote\nde la\r\nMancha",Zebulon,\n\n{ROW}\n'

    assert column(read(write(tmp_path, text)), ROW_NUMBER) == [2, 6]


def test_multi_line_header_shifts_the_first_row(tmp_path):
    assert column(read(write(tmp_path, '"Account\n#",Last Name\n77341,Quixote\n')), ROW_NUMBER) == [3]


def test_utf16_row_numbers_count_lines(tmp_path):
    text = "Account #\tLast Name\r\n\r\n1\t\"a\r\nb\"\r\n2\tc\r\n"
    path = write(tmp_path, codecs.BOM_UTF16_LE + text.encode("utf-16-le"), "export.txt")

    assert column(read(path), ROW_NUMBER) == [3, 5]


def test_xlsx_row_numbers_are_the_sheets_even_with_empty_leading_rows(tmp_path):
    path = workbook(tmp_path, [["Account #", "Last Name"], ["1", "a"], [None, None], ["2", "b"]],
                    top_left="C3")
    parsed = read(path)

    assert column(parsed, ROW_NUMBER) == [4, 6]
    assert column(parsed, "account_number") == ["1", "2"]


def test_xlsx_row_numbers_start_at_2_with_the_header_on_row_1(tmp_path):
    path = workbook(tmp_path, [["Account #"], ["1"], ["2"]])

    assert column(read(path), ROW_NUMBER) == [2, 3]


# --- rejections ------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "looks_like"), [
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), "legacy Excel .xls"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG image"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "JPEG image"),
    (b"GIF89a\x01\x00\x01\x00\x80\x00\x00", "GIF image"),
    (b"BM\x36\x00\x0c\x00\x00\x00\x00\x00\x36\x00\x00\x00", "BMP image"),
    (b"II*\x00\x08\x00\x00\x00", "TIFF image"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "WEBP image"),
    (b"<!DOCTYPE html><html><table><tr><td>Account #</td></tr></table>", "web page"),
    (b"Account #,Last Name\r\n77341,\x00\x01\x02\x00\r\n", "binary data"),
])
def test_rejects_files_that_are_not_exports_saying_what_they_look_like(tmp_path, content, looks_like):
    exc = rejection(write(tmp_path, content, "export.csv"))

    assert exc.code == UNSUPPORTED_FILE_TYPE
    assert looks_like in exc.message
    assert exc.row is None


def test_rejects_pdf_message_names_it_and_is_not_a_patient_export(tmp_path):
    exc = rejection(write(tmp_path, b"%PDF-1.4\n", "export.csv"))

    assert exc.message.startswith("this is a PDF document, not a patient export")


def test_rejects_password_protected_xlsx_as_unsupported(tmp_path):
    # Excel encrypts a protected .xlsx into an OLE2 container, the same header as a legacy .xls.
    exc = rejection(write(tmp_path, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), "export.xlsx"))

    assert exc.code == UNSUPPORTED_FILE_TYPE
    assert "password-protected" in exc.message


def test_rejects_nul_bytes_after_the_first_block(tmp_path):
    content = f"{HEADER}\n".encode() + f"{ROW}\n".encode() * 5000 + b"1,\x00,2,3\n"
    exc = rejection(write(tmp_path, content))

    assert exc.code == UNSUPPORTED_FILE_TYPE
    assert "line 5002" in exc.message


def test_rejects_zip_archive_that_is_not_a_workbook(tmp_path):
    exc = rejection(zip_file(tmp_path, {"export.csv": f"{HEADER}\n{ROW}\n".encode()}))

    assert exc.code == UNSUPPORTED_FILE_TYPE
    assert "zip archive" in exc.message


def test_rejects_word_document(tmp_path):
    exc = rejection(zip_file(tmp_path, {"[Content_Types].xml": b"<x/>", "word/document.xml": b"<x/>"},
                             "export.docx"))

    assert (exc.code, "Word document" in exc.message) == (UNSUPPORTED_FILE_TYPE, True)


def test_rejects_xlsx_that_is_a_zip_without_a_workbook(tmp_path):
    exc = rejection(zip_file(tmp_path, {"notes.txt": b"hello"}, "export.xlsx"))

    assert exc.code == UNSUPPORTED_FILE_TYPE
    assert "not a valid Excel workbook" in exc.message


def test_rejects_truncated_xlsx_as_unreadable(tmp_path):
    data = workbook(tmp_path, [["Account #"], ["77341"]]).read_bytes()
    exc = rejection(write(tmp_path, data[: len(data) // 2], "cut.xlsx"))

    assert exc.code == UNREADABLE_FILE


def test_rejects_workbook_with_broken_sheet_as_unreadable(tmp_path):
    path = workbook(tmp_path, [["Account #"], ["77341"]])
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["xl/worksheets/sheet1.xml"] = b"<worksheet><sheetData><row r='1'><c r='A1' t='s'><v>99"
    exc = rejection(zip_file(tmp_path, members, "broken.xlsx"))

    assert exc.code == UNREADABLE_FILE


def test_rejects_zero_byte_file_as_empty(tmp_path):
    assert rejection(write(tmp_path, b"")).code == EMPTY_FILE


@pytest.mark.parametrize(
    "content", [b"\r\n\n   \n\t\n", b",,,\r\n, ,\t\r\n", codecs.BOM_UTF8, codecs.BOM_UTF16_LE],
)
def test_rejects_file_of_blank_lines_as_empty(tmp_path, content):
    assert rejection(write(tmp_path, content)).code == EMPTY_FILE


def test_rejects_xlsx_with_empty_first_sheet_as_empty(tmp_path):
    path = workbook(tmp_path, [], second_sheet=[["Account #"], ["1"]])

    assert rejection(path).code == EMPTY_FILE


@pytest.mark.parametrize("content", [f"{HEADER}\n", f"{HEADER}", f"\n{HEADER}\r\n\r\n,,,\r\n"])
def test_rejects_header_only_as_no_data_rows(tmp_path, content):
    assert rejection(write(tmp_path, content)).code == NO_DATA_ROWS


def test_rejects_xlsx_with_header_only_as_no_data_rows(tmp_path):
    assert rejection(workbook(tmp_path, [["Account #", "Last Name"]])).code == NO_DATA_ROWS


@pytest.mark.parametrize("byte, name", [
    (b"\x81", "Quixüote"),  # DOS 437/850 ü; Mac Roman's Å inside a small-letter word is not a name
    (b"\x8f", "Quixèote"),  # Mac Roman è; DOS Å is not
    (b"\x90", "Quixêote"),  # Mac Roman ê; DOS É is not
    (b"\x9d", "Quixùote"),  # Mac Roman ù; DOS 437 ¥ and 850 Ø are not
])
def test_bytes_undefined_in_windows_1252_read_as_the_encoding_that_gives_a_name(tmp_path, byte, name):
    content = f"{HEADER}\n".encode() + b"77341,Quix" + byte + b"ote,Zebulon,1987-03-14\n"

    assert column(read(write(tmp_path, content)), "last_name") == [name]


def test_rejects_a_byte_two_encodings_read_as_different_plausible_letters(tmp_path):
    # 0x8D: DOS ì, Mac Roman ç; nothing else in the file tells them apart.
    content = f"{HEADER}\n".encode() + b"77341,Quix\x8dote,Zebulon,1987-03-14\n"
    exc = rejection(write(tmp_path, content))

    assert (exc.code, exc.row) == (UNREADABLE_FILE, 2)
    assert "CSV UTF-8" in exc.message and "Quix" not in exc.message


def test_windows_1252_file_holding_utf8_text_is_read_as_windows_1252(tmp_path):
    # Our UTF-8 rejected-rows file fixed in Excel and saved as "CSV (Comma delimited)": the UTF-8
    # letters are now double-decoded text, which the normaliser repairs (text_repaired).
    content = f"{HEADER}\n".encode() + "1,Renée,a,\n".encode() + "2,Müller,b,\n".encode("cp1252")
    parsed = read(write(tmp_path, content))

    assert parsed.encoding == "cp1252"
    assert column(parsed, "last_name") == ["RenÃ©e", "Müller"]


def test_rejects_utf8_bom_file_holding_windows_1252_bytes(tmp_path):
    content = codecs.BOM_UTF8 + f"{HEADER}\n".encode() + "2,Müller,b,\n".encode("cp1252")
    exc = rejection(write(tmp_path, content))

    assert (exc.code, "mixes text encodings" in exc.message) == (UNREADABLE_FILE, True)


@pytest.mark.parametrize("tail", [b"\x00", "\ud800".encode("utf-16-le", "surrogatepass") + b"a\x00"])
def test_rejects_invalid_utf16(tmp_path, tail):
    content = codecs.BOM_UTF16_LE + "Account #\r\n1\r\n".encode("utf-16-le") + tail
    exc = rejection(write(tmp_path, content, "export.txt"))

    assert exc.code == UNREADABLE_FILE


def test_rejects_two_columns_for_the_same_field_naming_both(tmp_path):
    exc = rejection(write(tmp_path, "Account #,Last Name,Acct No\n77341,Quixote,77341\n"))

    assert (exc.code, exc.field) == (DUPLICATE_COLUMNS, "account_number")
    assert "'Account #'" in exc.message and "'Acct No'" in exc.message


def test_duplicate_unknown_columns_are_both_kept(tmp_path):
    parsed = read(write(tmp_path, "Account #,Notes,Notes\n1,a,b\n"))

    assert parsed.columns == ["account_number", "__extra_2", "__extra_3"]


def test_rejects_row_with_more_values_than_the_header_has_columns(tmp_path):
    text = "Account #,Last Name,First Name\n1,a,b\n\n77341,Quixote,Zebulon,1987-03-14\n"
    exc = rejection(write(tmp_path, text))

    assert (exc.code, exc.row) == (UNREADABLE_FILE, 4)
    assert exc.message == "row 4 has 4 values but the header has 3 columns"


def test_rejects_quote_never_closed_at_the_row_it_opens(tmp_path):
    exc = rejection(write(tmp_path, f'{HEADER}\n{ROW}\n77341,"Quixote,Zebulon,1987-03-14\n{ROW}\n'))

    assert (exc.code, exc.row) == (UNREADABLE_FILE, 3)


def test_rejects_text_after_a_closing_quote(tmp_path):
    exc = rejection(write(tmp_path, f'{HEADER}\n77341,"Quixote"Zebulon,a,b\n'))

    assert (exc.code, exc.row) == (UNREADABLE_FILE, 2)


def test_rejects_value_swallowing_many_lines_as_unclosed_quote(tmp_path):
    text = f'{HEADER}\n1,"Quixote,a,b\n' + f"{ROW}\n" * 20 + '2,x",c,d\n'
    exc = rejection(write(tmp_path, text), max_field_length=100)

    assert (exc.code, exc.row) == (UNREADABLE_FILE, 2)
    assert "never closed" in exc.message


def test_rejects_file_over_the_size_limit_before_reading_it(tmp_path):
    exc = rejection(write(tmp_path, b"%PDF" + bytes(2000)), max_file_bytes=1000)

    assert exc.code == FILE_TOO_LARGE
    assert exc.details == {"bytes": 2004, "limit": 1000}


def test_rejects_header_with_too_many_columns(tmp_path):
    header = ",".join(f"Col {n}" for n in range(41))
    exc = rejection(write(tmp_path, f"{header}\n{'x,' * 40}x\n"))

    assert exc.code == TOO_MANY_COLUMNS
    assert "41 columns" in exc.message and "40" in exc.message


def test_rejects_value_longer_than_the_limit_without_showing_it(tmp_path):
    secret_long = "Quixote" * 30
    exc = rejection(write(tmp_path, f"{HEADER}\n{ROW}\n77341,{secret_long},Zebulon,\n"))

    assert (exc.code, exc.row, exc.field) == (FIELD_TOO_LONG, 3, "last_name")
    assert "210 characters" in exc.message and "200" in exc.message


def test_too_long_value_in_unknown_column_names_its_header(tmp_path):
    exc = rejection(write(tmp_path, f"Account #,Notes\n77341,{'Zebulon' * 40}\n"))

    assert (exc.code, exc.field) == (FIELD_TOO_LONG, "Notes")


def test_rejects_too_many_rows_and_stops_reading_there(tmp_path):
    # The broken quote on the last line is never reached.
    exc = rejection(write(tmp_path, f'{HEADER}\n{ROW}\n{ROW}\n{ROW}\n1,"broken\n'), max_rows=2)

    assert (exc.code, exc.row) == (TOO_MANY_ROWS, 4)


def test_max_rows_data_rows_are_accepted(tmp_path):
    assert len(read(write(tmp_path, f"{HEADER}\n{ROW}\n\n{ROW}\n"), max_rows=2).frame) == 2


def test_rejects_xlsx_with_too_many_rows(tmp_path):
    path = workbook(tmp_path, [["Account #"], ["1"], ["2"], ["3"]])

    assert rejection(path, max_rows=2).code == TOO_MANY_ROWS


def test_rejects_xlsx_that_unpacks_beyond_the_limit(tmp_path):
    path = workbook(tmp_path, [["Account #"], ["77341"]])

    assert rejection(path, max_uncompressed_bytes=1_000).code == FILE_TOO_LARGE


def test_rejects_xlsx_with_a_zip_bomb_member(tmp_path):
    path = workbook(tmp_path, [["Account #"], ["77341"]])
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/padding.bin", bytes(8 * 1024 * 1024))
    exc = rejection(path)

    assert exc.code == FILE_TOO_LARGE
    assert "times its size" in exc.message


# --- properties ------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_reads_or_rejects(path: Path) -> None:
    try:
        parsed = read(path)
    except ExportRejected as exc:
        assert exc.code in {UNSUPPORTED_FILE_TYPE, UNREADABLE_FILE, EMPTY_FILE, NO_DATA_ROWS,
                            DUPLICATE_COLUMNS, FILE_TOO_LARGE, TOO_MANY_COLUMNS, FIELD_TOO_LONG,
                            TOO_MANY_ROWS}
    else:
        assert list(parsed.frame.columns) == [ROW_NUMBER, *parsed.columns]
        assert len(parsed.headers) == len(parsed.columns)


@FUZZ
@given(content=st.binary(max_size=3000), name=st.sampled_from(["export.csv", "export.txt", "export.xlsx"]))
def test_arbitrary_bytes_are_read_or_rejected_never_crash(tmp_path, content, name):
    assert_reads_or_rejects(write(tmp_path, content, name))


@FUZZ
@given(
    prefix=st.sampled_from([b"PK\x03\x04", b"PK\x05\x06", codecs.BOM_UTF8, codecs.BOM_UTF16_LE,
                            codecs.BOM_UTF16_BE, b"Account #,Last Name\r\n", b"\xd0\xcf\x11\xe0"]),
    content=st.binary(max_size=2000),
)
def test_bytes_behind_known_signatures_are_read_or_rejected(tmp_path, prefix, content):
    assert_reads_or_rejects(write(tmp_path, prefix + content, "export.xlsx"))


@FUZZ
@given(
    text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=500),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]),
)
def test_arbitrary_text_is_read_or_rejected(tmp_path, text, encoding):
    content = text.encode(encoding, errors="replace")
    assert_reads_or_rejects(write(tmp_path, content))


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            st.from_regex(r"[0-9]{1,8}", fullmatch=True),
            st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from('",;\t\r\n'),
                    max_size=30),
        ),
        min_size=1, max_size=20,
    ),
    delimiter=st.sampled_from([",", ";", "\t"]),
    # csv.writer's minimal quoting leaves a lone "\r" bare unless it is part of the terminator.
    style=st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL)]),
)
def test_values_and_row_numbers_survive_a_round_trip(tmp_path, rows, delimiter, style):
    terminator, quoting = style
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=terminator, quoting=quoting)
    writer.writerow(["Account #", "Last Name"])
    expected_rows, line = [], 2
    for account, name in rows:
        start = buffer.tell()
        writer.writerow([account, name])
        record = buffer.getvalue()[start:]
        expected_rows.append([line, account, name])
        line += record.count("\n") + record.count("\r") - record.count("\r\n")
    # With the byte-order mark Excel's "CSV UTF-8" writes: without it, arbitrary text (`ʊ`, which
    # is the Windows-1252 bytes of `ÉŠ`) may rightly read as another encoding (SPEC §2).
    parsed = read(write(tmp_path, codecs.BOM_UTF8 + buffer.getvalue().encode()))

    assert rows_of(parsed) == expected_rows
