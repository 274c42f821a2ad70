"""Inputs chosen to break the reader's columnar fast path (issue #14): both paths must agree.

Each input is read with `reader._read_export(..., fast=False)` and `fast=True` and the outcomes
compared (`test_reader_fast_path.read_both_ways`: frame, row numbers, headers, warnings, or the
same rejection). The second half holds what the fast path did wrong before: files it read far
slower, or with far more memory, than the general path (a file quoting every value, rows written
short, Excel's empty columns up to XFD), which it must now hand to the general path at once.
Costs are shown by counting the Python work done, never by timing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from include.patient_import import reader
from include.patient_import.reader import ParsedExport
from tests.patient_import.test_reader_fast_path import LIMITS, read_both_ways, takes_fast_path

pytestmark = pytest.mark.unit

H = "Account #,Last Name,First Name,Address 2"
ROWS = "1,Kent,Clark,x\n2,Wayne,Bruce,y\n"
SMALL = dataclasses.replace(LIMITS, max_rows=5, max_field_length=20, max_columns=4)


def _write(tmp_path: Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    path = tmp_path / "export.csv"
    path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return path


EDGES: dict[str, str | bytes] = {
    "quote_inside_unquoted": f'{H}\n1,Ke"nt,Cl"ark,x\n2,W"",B,y\n',
    "doubled_quotes": f'{H}\n1,"Ke""nt","""",""""""\n',
    "quoted_delimiter": f'{H}\n1,"Kent, Jr","a;b","c\td"\n',
    "quoted_cr": f'{H}\n1,"Ke\rnt",Clark,x\n2,W,B,y\n',
    "quoted_lf": f'{H}\n1,"Ke\nnt",Clark,x\n2,W,B,y\n',
    "quoted_crlf": f'{H}\r\n1,"Ke\r\nnt",Clark,x\r\n2,W,B,y\r\n',
    "lone_cr_file": f"{H}\r1,Kent,Clark,x\r2,W,B,y\r",
    "mixed_endings": f"{H}\r\n1,Kent,Clark,x\r2,W,B,y\n3,P,D,z\r\n",
    "formula_quote": f'{H}\n="00123",Kent,Clark,x\n="0,1",W,B,y\n',
    "formula_quote_delimiter": f'{H}\n="a""b",Kent,="",x\n',
    "tabs": H.replace(",", "\t") + '\n1\tKent\t"Cl\tark"\tx\n',
    "semicolons": H.replace(",", ";") + '\n1;Kent;"Cl;ark";x\n',
    "sep_hint_semicolon": "sep=;\n" + H.replace(",", ";") + "\n1;Kent;Clark;x\n",
    "short_rows": f"{H}\n1,Kent\n2\n3,W,B,y\n",
    "long_rows_blank_extras": f"{H}\n1,Kent,Clark,x,,  ,\u00a0\n2,W,B,y\n",
    "long_row_with_value": f"{H}\n1,Kent,Clark,x,,oops\n2,W,B,y\n",
    "trailing_delimiters": f"{H},\n1,Kent,Clark,x,\n2,W,B,y,\n",
    "blank_lines_middle_end": f"{H}\n\n1,Kent,Clark,x\n   \n\t\n,,,\n2,W,B,y\n\n\n \n",
    "whitespace_only_cells": f"{H}\n \u2003,\u3000,\x1c,\x85\n1,Kent,Clark,x\n",
    "no_final_newline": f"{H}\n1,Kent,Clark,x",
    "no_final_newline_quoted": f'{H}\n1,Kent,Clark,"x\ny"',
    "utf8_bom": "\ufeff" + f"{H}\n{ROWS}",
    "bom_twice": "\ufeff\ufeff" + f"{H}\n{ROWS}",
    "bom_in_later_row": f"{H}\n1,Kent,Clark,x\n\ufeff2,W,B,y\n",
    "bom_after_blank_line": f"{H}\n\n\ufeff2,W,B,y\n",
    "bom_alone_after_header": f"{H}\n\ufeff\n2,W,B,y\n",
    "non_ascii": f"{H}\n1,Müller,Straße,中文\n2,😀,e\u0301,ß\n",
    "python_only_line_breaks": f"{H}\n1,a\u2028b,c\x85d,e\x0bf\n2,g\x0ch,i\x1cj,k\u2029l\n",
    "python_only_breaks_alone": f"{H}\n\u2028\n\x85\n\x0b,\x0c,,\n1,Kent,Clark,x\n",
    "cp1252": f"{H}\n1,Müller,Straße,é\n2,Sørensen,Zoë,\u20ac\n".encode("cp1252"),
    "cp1252_quoted_newline": f'{H}\n1,"Mü\nller",Straße,é\n'.encode("cp1252"),
    "cell_at_limit": f"{H}\n1,{'k' * 20},Clark,x\n",
    "cell_over_limit": f"{H}\n1,{'k' * 21},Clark,x\n",
    "cell_over_limit_multibyte": f"{H}\n1,{'é' * 21},Clark,x\n",
    "cell_at_limit_multibyte": f"{H}\n1,{'中' * 20},Clark,x\n",
    "quoted_cell_over_limit": f'{H}\n1,"{"k" * 19}""",Clark,x\n',
    "header_repeated": f"{H}\n{H}\n1,Kent,Clark,x\n",
    "duplicate_columns": "Account #,Last Name,Last Name\n1,Kent,Kent\n",
    "duplicate_unknown_columns": "Account #,Colour,Colour\n1,red,blue\n",
    "empty_file": "",
    "blank_file": "\n\n  \n",
    "header_only": f"{H}\n",
    "header_only_no_newline": H,
    "one_column": "Account #\n1\n2\n\n3\n",
    "one_column_quoted": 'Account #\n"1"\n""\n"3\n4"\n',
    "one_row": f"{H}\n1,Kent,Clark,x\n",
    "too_many_rows": H + "\n" + "".join(f"{i},K,C,x\n" for i in range(1, 8)),
    "rows_at_limit": H + "\n" + "".join(f"{i},K,C,x\n" for i in range(1, 6)),
    "rows_at_limit_with_blanks": H + "\n" + "".join(f"{i},K,C,x\n\n,,,\n" for i in range(1, 6)),
    "too_many_columns": "Account #,Last Name,First Name,Address 2,City\n1,K,C,x,y\n",
    "text_after_closing_quote": f'{H}\n1,"Kent" ,Clark,x\n',
    "unclosed_quote": f'{H}\n1,"Kent,Clark,x\n2,W,B,y\n',
    "tsv_page_copy": H.replace(",", "\t") + '\n1\t"Chip" Charles\tC\tx\n2\tW\tB\ty\n',
    "quote_after_space": f'{H}\n1, "Kent",Clark,x\n',
    "quote_only_line": f'{H}\n"\n1,Kent,Clark,x\n"\n',
    "quote_pair_line": f'{H}\n""\n1,Kent,Clark,x\n',
    "cell_at_default_limit": f"{H}\n1,{'k' * 1_000},Clark,x\n",
    "cell_over_default_limit": f"{H}\n1,{'k' * 1_001},Clark,x\n",
    **{f"ignored_cell_{n}": f"Account #,Last Name,Import Problem\n1,Kent,{'p' * n}\n2,W,q\n"
       for n in (131_071, 131_072, 131_073)},
    "ignored_cell_quoted_at_csv_limit": f'Account #,Last Name,Import Problem\n1,Kent,"{"p" * 131_072}"\n',
    "blank_cell_over_csv_limit": f"{H}\n1,Kent,Clark,x,{' ' * 131_073}\n",
    "header_quoted_multiline": '"Account\n#",Last Name\n1,Kent\n',
    "blank_lines_before_header_quotes": f'""\n\n"",""\n{H}\n{ROWS}',
}


@pytest.mark.parametrize("name", list(EDGES))
@pytest.mark.parametrize("limits", [SMALL, LIMITS], ids=["small_limits", "larger_limits"])
def test_edge_input_reads_the_same_both_ways(tmp_path, name, limits):
    read_both_ways(_write(tmp_path, EDGES[name]), limits)


@pytest.mark.parametrize("rows", [1, 200_000])
def test_one_row_and_200000_rows_read_the_same_and_take_the_fast_path(tmp_path, rows):
    path = _write(tmp_path, H + "\r\n" + "".join(f"{i},K\u00e9nt,Clark,Apt {i}\r\n" for i in range(rows)))
    limits = dataclasses.replace(LIMITS, max_rows=rows)

    assert takes_fast_path(path, limits)
    parsed = read_both_ways(path, limits)
    assert isinstance(parsed, ParsedExport) and len(parsed.frame) == rows


# --- found: far slower, or far more memory, than the general path -------------------------------

MANY = 5_000


def _count_calls(monkeypatch, name: str) -> list[int]:
    calls = [0]
    real = getattr(reader, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(reader, name, counted)
    return calls


def test_a_file_quoting_every_value_goes_the_general_way_before_csv_reads_its_lines(tmp_path, monkeypatch):
    """Every line has a quote opening a field: the fast path handed each to csv (the general path's
    own work) and then compared Arrow's values with csv's, twice the general path's time."""
    path = _write(tmp_path, H + "\n" + "".join(f'"{i}","Kent","Clark","x"\n' for i in range(MANY)))
    asked = []
    monkeypatch.setattr(reader._TextLines, "_quoted_records", lambda *args: asked.append(1) or {})

    assert not takes_fast_path(path, LIMITS)
    assert not asked
    monkeypatch.undo()
    read_both_ways(path, LIMITS)


def test_a_file_of_short_rows_goes_the_general_way_after_a_few(tmp_path, monkeypatch):
    """Rows written without their trailing empty cells: Arrow called back into Python for each and
    `_fit` padded each, ten times the general path's time."""
    path = _write(tmp_path, H + "\n" + "".join(f"{i},Kent\n" for i in range(MANY)))
    fitted = _count_calls(monkeypatch, "_fit")

    assert not takes_fast_path(path, LIMITS)
    assert fitted[0] == 0
    monkeypatch.undo()
    read_both_ways(path, LIMITS)


def test_a_few_quoted_and_short_rows_still_take_the_fast_path(tmp_path):
    lines = [f'{i},"Kent\nClark",x,y' if i % 50 == 0 else f"{i},Kent" if i % 50 == 1 else f"{i},K,C,x"
             for i in range(MANY)]
    path = _write(tmp_path, H + "\n" + "\n".join(lines) + "\n")

    assert takes_fast_path(path, LIMITS)
    read_both_ways(path, LIMITS)


def test_excels_empty_columns_up_to_its_used_range_go_the_general_way(tmp_path):
    """A header of 4 names and hundreds of empty cells (Excel's used range): Arrow held every empty
    cell of every row (2 GB for an 80 MB file at 16,384 columns) where `_collect` holds a length."""
    empty = "," * 400
    path = _write(tmp_path, H + empty + "\n" + "".join(f"{i},Kent,Clark,x{empty}\n" for i in range(50)))

    assert not takes_fast_path(path, LIMITS)
    parsed = read_both_ways(path, LIMITS)
    assert isinstance(parsed, ParsedExport) and len(parsed.frame.columns) == 5


def test_a_table_over_the_cell_budget_goes_the_general_way(tmp_path, monkeypatch):
    """Blank rows and empty columns are cells Arrow holds and `_collect` drops: bounded (SPEC §7)."""
    path = _write(tmp_path, H + "\n1,Kent,Clark,x\n" + "".join(f"{i},Kent,Clark,x\n,,,\n" for i in range(150)))
    assert takes_fast_path(path, LIMITS)
    monkeypatch.setattr(reader, "_MAX_ARROW_CELLS", 4 * 300, raising=False)

    assert not takes_fast_path(path, LIMITS)
    read_both_ways(path, LIMITS)


def test_a_table_of_mostly_empty_cells_goes_the_general_way(tmp_path):
    """Excel's rows of delimiters below the data, 200 columns wide: Arrow parsed and tested every
    empty cell (twice the general path's time, four times its memory, at 190,000 such rows)."""
    header = ",".join(["Account #", "Last Name", *(f"Note {i}" for i in range(198))])
    path = _write(tmp_path, header + "\n1,Kent" + "," * 198 + "\n" + ("," * 199 + "\n") * 2_000)

    assert not takes_fast_path(path, LIMITS)
    parsed = read_both_ways(path, LIMITS)
    assert isinstance(parsed, ParsedExport) and len(parsed.frame) == 1


def test_values_over_many_lines_on_every_row_go_the_general_way_after_a_few(tmp_path, monkeypatch):
    """One quote a row, but a note of 40 lines in each: csv read every line for the fast path
    (then the values were compared), the general path's whole work and more."""
    note = '"' + "\n".join(["line"] * 40) + '"'
    path = _write(tmp_path, H + "\n" + "".join(f"{i},Kent,Clark,{note}\n" for i in range(500)))
    read = [0]
    real = reader._TextLines._quoted_records

    def counted(self, data, *args):
        read[0] = 0
        return real(self, _Counted(data, read), *args)

    monkeypatch.setattr(reader._TextLines, "_quoted_records", counted)

    assert not takes_fast_path(path, LIMITS)
    assert read[0] <= reader._FEW_SLOW_LINES + 1
    monkeypatch.undo()
    read_both_ways(path, LIMITS)


class _Counted(bytes):
    """The text, counting the slices taken of it (one a line handed to csv)."""

    def __new__(cls, data, read):
        obj = super().__new__(cls, data)
        obj.read = read
        return obj

    def __getitem__(self, key):
        if isinstance(key, slice):
            self.read[0] += 1
        return super().__getitem__(key)
