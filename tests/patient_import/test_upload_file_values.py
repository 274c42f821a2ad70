"""The upload file (transform.write_upload_file) and the csv writer (transform.write_csv) on cells of
every kind a frame can hold: a missing value of any kind is an empty cell (SPEC §5), never its
name, and the Arrow-written upload file stays byte for byte what the csv module writes at every
block boundary."""

from __future__ import annotations

import decimal

import numpy as np
import pandas as pd
import pytest

from include.patient_import import transform
from include.patient_import.practices import Practice
from include.patient_import.schema import UPLOAD_COLUMNS, UPLOAD_EXTRA_COLUMNS
from include.patient_import.untrusted import defuse
from tests.patient_import.frames import normalised

pytestmark = pytest.mark.unit

MISSING = [None, float("nan"), np.nan, np.float32("nan"), pd.NA, pd.NaT, np.datetime64("NaT"),
           np.timedelta64("NaT"), decimal.Decimal("NaN")]
PRACTICE = Practice(id="c", name="C", upload_extra_columns=tuple(UPLOAD_EXTRA_COLUMNS))
FIELDS = ["first_name", "last_name", "address1", "address2", "city", "state", "zip", "email", "home_phone",
          "cell_phone", "birth_date", "last_visit", "status", "gender", "middle_initial"]


@pytest.mark.parametrize("value", MISSING, ids=repr)
def test_a_missing_value_of_any_kind_is_an_empty_cell(value):
    assert defuse(value) == ""


@pytest.mark.parametrize("value, text", [("", ""), ("=1", "'=1"), (0, "0"), (-1, "'-1"), (1.5, "1.5"),
                                         (np.int64(3), "3"), ("NaN", "NaN"), ("<NA>", "<NA>"), (False, "False")])
def test_present_values_are_their_text(value, text):
    assert defuse(value) == text


def _rows(cells: list) -> pd.DataFrame:
    rows = normalised(*[{"account_number": str(n)} for n in range(1, len(cells) + 1)])
    for field in FIELDS:
        if field in rows:
            rows[field] = pd.Series(cells, dtype="object", index=rows.index)
    return rows


def test_missing_values_in_every_column_of_the_upload_file_are_empty_cells(tmp_path):
    """The same file as with None in their place: no `<NA>`, `NaT` or `nan` reaches the office."""
    hostile = transform.write_upload_file(tmp_path / "hostile.csv", _rows(["x", *MISSING]), PRACTICE, {"1": 7})
    plain = transform.write_upload_file(tmp_path / "plain.csv", _rows(["x", *[None] * len(MISSING)]), PRACTICE,
                                        {"1": 7})

    assert hostile.read_bytes() == plain.read_bytes()


def test_missing_values_in_the_csv_writer_are_empty_cells(tmp_path):
    written = transform.write_csv(tmp_path / "rows.csv", ["a", "b"], [["x", value] for value in MISSING])
    assert written.read_bytes().decode("utf-8-sig").splitlines()[1:] == ['"x",""'] * len(MISSING)


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 8, 9])
def test_the_upload_file_is_the_csv_modules_at_every_block_boundary(tmp_path, monkeypatch, count):
    """Blocks of 4: none, part of one, exactly one, one and a row, two, two and a row."""
    cells = ["007", "1e5", "=1", '"q"', "a\r\nb", "\x00", "ü" * 5000, None, pd.NA, 12, "-", "\t"]
    rows = _rows([cells[n % len(cells)] for n in range(count)])
    monkeypatch.setattr(transform, "_BLOCK_ROWS", 4)

    written = transform.write_upload_file(tmp_path / "upload.csv", rows, PRACTICE, {"2": 20}).read_bytes()

    columns = list(UPLOAD_COLUMNS) + [(n, UPLOAD_EXTRA_COLUMNS[n]) for n in PRACTICE.upload_extra_columns]
    expected = [[{"2": 20}.get(row["account_number"]) if name == "ClientID" else (row[source] if source else None)
                 for name, source in columns] for _, row in rows.iterrows()]
    assert written == transform.write_csv(tmp_path / "expected.csv", [n for n, _ in columns], expected).read_bytes()


@pytest.mark.parametrize("sizes", [[], [0], [3, 0, 6], [1] * 9, [9], [4, 5]], ids=repr)
def test_the_upload_file_of_row_blocks_is_that_of_their_rows_whole(tmp_path, monkeypatch, sizes):
    """transform reads the staged rows a block at a time (staging.validated_row_blocks): the
    blocks, each indexed from 0, of any sizes, empty ones too, give the file the whole rows give."""
    cells = ["007", "=1", "a\r\nb", None, 12, "ü"]
    rows = _rows([cells[n % len(cells)] for n in range(sum(sizes))])
    monkeypatch.setattr(transform, "_BLOCK_ROWS", 4)
    starts = np.cumsum([0, *sizes])
    blocks = (rows.iloc[start:start + size].reset_index(drop=True) for start, size in zip(starts, sizes))

    in_blocks = transform.write_upload_file(tmp_path / "blocks.csv", blocks, PRACTICE, {"2": 20, "7": 70})
    whole = transform.write_upload_file(tmp_path / "whole.csv", rows, PRACTICE, {"2": 20, "7": 70})
    assert in_blocks.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("sizes", [[], [3, 0, 6], [1] * 9, [4, 5]], ids=repr)
def test_each_blocks_own_client_ids_give_the_file_all_the_ids_give(tmp_path, sizes):
    """transform gives the writer each block's ClientIDs (`_client_ids_reader`: a block's own probed,
    or those of one read of the practice, filtered to the block's): a function asked for one
    block's ids, and given only those, writes the file the whole mapping writes; it is asked once
    per block, with that block's rows."""
    ids = {"2": 20, "7": 70, "9": 90}
    rows = _rows(["x"] * sum(sizes))
    rows["account_number"] = [str(n) for n in range(len(rows))]
    starts = np.cumsum([0, *sizes])
    asked: list[list[str]] = []

    def ids_of(block: pd.DataFrame) -> dict[str, int]:
        asked.append(block["account_number"].tolist())
        return {a: ids[a] for a in block["account_number"] if a in ids}

    blocks = (rows.iloc[start:start + size].reset_index(drop=True) for start, size in zip(starts, sizes))
    by_block = transform.write_upload_file(tmp_path / "by_block.csv", blocks, PRACTICE, ids_of)
    whole = transform.write_upload_file(tmp_path / "whole.csv", rows, PRACTICE, ids)

    assert by_block.read_bytes() == whole.read_bytes()
    assert asked == [rows["account_number"].iloc[start:start + size].tolist() for start, size in zip(starts, sizes)]
