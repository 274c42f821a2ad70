"""The Import Results app over HTTP, mounted the way the API server mounts it, with Airflow's real auth.

The app is mounted by Airflow's own `init_plugins` and the SimpleAuthManager's `/auth/token` issues
the tokens; `requires_access_dag` decides. The store is a real SQLite file reached through the
`patient_store` connection, filled by the package's own record functions.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from tests.plugins.conftest import PATIENT_VALUES, T0, _token

pytestmark = pytest.mark.integration

def _ids(client, headers, **params) -> list[str]:
    response = client.get("/import-results/api/imports", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["imports"]]


NEWEST_FIRST = ["demo_clinic_20261124_g", "plan_clinic_20261123_f", "plan_clinic_20261122_e",
                "plan_clinic_20261122_d", "small_clinic_20261121_c", "demo_clinic_20261121_b",
                "demo_clinic_20261120_a"]
DETAIL = "/import-results/imports/demo_clinic_20261120_a"
ROUTES = ["/import-results/", "/import-results/?status=completed", DETAIL,
          "/import-results/api/imports", "/import-results/api/imports/demo_clinic_20261120_a",
          f"{DETAIL}/files/upload", f"{DETAIL}/files/rejected_rows", f"{DETAIL}/data-docs/index.html"]


def test_plugin_mounts_the_app_and_adds_import_results_to_the_navigation():
    from airflow import plugins_manager

    apps, _ = plugins_manager.get_fastapi_plugins()
    views, _ = plugins_manager._get_ui_plugins()
    assert [a["url_prefix"] for a in apps if a["name"] == "Import Results"] == ["/import-results"]
    view = next(v for v in views if v["url_route"] == "import-results")
    assert view["href"] == "/import-results/" and view["destination"] == "nav" and view["nav_top_level"]
    assert view["icon"] and view["icon_dark_mode"] and view["icon_dark_mode"] != view["icon"]


def test_nav_label_fits_the_navigation_button():
    """Airflow 3.3 writes a top-level button's name in 10 px under its icon, 56 px wide, and cuts it with
    an ellipsis: at ~6 px a character (system-ui, 10 px) the label must be at most 9 characters, one word."""
    from airflow import plugins_manager

    views, _ = plugins_manager._get_ui_plugins()
    nav = next(v for v in views if v["url_route"] == "import-results")
    assert len(nav["name"]) <= 9 and " " not in nav["name"], nav["name"]


def test_dag_run_pages_get_a_tab_with_the_runs_imports():
    from airflow import plugins_manager

    views, _ = plugins_manager._get_ui_plugins()
    tab = next(v for v in views if v.get("destination") == "dag_run")
    # Airflow replaces {DAG_ID} and {RUN_ID} with the run's, URL-quoted.
    assert tab["href"] == "/import-results/?dag_id={DAG_ID}&run_id={RUN_ID}"
    assert tab["url_route"] and tab["url_route"] != "import-results"


@pytest.mark.parametrize("route", ROUTES)
def test_anonymous_request_gets_401_and_no_data(client, route):
    response = client.get(route)
    assert response.status_code == 401
    assert "demo_clinic_20261120_a" not in response.text.replace(route, "")
    assert "10442" not in response.text and "Quuxington" not in response.text


def test_anonymous_browser_gets_a_401_page_with_the_login_link(client):
    response = client.get("/import-results/", headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert "/auth/login" in response.text and "demo_clinic" not in response.text


def test_forged_token_is_refused(client):
    response = client.get("/import-results/api/imports", headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code in (401, 403)
    assert "imports" not in response.json()


def test_list_shows_every_import_newest_first(client, viewer):
    assert _ids(client, viewer) == NEWEST_FIRST
    page = client.get("/import-results/", headers=viewer)
    assert page.status_code == 200
    assert re.findall(r'data-import-id="([^"]+)"', page.text) == NEWEST_FIRST


def test_list_item_carries_counts_status_duration_and_dag_run_link(client, viewer):
    items = client.get("/import-results/api/imports", headers=viewer).json()["imports"]
    first = next(i for i in items if i["id"] == "demo_clinic_20261120_a")
    assert first["counts"] == {"read": 5, "inserted": 3, "updated": 0, "unchanged": 0, "skipped": 0, "rejected": 2}
    assert first["status"] == "completed_with_errors" and first["duration_seconds"] == 42
    assert first["practice_name"] == "Demo Chiropractic" and first["exported_on"] == "2026-11-20"
    assert first["dag_run_url"] == "/dags/patient_import/runs/manual__demo_clinic_20261120_a"
    processing = next(i for i in items if i["status"] == "processing")
    assert processing["duration_seconds"] is None
    page = client.get("/import-results/", headers=viewer).text
    assert "running…" in page and 'href="/dags/patient_import/runs/manual__demo_clinic_20261120_a"' in page
    assert "42 s" in page and '<span class="badge dry">dry run</span>' in page


def test_list_filters_by_practice(client, viewer):
    assert _ids(client, viewer, practice="demo_clinic") == [
        "demo_clinic_20261124_g", "demo_clinic_20261121_b", "demo_clinic_20261120_a"]
    page = client.get("/import-results/", headers=viewer, params={"practice": "small_clinic"}).text
    assert re.findall(r'data-import-id="([^"]+)"', page) == ["small_clinic_20261121_c"]


def test_list_filters_by_status_including_processing(client, viewer):
    assert _ids(client, viewer, status="processing") == ["demo_clinic_20261124_g"]
    assert _ids(client, viewer, status="completed") == [
        "plan_clinic_20261123_f", "plan_clinic_20261122_d", "demo_clinic_20261121_b"]
    assert _ids(client, viewer, status="completed", practice="plan_clinic") == [
        "plan_clinic_20261123_f", "plan_clinic_20261122_d"]
    assert _ids(client, viewer, status="rejected", practice="demo_clinic") == []


def test_empty_filters_from_the_form_mean_all(client, viewer):
    assert _ids(client, viewer, practice="", status="") == NEWEST_FIRST


@pytest.mark.parametrize("params", [{"status": "done"}, {"practice": "x'; drop table imports;--"},
                                    {"page": 0}, {"per_page": 1000}])
def test_invalid_filters_are_refused(client, viewer, params):
    assert client.get("/import-results/api/imports", headers=viewer, params=params).status_code == 422


def test_list_paginates(client, viewer):
    pages = [client.get("/import-results/api/imports", headers=viewer, params={"per_page": 3, "page": n}).json()
             for n in (1, 2, 3, 4)]
    assert [p["total"] for p in pages] == [7, 7, 7, 7] and pages[0]["pages"] == 3
    assert [i["id"] for p in pages for i in p["imports"]] == NEWEST_FIRST
    assert pages[3]["imports"] == []
    html = client.get("/import-results/", headers=viewer, params={"per_page": 3, "page": 2}).text
    assert "Page 2 of 3" in html
    assert "page=1" in html and "page=3" in html and "per_page=3" in html


def test_chart_is_server_rendered_svg_per_practice_without_dry_runs(client, viewer):
    page = client.get("/import-results/", headers=viewer).text
    assert page.count("<svg") == 3  # one per practice with imports that are not dry runs
    assert "2026-11-21: 3 updated" in page and "2026-11-20: 2 rejected" in page
    assert "<script src" not in page and "cdn" not in page.lower()


def test_detail_shows_counts_problems_and_links(client, admin):
    response = client.get(DETAIL, headers=admin)
    assert response.status_code == 200
    page = response.text
    counts = dict(re.findall(r'data-count="(\w+)"><div class="value">(\d+)<', page))
    assert counts == {"read": "5", "inserted": "3", "updated": "0", "unchanged": "0", "skipped": "0", "rejected": "2"}
    rows = re.findall(r"<tr class=\"sev-\w+\">\s*(.*?)</tr>", re.search(r'id="problems".*?</table>', page, re.S)[0],
                      re.S)
    cells = [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]
    assert cells == [
        ["file", "", "Referral", "unknown_column", "column &#39;Referral&#39; is not imported"],
        ["3", "10442", "last_name", "missing_required_field", "Last Name is required"],
        ["4", "", "account_number", "invalid_account_number", "1.23E+11 lost its digits to Excel"],
    ]
    assert f'href="{DETAIL}/files/upload"' in page and f'href="{DETAIL}/files/rejected_rows"' in page
    assert f'href="{DETAIL}/data-docs/index.html"' in page
    assert 'href="/dags/patient_import/runs/manual__demo_clinic_20261120_a"' in page


def test_detail_json_matches_the_store(client, viewer):
    body = client.get("/import-results/api/imports/demo_clinic_20261120_a", headers=viewer).json()
    assert body["import"]["counts"]["rejected"] == 2
    assert [(x["row"], x["code"]) for x in body["problems"]] == [
        (None, "unknown_column"), (3, "missing_required_field"), (4, "invalid_account_number")]
    assert body["files"] == {"upload": True, "rejected_rows": True} and body["data_docs"] is True


def test_rejected_import_detail_explains_the_rejection_figures(client, viewer):
    page = client.get("/import-results/imports/small_clinic_20261121_c", headers=viewer).text
    assert "Why the file was rejected" in page and "<dt>overflow</dt><dd>4</dd>" in page


def test_problems_table_paginates(client, viewer, monkeypatch):
    import import_results.app

    monkeypatch.setattr(import_results.app, "PROBLEMS_PER_PAGE", 2)
    first = client.get(DETAIL, headers=viewer).text
    second = client.get(DETAIL, headers=viewer, params={"problems_page": 2}).text
    assert "Problems page 1 of 2" in first and "10442" in first and "1.23E+11" not in first
    assert "Problems page 2 of 2" in second and "1.23E+11" in second and "10442" not in second


def test_pages_load_nothing_from_elsewhere_and_data_docs_are_sandboxed(client, viewer):
    page = client.get("/import-results/", headers=viewer)
    assert "default-src 'none'" in page.headers["content-security-policy"]
    docs = client.get(f"{DETAIL}/data-docs/index.html", headers=viewer)
    assert docs.headers["content-security-policy"].startswith("sandbox allow-scripts;")


def test_unknown_import_is_404(client, admin):
    assert client.get("/import-results/imports/nope_20260101_x", headers=admin).status_code == 404
    assert client.get("/import-results/api/imports/nope_20260101_x", headers=admin).status_code == 404
    assert client.get("/import-results/imports/nope_20260101_x/files/upload", headers=admin).status_code == 404


@pytest.mark.parametrize("kind", ["upload", "rejected_rows"])
def test_admin_downloads_the_patient_files_as_csv(client, admin, store, kind):
    response = client.get(f"{DETAIL}/files/{kind}", headers=admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="{store[kind].name}"'
    assert response.headers["cache-control"] == "no-store"
    assert response.content == store[kind].read_bytes()


@pytest.mark.parametrize("kind", ["upload", "rejected_rows"])
def test_viewer_may_not_download_patient_files(client, viewer, kind):
    response = client.get(f"{DETAIL}/files/{kind}", headers=viewer)
    assert response.status_code == 403
    assert "Zebediah" not in response.text


def test_viewer_reads_the_detail_without_download_links(client, viewer):
    page = client.get(DETAIL, headers=viewer).text
    assert "/files/upload" not in page and "/files/rejected_rows" not in page
    assert "allowed to run the <code>patient_import</code> DAG" in page
    assert "/data-docs/index.html" in page


def test_download_serves_only_files_inside_the_file_areas(client, admin):
    # The failed import's record points outside the outbox: nothing is served.
    assert client.get("/import-results/imports/plan_clinic_20261122_e/files/upload", headers=admin).status_code == 404
    assert client.get(f"{DETAIL}/files/archive", headers=admin).status_code == 422


def test_data_docs_are_served_from_the_imports_site_only(client, viewer):
    assert client.get(f"{DETAIL}/data-docs/index.html", headers=viewer).text.endswith("Data Docs index</body></html>")
    assert client.get(f"{DETAIL}/data-docs/validations/run.html", headers=viewer).status_code == 200
    for escape in ("..%2F..%2F..%2F..%2Foutside.csv", "%2E%2E/%2E%2E/%2E%2E/%2E%2E/outside.csv",
                   "/etc/passwd", "validations/../../../../../outside.csv"):
        response = client.get(f"{DETAIL}/data-docs/{escape}", headers=viewer)
        assert response.status_code == 404, escape
        assert "secret" not in response.text


def test_pages_show_no_patient_values(client, admin):
    for route in ["/import-results/", DETAIL, "/import-results/api/imports",
                  "/import-results/api/imports/demo_clinic_20261120_a",
                  "/import-results/imports/small_clinic_20261121_c"]:
        text = client.get(route, headers=admin).text
        assert not [value for value in PATIENT_VALUES if value in text], route


def test_the_uis_token_cookie_authenticates(client):
    client.cookies.set("_token", _token(client, "viewer"))
    try:
        assert _ids(client, {}) == NEWEST_FIRST
    finally:
        client.cookies.clear()


def test_store_without_imports_yet_shows_an_empty_list(client, viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PATIENT_STORE",
                       json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "new.db")}))
    response = client.get("/import-results/", headers=viewer)
    assert response.status_code == 200 and "No imports" in response.text
    assert client.get("/import-results/api/imports", headers=viewer).json()["total"] == 0


def test_default_store_is_used_without_the_connection(client, viewer, monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW_CONN_PATIENT_STORE")
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path))
    assert client.get("/import-results/api/imports", headers=viewer).json()["total"] == 0
    assert (tmp_path / "patient_store.db").exists()


def test_files_in_an_object_store_are_served_from_there_and_only_from_their_area(
        client, admin, viewer, store, object_store, monkeypatch):
    from include.patient_import import records, storage
    from include.patient_import.records import open_store

    root = object_store.new_root()
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", root)
    areas = storage.path_of(root)
    upload = storage.copy(store["upload"], areas / "outbox" / "demo_clinic" / store["upload"].name)
    docs = storage.put_folder(store["docs"], areas / "data_docs" / "demo_clinic" / "demo_clinic_20261120_a")
    elsewhere = storage.copy(store["upload"], areas / "archive_copy" / "x.csv")
    import_id = DETAIL.rsplit("/", 1)[1]
    engine = open_store(f"sqlite:///{store['database']}")
    try:
        records.update_import(engine, import_id, upload_path=str(upload), data_docs_path=str(docs / "index.html"))

        response = client.get(f"{DETAIL}/files/upload", headers=admin)
        assert response.status_code == 200 and response.content == store["upload"].read_bytes()
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"] == f'attachment; filename="{store["upload"].name}"'
        assert response.headers["cache-control"] == "no-store"
        assert client.get(f"{DETAIL}/files/upload", headers=viewer).status_code == 403
        page = client.get(f"{DETAIL}/data-docs/validations/run.html", headers=viewer)
        assert page.status_code == 200 and page.text == "<html>one validation</html>"
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"].startswith("sandbox allow-scripts;")
        escape = f"validations/../../../../outbox/demo_clinic/{store['upload'].name}"
        assert client.get(f"{DETAIL}/data-docs/{escape}", headers=viewer).status_code == 404

        records.update_import(engine, import_id, upload_path=str(elsewhere))  # not in the outbox
        assert client.get(f"{DETAIL}/files/upload", headers=admin).status_code == 404
    finally:
        records.update_import(engine, import_id, upload_path=str(store["upload"]),
                              data_docs_path=str(store["docs"] / "index.html"))
        engine.dispose()


# ---------------------------------------------------------------- problems: paged, filtered, summarised in SQL

API_DETAIL = "/import-results/api/imports/demo_clinic_20261120_a"


def _problem_rows(page: str) -> list[list[str]]:
    table = re.search(r'id="problems".*?</table>', page, re.S)[0]
    rows = re.findall(r"<tr class=\"sev-\w+\">\s*(.*?)</tr>", table, re.S)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]


def test_detail_json_pages_the_problems(client, viewer):
    first = client.get(API_DETAIL, headers=viewer, params={"problems_per_page": 2}).json()
    second = client.get(API_DETAIL, headers=viewer, params={"problems_per_page": 2, "problems_page": 2}).json()
    past = client.get(API_DETAIL, headers=viewer, params={"problems_per_page": 2, "problems_page": 3}).json()

    assert [x["row"] for x in first["problems"]] == [None, 3] and [x["row"] for x in second["problems"]] == [4]
    assert (first["problems_total"], first["problems_pages"], first["problems_per_page"]) == (3, 2, 2)
    assert second["problems_page"] == 2 and past["problems"] == [] and past["problems_total"] == 3


@pytest.mark.parametrize(("params", "expected"), [
    ({"severity": "warning"}, [(None, "unknown_column")]),
    ({"severity": "error"}, [(3, "missing_required_field"), (4, "invalid_account_number")]),
    ({"severity": "info"}, []),
    ({"code": "invalid_account_number"}, [(4, "invalid_account_number")]),
    ({"code": "missing_required_field", "severity": "warning"}, []),
    ({"account": "10442"}, [(3, "missing_required_field")]),
    ({"account": " #0010442 "}, [(3, "missing_required_field")]),  # as the office types it, stored as 10442
    ({"account": "99999"}, []),
    ({"account": "not a number"}, []),
    ({"severity": "", "code": "", "account": ""}, [(None, "unknown_column"), (3, "missing_required_field"),
                                                   (4, "invalid_account_number")]),
])
def test_detail_json_filters_problems_by_severity_code_and_account(client, viewer, params, expected):
    body = client.get(API_DETAIL, headers=viewer, params=params).json()

    assert [(x["row"], x["code"]) for x in body["problems"]] == expected
    assert body["problems_total"] == len(expected)


@pytest.mark.parametrize("params", [{"severity": "fatal"}, {"code": "DROP TABLE"}, {"problems_per_page": 0},
                                    {"problems_per_page": 1001}, {"problems_page": 0}])
def test_invalid_problem_filters_are_refused(client, viewer, params):
    assert client.get(API_DETAIL, headers=viewer, params=params).status_code == 422


def test_detail_json_summarises_problems_per_code_with_what_is_only_counted(client, viewer, store):
    import sqlite3

    summary = client.get(API_DETAIL, headers=viewer).json()["problem_summary"]
    assert summary == [
        {"code": "invalid_account_number", "severity": "error", "total": 1, "listed": 1},
        {"code": "missing_required_field", "severity": "error", "total": 1, "listed": 1},
        {"code": "unknown_column", "severity": "warning", "total": 1, "listed": 1}]
    with sqlite3.connect(store["database"]) as db:  # warnings beyond the cap: counted, not listed
        db.execute("INSERT INTO import_problem_counts (import_id, code, field, severity, listed, total) "
                   "VALUES ('demo_clinic_20261120_a', 'invalid_email', 'email', 'warning', 1000, 250000)")
    try:
        body = client.get(API_DETAIL, headers=viewer).json()
        page = client.get(DETAIL, headers=viewer).text
    finally:
        with sqlite3.connect(store["database"]) as db:
            db.execute("DELETE FROM import_problem_counts WHERE code = 'invalid_email'")
    assert {"code": "invalid_email", "severity": "warning", "total": 250000, "listed": 1000} in body["problem_summary"]
    row = re.search(r'<tr class="sev-warning" data-code="invalid_email">(.*?)</tr>', page, re.S)[1]
    assert [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] == [
        "invalid_email", "warning", "250000", "1000"]
    assert "counted, not listed" in page and "first 1,000 of one code and field" in page


def test_detail_page_filters_problems_and_keeps_the_filters_in_its_pages(client, viewer, monkeypatch):
    import import_results.app

    errors = client.get(DETAIL, headers=viewer, params={"severity": "error"}).text
    by_account = client.get(DETAIL, headers=viewer, params={"account": "10442"}).text
    none = client.get(DETAIL, headers=viewer, params={"code": "duplicate_row"}).text
    monkeypatch.setattr(import_results.app, "PROBLEMS_PER_PAGE", 1)
    paged = client.get(DETAIL, headers=viewer, params={"severity": "error"}).text

    assert [r[3] for r in _problem_rows(errors)] == ["missing_required_field", "invalid_account_number"]
    assert [r[:2] for r in _problem_rows(by_account)] == [["3", "10442"]]
    assert _problem_rows(none) == [] and "No problems match." in none
    assert '<option value="error" selected>' in errors and 'value="10442"' in by_account
    assert "Problems page 1 of 2" in paged and "severity=error" in re.search(r'href="([^"]*problems_page=2[^"]*)"',
                                                                             paged)[1]


def test_detail_page_shows_the_per_code_summary_with_links_to_each_code(client, viewer):
    page = client.get(DETAIL, headers=viewer).text

    summary = re.search(r'id="problem-summary".*?</table>', page, re.S)[0]
    assert re.findall(r'data-code="(\w+)"', summary) == [
        "invalid_account_number", "missing_required_field", "unknown_column"]
    assert f'href="{DETAIL}?code=unknown_column"' in summary
    assert "counted, not listed" not in page  # nothing of this import is only counted


# ---------------------------------------------------------------- runs, backfills, typos, time zone, Data Docs

def test_list_filters_by_dag_run_id(client, viewer):
    assert _ids(client, viewer, run_id="manual__demo_clinic_20261121_b") == ["demo_clinic_20261121_b"]
    assert _ids(client, viewer, run_id="manual__no_such_run") == []
    page = client.get("/import-results/", headers=viewer, params={"run_id": "manual__plan_clinic_20261122_d"}).text
    assert re.findall(r'data-import-id="(\w+)"', page) == ["plan_clinic_20261122_d"]
    assert 'id="run-filter"' in page and 'href="/dags/patient_import/runs/manual__plan_clinic_20261122_d"' in page


def test_run_tab_of_another_dag_says_it_imports_nothing(client, viewer):
    page = client.get("/import-results/", headers=viewer, params={"dag_id": "other_dag", "run_id": "manual__x"}).text
    assert 'id="other-dag"' in page and "<code>other_dag</code>" in page


@pytest.mark.parametrize("run_id", ["manual__\x00x", "a" * 251])
def test_invalid_run_ids_are_refused(client, viewer, run_id):
    assert client.get("/import-results/api/imports", headers=viewer, params={"run_id": run_id}).status_code == 422


def test_every_import_links_to_its_run_and_to_the_runs_imports(client, viewer):
    item = next(i for i in client.get("/import-results/api/imports", headers=viewer).json()["imports"]
                if i["id"] == "demo_clinic_20261120_a")
    assert item["run_imports_url"] == "/import-results/?run_id=manual__demo_clinic_20261120_a"
    detail = client.get(DETAIL, headers=viewer).text
    assert 'href="/import-results/?run_id=manual__demo_clinic_20261120_a" data-run-imports' in detail
    assert 'href="/dags/patient_import/runs/manual__demo_clinic_20261120_a" data-airflow-link' in detail


def test_times_are_machine_readable_for_the_time_zone_script(client, viewer):
    page = client.get("/import-results/", headers=viewer).text
    assert '<time datetime="2026-11-20T09:00:00+00:00">2026-11-20 09:00</time>' in page
    detail = client.get(DETAIL, headers=viewer).text
    assert '<time datetime="2026-11-20T09:00:00+00:00" data-zone>2026-11-20 09:00 UTC</time>' in detail
    assert 'localStorage.getItem("timezone")' in detail


def test_pages_follow_airflows_colour_mode_with_the_system_as_fallback(client, viewer):
    page = client.get("/import-results/", headers=viewer).text
    assert 'localStorage.getItem("theme")' in page and 'classList' in page
    assert ':root[data-theme="dark"]' in page and "prefers-color-scheme: dark" in page


@pytest.fixture
def other_store(tmp_path, monkeypatch):
    """A store of its own: a backfill's re-import of an archived file, and a practice id with a typo."""
    from include.patient_import import records
    from include.patient_import.records import open_store

    database = tmp_path / "other.db"
    engine = open_store(f"sqlite:///{database}", prepare=True)
    sha = "ab12cd34" + "0" * 56
    imports = [  # id, practice, run, export name, checksum, started
        ("demo_clinic_20261120_orig", "demo_clinic", "manual__1", "Genesis export 2026-11-20.csv", sha, T0),
        ("demo_clinic_20261120_bf", "demo_clinic", "backfill__2026-11-20T00:00:00+00:00",
         "Genesis_export_2026-11-20_ab12cd34.csv", sha, T0 + timedelta(days=3)),
        ("plan_clinic_20261121_bf", "plan_clinic", "backfill__2026-11-21T00:00:00+00:00",
         "plan_ffee0011.xlsx", "ffee0011" + "1" * 56, T0 + timedelta(days=3, hours=1)),
        ("plan_clinic_20261121_x", "plan_clinic", "manual__2", "export_12345678.csv", "9" * 64, T0),
        ("demo_clinc_20261121_typo", "demo_clinc", "manual__3", "typo.csv", "8" * 64, T0 + timedelta(days=1)),
    ]
    for import_id, practice, run_id, name, checksum, started in imports:
        records.register_import(engine, id=import_id, practice_id=practice, dag_run_id=run_id, map_index=0,
                                run_type=run_id.split("__")[0], export_name=name, export_sha256=checksum,
                                export_bytes=10, archive_path=None, exported_on=started.date(), dry_run=False)
        records.update_import(engine, import_id, status="completed", started_at=started,
                              finished_at=started + timedelta(seconds=5))
    engine.dispose()
    monkeypatch.setenv("AIRFLOW_CONN_PATIENT_STORE", json.dumps({"conn_type": "sqlite", "host": str(database)}))


def test_backfill_imports_show_the_name_the_office_gave_the_file(client, viewer, other_store):
    items = {i["id"]: i for i in client.get("/import-results/api/imports", headers=viewer).json()["imports"]}
    # The first import of the same file (practice and checksum) under its own name.
    assert items["demo_clinic_20261120_bf"]["original_name"] == "Genesis export 2026-11-20.csv"
    # No earlier import of it: the archived name without its _<sha8>.
    assert items["plan_clinic_20261121_bf"]["original_name"] == "plan.xlsx"
    # A name that merely ends like a checksum, and not this file's: left as it is.
    assert items["plan_clinic_20261121_x"]["original_name"] == "export_12345678.csv"
    assert items["demo_clinic_20261120_orig"]["original_name"] == "Genesis export 2026-11-20.csv"
    page = client.get("/import-results/", headers=viewer).text
    assert "re-imported from the archive as Genesis_export_2026-11-20_ab12cd34.csv" in page
    detail = client.get("/import-results/imports/demo_clinic_20261120_bf", headers=viewer).text
    assert "<h1>Genesis export 2026-11-20.csv" in detail and 'id="archived-name"' in detail


def test_practices_that_exist_only_by_a_typo_are_not_offered_as_practices(client, viewer, other_store):
    page = client.get("/import-results/", headers=viewer).text
    offered = re.findall(r'<option value="(\w+)"', re.search(r'<select name="practice">.*?</select>', page, re.S)[0])
    assert offered == ["demo_clinic", "plan_clinic", "small_clinic"]  # the registry's, with or without imports
    note = re.search(r'id="unregistered".*?</p>', page, re.S)[0]
    assert "<code>demo_clinc</code>" in note and "(1 import)" in note and "demo_clinic</code>" not in note
    assert 'class="badge unregistered"' in page
    charts = re.findall(r'aria-label="Patients per day for ([^"]+)"', page)
    assert charts == ["Demo Chiropractic", "Payment Plan Clinic"]
    typo = client.get("/import-results/", headers=viewer, params={"practice": "demo_clinc"}).text
    assert re.findall(r'data-import-id="(\w+)"', typo) == ["demo_clinc_20261121_typo"]
    assert '<option value="demo_clinc" selected>demo_clinc (not registered)</option>' in typo
    assert re.findall(r'aria-label="Patients per day for ([^"]+)"', typo) == ["demo_clinc"]
    items = client.get("/import-results/api/imports", headers=viewer).json()["imports"]
    assert {i["id"]: i["registered"] for i in items}["demo_clinc_20261121_typo"] is False


def test_data_docs_open_under_a_signed_link_that_serves_the_whole_site_without_the_cookie(client, viewer, store):
    (store["docs"] / "static" / "vendor").mkdir(parents=True, exist_ok=True)
    (store["docs"] / "static" / "vendor" / "site.css").write_text("body{color:red}", encoding="utf-8")
    opened = client.get(f"{DETAIL}/data-docs/index.html", headers=viewer, follow_redirects=False)
    assert opened.status_code == 307
    signed = opened.headers["location"]
    assert signed.startswith("/import-results-docs/demo_clinic_20261120_a/") and signed.endswith("/index.html")
    base = signed.rsplit("/", 1)[0]
    # A sandboxed page's requests carry no cookie: the signature alone opens its pages and assets.
    client.cookies.clear()
    page = client.get(signed)
    assert page.status_code == 200 and page.text.endswith("Data Docs index</body></html>")
    assert page.headers["content-security-policy"].startswith("sandbox allow-scripts;")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get(f"{base}/validations/run.html").status_code == 200
    css = client.get(f"{base}/static/vendor/site.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["access-control-allow-origin"] == "*"  # fonts load in CORS mode from origin "null"


def test_data_docs_signed_links_refuse_forgery_expiry_and_escapes(client, viewer):
    import import_results.app as app_module

    signed = client.get(f"{DETAIL}/data-docs/index.html", headers=viewer, follow_redirects=False).headers["location"]
    _, _, import_id, expires, signature, _ = signed.split("/", 5)
    forged = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    assert client.get(f"/import-results-docs/{import_id}/{expires}/{forged}/index.html").status_code == 404
    # The signature of one import opens no other's site.
    assert client.get(f"/import-results-docs/demo_clinic_20261121_b/{expires}/{signature}/index.html"
                      ).status_code == 404
    # A later expiry is another signature.
    assert client.get(f"/import-results-docs/{import_id}/{int(expires) + 1}/{signature}/index.html"
                      ).status_code == 404
    past = 1_000_000
    expired = f"/import-results-docs/{import_id}/{past}/{app_module._signature(import_id, past)}/index.html"
    assert client.get(expired).status_code == 410
    for escape in ("..%2F..%2F..%2F..%2Foutside.csv", "validations/../../../../../outside.csv"):
        response = client.get(f"/import-results-docs/{import_id}/{expires}/{signature}/{escape}")
        assert response.status_code == 404 and "secret" not in response.text


def test_the_account_box_holds_no_more_than_the_api_takes(client, viewer):
    """A longer account number typed into the page's box would come back as the API's raw 422 JSON
    inside the page (a newcomer's find): the box stops at the same length."""
    from plugins.import_results.app import ACCOUNT_SEARCH_LENGTH

    page = client.get(DETAIL, headers=viewer).text
    assert re.search(rf'<input[^>]*name="account"[^>]*maxlength="{ACCOUNT_SEARCH_LENGTH}"', page)
    too_long = "1" * (ACCOUNT_SEARCH_LENGTH + 1)
    assert client.get(API_DETAIL, headers=viewer, params={"account": too_long}).status_code == 422
