"""What validate keeps to stay small at a million rows (issue #14) gives what it gave before: the
rows as read kept as raw.parquet's bytes, the columns as read consumed while normalising, the
warnings kept for the warned rows only, e-mails split in Arrow, no GX data fingerprint."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from include.patient_import import files, records, staging
from include.patient_import.gx_runner import SuiteRunner
from include.patient_import.normalize import normalize_email, normalize_export
from include.patient_import.practices import Practice
from include.patient_import.reader import read_export
from include.patient_import.staging import Job, Validation, parquet_bytes, save_validation
from include.patient_import.validate import validate_export
from tests.patient_import import test_validate

pytestmark = pytest.mark.unit

TODAY = datetime.date(2026, 11, 27)
# Rows the rejected-rows file must give back as read: a formula, a line break, double-decoded text,
# an empty required cell, an unknown column, a bad e-mail, duplicates.
EXPORT = (
    "Account #,Last Name,First Name,Email,Home Phone,Zip,Favourite Colour\n"
    "1,Lopez,Ana,ana@Example.ORG,2089478877,8401,red\n"
    '2,"=HYPERLINK(""http://x"")",José,bad@@mail,555,84010,\n'
    '3,"Smith\r\nJr",JosÃ©,x@y.co,(208) 947-8877,,blue\n'
    ",Nobody,Ann,,,,\n"
    "5,Lee,Bo,bo@example.com,,84010-1234,green\n"
    "5,Lee,Bo,bo@example.com,,84010-1234,green\n"
    "7,Kim,Li,li@b\u00fccher.de,208.947.8877,99501,\n"
)


area = test_validate.area  # the fixture, shared: a home and a migrated SQLite store


def _validate(area, text: str) -> tuple[Validation, Path]:
    root, engine = area
    export = root / "export.csv"
    export.write_text(text, encoding="utf-8")
    job = Job(import_id="imp1", practice_id="c", source=str(export), export_name="export.csv", sha256="0" * 64,
              size=export.stat().st_size, exported_on="2026-11-20", dry_run=False)
    practice = Practice(id="c", name="C", capacity=100, systems=frozenset({"drip_education"}))
    return validate_export(engine, job, practice, today=TODAY), export


def test_validate_keeps_the_rows_as_read_as_the_bytes_raw_parquet_had_from_their_frame(area):
    result, export = _validate(area, EXPORT)
    as_read = read_export(export).frame

    assert isinstance(result.raw, bytes)
    save_validation("imp1", result)
    staged = (files.staging_dir("imp1") / "raw.parquet").read_bytes()
    save_validation("imp1", Validation(frame=result.frame, raw=as_read))  # as validate kept them before
    assert staged == (files.staging_dir("imp1") / "raw.parquet").read_bytes() == result.raw
    # The rejected-rows file's rows, read back as they were read.
    rejected = staging.load_raw_rows("imp1", [3, 4, 5])
    pd.testing.assert_frame_equal(rejected, as_read[as_read["row_number"].isin([3, 4, 5])].reset_index(drop=True))
    assert rejected.loc[rejected["row_number"] == 4, "last_name"].item() == "Smith\r\nJr"


def test_validate_keeps_the_rows_as_read_of_a_file_rejected_for_its_columns(area):
    result, export = _validate(area, "Account #,Last Name\n1,Lopez\n")

    assert result.rejection is not None and result.frame is None and result.rows is None
    assert result.raw == parquet_bytes(read_export(export).frame)


def test_a_validation_without_rows_as_read_writes_no_raw_parquet(area):
    save_validation("imp2", Validation())
    assert not (files.staging_dir("imp2") / "raw.parquet").exists()
    assert staging.load_raw_rows("imp2", [2]) is None


def _as_read(text: str, tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "as_read.csv"
    path.write_text(text, encoding="utf-8")
    return read_export(path).frame


def test_normalising_a_consumed_frame_gives_the_same_rows_and_warnings(tmp_path):
    kept = normalize_export(_as_read(EXPORT, tmp_path), today=TODAY)
    consumed_frame = _as_read(EXPORT, tmp_path)
    consumed = normalize_export(consumed_frame, today=TODAY, consume=True)

    pd.testing.assert_frame_equal(consumed.frame, kept.frame)
    assert set(consumed.frame.dtypes.drop("row_number").astype(str)) == {"object"}
    pd.testing.assert_frame_equal(consumed.problems.listed, kept.problems.listed)
    # The fields read are gone from the frame given; the row numbers and unknown columns stay.
    assert list(consumed_frame.columns) == ["row_number", "__extra_7"]


def test_a_frame_not_consumed_keeps_its_columns(tmp_path):
    frame = _as_read(EXPORT, tmp_path)
    columns = list(frame.columns)
    normalize_export(frame, today=TODAY)
    assert list(frame.columns) == columns


def test_warnings_are_kept_for_the_warned_rows_only_and_give_every_row_its_code(tmp_path):
    normalized = normalize_export(_as_read(EXPORT, tmp_path), today=TODAY)
    dense = dict((name, codes) for name, _, codes in normalized.flagged)

    for name, _, positions, codes in normalized.warned:
        assert len(positions) == len(codes) == int(pd.notna(dense[name]).sum())
        assert all(code is not None for code in codes)
        assert np.array_equal(np.flatnonzero(pd.notna(dense[name])), positions)
    assert len(dense["zip"]) == 7 and dense["zip"][0] is not None  # 8401: padded
    assert dense["email"][1] is not None and dense["email"][0] is None
    # A rejected row (here: row 3's position 1) carries no warning.
    rejected = np.zeros(7, dtype=bool)
    rejected[1] = True
    rows = normalized.warnings(rejected=rejected).listed["row"].tolist()
    assert 3 not in rows and 2 in rows


def _chunked_emails(values: list[str], chunk: int) -> pd.Series:
    """E-mails as the reader gives a large column: pandas' str over several Arrow chunks."""
    chunks = [pa.array(values[i:i + chunk], type=pa.large_string()) for i in range(0, len(values), chunk)]
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(chunks)))


def test_plain_emails_over_several_arrow_chunks_give_what_each_one_alone_gives():
    values = ["a@Example.ORG", "b.c@x.co", "bad@@x", "", "d@bücher.de", "e@EXAMPLE.org", "f@x.co",
              "g" * 70 + "@example.org", "h@" + "a" * 250 + ".com", " i@x.co ", "j@-bad-.com"] * 3
    texts = _chunked_emails(values, 4)
    assert texts.array._pa_array.num_chunks > 1
    frame = pd.DataFrame({"row_number": range(2, len(values) + 2), "email": texts})

    result = normalize_export(frame, today=TODAY, consume=True)
    assert result.frame["email"].tolist() == [normalize_email(v)[0] for v in values]
    codes = dict((name, codes) for name, _, codes in result.flagged)["email"]
    assert codes.tolist() == [normalize_email(v)[1] for v in values]


def test_suite_results_and_data_docs_carry_no_fingerprint_of_the_rows(tmp_path):
    runner = SuiteRunner(docs_dir=tmp_path / "docs")
    frame = pd.DataFrame({"row_number": [2, 3], "rejected": [0, 1]})
    runner.run("rejected_share", frame)
    index = runner.build_docs()

    pages = [path.read_text(encoding="utf-8") for path in Path(str(index)).parent.rglob("*.html")]
    assert len(pages) > 1
    assert not any("fingerprint" in page for page in pages)


# ---------------------------------------------------------------- the validated rows as Arrow

def test_validate_keeps_the_validated_rows_as_arrow_and_stages_the_bytes_of_their_frame(area):
    result, _ = _validate(area, EXPORT)

    assert isinstance(result.rows, pa.Table) and result.frame is None  # not held twice
    assert result.read == 7 == result.rows.num_rows
    save_validation("imp1", result)
    staged = (files.staging_dir("imp1") / "rows.parquet").read_bytes()
    save_validation("imp1", Validation(frame=result.rows_frame()))  # as validate kept them before
    assert staged == (files.staging_dir("imp1") / "rows.parquet").read_bytes()
    pd.testing.assert_frame_equal(staging.load_validation("imp1").frame, result.rows_frame())


def test_normalising_to_arrow_gives_the_values_of_the_object_columns(tmp_path):
    kept = normalize_export(_as_read(EXPORT, tmp_path), today=TODAY)
    wanted = ("email", "home_phone", "home_phone_ext", "zip", "address2")
    split = normalize_export(_as_read(EXPORT, tmp_path), today=TODAY, consume=True, arrow=wanted)

    assert set(split.arrow) == set(wanted) and not set(wanted) & set(split.frame.columns)
    pd.testing.assert_frame_equal(split.frame, kept.frame.drop(columns=list(wanted)))
    for name in wanted:
        assert split.arrow[name].to_pylist() == kept.frame[name].tolist()
        assert split.arrow[name].type == pa.Table.from_pandas(kept.frame[[name]]).schema.field(name).type
    assert split.arrow["address2"].type == pa.null()  # no such column: no value at all
    pd.testing.assert_frame_equal(split.warnings().listed, kept.warnings().listed)


def test_validated_table_is_to_parquets_table_and_consumes_only_what_it_converted():
    frame = pd.DataFrame({"row_number": np.array([2, 3], dtype="int64"), "a": np.array(["x", None], dtype=object),
                          "b": np.array([None, None], dtype=object), "code": np.array([None, "dup"], dtype=object)})
    expected = pa.Table.from_pandas(frame, preserve_index=False)
    arrow = {"b": pa.array(frame.pop("b").to_numpy(), from_pandas=True)}
    table = staging.validated_table(frame, arrow, ("row_number", "a", "b", "code"))

    assert table.equals(expected, check_metadata=True)
    assert frame.empty and list(frame.columns) == []


def test_stored_account_numbers_as_arrow_decide_the_new_patients_the_stored_index_decides(area):
    from include.patient_import.patients import stored_account_numbers, stored_patients
    from include.patient_import.rules import new_patients
    from include.patient_import.store import Patient

    _, engine = area
    practice = Practice(id="c", name="C", capacity=100, systems=frozenset())
    records.sync_practices(engine, {"c": practice, "d": Practice(id="d", name="D")})
    with engine.begin() as conn:
        conn.execute(sa.insert(Patient.__table__), [
            {"practice_id": practice, "third_party_acct_number": account, "last_name": "Lee", "first_name": "Bo",
             "status": "active"} for practice, account in (("c", "1"), ("c", "5"), ("d", "7"))])
    frame = normalize_export(pd.DataFrame({"row_number": [2, 3, 4, 5, 6], "account_number": ["1", "", "5", "7", "9"],
                                           "status": ["", "", "", "", "inactive"]}), today=TODAY).frame
    frame["code"] = None
    with engine.connect() as conn:
        stored = stored_account_numbers(conn, "c", block=1)
        index = stored_patients(conn, "c").index

    assert isinstance(stored, pa.ChunkedArray) and sorted(stored.to_pylist()) == sorted(index) == ["1", "5"]
    assert new_patients(frame, stored, practice).tolist() == new_patients(frame, index, practice).tolist() \
        == [0, 1, 0, 1, 0]


def test_the_validate_stage_takes_arrows_buffers_from_the_c_heap_and_gives_the_pool_back(area, monkeypatch):
    from include.patient_import import validate

    _, engine = area
    Job(import_id="imp3", practice_id="c", source="x.csv", export_name="x.csv", sha256="0" * 64, size=1,
        exported_on="2026-11-20", dry_run=False).save()
    before = pa.default_memory_pool().backend_name
    seen = []

    def validated(*_args, **_kwargs):
        seen.append(pa.default_memory_pool().backend_name)
        return Validation()

    monkeypatch.setattr(validate, "validate_export", validated)
    monkeypatch.setattr(validate, "load_practices", dict)
    assert validate.validate_import(engine, "imp3")["read"] == 0
    assert seen == ["system"] and pa.default_memory_pool().backend_name == before


@pytest.mark.parametrize("asked", [["account_number"], ["row_number", "email"], ["no_such_column"]])
def test_normalize_export_refuses_arrow_for_what_its_warnings_name_rows_by(asked, tmp_path):
    with pytest.raises(ValueError, match="as Arrow"):
        normalize_export(_as_read(EXPORT, tmp_path), today=TODAY, arrow=asked)
