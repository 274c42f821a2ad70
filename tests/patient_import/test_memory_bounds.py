"""Memory is bounded (SPEC §7): lines before the header, a record's width, an .xlsx's grid, parts and
entries are refused from what a small part of the file says, never after holding it whole.

Limits and module budgets are scaled down so that tiny inline files cross them;
scripts/hostile_memory.py measures the real sizes.
"""

from __future__ import annotations

import dataclasses
import io
import random
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from include.patient_import import reader
from include.patient_import.problems import (
    FIELD_TOO_LONG,
    FILE_TOO_LARGE,
    TOO_MANY_COLUMNS,
    UNREADABLE_FILE,
    UNSUPPORTED_FILE_TYPE,
    ExportRejected,
)
from include.patient_import.reader import detect_file_type
from include.patient_import.schema import ROW_NUMBER
from include.patient_import.settings import Limits
from tools.corpus import Reader
from tools.corpus import write_export as write

pytestmark = pytest.mark.unit

LIMITS = Limits(
    max_file_bytes=5_000_000, max_rows=1_000, max_columns=3, max_field_length=10,
    max_uncompressed_bytes=20_000_000, max_lines_before_header=3,
)
# 3 columns of 10 characters, quoted and doubled, plus Excel's 16,384 empty columns.
RECORD = 3 * (2 * 10 + 3) + 16_384
HEADER = "Account #,Last Name,First Name"
ROW = "77341,Quix,Zeb"


read = Reader(LIMITS)
rejection = read.rejection


# --- lines before the header -------------------------------------------------------------------


def test_blank_lines_before_the_header_up_to_the_limit_are_skipped_and_counted(tmp_path):
    parsed = read(write(tmp_path, f" \n,,\n\t\n{HEADER}\n{ROW}\n"))

    assert parsed.frame[ROW_NUMBER].tolist() == [5]
    assert parsed.frame["account_number"].tolist() == ["77341"]


def test_more_blank_lines_before_the_header_than_the_limit_are_refused(tmp_path):
    exc = rejection(write(tmp_path, f" \n\n \n\n{HEADER}\n{ROW}\n"))

    assert (exc.code, exc.row) == (UNREADABLE_FILE, 5)
    assert exc.message.startswith("the first 4 lines are blank") and "within the first 4" in exc.message


def test_blank_lines_holding_quotes_count_against_the_limit(tmp_path):
    exc = rejection(write(tmp_path, f'""\n"",""\n""\n""\n{HEADER}\n{ROW}\n'))

    assert (exc.code, exc.row) == (UNREADABLE_FILE, 5)


def test_utf16_blank_lines_before_the_header_are_bounded_too(tmp_path):
    text = "\ufeff" + " \r\n" * 10 + HEADER.replace(",", "\t") + "\r\n" + ROW.replace(",", "\t") + "\r\n"
    exc = rejection(write(tmp_path, text, "export.txt", "utf-16-le"))

    assert exc.code == UNREADABLE_FILE


def test_xlsx_blank_rows_before_the_header_are_bounded_too(tmp_path):
    path = _book(tmp_path, b'<row r="9"><c r="A9" t="inlineStr"><is><t>Account #</t></is></c></row>'
                           b'<row r="10"><c r="A10"><v>1</v></c></row>')

    assert rejection(path).code == UNREADABLE_FILE


def test_the_header_search_keeps_no_blank_line_it_has_passed():
    lines = iter([" \n", ",;\n", '""\n', "\n", "Account #;Last Name\n", "1;x\n"])

    assert reader._find_delimiter(lines) == (";", ["Account #;Last Name\n"], 4)


def test_a_line_with_an_open_quote_before_the_header_is_kept_for_the_csv_reader():
    lines = iter([" \n", ',"\n', '",\n', "Account #,Last Name\n"])

    delimiter, kept, dropped = reader._find_delimiter(lines)

    assert (kept, dropped) == ([',"\n', '",\n', "Account #,Last Name\n"], 1)


def test_the_header_search_stops_after_the_limit():
    lines = iter([" \n"] * 10 + ["Account #,Last Name\n"])

    _, kept, dropped = reader._find_delimiter(lines, max_lines=3)

    assert (kept, dropped) == ([], 4)
    assert next(lines) == " \n"  # the rest is left to the reader, which refuses the file


# --- the width of a record ---------------------------------------------------------------------


def test_lines_are_read_no_longer_than_the_record_budget():
    budget = reader._RecordBudget(1_000)
    lines = reader._bounded_lines(io.StringIO("a,b\n" + "x" * 100_000 + "\n", newline=""), budget)

    assert next(lines) == "a,b\n"
    with pytest.raises(reader._Overlong) as info:
        next(lines)
    assert len(info.value.text) == 1_000 - 4


def test_record_budget_counts_every_line_of_a_record_until_it_ends():
    budget = reader._RecordBudget(100)
    lines = reader._bounded_lines(io.StringIO("x" * 40 + "\n" + "y" * 40 + "\n" + "z" * 40 + "\n", newline=""),
                                  budget)
    next(lines), next(lines)
    with pytest.raises(reader._Overlong):
        next(lines)


def test_row_of_delimiters_beyond_the_record_budget_is_too_many_columns(tmp_path):
    exc = rejection(write(tmp_path, f"{HEADER}\n{ROW}\n{',' * (RECORD * 3)}\n{ROW}\n"))

    assert (exc.code, exc.row) == (TOO_MANY_COLUMNS, 3)
    assert "row 3" in exc.message


def test_excel_width_of_empty_columns_stays_within_the_record_budget(tmp_path):
    # Excel writes every row as wide as its used range: up to XFD, 16,384 columns.
    trailing = "," * 16_000
    parsed = read(write(tmp_path, f"{HEADER}\n{ROW}{trailing}\n"), max_columns=16_400)

    assert parsed.frame["account_number"].tolist() == ["77341"]


def test_header_of_a_million_empty_columns_is_too_many_columns_at_row_1(tmp_path):
    exc = rejection(write(tmp_path, HEADER + "," * 1_000_000 + f"\n{ROW}\n"))

    assert (exc.code, exc.row) == (TOO_MANY_COLUMNS, 1)
    assert "characters" in exc.message


def test_utf16_row_of_tabs_beyond_the_record_budget_is_too_many_columns(tmp_path):
    text = "\ufeff" + HEADER.replace(",", "\t") + "\r\n" + "\t" * (RECORD * 2) + "\r\n"
    exc = rejection(write(tmp_path, text, "export.txt", "utf-16-le"))

    assert (exc.code, exc.row) == (TOO_MANY_COLUMNS, 2)


def test_value_beyond_the_record_budget_on_one_line_is_field_too_long(tmp_path):
    exc = rejection(write(tmp_path, f"{HEADER}\n{ROW}\n1,{'x' * RECORD * 2},y\n"))

    assert (exc.code, exc.row) == (FIELD_TOO_LONG, 3)


def test_header_line_beyond_the_record_budget_is_field_too_long_at_row_1(tmp_path):
    exc = rejection(write(tmp_path, "Account" * RECORD + f"\n{ROW}\n"))

    assert (exc.code, exc.row) == (FIELD_TOO_LONG, 1)


def test_blank_line_beyond_the_record_budget_is_unreadable(tmp_path):
    exc = rejection(write(tmp_path, " " * (RECORD * 2) + f"\n{HEADER}\n{ROW}\n"))

    assert (exc.code, exc.row) == (UNREADABLE_FILE, 1)


def test_quote_never_closed_over_the_record_budget_is_unreadable_at_the_row_it_opens(tmp_path):
    lines = "".join(f"{n},Quix,Zeb\n" for n in range(RECORD // 8))
    exc = rejection(write(tmp_path, f'{HEADER}\n{ROW}\n1,"Quix,Zeb\n{lines}'))

    assert (exc.code, exc.row) == (UNREADABLE_FILE, 3)
    assert "never closed" in exc.message


def test_quote_never_closed_in_utf16_is_unreadable_at_the_row_it_opens(tmp_path):
    lines = "".join(f"{n}\tQuix\tZeb\r\n" for n in range(RECORD // 8))
    text = "\ufeff" + HEADER.replace(",", "\t") + '\r\n1\t"Quix\tZeb\r\n' + lines
    exc = rejection(write(tmp_path, text, "export.txt", "utf-16-le"))

    assert (exc.code, exc.row) == (UNREADABLE_FILE, 2)


def test_record_budget_follows_the_limits():
    assert reader._max_record_chars(LIMITS) == RECORD
    assert reader._max_record_chars(Limits.from_env()) > 200 * (2 * 1_000)


# --- .xlsx -------------------------------------------------------------------------------------

_NS = b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_HEADER_ROW = (b'<row r="1"><c r="A1" t="inlineStr"><is><t>Account #</t></is></c>'
               b'<c r="B1" t="inlineStr"><is><t>Last Name</t></is></c></row>')


def _book(tmp_path: Path, rows: bytes, *, strings: list[bytes] | None = None, sheets: int = 1,
          extra: dict[str, bytes] | None = None, name: str = "export.xlsx") -> Path:
    """A minimal workbook whose first sheet holds `rows` (sheetData's XML)."""
    listed = b"".join(b'<sheet name="S%d" sheetId="%d" r:id="rId%d"/>' % (n, n, n) for n in range(1, sheets + 1))
    rels = (b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            b'worksheet" Target="worksheets/sheet1.xml"/>')
    members = {
        "[Content_Types].xml": b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/'
                               b'2006/content-types"><Default Extension="xml" ContentType="application/xml"/></Types>',
        "_rels/.rels": b'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
                       b'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
                       b'officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": b'<?xml version="1.0"?><workbook %s xmlns:r="http://schemas.openxmlformats.org/'
                           b'officeDocument/2006/relationships"><sheets>%s</sheets></workbook>' % (_NS, listed),
        "xl/worksheets/sheet1.xml": b'<?xml version="1.0"?><worksheet %s><sheetData>%s</sheetData></worksheet>'
                                    % (_NS, rows),
    }
    if strings is not None:
        rels += (b'<Relationship Id="rId9" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                 b'relationships/sharedStrings" Target="sharedStrings.xml"/>')
        members["xl/sharedStrings.xml"] = b'<?xml version="1.0"?><sst %s>%s</sst>' % (
            _NS, b"".join(b"<si><t>%s</t></si>" % s for s in strings))
    members["xl/_rels/workbook.xml.rels"] = (
        b'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + rels + b"</Relationships>")
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in {**members, **(extra or {})}.items():
            archive.writestr(member, data)
    return path


def _rows(values: range, column: bytes = b"A", cell: bytes = b"<v>%d</v>") -> bytes:
    return b"".join(b'<row r="%d"><c r="%s%d">%s</c></row>' % (n, column, n, cell % n if b"%d" in cell else cell)
                    for n in values)


@pytest.fixture
def no_calamine(monkeypatch):
    """The workbook must be refused before calamine loads anything."""
    def refuse(*args, **kwargs):
        raise AssertionError("calamine was asked to load the workbook")
    monkeypatch.setattr(reader.CalamineWorkbook, "from_path", refuse)


def test_honest_minimal_workbook_is_read(tmp_path):
    parsed = read(_book(tmp_path, _HEADER_ROW + b'<row r="2"><c r="A2"><v>77341</v></c>'
                                               b'<c r="B2" t="s"><v>0</v></c></row>', strings=[b"Quix"]))

    assert parsed.frame.astype(object).values.tolist() == [[2, "77341", "Quix"]]


def test_grid_budget_is_absolute_however_large_the_sheet_xml(tmp_path, no_calamine):
    # Padded with comments to 5 MB of XML, the sheet spans 10,001 rows × 200 columns: 2,000,200
    # cells, over the 2,000,000 allowed whatever the XML's size.
    noise = random.Random(7)  # varied, so that the part is no zip bomb
    padding = b"".join(b"<!--%s-->" % noise.randbytes(500).hex().encode() for _ in range(5_000))
    rows = _HEADER_ROW + b'<row r="2"><c r="GR2"><v>1</v></c></row>' + padding \
        + b'<row r="10001"><c r="A10001"><v>1</v></c></row>'
    exc = rejection(_book(tmp_path, rows), max_columns=200)

    assert exc.code == FILE_TOO_LARGE
    assert exc.details == {"rows": 10001, "columns": 200}


def test_grid_budget_follows_max_rows_between_its_floor_and_its_cap():
    assert reader._grid_budget(dataclasses.replace(LIMITS, max_rows=10)) == reader._GRID_FLOOR_CELLS
    assert reader._grid_budget(dataclasses.replace(LIMITS, max_rows=199_999)) == 200_000 * reader._GRID_COLUMNS
    assert reader._grid_budget(dataclasses.replace(LIMITS, max_rows=10 ** 9)) == reader._GRID_MAX_CELLS


def test_zip_with_too_many_entries_is_refused_before_zipfile_reads_its_directory(tmp_path, monkeypatch):
    path = _book(tmp_path, _HEADER_ROW, extra={f"xl/media/p{n}.bin": b"x" for n in range(60)})
    monkeypatch.setattr(reader, "_MAX_ZIP_ENTRIES", 50)
    monkeypatch.setattr(reader.zipfile, "ZipFile", None)  # any use of it would fail differently

    with pytest.raises(ExportRejected) as info:
        detect_file_type(path, path.read_bytes()[:4096])
    assert info.value.code == FILE_TOO_LARGE
    assert info.value.details == {"entries": 65, "limit": 50}


def test_zip_directory_larger_than_its_budget_is_refused(tmp_path, monkeypatch):
    path = _book(tmp_path, _HEADER_ROW, extra={f"xl/media/{'n' * 200}{n}.bin": b"x" for n in range(20)})
    monkeypatch.setattr(reader, "_MAX_ZIP_DIRECTORY_BYTES", 2_000)

    assert rejection(path).code == FILE_TOO_LARGE


def test_zip_kind_reads_only_the_start_of_a_mimetype_member(tmp_path, monkeypatch):
    path = tmp_path / "sheet.ods"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", b"application/vnd.oasis.opendocument.spreadsheet" + b" " * 1_000_000)
    monkeypatch.setattr(zipfile.ZipFile, "read", None)  # reading a member whole is not allowed

    with pytest.raises(ExportRejected) as info:
        detect_file_type(path, path.read_bytes()[:4096])
    assert info.value.code == UNSUPPORTED_FILE_TYPE
    assert "OpenDocument" in info.value.message


def test_sheet_entry_inflating_beyond_its_declared_size_is_refused(tmp_path, no_calamine):
    # The entry declares 4,000 bytes and the CRC of its first 4,000: zipfile reads that much and is
    # satisfied; calamine would inflate the whole stream, far cell included.
    rows = _HEADER_ROW + b" " * 50_000 + b'<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>'
    path = _book(tmp_path, rows)
    target = "xl/worksheets/sheet1.xml"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(target)
        head = archive.read(target)[:4_000]
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, info.header_offset + 14, zlib.crc32(head))
    struct.pack_into("<I", raw, info.header_offset + 22, 4_000)
    at = raw.find(b"PK\x01\x02")
    while at != -1:  # the central directory's copy
        length = struct.unpack_from("<H", raw, at + 28)[0]
        if bytes(raw[at + 46:at + 46 + length]) == target.encode():
            struct.pack_into("<I", raw, at + 16, zlib.crc32(head))
            struct.pack_into("<I", raw, at + 24, 4_000)
        at = raw.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as archive:
        assert len(archive.read(target)) == 4_000  # what zipfile alone would have checked

    exc = rejection(path)

    assert exc.code == UNREADABLE_FILE
    assert "declares" in exc.message


def test_comment_longer_than_an_xml_piece_is_refused(tmp_path, monkeypatch, no_calamine):
    monkeypatch.setattr(reader, "_MAX_XML_PIECE_BYTES", 64 * 1024)
    monkeypatch.setattr(reader, "_CHUNK_BYTES", 16 * 1024)
    rows = _HEADER_ROW + b"<!-- " + b"<p> " * 50_000 + b"-->" + b'<row r="2"><c r="A2"><v>1</v></c></row>'

    exc = rejection(_book(tmp_path, rows))

    assert exc.code == FILE_TOO_LARGE
    assert "comment" in exc.message


def test_huge_single_cell_is_refused_before_calamine_holds_it(tmp_path, monkeypatch, no_calamine):
    monkeypatch.setattr(reader, "_MAX_XML_PIECE_BYTES", 64 * 1024)
    monkeypatch.setattr(reader, "_CHUNK_BYTES", 16 * 1024)
    rows = _HEADER_ROW + b'<row r="2"><c r="A2" t="inlineStr"><is><t>' + b"v" * 200_000 + b"</t></is></c></row>"

    assert rejection(_book(tmp_path, rows)).code == FIELD_TOO_LONG


def test_shared_string_repeated_into_more_text_than_a_file_may_hold_is_refused(tmp_path, no_calamine):
    # 3,000 cells × a 10-character string = 30,000 bytes of text from a file of a few KB: a CSV of
    # that much would be refused.
    rows = _HEADER_ROW + _rows(range(2, 3002), cell=b"<v>0</v>").replace(b"<c ", b'<c t="s" ')
    path = _book(tmp_path, rows, strings=[b"Quixotical"])
    assert path.stat().st_size < 20_000

    exc = rejection(path, max_file_bytes=20_000, max_rows=10_000)

    assert exc.code == FILE_TOO_LARGE
    assert 30_000 <= exc.details["bytes"] < 30_100  # the header's own text on top


def test_shared_strings_repeated_within_the_limit_are_read(tmp_path):
    rows = _HEADER_ROW + b"".join(b'<row r="%d"><c r="A%d"><v>%d</v></c><c r="B%d" t="s"><v>0</v></c></row>'
                                  % (n, n, n, n) for n in range(2, 102))

    parsed = read(_book(tmp_path, rows, strings=[b"Quixo"]), max_file_bytes=1_000_000)

    assert parsed.frame["last_name"].tolist() == ["Quixo"] * 100


def test_more_shared_strings_than_the_grid_budget_are_refused(tmp_path, monkeypatch, no_calamine):
    monkeypatch.setattr(reader, "_GRID_FLOOR_CELLS", 100)
    monkeypatch.setattr(reader, "_GRID_MAX_CELLS", 100)
    strings = [b"%d" % n for n in range(150)]

    exc = rejection(_book(tmp_path, _HEADER_ROW, strings=strings))

    assert exc.code == FILE_TOO_LARGE
    assert "distinct values" in exc.message


def test_memory_estimate_over_the_budget_is_refused(tmp_path, monkeypatch, no_calamine):
    monkeypatch.setattr(reader, "_XLSX_MEMORY_BYTES", 10_000)
    rows = _HEADER_ROW + _rows(range(2, 502))  # 500 rows × 26 columns assumed: 416,000 bytes

    exc = rejection(_book(tmp_path, rows))

    assert exc.code == FILE_TOO_LARGE
    assert "memory" in exc.message


def test_workbook_listing_very_many_sheets_is_refused(tmp_path, monkeypatch, no_calamine):
    monkeypatch.setattr(reader, "_MAX_SMALL_PART_BYTES", 10_000)

    exc = rejection(_book(tmp_path, _HEADER_ROW + b'<row r="2"><c r="A2"><v>1</v></c></row>', sheets=1_000))

    assert exc.code == FILE_TOO_LARGE
    assert "list of sheets" in exc.message


def test_styles_part_beyond_its_budget_is_refused(tmp_path, monkeypatch, no_calamine):
    monkeypatch.setattr(reader, "_MAX_SMALL_PART_BYTES", 10_000)
    styles = b'<styleSheet %s><cellXfs>%s</cellXfs></styleSheet>' % (_NS, b"<xf/>" * 5_000)

    exc = rejection(_book(tmp_path, _HEADER_ROW, extra={"xl/styles.xml": styles}))

    assert exc.code == FILE_TOO_LARGE


def test_cells_without_references_count_towards_the_grid(tmp_path, monkeypatch, no_calamine):
    # SpreadsheetML may leave out `r`: calamine places each cell after the one before. 5 rows of
    # 30,000 cells is a 150,000-cell grid, over a budget of 100,000.
    monkeypatch.setattr(reader, "_GRID_FLOOR_CELLS", 100_000)
    monkeypatch.setattr(reader, "_GRID_MAX_CELLS", 100_000)
    monkeypatch.setattr(reader, "_CHUNK_BYTES", 16 * 1024)  # rows span many reads
    noise = random.Random(3)
    wide = b"".join(b"<row>" + b"".join(b"<c><v>%d</v></c>" % noise.randrange(10 ** 6) for _ in range(30_000))
                    + b"</row>" for _ in range(5))

    exc = rejection(_book(tmp_path, _HEADER_ROW + wide), max_columns=100_000)

    assert exc.code == FILE_TOO_LARGE
    assert exc.details["columns"] >= 30_000


def test_honest_rows_without_references_are_read(tmp_path):
    rows = (b"<row><c t=\"inlineStr\"><is><t>Account #</t></is></c>"
            b"<c t=\"inlineStr\"><is><t>Last Name</t></is></c></row>")
    rows += b"".join(b"<row><c><v>%d</v></c><c t=\"inlineStr\"><is><t>Quix</t></is></c></row>" % n for n in range(5))

    parsed = read(_book(tmp_path, rows))

    assert parsed.frame.astype(object).values.tolist() == [[n + 2, str(n), "Quix"] for n in range(5)]
