"""Trust boundaries (SPEC §7) at the package level: what a run's conf and an inbox may bring in.

Every hostile value must be refused before anything is read or copied: no archive, no quarantine,
no import registered, the original untouched. `tests/integration/test_trust_boundaries_dag.py`
crosses the same boundaries through the real DAG.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from datetime import date, timedelta
from pathlib import Path

import airflow.sdk  # noqa: F401 - Airflow reads AIRFLOW_HOME once: before a test points it elsewhere
import pytest
import sqlalchemy as sa

from include.patient_import import boundaries, files, planning, records
from include.patient_import import problems as p
from include.patient_import.extract import RunInfo, extract_exports
from include.patient_import.store import Import
from include.patient_import.untrusted import printable
from tools.corpus import CORPUS_PRACTICE, PRACTICE_ID, accepted_rows, csv_text, prepare_home, run_import
from tools.harness.registry import practice, registry_yaml

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

OTHER = "other_clinic"
TWO_PRACTICES = registry_yaml(CORPUS_PRACTICE, practice(OTHER, "Other Clinic"))


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def engine(home, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    engine = prepare_home(home, monkeypatch, limits=False, practices_yaml=TWO_PRACTICES)
    yield engine
    engine.dispose()


@pytest.fixture
def exports(tmp_path, monkeypatch) -> Path:
    """The one export root: `$PATIENT_IMPORT_EXPORT_ROOTS` names only this folder."""
    root = tmp_path / "exports"
    root.mkdir()
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", str(root))
    return root


def _export(path: Path, rows: int = 2, *, age_seconds: float = 3600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(csv_text(accepted_rows(rows)), encoding="utf-8")
    old = time.time() - age_seconds
    os.utime(path, (old, old))
    return path


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _imports(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(Import.__table__)).mappings()]


def _fingerprint(path: Path) -> tuple:
    info = os.lstat(path)
    return info.st_mtime_ns, info.st_size, path.read_bytes() if path.is_file() else None


def _run(n: int | str) -> RunInfo:
    return RunInfo(dag_id="t", run_id=f"run_{n}", map_index=0)


# ---------------------------------------------------------------- export_file


def test_export_under_a_root_is_allowed_links_resolved(engine, exports):
    export = _export(exports / "sub" / "Patient List.csv")

    assert boundaries.check_export_file(str(export), PRACTICE_ID) == export.resolve()
    assert boundaries.check_export_file(f"file://{export}", PRACTICE_ID) == export.resolve()


def test_root_given_with_a_trailing_slash_or_among_others_still_allows_its_files(engine, exports, monkeypatch,
                                                                              tmp_path):
    export = _export(exports / "x.csv")
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", f"{tmp_path}/nowhere::s3://conn@bucket/p:{exports}/")

    assert boundaries.check_export_file(str(export), PRACTICE_ID) == export.resolve()


def test_without_roots_only_the_practices_own_archive_may_be_given(engine, exports, monkeypatch, home):
    monkeypatch.delenv("PATIENT_IMPORT_EXPORT_ROOTS")
    outside = _export(exports / "x.csv")
    own = _export(home / "archive" / PRACTICE_ID / "20260101" / "x_abcdef12.csv")

    with pytest.raises(p.InputRefused, match="export_file_not_allowed"):
        boundaries.check_export_file(str(outside), PRACTICE_ID)
    assert boundaries.check_export_file(str(own), PRACTICE_ID) == own.resolve()


def _hostile_exports(tmp: Path, home: Path, exports: Path) -> dict[str, str]:
    """Name → export_file value; each must be refused even where a root would cover it."""
    outside = _export(tmp / "outside" / "x.csv")
    (exports / "passwd.csv").symlink_to("/etc/passwd")
    (exports / "escape.csv").symlink_to(outside)
    os.link(_export(exports / "original.csv"), exports / "hardlink.csv")
    other_archive = _export(home / "archive" / OTHER / "20260101" / "theirs_abcdef12.csv")
    other_inbox = _export(home / "inbox" / OTHER / "theirs.csv")
    other_quarantine = _export(home / "quarantine" / OTHER / "theirs.csv")
    staging = _export(home / "staging" / "some_import" / "rows.csv")
    report = _export(home / "reports" / PRACTICE_ID / "r.json")
    airflow_cfg = tmp / "airflow" / "airflow.cfg"
    airflow_cfg.parent.mkdir(parents=True, exist_ok=True)
    airflow_cfg.write_text("[core]\n", encoding="utf-8")
    (tmp / "airflow" / "passwords.json").write_text('{"admin": "x"}', encoding="utf-8")
    return {
        "relative": "exports/original.csv",
        "relative_dot": "./original.csv",
        "dotdot_out_of_root": f"{exports}/../outside/x.csv",
        "symlink_in_root_to_etc_passwd": str(exports / "passwd.csv"),
        "symlink_in_root_to_outside": str(exports / "escape.csv"),
        "etc_passwd": "/etc/passwd",
        "file_url_etc_passwd": "file:///etc/passwd",
        "file_url_dotdot": f"file://{exports}/../outside/x.csv",
        "http": "http://127.0.0.1:9/x.csv",
        "https": "https://example.invalid/x.csv",
        "ftp": "ftp://127.0.0.1/x.csv",
        "s3_outside_roots": "s3://aws_default@bucket/x.csv",
        "memory_outside_roots": "memory://bucket/x.csv",
        "chained_fsspec": f"simplecache::file://{exports}/original.csv",
        "store_db": str(home / "patient_store.db"),
        "airflow_cfg": str(airflow_cfg),
        "airflow_passwords": str(tmp / "airflow" / "passwords.json"),
        "proc_environ": "/proc/self/environ",
        "other_practice_archive": str(other_archive),
        "other_practice_inbox": str(other_inbox),
        "other_practice_quarantine": str(other_quarantine),
        "staging": str(staging),
        "reports": str(report),
        "registry": str(home / "practices.yml"),
        "hard_link": str(exports / "hardlink.csv"),
        "newline": f"{exports}/original.csv\nWARNING forged",
        "nul": f"{exports}/original.csv\x00.txt",
        "empty": "   ",
    }


HOSTILE_EXPORTS = [
    "relative", "relative_dot", "dotdot_out_of_root", "symlink_in_root_to_etc_passwd", "symlink_in_root_to_outside",
    "etc_passwd", "file_url_etc_passwd", "file_url_dotdot", "http", "https", "ftp", "s3_outside_roots",
    "memory_outside_roots", "chained_fsspec", "store_db", "airflow_cfg", "airflow_passwords", "proc_environ",
    "other_practice_archive", "other_practice_inbox", "other_practice_quarantine", "staging", "reports",
    "registry", "hard_link", "newline", "nul", "empty",
]
# Refused even when the whole file system is an export root.
DENIED_UNDER_ANY_ROOT = {"store_db", "airflow_cfg", "airflow_passwords", "proc_environ", "other_practice_archive",
                         "other_practice_inbox", "other_practice_quarantine", "staging", "reports", "registry",
                         "hard_link", "http", "https", "ftp", "chained_fsspec", "newline", "nul"}


@pytest.mark.parametrize("case", HOSTILE_EXPORTS)
def test_hostile_export_file_is_refused_before_anything_is_copied(engine, exports, home, tmp_path, case, caplog):
    value = _hostile_exports(tmp_path, home, exports)[case]
    watched = [Path(v) for v in (str(exports / "original.csv"), "/etc/passwd") if Path(v).exists()]
    before = {path: _fingerprint(path) for path in watched}

    with pytest.raises(p.InputRefused) as refused:
        planning.check_conf({"practice_id": PRACTICE_ID, "export_file": value}, store=engine)
    assert refused.value.code == p.EXPORT_FILE_NOT_ALLOWED
    assert "\n" not in str(refused.value)
    with pytest.raises(p.InputRefused, match="export_file_not_allowed"):  # extract checks again
        extract_exports(engine, PRACTICE_ID, _run(case), export_file=value)

    for area in ("archive", "quarantine", "staging", "outbox"):
        assert [f for f in _files_under(home / area) if PRACTICE_ID in f.parts] == [], area
    assert _imports(engine) == []
    assert {path: _fingerprint(path) for path in watched} == before


@pytest.mark.parametrize("case", sorted(DENIED_UNDER_ANY_ROOT))
def test_denied_export_file_is_refused_even_when_everything_is_a_root(engine, exports, home, tmp_path, case,
                                                                      monkeypatch):
    value = _hostile_exports(tmp_path, home, exports)[case]
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", "/:file:///:http://127.0.0.1:9:memory://")

    with pytest.raises(p.InputRefused, match="export_file_not_allowed"):
        planning.check_conf({"practice_id": PRACTICE_ID, "export_file": value}, store=engine)


def test_store_behind_a_connection_url_is_refused(engine, tmp_path, monkeypatch):
    database = tmp_path / "elsewhere" / "store.db"
    database.parent.mkdir()
    database.write_bytes(b"SQLite format 3\x00")
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", "/")

    with pytest.raises(p.InputRefused, match="is the patient store"):
        boundaries.check_export_file(str(database), PRACTICE_ID, store=f"sqlite:///{database}")
    with pytest.raises(p.InputRefused, match="is the patient store"):
        boundaries.check_export_file(f"{database}-wal", PRACTICE_ID, store=f"sqlite:///{database}")


def test_object_store_url_is_allowed_only_under_a_listed_url_root(engine, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", "memory://exports/clinic/")

    assert str(boundaries.check_export_file("memory://exports/clinic/x.csv", PRACTICE_ID)).endswith("clinic/x.csv")
    for value in ("memory://exports/clinic_evil/x.csv", "memory://exports/clinic/../other/x.csv",
                  "memory://exports/other/x.csv", "memory://exports/clinic//x.csv"):
        with pytest.raises(p.InputRefused, match="export_file_not_allowed"):
            boundaries.check_export_file(value, PRACTICE_ID)


def test_missing_export_under_a_root_is_a_configuration_error(engine, exports):
    with pytest.raises(p.ConfigurationError, match="does not exist") as refused:
        planning.check_conf({"practice_id": PRACTICE_ID, "export_file": str(exports / "gone.csv")})
    assert not isinstance(refused.value, p.InputRefused)


def test_the_practices_own_archive_may_be_re_run_explicitly(engine, exports, home):
    [first] = run_import(engine, _export(exports / "x.csv"), run_id="first")
    archived = first.report["files"]["archive"]

    [again] = run_import(engine, Path(archived), run_id="again")

    assert again.report["status"] == "completed"
    assert again.report["files"]["archive"] == archived


# ---------------------------------------------------------------- practice ids and the rest of the conf


@pytest.mark.parametrize("practice_id", ["..", "../x", "../../elsewhere/x", "a/b", "", " ", "demo_clinic/",
                                         "demo_clinic\n", "demo_clinic ", "Demo_Clinic", "dеmo_clinic",
                                         "demo＿clinic", "démo_clinic", "demo_cIinic", "unknown_clinic",
                                         "demo_clinic\u200b", 7, None, ["demo_clinic"]])
def test_unsafe_or_unregistered_practice_id_is_refused_listing_the_known_ones(engine, practice_id):
    with pytest.raises(p.InputRefused) as refused:
        boundaries.check_practice_id(practice_id, {PRACTICE_ID: None, OTHER: None})

    assert refused.value.code == p.UNKNOWN_PRACTICE
    assert f"known practices: {PRACTICE_ID}, {OTHER}" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("practice_id", ["..", "../x", "a/b", "dеmo_clinic", "nope"])
def test_conf_with_a_bad_practice_id_writes_nothing_anywhere(engine, home, tmp_path, practice_id):
    before = _files_under(tmp_path)

    with pytest.raises(p.InputRefused, match="unknown_practice"):
        planning.check_conf({"practice_id": practice_id})
    with pytest.raises(p.InputRefused, match="unknown_practice"):
        extract_exports(engine, practice_id, _run("bad_id"))

    assert _files_under(tmp_path) == before
    assert _imports(engine) == []


@pytest.mark.parametrize("exported_on", ["2026-13-01", "20261120", "2026-11-20T00:00", "11/20/2026",
                                         " 2026-11-20", "2026-02-30", 20261120, ["2026-11-20"]])
def test_malformed_exported_on_is_refused(engine, exported_on):
    with pytest.raises(p.ConfigurationError, match="exported_on"):
        planning.check_conf({"practice_id": PRACTICE_ID, "exported_on": exported_on})


def test_exported_on_in_the_future_is_refused_at_the_conf(engine):
    tomorrow = (date.today() + timedelta(days=2)).isoformat()

    with pytest.raises(p.InputRefused, match="export_date_in_future"):
        planning.check_conf({"practice_id": PRACTICE_ID, "exported_on": tomorrow})


def test_export_file_needs_a_practice(engine, exports):
    with pytest.raises(p.ConfigurationError, match="needs a practice_id"):
        planning.check_conf({"export_file": str(_export(exports / "x.csv"))})


def test_plan_never_turns_an_inbox_folder_name_into_a_practice(engine, home, caplog):
    _export(home / "inbox" / "..evil" / "x.csv")
    _export(home / "inbox" / "not_registered" / "x.csv")
    _export(home / "inbox" / "evil\nWARNING forged" / "x.csv")

    with caplog.at_level(logging.WARNING):
        planned = planning.practices_to_import(engine, _run("plan"), {})

    assert planned == []
    assert "not_registered is not a registered practice" in caplog.text
    assert all("\n" not in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- inboxes: no links at any level


def test_symlinked_practice_inbox_leaves_the_linked_folder_unchanged(engine, home, tmp_path, caplog):
    linked = tmp_path / "somewhere_else"
    export = _export(linked / "Patient List.csv")
    before = _fingerprint(export)
    (home / "inbox").mkdir(parents=True)
    (home / "inbox" / PRACTICE_ID).symlink_to(linked, target_is_directory=True)

    with caplog.at_level(logging.WARNING):
        assert extract_exports(engine, PRACTICE_ID, _run("linked")) == []
        assert planning.practices_to_import(engine, _run("linked"), {}) == []

    assert _fingerprint(export) == before
    assert _files_under(home / "archive") == []
    assert "is a symbolic link; nothing in it is read" in caplog.text


def test_symlinked_inbox_root_is_not_read(engine, home, tmp_path):
    linked = tmp_path / "share"
    export = _export(linked / PRACTICE_ID / "x.csv")
    before = _fingerprint(export)
    home.mkdir(parents=True, exist_ok=True)
    (home / "inbox").symlink_to(linked, target_is_directory=True)

    assert files.waiting_inbox_files(PRACTICE_ID, settle_seconds=0) == []
    assert extract_exports(engine, PRACTICE_ID, _run("root")) == []
    assert _fingerprint(export) == before
    assert _files_under(home / "archive") == []


def test_hard_linked_inbox_file_is_refused_and_left_alone(engine, home, tmp_path):
    elsewhere = _export(tmp_path / "elsewhere" / "secret.csv")
    inbox = home / "inbox" / PRACTICE_ID
    inbox.mkdir(parents=True)
    os.link(elsewhere, inbox / "x.csv")

    assert files.refused_entry(inbox / "x.csv", inbox) == "has several hard links"
    assert extract_exports(engine, PRACTICE_ID, _run("hard")) == []
    assert (inbox / "x.csv").exists() and elsewhere.exists()
    assert _files_under(home / "archive") == []


def test_symlink_entry_is_never_deleted(engine, home, tmp_path):
    target = _export(tmp_path / "t" / "x.csv")
    inbox = home / "inbox" / PRACTICE_ID
    inbox.mkdir(parents=True)
    (inbox / "link.csv").symlink_to(target)

    extract_exports(engine, PRACTICE_ID, _run("link"))

    assert (inbox / "link.csv").is_symlink() and target.exists()


def test_a_file_name_with_a_newline_cannot_forge_a_log_line(engine, home, tmp_path, caplog):
    inbox = home / "inbox" / PRACTICE_ID
    inbox.mkdir(parents=True)
    (inbox / "x.csv\nCRITICAL all patients deleted").symlink_to(_export(tmp_path / "t" / "x.csv"))
    _export(inbox / "good\r\nERROR forged 20260101.csv")

    with caplog.at_level(logging.INFO):
        extract_exports(engine, PRACTICE_ID, _run("newline"))

    messages = [r.getMessage() for r in caplog.records]
    assert any("x.csv\\nCRITICAL" in m for m in messages)
    assert any("good\\r\\nERROR forged" in m for m in messages)
    assert all("\n" not in m and "\r" not in m for m in messages)


# ---------------------------------------------------------------- size before any copy


def test_file_over_the_size_limit_is_recorded_but_neither_archived_nor_quarantined(engine, home, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_MAX_FILE_MB", "1")
    inbox = home / "inbox" / PRACTICE_ID
    big = inbox / "big 20260101.csv"
    big.parent.mkdir(parents=True)
    big.write_bytes(b"Account #,Last Name\n" + b"1,x\n" * 300_000)  # 1.2 MB
    copies = []
    monkeypatch.setattr("include.patient_import.storage.copy", lambda *a: copies.append(a))
    content = big.read_bytes()

    [imported] = run_import(engine, big, run_id="big")

    report = imported.report
    assert report["status"] == "rejected"
    assert [x["code"] for x in report["problems"]] == [p.FILE_TOO_LARGE]
    assert report["export"] == {"name": big.name, "sha256": hashlib.sha256(content).hexdigest(),
                                "exported_on": date.today().isoformat(), "exported_on_source": "conf",
                                "bytes": len(content), "already_imported": []}
    assert report["files"]["archive"] is None and report["files"]["quarantine"] is None
    assert copies == []
    assert _files_under(home / "archive") == [] and _files_under(home / "quarantine") == []
    assert big.read_bytes() == content


def test_too_large_inbox_file_stays_in_the_inbox_and_is_not_taken_again(engine, home, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_MAX_FILE_MB", "1")
    big = home / "inbox" / PRACTICE_ID / "big.csv"
    big.parent.mkdir(parents=True)
    big.write_bytes(b"Account #,Last Name\n" + b"1,x\n" * 300_000)
    old = time.time() - 3600
    os.utime(big, (old, old))

    [first] = extract_exports(engine, PRACTICE_ID, _run("big1"))
    from include.patient_import.pipeline import run_stages
    run_stages(engine, first, ("validate",))

    assert big.exists()
    assert extract_exports(engine, PRACTICE_ID, _run("big2")) == []
    assert big.exists()
    assert _files_under(home / "archive") == [] and _files_under(home / "quarantine") == []


# ---------------------------------------------------------------- poison pills


def _fail(engine, import_id: str) -> None:
    records.update_import(engine, import_id, status=p.Status.FAILED.value)


def test_export_failed_three_times_is_quarantined_and_not_taken_again(engine, home, exports):
    pill = _export(home / "inbox" / PRACTICE_ID / "pill 20260101.csv")
    _fail(engine, extract_exports(engine, PRACTICE_ID, _run(1))[0])
    archived = Path(_imports(engine)[0]["archive_path"])
    for n in (2, 3):
        [import_id] = extract_exports(engine, PRACTICE_ID, _run(n))
        _fail(engine, import_id)
    other = _export(home / "inbox" / PRACTICE_ID / "other 20260102.csv")

    taken = extract_exports(engine, PRACTICE_ID, _run(4))

    assert not pill.exists() and archived.exists()
    assert [i["export_name"] for i in _imports(engine) if i["id"] in taken] == [other.name]
    quarantined = home / "quarantine" / PRACTICE_ID / archived.name
    assert quarantined.read_bytes() == archived.read_bytes()
    failed = [i for i in _imports(engine) if i["archive_path"] == str(archived)]
    assert [i["quarantine_path"] for i in failed if i["quarantine_path"]] == [str(quarantined)]
    with engine.connect() as conn:
        codes = {x.code for i in failed for x in records.import_problems(conn, i["id"])}
    assert p.IMPORT_FAILED in codes
    assert extract_exports(engine, PRACTICE_ID, _run(5)) == []  # still not taken by a scheduled run
    # ... until someone re-runs it explicitly.
    [again] = run_import(engine, archived, run_id="explicit")
    assert again.report["status"] == "completed"


def test_two_failures_are_retried(engine, home):
    _export(home / "inbox" / PRACTICE_ID / "x 20260101.csv")
    for n in (1, 2):
        [import_id] = extract_exports(engine, PRACTICE_ID, _run(n))
        _fail(engine, import_id)

    assert len(extract_exports(engine, PRACTICE_ID, _run(3))) == 1


# ---------------------------------------------------------------- the run's failure message


def test_failure_message_carries_the_code_and_message():
    message = planning.unsuccessful([
        {"import_id": "a", "status": "rejected", "code": "file_too_large", "message": "the file is 3 MB",
         "report": "/r/a.json"},
        {"import_id": "b", "status": "completed", "code": None, "message": None, "report": "/r/b.json"}])

    assert message == "import a rejected with file_too_large: the file is 3 MB (report: /r/a.json)"


# ---------------------------------------------------------------- printable


@pytest.mark.parametrize("text, shown", [
    ("Patient List.csv", "Patient List.csv"),
    ("é ñ ü.csv", "é ñ ü.csv"),
    ("a\nb", "a\\nb"),
    ("a\r\nERROR x", "a\\r\\nERROR x"),
    ("\x1b[31mred", "\\x1b[31mred"),
    ("x\u2028y", "x\\u2028y"),
    ("\u202eexe.csv", "\\u202eexe.csv"),
    ("back\\nslash", "back\\\\nslash"),
    ("\x00", "\\x00"),
    (None, "None"),
])
def test_printable_escapes_what_reshapes_a_log_line(text, shown):
    assert printable(text) == shown


def test_printable_truncates_long_text():
    shown = printable("x" * 1000, limit=50)

    assert shown == "x" * 50 + "…(+950 chars)"


# ---------------------------------------------------------------- the figures `make reliability` prints


def test_security_figures_try_every_boundary_and_none_leaks(monkeypatch):
    from scripts.security_figures import failures, security_figures, summary_line

    found = security_figures()

    assert found["tried"] >= 30
    assert failures(found) == []
    assert summary_line(found) == f"boundaries tried {found['tried']}, refused {found['tried']}, leaked 0"


def test_a_linked_own_inbox_does_not_make_its_target_an_allowed_root(engine, home, tmp_path, monkeypatch):
    monkeypatch.delenv("PATIENT_IMPORT_EXPORT_ROOTS")
    target = _export(tmp_path / "elsewhere" / "secret.csv")
    (home / "inbox").mkdir(parents=True)
    (home / "inbox" / PRACTICE_ID).symlink_to(target.parent, target_is_directory=True)

    for value in (str(home / "inbox" / PRACTICE_ID / "secret.csv"), str(target)):
        with pytest.raises(p.InputRefused, match="export_file_not_allowed"):
            boundaries.check_export_file(value, PRACTICE_ID)


def test_a_rejected_imports_summary_names_its_code_and_message_from_the_store(engine, tmp_path):
    """The report's problems are streamed to its file; the failed run's message still names the
    first file-level error (what `make import` and the task's failure print)."""
    picture = tmp_path / "Patient List.csv"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)

    [done] = run_import(engine, picture, run_id="manual__png", exported_on=date(2025, 3, 1))

    assert done.summary["status"] == "rejected"
    assert done.summary["code"] == p.UNSUPPORTED_FILE_TYPE and "PNG" in done.summary["message"]
    assert p.UNSUPPORTED_FILE_TYPE in planning.unsuccessful([done.summary])
