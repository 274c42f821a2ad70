"""Problems in volume (SPEC §4, §7 "Memory is bounded"): columns, warnings capped at 1,000 per code
and field and counted in `problem_counts`, errors and skips always listed, report order kept, in
the store (both databases), the streamed JSON report and the migration that pages them."""

from __future__ import annotations

import csv
import json
import uuid
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa

from include.patient_import import problems as p
from include.patient_import import records
from include.patient_import.load import load_import
from include.patient_import.practices import Practice
from include.patient_import.problem_table import LISTED_PER_CODE_AND_FIELD, ProblemTable
from include.patient_import.rules import CODE, DATA_COLUMNS
from include.patient_import.schema import ROW_NUMBER
from include.patient_import.store import ImportProblem, ImportProblemCount, create_store_engine

# Tier: unit, the PostgreSQL variants `postgres` (tests/conftest.py).

CAP = LISTED_PER_CODE_AND_FIELD
COUNT_KEYS = {"code", "field", "severity", "listed", "total"}


def warnings(code: str, field: str, rows) -> ProblemTable:
    rows = list(rows)
    return ProblemTable.of_rows(rows, code=code, field=field, message=f"{field} is not valid",
                                account_numbers=[str(1000 + r) for r in rows])


def test_the_cap_is_one_thousand():
    assert CAP == 1_000


def test_warnings_beyond_the_cap_are_counted_not_listed():
    table = warnings("invalid_email", "email", range(2, 2 + 1_500))

    assert len(table) == CAP
    assert table.counts() == [{"code": "invalid_email", "field": "email", "severity": "warning",
                               "listed": CAP, "total": 1_500}]


def test_the_listed_warnings_are_the_first_by_row():
    table = warnings("invalid_zip", "zip", reversed(range(2, 2 + 1_200)))

    assert [x.row for x in table] == list(range(2, 2 + CAP))


def test_the_cap_is_per_code_and_field():
    table = (warnings("invalid_home_phone", "home_phone", range(2, 1_202))
             + warnings("invalid_cell_phone", "cell_phone", range(2, 1_202))
             + warnings("zip_padded", "zip", range(2, 1_202))
             + warnings("zip_padded", "other_zip", range(2, 502)))

    counts = {(c["code"], c["field"]): (c["listed"], c["total"]) for c in table.counts()}
    assert counts == {("invalid_cell_phone", "cell_phone"): (CAP, 1_200),
                      ("invalid_home_phone", "home_phone"): (CAP, 1_200),
                      ("zip_padded", "other_zip"): (500, 500), ("zip_padded", "zip"): (CAP, 1_200)}
    assert len(table) == 3 * CAP + 500


def test_errors_and_skips_are_never_capped():
    rows = range(2, 2 + 2_500)
    table = (ProblemTable.of_rows(rows, code=p.MISSING_REQUIRED_FIELD, field="last_name",
                                  message="Last Name is required")
             + ProblemTable.of_rows(rows, code=p.DUPLICATE_ROW, message="identical to an earlier row")
             + ProblemTable.of([p.Problem(code=p.UNKNOWN_COLUMN, message="x", field=f"Extra {i}")
                                for i in range(1_100)]))

    assert len(table) == 2 * 2_500 + 1_100  # one unknown_column per header: each its own field
    assert {c["code"]: c["listed"] == c["total"] for c in table.counts()} == {
        p.MISSING_REQUIRED_FIELD: True, p.DUPLICATE_ROW: True, p.UNKNOWN_COLUMN: True}
    assert {c["severity"] for c in table.counts()} == {"error", "info", "warning"}


def test_problems_are_in_report_order_whatever_order_they_come_in():
    table = (warnings("invalid_zip", "zip", [9, 3])
             + ProblemTable.of([p.Problem(code=p.CAPACITY_EXCEEDED, message="full")])
             + warnings("invalid_email", "email", [3, 9])
             + ProblemTable.of_rows([3], code=p.MISSING_REQUIRED_FIELD, field="first_name", message="required"))

    assert [(x.row, x.field) for x in table] == [
        (None, None), (3, "email"), (3, "first_name"), (3, "zip"), (9, "email"), (9, "zip")]
    assert [(x.row, x.field) for x in table] == [(x.row, x.field) for x in sorted(table, key=p.Problem.sort_key)]


def test_adding_tables_adds_their_omitted_counts():
    first = warnings("invalid_email", "email", range(2, 1_302))
    second = warnings("invalid_email", "email", range(5_000, 5_900))

    both = first + second

    assert len(both) == CAP and [x.row for x in both][-1] == 1_001
    assert both.counts() == [{"code": "invalid_email", "field": "email", "severity": "warning",
                              "listed": CAP, "total": 2_200}]


def test_an_invalid_account_number_never_identifies_a_problem():
    table = ProblemTable.of_rows([2, 3], code=p.INVALID_ACCOUNT_NUMBER, field="account_number", message="m",
                                 account_numbers=["1.23457E+11", "Jane Doe"])

    assert [x.account_number for x in table] == [None, None]


# ---------------------------------------------------------------- the store, both databases

def export(count: int, **values) -> pd.DataFrame:
    rows = [{ROW_NUMBER: n, **dict.fromkeys(DATA_COLUMNS), CODE: None, "account_number": str(100 + n),
             "last_name": "Avery", "first_name": "Ann", **values} for n in range(2, count + 2)]
    return pd.DataFrame(rows, columns=[ROW_NUMBER, *DATA_COLUMNS, CODE], dtype="object").astype({ROW_NUMBER: "int64"})


def _load(engine, practice, frame, problems, *, import_id=None):
    import_id = import_id or f"{practice.id}_{uuid.uuid4().hex[:12]}"
    records.sync_practices(engine, {practice.id: practice})
    records.register_import(engine, id=import_id, practice_id=practice.id, dag_run_id="manual__t", map_index=-1,
                            run_type="manual", export_name="e.csv", export_sha256="0" * 64, export_bytes=0,
                            archive_path=None, exported_on=date(2025, 3, 1), dry_run=False)
    result, recorded = load_import(engine, import_id=import_id, practice=practice, exported_on=date(2025, 3, 1),
                                   frame=frame, problems=problems, rejection=None, dry_run=False)
    return result, recorded, import_id


@pytest.fixture
def store(store_url):
    engine = create_store_engine(store_url)
    yield engine
    engine.dispose()


def test_the_store_lists_what_the_report_lists_and_counts_the_rest(store):
    plain = Practice(id="plain_clinic", name="Plain", capacity=5_000)  # no Drip-Education
    frame = export(1_300)
    frame.loc[frame.index[:1_100], "status"] = "inactive"  # new inactive patients: skipped, never capped
    problems = warnings("invalid_email", "email", frame[ROW_NUMBER])

    result, recorded, import_id = _load(store, plain, frame, problems)

    counts = result.counts
    assert counts.read == counts.inserted + counts.updated + counts.unchanged + counts.skipped + counts.rejected
    assert (counts.read, counts.skipped, counts.inserted) == (1_300, 1_100, 200)
    with store.connect() as conn:
        listed = conn.execute(sa.select(ImportProblem.__table__.c.code, sa.func.count())
                              .where(ImportProblem.__table__.c.import_id == import_id)
                              .group_by(ImportProblem.__table__.c.code)).all()
        stored_counts = records.problem_counts(conn, import_id)
        again = records.import_problems(conn, import_id)
    assert dict(listed) == {"invalid_email": CAP, p.INACTIVE_WITHOUT_DRIP_EDUCATION: 1_100}
    assert stored_counts == [
        {"code": "inactive_without_drip_education", "field": None, "severity": "info", "listed": 1_100, "total": 1_100},
        {"code": "invalid_email", "field": "email", "severity": "warning", "listed": CAP, "total": 1_300}]
    assert again == recorded and again.counts() == stored_counts


def test_the_stored_problems_keep_report_order(store):
    frame = export(3)
    problems = (warnings("invalid_zip", "zip", [4, 2]) + warnings("invalid_email", "email", [4])
                + ProblemTable.of([p.Problem(code=p.UNKNOWN_COLUMN, message="m", field="Notes")]))

    _, _, import_id = _load(store, Practice(id="drip", name="Drip", systems=frozenset({"drip_education"})),
                            frame, problems)

    with store.connect() as conn:
        order = [(x["row"], x["field"]) for x in records.iter_problems(conn, import_id)]
    assert order == [(None, "Notes"), (2, "zip"), (4, "email"), (4, "zip")]


# ---------------------------------------------------------------- the JSON report

def test_the_streamed_report_is_the_documents_json_with_problem_counts(tmp_path, monkeypatch):
    from include.patient_import import report

    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path))
    monkeypatch.delenv("PATIENT_IMPORT_STORAGE", raising=False)
    table = warnings("invalid_email", "email", range(2, 1_202)) + ProblemTable.of(
        [p.Problem(code=p.UNKNOWN_COLUMN, message='column "Notes" — ignored', field="Notes")])
    document = {"import_id": "demo_1", "practice_id": "demo_clinic", "status": "completed", "dry_run": False,
                "export": {"name": "x.csv"}, "counts": {"read": 1_200}, "problems": [],
                "problem_counts": table.counts(), "details": {}}

    path = report.write_report(document, (x.to_dict() for x in table))
    written = json.loads(path.read_text(encoding="utf-8"))

    assert list(written) == list(document)
    assert written["problems"] == [x.to_dict() for x in table] and len(written["problems"]) == CAP + 1
    assert all(set(c) == COUNT_KEYS for c in written["problem_counts"])
    assert {c["code"]: (c["listed"], c["total"]) for c in written["problem_counts"]} == {
        "invalid_email": (CAP, 1_200), "unknown_column": (1, 1)}
    empty = json.loads(report.write_report(document, iter(())).read_text(encoding="utf-8"))
    assert empty["problems"] == []


def test_a_whole_import_lists_every_error_and_caps_the_warnings_in_its_report(tmp_path, monkeypatch):
    from tools.corpus import prepare_home, run_import

    practices = "practices:\n  - id: demo_clinic\n    name: Demo\n    capacity: 5000\n    systems: [drip_education]\n"
    engine = prepare_home(tmp_path / "home", monkeypatch, limits=False, practices_yaml=practices)
    path = tmp_path / "export.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Account #", "Last Name", "First Name", "Email", "Zip"])
        for i in range(4_400):
            # Every row: an invalid e-mail; the first 1,050 miss their last name (rejected, under a
            # quarter of the rows, and reporting only why they were rejected).
            writer.writerow([str(5_000 + i), "" if i < 1_050 else "Avery", "Ann", "not-an-email", "02134"])

    [done] = run_import(engine, path, run_id="manual__volume", exported_on=date(2025, 3, 1))
    report = done.report

    counts = report["counts"]
    outcomes = ("inserted", "updated", "unchanged", "skipped", "rejected")
    assert counts["read"] == 4_400 == sum(counts[k] for k in outcomes)
    by_code = {(c["code"], c["field"]): (c["listed"], c["total"]) for c in report["problem_counts"]}
    assert by_code[(p.MISSING_REQUIRED_FIELD, "last_name")] == (1_050, 1_050)
    assert by_code[("invalid_email", "email")] == (CAP, 4_400 - 1_050)
    listed = report["problems"]
    assert sum(1 for x in listed if x["code"] == p.MISSING_REQUIRED_FIELD) == 1_050
    assert sum(1 for x in listed if x["code"] == "invalid_email") == CAP
    keys = [(x["row"] is not None, x["row"] or 0, x["field"] or "") for x in listed]
    assert keys == sorted(keys)
    engine.dispose()


# ---------------------------------------------------------------- the migration

def _upgrade(engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from include.patient_import.store import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_store(request, tmp_path):
    if request.param == "sqlite":
        engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        server = request.getfixturevalue("postgres_server")
        engine = create_store_engine(server.create_database(f"migrate_{uuid.uuid4().hex[:12]}"))
    yield engine
    engine.dispose()


def test_the_migration_orders_and_counts_the_problems_already_stored(empty_store):
    engine = empty_store
    _upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO imports (id, practice_id, dag_run_id, map_index, run_type, export_name, export_sha256,"
            " export_bytes, exported_on, dry_run, status, read, inserted, updated, unchanged, skipped, rejected,"
            " started_at) VALUES ('old_1', 'demo', 'r', 0, 'manual', 'e.csv', '0', 0, '2025-03-01', false,"
            " 'completed', 0, 0, 0, 0, 0, 0, '2025-03-01 00:00:00')"))
        # Inserted out of report order, as the report stage appended import_failed.
        for row, field, code in ((7, "zip", "invalid_zip"), (3, "email", "invalid_email"),
                                 (3, None, "duplicate_row"), (None, None, "import_failed"),
                                 (7, "email", "invalid_email")):
            conn.execute(sa.text(
                "INSERT INTO import_problems (import_id, row_number, account_number, field, code, severity, message)"
                " VALUES ('old_1', :row, NULL, :field, :code, :severity, 'm')"),
                {"row": row, "field": field, "code": code, "severity": str(p.severity_of(code))})

    _upgrade(engine, "head")

    with engine.connect() as conn:
        order = [(x["row"], x["field"]) for x in records.iter_problems(conn, "old_1")]
        counts = records.problem_counts(conn, "old_1")
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("import_problems")}
    assert order == [(None, None), (3, None), (3, "email"), (7, "email"), (7, "zip")]
    assert {(c["code"], c["field"]): (c["listed"], c["total"]) for c in counts} == {
        ("duplicate_row", None): (1, 1), ("import_failed", None): (1, 1), ("invalid_email", "email"): (2, 2),
        ("invalid_zip", "zip"): (1, 1)}
    assert {"ix_import_problems_position", "ix_import_problems_severity", "ix_import_problems_code",
            "ix_import_problems_account"} <= indexes
    assert ImportProblemCount.__table__.name in sa.inspect(engine).get_table_names()


def test_the_terminal_summary_counts_the_warnings_that_are_not_listed():
    from include.patient_import.summary import format_report

    listed = [{"row": r, "account_number": None, "field": "email", "code": "invalid_email", "severity": "warning",
               "message": "m"} for r in range(2, 2 + CAP)]
    report = {"import_id": "i", "practice_id": "demo", "export": {"exported_on": "2025-03-01"}, "status": "completed",
              "dry_run": False, "counts": {"read": 1_500}, "problems": listed, "files": {},
              "problem_counts": [{"code": "invalid_email", "field": "email", "severity": "warning",
                                  "listed": CAP, "total": 1_500}]}

    assert "row problems: invalid_email x1500" in format_report(report)


def test_staging_keeps_the_listed_problems_and_the_counts_of_the_others(tmp_path, monkeypatch):
    from include.patient_import.staging import Validation, load_validation, save_validation

    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path))
    monkeypatch.delenv("PATIENT_IMPORT_STORAGE", raising=False)
    table = warnings("invalid_state", "state", range(2, 1_402)) + ProblemTable.of(
        [p.Problem(code=p.UNKNOWN_COLUMN, message="m", field="Notes")])

    save_validation("demo_staged", Validation(problems=table))
    staged = load_validation("demo_staged").problems
    save_validation("demo_none", Validation())

    assert staged == table and len(staged) == CAP + 1
    assert staged.counts() == table.counts() and staged.counts()[0]["total"] == 1_400
    assert len(load_validation("demo_none").problems) == 0


@pytest.mark.parametrize("reject_every", [0, 3])
def test_an_exports_warnings_in_one_table_are_those_of_each_field_added_in_turn(reject_every):
    """`NormalizedExport.warnings` builds every field's warnings as one table, sorted and capped
    once (issue #14): the same listed problems, in the same order, and the same counts as a
    table per field added one after another, with fields over the cap and rows rejected."""
    import numpy as np

    from include.patient_import.normalize import normalize_export
    from tools.generator import generate_patients

    raw = generate_patients(3_000, seed=14, today=date(2026, 11, 1))
    raw.insert(0, ROW_NUMBER, range(2, 2 + len(raw)))
    raw["zip"] = ["123" if n % 2 else "x" for n in range(len(raw))]  # padded and invalid, over the cap
    raw["gender"] = ["?" if n % 5 else "F" for n in range(len(raw))]
    normalized = normalize_export(raw, today=date(2026, 11, 30))
    rejected = (np.arange(len(raw)) % reject_every == 0) if reject_every else None

    expected = warnings_field_by_field(normalized, rejected)
    found = normalized.warnings(rejected)

    assert len(expected.omitted) and len(expected.listed) > CAP
    pd.testing.assert_frame_equal(found.listed, expected.listed)
    pd.testing.assert_frame_equal(found.omitted, expected.omitted)


def test_the_suites_failures_in_one_table_are_those_of_each_failure_added_in_turn():
    """validate's `_row_problems` makes every failure's rows one table, sorted and capped once
    (issue #14): the same table as one per failure added in turn, a failure with no row among them."""
    from include.patient_import.gx_runner import SuiteFailure
    from include.patient_import.schema import FIELDS_BY_NAME
    from include.patient_import.validate import _row_messages, _row_problems

    accounts = pd.Series([str(n) if n % 7 else f"{n}e5" for n in range(2, 1_602)], index=range(2, 1_602),
                         dtype="object")
    failures = [SuiteFailure(p.MISSING_REQUIRED_FIELD, "last_name", tuple(range(1_600, 1, -3))),
                SuiteFailure(p.INVALID_ACCOUNT_NUMBER, "account_number", tuple(range(9, 1_600, 7))),
                SuiteFailure(p.DUPLICATE_ACCOUNT_NUMBER, "account_number", ()),
                SuiteFailure(p.DUPLICATE_ROW, "account_number", tuple(range(2, 1_402))),
                SuiteFailure(p.MISSING_REQUIRED_FIELD, "first_name", (5, 4, 3))]

    expected = ProblemTable()
    for failure in failures:
        rows = pd.Series(list(failure.rows), dtype="int64")
        found = accounts.reindex(rows)
        expected += ProblemTable.of_rows(rows, code=failure.code, field=failure.field,
                                         message=_row_messages(failure.code, FIELDS_BY_NAME[failure.field].header,
                                                               found),
                                         account_numbers=found.to_numpy())
    by_row, table = _row_problems(failures, accounts)

    assert len(expected.listed) == 533 + 228 + 1_400 + 3 and by_row[9] == {p.INVALID_ACCOUNT_NUMBER, p.DUPLICATE_ROW}
    pd.testing.assert_frame_equal(table.listed, expected.listed)
    pd.testing.assert_frame_equal(table.omitted, expected.omitted)
    assert _row_problems([], accounts)[1] == ProblemTable()


def warnings_field_by_field(normalized, rejected) -> ProblemTable:
    """The reference for `NormalizedExport.warnings`: a table per warned field, added in turn (how
    it was built before issue #14), the rejected rows' warnings left out."""
    from include.patient_import.normalize import _message
    from include.patient_import.problems import severity_of

    expected = ProblemTable()
    rows, accounts = normalized.frame[ROW_NUMBER].to_numpy(), normalized.frame["account_number"].to_numpy(object)
    for name, kind, positions, codes in normalized.warned:
        if rejected is not None:
            positions, codes = positions[~rejected[positions]], codes[~rejected[positions]]
        if len(positions):
            found = pd.Series(codes, dtype="object")
            expected += ProblemTable.of_rows(rows[positions], code=found, field=name,
                                             account_numbers=accounts[positions],
                                             message=found.map(lambda c, f=name, k=kind: _message(f, k, c)),
                                             severity=found.map(lambda c: str(severity_of(c))))
    return expected
