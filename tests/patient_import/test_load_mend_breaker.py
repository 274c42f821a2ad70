"""Breaking the review mend of the load (load_import's one split of the written rows, rules.export_day)
and of the office's csv files (untrusted.quoted_csv_writer): an export date given as a datetime
decides, stores and logs exactly as its day does (SPEC §3 rule 7, §8); a row whose outcome is not
written is never written, whatever its `write` says (SPEC §3); the files handed to the office keep
their bytes (SPEC §5)."""

import datetime
import io

import pandas as pd
import pytest

from include.patient_import import changes, transform
from include.patient_import import patients as patients_module
from include.patient_import.rules import OUTCOME, WRITE
from include.patient_import.store import create_store_engine
from include.patient_import.undo import undo_import
from include.patient_import.untrusted import defuse, quoted_csv_writer
from tests.patient_import.test_load import ANN, APRIL, BOB, DRIP, MARCH, MAY, export, load, outcomes, stored
from tests.patient_import.test_load_seen import _last_seen, _logged

# Tier: unit, PostgreSQL (`postgres`).


@pytest.fixture
def store(store_url):
    engine = create_store_engine(store_url)
    yield engine
    engine.dispose()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Undo writes its report under the storage root."""
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", str(tmp_path / "home"))


SAME_DAYS = {
    "midnight": datetime.datetime(2025, 4, 1, 0, 0),
    "23:59": datetime.datetime(2025, 4, 1, 23, 59, 59),
    "tz-aware": datetime.datetime(2025, 4, 1, 23, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
    "pandas": pd.Timestamp("2025-04-01 12:00"),
}


@pytest.mark.parametrize("exported_on", list(SAME_DAYS.values()), ids=list(SAME_DAYS))
def test_a_same_day_export_as_a_datetime_writes_and_logs_nothing_as_its_date_does(exported_on, store):
    load(store, DRIP, export(ANN, BOB), APRIL)
    before = stored(store, DRIP.id)

    _, _, by_date = load(store, DRIP, export(ANN, BOB), APRIL)
    _, _, by_datetime = load(store, DRIP, export(ANN, BOB), exported_on)

    assert outcomes(store, by_datetime) == outcomes(store, by_date) == {2: ("unchanged", None),
                                                                         3: ("unchanged", None)}
    assert _logged(store, by_date) == {}
    assert _logged(store, by_datetime) == {}  # no "seen" entry that moves nothing
    assert stored(store, DRIP.id) == before


def test_undo_is_not_held_back_by_a_later_same_day_export_given_as_a_datetime(store, home):
    load(store, DRIP, export(ANN, BOB), MARCH)
    _, _, seen = load(store, DRIP, export(ANN, BOB), APRIL)
    load(store, DRIP, export(ANN, BOB), datetime.datetime(2025, 4, 1, 9, 0))  # saw nothing new

    undo_import(store, seen, by="breaker")

    assert _last_seen(store, DRIP.id) == {"101": "2025-03-01", "102": "2025-03-01"}


@pytest.mark.parametrize("exported_on", [datetime.datetime(2025, 3, 31, 23, 59), datetime.datetime(2025, 5, 1, 0, 0)],
                         ids=["older", "newer"])
def test_an_older_or_newer_export_as_a_datetime_stores_and_logs_its_day(exported_on, store):
    load(store, DRIP, export(ANN, BOB), APRIL)

    _, _, import_id = load(store, DRIP, export(ANN, {**BOB, "city": "Rye"}), exported_on)

    day = exported_on.date().isoformat()
    if exported_on.date() < APRIL:
        assert outcomes(store, import_id) == {2: ("skipped", "older_than_stored"), 3: ("skipped", "older_than_stored")}
        assert _logged(store, import_id) == {}
        assert _last_seen(store, DRIP.id) == {"101": "2025-04-01", "102": "2025-04-01"}
    else:
        assert outcomes(store, import_id) == {2: ("unchanged", None), 3: ("updated", None)}
        assert _logged(store, import_id) == {"101": ("seen", "2025-04-01", day), "102": ("updated", "2025-04-01", day)}
        assert _last_seen(store, DRIP.id) == {"101": day, "102": day}
        assert stored(store, DRIP.id)["102"]["city"] == "Rye"


@pytest.mark.parametrize("outcome", ["skipped", "rejected", "something_new"])
def test_a_row_marked_for_writing_with_an_outcome_that_writes_nothing_is_never_written(outcome, store, monkeypatch):
    """Should `write` ever be True beside an outcome other than inserted/updated/unchanged, the
    load still writes only the rows whose outcome is written: here an older export's changed
    values, a rejected row and a new account."""
    load(store, DRIP, export(ANN, BOB), MAY)
    before = stored(store, DRIP.id)
    real = patients_module.decide_against_store  # what the load's decided_rows calls, block by block

    def every_row_written(conn, practice, frame, exported_on):
        decided = real(conn, practice, frame, exported_on)
        decided[WRITE] = True
        decided[OUTCOME] = decided[OUTCOME].mask(decided["account_number"].isin(["101", "103"]), outcome)
        return decided

    monkeypatch.setattr(patients_module, "decide_against_store", every_row_written)
    rows = export({**ANN, "city": "Rye", "last_name": "Older"}, BOB,
                  {"account_number": "103", "last_name": "Cole", "first_name": "Carl"})
    _, _, import_id = load(store, DRIP, rows, APRIL)

    after = stored(store, DRIP.id)
    assert set(after) == {"101", "102"}  # 103 was never inserted
    assert after["101"] == before["101"]  # neither its values nor its export date
    assert _logged(store, import_id) == {}


def _line(cells: list) -> bytes:
    buffer = io.StringIO(newline="")
    quoted_csv_writer(buffer).writerow([defuse(cell) for cell in cells])
    return buffer.getvalue().encode("utf-8")


ODD_CELLS = [
    (['a"b', '""', '"'], b'"a""b","""""",""""\r\n'),
    (["a\r\nb", "a\nb", "a\rb"], b'"a\r\nb","a\nb","a\rb"\r\n'),
    (["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "1-1"],
     b'"\'=1+1","\'+1","\'-1","\'@SUM(A1)","\'\tx","\'\rx","1-1"\r\n'),
    (["Zo\u00eb", "\u00df", "e\u0301", "\u2028"], '"Zoë","ß","e\u0301","\u2028"\r\n'.encode()),
    (["", None, float("nan"), pd.NA, pd.NaT, " "], b'"","","","",""," "\r\n'),
    (["a,b", "a;b", "\\N", "\x00"[:0]], b'"a,b","a;b","\\N",""\r\n'),
]


@pytest.mark.parametrize(("cells", "expected"), ODD_CELLS, ids=[str(n) for n in range(len(ODD_CELLS))])
def test_the_office_csv_writer_keeps_its_bytes_on_odd_cells(cells, expected):
    """Every field quoted, quotes doubled, CR and LF kept inside the quotes, CRLF ends, a formula
    start defused and no empty value written as `nan`/`<NA>`/`NaT` (SPEC §5)."""
    assert _line(cells) == expected


def test_the_rejected_rows_file_keeps_its_bytes(tmp_path):
    """A byte-order mark for Excel, then every field quoted, CRLF line ends, CR/LF kept inside cells."""
    written = transform.write_csv(tmp_path / "rejected.csv", ["row", "=why"],
                                  [[2, 'a"b\r\nc'], [3, None], [4, "-1"]])
    assert written.read_bytes() == ('\ufeff"row","\'=why"\r\n"2","a""b\r\nc"\r\n"3",""\r\n"4","\'-1"\r\n').encode()


def test_the_changes_file_keeps_its_bytes(store):
    load(store, DRIP, export(BOB), MARCH)
    _, _, import_id = load(store, DRIP, export({**BOB, "city": "=1+1", "first_name": 'B"o\r\nb'}), APRIL)
    with store.connect() as conn:
        text = "".join(changes.changes_csv(conn, import_id))
    assert text.encode() == ('\ufeff"account_number","field","before","after"\r\n'
                             '"102","first_name","Bob","B""o\r\nb"\r\n'
                             '"102","city","Dover","\'=1+1"\r\n').encode()
