"""The load and approval a block of the export at a time (issue #14's memory): each block decided
against only the stored patients it names (`patients.stored_patients(accounts=...)`,
`patients.decided_rows`), its rows to write staged as it is decided, the write applied once when
every block is (`load._PatientWrite`). The store, the change log and every row's outcome must be
what the whole frame at once gives, on both databases."""

from __future__ import annotations

import datetime
from contextlib import contextmanager

import numpy as np
import pytest
import sqlalchemy as sa

from include.patient_import import load as load_module
from include.patient_import import patients as patients_module
from include.patient_import import problems as p
from include.patient_import import staging
from include.patient_import.patients import COMPARED, StoredDateError, stored_patients
from include.patient_import.practices import Practice
from include.patient_import.store import PatientChange
from tests.patient_import import test_load
from tests.patient_import import test_load_seen as seen_cases
from tests.patient_import.test_load import ANN, APRIL, BOB, DRIP, MARCH, export, load, outcomes, stored
from tests.patient_import.test_load_seen import CASES, _comparable, _run

# Tier: unit, PostgreSQL (`postgres`).

two_stores, home = seen_cases.two_stores, seen_cases.home  # the fixtures, shared


@contextmanager
def home_reading_blocks_of(block: int | None, tmp_path, monkeypatch, approval_yaml: str):
    """(home, engine): a fresh home of its own whose stages read the staged rows `block` at a
    time (`staging.ROW_BLOCK`; None: the default), its registry's practice with `approval_yaml`."""
    from tests.patient_import.test_approval import home_with

    with monkeypatch.context() as patched:
        if block:
            patched.setattr(staging, "ROW_BLOCK", block)
        home = tmp_path / f"block_{block}"
        home.mkdir()
        engine = home_with(home, patched, approval_yaml)
        try:
            yield home, engine
        finally:
            engine.dispose()


def _in_blocks_of(size: int, monkeypatch) -> None:
    """Every frame `load_import` is given reaches it as blocks of `size` rows, as the load stage's
    `staging.validated_row_blocks` gives a staged export."""
    real = load_module._blocks_of

    def blocks_of(frame):
        whole = real(frame)

        def blocks(columns):
            for block in whole(columns):
                for start in range(0, len(block), size):
                    yield block.iloc[start:start + size].reset_index(drop=True)
        return blocks

    monkeypatch.setattr(load_module, "_blocks_of", blocks_of)


# Blocks of one row where the outcomes mix most; odd account numbers are the breaker's
# (test_load_blocks_breaker.py).
@pytest.mark.parametrize("case, size", [("seen, updated, inserted, older and rejected rows in one import", 1),
                                        ("a load of seen rows dies and is retried", 1), ("seeded mix 0", 1),
                                        ("seeded mix 1", 3)])
def test_a_load_in_blocks_leaves_the_store_and_change_log_as_the_whole_frame(case, size, two_stores, home,
                                                                              monkeypatch):
    steps = CASES[case]
    whole = _run(two_stores[0], steps, monkeypatch)
    with monkeypatch.context() as patched:
        _in_blocks_of(size, patched)
        in_blocks = _run(two_stores[1], steps, monkeypatch)

    assert _comparable(in_blocks) == _comparable(whole)  # patients with their ids, outcomes, change log


store = test_load.store  # the fixture, shared


CAROL = {"account_number": "103", "last_name": "Cole", "first_name": "Carol"}
DAN = {"account_number": "104", "last_name": "Dunn", "first_name": "Dan"}


def test_the_stored_patients_of_given_accounts_are_the_whole_reads_rows_of_them(store, monkeypatch):
    """Over more accounts than one query takes; None, NaN, a number, a repeat, an unknown account,
    another practice's and one differing by a leading zero match only what they name."""
    monkeypatch.setattr(patients_module, "_ACCOUNT_BATCH", 3)
    monkeypatch.setattr(patients_module, "_ACCOUNT_ARRAY", 3)
    other = Practice(id="other_clinic", name="Other", systems=frozenset({"drip_education"}))
    load(store, DRIP, export(*[{**ANN, "account_number": f"{n:03d}", "city": f"C{n}"} for n in range(1, 11)]))
    load(store, other, export({**ANN, "account_number": "999"}, {**ANN, "account_number": "001"}))
    asked = ["001", "010", None, np.nan, 5, "001", "unknown", "999", "01", "004", "007", "002"]

    with store.connect() as conn:
        whole = stored_patients(conn, DRIP.id, COMPARED)
        some = stored_patients(conn, DRIP.id, COMPARED, accounts=asked)
        nobody = stored_patients(conn, DRIP.id, COMPARED, accounts=[])
        with pytest.raises(TypeError):
            stored_patients(conn, DRIP.id, accounts=["001"], born_on=["2000-01-01"])

    expected = whole.loc[["001", "010", "004", "007", "002"]]
    assert some.sort_index().equals(expected.sort_index())
    assert list(some.columns) == list(whole.columns) and nobody.empty and list(nobody.columns) == list(whole.columns)


def test_capacity_refusing_a_file_whose_blocks_were_staged_writes_nothing_and_the_next_load_runs(store, monkeypatch):
    """The blocks' rows are staged before capacity is checked for the whole file: refused, they
    must leave no patient, no change-log entry and no staging table behind (the store's pool
    hands the same connection to the next load, which would find its tables already there)."""
    small = Practice(id=DRIP.id, name="Small", capacity=3, systems=DRIP.systems)
    load(store, small, export(ANN))
    before = stored(store, small.id)
    _in_blocks_of(2, monkeypatch)

    result, problems, import_id = load(store, small, export({**ANN, "city": "Rye"}, BOB, CAROL, DAN), APRIL)

    assert result.status == p.Status.REJECTED and p.CAPACITY_EXCEEDED in {x.code for x in problems}
    assert stored(store, small.id) == before
    assert set(outcomes(store, import_id).values()) == {(p.REJECTED, p.CAPACITY_EXCEEDED)}
    table = PatientChange.__table__
    with store.connect() as conn:
        logged = conn.execute(sa.select(sa.func.count()).where(table.c.import_id == import_id)).scalar_one()
    assert logged == 0
    result, _, _ = load(store, small, export({**ANN, "city": "Rye"}, BOB, CAROL), APRIL)
    assert (result.counts.inserted, result.counts.updated) == (2, 1)
    assert set(stored(store, small.id)) == {"101", "102", "103"}


def test_one_account_in_two_blocks_is_refused_whole(store, monkeypatch):
    """A repeated account number that reached the load unmarked (validation marks it) must be
    refused when its rows are in different blocks too, before the store is written."""
    load(store, DRIP, export(ANN))
    before = stored(store, DRIP.id)
    _in_blocks_of(2, monkeypatch)

    with pytest.raises(load_module.UnkeyedStagedRows, match=r"row 2 \(account 101\).*row 4 \(account 101\)"):
        load(store, DRIP, export({**ANN, "city": "Rye"}, BOB, {**ANN, "city": "Salem"}), APRIL)

    assert stored(store, DRIP.id) == before


def test_a_stored_date_that_is_not_iso_stops_only_the_loads_that_name_its_patient(store):
    """The load reads only the patients the export names: a malformed stored date (written by
    another program) of a patient the export does not name no longer stops it; one it names still
    does (`StoredDateError`: compared as text, the date would decide rule 7 wrongly)."""
    if store.dialect.name != "sqlite":
        pytest.skip("a PostgreSQL DATE column holds dates only")
    load(store, DRIP, export(ANN, BOB), MARCH)
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE patients SET last_seen_exported_on = '03/01/2025' "
                             "WHERE third_party_acct_number = '102'"))

    result, _, _ = load(store, DRIP, export({**ANN, "city": "Rye"}, CAROL), APRIL)
    assert (result.counts.updated, result.counts.inserted) == (1, 1)
    with pytest.raises(StoredDateError, match=r"account numbers 102\)"):
        load(store, DRIP, export(BOB), APRIL)


def test_approval_and_the_load_stage_decide_a_staged_export_in_blocks_as_whole(tmp_path, monkeypatch):
    """Through the stages: the approval decision's counts and fields, the report and the store are
    the same when the staged rows are read 7 at a time as in one block."""
    from tests.patient_import.test_approval import DAY, decision_of
    from tests.patient_import.test_approval import export as export_file
    from tools.corpus import patients_snapshot, run_import

    def move_some(patients):
        patients.loc[:7, "city"] = "Elsewhere"
        return patients

    seen = []
    for block in (None, 7):
        with home_reading_blocks_of(block, tmp_path, monkeypatch,
                                    "    approval: {max_update_share: 1.0, max_inserts: 1000}") as (home, engine):
            first, _ = export_file(home, "Patients 1.csv", rows=20)
            run_import(engine, first, run_id="first", exported_on=DAY - datetime.timedelta(days=1))
            second, _ = export_file(home, "Patients 2.csv", rows=30, change=move_some)
            [done] = run_import(engine, second, run_id="second", exported_on=DAY)
            decision = decision_of(engine, done.summary["import_id"])
            seen.append(({k: decision[k] for k in ("counts", "fields", "stored", "waits")}, done.summary["counts"],
                         {a: {k: v for k, v in r.items() if k not in ("id", "created_import_id", "updated_import_id")}
                          for a, r in patients_snapshot(engine).items()}))

    assert seen[0] == seen[1]
    decision, counts, _ = seen[0]
    assert decision["counts"]["updated"] > 0 and decision["counts"]["inserted"] == 10 and not decision["waits"]
    assert counts == decision["counts"]  # loaded as decided
