"""Breaker tests of validate's validated rows as Arrow columns (issue #14, commit 5608044): what the
change replaced is rebuilt here as the reference, on hostile input.

- rows.parquet written from `Validation.rows` has the bytes `to_parquet` gives the frame the old
  code kept (the export normalised without `arrow=`, with the rows' codes): .xlsx numeric, date and
  bool cells, `_x0000_` (NUL), non-BMP text, a column with no value at all, one row, duplicates,
  files rejected for their share of rejected rows and for capacity;
- the stored account numbers read as Arrow text decide the same new patients as the stored index,
  on SQLite and PostgreSQL (blocks, another practice's accounts, a stored patient without one, an
  export's account holding NUL);
- the validate stage's switch to the system memory pool: given back when validate or the save
  raises (a BaseException too), buffers freed to the pool that made them after the switch back,
  and two stages overlapping in threads of one process.
"""

from __future__ import annotations

import datetime
import io
import threading

import openpyxl
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from include.patient_import import catalogue as c
from include.patient_import import files, records
from include.patient_import import validate as validate_module
from include.patient_import.normalize import normalize_export
from include.patient_import.patients import stored_account_numbers, stored_patients
from include.patient_import.practices import Practice
from include.patient_import.reader import read_export
from include.patient_import.rules import CODE, new_patients
from include.patient_import.staging import Job, Validation, save_validation
from include.patient_import.store import Patient, create_store_engine
from include.patient_import.validate import validate_export
from tests.patient_import import test_validate

TODAY = datetime.date(2026, 11, 27)
HEADER = ["Account #", "Last Name", "First Name", "Email", "Home Phone", "Cell Phone", "Zip", "Birth Date",
          "Status", "Last Visit", "Address", "City"]
area = test_validate.area  # a home and a migrated SQLite store


def _workbook(rows: list[list[object]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(HEADER)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _csv(rows: list[list[str]]) -> bytes:
    return "\n".join(",".join(row) for row in [HEADER, *rows]).encode() + b"\n"


def _row(account: str, **values: str) -> list[str]:
    row = dict(zip(HEADER, [account, "Lee", "Bo", f"a{account}@example.com", "2089478877", "", "84010",
                            "03/14/1987", "active", "2025-01-02", "1 Main St", "Town"]))
    row.update({key.replace("_", " "): value for key, value in values.items()})
    return [row[h] for h in HEADER]


# name: (file suffix, bytes, capacity, stored accounts of practice "c", expected rejection code)
CASES = {
    "xlsx_cells": ("xlsx", _workbook([
        [1001, "Lee", "Bo", "a@b.com", 2089478877, None, 84010, datetime.datetime(1987, 3, 14), True,
         datetime.date(2025, 1, 2), 12, 3.5],
        ["1002", "L\U0001F600e", "\U00020000", "\U0001F600@x.com", "208-947-8877 x12", 2089478878.0, "08401",
         "03/14/1987", "active", 45000, "A_x0000_", None],
        ["10_x0000_3", "Le_x0000_e", "Bo", "x_x0000_@y.com", None, None, None, None, None, None, None, None],
        [1004, "Kim", "Li", None, None, None, None, None, None, None, None, None],
        [1004, "Kim", "Li", None, None, None, None, None, None, None, None, None],
    ]), 100, (), None),
    "one_row_no_email_at_all": ("csv", _csv([_row("7", Email="", Cell_Phone="")]), 100, (), None),
    "duplicates_rejected_share": ("csv", _csv([_row("1"), _row("1"), _row("2"), _row("2", City="Other"),
                                                _row("3", Email=""), _row("3", Email="")]), 100, (),
                                  c.TOO_MANY_REJECTED_ROWS),
    "capacity": ("csv", _csv([_row(str(i)) for i in range(1, 6)]), 3, ("1", "99"), c.CAPACITY_EXCEEDED),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rows_parquet_has_the_bytes_of_the_frame_the_old_code_kept(area, name):
    root, engine = area
    suffix, content, capacity, stored, rejected = CASES[name]
    records.sync_practices(engine, {"c": Practice(id="c", name="C")})
    if stored:
        with engine.begin() as conn:
            conn.execute(sa.insert(Patient.__table__), [
                {"practice_id": "c", "third_party_acct_number": a, "last_name": "Lee", "first_name": "Bo",
                 "status": "active"} for a in stored])
    export = root / f"export.{suffix}"
    export.write_bytes(content)
    job = Job(import_id="imp1", practice_id="c", source=str(export), export_name=export.name, sha256="0" * 64,
              size=len(content), exported_on="2026-11-20", dry_run=False)
    result = validate_export(engine, job, Practice(id="c", name="C", capacity=capacity), today=TODAY)

    assert (result.rejection.code if result.rejection else None) == rejected
    assert isinstance(result.rows, pa.Table) and result.frame is None
    save_validation("imp1", result)
    staged = (files.staging_dir("imp1") / "rows.parquet").read_bytes()
    # The old code's frame: the export normalised as before (object columns, no Arrow), its codes.
    old = normalize_export(read_export(export).frame, today=TODAY).frame
    # An object column, as `winning_codes` gives (pandas 3 would make an array of texts `str`).
    old[CODE] = pd.Series(result.rows_frame()[CODE].to_numpy(dtype=object), index=old.index, dtype=object)
    save_validation("imp1", Validation(frame=old))
    assert staged == (files.staging_dir("imp1") / "rows.parquet").read_bytes()


# ---------------------------------------------------------------- capacity's stored account numbers

def test_stored_account_numbers_decide_the_new_patients_the_stored_index_decides(store_url):
    engine = create_store_engine(store_url)
    try:
        practice = Practice(id="c", name="C", capacity=100)
        records.sync_practices(engine, {"c": practice, "d": Practice(id="d", name="D")})
        stored = [("c", "1"), ("c", "5"), ("c", "6"), ("c", "8"), ("c", "0"), ("c", None), ("d", "7"), ("d", "9")]
        with engine.begin() as conn:
            conn.execute(sa.insert(Patient.__table__), [
                {"practice_id": owner, "third_party_acct_number": account, "last_name": "Lee", "first_name": "Bo",
                 "status": "active"} for owner, account in stored])
        frame = normalize_export(pd.DataFrame({
            "row_number": [2, 3, 4, 5, 6, 7, 8, 9],
            "account_number": ["1", "", "5", "7", "9", "8\x00", "000", "6"],
            "status": ["", "", "", "", "inactive", "", "", ""]}), today=TODAY).frame
        frame[CODE] = None
        with engine.connect() as conn:
            arrow = stored_account_numbers(conn, "c", block=2)  # blocks of 2: 5 accounts in 3 blocks
            index = stored_patients(conn, "c").index
    finally:
        engine.dispose()

    assert sorted(arrow.to_pylist()) == sorted(index) == ["0", "1", "5", "6", "8"]
    assert new_patients(frame, arrow, practice).tolist() == new_patients(frame, index, practice).tolist()


# ---------------------------------------------------------------- the validate stage's memory pool

def _job(import_id: str) -> None:
    Job(import_id=import_id, practice_id="c", source="x.csv", export_name="x.csv", sha256="0" * 64, size=1,
        exported_on="2026-11-20", dry_run=False).save()


class _Interrupted(BaseException):
    """Not an Exception: as KeyboardInterrupt or a task's timeout would be."""


@pytest.mark.parametrize("where, error", [("validate", _Interrupted), ("validate", RuntimeError),
                                          ("save", OSError), ("save", _Interrupted)])
def test_the_validate_stage_gives_the_pool_back_when_it_raises(area, monkeypatch, where, error):
    _, engine = area
    _job("imp4")
    before = pa.default_memory_pool().backend_name
    seen = []

    def failing(*_args, **_kwargs):
        seen.append(pa.default_memory_pool().backend_name)
        raise error("boom")

    monkeypatch.setattr(validate_module, "load_practices", dict)
    if where == "validate":
        monkeypatch.setattr(validate_module, "validate_export", failing)
    else:
        monkeypatch.setattr(validate_module, "validate_export", lambda *_a, **_k: Validation())
        monkeypatch.setattr(validate_module, "save_validation", failing)
    with pytest.raises(error):
        validate_module.validate_import(engine, "imp4")
    assert seen == ["system"] and pa.default_memory_pool().backend_name == before


def test_buffers_are_freed_to_the_pool_that_made_them_across_the_switch():
    system, default = pa.system_memory_pool(), pa.default_memory_pool()
    system_before, default_before = system.bytes_allocated(), default.bytes_allocated()
    made_before = pa.array(["x" * 64] * 4096)
    with validate_module._arrow_on_the_c_heap():
        made_inside = pa.array(["y" * 64] * 4096)
        assert system.bytes_allocated() > system_before
        del made_before  # made by the default pool, freed while the system pool is the default
        assert default.bytes_allocated() == default_before
    del made_inside  # made by the system pool, freed after the switch back
    assert system.bytes_allocated() == system_before and pa.default_memory_pool().backend_name == default.backend_name


def test_nested_switches_give_each_level_its_pool_back():
    before = pa.default_memory_pool().backend_name
    with validate_module._arrow_on_the_c_heap():
        with validate_module._arrow_on_the_c_heap():
            assert pa.default_memory_pool().backend_name == "system"
        assert pa.default_memory_pool().backend_name == "system"
    assert pa.default_memory_pool().backend_name == before


def test_two_validate_stages_overlapping_in_threads_give_the_pool_back(area, monkeypatch):
    _, engine = area
    _job("impA")
    _job("impB")
    original = pa.default_memory_pool()
    before = original.backend_name
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def validated(_engine, job, *_args, **_kwargs):
        if job.import_id == "impA":
            a_inside.set()
            b_inside.wait(10)
        else:
            b_inside.set()
            a_done.wait(10)
        return Validation()

    monkeypatch.setattr(validate_module, "validate_export", validated)
    monkeypatch.setattr(validate_module, "load_practices", dict)

    def stage(import_id: str, after: threading.Event | None, done: threading.Event | None) -> None:
        try:
            if after is not None:
                after.wait(10)
            validate_module.validate_import(engine, import_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            if done is not None:
                done.set()

    threads = [threading.Thread(target=stage, args=("impA", None, a_done)),
               threading.Thread(target=stage, args=("impB", a_inside, None))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        assert pa.default_memory_pool().backend_name == before
    finally:
        pa.set_memory_pool(original)  # the other tests of this process on the pool they had

