"""What a run maps over (`planning.practices_to_import`): the practices with an export waiting for
that run, by the rule extract follows (`waiting.archived_choice`), never every practice with history."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from include.patient_import import planning, records
from include.patient_import.extract import RunInfo
from include.patient_import.waiting import POISON_PILL_FAILURES
from tests.patient_import.generated import A_ON, Imports
from tools.corpus import PRACTICE_ID

pytestmark = pytest.mark.unit


def _run(run_type: str = "manual", day=None, run_id: str = "next") -> RunInfo:
    """A run whose data interval is `day` (a backfill's), or ends now."""
    if day is None:
        return RunInfo(dag_id="t", run_id=run_id, run_type=run_type, interval_end=datetime.now(timezone.utc))
    start = datetime.combine(day, datetime.min.time(), timezone.utc)
    return RunInfo(dag_id="t", run_id=run_id, run_type=run_type, interval_start=start,
                   interval_end=start + timedelta(days=1))


@pytest.fixture
def imported(tmp_path, monkeypatch) -> Imports:
    """A practice whose only export (A) is archived and imported for good."""
    imports = Imports(tmp_path, monkeypatch)
    assert imports.run("a").report["status"] == "completed"
    return imports


def test_a_practice_whose_archive_is_all_imported_is_not_mapped_by_the_next_run(imported):
    assert planning.practices_to_import(imported.engine, _run(), {}) == []
    assert planning.practices_to_import(imported.engine, _run("scheduled"), {}) == []


def test_a_backfill_maps_the_practice_with_an_export_of_its_day_only(imported):
    assert planning.practices_to_import(imported.engine, _run("backfill", A_ON), {}) == [PRACTICE_ID]
    assert planning.practices_to_import(imported.engine, _run("backfill", A_ON + timedelta(days=1)), {}) == []


def test_an_export_in_the_inbox_maps_the_practice(imported, tmp_path):
    from include.patient_import import settings

    inbox = settings.area("inbox", PRACTICE_ID)
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "new.csv").write_bytes(imported.files["b"].read_bytes())
    assert planning.practices_to_import(imported.engine, _run(), {}) == [PRACTICE_ID]


def _fail_imports(engine, count: int, *, quarantined: bool) -> None:
    """Mark the practice's import failed, as `count` failed tries (a worker killed) would leave it."""
    imports = sa.table("imports", sa.column("id"), sa.column("status"), sa.column("quarantine_path"),
                       sa.column("dag_run_id"), sa.column("map_index"))
    with engine.begin() as conn:
        [first] = conn.execute(sa.select(imports.c.id)).scalars().all()
        conn.execute(sa.update(imports).values(status="failed", dag_run_id="earlier"))
    for n in range(1, count):
        with engine.connect() as conn:
            record = dict(records.get_import(conn, first))
        records.register_import(engine, id=f"{first[:-1]}{n}", practice_id=PRACTICE_ID, dag_run_id=f"earlier_{n}",
                                map_index=0, run_type="manual", export_name=record["export_name"],
                                export_sha256=record["export_sha256"], export_bytes=record["export_bytes"],
                                archive_path=record["archive_path"], exported_on=record["exported_on"],
                                dry_run=False)
        records.update_import(engine, f"{first[:-1]}{n}", status="failed",
                              quarantine_path="quarantine/x.csv" if quarantined and n == count - 1 else None)


def test_an_archived_export_never_imported_for_good_maps_the_practice_until_it_is_a_quarantined_pill(imported):
    _fail_imports(imported.engine, 1, quarantined=False)
    assert planning.practices_to_import(imported.engine, _run(), {}) == [PRACTICE_ID]

    _fail_imports(imported.engine, POISON_PILL_FAILURES, quarantined=False)  # extract quarantines it next
    assert planning.practices_to_import(imported.engine, _run(), {}) == [PRACTICE_ID]


def test_a_quarantined_poison_pill_maps_nothing(imported):
    _fail_imports(imported.engine, POISON_PILL_FAILURES, quarantined=True)
    assert planning.practices_to_import(imported.engine, _run(), {}) == []


def test_a_run_continues_what_it_started_itself(imported):
    with imported.engine.connect() as conn:
        [record] = conn.execute(sa.text("SELECT dag_run_id FROM imports")).all()
    assert planning.practices_to_import(imported.engine, _run(run_id=record[0]), {}) == [PRACTICE_ID]


def _maps_whatever_extract_takes(imports: Imports, run: RunInfo) -> bool:
    """Planning maps the practice whenever extract would find an export of it for `run`."""
    from include.patient_import import extract

    taken = extract._candidate_exports(imports.engine, PRACTICE_ID, run, None)
    return not taken or PRACTICE_ID in planning.practices_to_import(imports.engine, run, {})


def test_planning_maps_every_practice_extract_takes_an_export_of(imported, monkeypatch):
    from include.patient_import import extract, settings

    monkeypatch.setenv("PATIENT_IMPORT_INBOX_SETTLE_SECONDS", "0")
    inbox = settings.area("inbox", PRACTICE_ID)
    inbox.mkdir(parents=True, exist_ok=True)
    # A dry run from the inbox leaves the file there: the next run still maps the practice.
    (inbox / f"export_{A_ON:%Y%m%d}.csv").write_bytes(imported.files["b"].read_bytes())
    extract.extract_exports(imported.engine, PRACTICE_ID, _run(run_id="dry"), dry_run=True)
    assert planning.practices_to_import(imported.engine, _run(), {}) == [PRACTICE_ID]
    for run in (_run(), _run("scheduled", A_ON + timedelta(days=1)), _run("backfill", A_ON)):
        assert _maps_whatever_extract_takes(imported, run), run
    # An original in the archive no import recorded (copied in by hand), and one in an odd folder.
    (inbox / f"export_{A_ON:%Y%m%d}.csv").unlink()
    for folder in (f"{A_ON + timedelta(days=3):%Y%m%d}", "2026-11-05"):
        archived = settings.area("archive", PRACTICE_ID, folder)
        archived.mkdir(parents=True)
        (archived / "x.csv").write_bytes(imported.files["b"].read_bytes())
    for run in (_run(), _run("backfill", A_ON + timedelta(days=3)), _run(run_id="manual__a")):
        assert _maps_whatever_extract_takes(imported, run), run
        assert planning.practices_to_import(imported.engine, run, {}) == [PRACTICE_ID]


def test_a_run_cleared_as_a_whole_continues_its_import_whatever_map_index_its_practice_gets(imported):
    """A whole-run clear plans again: a practice with an export newly waiting can sort before this
    one and shift its map index; the import this run left `processing` is still its own to continue
    (fail_abandoned_imports never fails the current run's), not left waiting for another run."""
    from include.patient_import import extract

    with imported.engine.begin() as conn:
        conn.execute(sa.text("UPDATE imports SET status = 'processing', map_index = 0"))
        [run_id] = conn.execute(sa.text("SELECT dag_run_id FROM imports")).scalars().all()
    again = RunInfo(dag_id="t", run_id=run_id, run_type="manual", map_index=1, attempt=2,
                    interval_end=datetime.now(timezone.utc))
    assert planning.practices_to_import(imported.engine, again, {}) == [PRACTICE_ID]
    [(_, in_inbox, exported_on, _)] = extract._candidate_exports(imported.engine, PRACTICE_ID, again, None)
    assert (in_inbox, exported_on) == (False, A_ON)
