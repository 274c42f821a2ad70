"""Read a dropped patient export (CSV, tab-separated text or .xlsx) into one table of strings (SPEC §2).

Every file-level problem raises `ExportRejected`; messages name headers, row numbers, sizes and
limits, never a cell value.

Decisions:

- **Type by content, not by name.** PDF, legacy `.xls` (OLE2, which is also what a
  password-protected `.xlsx` is), images, archives, Office documents other than a workbook,
  HTML/XML/RTF and binary data (NUL bytes, unless UTF-16 with BOM) are `unsupported_file_type`,
  with a message saying what the file looks like. A text file named `.xlsx` is read as text and
  a workbook named `.csv` as a workbook: content wins. A damaged zip or workbook is
  `unreadable_file`.
- **Encoding**: UTF-16 byte-order mark → UTF-16; UTF-8 BOM → UTF-8 (a non-UTF-8 byte after it
  is `unreadable_file`); plain ASCII → UTF-8; otherwise chosen among UTF-8, Windows-1252, Mac
  Roman and DOS 437/850 by plausible text in the name and address fields
  (:mod:`include.patient_import.encoding`, which says why charset_normalizer is not the judge).
- **Delimiter**: the most frequent of tab, comma and semicolon outside quotes on the header line
  (ties: tab, then comma; none at all: comma); a first line `sep=;` (Excel's hint) sets it and
  is not the header. `file_type` is "tsv" for tab, else "csv". Quoting is RFC 4180, parsed strictly by the csv
  module: a quote never closed, or text after a closing quote, is `unreadable_file` at the row
  where the record starts; so is a value over `max_field_length` that runs over several lines
  (a swallowed quote far more often than a note). A tab-separated file whose quoting breaks is a
  copied page, which has no quoting rules (SPEC §2): it is read again one record a line, a quote
  kept as text unless it wraps a whole field. Other long values are `field_too_long`; the
  ignored "Import Problem" and "Original Row" columns are not checked.
- **Columns**: the first non-blank row is the header. Only columns with a header or a value
  count against `max_columns` (SPEC §2: Excel writes every row as wide as the sheet's used
  range, empty columns included). A row with more values than the header has cells is `unreadable_file`
  (usually an unquoted comma); extra empty cells are fine, missing ones are "". A column without
  a header is dropped when it holds no value (Excel's trailing empty columns), otherwise kept as
  an unknown column "(column N)", N being the spreadsheet's column number.
- **Rows**: `row_number` is the physical line the record starts on (blank lines and lines inside
  quoted values count), or the sheet's row for .xlsx. Rows whose cells are all blank are skipped
  and not counted. Values are kept as written (no trimming): normalising is a later step.
- **Fast path** (issue #14): a text export is first offered to pyarrow.csv, which splits it into
  columns in C; the row numbers come from the bytes (line breaks found with numpy; only the lines
  where a quote opens a field go through the csv module, to learn where their records end, and
  Arrow's values for those records must equal csv's; rows of another width are skipped by Arrow
  and taken as csv reads them, through `_fit`). It is taken only when it gives exactly what the
  general path below gives: every limit kept, no value too long, no quoting error, not UTF-16
  (other code pages are converted to UTF-8 first). It is also left, before the costly part, where
  the general path is faster or lighter: quotes opening fields on more than 1,000 lines and a
  32nd of them, as many rows of another width, a header wider than `max_columns` (Excel's empty
  columns), over 40 million cells, or under 2 bytes a cell (rows of delimiters). Otherwise - or when
  Arrow raises - the file is read by the general path, which rejects or reads it as it always
  did: the fast path never rejects a file. `tests/patient_import/test_reader_fast_path.py`
  checks that both give the same result; `python -m bench.reader` times them.
- **xlsx**: first sheet only, read with python_calamine after a zipfile check of the declared
  uncompressed sizes (total and per-member ratio) against zip bombs and the memory checks
  below. Numbers that are whole lose ".0"; other numbers keep Excel's 15 significant digits;
  dates and datetimes become YYYY-MM-DD; booleans TRUE/FALSE; error cells and empty cells "".
  calamine's `iter_rows()` starts at the sheet's first row even when the first rows are empty,
  but at the first used column; both offsets are derived from the sheet, not assumed.
- **Memory is bounded** (SPEC §7: no input within the limits makes a task need more than 2 GB;
  `scripts/hostile_memory.py` measures each stage):
  - *Before the header*: blank lines are counted, not kept, while the header is searched for; more
    than `max_lines_before_header` (1,000) blank lines or sheet rows is `unreadable_file`.
  - *A record* is read line by line with `readline(limit)`, never whole: one record (all its
    lines) over `max_columns × (2 × max_field_length + 3) + 16,384` characters (every counted
    column at the longest value, quoted with doubled quotes, plus the empty columns Excel writes
    up to XFD) is refused at the row it starts on, after reading that much: `too_many_columns`
    when its last line is mostly delimiters, `unreadable_file` when it runs over several lines (a
    quote never closed) or is blank, else `field_too_long`. UTF-16 the same (counted in characters).
  - *.xlsx*: calamine loads the first sheet's used range as a dense grid (about 32 bytes a cell,
    empty or not) and copies a shared string into every cell that uses it. Before it is asked,
    the zip's entry count and directory size are read from its end record (over 10,000 entries
    or 8 MB: `file_too_large`, before zipfile builds an object per entry); the parts calamine
    reads are inflated here, 1 MB at a time and checked against the sizes their entries declare
    (a lying entry is `unreadable_file`); no piece of XML (tag, value, comment) may stay open
    over 1 MB (`field_too_long` for a value, else `file_too_large`); the list of sheets and the
    styles over 16 MB are `file_too_large`. The used range must fit an **absolute** cell budget,
    `(max_rows + 1) × 20` cells but at least 2 million and at most 20 million (640 MB of grid),
    whatever the size of the XML (`too_many_columns` when a cell lies beyond `max_columns`, else
    `file_too_large`; rows and cells written without a reference count by position, as calamine
    places them); the shared strings may not outnumber it; the text the cells hold, shared
    strings counted as often as they are used, may not exceed `max_file_bytes` (the list as a CSV
    would be refused: `file_too_large`); and grid, shared strings and text together must fit 1 GB.
    Cheap bounds decide an honest sheet; the exact count of used text is a second pass, only when
    they do not.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import functools
import io
import mmap
import re
import struct
import zipfile
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from itertools import chain
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
from python_calamine import CalamineError, CalamineWorkbook

from include.patient_import import catalogue
from include.patient_import.encoding import choose_encoding
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
    Problem,
)
from include.patient_import.schema import DEFAULT_HEADERS, IGNORED_HEADER_KEYS, ROW_NUMBER, HeaderMap, header_key
from include.patient_import.settings import Limits
from include.patient_import.untrusted import printable

_HEAD_BYTES = 64 * 1024
_CHUNK_BYTES = 1024 * 1024
_BATCH_ROWS = 50_000

# Leading bytes of formats people drop by mistake, and what to call them.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
     "a legacy Excel .xls workbook (or another Office 97-2003 or password-protected document)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"{\\rtf", "a Rich Text (RTF) document"),
)
_MARKUP: tuple[tuple[bytes, str], ...] = (
    (b"<!doctype html", "a web page (HTML)"),
    (b"<html", "a web page (HTML)"),
    (b"<table", "a web page (HTML)"),
    (b"<?xml", "an XML document (perhaps an Excel 2003 XML spreadsheet)"),
)
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


_DELIMITERS = ("\t", ",", ";")  # order breaks ties
_SEP_LINE = re.compile(r'^"?sep=([\t,;])"?\s*$', re.IGNORECASE)
_NOT_CONTENT = " \t\r\n,;\"\ufeff"

# Longest unknown-column header shown in a problem, escaped (a header is bounded by the field length).
_MAX_SHOWN_HEADER = 20_000

# A zip member inflating more than this many times its compressed size is a bomb, not a sheet;
# sheets of repetitive XML stay well under it. Members smaller than the floor cannot hurt.
_MAX_COMPRESSION_RATIO = 200
_RATIO_FLOOR_BYTES = 1024 * 1024


@dataclass
class ParsedExport:
    """One export as read: every value a string (pandas' str dtype), before any normalisation."""

    frame: pd.DataFrame = dataclasses.field(repr=False)  # patient values: never in a repr or a log
    headers: list[str]
    columns: list[str]
    problems: list[Problem]
    file_type: str
    encoding: str | None
    delimiter: str | None
    sheet_names: list[str] = dataclasses.field(default_factory=list)  # an .xlsx's sheets, in order


def read_export(path: Path, limits: Limits | None = None, header_map: HeaderMap = DEFAULT_HEADERS) -> ParsedExport:
    """Read an export into a table of strings with the spreadsheet's row numbers.

    Args:
        path: the dropped file.
        limits: size limits; `Limits.from_env()` when omitted.
        header_map: how headers map to fields: the practice's (`Practice.header_map`, with its
            `column_aliases`), or the schema's alone.

    Returns:
        The table: `row_number` first, then one column per kept header, named by field
        (unknown columns `__extra_<column number>`), with `unknown_column` warnings (which
        suggest the closest known header when one is close, SPEC §8).

    Raises:
        ExportRejected: for every file-level problem (type, encoding, quoting, limits, headers).
    """
    return _read_export(path, limits, header_map)


def _read_export(path: Path, limits: Limits | None = None, header_map: HeaderMap = DEFAULT_HEADERS, *,
                 fast: bool = True) -> ParsedExport:
    """`read_export`; `fast=False` never tries the columnar path (the tests compare the two)."""
    limits = limits or Limits.from_env()
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise ExportRejected(
            FILE_TOO_LARGE,
            catalogue.message(FILE_TOO_LARGE, "read", size_mb=_mb(size), limit_mb=_mb(limits.max_file_bytes)),
            details={"bytes": size, "limit": limits.max_file_bytes},
        )
    if size == 0:
        raise ExportRejected(EMPTY_FILE, catalogue.message(EMPTY_FILE, "zero_bytes"))
    with path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
    if detect_file_type(path, head) == "xlsx":
        return _read_xlsx(path, limits, header_map)
    return _read_text(path, head, limits, header_map, fast)


def detect_file_type(path: Path, head: bytes) -> str:
    """The file's type by content: "xlsx", "csv" or "tsv" (from its first bytes and a zip's members).

    Raises:
        ExportRejected: `unsupported_file_type` for anything else, `unreadable_file` for a
            damaged zip.
    """
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            _refuse(what)
    if head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":
        _refuse("a BMP image")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        _refuse("a WEBP image")
    if head.startswith(_ZIP_SIGNATURES):
        return _zip_kind(Path(path))
    start = head.removeprefix(codecs.BOM_UTF8).lstrip()[:32].lower()
    for signature, what in _MARKUP:
        if start.startswith(signature):
            _refuse(what)
    if head.startswith(_UTF16_BOMS):
        text = head[: len(head) // 2 * 2].decode("utf-16", errors="replace")
    elif b"\x00" in head:
        _refuse("binary data (it holds NUL bytes)")
    else:
        text = head.decode("utf-8", errors="replace")
    delimiter, *_ = _find_delimiter(io.StringIO(text, newline=""))
    return "tsv" if delimiter == "\t" else "csv"


def _head_of(archive: zipfile.ZipFile, member: str) -> bytes:
    with archive.open(member) as stream:
        return stream.read(100)  # never the whole member: it may be a bomb


def _refuse(what: str, case: str = "looks_like", **values: object) -> NoReturn:
    raise ExportRejected(UNSUPPORTED_FILE_TYPE, catalogue.message(UNSUPPORTED_FILE_TYPE, case, what=what, **values))


def _zip_kind(path: Path) -> str:
    named_xlsx = path.suffix.lower() in (".xlsx", ".xlsm")
    _check_zip_directory(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "xl/workbook.xml" in names:
                return "xlsx"
            if "xl/workbook.bin" in names:
                what = "an Excel binary workbook (.xlsb)"
            elif "word/document.xml" in names:
                what = "a Word document"
            elif "ppt/presentation.xml" in names:
                what = "a PowerPoint presentation"
            elif "mimetype" in names and b"spreadsheet" in _head_of(archive, "mimetype"):
                what = "an OpenDocument spreadsheet (.ods)"
            else:
                what = "a zip archive without an Excel workbook in it"
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, RuntimeError):
        case = "damaged_xlsx" if named_xlsx else "damaged_zip"
        raise ExportRejected(UNREADABLE_FILE, catalogue.message(UNREADABLE_FILE, case)) from None
    _refuse(what, "named_xlsx" if named_xlsx else "looks_like")


# --- text ----------------------------------------------------------------------------------


def _read_text(path: Path, head: bytes, limits: Limits, header_map: HeaderMap, fast: bool = True) -> ParsedExport:
    encoding = _text_encoding(path, head, header_map)
    try:
        try:
            read = _columnar_text(path, encoding, limits, header_map) if fast else None
            if read is not None:
                delimiter, parsed = read
            else:
                delimiter, parsed = _parse_text(path, encoding, limits, _csv_records, header_map)
        except _QuotingBroken as broken:
            if broken.delimiter != "\t":
                raise
            # A page copy has no quoting rules (SPEC §2): `"Chip" Charles` is a name, not an error.
            delimiter, parsed = _parse_text(path, encoding, limits, _page_records, header_map)
        _check_used_columns(parsed, limits)
    except UnicodeDecodeError:
        # The bytes were checked above; only a file changed while being read gets here.
        raise ExportRejected(UNREADABLE_FILE,
                             catalogue.message(UNREADABLE_FILE, "not_valid_text", encoding=encoding)) from None
    return _export(parsed, "tsv" if delimiter == "\t" else "csv", encoding, delimiter, header_map)


class _QuotingBroken(ExportRejected):
    """RFC 4180 quoting does not hold; a tab-separated page copy is then read without it."""

    def __init__(self, message: str, *, row: int, field: str | None = None) -> None:
        super().__init__(UNREADABLE_FILE, message, row=row, field=field)
        self.delimiter: str | None = None  # set where the delimiter is known


def _parse_text(path: Path, encoding: str, limits: Limits, read_records,
                header_map: HeaderMap = DEFAULT_HEADERS) -> tuple[str, _Parsed]:
    """One pass over a text export with `read_records` (`_csv_records` or `_page_records`), every
    record bounded by `_max_record_chars` while it is read (SPEC §7)."""
    with path.open("r", encoding=encoding, newline="") as f:
        delimiter, _, records = _text_records(f, limits, read_records)
        try:
            return delimiter, _collect(records, limits, first_column=1, header_map=header_map)
        except _QuotingBroken as broken:
            broken.delimiter = delimiter
            raise


def _text_records(f: io.TextIOBase, limits: Limits,
                  read_records) -> tuple[str, int, Iterator[tuple[int, list[str]]]]:
    """The delimiter, the blank lines dropped before the first line given to `read_records`, and
    its records, every one bounded by `_max_record_chars` while it is read (SPEC §7)."""
    budget = _RecordBudget(_max_record_chars(limits))
    lines = _bounded_lines(f, budget)
    try:
        delimiter, leading, dropped = _find_delimiter(lines, limits.max_lines_before_header, budget)
    except _Overlong as exc:
        raise _overlong_record(exc.text, budget.line - budget.lines + 1, budget.lines > 0,
                               None, limits) from None
    records = read_records(chain(leading, lines), delimiter, first_line=dropped + 1,
                           budget=budget, limits=limits)
    return delimiter, dropped, records


def _page_records(lines: Iterable[str], delimiter: str, first_line: int = 1,
                  budget: _RecordBudget | None = None,
                  limits: Limits | None = None) -> Iterator[tuple[int, list[str]]]:
    """A copied page's records: one a line, split on the delimiter; a quote is text unless it
    wraps a whole field (as Excel's "Text (Tab delimited)" writes it)."""
    number = first_line - 1
    try:
        for number, line in enumerate(lines, start=first_line):
            if budget is not None:
                budget.new_record()
            yield number, [_unwrap(cell) for cell in line.rstrip("\r\n").split(delimiter)]
    except _Overlong as exc:
        raise _overlong_record(exc.text, number + 1, False, delimiter, limits) from None


def _unwrap(cell: str) -> str:
    inner = cell[1:-1]
    if len(cell) >= 2 and cell[0] == cell[-1] == '"' and '"' not in inner.replace('""', ""):
        return inner.replace('""', '"')
    return cell


def _text_encoding(path: Path, head: bytes, header_map: HeaderMap = DEFAULT_HEADERS) -> str:
    if head.startswith(_UTF16_BOMS):
        _check_utf16(path)
        return "utf-16"
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        nul = data.find(b"\x00")
        if nul != -1:
            _refuse("binary data", "nul_line", line=_line_at(data, nul))
        if head.startswith(codecs.BOM_UTF8):
            invalid = _first_invalid_utf8(data)
            if invalid is not None:
                line = _line_at(data, invalid)
                raise ExportRejected(UNREADABLE_FILE, catalogue.message(UNREADABLE_FILE, "mixed_utf8", line=line),
                                     row=line)
            return "utf-8-sig"
        # Latin-1 reads the header's delimiter the same in every candidate encoding.
        delimiter, *_ = _find_delimiter(io.StringIO(head.decode("latin-1"), newline=""))
        return choose_encoding(path, data, delimiter, header_map)


def _first_invalid_utf8(data: mmap.mmap) -> int | None:
    """Offset of the first byte that is not UTF-8, or None; reads in chunks to bound memory."""
    carry = b""
    size = len(data)
    for start in range(0, size, _CHUNK_BYTES):
        buf = carry + data[start:start + _CHUNK_BYTES]
        try:
            _, consumed = codecs.utf_8_decode(buf, "strict", start + _CHUNK_BYTES >= size)
        except UnicodeDecodeError as exc:
            return start - len(carry) + exc.start
        carry = buf[consumed:]
    return None


def _check_utf16(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-16")("strict")
    with path.open("rb") as f:
        try:
            while chunk := f.read(_CHUNK_BYTES):
                if "\x00" in decoder.decode(chunk):
                    _refuse("binary data (it holds NUL characters)")
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ExportRejected(UNREADABLE_FILE, catalogue.message(UNREADABLE_FILE, "bad_utf16")) from None


def _line_at(data: mmap.mmap, offset: int) -> int:
    before = data[:offset]
    # Line breaks as Python's universal newlines count them: \r\n, \r and \n.
    return before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1


# The longest record a file within the limits can hold: every counted column at the longest
# value, quoted with every character a doubled quote, plus the empty columns Excel writes up to
# its last column (XFD = 16,384) when its used range is wider than the data.
_EXCEL_COLUMNS = 16_384


def _max_record_chars(limits: Limits) -> int:
    return limits.max_columns * (2 * limits.max_field_length + 3) + _EXCEL_COLUMNS


class _RecordBudget:
    """Characters and lines of the record being read, shared by `_bounded_lines` and its reader."""

    __slots__ = ("chars", "limit", "line", "lines")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chars = 0   # of the record being read
        self.lines = 0   # lines of the record being read, already handed over
        self.line = 0    # physical lines handed over in all

    def new_record(self) -> None:
        self.chars = self.lines = 0


class _Overlong(Exception):
    """A record outgrew its budget; `text` is its last line, cut at the budget (a few hundred KB)."""

    def __init__(self, text: str) -> None:
        super().__init__("record over its budget")
        self.text = text


def _bounded_lines(f: io.TextIOBase, budget: _RecordBudget) -> Iterator[str]:
    """The file's lines, no record longer than the budget: one row of 200 MB of delimiters, or an
    unclosed quote swallowing the file, is refused after reading a few hundred KB of it, where
    iterating the file (or the csv module's 128 KB field limit) would hold it whole first."""
    readline = f.readline
    while True:
        room = budget.limit - budget.chars
        line = readline(room)
        if len(line) >= room:
            raise _Overlong(line)
        if not line:
            return
        budget.chars += len(line)
        budget.lines += 1
        budget.line += 1
        yield line


def _overlong_record(text: str, row: int, several_lines: bool, delimiter: str | None,
                     limits: Limits | None) -> ExportRejected:
    """The rejection for a record over `_max_record_chars`, from what its last line looks like."""
    limits = limits or Limits.from_env()
    longest = _max_record_chars(limits)
    cells = max((text.split(d) for d in ((delimiter,) if delimiter else _DELIMITERS)), key=len)
    valued = sum(1 for cell in cells if cell.strip(' "\r\n'))
    if len(cells) > limits.max_columns + _EXCEL_COLUMNS or valued > limits.max_columns:
        return ExportRejected(
            TOO_MANY_COLUMNS,
            catalogue.message(TOO_MANY_COLUMNS, "record", row=row, columns=len(cells) - 1, longest=longest,
                              limit=limits.max_columns),
            row=row, details={"columns": len(cells), "limit": limits.max_columns},
        )
    if several_lines:
        return ExportRejected(
            UNREADABLE_FILE, catalogue.message(UNREADABLE_FILE, "unclosed_quote", row=row, longest=longest), row=row,
        )
    if not text.strip():
        return ExportRejected(
            UNREADABLE_FILE, catalogue.message(UNREADABLE_FILE, "blank_line", row=row, longest=longest), row=row,
        )
    return ExportRejected(
        FIELD_TOO_LONG,
        catalogue.message(FIELD_TOO_LONG, "record", row=row, longest=longest, limit=limits.max_field_length),
        row=row,
    )


def _find_delimiter(lines: Iterator[str], max_lines: int | None = None,
                    budget: _RecordBudget | None = None) -> tuple[str, list[str], int]:
    """The delimiter, the lines read to find it (to be parsed again) and how many blank lines
    before those were dropped (they count for row numbers only).

    Streaming: a blank line without quotes is counted, not kept (dropping it cannot change how
    the csv module reads what follows; a line with an odd number of quotes could, so from there
    on lines are kept). The search stops after `max_lines` lines; `_collect` then refuses the file.
    """
    read: list[str] = []
    dropped = 0
    for number, line in enumerate(lines, start=1):
        if number == 1 and (hint := _SEP_LINE.match(line)):
            # Excel's "sep=;" hint: not the header, but still line 1.
            return hint.group(1), ["\n"], 0
        if line.strip(_NOT_CONTENT):
            read.append(line)
            return _sniff_delimiter(line[:_HEAD_BYTES]), read, dropped
        if not read and line.count('"') % 2 == 0:
            dropped += 1
            if budget is not None:
                budget.new_record()
        else:
            read.append(line)
        if max_lines is not None and number > max_lines:
            break
    return ",", read, dropped


def _sniff_delimiter(line: str) -> str:
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    if not any(counts.values()):
        return ","  # a one-column file
    return max(_DELIMITERS, key=counts.__getitem__)


def _csv_records(lines: Iterable[str], delimiter: str, first_line: int = 1,
                 budget: _RecordBudget | None = None,
                 limits: Limits | None = None) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, cells) for every record, blank lines included.

    `lines` start on line `first_line`; with a `budget` (lines from `_bounded_lines`), a record
    outgrowing it is refused by `_overlong_record`.
    """
    reader = csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)
    start = first_line
    try:
        for cells in reader:
            if budget is not None:
                budget.new_record()
            yield start, cells
            start = first_line + reader.line_num
    except _Overlong as exc:
        assert budget is not None  # only `_bounded_lines`, reading under a budget, raises _Overlong
        raise _overlong_record(exc.text, start, budget.lines > 0, delimiter, limits) from None
    except csv.Error as exc:
        if "field larger than field limit" in str(exc) and reader.line_num <= start:
            # One value over csv's own limit (128 KB) on one line: long, not badly quoted.
            raise ExportRejected(
                FIELD_TOO_LONG,
                catalogue.message(FIELD_TOO_LONG, "csv_limit", row=start, limit=csv.field_size_limit()),
                row=start,
            ) from None
        # csv's messages name only quote and delimiter characters, never the data.
        raise _QuotingBroken(catalogue.message(UNREADABLE_FILE, "quoting", row=start, error=exc), row=start) from None


# --- text, columnar ------------------------------------------------------------------------
#
# The fast path for text exports (issue #14). pyarrow.csv splits the data rows into columns in C;
# what Arrow cannot say - the line each record starts on - comes from the bytes: line breaks are
# found with numpy, and only the lines where a quote opens a field (where a record may run over
# several lines) go through the csv module, the general path's own parser, so the spans and the
# strictness of every quoted record are csv's, and Arrow's values for those records are checked
# against csv's cells. Whatever this path cannot show to be what `_collect` would give - a limit reached,
# a row `_fit` refuses, a long value, a quoting error, an Arrow error - returns None and the general path
# reads the file and gives its own result or rejection: this path never rejects a file itself.

# Python's whitespace (str.isspace, str.strip) as an RE2 class: a row whose cells hold only these
# is blank (`_collect`); a headerless column holding only these holds no value (`_Parsed`).
_PY_SPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
             + "\u2028\u2029\u202f\u205f\u3000")
_BLANK_PATTERN = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_SPACE) + "]*$"
_SCAN_BYTES = 16 * 1024 * 1024  # bytes compared at a time: bounds the scan's temporary arrays
# The fast path pays in Python for every line csv must read (a quote opens a field there) and
# for every record of another width (Arrow calls back for each, `_fit` pads it): a few cost
# nothing, but a file that quotes every value, or writes every row short, would be read several
# times slower than the general path reads it. Past this many (or this share of the lines) the
# general path reads the file, at once.
_FEW_SLOW_LINES = 1_000
_SLOW_LINE_SHARE = 32
# Arrow holds every cell of the table, blank rows and Excel's empty headerless columns included
# (about 25 bytes a cell at its peak), which `_collect` never keeps: past this many cells the
# general path reads the file, within SPEC §7's memory bound.
_MAX_ARROW_CELLS = 40_000_000
# Arrow's cost goes with the cells, csv's with the bytes: a table of mostly empty cells (Excel's
# rows of delimiters below the data, 200 columns of them) is read faster, and in a quarter of the
# memory, by the general path, which drops a blank row as one string test.
_MIN_BYTES_PER_CELL = 2


def _few_slow_lines(slow: int, lines: int) -> bool:
    """Whether `slow` lines of `lines` that go through Python keep the fast path fast."""
    return slow <= max(_FEW_SLOW_LINES, lines // _SLOW_LINE_SHARE)


def _columnar_text(path: Path, encoding: str, limits: Limits,
                   header_map: HeaderMap = DEFAULT_HEADERS) -> tuple[str, _Parsed] | None:
    """The text export as `_parse_text(..., _csv_records)` reads it, or None when this path
    cannot show that cheaply (the caller then reads it that way)."""
    if encoding == "utf-16":
        return None
    try:
        with path.open("r", encoding=encoding, newline="") as f:
            sep_hint = _SEP_LINE.match(f.readline(256)) is not None
            f.seek(0)
            # The general path's own first steps: delimiter, blank lines before, the header.
            delimiter, dropped, records = _text_records(f, limits, _csv_records)
            header_row, header = _find_header(records, limits)
        parsed = _read_header(header, header_row, limits, 1, header_map)
        data, carriage_returns = _utf8_bytes(path, encoding, _max_lines(limits))
        # csv reads from the first line `_find_delimiter` kept; a "sep=" line stands as a blank line 1.
        lines = _TextLines(data, delimiter, dropped + sep_hint, _max_lines(limits), carriage_returns,
                           _max_record_chars(limits))
    except (ExportRejected, UnicodeError, csv.Error, _NotColumnar):
        return None
    after = lines.end_of(header_row - 1)
    read = None if after is None else _arrow_table(data, lines, after, delimiter, len(parsed.labels), limits)
    del data  # Arrow holds its own copy of every value: the text need not wait for the rest
    if after is None or read is None or not _arrow_rows(*read, lines, after, parsed, limits):
        return None
    return delimiter, parsed


def _max_lines(limits: Limits) -> int:
    # More lines than this may hold more than `max_rows` records, or is mostly blank lines or
    # values over several lines: the general path reads it, and stops at the limit.
    return limits.max_rows + limits.max_lines_before_header + max(1024, limits.max_rows // 8)


class _NotColumnar(Exception):
    """Seen while scanning: the file is for the general path (too many lines, a line too long)."""


def _utf8_bytes(path: Path, encoding: str, max_lines: int) -> tuple[bytearray, int]:
    """The file's text as UTF-8 without a byte-order mark, read 1 MB at a time, and how many
    carriage returns it holds.

    Raises:
        UnicodeError: not text in `encoding`.
        _NotColumnar: more than `max_lines` line breaks: stops there, so that a file far over
            `max_rows` is never held whole (the general path stops reading it at the limit).
    """
    # The single-byte code pages of `encoding.CANDIDATES` are converted: bytes 0x0A and 0x0D stay
    # the only line breaks, so the lines are those of the file.
    lf = cr = 0

    def count(chunk: bytes) -> None:
        nonlocal lf, cr
        lf, cr = lf + chunk.count(b"\n"), cr + chunk.count(b"\r")
        if max(lf, cr) > max_lines:  # a line break is an \n, an \r, or both
            raise _NotColumnar

    with path.open("rb") as f:
        if encoding == "utf-8-sig" and f.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            f.seek(0)
        decode = None if encoding in ("utf-8", "utf-8-sig") else \
            codecs.getincrementaldecoder(encoding)("strict").decode
        out = bytearray()  # grown, not made the file's size at once: a file may be given up early
        while chunk := f.read(_CHUNK_BYTES):
            if decode is not None:
                chunk = decode(chunk).encode()
            count(chunk)
            out += chunk
        if decode is not None:
            out += decode(b"", True).encode()  # a single-byte code page leaves nothing pending
    return out, cr


class _TextLines:
    """The physical lines of UTF-8 text as Python's universal newlines split them (\\r\\n, \\r, \\n),
    and the records csv finds on them from line `first` on (`carriage_returns`: how many \\r the
    text holds, counted while it was read).

    Attributes (line numbers 0-based):
        starts: int64 array, the byte offset of every line, then the text's length.
        content_end: int64 array, the byte offset where each line's line break begins.
        record: bool array, whether a record starts on the line: not empty, not inside a record
            begun above, not before `first`.
        quoted: {line: (lines spanned, cells)} for every record starting on a line with a quote
            that opens a field.

    Raises:
        csv.Error: csv's strict quoting does not hold there (the general path says where).
        UnicodeDecodeError: a line with a quote is not UTF-8.
        _NotColumnar: more than `max_lines` line breaks, or a line of `max_record` bytes or more.
    """

    def __init__(self, data: bytes | bytearray, delimiter: str, first: int, max_lines: int,
                 carriage_returns: int, max_record: int) -> None:
        a = np.frombuffer(data, dtype=np.uint8)
        n = len(a)
        lf_parts, quote_parts = [], []
        found = 0
        for start in range(0, n, _SCAN_BYTES):
            chunk = a[start:start + _SCAN_BYTES]
            lf_parts.append(np.flatnonzero(chunk == 0x0A) + start)
            found += len(lf_parts[-1])
            if found > max_lines:
                raise _NotColumnar
            quote_parts.append(np.flatnonzero(chunk == 0x22) + start)
        ends_parts = lf_parts
        lf = np.concatenate(lf_parts) if lf_parts else np.zeros(0, dtype=np.int64)
        # \r is a line break of its own unless \n follows: look for those only when there are some.
        if carriage_returns != np.count_nonzero(a[lf[lf > 0] - 1] == 0x0D):
            ends_parts = []
            for part, start in zip(lf_parts, range(0, n, _SCAN_BYTES)):
                cr = np.flatnonzero(a[start:start + _SCAN_BYTES] == 0x0D) + start
                lone_cr = cr[a[np.minimum(cr + 1, n - 1)] != 0x0A]  # \r last in the text: a break
                found += len(lone_cr)
                if found > max_lines:
                    raise _NotColumnar
                ends_parts.append(np.sort(np.concatenate([part, lone_cr])))
        ends = np.concatenate(ends_parts) if ends_parts else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], ends + 1]).astype(np.int64)
        if starts[-1] < n:  # a last line without a line break
            starts = np.append(starts, n)
        self.starts = starts
        count = len(starts) - 1
        if count > first and int(np.diff(starts[first:]).max()) >= max_record:
            raise _NotColumnar  # a line over every record's budget: csv is not asked to read it
        # A line's text ends at its break, one byte earlier for \r\n.
        content_end = np.full(count, n, dtype=np.int64)
        crlf = (a[ends] == 0x0A) & (ends > 0) & (a[np.maximum(ends - 1, 0)] == 0x0D)
        content_end[:len(ends)] = ends - crlf
        self.content_end = content_end
        record = content_end > starts[:-1]
        record[:first] = False
        # Only a quote opening a field (first on its line or after a delimiter) can open a quoted
        # value; a line whose quotes are all inside values (="00123") is one record, split at
        # every delimiter. `_arrow_rows` checks Arrow kept every such quote.
        quote_lines: list[int] = []
        for quotes in quote_parts:  # a line's number is the count of line breaks before it
            before = a[np.maximum(quotes - 1, 0)]
            opening = (quotes == 0) | (before == ord(delimiter)) | (before == 0x0A) | (before == 0x0D)
            lines = np.searchsorted(ends, quotes[opening], side="left")  # sorted: unique by neighbours
            lines = lines[np.concatenate([[True], lines[1:] != lines[:-1]])] if len(lines) else lines
            quote_lines.extend(lines[lines >= first].tolist())
            if not _few_slow_lines(len(quote_lines), count):
                raise _NotColumnar  # a file that quotes (nearly) every line: csv reads it as fast
        self.quoted = self._quoted_records(data, delimiter, sorted(set(quote_lines)), count)
        for line, (spanned, _) in self.quoted.items():
            record[line + 1:line + spanned] = False
        self.record = record

    def _quoted_records(self, data: bytes | bytearray, delimiter: str, quote_lines: list[int],
                        count: int) -> dict[int, tuple[int, list[str]]]:
        """csv's records on the lines with a quote: one csv reader is handed each such line and,
        while its record is still open, the lines after it."""
        starts = self.starts
        at = {"line": -1, "start": -1, "open": False, "read": 0}
        queue = iter(quote_lines)

        def lines() -> Iterator[str]:
            while True:
                if at["open"]:
                    at["line"] += 1
                    if at["line"] >= count:
                        return
                else:
                    line = next(queue, None)
                    while line is not None and line <= at["line"]:
                        line = next(queue, None)  # inside a record read already
                    if line is None:
                        return
                    at.update(line=line, start=line, open=True)
                i = at["line"]
                at["read"] += 1
                if not _few_slow_lines(at["read"], count):
                    raise _NotColumnar  # few quotes, but values over many lines each: csv's work
                yield data[starts[i]:starts[i + 1]].decode("utf-8")

        quoted: dict[int, tuple[int, list[str]]] = {}
        for cells in csv.reader(lines(), delimiter=delimiter, quotechar='"', doublequote=True, strict=True):
            quoted[at["start"]] = (at["line"] - at["start"] + 1, cells)
            at["open"] = False
        return quoted

    def end_of(self, line: int) -> int | None:
        """The line after the record starting on `line`, or None when no record starts there."""
        if line >= len(self.record) or not self.record[line]:
            return None
        return line + self.quoted.get(line, (1, None))[0]


def _arrow_table(data: bytes | bytearray, lines: _TextLines, after: int, delimiter: str, width: int,
                 limits: Limits) -> tuple[pa.Table, np.ndarray, dict[int, list[str]]] | None:
    """pyarrow.csv's table of the records from line `after` (the one after the header's record)
    on that are as wide as the header, every column text; the line each of those starts on;
    and the cells of the others (which `_fit` may accept) by line, as csv reads them. None when
    Arrow cannot read them as the general path would."""
    import pyarrow.csv as pa_csv

    record_lines = np.flatnonzero(lines.record[after:]) + after
    if not len(record_lines):
        return None
    table_cells = width * len(record_lines)
    if width > limits.max_columns or table_cells > _MAX_ARROW_CELLS \
            or len(data) - int(lines.starts[after]) < _MIN_BYTES_PER_CELL * table_cells:
        # Wider than the columns that may count: Excel's empty columns up to its used range,
        # which `_collect` keeps as a length and Arrow as a full column each; or mostly empty cells.
        return None
    # Every record within `_max_record_chars`, counted in bytes (never fewer than characters),
    # blank lines after it included.
    bounds = lines.starts[np.append(record_lines, len(lines.record))]
    if int(np.diff(bounds).max()) >= _max_record_chars(limits):
        return None
    begin = int(lines.starts[after])
    if data[begin:begin + len(codecs.BOM_UTF8)] == codecs.BOM_UTF8:
        return None  # Arrow would drop it as a byte-order mark; for csv it is the first cell's text
    names = [str(i) for i in range(width)]
    skipped = 0

    def skip(row) -> str:  # a record of another width: read below, the way csv reads it
        nonlocal skipped
        skipped += 1
        if not _few_slow_lines(skipped, len(record_lines)):
            return "error"  # Arrow stops with ArrowInvalid: the general path reads it
        return "skip"

    try:
        table = pa_csv.read_csv(
            pa.BufferReader(pa.py_buffer(data)[begin:]),
            read_options=pa_csv.ReadOptions(column_names=names),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter, quote_char='"', double_quote=True, escape_char=False,
                newlines_in_values=any(spanned > 1 for spanned, _ in lines.quoted.values()),
                ignore_empty_lines=True, invalid_row_handler=skip),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.large_string()),
                strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # bytes that are not UTF-8, ...
    other: dict[int, list[str]] = {}
    if skipped:
        widths = _cells_per_line(data, lines, delimiter)[record_lines]
        for line, (_, cells) in lines.quoted.items():
            if line >= after:
                widths[np.searchsorted(record_lines, line)] = len(cells)
        odd = record_lines[widths != width]
        if len(odd) != skipped:
            return None
        for line in odd.tolist():
            quoted = lines.quoted.get(line)
            other[line] = quoted[1] if quoted else \
                data[lines.starts[line]:lines.content_end[line]].decode("utf-8").split(delimiter)
        record_lines = record_lines[widths == width]
    if table.num_rows != len(record_lines):
        return None
    return table, record_lines, other


def _cells_per_line(data: bytes | bytearray, lines: _TextLines, delimiter: str) -> np.ndarray:
    """1 + the delimiters on each line: its cells, when no quote on it opens a field."""
    a = np.frombuffer(data, dtype=np.uint8)
    counts = np.ones(len(lines.starts) - 1, dtype=np.int64)
    for start in range(0, len(a), _SCAN_BYTES):
        found = np.flatnonzero(a[start:start + _SCAN_BYTES] == ord(delimiter)) + start
        counts += np.bincount(np.searchsorted(lines.starts, found, side="right") - 1, minlength=len(counts))
    return counts


def _arrow_rows(table: pa.Table, record_lines: np.ndarray, other: dict[int, list[str]], lines: _TextLines,
                after: int, parsed: _Parsed, limits: Limits) -> bool:
    """Fill `parsed` (its header read) with Arrow's rows and the `other` records as `_collect`
    would; False (and `parsed` unusable) when they are not shown to be the same."""
    import pyarrow.compute as pc

    width = len(parsed.labels)
    # Arrow and csv agree on every record with a quote, or the general path reads the file.
    checked = [line for line in lines.quoted if line >= after and line not in other]
    if checked:
        at = np.searchsorted(record_lines, checked)
        if not np.array_equal(record_lines[np.minimum(at, len(record_lines) - 1)], checked):
            return False
        cells = [lines.quoted[line][1] for line in checked]
        if any(len(row) != width for row in cells):
            return False
        indices = pa.array(at)
        for column, values in zip(table.columns, zip(*cells)):
            if not column.take(indices).combine_chunks().equals(pa.array(values, type=pa.large_string())):
                return False
    # The other records hold no quote that opens a field: each is its line split at every
    # delimiter, so Arrow's values hold all of its bytes but the delimiters. A quote Arrow had
    # taken for quoting would be missing (Arrow never splits more than that, and widths match).
    plain = np.flatnonzero(~np.isin(record_lines, checked))
    kept = sum(pc.binary_length(column).to_numpy() for column in table.columns)
    expected = lines.content_end[record_lines[plain]] - lines.starts[record_lines[plain]] - (width - 1)
    if not np.array_equal(np.asarray(kept)[plain], expected):
        return False
    # Lengths as `_check_lengths` (ignored columns excepted) and csv's own field limit (all); in
    # bytes first, which are never fewer than characters and cost nothing to count.
    csv_limit = csv.field_size_limit()
    for position, column in enumerate(table.columns):
        limit = csv_limit - 1 if parsed.names[position] is None else min(csv_limit - 1, limits.max_field_length)
        if (pc.max(pc.binary_length(column)).as_py() or 0) > limit \
                and (pc.max(pc.utf8_length(column)).as_py() or 0) > limit:
            return False
    # Blank rows: those whose first cell is blank, narrowed column by column (there are few).
    blank = np.flatnonzero(pc.match_substring_regex(table.column(0), _BLANK_PATTERN).to_numpy())
    for column in table.columns[1:]:
        if not len(blank):
            break
        still = pc.match_substring_regex(column.take(pa.array(blank)), _BLANK_PATTERN)
        blank = blank[still.to_numpy()]
    numbers = np.delete(record_lines, blank) + 1
    table = _without_rows(table, blank)
    if other:
        fitted = _fitted(other, parsed, limits)
        if fitted is None:
            return False
        if fitted:
            extra = pa.table([pa.array(values, type=pa.large_string()) for values in zip(*fitted.values())],
                             names=table.column_names)
            numbers = np.concatenate([numbers, np.fromiter(fitted, dtype=np.int64) + 1])
            order = np.argsort(numbers, kind="stable")
            table, numbers = pa.concat_tables([table, extra]).take(pa.array(order)), numbers[order]
    if not 0 < table.num_rows <= limits.max_rows:
        return False
    parsed.row_numbers = [pa.array(numbers, type=pa.int64())]
    for position, name in enumerate(parsed.names):
        if name is None:
            continue
        column = table.column(position)
        if position in parsed.headerless and pc.all(pc.match_substring_regex(column, _BLANK_PATTERN)).as_py():
            parsed.chunks[position] = [len(column)]
            continue
        parsed.has_value.add(position)
        parsed.chunks[position] = column.chunks or [pa.array([], type=pa.large_string())]
    parsed.count = table.num_rows
    return True


def _fitted(records: dict[int, list[str]], parsed: _Parsed, limits: Limits) -> dict[int, list[str]] | None:
    """The records not as wide as the header, as `_collect` keeps them: blank ones left out, the
    others padded or cut by `_fit`; None when `_collect` would reject one (or csv's field limit)."""
    width = len(parsed.labels)
    csv_limit = csv.field_size_limit()
    kept: dict[int, list[str]] = {}
    for line, cells in records.items():
        joined = "".join(cells)
        if not joined or joined.isspace():
            continue
        if any(len(cell) >= csv_limit for cell in cells):
            return None
        try:
            cells = _fit(cells, width, line + 1)
        except ExportRejected:
            return None
        if any(len(cell) > limits.max_field_length and name is not None for cell, name in zip(cells, parsed.names)):
            return None
        kept[line] = cells
    return kept


def _without_rows(table: pa.Table, rows):
    """`table` without `rows` (sorted positions): zero-copy slices around a few, a filter for many."""

    if not len(rows):
        return table
    if len(rows) > 1_000:
        keep = np.ones(table.num_rows, dtype=bool)
        keep[rows] = False
        return table.filter(pa.array(keep))
    edges = [-1, *rows.tolist(), table.num_rows]
    return pa.concat_tables([table.slice(0, 0)] + [table.slice(a + 1, b - a - 1)
                                                   for a, b in zip(edges, edges[1:]) if b - a > 1])


# --- xlsx ----------------------------------------------------------------------------------


def _read_xlsx(path: Path, limits: Limits, header_map: HeaderMap = DEFAULT_HEADERS) -> ParsedExport:
    _check_inflated_size(path, limits)
    _check_sheet_grid(path, limits)
    try:
        with CalamineWorkbook.from_path(str(path)) as workbook:
            sheet_names = list(workbook.sheet_names)
            try:
                sheet = workbook.get_sheet_by_index(0)
                if sheet.start is None:
                    raise ExportRejected(EMPTY_FILE, catalogue.message(EMPTY_FILE, "first_sheet"))
                first_column, records = _sheet_records(sheet)
                parsed = _collect(records, limits, first_column, header_map)
            except ExportRejected as exc:
                if exc.code not in (EMPTY_FILE, NO_DATA_ROWS) or len(sheet_names) < 2:
                    raise
                # A cover sheet first: say which sheets there are (their names, never cell values).
                names = ", ".join(repr(name) for name in sheet_names)
                raise ExportRejected(exc.code, catalogue.message(exc.code, "first_sheet_only", message=exc.message,
                                                                 sheets=names)) from None
            _check_used_columns(parsed, limits)
    except (CalamineError, ValueError):
        raise _damaged() from None
    export = _export(parsed, "xlsx", None, None, header_map)
    export.sheet_names = sheet_names
    return export


def _check_inflated_size(path: Path, limits: Limits) -> None:
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    total = sum(m.file_size for m in members)
    if total > limits.max_uncompressed_bytes:
        raise ExportRejected(
            FILE_TOO_LARGE,
            catalogue.message(FILE_TOO_LARGE, "unpacked", size_mb=_mb(total),
                              limit_mb=_mb(limits.max_uncompressed_bytes)),
            details={"bytes": total, "limit": limits.max_uncompressed_bytes},
        )
    for m in members:
        ratio = m.file_size // max(m.compress_size, 1)
        if m.file_size > _RATIO_FLOOR_BYTES and ratio > _MAX_COMPRESSION_RATIO:
            raise ExportRejected(FILE_TOO_LARGE, catalogue.message(FILE_TOO_LARGE, "ratio", part=m.filename,
                                                                   ratio=ratio))


# calamine loads the first sheet's used range as a dense grid (about 32 bytes a cell, empty or
# not) and gives every cell that uses a shared string a copy of its own. The budget is absolute,
# so that no sheet, however padded, has calamine ask for more than about 1 GB: a few cells far
# apart in a tiny file (one at XFD1048576) would otherwise ask for hundreds of gigabytes and abort
# the process. Up to max_rows rows of _GRID_COLUMNS columns fit; never fewer than the floor, never
# more than the cap (Excel's full height, 1,048,576 rows, at 19 columns).
_GRID_MAX_CELLS = 20_000_000
_GRID_FLOOR_CELLS = 2_000_000
_GRID_COLUMNS = 20  # a patient list's 16 fields, "Import Problem" and a few of the office's own
_CELL_BYTES = 32
_SHARED_STRING_BYTES = 48  # calamine's cost of one shared-strings entry besides its text
_XLSX_MEMORY_BYTES = 1024 ** 3
# No piece of an honest sheet's XML (a tag, a value, a comment) is this long: Excel's longest
# cell (32,767 characters), escaped, is under 200 KB. quick-xml buffers a piece whole.
_MAX_XML_PIECE_BYTES = 1024 * 1024
_LONG_PIECES = ((b"<!--", b"-->"), (b"<![CDATA[", b"]]>"))  # may hold "<"
_VALUE_PIECE = re.compile(rb"<(?:\w+:)?[tv][\s>]")
# An honest workbook has a few dozen parts. zipfile builds an object per entry and calamine a map
# of them, so the directory is measured from the zip's end record before either reads it.
_MAX_ZIP_ENTRIES = 10_000
_MAX_ZIP_DIRECTORY_BYTES = 8 * 1024 * 1024
# Parts calamine reads whole besides the sheet and its strings (the list of sheets, styles).
_MAX_SMALL_PART_BYTES = 16 * 1024 * 1024
_END_OF_DIRECTORY = struct.Struct("<4s4H2LH")
# Cell and row references (`r="AB12"`). Every writer puts no space around "="; patterns that
# start with a literal are ten times faster, so the spaced form XML also allows is looked for
# separately and only then matched with the slower patterns.
_SPACED_EQUALS = (re.compile(rb"[rt][ \t\r\n]+="), re.compile(rb"=[ \t\r\n]+[\"']"))
_REF_START = {False: rb"r=[\"']", True: rb"(?<![\w:.-])r[ \t\r\n]*=[ \t\r\n]*[\"']"}
_SHARED_CELL = (b't="s"', b"t='s'")
_SHARED_REF = {False: re.compile(rb"""t=["']s["'][^>]*>\s*<(?:\w+:)?v>\s*([0-9]+)"""),
               True: re.compile(rb"""(?<![\w:.-])t[ \t\r\n]*=[ \t\r\n]*["']s["'][^>]*>\s*<(?:\w+:)?v>\s*([0-9]+)""")}
_INLINE_CELL = (b"inlineStr", b'"str"', b"'str'")
# Rows and cells, and the references they carry: fewer references than elements means some are
# placed by position (SpreadsheetML allows it; Excel and openpyxl always write them).
_ELEMENTS = (b"<row ", b"<row>", b"<c ", b"<c>")
_REFERENCES = (b' r="', b" r='")
_TEXT_RUN = re.compile(rb"<(?:\w+:)?t(?:\s[^>]*)?>([^<]*)")
_VALUE_RUN = re.compile(rb"<(?:\w+:)?v>([^<]*)")
_SI_PARTS = re.compile(rb"<(/?)(?:\w+:)?si\b[^>]*?(/?)>|<(?:\w+:)?t(?:\s[^>]*)?>([^<]*)")
_FIRST_SHEET_RID = re.compile(rb"""<(?:\w+:)?sheet\b[^>]*?\s(?:\w+:)?id\s*=\s*["']([^"']+)["']""")
_SHARED_STRINGS_TARGET = re.compile(
    rb"""<(?:\w+:)?Relationship\b(?=[^>]*\sType\s*=\s*["'][^"']*/sharedStrings["'])[^>]*?\sTarget\s*=\s*["']([^"']+)["']""")


def _grid_budget(limits: Limits) -> int:
    """The most cells (rows × columns of the used range) the first sheet may span."""
    return min(_GRID_MAX_CELLS, max(_GRID_FLOOR_CELLS, (limits.max_rows + 1) * _GRID_COLUMNS))


def _check_zip_directory(path: Path) -> None:
    """Refuse a zip whose directory alone would cost memory, from its end record (SPEC §7)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - (_END_OF_DIRECTORY.size + 0xFFFF + 20)))
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < _END_OF_DIRECTORY.size:
            return  # zipfile says what is wrong
        *_, entries, directory, _, _ = _END_OF_DIRECTORY.unpack_from(tail, at)
        locator = at - 20
        if (entries == 0xFFFF or directory == 0xFFFFFFFF) and tail[max(locator, 0):at].startswith(b"PK\x06\x07"):
            (offset,) = struct.unpack_from("<Q", tail, locator + 8)  # the zip64 end record
            f.seek(offset)
            record = f.read(56)
            if len(record) == 56 and record.startswith(b"PK\x06\x06"):
                entries, directory = struct.unpack_from("<QQ", record, 32)
    if entries > _MAX_ZIP_ENTRIES or directory > _MAX_ZIP_DIRECTORY_BYTES:
        raise ExportRejected(
            FILE_TOO_LARGE,
            catalogue.message(FILE_TOO_LARGE, "zip_entries", entries=entries, directory_mb=_mb(directory),
                              limit=_MAX_ZIP_ENTRIES),
            details={"entries": entries, "limit": _MAX_ZIP_ENTRIES},
        )


def _damaged() -> ExportRejected:
    return ExportRejected(UNREADABLE_FILE, catalogue.message(UNREADABLE_FILE, "damaged_workbook"))


def _member_chunks(path: Path, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """A zip member's bytes, inflated about 1 MB at a time, checked against the size it declares.

    Not zipfile's reader: it stops at the declared size, where calamine's inflates the whole
    stream, so a member lying about its size would show the checks only its harmless start.
    """
    if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _damaged()  # encrypted, or compressed in a way Excel never uses
    produced = 0
    with path.open("rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        if len(header) < 30 or not header.startswith(b"PK\x03\x04"):
            raise _damaged()
        name_length, extra_length = struct.unpack_from("<HH", header, 26)
        f.seek(info.header_offset + 30 + name_length + extra_length)
        inflate = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        left = info.compress_size
        try:
            while left > 0 and not (inflate and inflate.eof):
                data = f.read(min(left, _CHUNK_BYTES))
                if not data:
                    raise _damaged()
                left -= len(data)
                while True:
                    out = inflate.decompress(data, _CHUNK_BYTES) if inflate else data
                    data = inflate.unconsumed_tail if inflate else b""
                    produced += len(out)
                    if produced > info.file_size:
                        break
                    if out:
                        yield out
                    # A full output may leave more inflated bytes pending with no input left.
                    if not data and (inflate is None or inflate.eof or len(out) < _CHUNK_BYTES):
                        break
                if produced > info.file_size:
                    break
        except zlib.error:
            raise _damaged() from None
    if produced != info.file_size or (inflate and not inflate.eof):
        raise ExportRejected(UNREADABLE_FILE, catalogue.message(UNREADABLE_FILE, "lying_part", part=info.filename))


def _xml_pieces(path: Path, info: zipfile.ZipInfo) -> Iterator[tuple[bytes, int, int]]:
    """(buffer, end, offset) over a part's XML: whole pieces (tags, text, comments) up to `end`,
    `offset` being where the buffer starts in the part. A piece still open after more than
    _MAX_XML_PIECE_BYTES is refused, so none longer than that and one read (2 MB) gets through."""
    carry, offset = b"", 0
    for chunk in _member_chunks(path, info):
        buf = carry + chunk
        cut = max(buf.rfind(b"<"), 0)  # no "<" at all: one piece, carried whole
        for opening, closing in _LONG_PIECES:
            at = buf.rfind(opening)
            if 0 <= at < cut and buf.find(closing, at + len(opening)) < 0:
                cut = at
        if len(buf) - cut > _MAX_XML_PIECE_BYTES:
            raise _long_piece(info.filename, buf[cut:cut + 64])
        yield buf, cut, offset
        carry, offset = buf[cut:], offset + cut
    if carry:
        yield carry, len(carry), offset


def _long_piece(member: str, start: bytes) -> ExportRejected:
    limit = _mb(_MAX_XML_PIECE_BYTES)
    if _VALUE_PIECE.match(start):
        return ExportRejected(FIELD_TOO_LONG, catalogue.message(FIELD_TOO_LONG, "workbook_cell", limit_mb=limit))
    case = "xml_comment" if start.startswith(b"<!--") else "xml_piece"
    return ExportRejected(FILE_TOO_LARGE, catalogue.message(FILE_TOO_LARGE, case, part=member, limit_mb=limit))


def _read_small_part(path: Path, info: zipfile.ZipInfo, what: str) -> bytes:
    if info.file_size > _MAX_SMALL_PART_BYTES:
        raise ExportRejected(FILE_TOO_LARGE, catalogue.message(
            FILE_TOO_LARGE, "small_part", part=what, member=info.filename, size_mb=_mb(info.file_size),
            limit_mb=_mb(_MAX_SMALL_PART_BYTES)))
    return b"".join(_member_chunks(path, info))


@functools.cache
def _reference_patterns(digits: int, spaced: bool) -> tuple[re.Pattern, re.Pattern]:
    """(rows of at least `digits` digits, columns of two letters or more)."""
    start = _REF_START[spaced]
    return (re.compile(start + rb"[A-Za-z]*([0-9]{%d,})[\"']" % digits),
            re.compile(start + rb"([A-Za-z]{2,})[0-9]"))


def _column_number(letters: bytes) -> int:
    number = 0
    for char in letters.upper():
        number = number * 26 + char - 64
    return number


@dataclass
class _SheetScan:
    """What the first sheet's XML says about the memory calamine will need for it."""

    max_row: int
    max_column: int
    shared_cells: int = 0      # cells of type "s" (may be over-counted, never under)
    inline_text: bool = False  # inline strings or formula text: text that is not in the shared table
    rows: int = 0              # <row> elements seen, while some rows or cells have no reference
    open_row: int = 0          # cells of the last of them so far


def _check_sheet_grid(path: Path, limits: Limits) -> None:
    """Refuse a workbook whose first sheet calamine would load into more than about 1 GB (SPEC §7).

    Looks at the sheet's used range (only references that could break the budget: rows with many
    digits, columns of two letters or more), the shared strings (their number and lengths) and,
    only when a cheap bound does not settle it, the text the cells expand to; every part it reads
    is inflated in 1 MB steps, its pieces bounded. An honest sheet costs one inflate and a few
    C-level scans.
    """
    with zipfile.ZipFile(path) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    for name, info in infos.items():
        if name.lower() in ("xl/styles.xml", "[content_types].xml"):
            _read_small_part(path, info, "styles" if "styles" in name else "content list")
    first, strings_part = _workbook_parts(path, infos)
    lengths = _shared_string_lengths(path, infos[strings_part], limits) if strings_part else array("I")
    # Not found the way calamine would find it: look at every XML part rather than none.
    members = [first] if first else [n for n in infos if n.lower().endswith(".xml") and n != strings_part]
    for member in members:
        scan = _scan_sheet(path, infos[member], limits)
        _check_sheet_memory(path, infos[member], scan, lengths, limits)


def _scan_sheet(path: Path, info: zipfile.ZipInfo, limits: Limits) -> _SheetScan:
    allowed = _grid_budget(limits)
    digits = len(str(allowed // max(26, limits.max_columns)))
    # Unless a reference says otherwise, rows stay below 10**(digits-1) and columns within Z.
    scan = _SheetScan(10 ** (digits - 1) - 1, 26)
    for buf, end, _ in _xml_pieces(path, info):
        spaced = any(p.search(buf, 0, end) for p in _SPACED_EQUALS)
        far_row, wide_column = _reference_patterns(digits, spaced)
        scan.max_row = max(scan.max_row, max(map(int, far_row.findall(buf, 0, end)), default=0))
        columns = set(wide_column.findall(buf, 0, end))
        scan.max_column = max(scan.max_column, max(map(_column_number, columns), default=0))
        if spaced:
            scan.shared_cells += buf.count(b"=", 0, end)
        else:
            scan.shared_cells += sum(buf.count(marker, 0, end) for marker in _SHARED_CELL)
        scan.inline_text = scan.inline_text or any(buf.find(m, 0, end) >= 0 for m in _INLINE_CELL)
        if sum(buf.count(e, 0, end) for e in _ELEMENTS) > sum(buf.count(r, 0, end) for r in _REFERENCES):
            _count_unreferenced(buf[:end], scan)
        if scan.max_row * scan.max_column > allowed:
            raise _grid_refusal(scan, limits)  # no need to inflate the rest
    return scan


def _count_unreferenced(xml: bytes, scan: _SheetScan) -> None:
    """Rows and cells written without `r`: calamine places each after the one before, so the
    range may reach as many rows and, in the widest row, as many columns past the references."""
    rows = xml.split(b"<row")
    cells = [row.count(b"<c ") + row.count(b"<c>") for row in rows]
    cells[0] += scan.open_row  # the row still open at the end of the piece before
    scan.open_row = cells[-1]
    scan.rows += len(rows) - 1
    scan.max_row = max(scan.max_row, scan.rows)
    scan.max_column = max(scan.max_column, 26 + max(cells))


def _grid_refusal(scan: _SheetScan, limits: Limits) -> ExportRejected:
    if scan.max_column > limits.max_columns:
        return ExportRejected(
            TOO_MANY_COLUMNS,
            catalogue.message(TOO_MANY_COLUMNS, "sheet", columns=scan.max_column, limit=limits.max_columns),
            details={"columns": scan.max_column, "limit": limits.max_columns},
        )
    return ExportRejected(
        FILE_TOO_LARGE,
        catalogue.message(FILE_TOO_LARGE, "grid_wide" if scan.max_column > 26 else "grid", rows=scan.max_row,
                          columns=scan.max_column),
        details={"rows": scan.max_row, "columns": scan.max_column},
    )


def _check_sheet_memory(path: Path, info: zipfile.ZipInfo, scan: _SheetScan, lengths: array,
                        limits: Limits) -> None:
    cells = scan.max_row * scan.max_column
    table = len(lengths) * _SHARED_STRING_BYTES + sum(lengths)
    # The text the cells hold: at most every "s" cell using the longest string, plus the sheet's
    # own XML when it holds text of its own; counted exactly only when that bound is too high.
    text = scan.shared_cells * max(lengths, default=0) + (info.file_size if scan.inline_text else 0)
    needed = cells * _CELL_BYTES + table + text
    if text > limits.max_file_bytes or needed > _XLSX_MEMORY_BYTES:
        text = _sheet_text(path, info, lengths)
        needed = cells * _CELL_BYTES + table + text
    if text > limits.max_file_bytes:
        raise ExportRejected(
            FILE_TOO_LARGE,
            catalogue.message(FILE_TOO_LARGE, "sheet_text", size_mb=_mb(text), limit_mb=_mb(limits.max_file_bytes)),
            details={"bytes": text, "limit": limits.max_file_bytes},
        )
    if needed > _XLSX_MEMORY_BYTES:
        raise ExportRejected(
            FILE_TOO_LARGE,
            catalogue.message(FILE_TOO_LARGE, "sheet_memory", size_mb=_mb(needed), limit_mb=_mb(_XLSX_MEMORY_BYTES)),
            details={"bytes": needed, "limit": _XLSX_MEMORY_BYTES},
        )


def _sheet_text(path: Path, info: zipfile.ZipInfo, lengths: array) -> int:
    """Bytes of text the sheet's cells hold: shared strings as used, inline strings, values."""
    text = 0
    strings = len(lengths)
    for buf, end, _ in _xml_pieces(path, info):
        spaced = any(p.search(buf, 0, end) for p in _SPACED_EQUALS)
        references = _SHARED_REF[spaced].findall(buf, 0, end)
        for index in map(int, references):
            text += lengths[index] if index < strings else 0
        text += sum(map(len, _TEXT_RUN.findall(buf, 0, end)))
        # Every value as it will be read (numbers too), but a shared string's index is not text.
        text += sum(map(len, _VALUE_RUN.findall(buf, 0, end))) - sum(map(len, references))
    return text


def _shared_string_lengths(path: Path, info: zipfile.ZipInfo, limits: Limits) -> array:
    """The length in bytes of every shared string's text (all its runs), in order."""
    allowed = _grid_budget(limits)
    # First a C-level count, so that a table of tens of millions of entries is refused without a
    # Python step for each.
    counted = sum(buf.count(b"<si", 0, end) for buf, end, _ in _xml_pieces(path, info))
    if counted > allowed:
        raise _too_many_strings(allowed)
    lengths = array("I")
    length: int | None = None
    for buf, end, _ in _xml_pieces(path, info):
        for part in _SI_PARTS.finditer(buf, 0, end):
            run = part[3]
            if run is not None:  # a run of text
                if length is not None:
                    length += len(run)
            elif part[1]:  # </si>
                if length is not None:
                    lengths.append(length)
                length = None
            elif part[2]:  # <si/>
                lengths.append(0)
            else:  # <si>
                length = 0
        if len(lengths) > allowed:  # written with a namespace prefix, which the count missed
            raise _too_many_strings(allowed)
    return lengths


def _too_many_strings(allowed: int) -> ExportRejected:
    return ExportRejected(
        FILE_TOO_LARGE,
        catalogue.message(FILE_TOO_LARGE, "shared_strings", limit=allowed),
        details={"limit": allowed},
    )


def _workbook_parts(path: Path, infos: dict[str, zipfile.ZipInfo]) -> tuple[str | None, str | None]:
    """The zip members of the first sheet and of the shared strings, as xl/workbook.xml and its
    relationships name them."""
    if "xl/workbook.xml" not in infos or "xl/_rels/workbook.xml.rels" not in infos:
        return None, None
    workbook = _read_small_part(path, infos["xl/workbook.xml"], "list of sheets")
    rels = _read_small_part(path, infos["xl/_rels/workbook.xml.rels"], "list of parts")
    strings = _SHARED_STRINGS_TARGET.search(rels)
    strings_part = _member_name(strings[1], infos) if strings else None
    if strings_part is None and "xl/sharedStrings.xml" in infos:
        strings_part = "xl/sharedStrings.xml"
    first = _FIRST_SHEET_RID.search(workbook)
    if first is None:
        return None, strings_part
    rid = re.escape(first[1])
    relation = re.search(rb"""<(?:\w+:)?Relationship\b(?=[^>]*\sId\s*=\s*["']%s["'])"""
                         rb"""[^>]*?\sTarget\s*=\s*["']([^"']+)["']""" % rid, rels)
    return (_member_name(relation[1], infos) if relation else None), strings_part


def _member_name(target: bytes, infos: dict[str, zipfile.ZipInfo]) -> str | None:
    text = target.decode("utf-8", "replace")
    member = text.lstrip("/") if text.startswith("/") else f"xl/{text}"
    parts: list[str] = []
    for part in member.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    member = "/".join(parts)
    return member if member in infos else None


def _sheet_records(sheet) -> tuple[int, Iterator[tuple[int, list[str]]]]:
    """The sheet's first column number, and (sheet row, cells as text) for every row."""
    start_row, _ = sheet.start
    _, end_column = sheet.end
    rows = iter(sheet.iter_rows())
    first: list = next(rows, [])
    # calamine (0.9) yields from the sheet's row 1 but from the first used column; check
    # rather than assume, so another version cannot shift every row number silently.
    first_row = start_row + 1 if start_row and any(v != "" for v in first) else 1
    first_column = end_column + 2 - len(first) if first else 1

    def records() -> Iterator[tuple[int, list[str]]]:
        for number, row in enumerate(chain([first], rows), start=first_row):
            yield number, [v if v.__class__ is str else _cell_text(v) for v in row]

    return first_column, records()


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        # Excel keeps 15 significant digits; whole numbers (account numbers, zips) lose ".0".
        return str(int(value)) if value.is_integer() else format(value, ".15g")
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)


# --- shared --------------------------------------------------------------------------------


@dataclass
class _Parsed:
    labels: list[str]                  # per header position: the header text, or "(column N)"
    names: list[str | None]            # per position: frame column name; None when dropped
    headerless: set[int]               # positions without a header: kept only if they hold a value
    has_value: set[int] = dataclasses.field(default_factory=set)
    row_numbers: list[pa.Array] = dataclasses.field(default_factory=list)
    # Per position, Arrow chunks; for a headerless column, a batch without a value is just its
    # length, so Excel's empty trailing columns cost nothing.
    chunks: dict[int, list[pa.Array | int]] = dataclasses.field(default_factory=dict)
    count: int = 0

    def add_batch(self, numbers: list[int], rows: list[list[str]]) -> None:
        """Turn a batch of rows into Arrow column chunks, so memory holds one batch of Python strings."""
        self.row_numbers.append(pa.array(numbers, type=pa.int64()))
        for position, values in enumerate(zip(*rows)):
            if self.names[position] is None:
                continue
            chunks = self.chunks.setdefault(position, [])
            if position in self.headerless and not any(map(str.strip, values)):
                chunks.append(len(values))
                continue
            self.has_value.add(position)
            chunks.append(pa.array(values, type=pa.large_string()))
        self.count += len(rows)
        numbers.clear()
        rows.clear()

    def column(self, position: int) -> pa.ChunkedArray:
        chunks = [c if isinstance(c, pa.Array) else pa.repeat("", c).cast(pa.large_string())
                  for c in self.chunks[position]]
        return pa.chunked_array(chunks, type=pa.large_string())

    def kept(self, position: int) -> bool:
        return self.names[position] is not None and (
            position not in self.headerless or position in self.has_value
        )


def _collect(records: Iterator[tuple[int, list[str]]], limits: Limits, first_column: int,
             header_map: HeaderMap = DEFAULT_HEADERS) -> _Parsed:
    """Header and data rows out of (row number, cells) records; enforces the limits as it goes."""
    header_row, header = _find_header(records, limits)
    parsed = _read_header(header, header_row, limits, first_column, header_map)
    width = len(parsed.labels)
    max_length, max_rows = limits.max_field_length, limits.max_rows
    rows: list[list[str]] = []
    numbers: list[int] = []
    room = min(max_rows, _BATCH_ROWS)
    # The hot loop of a million-row file: C-level string operations only.
    for row, cells in records:
        joined = "".join(cells)
        if not joined or joined.isspace():
            continue
        if len(cells) != width:
            cells = _fit(cells, width, row, header_map)
        if len(joined) > max_length:
            _check_lengths(cells, row, parsed, max_length)
        if len(rows) == room:
            if parsed.count + room >= max_rows:
                raise ExportRejected(
                    TOO_MANY_ROWS, catalogue.message(TOO_MANY_ROWS, "rows", limit=max_rows),
                    row=row, details={"limit": max_rows},
                )
            parsed.add_batch(numbers, rows)
            room = min(max_rows - parsed.count, _BATCH_ROWS)
        rows.append(cells)
        numbers.append(row)
    if rows:
        parsed.add_batch(numbers, rows)
    if not parsed.count:
        raise ExportRejected(NO_DATA_ROWS, catalogue.message(NO_DATA_ROWS))
    return parsed


def _find_header(records: Iterator[tuple[int, list[str]]], limits: Limits) -> tuple[int, list[str]]:
    """The first non-blank record: (its row number, its cells); `records` then continue after it."""
    for header_row, header in records:
        if header_row > limits.max_lines_before_header + 1:
            raise ExportRejected(
                UNREADABLE_FILE,
                catalogue.message(UNREADABLE_FILE, "blank_lines_first", blank=header_row - 1,
                                  within=limits.max_lines_before_header + 1),
                row=header_row, details={"limit": limits.max_lines_before_header},
            )
        if not _is_blank(header):
            return header_row, header
    raise ExportRejected(EMPTY_FILE, catalogue.message(EMPTY_FILE, "blank_rows"))


def _is_blank(cells: list[str]) -> bool:
    return not "".join(cells).strip()


def _read_header(header: list[str], row: int, limits: Limits, first_column: int,
                 header_map: HeaderMap = DEFAULT_HEADERS) -> _Parsed:
    # Only columns with a header or a value count (SPEC §2): Excel writes every row as wide as
    # its used range, empty columns included. Headerless columns are counted after the rows.
    named = sum(1 for text in header if text.strip())
    if named > limits.max_columns:
        raise ExportRejected(
            TOO_MANY_COLUMNS,
            catalogue.message(TOO_MANY_COLUMNS, "header", columns=named, limit=limits.max_columns),
            row=row, details={"columns": named, "limit": limits.max_columns},
        )
    labels: list[str] = []
    names: list[str | None] = []
    headerless: list[int] = []
    seen: dict[str, str] = {}
    for position, text in enumerate(header):
        number = first_column + position
        if len(text) > limits.max_field_length:
            raise ExportRejected(
                FIELD_TOO_LONG,
                catalogue.message(FIELD_TOO_LONG, "header", column=number, length=len(text),
                                  limit=limits.max_field_length),
                row=row,
            )
        if not text.strip():
            labels.append(f"(column {number})")
            names.append(f"__extra_{number}")
            headerless.append(position)
            continue
        labels.append(text)
        field = header_map.field(text)
        if header_key(text) in IGNORED_HEADER_KEYS:
            names.append(None)
        elif field is None:
            names.append(f"__extra_{number}")
        elif field in seen:
            raise ExportRejected(
                DUPLICATE_COLUMNS,
                catalogue.message(DUPLICATE_COLUMNS, "headers", first=seen[field], second=text, field=field),
                field=field,
            )
        else:
            seen[field] = text
            names.append(field)
    return _Parsed(labels, names, set(headerless))


def _check_used_columns(parsed: _Parsed, limits: Limits) -> None:
    """Columns with a header or a value, headerless ones included, within `max_columns`."""
    used = sum(1 for position in range(len(parsed.names)) if parsed.kept(position)
               or (parsed.names[position] is None and position not in parsed.headerless))
    if used > limits.max_columns:
        raise ExportRejected(
            TOO_MANY_COLUMNS,
            catalogue.message(TOO_MANY_COLUMNS, "used", columns=used, limit=limits.max_columns),
            details={"columns": used, "limit": limits.max_columns},
        )


def _fit(cells: list[str], width: int, row: int, header_map: HeaderMap = DEFAULT_HEADERS) -> list[str]:
    if len(cells) < width:
        return cells + [""] * (width - len(cells))
    if "".join(cells[width:]).strip():
        values = len(cells)
        while not cells[values - 1].strip():
            values -= 1
        known = [header_map.field(cell) for cell in cells]
        # Title lines above the header: the first line was taken for the header.
        case = "header_below_title" if sum(field is not None for field in known) >= 2 else "row_too_wide"
        raise ExportRejected(
            UNREADABLE_FILE, catalogue.message(UNREADABLE_FILE, case, row=row, values=values, width=width), row=row,
        )
    return cells[:width]


def _check_lengths(cells: list[str], row: int, parsed: _Parsed, max_length: int) -> None:
    for position, value in enumerate(cells):
        name = parsed.names[position]
        if name is None or len(value) <= max_length:
            continue  # an ignored column (our own "Import Problem" notes) may be long
        label = parsed.labels[position]
        field = label if name.startswith("__extra_") else name
        breaks = value.count("\n") + value.count("\r") - value.count("\r\n")
        if breaks:
            # A value running over many lines is far more often an unclosed quote than a note.
            raise _QuotingBroken(
                catalogue.message(UNREADABLE_FILE, "value_over_lines", row=row, label=label, lines=breaks + 1,
                                  length=len(value)),
                row=row, field=field,
            )
        raise ExportRejected(
            FIELD_TOO_LONG,
            catalogue.message(FIELD_TOO_LONG, "value", row=row, label=label, length=len(value), limit=max_length),
            row=row, field=field,
        )


def _export(parsed: _Parsed, file_type: str, encoding: str | None, delimiter: str | None,
            header_map: HeaderMap = DEFAULT_HEADERS) -> ParsedExport:
    data: dict[str, pa.ChunkedArray] = {ROW_NUMBER: pa.chunked_array(parsed.row_numbers, type=pa.int64())}
    headers: list[str] = []
    columns: list[str] = []
    problems: list[Problem] = []
    filled = {name for name in parsed.names if name}  # a suggestion never names a field already read
    for position, name in enumerate(parsed.names):
        if name is None or not parsed.kept(position):
            continue
        label = parsed.labels[position]
        headers.append(label)
        columns.append(name)
        data[name] = parsed.column(position)
        if name.startswith("__extra_"):
            # The field is the header as `printable` shows it (SPEC §7): a report read with `jq -r`, a
            # terminal or a page must not receive a header's newlines, terminal escapes or bidi
            # overrides. Headers are at most `max_field_length` long; escaping grows them 10 times at most.
            shown = printable(label, limit=_MAX_SHOWN_HEADER)
            problems.append(Problem(code=UNKNOWN_COLUMN, field=shown, message=_unknown_column_message(
                shown, None if position in parsed.headerless else header_map.suggestion(label, taken=filled))))
    # Through Arrow: pandas' own str dtype, built several times faster than from Python objects.
    frame = pa.table(data).to_pandas()
    return ParsedExport(frame, headers, columns, problems, file_type, encoding, delimiter)


def _unknown_column_message(shown: str, suggestion: str | None) -> str:
    if suggestion is None:
        return catalogue.message(UNKNOWN_COLUMN, label=shown)
    return catalogue.message(UNKNOWN_COLUMN, "suggestion", label=shown, suggestion=printable(suggestion))


def _mb(size: int) -> float:
    """Bytes as the messages' MB."""
    return size / (1024 * 1024)
