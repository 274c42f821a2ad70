"""What changed, per field (SPEC §8): counts per field and changed field names per row in every
report and dry run, the change log's before- and after-images, the changes file, and no value in
reports or logs."""

from __future__ import annotations

import csv
import io
import json
import logging

import pandas as pd
import pytest
import sqlalchemy as sa

from include.patient_import import changes
from include.patient_import.practices import Practice
from include.patient_import.rules import CHANGED_FIELDS, decide_outcomes, field_counts
from include.patient_import.store import ImportRow, PatientChange
from tests.patient_import import generated as g
from tests.patient_import.frames import normalised
from tools.corpus import MARKERS

# Tier: unit, the PostgreSQL variants `postgres` (tests/conftest.py).

PRACTICE = Practice(id="demo_clinic", name="Demo", systems=frozenset({"drip_education"}))


@pytest.fixture
def imports(tmp_path, monkeypatch):
    found = g.Imports(tmp_path, monkeypatch)
    yield found
    found.engine.dispose()


def _stored(rows: list[dict]) -> pd.DataFrame:
    frame = normalised(*rows).drop(columns=["row_number", "code"]).rename(
        columns={"account_number": "third_party_acct_number"})
    frame["last_seen_exported_on"] = None
    frame["id"] = range(1, len(frame) + 1)
    return frame.set_index(frame["third_party_acct_number"])


# ---------------------------------------------------------------- decided with the outcome


def test_changed_fields_are_named_for_updated_rows_only():
    stored = _stored([{"account_number": "1", "city": "Salem", "zip": "01970"},
                      {"account_number": "2", "city": "Dover"}])
    frame = normalised({"account_number": "1", "city": "Boston", "zip": "02108"},
                       {"account_number": "2", "city": "Dover"},
                       {"account_number": "3", "city": "Lynn"})
    decided = decide_outcomes(frame, stored, PRACTICE, g.A_ON)

    assert decided["outcome"].tolist() == ["updated", "unchanged", "inserted"]
    assert decided[CHANGED_FIELDS].tolist() == ["city,zip", None, None]
    assert field_counts(decided) == {"city": 1, "zip": 1}


def test_an_empty_cell_is_no_change_of_its_field():
    stored = _stored([{"account_number": "1", "city": "Salem", "email": "a@example.org"}])
    decided = decide_outcomes(normalised({"account_number": "1", "city": "Boston", "email": None}),
                              stored, PRACTICE, g.A_ON)

    assert decided[CHANGED_FIELDS].tolist() == ["city"]


def test_no_updated_row_gives_no_field_counts():
    decided = decide_outcomes(normalised({"account_number": "1"}), _stored([]), PRACTICE, g.A_ON)

    assert field_counts(decided) == {}
    assert decided[CHANGED_FIELDS].isna().all()


# ---------------------------------------------------------------- reports, dry runs, change log


def test_report_counts_changed_fields_per_field_on_generated_exports(imports):
    first = imports.run("a")
    second = imports.run("b")

    assert first.report["changes"] == {"fields": {}, "rows": []}
    assert second.report["counts"]["updated"] == 9 and second.report["counts"]["inserted"] == g.NEW
    assert second.report["changes"]["fields"] == g.B_FIELDS


def test_report_names_each_updated_rows_changed_fields(imports):
    imports.run("a")
    rows = imports.run("b").report["changes"]["rows"]

    expected = {g.account(r): [name for name, changed in (("address1", g.B_ADDRESS_ROWS), ("city", g.B_CITY_ROWS),
                                                          ("email", g.B_EMAIL_ROWS)) if r in changed]
                for r in range(g.PATIENTS)}
    assert {x["account_number"]: x["fields"] for x in rows} == {k: v for k, v in expected.items() if v}
    assert [x["row"] for x in rows] == sorted(x["row"] for x in rows)


def test_the_same_patients_as_excel_saved_them_differently_change_no_field(imports):
    """Excel's damage (account numbers as formulas, zips without their zero, phones and dates in
    other spellings, ...) is normalised away before the comparison: only what the second file
    really adds counts, the phone extensions its rendering gives a few phones (empty before)."""
    from tools.generator import generate_patients, write_export

    patients = generate_patients(300, seed=5, today=g.TODAY)
    for name, seed in (("a", 1), ("b", 2)):
        write_export(patients, imports.files[name], excel_artefacts=True, seed=seed)
    imports.run("a")
    report = imports.run("b").report

    assert report["counts"]["inserted"] == 0
    assert set(report["changes"]["fields"]) <= {"home_phone_ext", "cell_phone_ext"}
    assert sum(report["changes"]["fields"].values()) >= report["counts"]["updated"]


def test_dry_run_reports_the_same_changes_and_writes_no_change_log(imports):
    imports.run("a")
    dry = imports.run("b", dry_run=True)

    assert dry.report["dry_run"] is True
    assert dry.report["changes"]["fields"] == g.B_FIELDS
    assert len(dry.report["changes"]["rows"]) == 9
    with imports.engine.connect() as conn:
        logged = conn.execute(sa.select(sa.func.count()).select_from(PatientChange.__table__).where(
            PatientChange.__table__.c.import_id == dry.report["import_id"])).scalar_one()
    assert logged == 0


def test_changed_field_names_are_kept_with_the_row_outcomes(imports):
    imports.run("a")
    import_id = imports.run("b").report["import_id"]
    rows = ImportRow.__table__
    with imports.engine.connect() as conn:
        named = dict(conn.execute(sa.select(rows.c.account_number, rows.c.changed_fields).where(
            rows.c.import_id == import_id, rows.c.changed_fields.is_not(None))).all())
    assert named[g.account(5)] == "address1,city" and named[g.account(9)] == "email"
    assert len(named) == 9


def test_change_log_keeps_what_each_write_replaced_and_wrote(imports):
    imports.run("a")
    before = imports.patients()
    import_id = imports.run("b").report["import_id"]
    after = imports.patients()
    table = PatientChange.__table__
    with imports.engine.connect() as conn:
        log = {r["third_party_acct_number"]: r for r in conn.execute(
            sa.select(table).where(table.c.import_id == import_id)).mappings()}

    updated, inserted = log[g.account(0)], log["50001"]
    assert updated["action"] == "updated" and inserted["action"] == "inserted"
    assert updated["before_address1"] == before[g.account(0)]["address1"]
    assert updated["after_address1"] == after[g.account(0)]["address1"]
    assert updated["patient_id"] == before[g.account(0)]["id"] == after[g.account(0)]["id"]
    assert inserted["before_last_name"] is None and inserted["after_last_name"] == after["50001"]["last_name"]
    assert inserted["patient_id"] == after["50001"]["id"]
    # Every patient the import wrote is logged: the unchanged ones whose export date moved on too.
    assert log[g.account(20)]["action"] == "seen"
    assert len(log) == g.PATIENTS + g.NEW
    # ...but of them only the export date: a daily full export must not copy every patient's
    # values into the log on every import.
    seen = log[g.account(20)]
    assert seen["before_last_seen_exported_on"] == before[g.account(20)]["last_seen_exported_on"]
    assert seen["after_last_seen_exported_on"] == after[g.account(20)]["last_seen_exported_on"]
    assert all(seen[f"{side}_{c}"] is None for c in changes.VALUE_COLUMNS for side in ("before", "after"))


def test_patients_only_seen_again_have_only_their_export_date_written(imports, monkeypatch):
    """A daily full export is mostly patients seen again: their write stages their key alone and
    moves `last_seen_exported_on` forward, never their every value (docs/performance.md)."""
    from include.patient_import import load

    imports.run("a")
    before = imports.patients()
    staged: dict[str, int] = {}
    real = load._bulk_insert

    def counting(conn, table, rows):
        staged[table.name] = staged.get(table.name, 0) + len(rows)
        staged[f"{table.name} columns"] = len(rows.columns)
        return real(conn, table, rows)

    monkeypatch.setattr(load, "_bulk_insert", counting)
    imports.run("b")
    after = imports.patients()

    assert staged["patient_staging"] == g.UPDATED + g.NEW
    assert staged["patient_seen_staging"] == g.PATIENTS - g.UPDATED
    assert staged["patient_seen_staging columns"] == 2  # practice and account number
    seen = [a for a in before if a in after and after[a]["updated_import_id"] == before[a]["updated_import_id"]]
    assert len(seen) == g.PATIENTS - g.UPDATED
    for account in seen:
        assert after[account] == {**before[account], "last_seen_exported_on": after[account]["last_seen_exported_on"]}
        assert str(after[account]["last_seen_exported_on"]) == str(g.B_ON)


def test_a_day_of_patients_only_seen_again_stages_no_patient_values(imports, monkeypatch):
    """The same file a day later (the bench's "newer identical" case): every row is seen again."""
    from include.patient_import import load

    imports.run("b")
    staged: list[str] = []
    real = load._bulk_insert
    monkeypatch.setattr(load, "_bulk_insert", lambda conn, table, rows: (staged.append(table.name),
                                                                         real(conn, table, rows))[1])
    report = imports.run("b_again").report
    assert report["counts"]["unchanged"] == g.PATIENTS + g.NEW
    assert "patient_staging" not in staged and "patient_seen_staging" in staged
    assert {str(p["last_seen_exported_on"]) for p in imports.patients().values()} == {str(g.B_AGAIN_ON)}


def test_patients_only_seen_again_are_logged_from_their_keys_after_the_written_ones(imports, monkeypatch):
    """The `seen` entries come from the table of keys and the store in one statement before the
    export date moves (`changes.log_seen`), not through the temporary table of before-images and a
    second join with the store after the write; they follow the written patients' entries, with the
    after-image the store then holds (docs/performance.md)."""
    imports.run("a")
    through_before_images: list[str] = []
    real = changes.log_before
    monkeypatch.setattr(changes, "log_before", lambda conn, staging, import_id: (
        through_before_images.append(staging.name), real(conn, staging, import_id))[1])
    import_id = imports.run("b").report["import_id"]
    after = imports.patients()
    table = PatientChange.__table__
    with imports.engine.connect() as conn:
        log = conn.execute(sa.select(table).where(table.c.import_id == import_id).order_by(table.c.id)).mappings().all()

    assert through_before_images == ["patient_staging"]
    actions = [entry["action"] for entry in log]
    assert actions == sorted(actions, key=lambda action: action == "seen")  # the written ones first
    seen = [entry for entry in log if entry["action"] == "seen"]
    assert len(seen) == g.PATIENTS - g.UPDATED
    for entry in seen:
        stored = after[entry["third_party_acct_number"]]
        assert entry["patient_id"] == stored["id"]
        assert entry["after_last_seen_exported_on"] == stored["last_seen_exported_on"]
        assert entry["after_updated_import_id"] == entry["before_updated_import_id"] == stored["updated_import_id"]


def test_changes_file_lists_account_field_before_and_after(imports):
    imports.run("a")
    before = imports.patients()
    import_id = imports.run("b").report["import_id"]
    with imports.engine.connect() as conn:
        text = "".join(changes.changes_csv(conn, import_id))

    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:])))
    assert rows[0] == ["account_number", "field", "before", "after"]
    updates = [r for r in rows[1:] if not r[0].startswith("5000")]
    assert len(updates) == sum(g.B_FIELDS.values())
    assert [g.account(0), "address1", before[g.account(0)]["address1"], "88 Quillwort Lane"] in updates
    new = [r for r in rows[1:] if r[0] == "50001"]
    assert ["50001", "last_name", "", "Marzipanova"] in new
    assert all(r[2] == "" for r in new)


def test_changes_file_cells_never_run_as_formulas(imports, monkeypatch):
    imports.run("a")
    b = g.frame_b()
    b.loc[0, "address1"] = "=HYPERLINK(\"http://x\")"
    g.write(b, imports.files["b"])
    import_id = imports.run("b").report["import_id"]
    with imports.engine.connect() as conn:
        rows = list(csv.reader(io.StringIO("".join(changes.changes_csv(conn, import_id))[1:])))
    [cell] = [r[3] for r in rows if r[0] == g.account(0) and r[1] == "address1"]
    assert cell.startswith("'=")


def test_no_changed_value_reaches_the_report_or_the_logs(imports, caplog):
    imports.run("a")
    replaced = {v for r in imports.patients().values() for k, v in r.items()
                if k in ("address1", "city", "email") and isinstance(v, str) and len(v) > 6}
    with caplog.at_level(logging.DEBUG):
        report = imports.run("b").report
    texts = {"report": json.dumps(report, ensure_ascii=False), "log": caplog.text}

    leaks = {(where, m) for where, text in texts.items() for m in (*MARKERS, *replaced) if m in text}
    assert leaks == set()
    assert report["changes"]["fields"]  # the test looked at a report with changes in it
