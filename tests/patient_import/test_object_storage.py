"""The file areas in an object store (`PATIENT_IMPORT_STORAGE=s3://<conn>@<bucket>/<prefix>`).

On the session's local S3-compatible server (tools/harness/object_store.py), through Airflow's
`ObjectStoragePath` and the amazon provider, as in production: an import there must end exactly
as the same import on a local disk, and leave nothing of itself on the local disk.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from include.patient_import import pipeline, settings, storage
from include.patient_import.retention import purge
from tools.corpus import PRACTICE_ID, csv_text, patient, patients_snapshot, prepare_home, run_import
from tools.generator import generate_export

# Tier: `object_store` where a test uses the server, else unit (tests/conftest.py).
pytestmark = pytest.mark.timeout(180)

EXPORTED_ON = date(2026, 11, 20)


def _areas_on_disk(home: Path) -> list[str]:
    """What the pipeline left under the local home besides the store and the registry."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and not p.name.startswith(("patient_store.db", "practices.yml")))


def _comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("import_id", "started_at", "finished_at", "files",
                                                          "staleness", "dag_run_id")}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A realistic export with bad rows, duplicates and Excel damage."""
    return generate_export(tmp_path_factory.mktemp("exports") / "Genesis Patient List.csv", 150, seed=5,
                           today=EXPORTED_ON)


def test_a_storage_url_opens_with_airflows_object_storage_path_and_the_named_connection(object_store):
    from airflow.sdk import ObjectStoragePath

    url = object_store.new_root()
    root = storage.path_of(url)
    assert isinstance(root, ObjectStoragePath) and root.conn_id == "patient_import_storage"
    assert str(root / "reports" / "x.json") == f"{url}/reports/x.json"
    assert storage.path_of(str(root / "a")) == root / "a"  # the kept string gives the path back
    assert isinstance(storage.path_of("/srv/patient_files"), Path)
    assert storage.path_of("file:///srv/patient_files") == Path("/srv/patient_files")
    assert type(storage.path_of("memory://patient-files/x")).__name__ == "MemoryPath"  # fsspec alone


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_file_appears_whole_or_not_at_all(where, tmp_path, object_store):
    root = storage.path_of(object_store.new_root()) if where == "s3" else tmp_path / "areas"
    target = root / "outbox" / "upload.csv"
    with pytest.raises(RuntimeError):
        with storage.writing(target) as handle:
            handle.write(b"half a file")
            raise RuntimeError("the task dies mid-write")
    assert not target.exists()
    storage.write_text(target, "whole")
    assert target.read_text() == "whole"
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_outside_paths_are_refused_in_an_object_store(object_store):
    root = storage.path_of(object_store.new_root())
    assert storage.is_inside(root / "data_docs" / "a" / "index.html", root / "data_docs")
    assert not storage.is_inside(storage.path_of(f"{root}/data_docs/../outbox/x.csv"), root / "data_docs")
    assert not storage.is_inside(storage.path_of(f"{root}x/data_docs/a"), root)
    assert not storage.is_inside(Path("/etc/passwd"), root)


def test_an_import_in_the_object_store_ends_exactly_as_on_a_local_disk(tmp_path, monkeypatch, object_store,
                                                                     export):
    local_engine = prepare_home(tmp_path / "local", monkeypatch, limits=False)
    [on_disk] = run_import(local_engine, export, run_id="manual__disk", exported_on=EXPORTED_ON)

    engine = prepare_home(tmp_path / "home", monkeypatch, limits=False)
    root = object_store.new_root()
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", root)
    [in_store] = run_import(engine, export, run_id="manual__s3", exported_on=EXPORTED_ON)

    assert in_store.report["counts"] == on_disk.report["counts"]
    assert _comparable(in_store.report) == _comparable(on_disk.report)
    assert patients_snapshot(engine).keys() == patients_snapshot(local_engine).keys()
    for kind in ("upload", "rejected_rows"):
        assert in_store.report["files"][kind].startswith(f"{root}/outbox/")
        assert (storage.path_of(in_store.report["files"][kind]).read_bytes()
                == Path(on_disk.report["files"][kind]).read_bytes())
    import_id = in_store.report["import_id"]
    keys = object_store.keys(root)
    assert f"reports/{PRACTICE_ID}/{import_id}.json" in keys
    assert f"data_docs/{PRACTICE_ID}/{import_id}/index.html" in keys
    assert any(k.startswith(f"archive/{PRACTICE_ID}/{EXPORTED_ON:%Y%m%d}/") for k in keys)
    assert not [k for k in keys if k.startswith("staging/")]  # finished imports leave no staging
    assert json.loads(storage.path_of(in_store.summary["report"]).read_text())["status"] == in_store.report["status"]
    assert _areas_on_disk(tmp_path / "home") == []


def test_the_inbox_in_the_object_store_is_picked_up_archived_and_emptied(tmp_path, monkeypatch, object_store):
    engine = prepare_home(tmp_path / "home", monkeypatch)
    root = object_store.new_root()
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", root)
    inbox_file = settings.area("inbox", PRACTICE_ID) / "Genesis Patient List 20261120.csv"
    storage.write_text(inbox_file, csv_text([patient(91001), patient(91002)]))

    run = pipeline.RunInfo(dag_id="patient_import", run_id="scheduled__s3", map_index=0)
    [done] = pipeline.run_import(engine, PRACTICE_ID, run)
    import_id, summary = done["import_id"], done["report"]

    assert summary["status"] == "completed" and summary["counts"]["inserted"] == 2
    assert not inbox_file.exists()
    assert [k for k in object_store.keys(root) if k.startswith("archive/")] == [
        f"archive/{PRACTICE_ID}/20261120/Genesis_Patient_List_20261120_{summary_sha(engine, import_id)[:8]}.csv"]
    assert pipeline.extract_exports(engine, PRACTICE_ID, pipeline.RunInfo(
        dag_id="patient_import", run_id="scheduled__next", map_index=0)) == []  # imported once


def summary_sha(engine, import_id: str) -> str:
    from include.patient_import import records

    with engine.connect() as conn:
        return records.get_import(conn, import_id)["export_sha256"]


def test_a_rejected_import_is_quarantined_in_the_object_store_and_leaves_no_upload(tmp_path, monkeypatch,
                                                                                  object_store):
    engine = prepare_home(tmp_path / "home", monkeypatch)
    root = object_store.new_root()
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", root)
    rows = [patient(91001), *[patient(f"bad{n}", **{"Birth Date": "not a date"}) for n in range(3)]]
    export = tmp_path / "mostly_bad.csv"
    export.write_text(csv_text(rows), encoding="utf-8")

    [done] = run_import(engine, export, run_id="manual__rejected", exported_on=EXPORTED_ON)

    assert done.report["status"] == "rejected"
    assert done.report["files"]["upload"] is None
    keys = object_store.keys(root)
    assert any(k.startswith(f"quarantine/{PRACTICE_ID}/") for k in keys)
    assert not [k for k in keys if k.startswith("outbox/") and not k.endswith("_rejected_rows.csv")]


def test_retention_purges_old_objects_and_keeps_young_ones(tmp_path, monkeypatch, object_store):
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path / "home"))
    root = object_store.new_root()
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", root)
    for relative in ("archive/demo_clinic/20250101/a.csv", "reports/demo_clinic/r.json", "inbox/demo_clinic/new.csv",
                     "staging/running/job.json"):
        storage.write_text(storage.path_of(f"{root}/{relative}"), "x" * 10)
    now = datetime.now(timezone.utc)

    assert purge(30, now=now).removed == []
    dry = purge(30, now=now + timedelta(days=31), dry_run=True)
    assert sorted(map(str, dry.removed)) == ["archive/demo_clinic/20250101/a.csv", "reports/demo_clinic/r.json"]
    assert len(object_store.keys(root)) == 4
    done = purge(30, now=now + timedelta(days=31))
    assert done.bytes_removed == 20 and done.by_area["archive"] == 1
    assert object_store.keys(root) == ["inbox/demo_clinic/new.csv", "staging/running/job.json"]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_demo_export_lands_whole_in_the_inbox_and_is_waiting(where, tmp_path, monkeypatch, object_store):
    from include.patient_import import files
    from tools.demo import DEMO_PRACTICE, DEMO_ROWS, drop_demo_export

    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", object_store.new_root() if where == "s3" else str(tmp_path / "areas"))
    monkeypatch.setenv("PATIENT_IMPORT_SETTLE_SECONDS", "0")

    dropped = storage.path_of(drop_demo_export(EXPORTED_ON))

    assert dropped.name == "Genesis Patient List 20261120.csv"
    expected = generate_export(tmp_path / "expected.csv", DEMO_ROWS, seed=EXPORTED_ON.toordinal())
    assert dropped.read_bytes() == expected.read_bytes()
    assert [w.path for w in files.waiting_inbox_files(DEMO_PRACTICE)] == [dropped]
