"""Approval (SPEC §8): the registry's thresholds, the decision on generated exports (would-be
outcomes decided without writing), the answer, and no patient value in anything the approver or a
log sees."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from include.patient_import import approval, records, rules
from include.patient_import import problems as p
from include.patient_import.practices import Approval, load_practices
from include.patient_import.problems import ConfigurationError, Counts
from tools.corpus import PRACTICE_ID, patients_snapshot, prepare_home, run_import
from tools.generator import generate_patients, write_export

pytestmark = [pytest.mark.unit, pytest.mark.timeout(300)]

DAY = date.today() - timedelta(days=1)


def registry(approval_yaml: str = "", capacity: int = 1000) -> str:
    return f"""
practices:
  - id: {PRACTICE_ID}
    name: Approval Clinic
    capacity: {capacity}
    systems: [drip_education]
{approval_yaml}"""


def home_with(tmp_path, monkeypatch, approval_yaml: str, capacity: int = 1000):
    return prepare_home(tmp_path / "home", monkeypatch, limits=False,
                        practices_yaml=registry(approval_yaml, capacity))


def export(tmp_path, name: str, rows: int = 20, *, seed: int = 1, first_account: int = 10001,
           drop: tuple[str, ...] = (), change=None):
    patients = generate_patients(rows, seed=seed, first_account=first_account, inactive_share=0.0)
    if change is not None:
        patients = change(patients)
    path = tmp_path / name
    write_export(patients.drop(columns=list(drop)), path, excel_artefacts=False)
    return path, patients


def decision_of(engine, import_id: str) -> dict:
    with engine.connect() as conn:
        return records.approval_of(conn, import_id)


def codes(decision: dict) -> list[str]:
    return [r["code"] for r in decision["reasons"]]


# ---------------------------------------------------------------- the registry


def _load(tmp_path, approval_yaml: str):
    path = tmp_path / "practices.yml"
    path.write_text(registry(approval_yaml), encoding="utf-8")
    return load_practices(path)[PRACTICE_ID]


def test_no_approval_entry_never_waits_and_an_empty_one_takes_the_documented_defaults(tmp_path):
    assert _load(tmp_path, "").approval is None
    assert _load(tmp_path, "    approval: {}").approval == Approval(
        max_update_share=0.2, max_inserts=500, min_capacity_left_share=0.05, column_changes=True,
        max_possible_duplicates=10, timeout_hours=24.0)


def test_registry_thresholds_are_read_and_null_turns_a_check_off(tmp_path):
    got = _load(tmp_path, "    approval: {max_inserts: 5, max_update_share: null, timeout_hours: 0.5,"
                          " column_changes: false}").approval
    assert got == Approval(max_update_share=None, max_inserts=5, column_changes=False, timeout_hours=0.5)


@pytest.mark.parametrize(("value", "key"), [
    ("{max_update_share: 1.5}", "max_update_share"),
    ("{max_update_share: '20%'}", "max_update_share"),
    ("{min_capacity_left_share: -0.1}", "min_capacity_left_share"),
    ("{max_inserts: -1}", "max_inserts"),
    ("{max_inserts: 2.5}", "max_inserts"),
    ("{max_inserts: true}", "max_inserts"),
    ("{max_possible_duplicates: ten}", "max_possible_duplicates"),
    ("{column_changes: 'yes'}", "column_changes"),
    ("{timeout_hours: 0}", "timeout_hours"),
    ("{timeout_hours: null}", "timeout_hours"),
    # Past a year or not finite: Airflow's deadline overflowed, or the decision's JSON refused it.
    ("{timeout_hours: .inf}", "timeout_hours"),
    ("{timeout_hours: .nan}", "timeout_hours"),
    ("{timeout_hours: 1.0e+10}", "timeout_hours"),
    ("{timeout_hours: 1.0e-6}", "timeout_hours"),  # every import would time out at once
    ("{max_update_share: .nan}", "max_update_share"),
    ("{max_imports: 5}", "max_imports"),
    ("[max_inserts]", "approval"),
])
def test_a_bad_threshold_fails_the_registry_naming_the_practice_and_the_key(tmp_path, value, key):
    with pytest.raises(ConfigurationError) as error:
        _load(tmp_path, f"    approval: {value}")
    assert f"practice {PRACTICE_ID}" in str(error.value) and key in str(error.value)


@pytest.mark.parametrize(("entry", "key"), [
    ("    systems: 5", "systems"),
    ("    systems: drip_education", "systems"),
    ("    upload_extra_columns: 5", "upload_extra_columns"),
    ("    upload_extra_columns: [5]", "upload_extra_columns"),
    ("    systems: 0", "systems"),
    ("    upload_extra_columns: {}", "upload_extra_columns"),
])
def test_a_registry_list_of_another_type_fails_naming_the_practice_and_the_key(tmp_path, entry, key):
    # A number there passed the check and failed every run's planning as a TypeError, retried.
    with pytest.raises(ConfigurationError) as error:
        _load(tmp_path, entry)
    assert f"practice {PRACTICE_ID}" in str(error.value) and f"{key} must be a list" in str(error.value)


# ---------------------------------------------------------------- the reasons (pure rules)


def reasons(**kwargs):
    given = {"counts": Counts(read=100, inserted=0, updated=0, unchanged=100), "stored": 100, "capacity": 1000,
             "columns": ["account_number", "last_name"], "previous_columns": None, "previous_import": None,
             "possible_duplicates": 0} | kwargs
    return [r["code"] for r in rules.approval_reasons(Approval(), **given)]


def test_each_threshold_is_a_reason_only_when_it_is_exceeded():
    assert reasons() == []
    assert reasons(counts=Counts(read=100, updated=20, unchanged=80)) == []  # 20 %: not more than
    assert reasons(counts=Counts(read=100, updated=21, unchanged=79)) == [rules.UPDATES_OVER_SHARE]
    assert reasons(counts=Counts(read=500, inserted=500), stored=0) == []
    assert reasons(counts=Counts(read=501, inserted=501), stored=0) == [rules.INSERTS_OVER_LIMIT]
    assert reasons(counts=Counts(read=10, inserted=10), stored=941) == [rules.CAPACITY_NEARLY_FULL]  # 49 left
    assert reasons(counts=Counts(read=10, inserted=10), stored=940) == []  # 50 left: 5 %
    assert reasons(counts=Counts(read=10, updated=1, unchanged=9), stored=990) == []  # adds nobody
    assert reasons(possible_duplicates=11) == [rules.POSSIBLE_DUPLICATES_OVER_LIMIT]
    assert reasons(possible_duplicates=10) == []
    assert reasons(previous_columns=["account_number", "last_name"], previous_import="i0") == []
    assert reasons(previous_columns=["account_number", "last_name", "email"],
                   previous_import="i0") == [rules.COLUMNS_CHANGED]


def test_a_first_import_and_an_empty_store_have_nothing_to_compare():
    assert reasons(stored=0, counts=Counts(read=10, inserted=10)) == []


def test_the_rejection_of_an_unapproved_import():
    waited = {"waits": True, "reasons": [{"code": rules.INSERTS_OVER_LIMIT}], "timeout_hours": 2}
    assert rules.approval_rejection(None) is None
    assert rules.approval_rejection({"waits": False}) is None
    assert rules.approval_rejection(waited | {"answer": "approved"}) is None
    rejected = rules.approval_rejection(waited | {"answer": "rejected", "by": "office_manager"})
    assert rejected.code == p.NOT_APPROVED and "office_manager" in rejected.message
    assert rules.approval_rejection(waited | {"answer": None}).code == p.NOT_APPROVED  # never answered
    timed_out = rules.approval_rejection(waited | {"answer": "timed_out"})
    assert timed_out.code == p.APPROVAL_TIMED_OUT and "2 hours" in timed_out.message


# ---------------------------------------------------------------- decisions on generated exports


def test_an_import_under_every_threshold_does_not_wait_and_loads(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {}")
    path, _ = export(tmp_path, "Patients.csv", rows=20)
    [done] = run_import(engine, path, run_id="under", exported_on=DAY)
    decision = decision_of(engine, done.summary["import_id"])
    assert decision["waits"] is False and decision["reasons"] == []
    assert decision["counts"]["inserted"] == 20
    assert done.summary["status"] == p.Status.COMPLETED and len(patients_snapshot(engine)) == 20


def test_too_many_inserts_waits_and_unanswered_in_one_process_changes_nothing(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {max_inserts: 5}")
    path, _ = export(tmp_path, "Patients.csv", rows=20)
    [done] = run_import(engine, path, run_id="inserts", exported_on=DAY)
    decision = decision_of(engine, done.summary["import_id"])
    assert decision["waits"] is True and codes(decision) == [rules.INSERTS_OVER_LIMIT]
    assert decision["counts"] == {"read": 20, "inserted": 20, "updated": 0, "unchanged": 0, "skipped": 0,
                                  "rejected": 0}
    assert done.summary["status"] == p.Status.REJECTED
    assert done.file_codes == {p.NOT_APPROVED}
    assert patients_snapshot(engine) == {}


def test_the_would_be_counts_come_from_the_store_without_writing(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {max_update_share: 0.2}")
    first, _ = export(tmp_path, "Patients 1.csv", rows=20)
    run_import(engine, first, run_id="first", exported_on=DAY)
    before = patients_snapshot(engine)

    def move_eight(patients):
        patients.loc[:7, "city"] = "Elsewhere"
        return patients

    second, _ = export(tmp_path, "Patients 2.csv", rows=20, change=move_eight)
    [done] = run_import(engine, second, run_id="second", exported_on=DAY)
    decision = decision_of(engine, done.summary["import_id"])
    assert decision["counts"]["updated"] == 8 and decision["counts"]["unchanged"] == 12
    assert decision["stored"] == 20
    [reason] = decision["reasons"]
    assert reason["code"] == rules.UPDATES_OVER_SHARE and reason["updated"] == 8 and reason["share"] == 0.4
    assert done.file_codes == {p.NOT_APPROVED}
    assert patients_snapshot(engine) == before  # neither the decision nor the rejection wrote


def test_approved_imports_load_and_rejected_or_timed_out_ones_change_nothing(tmp_path, monkeypatch):
    from include.patient_import import pipeline
    from include.patient_import.extract import RunInfo

    engine = home_with(tmp_path, monkeypatch, "    approval: {max_inserts: 5, timeout_hours: 2}")
    outcomes = {}
    for n, answer in enumerate(("approved", "rejected", "timed_out")):
        path, _ = export(tmp_path, f"Patients {answer}.csv", rows=10, first_account=20001 + 100 * n)
        [import_id] = pipeline.extract_exports(engine, PRACTICE_ID, RunInfo(dag_id="t", run_id=answer, map_index=0),
                                               export_file=str(path), exported_on=DAY)
        pipeline.run_stages(engine, import_id, ("validate", "transform", "approval"), report=False)
        recorded = approval.record_answers(engine, [import_id], answer, by="office_manager")[0]
        assert recorded["answer"] == answer
        # The first answer stands.
        assert approval.record_answers(engine, [import_id], "approved")[0]["answer"] == answer
        done = pipeline.run_stages(engine, import_id, ("load",))
        outcomes[answer] = (done["load"]["status"], done["report"]["status"])
    assert outcomes["approved"][0] == p.Status.COMPLETED
    assert outcomes["rejected"][0] == outcomes["timed_out"][0] == p.Status.REJECTED
    assert sorted(patients_snapshot(engine)) == [str(a) for a in range(20001, 20011)]
    with engine.connect() as conn:
        problems = {r["code"] for r in conn.execute(sa.text(
            "select code from import_problems where row_number is null")).mappings()}
    assert {p.NOT_APPROVED, p.APPROVAL_TIMED_OUT} <= problems


def test_an_unknown_answer_is_refused(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {}")
    with pytest.raises(ValueError):
        approval.record_answers(engine, ["any"], "maybe")


def test_columns_changed_since_the_last_completed_import_waits(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {max_update_share: null}")
    first, _ = export(tmp_path, "Patients 1.csv", rows=10)
    [one] = run_import(engine, first, run_id="first", exported_on=DAY)
    second, _ = export(tmp_path, "Patients 2.csv", rows=10, drop=("email", "cell_phone"))
    [two] = run_import(engine, second, run_id="second", exported_on=DAY)
    decision = decision_of(engine, two.summary["import_id"])
    [reason] = decision["reasons"]
    assert reason["code"] == rules.COLUMNS_CHANGED and reason["previous_import"] == one.summary["import_id"]
    assert reason["removed_count"] == 2 and reason["removed"] == "cell_phone, email" and reason["added_count"] == 0
    # The rejected import is not the baseline: the same columns as the first import do not wait.
    third, _ = export(tmp_path, "Patients 3.csv", rows=10)
    [three] = run_import(engine, third, run_id="third", exported_on=DAY)
    assert decision_of(engine, three.summary["import_id"])["waits"] is False


def test_capacity_nearly_full_waits(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {min_capacity_left_share: 0.25}", capacity=24)
    path, _ = export(tmp_path, "Patients.csv", rows=20)
    [done] = run_import(engine, path, run_id="capacity", exported_on=DAY)
    [reason] = decision_of(engine, done.summary["import_id"])["reasons"]
    assert reason["code"] == rules.CAPACITY_NEARLY_FULL and reason["left"] == 4 and reason["capacity"] == 24


def test_possible_duplicate_warnings_are_counted_from_the_imports_problems():
    from include.patient_import.problem_table import ProblemTable
    from include.patient_import.staging import Validation

    table = ProblemTable.of([p.Problem(code=p.POSSIBLE_DUPLICATE_PATIENT, message="m", row=n,
                                       account_number=str(100 + n)) for n in range(2, 14)])
    assert approval._possible_duplicates(Validation(problems=table)) == 12
    assert approval._possible_duplicates(Validation()) == 0


def test_dry_runs_and_rejected_files_never_wait(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {max_inserts: 0}")
    path, _ = export(tmp_path, "Patients.csv", rows=5)
    [dry] = run_import(engine, path, run_id="dry", exported_on=DAY, dry_run=True)
    assert decision_of(engine, dry.summary["import_id"])["waits"] is False
    assert dry.summary["status"] == p.Status.COMPLETED
    bad = tmp_path / "not an export.csv"
    bad.write_text("hello\nworld\n", encoding="utf-8")
    [rejected] = run_import(engine, bad, run_id="bad", exported_on=DAY)
    assert decision_of(engine, rejected.summary["import_id"])["waits"] is False
    assert p.NOT_APPROVED not in rejected.file_codes


def test_no_patient_value_in_the_decision_or_the_approvers_text(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {max_inserts: 30, max_update_share: 0.01}")
    first, _ = export(tmp_path, "Patients 1.csv", rows=30, seed=7)

    def rename_everyone(patients):
        patients["last_name"] = patients["last_name"] + "ova"
        return patients

    run_import(engine, first, run_id="first", exported_on=DAY)
    second, patients = export(tmp_path, "Patients 2.csv", rows=40, seed=7, change=rename_everyone,
                              drop=("email",))
    [done] = run_import(engine, second, run_id="second", exported_on=DAY)
    decision = decision_of(engine, done.summary["import_id"])
    assert set(codes(decision)) == {rules.UPDATES_OVER_SHARE, rules.COLUMNS_CHANGED}
    seen = json.dumps(decision) + approval.approver_text([decision], results_url="http://host/import-results")
    values = {v for column in ("last_name", "first_name", "address1", "email", "home_phone", "cell_phone",
                               "birth_date", "city") if column in patients
              for v in patients[column].astype(str) if len(v) >= 5}
    assert sorted(v for v in values if v in seen) == []
    text = approval.approver_text([decision], results_url="http://host/import-results")
    assert f"http://host/import-results/imports/{done.summary['import_id']}" in text
    assert "updates_over_share" in text and f"{decision['counts']['updated']} updated" in text


def test_the_approvers_text_says_when_a_retry_asks_again():
    decision = {"import_id": "i1", "waits": True, "stored": 0, "capacity": 10, "timeout_hours": 1,
                "counts": {"read": 5, "inserted": 5, "updated": 0, "unchanged": 0, "skipped": 0, "rejected": 0},
                "reasons": [{"code": rules.INSERTS_OVER_LIMIT, "message": "would insert 5 new patients"}]}
    first = approval.approver_text([decision])
    again = approval.approver_text([decision], attempt=3)
    assert "Asked again" not in first
    assert again.startswith("**Asked again (try 3):**") and again.endswith(first)


# ---------------------------------------------------------------- the approval in the import's report


def _report_of(done: dict) -> dict:
    from include.patient_import import storage

    return json.loads(storage.path_of(done["report"]["report"]).read_text(encoding="utf-8"))


def test_the_report_says_whether_approval_was_required_why_and_the_answer(tmp_path, monkeypatch):
    from include.patient_import import pipeline
    from include.patient_import.extract import RunInfo

    engine = home_with(tmp_path, monkeypatch, "    approval: {max_inserts: 5, timeout_hours: 2}")
    reports = {}
    for n, (answer, by) in enumerate((("approved", "office_manager"), ("rejected", "office_lead"),
                                      ("timed_out", None), (None, None))):
        path, _ = export(tmp_path, f"Patients {answer}.csv", rows=10, first_account=20001 + 100 * n)
        [import_id] = pipeline.extract_exports(engine, PRACTICE_ID, RunInfo(dag_id="t", run_id=f"r{n}", map_index=0),
                                               export_file=str(path), exported_on=DAY)
        pipeline.run_stages(engine, import_id, ("validate", "transform", "approval"), report=False)
        if answer:
            approval.record_answers(engine, [import_id], answer, by=by)
        reports[answer] = _report_of(pipeline.run_stages(engine, import_id, ("load",)))

    for answer, report in reports.items():
        got = report["approval"]
        assert got["required"] is True and got["why_not"] is None, answer
        assert got["reasons"] == [{"code": rules.INSERTS_OVER_LIMIT, "message": got["reasons"][0]["message"]}]
        assert "10" in got["reasons"][0]["message"] and "5" in got["reasons"][0]["message"]
        assert got["answer"] == answer
    assert reports["approved"]["status"] == p.Status.COMPLETED
    assert reports["approved"]["approval"]["by"] == "office_manager"
    assert reports["approved"]["approval"]["answered_at"] is not None
    assert reports["rejected"]["approval"]["by"] == "office_lead"
    assert (reports["timed_out"]["approval"]["by"], reports[None]["approval"]["answered_at"]) == (None, None)
    assert {r["status"] for a, r in reports.items() if a != "approved"} == {p.Status.REJECTED}


def test_the_report_of_an_import_that_did_not_wait_says_why_not(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {}")
    path, _ = export(tmp_path, "Patients.csv", rows=5)
    [under] = run_import(engine, path, run_id="under", exported_on=DAY)
    [dry] = run_import(engine, path, run_id="dry", exported_on=DAY, dry_run=True)

    assert under.report["approval"] == {"required": False, "reasons": [], "answer": None, "by": None,
                                        "answered_at": None, "why_not": "under every threshold"}
    assert dry.report["approval"]["required"] is False and "dry run" in dry.report["approval"]["why_not"]


def test_a_report_without_a_recorded_decision_has_no_approval():
    assert records.approval_summary(None) is None
    assert records.approval_summary("") is None
    assert records.approval_summary("[]") is None


def test_the_approval_in_the_report_carries_no_patient_value(tmp_path, monkeypatch):
    """Reasons that name fields (columns_changed) and shares; the figures stay in the store."""
    engine = home_with(tmp_path, monkeypatch, "    approval: {max_update_share: 0.01}")
    first, _ = export(tmp_path, "Patients 1.csv", rows=12, seed=5)
    run_import(engine, first, run_id="first", exported_on=DAY)

    def rename(patients):
        patients["last_name"] = patients["last_name"] + "ski"
        return patients

    second, patients = export(tmp_path, "Patients 2.csv", rows=12, seed=5, change=rename, drop=("email",))
    [done] = run_import(engine, second, run_id="second", exported_on=DAY)
    got = done.report["approval"]
    assert [r["code"] for r in got["reasons"]] == [rules.UPDATES_OVER_SHARE, rules.COLUMNS_CHANGED]
    seen = json.dumps(got)
    values = {v for column in ("last_name", "first_name", "address1", "email", "home_phone", "birth_date")
              if column in patients for v in patients[column].astype(str) if len(v) >= 5}
    assert sorted(v for v in values if v in seen) == []


# ---------------------------------------------------------------- a decision stands; the answer is recorded once


def _staged(engine, tmp_path, name: str, rows: int = 10, first_account: int = 10001, seed: int = 1) -> str:
    """An extracted, validated and transformed import of `name`, not yet assessed."""
    from include.patient_import import pipeline
    from include.patient_import.extract import RunInfo

    path, _ = export(tmp_path, f"{name}.csv", rows=rows, first_account=first_account, seed=seed)
    [import_id] = pipeline.extract_exports(engine, PRACTICE_ID, RunInfo(dag_id="t", run_id=name, map_index=0),
                                           export_file=str(path), exported_on=DAY)
    pipeline.run_stages(engine, import_id, ("validate", "transform"), report=False)
    return import_id


def test_an_answered_decision_stands_when_the_approval_step_runs_again(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {max_inserts: 5}")
    import_id = _staged(engine, tmp_path, "answered")
    approval.assess_import(engine, import_id)
    approval.record_answers(engine, [import_id], "rejected", by="office_manager")
    answered = decision_of(engine, import_id)
    again = approval.assess_import(engine, import_id)
    assert again == answered and again["answer"] == "rejected" and again["by"] == "office_manager"
    assert decision_of(engine, import_id) == answered


def test_a_loaded_imports_decision_stands_against_the_store_its_load_changed(tmp_path, monkeypatch):
    from include.patient_import import pipeline

    engine = home_with(tmp_path, monkeypatch, "    approval: {max_inserts: 50}")
    import_id = _staged(engine, tmp_path, "loaded")
    decided = approval.assess_import(engine, import_id)
    pipeline.run_stages(engine, import_id, ("load",), report=False)
    assert len(patients_snapshot(engine)) == 10
    again = approval.assess_import(engine, import_id)  # a cleared check_approval after the load
    assert again["counts"]["inserted"] == 10 and again["counts"]["unchanged"] == 0
    assert decision_of(engine, import_id) == {**decided, "answer": None, "by": None, "answered_at": None}


def test_the_answer_and_its_audit_entry_are_one_transaction_with_the_response_time(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from include.patient_import import audit

    engine = home_with(tmp_path, monkeypatch, "    approval: {max_inserts: 5}")
    waits = _staged(engine, tmp_path, "waits")
    small = _staged(engine, tmp_path, "small", rows=3, first_account=30001)
    approval.assess_imports(engine, [waits, small])

    def crash(*args, **kwargs):
        raise RuntimeError("the worker died between the two writes")

    monkeypatch.setattr(approval.audit, "record", crash)
    with pytest.raises(RuntimeError):
        approval.record_answers(engine, [waits], rules.Answer.APPROVED, by="office_manager")
    assert decision_of(engine, waits)["answer"] is None  # nothing half-recorded: it can be answered again
    monkeypatch.undo()

    responded = datetime(2026, 11, 30, 9, 15, tzinfo=timezone.utc)
    recorded = approval.record_answers(engine, [waits, small], rules.Answer.APPROVED, "office_manager", responded)
    assert recorded[0]["answer"] == "approved" and recorded[0]["answered_at"] == responded.isoformat()
    assert recorded[1]["waits"] is False and recorded[1]["answer"] is None  # did not wait: left as it is
    with engine.connect() as conn:
        assert [(e["action"], e["who"]) for e in audit.entries(conn, waits) if e["action"] != audit.TRIGGERED] == [
            (audit.APPROVED, "office_manager")]
        assert [e["action"] for e in audit.entries(conn, small)] == [audit.TRIGGERED]


def test_the_answers_are_spelled_once_in_rules():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [*sorted((root / "include" / "patient_import").glob("*.py")), root / "dags" / "patient_import.py"]
    # audit.py's `approved` is an audit action (who approved), not an answer.
    spelled = [(path.name, word) for path in sources for word in ("approved", "timed_out")
               if path.name not in ("rules.py", "audit.py")
               and re.search(rf"[\"']{word}[\"']", path.read_text(encoding="utf-8"))]
    assert spelled == []
    assert {a.value for a in rules.Answer} == {"approved", "rejected", "timed_out"}


# ---------------------------------------------------------------- a practice's backlog


def test_the_capacity_reason_counts_the_new_patients_of_the_practices_earlier_imports(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {min_capacity_left_share: 0.25}", capacity=30)
    first = _staged(engine, tmp_path, "first", rows=10, first_account=10001)
    second = _staged(engine, tmp_path, "second", rows=13, first_account=20001, seed=2)
    one, two = approval.assess_imports(engine, [first, second])
    assert one["waits"] is False  # 20 of 30 left
    assert two["counts"]["inserted"] == 13 and two["stored"] == 0  # against the store as it is now
    [reason] = two["reasons"]  # alone it would leave 17 of 30; after the first, 7
    assert reason["code"] == rules.CAPACITY_NEARLY_FULL and reason["left"] == 7 and reason["earlier"] == 10
    assert "10 new patients of the practice's imports before it" in reason["message"]
    text = approval.approver_text([one, two])
    assert approval.STORE_NOW in text and "capacity_nearly_full" in text
    # Each alone is under the threshold.
    assert approval.assess_imports(engine, [second])[0]["waits"] is False


def test_patients_two_imports_would_both_insert_take_capacity_once(tmp_path, monkeypatch):
    engine = home_with(tmp_path, monkeypatch, "    approval: {min_capacity_left_share: 0.25}", capacity=30)
    first = _staged(engine, tmp_path, "first", rows=10, first_account=10001)
    overlapping = _staged(engine, tmp_path, "both", rows=20, first_account=10001)  # the first's 10 and 10 more
    one, two = approval.assess_imports(engine, [first, overlapping])
    assert one["waits"] is False and two["waits"] is False  # 30 - 20 = 10 left (33 %), not 30 - 30
    assert two["counts"]["inserted"] == 20


def test_the_reasons_messages_are_the_catalogues():
    from include.patient_import import catalogue

    assert not hasattr(rules, "APPROVAL_REASONS")
    given = {"counts": Counts(read=600, inserted=600), "stored": 1, "capacity": 620, "columns": ["a"],
             "previous_columns": ["b"], "previous_import": "i0", "possible_duplicates": 11}
    found = rules.approval_reasons(Approval(max_update_share=0.0), **given) + rules.approval_reasons(
        Approval(max_update_share=0.0), **given | {"counts": Counts(read=2, updated=1, inserted=1)})
    assert {r["code"] for r in found} == set(catalogue.APPROVAL_REASON_CODES)
    for reason in found:
        assert catalogue.rule(reason["code"]).severity is catalogue.Severity.INFO
        figures = {k: v for k, v in reason.items() if k not in ("code", "message")}
        case = "after_earlier" if "earlier" in figures else None
        assert reason["message"] == catalogue.message(reason["code"], case, **figures)
