"""Adversarial review of issue 11 (SPEC §7): conf values and paths the first tests did not try."""

from __future__ import annotations

import pytest

from include.patient_import import boundaries, planning
from include.patient_import import problems as p
from tests.patient_import import test_trust_boundaries as trust
from tools.corpus import PRACTICE_ID

# The trust-boundary tests' fixtures, shared: a registry of two practices, an export root.
home, engine, exports, _export = trust.home, trust.engine, trust.exports, trust._export

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


@pytest.mark.parametrize("value", ["{root}/a://b.csv", "{root}//x://y", "1s3://bucket/x.csv", "+s3://b/x",
                                   " s3://b/x", "://x", "s 3://bucket/x"])
def test_text_before_a_double_slash_that_is_no_url_scheme_is_refused_as_not_allowed(engine, exports, value):
    # `/exports/a://b.csv` was handed to the object-store client as a URL of scheme `/exports/a`,
    # which crashed the task with whatever error the client raised instead of refusing it.
    with pytest.raises(p.InputRefused) as refused:
        boundaries.check_export_file(value.format(root=exports), PRACTICE_ID)
    assert refused.value.code == p.EXPORT_FILE_NOT_ALLOWED


def test_object_url_without_a_bucket_is_refused_as_not_allowed(engine, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", "s3://conn@bucket/exports")
    with pytest.raises(p.InputRefused) as refused:
        boundaries.check_export_file("s3:///exports/x.csv", PRACTICE_ID)
    assert refused.value.code == p.EXPORT_FILE_NOT_ALLOWED


def test_a_root_entry_that_is_no_url_is_ignored_not_a_crash(engine, exports, monkeypatch):
    export = _export(exports / "x.csv")
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", f"/a://b:{exports}")
    assert boundaries.check_export_file(str(export), PRACTICE_ID) == export.resolve()


@pytest.mark.parametrize("practice_id", [0, False, [], {}, 0.0])
def test_a_wrong_typed_empty_practice_id_is_refused_not_read_as_every_practice(engine, practice_id):
    with pytest.raises(p.InputRefused) as refused:
        planning.check_conf({"practice_id": practice_id})
    assert refused.value.code == p.UNKNOWN_PRACTICE


@pytest.mark.parametrize("exported_on", [0, False, [], {}])
def test_a_wrong_typed_empty_exported_on_is_refused_not_ignored(engine, exported_on):
    with pytest.raises(p.ConfigurationError, match="exported_on"):
        planning.check_conf({"practice_id": PRACTICE_ID, "exported_on": exported_on})


@pytest.mark.parametrize("export_file", [0, False, [], {}])
def test_a_wrong_typed_empty_export_file_is_refused_not_read_as_the_inbox(engine, export_file):
    with pytest.raises(p.InputRefused) as refused:
        planning.check_conf({"practice_id": PRACTICE_ID, "export_file": export_file})
    assert refused.value.code == p.EXPORT_FILE_NOT_ALLOWED


@pytest.mark.parametrize("conf", [{}, {"practice_id": None, "export_file": None, "exported_on": None},
                                  {"practice_id": "", "export_file": "", "exported_on": ""}])
def test_null_or_empty_conf_values_still_mean_not_given(engine, conf):
    assert planning.check_conf(conf) == {"practice_id": "", "export_file": None, "exported_on": None,
                                         "dry_run": False}


# ---------------------------------------------------------------- checked, then swapped


import os  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from include.patient_import import extract, files, storage  # noqa: E402
from include.patient_import.extract import extract_exports  # noqa: E402
from include.patient_import.staging import Job  # noqa: E402
from tests.patient_import.test_trust_boundaries import _files_under, _fingerprint, _imports, _run  # noqa: E402


def _swap_after(monkeypatch, module, name: str, swap) -> None:
    """Run `swap` right after `module.name` has answered: the race an attacker wins by looping."""
    original = getattr(module, name)

    def checked_then_swapped(*args, **kwargs):
        answer = original(*args, **kwargs)
        swap()
        return answer

    monkeypatch.setattr(module, name, checked_then_swapped)


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "secret" / "store_copy.csv"
    secret.parent.mkdir(parents=True)
    secret.write_text("Account #,Last Name,First Name\n1,Secretson,Sally\n", encoding="utf-8")
    return secret


def test_inbox_file_swapped_for_a_link_after_its_check_is_neither_archived_nor_followed(
        engine, home, tmp_path, monkeypatch):
    secret = _secret(tmp_path)
    before = _fingerprint(secret)
    entry = _export(home / "inbox" / PRACTICE_ID / "x.csv")

    def swap():
        entry.unlink()
        entry.symlink_to(secret)

    _swap_after(monkeypatch, extract, "_left_in_inbox", swap)
    assert extract_exports(engine, PRACTICE_ID, _run("swap")) == []

    assert _files_under(home / "archive") == [] and _files_under(home / "quarantine") == []
    assert _imports(engine) == []
    assert entry.is_symlink() and _fingerprint(secret) == before


def test_export_files_folder_swapped_for_a_link_after_its_check_is_refused(engine, exports, home, tmp_path,
                                                                          monkeypatch):
    secret = _secret(tmp_path)
    folder = exports / "sub"
    given = _export(folder / "store_copy.csv")

    def swap():
        shutil.rmtree(folder)
        folder.symlink_to(secret.parent, target_is_directory=True)

    from include.patient_import import boundaries as b

    _swap_after(monkeypatch, b, "check_export_file", swap)
    with pytest.raises(p.InputRefused) as refused:
        extract_exports(engine, PRACTICE_ID, _run("swap_dir"), export_file=str(given))

    assert refused.value.code == p.EXPORT_FILE_NOT_ALLOWED
    assert _files_under(home / "archive") == [] and _imports(engine) == []


def test_export_file_swapped_for_a_named_pipe_after_its_check_is_refused_without_hanging(
        engine, exports, home, monkeypatch):
    given = _export(exports / "x.csv")

    def swap():
        given.unlink()
        os.mkfifo(given)

    from include.patient_import import boundaries as b

    _swap_after(monkeypatch, b, "check_export_file", swap)
    with pytest.raises(p.InputRefused, match="not a regular file"):
        extract_exports(engine, PRACTICE_ID, _run("fifo"), export_file=str(given))
    assert _files_under(home / "archive") == []


def test_a_file_that_grows_while_read_is_not_taken_in_part(engine, exports, home, monkeypatch):
    given = _export(exports / "x.csv")
    real_fstat = os.fstat

    def stale_fstat(fd):  # the size seen when opened; the writer appends afterwards
        info = real_fstat(fd)
        return os.stat_result((info.st_mode, info.st_ino, info.st_dev, info.st_nlink, info.st_uid, info.st_gid,
                               info.st_size - 10, info.st_atime, info.st_mtime, info.st_ctime))

    monkeypatch.setattr(files.os, "fstat", stale_fstat)
    with pytest.raises(p.ConfigurationError, match="grew while it was read"):
        extract_exports(engine, PRACTICE_ID, _run("grow"), export_file=str(given))
    assert _files_under(home / "archive") == [] and _imports(engine) == []


def test_archive_holds_exactly_the_bytes_hashed_even_when_the_original_changes_meanwhile(
        engine, home, monkeypatch):
    entry = _export(home / "inbox" / PRACTICE_ID / "x.csv")
    first = entry.read_bytes()
    replaced = b"Account #,Last Name,First Name\n2,Other,Content\n"
    real_copy = storage.copy

    def copy_while_a_new_drop_lands(source, target):
        entry.write_bytes(replaced)  # the office drops a new export under the same name
        return real_copy(source, target)

    monkeypatch.setattr(storage, "copy", copy_while_a_new_drop_lands)
    [import_id] = extract_exports(engine, PRACTICE_ID, _run("drop"))

    [archived] = _files_under(home / "archive")
    assert archived.read_bytes() == first
    assert files.sha256_of(archived)[:8] in archived.name
    assert entry.read_bytes() == replaced  # the new drop is kept for the next run, not deleted


def test_a_dry_run_reads_its_own_copy_not_the_original_by_name(engine, exports, home):
    given = _export(exports / "x.csv")
    [import_id] = extract_exports(engine, PRACTICE_ID, _run("dry"), export_file=str(given), dry_run=True)

    job = Job.load(import_id)
    assert Path(job.source).parent == files.staging_dir(import_id)
    assert Path(job.source).read_bytes() == given.read_bytes()
    assert _files_under(home / "archive") == []


# ---------------------------------------------------------------- practice ids


def test_a_registry_id_too_long_for_a_file_name_is_refused_when_the_registry_is_read(tmp_path):
    # A 250-character id passed every check and failed the first import with "File name too long"
    # after its export was archived (the import id and the report's name start with it).
    from include.patient_import.practices import load_practices

    registry = tmp_path / "practices.yml"
    registry.write_text(f"practices:\n  - id: {'a' * 250}\n    name: Long\n", encoding="utf-8")
    with pytest.raises(p.ConfigurationError, match=f"at most {files.MAX_ID_LENGTH}"):
        load_practices(registry)


@pytest.mark.parametrize("practice_id", ["a" * 65, "a" * 100_000, "٣", "ｄemo_clinic", "demo_clinic\n"])
def test_an_overlong_or_non_ascii_practice_id_is_refused_at_the_conf(engine, practice_id):
    with pytest.raises(p.InputRefused) as refused:
        planning.check_conf({"practice_id": practice_id})
    assert refused.value.code == p.UNKNOWN_PRACTICE
    assert len(str(refused.value)) < 1000


# ---------------------------------------------------------------- names shown


def test_an_inbox_file_names_control_characters_never_reach_the_store_or_the_report(engine, home, monkeypatch):
    from tools.corpus import LIMITS_ENV

    name = "List\x1b[2J\u202evsc.exe\r\nCRITICAL forged.csv"
    _export(home / "inbox" / PRACTICE_ID / name)
    big = home / "inbox" / PRACTICE_ID / "Big\x1b[31m.csv"
    big.write_bytes(b"Account #,Last Name,First Name\n" + b"1,A,B\n" * 400_000)
    os.utime(big, (1, 1))
    monkeypatch.setenv("PATIENT_IMPORT_MAX_FILE_MB", LIMITS_ENV["PATIENT_IMPORT_MAX_FILE_MB"])

    ids = extract_exports(engine, PRACTICE_ID, _run("names"))
    assert len(ids) == 2
    for record in _imports(engine):
        assert not any(c in record["export_name"] for c in "\x1b\u202e\r\n"), record["export_name"]
    # The file over the limit stays in the inbox and is recognised by its recorded name: not taken again.
    assert extract_exports(engine, PRACTICE_ID, _run("names_again")) == []
    assert big.exists()


# ---------------------------------------------------------------- make import's own FILE


def test_make_import_reads_a_file_whose_path_holds_a_colon(tmp_path):
    # `make import` made its FILE an export root by appending it to the `:`-separated
    # PATIENT_IMPORT_EXPORT_ROOTS: `Patient List 10:30.csv` was cut in two and refused.
    import subprocess
    import sys

    from include.patient_import import settings
    from tools.corpus import PRACTICES_YAML

    home = tmp_path / "home"
    home.mkdir()
    (home / "practices.yml").write_text(PRACTICES_YAML, encoding="utf-8")
    given = _export(tmp_path / "share:exports" / "Patient List 10:30.csv")
    env = {**os.environ, "PATIENT_IMPORT_HOME": str(home), "PATIENT_IMPORT_PRACTICES": str(home / "practices.yml"),
           "AIRFLOW_HOME": str(tmp_path / "airflow"), "PATIENT_IMPORT_EXPORT_ROOTS": ""}
    script = settings.REPO_ROOT / "scripts" / "run_dag.py"
    done = subprocess.run([sys.executable, str(script), "--check-only", "--practice", PRACTICE_ID,
                           "--file", str(given)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # The same FILE does not open its folder's other files, nor anything else, to the run.
    other = _export(tmp_path / "share:exports" / "other.csv")
    env[settings.MAKE_IMPORT_FILE] = str(given)
    done = subprocess.run([sys.executable, "-c", "from include.patient_import import boundaries;"
                           f"boundaries.check_export_file({str(other)!r}, {PRACTICE_ID!r})"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=settings.REPO_ROOT)
    assert "export_file_not_allowed" in done.stderr
