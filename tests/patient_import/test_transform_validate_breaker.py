"""Breaker tests for transform's and validate's speed changes (issue #14): the upload file of the
stage's column-limited, Arrow-text read (`staging.validated_row_blocks(columns=, texts=)`) and its
ClientIDs from one read of the practice (`transform._client_ids_reader`, `_WHOLE_READ_RATIO`), and
the warnings as one table capped once (`NormalizedExport.warnings`), held to the slower paths
they replaced at their boundaries."""

from __future__ import annotations

import random
from datetime import date
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from include.patient_import import patients as patients_module
from include.patient_import import pipeline, problem_table, records, staging, transform
from include.patient_import.extract import RunInfo, extract_exports
from include.patient_import.patients import stored_client_ids, stored_patients
from include.patient_import.practices import Practice, load_practices
from include.patient_import.schema import ROW_NUMBER, UPLOAD_EXTRA_COLUMNS
from include.patient_import.store import Patient
from tests.patient_import.test_patients import (
    PRACTICE,
    put,
    store,  # noqa: F401 - the fixture
)
from tools.corpus import csv_text, prepare_home
from tools.harness.registry import practice, registry_yaml

# Tier: unit, the PostgreSQL variants `postgres` (tests/conftest.py).

OTHER = Practice(id="other_clinic", name="Other", systems=frozenset({"drip_education"}))


# ---------------------------------------------------------------- ClientIDs at the ratio's boundary


def _reads(monkeypatch) -> list[str]:
    """How transform read the ClientIDs: "whole" for each read of the practice's, "probe" for each
    block's own."""
    seen: list[str] = []

    def whole(*args, **kwargs):
        seen.append("whole")
        return stored_client_ids(*args, **kwargs)

    def probe(*args, **kwargs):
        seen.append("probe" if kwargs.get("accounts") is not None else "other")
        return stored_patients(*args, **kwargs)

    monkeypatch.setattr(transform, "stored_client_ids", whole)
    monkeypatch.setattr(transform, "stored_patients", probe)
    return seen


@pytest.mark.parametrize("over", [0, 1], ids=["exactly twice the file", "twice the file and one"])
def test_client_ids_at_the_whole_read_boundary_are_the_probed_ones(store, monkeypatch, over):  # noqa: F811
    """A file of 4 rows in two blocks (a repeated account, this import's own patient, another
    practice's, a new one) against a practice of 8 (+1) stored patients, one of them created by
    this import: one whole read for the stage at 8, a probe per block at 9, and the same ids
    either way."""
    records.sync_practices(store, {PRACTICE.id: PRACTICE, OTHER.id: OTHER})
    put(store, *[{"third_party_acct_number": str(n)} for n in range(1, 8 + over)],
        {"third_party_acct_number": "50", "created_import_id": "imp_1"})
    put(store, {"third_party_acct_number": "77", "practice_id": OTHER.id})  # another practice's
    with store.connect() as conn:
        count = patients_module.count_patients(conn, PRACTICE.id)
        ids = stored_patients(conn, PRACTICE.id, ["id"])["id"].to_dict()
    assert count == 8 + over
    job = SimpleNamespace(practice_id=PRACTICE.id, import_id="imp_1")
    blocks = [pd.DataFrame({"account_number": pd.Series(accounts, dtype="object")})
              for accounts in (["3", "50"], ["77", "3", "2"])]
    reads = _reads(monkeypatch)

    ids_of = transform._client_ids_reader(store, job, 4)
    found = [ids_of(block) for block in blocks]
    probed = [transform._known_client_ids(store, job, block["account_number"]) for block in blocks]

    assert reads == (["probe", "probe"] if over else ["whole"]) + ["probe", "probe"]
    assert found == probed == [{"3": ids["3"]}, {"3": ids["3"], "2": ids["2"]}]


# ---------------------------------------------------------------- the stage's upload file

CELLS = ["=1+1", "+1", "-1", "@x", "\tx", "\rx", "\uff1d1", "\uff0b1", "\u2212x", "\uff20x", 'a"b"', "a\nb",
         "a\r\nb", "\U0001F600x", "", " ", "007", "1e5", "2020-01-01", "12.50", "O'Brien", "-", "'", "\u00fc" * 3]
HEADER = ["Account #", "Last Name", "First Name", "MI", "Address", "Address 2", "City", "State", "Zip",
          "Home Phone", "Cell Phone", "Email", "Birth Date", "Sex", "Status", "Last Visit"]


def _hostile(account: str, i: int) -> list[str]:
    return [account, "L" + CELLS[i % len(CELLS)], CELLS[(i + 1) % len(CELLS)] or "F",
            *[CELLS[(i + k) % len(CELLS)] for k in range(2, 15)]]


def _plain(account: str, i: int) -> list[str]:
    return [account, f"Last{i}", f"First{i}", "Q", f"{i} Main St", "", "Rye", "NY", "10580", "2175550100", "",
            f"p{i}@example.com", "03/14/1987", "F", "active", "01/02/2020"]


def _import(engine, home, name: str, practice_id: str, rows: list[list[str]], exported_on: date,
            stages=("validate",)) -> str:
    path = home / "drop" / f"{name}.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text(csv_text(rows, header=HEADER), encoding="utf-8-sig")  # a BOM: no encoding guess
    [import_id] = extract_exports(engine, practice_id, RunInfo(dag_id="t", run_id=name, map_index=0),
                                  export_file=str(path), exported_on=exported_on)
    pipeline.run_stages(engine, import_id, stages, report=False)
    return import_id


def test_the_stages_upload_file_is_that_of_the_whole_validated_rows_as_python_values(tmp_path, monkeypatch, store_url):
    """transform reads only the columns it needs, the written-only ones as Arrow text, and each
    block's ClientIDs from the practice (whole or probed): byte for byte the file the whole
    validated frame as Python values and every id of the patients known before the import write,
    for hostile cells in every upload column (every extra column), stored, new, repeated and
    invalid account numbers, another practice's patient and, after the load, this import's own.
    Blocks of 3 rows against 6 stored patients, the ids read whole once and probed per block; both stores."""
    yaml = registry_yaml(practice("demo_clinic", "Demo", systems=["drip_education"],
                                  upload_extra_columns=list(UPLOAD_EXTRA_COLUMNS)),
                         practice("other_clinic", "Other", systems=["drip_education"]))
    home = tmp_path / "home"
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", str(home / "drop"))
    engine = prepare_home(home, monkeypatch, limits=False, practices_yaml=yaml, url=store_url)
    try:
        records.sync_practices(engine, load_practices())
        with engine.begin() as conn:  # stored before the import: 1001-1006 here, 3001 in another practice
            conn.execute(sa.insert(Patient.__table__), [
                {"practice_id": practice_id, "third_party_acct_number": account, "first_name": "A",
                 "last_name": "B", "status": "active"}
                for practice_id, account in [*[("demo_clinic", str(1000 + i)) for i in range(1, 7)],
                                             ("other_clinic", "3001")]])
        rows = ([_hostile(str(1000 + i), i) for i in range(1, 5)]
                + [_hostile(str(2000 + i), i) for i in range(len(CELLS))]
                + [_plain("3001", 3), _plain("1005", 5), _plain("1005", 5), _plain("=12", 2), _plain("", 4),
                   _plain("4000", 4)[:14] + ["inactive", ""]])
        import_id = _import(engine, home, "mixed", "demo_clinic", rows, date(2026, 4, 1))
        demo = load_practices()["demo_clinic"]
        with engine.connect() as conn:
            known = stored_patients(conn, "demo_clinic", ["id"])["id"]
        expected = transform.write_upload_file(
            tmp_path / "expected.csv", transform.upload_rows(staging.load_validation(import_id).frame, demo), demo,
            {str(a): int(i) for a, i in known.items()}).read_bytes()

        reads, whole_blocks, ratio = _reads(monkeypatch), staging.ROW_BLOCK, transform._WHOLE_READ_RATIO
        monkeypatch.setattr(staging, "ROW_BLOCK", 3)  # the transform's blocks only
        pipeline.run_stages(engine, import_id, ("transform",), report=False)
        first = storage_bytes(import_id)
        monkeypatch.setattr(transform, "_WHOLE_READ_RATIO", 0)  # every block probed
        pipeline.run_stages(engine, import_id, ("transform",), report=False)
        probed = storage_bytes(import_id)
        blocks = -(-len(rows) // 3)
        assert reads == ["whole"] + ["probe"] * blocks  # one read for the stage, then one per block
        monkeypatch.setattr(transform, "_WHOLE_READ_RATIO", ratio)
        monkeypatch.setattr(staging, "ROW_BLOCK", whole_blocks)
        pipeline.run_stages(engine, import_id, ("approval", "load"), report=False)
        monkeypatch.setattr(staging, "ROW_BLOCK", 3)
        pipeline.run_stages(engine, import_id, ("transform",), report=False)  # again, its patients stored

        assert first == probed == expected == storage_bytes(import_id)
        assert expected.count(b"\r\n") == 1 + len(CELLS) + 4 + 2  # header, hostile, stored 1001-1004, 3001, 1005
        assert b'"\'+1"' in expected and b'"\'@x"' in expected  # defused
    finally:
        engine.dispose()


def storage_bytes(import_id: str) -> bytes:
    from include.patient_import import storage

    return storage.path_of(str(staging.staged_upload(import_id))).read_bytes()


# ---------------------------------------------------------------- warnings at the cap


@pytest.mark.parametrize("seed", range(6))
def test_warnings_in_one_table_at_and_over_a_small_cap_are_each_fields_added_in_turn(monkeypatch, seed):
    """With a cap of 3 per code and field, many fields and codes at once, exactly at the cap and one
    over, shuffled row numbers and rejected rows: the one table's listed problems, order, counts and
    omitted totals are those of a table per field added in turn (the algorithm it replaced)."""
    from include.patient_import.normalize import normalize_export
    from tests.patient_import.test_problem_volume import warnings_field_by_field

    monkeypatch.setattr(problem_table, "LISTED_PER_CODE_AND_FIELD", 3)
    rng = random.Random(seed)
    bad = {"zip": ["123", "x", "62704", None], "gender": ["?", "F", None], "email": ["a@", "ok@example.com", None],
           "home_phone": ["12", "2175550100", None], "cell_phone": ["1", None], "state": ["ZZZ", "IL", None],
           "birth_date": ["13/45/2000", "01/02/1990", None], "last_visit": ["bad", None],
           "status": ["weird", "active"], "middle_initial": ["AB", "A", None]}
    count = [3, 4, 7, 13, 1, 20][seed]
    raw = pd.DataFrame({f: [rng.choice(v) for _ in range(count)] for f, v in bad.items()}, dtype="object")
    raw["account_number"] = [str(rng.randint(1, 9)) for _ in range(count)]
    raw["last_name"], raw["first_name"] = "L", "F"
    raw.insert(0, ROW_NUMBER, rng.sample(range(2, 5 * count + 2), count))
    normalized = normalize_export(raw, today=date(2026, 11, 30))
    rejected = None if seed % 2 else np.array([rng.random() < 0.3 for _ in range(count)])

    expected = warnings_field_by_field(normalized, rejected)
    found = normalized.warnings(rejected)

    pd.testing.assert_frame_equal(found.listed, expected.listed)
    pd.testing.assert_frame_equal(found.omitted, expected.omitted)
    assert found.counts() == expected.counts()
