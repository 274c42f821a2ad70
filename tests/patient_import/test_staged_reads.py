"""What the stages after validate read back from staging (staging.py): the rows as read, the
largest staged file (a million rows take gigabytes as a frame), are read by transform alone, and
only the rows it writes to the rejected-rows file; the load and approval read none of them.
(Blocks and chunks of every size against the whole file: test_staged_blocks_breaker.py.)"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from include.patient_import import staging, transform
from include.patient_import.schema import FIELDS, ROW_NUMBER
from tools.corpus import csv_text, prepare_home, run_import
from tools.harness.registry import practice, registry_yaml

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

PRACTICE = "staged_clinic"
# Approval with the default thresholds, which these imports are under: the approval stage reads staging.
REGISTRY = registry_yaml(practice(PRACTICE, "Staged Clinic", approval={}))
VALID = {"account_number": "1", "last_name": "Doe", "first_name": "Jan", "middle_initial": "",
         "address1": "1 Main St", "address2": "", "city": "Springfield", "state": "IL", "zip": "62704",
         "home_phone": "", "cell_phone": "", "email": "", "birth_date": "03/14/1987", "gender": "F",
         "status": "Active", "last_visit": "11/02/2026"}


@pytest.mark.parametrize("rejected", [[], [3], [2, 5, 17]])
def test_only_transform_reads_the_rows_as_read_and_only_the_rejected_ones(tmp_path, monkeypatch, rejected):
    engine = prepare_home(tmp_path / "home", monkeypatch, practices_yaml=REGISTRY)
    rows = []
    for row in range(2, 18):  # spreadsheet rows 2-17; a rejected one has no last name (under 25 %)
        values = dict(VALID, account_number=str(100 + row), last_name="" if row in rejected else f"Doe{row}")
        rows.append([values[f.name] for f in FIELDS])
    export = tmp_path / "export.csv"
    export.write_text(csv_text(rows, header=[f.header for f in FIELDS]), encoding="utf-8")
    opened: list[str] = []  # the staged files read a block at a time (`staging._parquet_reader`)
    real_reader = staging._parquet_reader

    def recorded_reader(path):
        opened.append(Path(str(path)).name)
        return real_reader(path)

    raw_rows: list[list[int]] = []  # the rows as read that transform got back
    real_raw_rows = staging.load_raw_rows

    def recorded_raw_rows(import_id, rows):
        got = real_raw_rows(import_id, rows)
        raw_rows.append(got[ROW_NUMBER].tolist())
        return got

    monkeypatch.setattr(staging, "_parquet_reader", recorded_reader)
    monkeypatch.setattr(transform, "load_raw_rows", recorded_raw_rows)
    [imported] = run_import(engine, export, run_id="staged_reads", practice_id=PRACTICE)
    engine.dispose()

    # Read once, by transform alone, and only when a row was rejected; only those rows kept.
    assert opened.count("raw.parquet") == (1 if rejected else 0)
    assert raw_rows == ([rejected] if rejected else [])
    assert imported.report["counts"]["rejected"] == len(rejected)
    assert imported.report["counts"]["inserted"] == 16 - len(rejected)
    written = imported.report["files"]["rejected_rows"]
    if not rejected:
        assert written is None
        return
    with open(written, encoding="utf-8-sig", newline="") as handle:
        lines = list(csv.reader(io.StringIO(handle.read())))
    assert [line[0] for line in lines[1:]] == [str(100 + row) for row in rejected]
    assert [line[-1] for line in lines[1:]] == [str(row) for row in rejected]

