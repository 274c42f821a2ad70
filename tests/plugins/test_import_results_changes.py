"""Import Results and SPEC §8: per-field counts on the import's page, the changes file gated like the
other patient files, downloads and undos in the audit, and the Undo button only for users who may
run the undo DAG. Airflow's real plugin mounting and auth manager (tests/plugins/conftest.py)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from tests.plugins.conftest import PATIENT_VALUES

pytestmark = pytest.mark.integration

CHANGED = "demo_clinic_20261121_b"  # completed: 1 inserted, 3 updated (conftest)
PAGE = f"/import-results/imports/{CHANGED}"
FIELDS = {"address1": 2, "city": 1}


@pytest.fixture(scope="module")
def changed(store):
    """The change log of CHANGED: one patient inserted, two updated, with patient values."""
    from include.patient_import import records
    from include.patient_import.store import PatientChange, create_store_engine

    engine = create_store_engine(f"sqlite:///{store['database']}")
    # Loaded: the undo refuses an import the store never recorded as loaded (changes.undo_refusal).
    records.update_import(engine, CHANGED, field_changes=json.dumps(FIELDS),
                          loaded_at=datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc))
    zeb, quux, mail, phone, street = PATIENT_VALUES
    with engine.begin() as conn:
        for account, action, before, after in (
                ("20001", "updated", {"address1": "1 Old Rd", "city": "Salem"}, {"address1": street, "city": "Dover"}),
                ("20002", "updated", {"address1": "2 Old Rd"}, {"address1": "=2+3"}),
                ("20003", "inserted", {}, {"first_name": zeb, "last_name": quux, "email": mail})):
            conn.execute(sa.insert(PatientChange.__table__).values(
                import_id=CHANGED, practice_id="demo_clinic", third_party_acct_number=account, action=action,
                **{f"before_{k}": v for k, v in before.items()}, **{f"after_{k}": v for k, v in after.items()}))
    engine.dispose()
    return store


def _audit(store) -> list[tuple]:
    from include.patient_import import audit
    from include.patient_import.store import create_store_engine

    engine = create_store_engine(f"sqlite:///{store['database']}")
    with engine.connect() as conn:
        found = [(e["action"], e["who"], e["detail"]) for e in audit.entries(conn, CHANGED)]
    engine.dispose()
    return found


def test_page_shows_how_many_patients_each_field_changed(client, viewer, changed):
    page = client.get(PAGE, headers=viewer).text
    table = re.search(r'id="field-changes".*?</table>', page, re.S)[0]
    assert dict(re.findall(r'data-field="(\w+)"><td class="code">\w+</td><td class="num">(\d+)<', table)) == {
        "address1": "2", "city": "1"}
    body = client.get(f"/import-results/api/imports/{CHANGED}", headers=viewer).json()
    assert body["changes"] == {"fields": FIELDS, "file": True}


def test_admin_downloads_the_changes_file_and_the_audit_names_them(client, admin, changed):
    response = client.get(f"{PAGE}/files/changes", headers=admin)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="{CHANGED}_changes.csv"'
    assert response.headers["cache-control"] == "no-store"
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0] == ["account_number", "field", "before", "after"]
    assert ["20001", "address1", "1 Old Rd", "742 Evergreen Terrace"] in rows
    assert ["20002", "address1", "2 Old Rd", "'=2+3"] in rows  # never run as a formula
    assert ["20003", "first_name", "", "Zebediah"] in rows
    assert ("downloaded", "admin", "changes") in _audit(changed)
    page = client.get(PAGE, headers=admin).text
    audit_table = re.search(r'id="audit".*?</table>', page, re.S)[0]
    assert 'data-action="downloaded"' in audit_table and ">admin<" in audit_table


def test_viewer_may_not_download_the_changes_file(client, viewer, changed):
    response = client.get(f"{PAGE}/files/changes", headers=viewer)

    assert response.status_code == 403
    assert not [v for v in PATIENT_VALUES if v in response.text]
    assert f"{PAGE}/files/changes" not in client.get(PAGE, headers=viewer).text
    assert not [a for a in _audit(changed) if a[1] == "viewer"]


def test_downloads_of_the_other_patient_files_are_audited(client, admin, store):
    from include.patient_import import audit
    from include.patient_import.store import create_store_engine

    assert client.get("/import-results/imports/demo_clinic_20261120_a/files/upload", headers=admin).status_code == 200
    engine = create_store_engine(f"sqlite:///{store['database']}")
    with engine.connect() as conn:
        entries = audit.entries(conn, "demo_clinic_20261120_a")
    engine.dispose()
    assert ("downloaded", "admin", "upload") in [(e["action"], e["who"], e["detail"]) for e in entries]


def test_an_import_without_changes_has_no_changes_file(client, admin):
    page = client.get("/import-results/imports/demo_clinic_20261120_a", headers=admin).text
    assert "/files/changes" not in page
    assert client.get("/import-results/imports/demo_clinic_20261120_a/files/changes",
                      headers=admin).status_code == 404


def test_undo_button_is_shown_to_users_who_may_run_the_undo_dag(client, admin, changed):
    page = client.get(PAGE, headers=admin).text

    button = re.search(r'<button[^>]*id="undo-import"[^>]*>', page)[0]
    assert f'data-import-id="{CHANGED}"' in button
    assert 'data-api="/api/v2/dags/patient_import_undo/dagRuns"' in button
    assert "connect-src 'self'" in client.get(PAGE, headers=admin).headers["content-security-policy"]


def test_undo_button_is_hidden_from_users_who_may_not_run_it(client, viewer, changed):
    assert 'id="undo-import"' not in client.get(PAGE, headers=viewer).text


@pytest.mark.parametrize("import_id", ["small_clinic_20261121_c", "plan_clinic_20261123_f", "demo_clinic_20261120_a"])
def test_undo_button_is_offered_only_for_a_completed_import_that_changed_patients(client, admin, changed, import_id):
    """Rejected, a dry run, and an import without a change log: nothing to undo."""
    assert 'id="undo-import"' not in client.get(f"/import-results/imports/{import_id}", headers=admin).text


def test_an_undone_import_shows_who_undid_it_and_offers_no_second_button(client, admin, store, changed):
    from datetime import datetime, timezone

    from include.patient_import import audit, records
    from include.patient_import.store import create_store_engine

    engine = create_store_engine(f"sqlite:///{store['database']}")
    records.update_import(engine, "plan_clinic_20261122_d", status="undone",
                          undone_at=datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc), undone_by="office.lead")
    audit.record(engine, "plan_clinic_20261122_d", audit.UNDONE, "office.lead", "removed 2, restored 0")
    engine.dispose()

    page = client.get("/import-results/imports/plan_clinic_20261122_d", headers=admin).text
    assert 'id="undone"' in page and "office.lead" in page and "status-undone" in page
    assert 'id="undo-import"' not in page
    listed = client.get("/import-results/api/imports", headers=admin, params={"status": "undone"}).json()
    assert [x["id"] for x in listed["imports"]] == ["plan_clinic_20261122_d"]


def test_pages_show_no_changed_value(client, admin, changed):
    for route in (PAGE, f"/import-results/api/imports/{CHANGED}"):
        text = client.get(route, headers=admin).text
        assert not [v for v in (*PATIENT_VALUES, "1 Old Rd", "Salem") if v in text], route


APPROVAL = {"waits": True, "answer": "rejected", "by": "office.lead", "answered_at": "2026-11-21T11:30:00+00:00",
            "reasons": [{"code": "inserts_over_limit", "message": "9 new patients, more than the 5 allowed",
                         "inserted": 9, "limit": 5}],
            "counts": {"read": 9, "inserted": 9, "updated": 0, "unchanged": 0, "skipped": 0, "rejected": 0},
            "stored": 0, "capacity": 5, "fields": {}, "timeout_hours": 24}


@pytest.fixture(scope="module")
def approvals(store):
    """small_clinic's rejected import waited and was rejected; plan_clinic's did not wait."""
    from include.patient_import import records
    from include.patient_import.store import create_store_engine

    engine = create_store_engine(f"sqlite:///{store['database']}")
    records.set_approval(engine, "small_clinic_20261121_c", APPROVAL)
    records.set_approval(engine, "plan_clinic_20261122_d", {"waits": False, "reasons": [], "answer": None,
                                                             "by": None, "answered_at": None})
    engine.dispose()
    return store


def test_page_and_api_say_an_import_waited_for_approval_why_and_the_answer(client, viewer, approvals):
    page = client.get("/import-results/imports/small_clinic_20261121_c", headers=viewer).text
    section = re.search(r'<dl class="meta" id="approval" data-answer="rejected">.*?</dl>', page, re.S)[0]
    assert 'data-reason="inserts_over_limit"' in section and "9 new patients, more than the 5 allowed" in section
    assert "office.lead" in section and 'datetime="2026-11-21T11:30:00+00:00"' in section

    body = client.get("/import-results/api/imports/small_clinic_20261121_c", headers=viewer).json()
    assert body["approval"] == {"required": True, "answer": "rejected", "by": "office.lead",
                                "answered_at": "2026-11-21T11:30:00+00:00", "why_not": None,
                                "reasons": [{"code": "inserts_over_limit",
                                             "message": "9 new patients, more than the 5 allowed"}]}


def test_an_import_that_did_not_wait_shows_no_approval_section(client, viewer, approvals):
    assert 'id="approval"' not in client.get("/import-results/imports/plan_clinic_20261122_d", headers=viewer).text
    body = client.get("/import-results/api/imports/plan_clinic_20261122_d", headers=viewer).json()
    assert body["approval"]["required"] is False and body["approval"]["why_not"] == "under every threshold"
    # An import from before approval existed has none.
    assert client.get(f"/import-results/api/imports/{CHANGED}", headers=viewer).json()["approval"] is None


def test_an_undone_import_links_the_undos_report(client, viewer, store):
    from datetime import datetime, timezone

    from include.patient_import import records
    from include.patient_import.store import create_store_engine

    undone = "plan_clinic_20261122_d"
    engine = create_store_engine(f"sqlite:///{store['database']}")
    records.update_import(engine, undone, status="undone",
                          undone_at=datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc), undone_by="office.lead")
    engine.dispose()
    url = f"/import-results/imports/{undone}/undo-report"
    assert client.get(f"/import-results/api/imports/{undone}", headers=viewer).json()["undo"]["report_url"] is None
    assert client.get(url, headers=viewer).status_code == 404

    written = store["home"] / "reports" / "plan_clinic" / f"{undone}_undo.json"
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_text(json.dumps({"import_id": undone, "changed_since": [{"account_number": "30001"}]}),
                       encoding="utf-8")

    assert client.get(f"/import-results/api/imports/{undone}", headers=viewer).json()["undo"]["report_url"] == url
    assert f'id="undo-report" href="{url}"' in client.get(f"/import-results/imports/{undone}", headers=viewer).text
    response = client.get(url, headers=viewer)
    assert response.status_code == 200 and response.json()["changed_since"] == [{"account_number": "30001"}]
    assert response.headers["cache-control"] == "no-store"


def test_an_import_not_undone_has_no_undo_report(client, viewer, store):
    # A file where an undo's report would be does not make an import that was never undone undone.
    stray = store["home"] / "reports" / "demo_clinic" / f"{CHANGED}_undo.json"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("{}", encoding="utf-8")
    assert client.get(f"{PAGE}/undo-report", headers=viewer).status_code == 404
    assert 'id="undo-report"' not in client.get(PAGE, headers=viewer).text


def test_a_download_while_a_load_holds_the_sqlite_store_is_refused_busy_not_served(client, admin, changed, monkeypatch):
    # A long load holds SQLite's one write lock; the download's audit entry cannot be written, so
    # the file is not served: 503 with Retry-After, after the (here shortened) busy timeout.
    from import_results import app as results

    from include.patient_import import store as store_module

    monkeypatch.setattr(store_module, "SQLITE_BUSY_TIMEOUT_SECONDS", 1)
    results._audit_engine.cache_clear()
    holder = sa.create_engine(f"sqlite:///{changed['database']}", isolation_level=None)
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            response = client.get(f"{PAGE}/files/changes", headers=admin)
            conn.exec_driver_sql("ROLLBACK")
    finally:
        holder.dispose()
        results._audit_engine.cache_clear()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "60"
    assert "busy" in response.text and "account_number" not in response.text


def _changed_for_a_test(store, import_id: str, **values):
    """Set `values` on the import's row; returns a function that puts the row back."""
    from include.patient_import import records
    from include.patient_import.store import create_store_engine

    engine = create_store_engine(f"sqlite:///{store['database']}")
    with engine.connect() as conn:
        before = records.get_import(conn, import_id)
    records.update_import(engine, import_id, **values)

    def put_back() -> None:
        records.update_import(engine, import_id, **{k: before[k] for k in values})
        engine.dispose()

    return put_back


@pytest.mark.parametrize(("import_id", "says", "not_said"), [
    # Still processing: it waits in Required Actions, it was not "loaded unanswered".
    ("demo_clinic_20261124_g", "waiting for an answer", "unanswered when it was loaded"),
    ("plan_clinic_20261122_e", "none recorded (the import failed)", "unanswered when it was loaded"),
])
def test_an_unanswered_approval_says_whether_it_waits_or_the_import_failed(client, viewer, store, import_id,
                                                                           says, not_said):
    put_back = _changed_for_a_test(store, import_id, approval=json.dumps({**APPROVAL, "answer": None, "by": None,
                                                                         "answered_at": None}))
    try:
        page = client.get(f"/import-results/imports/{import_id}", headers=viewer).text
    finally:
        put_back()
    section = re.search(r'<dl class="meta" id="approval".*?</dl>', page, re.S)[0]
    assert says in section and not_said not in section
    if import_id.endswith("_g"):
        assert 'id="required-actions" href="/required_actions"' in section


def test_a_partly_undone_import_offers_to_finish_the_undo_and_warns_against_its_upload_file(client, admin, store):
    from datetime import datetime, timezone

    from include.patient_import.store import PatientChange, create_store_engine

    import_id = "demo_clinic_20261120_a"  # has an upload-ready file (conftest)
    put_back = _changed_for_a_test(store, import_id, status="undone", loaded_at=datetime(2026, 11, 20, 9, 5,
                                   tzinfo=timezone.utc), undone_at=datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc),
                                   undone_by="office.lead")
    engine = create_store_engine(f"sqlite:///{store['database']}")
    changes = PatientChange.__table__
    with engine.begin() as conn:  # one patient a later import changed again: still pending
        conn.execute(sa.insert(changes).values(import_id=import_id, practice_id="demo_clinic",
                                               third_party_acct_number="10001", action="inserted"))
    try:
        page = client.get(f"/import-results/imports/{import_id}", headers=admin).text
        undo = client.get(f"/import-results/api/imports/{import_id}", headers=admin).json()["undo"]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.delete(changes).where(changes.c.import_id == import_id))
        engine.dispose()
        put_back()
    assert 'id="undo-pending" data-pending="1"' in page
    assert re.search(r'<button[^>]*id="undo-import"[^>]*>↶ Finish undoing this import</button>', page)
    assert 'id="undone-files"' in page and "do not upload its upload-ready file" in page
    assert (undo["pending"], undo["undoable"]) == (1, True)


def test_a_list_in_the_rejection_details_reads_as_a_list_not_python(client, viewer, store):
    import_id = "small_clinic_20261121_c"
    put_back = _changed_for_a_test(store, import_id, details=json.dumps({"reasons": ["inserts_over_limit",
                                                                                    "columns_changed"]}))
    try:
        page = client.get(f"/import-results/imports/{import_id}", headers=viewer).text
    finally:
        put_back()
    assert "<dd>inserts_over_limit, columns_changed</dd>" in page and "[&#39;" not in page
