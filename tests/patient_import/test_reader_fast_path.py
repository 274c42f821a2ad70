"""The reader's columnar fast path (issue #14) gives exactly what the general path gives.

Each input is read both ways, `reader._read_export(..., fast=False)` (csv row by row) and
`fast=True` (pyarrow.csv where the file allows it), and the two outcomes must be equal: the same
frame (values, row numbers, columns, dtypes), headers, warnings, file type, encoding and
delimiter, or the same rejection (code, message, row, field, details). The inputs: the
generator's exports, every file of the hostile corpus, and - by running test_reader.py's tests
again here with `read_export` reading both ways - every input of the reader's tests.
"""

from __future__ import annotations

import dataclasses
import random
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.patient_import.test_reader as reader_tests
from include.patient_import import reader
from include.patient_import.problems import FIELD_TOO_LONG, UNREADABLE_FILE, ExportRejected
from include.patient_import.reader import ParsedExport
from include.patient_import.schema import DEFAULT_HEADERS
from include.patient_import.settings import Limits
from tests.patient_import.test_reader import *  # noqa: F403 - its tests run again here, read both ways
from tools.corpus import LIMITS_ENV, corpus
from tools.generator import generate_export

pytestmark = pytest.mark.unit

LIMITS = Limits(max_file_bytes=50_000_000, max_rows=100_000, max_columns=200, max_field_length=1_000,
                max_uncompressed_bytes=100_000_000)


def outcome(path: Path, limits: Limits | None, header_map, *, fast: bool) -> ParsedExport | ExportRejected:
    try:
        return reader._read_export(path, limits, header_map, fast=fast)
    except ExportRejected as exc:
        return exc


def assert_same(general: ParsedExport | ExportRejected, fast: ParsedExport | ExportRejected) -> None:
    if isinstance(general, ExportRejected):
        assert isinstance(fast, ExportRejected), "the fast path read a file the general path rejects"
        assert (type(fast), fast.code, fast.message, fast.row, fast.field, fast.details) == (
            type(general), general.code, general.message, general.row, general.field, general.details)
        return
    assert isinstance(fast, ParsedExport), f"the fast path rejected a file the general path reads: {fast}"
    pd.testing.assert_frame_equal(fast.frame, general.frame, check_exact=True)
    assert [str(t) for t in fast.frame.dtypes] == [str(t) for t in general.frame.dtypes]
    for field in dataclasses.fields(ParsedExport):
        if field.name != "frame":
            assert getattr(fast, field.name) == getattr(general, field.name), field.name


def read_both_ways(path: Path, limits: Limits | None = None,
                   header_map=DEFAULT_HEADERS) -> ParsedExport | ExportRejected:
    """Both paths' outcome after checking they are equal."""
    general = outcome(path, limits, header_map, fast=False)
    assert_same(general, outcome(path, limits, header_map, fast=True))
    return general


def takes_fast_path(path: Path, limits: Limits) -> bool:
    """Whether the fast path reads this text file (False when the encoding step rejects it)."""
    head = path.read_bytes()[:65536]
    try:
        encoding = reader._text_encoding(path, head)
    except ExportRejected:
        return False
    return reader._columnar_text(path, encoding, limits) is not None


# --- the generator's exports ---------------------------------------------------------------------

EXPORTS = [
    # seed, format, encoding, Excel's artefacts, header style
    (1, "csv", "utf-8-sig", True, "genesis"),
    (2, "csv", "utf-8", True, "aliases"),
    (3, "semicolon", "utf-8-sig", True, "genesis"),
    (4, "tsv", "utf-8", True, "aliases"),
    (5, "csv", "cp1252", True, "genesis"),
    (6, "csv", "utf-8", False, "genesis"),
    (7, "tsv", "cp1252", False, "aliases"),
]


@pytest.mark.parametrize(("seed", "fmt", "encoding", "artefacts", "header_style"), EXPORTS)
def test_generated_exports_take_the_fast_path_and_read_the_same(tmp_path, seed, fmt, encoding, artefacts,
                                                                header_style):
    path = generate_export(tmp_path / "export.csv", 6_000, seed=seed, fmt=fmt, encoding=encoding,
                           excel_artefacts=artefacts, header_style=header_style)

    assert takes_fast_path(path, LIMITS)
    parsed = read_both_ways(path, LIMITS)
    assert isinstance(parsed, ParsedExport) and len(parsed.frame) == 6_000


def test_generated_export_has_what_the_fast_path_must_number_around(tmp_path):
    """The artefacts the row numbers depend on are really in the file the test above reads."""
    path = generate_export(tmp_path / "export.csv", 6_000, seed=1)
    text = path.read_bytes().decode("utf-8-sig")
    lines = text.split("\r\n")

    assert "" in lines[1:-1]  # an empty line between rows
    assert any(line and not line.strip(",") for line in lines[1:])  # a line of delimiters only
    assert '"' in text and "\n" in text.replace("\r\n", "")  # a quoted value over two lines
    parsed = reader.read_export(path, LIMITS)
    assert parsed.frame["row_number"].iloc[-1] > len(parsed.frame) + 1


# --- the hostile corpus --------------------------------------------------------------------------

CORPUS_LIMITS = dataclasses.replace(
    Limits.from_env(),
    max_file_bytes=int(LIMITS_ENV["PATIENT_IMPORT_MAX_FILE_MB"]) * 1024 * 1024,
    max_rows=int(LIMITS_ENV["PATIENT_IMPORT_MAX_ROWS"]),
    max_columns=int(LIMITS_ENV["PATIENT_IMPORT_MAX_COLUMNS"]),
    max_field_length=int(LIMITS_ENV["PATIENT_IMPORT_MAX_FIELD_LENGTH"]),
    max_uncompressed_bytes=int(LIMITS_ENV["PATIENT_IMPORT_MAX_UNCOMPRESSED_MB"]) * 1024 * 1024,
)
CORPUS = corpus()


@pytest.mark.parametrize("item", CORPUS, ids=[h.name for h in CORPUS])
@pytest.mark.parametrize("limits", [CORPUS_LIMITS, LIMITS], ids=["corpus_limits", "larger_limits"])
def test_hostile_corpus_file_reads_the_same_both_ways(hostile_corpus, item, limits):
    read_both_ways(hostile_corpus[item.name], limits)


def test_the_fast_path_reads_some_of_the_hostile_corpus(hostile_corpus):
    """Not only refusals: corpus files that are clean text go the fast way (and read the same)."""
    taken = [h.name for h in CORPUS if not h.name.endswith((".xlsx", ".xls"))
             and _clean_text(hostile_corpus[h.name]) and takes_fast_path(hostile_corpus[h.name], CORPUS_LIMITS)]

    assert len(taken) >= 5, taken


def _clean_text(path: Path) -> bool:
    if not 0 < path.stat().st_size <= CORPUS_LIMITS.max_file_bytes:
        return False
    try:
        return reader.detect_file_type(path, path.read_bytes()[:65536]) != "xlsx"
    except ExportRejected:
        return False


# --- what the fast path must refuse --------------------------------------------------------------

HEADER = "Account #,Last Name,First Name,Address 2"


def _write(tmp_path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path = tmp_path / "export.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


REFUSED = {
    # a quote never closed: csv's strict quoting fails where the record starts
    "quote_never_closed": f'{HEADER}\n1,Kent,Clark,"Apt 4\n2,Wayne,Bruce,\n',
    # text after a closing quote
    "text_after_quote": f'{HEADER}\n1,"Kent"x,Clark,\n2,Wayne,Bruce,\n',
    # a row wider than the header: an unquoted comma
    "ragged_wide": f"{HEADER}\n1,Kent,Clark,,Smallville\n2,Wayne,Bruce,\n",
    # a cell over max_field_length
    "overlong_cell": f"{HEADER}\n1,{'K' * 1_500},Clark,\n2,Wayne,Bruce,\n",
    # a record over the record budget
    "overlong_record": f"{HEADER}\n1,Kent,Clark,{',' * 500_000}\n",
    # a value over several lines and over max_field_length: an unclosed quote, not a note
    "long_value_over_lines": f'{HEADER}\n1,Kent,Clark,"{"a" * 700}\n{"b" * 700}"\n',
    # the first data row starts with U+FEFF, which Arrow would take for a byte-order mark
    "bom_in_first_row": f"{HEADER}\n\ufeff1,Kent,Clark,\n2,Wayne,Bruce,\n",
    # a short row with a value over max_field_length
    "short_row_overlong_cell": f"{HEADER}\n1,{'K' * 1_500}\n2,Wayne,Bruce,\n",
    # more rows than max_rows, some of them short
    "too_many_rows_short": HEADER + "\n" + "".join(f"{i},Kent\n" for i in range(1, 12)),
    # more rows than max_rows
    "too_many_rows": HEADER + "\n" + "".join(f"{i},Kent,Clark,\n" for i in range(1, 12)),
    # only blank rows after the header
    "no_data_rows": f"{HEADER}\n,,,\n\n",
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_the_fast_path_refuses_what_it_cannot_prove_and_the_general_path_decides(tmp_path, name):
    limits = dataclasses.replace(LIMITS, max_rows=10)
    path = _write(tmp_path, REFUSED[name])

    assert not takes_fast_path(path, limits)
    read_both_ways(path, limits)


@pytest.mark.parametrize("line", [b'2,Wayne,"Br\xff",\n', b"2,Wayne,Br\xff,\n"], ids=["quoted", "unquoted"])
def test_bytes_that_are_not_utf8_are_refused_by_the_fast_path(tmp_path, line):
    # The encoding step rejects such a file first; the fast path must not rely on it.
    path = _write(tmp_path, f'{HEADER}\n1,Kent,Clark,"Apt 4"\n'.encode() + line)

    assert reader._columnar_text(path, "utf-8", LIMITS) is None
    read_both_ways(path, LIMITS)


def test_a_refused_file_gives_the_general_paths_rejection(tmp_path):
    path = _write(tmp_path, REFUSED["overlong_cell"])

    fast = outcome(path, LIMITS, DEFAULT_HEADERS, fast=True)
    assert isinstance(fast, ExportRejected) and (fast.code, fast.row) == (FIELD_TOO_LONG, 2)
    path = _write(tmp_path, REFUSED["quote_never_closed"])
    fast = outcome(path, LIMITS, DEFAULT_HEADERS, fast=True)
    assert isinstance(fast, ExportRejected) and fast.code == UNREADABLE_FILE


# --- row numbers the fast path must get right ----------------------------------------------------

NUMBERED = {
    "blank_lines_and_delimiter_lines": f"{HEADER}\r\n1,Kent,Clark,\r\n\r\n,,,\r\n2,Wayne,Bruce,\r\n\r\n",
    "quoted_line_breaks": f'{HEADER}\n1,Kent,Clark,"Apt 4\nBack door"\n2,Wayne,Bruce,"a\r\n\r\nb"\n3,Prince,Diana,\n',
    "lone_carriage_returns": f"{HEADER}\r1,Kent,Clark,\r\r2,Wayne,Bruce,",
    "mixed_line_endings": f'{HEADER}\n1,Kent,Clark,\r\n\r2,"Wayne ""Bat""",Bruce,"x\ry"\n\n',
    "blank_lines_before_header": f"\n\n,,,\n{HEADER}\n1,Kent,Clark,\n",
    "sep_hint": f"sep=;\n{HEADER.replace(',', ';')}\n1;Kent;Clark;\n\n2;Wayne;Bruce;\n",
    "quoted_header_over_lines": '"Account #","Last\nName",First Name\n1,Kent,Clark\n2,Wayne,Bruce\n',
    "excel_formula_accounts": f'{HEADER}\n="00123",Kent,Clark,\n="00124",Wayne,"Bruce, Jr",\n',
    "unicode_spaces_blank_row": f"{HEADER}\n1,Kent,Clark,\n\u00a0,\u2003,\x1c,\u3000\n2,Wayne,Bruce,\n",
    "headerless_columns": "Account #,,Last Name,\n1,,Kent,\n2,x,Wayne,\n",
    "empty_headerless_columns": "Account #,,Last Name,,\n1,,Kent,,\n2, ,Wayne,\u00a0,\n",
    "no_line_break_at_end": f"{HEADER}\n1,Kent,Clark,",
    "one_column": "Account #\n1\n\n  \n2\n",
    "tabs": HEADER.replace(",", "\t") + '\n1\tKent\t"Clark"\t\n\n2\tWayne\tBruce\t\n',
    "unknown_column": "Account #,Last Name,Favourite Colour\n1,Kent,blue\n",
    # an ignored column may be long
    "long_ignored_cell": f"Account #,Last Name,Import Problem\n1,Kent,{'x' * 1_500}\n",
    # a quote inside an unquoted value: csv keeps it as text
    "quote_inside_value": f'{HEADER}\n1,Ke"nt,Clark,\n2,Wayne,Bruce,\n',
    # rows narrower than the header, padded by `_fit`, one of them quoted over two lines
    "short_rows": f'{HEADER}\n1,Kent\n2,Wayne,Bruce,\n3,"Prince\nDiana"\n4,Lane,Lois,x\n',
    # rows wider than the header with nothing in the extra cells, cut by `_fit`
    "wide_blank_extras": f"{HEADER}\n1,Kent,Clark,,, ,\n2,Wayne,Bruce,\n",
    # a line of spaces: one cell, blank
    "spaces_line": f"{HEADER}\n   \n1,Kent,Clark,\n",
}


@pytest.mark.parametrize("name", list(NUMBERED))
def test_row_numbers_and_values_are_the_general_paths(tmp_path, name):
    path = _write(tmp_path, NUMBERED[name])

    parsed = read_both_ways(path, LIMITS)
    assert isinstance(parsed, ParsedExport)


@pytest.mark.parametrize("name", ["blank_lines_and_delimiter_lines", "quoted_line_breaks", "lone_carriage_returns",
                                  "mixed_line_endings", "sep_hint", "quoted_header_over_lines",
                                  "excel_formula_accounts", "unicode_spaces_blank_row", "headerless_columns",
                                  "empty_headerless_columns", "no_line_break_at_end", "tabs", "long_ignored_cell",
                                  "quote_inside_value", "short_rows", "wide_blank_extras", "spaces_line"])
def test_these_files_take_the_fast_path(tmp_path, name):
    assert takes_fast_path(_write(tmp_path, NUMBERED[name]), LIMITS)


def test_quoted_line_breaks_shift_the_next_rows_number(tmp_path):
    parsed = reader.read_export(_write(tmp_path, NUMBERED["quoted_line_breaks"]), LIMITS)

    assert parsed.frame["row_number"].tolist() == [2, 4, 7]


def test_blank_pattern_is_pythons_whitespace():
    python = {chr(c) for c in range(0x110000) if chr(c).isspace()}

    assert set(reader._PY_SPACE) == python
    assert all(not unicodedata.category(c).startswith("L") for c in python)


# --- the reader's own tests, read both ways ------------------------------------------------------


@pytest.fixture(autouse=True)
def _read_export_both_ways(monkeypatch):
    """test_reader.py's tests, imported above, read every file both ways and check the two agree."""

    def read_export(path, limits=None, header_map=DEFAULT_HEADERS):
        result = read_both_ways(Path(path), limits, header_map)
        if isinstance(result, ExportRejected):
            raise result
        return result

    monkeypatch.setattr(reader, "read_export", read_export)
    monkeypatch.setattr(reader_tests, "read_export", read_export)


# --- any text: the two paths agree ---------------------------------------------------------------

_PIECES = ["a", "B", "1", " ", ",", ";", "\t", '"', '""', "\n", "\r\n", "\r", "\u00a0", "\ufeff", "=", "é", "\x1c"]


_CELLS = ["", "a", "Kent", " ", "\u00a0", "\x1c", "\ufeff", "é", '"x,y"', '"x;y"', '"a\nb"', '"a\r\nb"', '"a\rb"',
          '"q""q"', '""', '="007"', 'a"b', '"\n"', "x" * 21]
_HEADERS = [["Account #", "Last Name", "First Name"], ["Account #", "", "Last Name", ""], ["Account #"],
            ['"Account #"', '"Last\nName"']]
SMALL_LIMITS = dataclasses.replace(LIMITS, max_rows=5, max_field_length=20)


def small_export(choose) -> str:
    """Headers and rows of the header's width from cells that matter to the two parsers (quotes,
    line breaks of every kind inside and outside quotes, Python-only whitespace, U+FEFF, a value
    over the limit), with now and then a line of noise, a blank line or a short row.
    `choose(options)` picks one (hypothesis' draw, or a seeded random.choice)."""
    delimiter = choose([",", ";", "\t"])
    header = choose(_HEADERS)
    width = len(header)
    lines = [delimiter.join(header)]
    for _ in range(choose(range(8))):
        kind = choose(["row"] * 6 + ["blank", "delimiters", "noise", "short"])
        if kind == "row":
            lines.append(delimiter.join(choose(_CELLS) for _ in range(width)))
        elif kind == "blank":
            lines.append(choose(["", " ", "\r"]))
        elif kind == "delimiters":
            lines.append(delimiter * (width - 1))
        elif kind == "noise":
            lines.append("".join(choose(_PIECES) for _ in range(choose(range(9)))))
        else:
            lines.append(delimiter.join(["9"] * max(1, width - 1)))
    ending = choose(["\n", "\r\n", "\r"])
    return ending.join(lines) + choose([ending, ""])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_small_export_reads_the_same_both_ways(tmp_path, data):
    text = small_export(lambda options: data.draw(st.sampled_from(list(options))))
    read_both_ways(_write(tmp_path, text), SMALL_LIMITS)


def test_the_fast_path_reads_many_small_exports_the_same(tmp_path):
    """Not only refusals: of 300 such files (seeded), a good share goes the fast way."""
    rng = random.Random(14)
    taken = 0
    for _ in range(300):
        path = _write(tmp_path, small_export(lambda options: rng.choice(list(options))))
        read_both_ways(path, SMALL_LIMITS)
        taken += takes_fast_path(path, SMALL_LIMITS)

    assert taken >= 100, taken


def test_a_quote_arrow_took_for_quoting_on_a_line_csv_did_not_read_is_caught(tmp_path, monkeypatch):
    """Lines whose quotes open no field (="00123") are not read by csv: if Arrow's values missed a
    quote of theirs, the fast path must give up."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    path = _write(tmp_path, f'{HEADER}\n="00123",Kent,Clark,\n2,Wayne,Bruce,\n')
    assert takes_fast_path(path, LIMITS)
    real = pa_csv.read_csv

    def quote_lost(*args, **kwargs):
        table = real(*args, **kwargs)
        first = pc.replace_substring(table.column(0), '"', "", max_replacements=1)
        return table.set_column(0, table.field(0), first.cast(pa.large_string()))

    monkeypatch.setattr(pa_csv, "read_csv", quote_lost)
    assert not takes_fast_path(path, LIMITS)
