"""Breaker tests of validate's memory changes (issue #14): what each change replaced is copied here
as the reference, and the new code must give exactly what it gave, on hostile input.

- plain e-mails split/joined in Arrow against the pandas split they replaced (values, codes, types),
  over every text type and chunking the reader or pandas may hand over;
- the sparse warnings (`NormalizedExport.warned`) against the dense per-field columns they replaced,
  for every rejection mask;
- validate's consumed frame and raw.parquet bytes against reading and normalising the file again
  (CSV and xlsx, files rejected before and after normalising, a store that is not a local disk);
- GX without its data fingerprint decides the same failures, twice in one process, Data Docs built.
"""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from include.patient_import import files, staging
from include.patient_import import problems as p
from include.patient_import.gx_runner import SuiteRunner
from include.patient_import.normalize import (
    _MAX_ADDRESS_BYTES,
    _PLAIN_EMAIL,
    _apply_distinct,
    _checked_domain,
    _message,
    _normalize_emails,
    invalid_code,
    normalize_email,
    normalize_export,
    object_array,
)
from include.patient_import.practices import Practice
from include.patient_import.problem_table import ProblemTable
from include.patient_import.problems import severity_of
from include.patient_import.reader import read_export
from include.patient_import.rules import check_frame
from include.patient_import.schema import ROW_NUMBER
from include.patient_import.staging import Job, Validation, parquet_bytes, save_validation
from include.patient_import.validate import validate_export
from tests.patient_import import test_validate
from tools.generator import generate_export

pytestmark = pytest.mark.unit

TODAY = datetime.date(2026, 11, 27)


# ---------------------------------------------------------------- the references (fd778d5)

def _emails_before(texts: pd.Series) -> list[np.ndarray]:
    """`_normalize_emails` as it was before issue #14 (pandas' partition and string concatenation)."""
    values, codes = (np.full(len(texts), None, dtype=object) for _ in range(2))
    plain = texts.str.fullmatch(_PLAIN_EMAIL).to_numpy(dtype=bool)
    if plain.any():
        rows = np.flatnonzero(plain)
        parts = texts[plain].str.partition("@")
        local = parts[0].to_numpy(dtype=object)
        positions, domains = pd.factorize(parts[2].to_numpy(dtype=object))
        checked = [_checked_domain(domain) for domain in domains.tolist()]
        valid_domain = np.array([c is not None for c in checked], dtype=bool)
        lowered = object_array([c[0].lower() if c else None for c in checked])
        longest = np.array([max(len(d), len(c[0].encode()), len(c[1])) if c else 0
                            for d, c in zip(domains.tolist(), checked)], dtype=np.int64)
        local_length = pd.Series(local).str.len().to_numpy(dtype=np.int64)
        good = valid_domain[positions] & (local_length + 1 + longest[positions] <= _MAX_ADDRESS_BYTES)
        joined = (pd.Series(local, dtype=object) + "@" + pd.Series(lowered[positions], dtype=object)).to_numpy()
        values[rows[good]] = joined[good]
        codes[rows[~good]] = invalid_code("email")
    if not plain.all():
        rows = np.flatnonzero(~plain)
        values[rows], codes[rows] = _apply_distinct(texts[~plain], normalize_email, 2)
    return [values, codes]


def _dense_warnings(normalized, rejected: np.ndarray | None) -> ProblemTable:
    """`NormalizedExport.warnings` as it was before issue #14, over the dense code columns."""
    row_numbers = normalized.frame[ROW_NUMBER].to_numpy()
    accounts = normalized.frame["account_number"].to_numpy(dtype=object)
    problems = ProblemTable()
    for name, kind, codes in normalized.flagged:
        present = pd.notna(codes)
        if rejected is not None:
            present &= ~rejected
        positions = np.flatnonzero(present)
        if not len(positions):
            continue
        found = pd.Series(codes[positions], dtype="object")
        distinct = set(found)
        problems += ProblemTable.of_rows(
            row_numbers[positions], code=found, field=name, account_numbers=accounts[positions],
            message=found.map({c: _message(name, kind, c) for c in distinct}),
            severity=found.map({c: str(severity_of(c)) for c in distinct}))
    return problems


# ---------------------------------------------------------------- e-mails through Arrow

def _length_edge(total: int, domain_tail: str) -> str:
    """A plain address of exactly `total` UTF-8 bytes as written, ending in `domain_tail` (".tld")."""
    room = total - 65 - len(domain_tail)  # a 64-character local part and the "@"
    labels = []
    while room > 0:
        size = min(63, room)
        if room - size == 1:  # a dot and a label take at least two
            size -= 1
        labels.append("a" * size)
        room -= size + (1 if room > size else 0)
    return f"{'l' * 64}@{'.'.join(labels)}{domain_tail}"


HOSTILE_EMAILS = [
    "a@Example.ORG", "A@EXAMPLE.COM", "josé@exämple.com", "user@xn--bcher-kva.de", "USER@XN--BCHER-KVA.DE",
    "user@xn--x.com", '"quoted"@x.com', '"a b"@x.com', "a+tag@x.com", "a.b.c@sub.x.co", "", " ", " a@x.com ",
    "a@x.com\x00", "x\x00y@x.com", "a@b\nc.com", "a@b.com\n", "\na@b.com", "a\t@x.com", "a@x..com", "a@.x.com",
    "a@x.com.", "a@-x.com", ".a@x.com", "a.@x.com", "a..b@x.com", "a@x_y.com", "a@1.2.3.4", "a@[1.2.3.4]",
    "a@localhost", "bad@@mail", "@x.com", "a@", "ü@x.com", "a@ＥＸＡＭＰＬＥ.com", "a@x.com\u2028",
    "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com", "l" * 64 + "@x.com", "l" * 65 + "@x.com",
    "{|}~!#$%&'*/=?^`_-@x.com", "é" * 10 + "@x.com",
    _length_edge(_MAX_ADDRESS_BYTES, ".com"), _length_edge(_MAX_ADDRESS_BYTES + 1, ".com"),
    _length_edge(_MAX_ADDRESS_BYTES, ".xn--bcher-kva.de"), _length_edge(_MAX_ADDRESS_BYTES + 1, ".XN--BCHER-KVA.DE"),
]


def _series(values: list[str], how: str) -> pd.Series:
    if how in ("str", "object"):
        return pd.Series(values, dtype=how)
    kind = pa.large_string() if how.startswith("large") else pa.string()
    if how.endswith("chunked"):  # empty chunks, a chunk with no plain address, chunks of one
        bounds = [0, 0, 3, 3, 4, 9, len(values) // 2, len(values)]
        chunks = [pa.array(values[a:b], type=kind) for a, b in zip(bounds, bounds[1:])]
        return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(chunks, type=kind))
                         if kind == pa.large_string() else pd.arrays.ArrowExtensionArray(pa.chunked_array(chunks)))
    return pd.Series(values, dtype=pd.ArrowDtype(kind))


@pytest.mark.parametrize("how", ["str", "object", "string", "large_string_chunked", "string_chunked"])
def test_arrow_split_emails_equal_the_pandas_split_they_replaced(how):
    assert {len(e.encode()) for e in HOSTILE_EMAILS[-4:]} == {_MAX_ADDRESS_BYTES, _MAX_ADDRESS_BYTES + 1}
    texts = _series(HOSTILE_EMAILS, how)
    frame = pd.DataFrame({ROW_NUMBER: range(2, len(texts) + 2), "email": texts})
    before = _emails_before(_series(HOSTILE_EMAILS, "str"))

    after = _normalize_emails(texts)
    consumed = normalize_export(frame, today=TODAY, consume=True)
    codes = dict((name, c) for name, _, c in consumed.flagged)["email"]

    for got_values, got_codes in (after, (consumed.frame["email"].to_numpy(), codes)):
        assert got_values.tolist() == before[0].tolist()
        assert got_codes.tolist() == before[1].tolist()
        assert [type(v) for v in got_values] == [type(v) for v in before[0]]  # Python str or None
    # The 254-byte edge decides both ways on the vectorised path (the one-at-a-time path agrees).
    assert before[0][-4] is not None and before[0][-3] is None
    assert before[0][-2] is not None and before[0][-1] is None
    assert [normalize_email(v) for v in HOSTILE_EMAILS] == list(zip(before[0], before[1]))


def test_many_rows_of_few_domains_over_many_chunks_equal_the_pandas_split():
    rng = np.random.default_rng(4)
    domains = np.array(["Example.ORG", "x.co", "XN--BCHER-KVA.DE", "-bad.com", "gmail.com"])
    locals_ = np.array(["a", "b.c", "d+e", "f" * 64, "g" * 65, "h_i"])
    values = [f"{local}@{domain}" for local, domain in zip(locals_[rng.integers(0, len(locals_), 60_000)],
                                                           domains[rng.integers(0, len(domains), 60_000)])]
    values[::97] = ["bad@@x"] * len(values[::97])
    chunks = [pa.array(values[i:i + 7_919], type=pa.large_string()) for i in range(0, len(values), 7_919)]
    texts = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(chunks)))

    after = _normalize_emails(texts)
    before = _emails_before(pd.Series(values, dtype="str"))
    assert np.array_equal(after[0], before[0]) and np.array_equal(after[1], before[1])


# ---------------------------------------------------------------- sparse warnings

@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("breakval_exports")
    return {fmt: generate_export(folder / f"export.{fmt}", 400, seed=11, fmt=fmt, bad_share=0.3,
                                 duplicate_share=0.05, near_duplicate_share=0.05, today=datetime.date(2026, 11, 20))
            for fmt in ("csv", "xlsx")}


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_sparse_warnings_equal_the_dense_columns_for_any_rejected_rows(generated, fmt):
    normalized = normalize_export(read_export(generated[fmt]).frame, today=TODAY)
    count = len(normalized.frame)
    assert sum(len(positions) for _, _, positions, _ in normalized.warned) > 50  # a hostile file
    rng = np.random.default_rng(2)
    for rejected in (None, np.zeros(count, dtype=bool), np.ones(count, dtype=bool),
                     rng.random(count) < 0.3, rng.random(count) < 0.9):
        new, old = normalized.warnings(rejected=rejected), _dense_warnings(normalized, rejected)
        pd.testing.assert_frame_equal(new.listed, old.listed)
        pd.testing.assert_frame_equal(new.omitted, old.omitted)
        if rejected is not None and rejected.any():
            assert not set(new.listed["row"]) & set(normalized.frame.loc[rejected, ROW_NUMBER])


# ---------------------------------------------------------------- validate: consumed frame, raw bytes

area = test_validate.area  # the fixture, shared: a home and a migrated SQLite store


def _validate(engine, path: Path, capacity: int = 100_000) -> Validation:
    job = Job(import_id="imp1", practice_id="c", source=str(path), export_name=path.name, sha256="0" * 64,
              size=path.stat().st_size, exported_on="2026-11-20", dry_run=False)
    practice = Practice(id="c", name="C", capacity=capacity, systems=frozenset({"drip_education"}))
    return validate_export(engine, job, practice, today=TODAY)


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_validate_gives_the_rows_and_warnings_of_normalising_the_file_unconsumed(area, generated, fmt):
    _, engine = area
    result = _validate(engine, generated[fmt])
    as_read = read_export(generated[fmt]).frame
    kept = normalize_export(as_read.copy(), today=TODAY)

    assert result.rejection is None
    pd.testing.assert_frame_equal(result.rows_frame().drop(columns="code"), kept.frame)
    assert result.raw == parquet_bytes(as_read)
    rejected = result.rows_frame()["code"].isin(p.ROW_ERROR_CODES).to_numpy(dtype=bool)
    warned = result.problems.listed[result.problems.listed["severity"] == "warning"]
    expected = _dense_warnings(kept, rejected).listed
    for code in set(expected["code"]):  # every warning code reported for exactly the same rows
        assert set(warned.loc[warned["code"] == code, "row"]) == set(expected.loc[expected["code"] == code, "row"])


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_file_rejected_after_normalising_stages_its_rows_as_read(area, generated, fmt):
    """Capacity and the rejected share are decided after the columns were consumed: the staged
    raw.parquet must still hold every row as read, and the rejected-rows file read them back."""
    _, engine = area
    result = _validate(engine, generated[fmt], capacity=3)
    as_read = read_export(generated[fmt]).frame

    assert result.rejection is not None and result.rejection.code == "capacity_exceeded"
    save_validation("imp1", result)
    assert (files.staging_dir("imp1") / "raw.parquet").read_bytes() == parquet_bytes(as_read)
    rows = staging.load_raw_rows("imp1", as_read[ROW_NUMBER].tolist())
    pd.testing.assert_frame_equal(rows, as_read.reset_index(drop=True), check_dtype=False)


def test_a_file_rejected_for_too_many_bad_rows_stages_its_rows_as_read(area):
    root, engine = area
    lines = ["Account #,Last Name,First Name,Email"] + [f"{n},,Ann,a{n}@x.co" for n in range(1, 9)] \
        + ["9,Lee,Bo,bo@example.com"]
    export = root / "bad_rows.csv"
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = _validate(engine, export)

    assert result.rejection is not None and result.rejection.code == "too_many_rejected_rows"
    assert result.raw == parquet_bytes(read_export(export).frame)


def test_raw_parquet_bytes_in_a_store_that_is_not_a_local_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path))
    monkeypatch.setenv("PATIENT_IMPORT_STORAGE", "memory://breakval-areas/home")
    frame = pd.DataFrame({ROW_NUMBER: [2, 3, 4], "last_name": ["=1+1", "Smith\r\nJr", ""],
                          "__extra_3": ["x", None, "z"]})

    save_validation("imp9", Validation(raw=parquet_bytes(frame)))
    staged = files.staging_dir("imp9") / "raw.parquet"
    assert not isinstance(staged, Path)  # the object-store path, not the local disk
    out = io.BytesIO()
    frame.to_parquet(out, index=False)
    assert staged.read_bytes() == out.getvalue()
    pd.testing.assert_frame_equal(staging.load_raw_rows("imp9", [3, 4]), frame.iloc[1:].reset_index(drop=True))


# ---------------------------------------------------------------- GX without its data fingerprint

def test_suites_decide_the_same_failures_with_and_without_the_fingerprint_and_twice(tmp_path, monkeypatch):
    from great_expectations.execution_engine import pandas_execution_engine

    rows = normalize_export(pd.DataFrame({
        ROW_NUMBER: [2, 3, 4, 5, 6], "account_number": ["1", "1", "", "x9", "5"],
        "last_name": ["Lee", "Lee", "Kim", "", "Ng"], "first_name": ["Bo", "Bo", "Li", "Al", ""]}), today=TODAY).frame
    checked = check_frame(rows)

    def failures(docs: Path) -> tuple[list, Path]:
        runner = SuiteRunner(docs_dir=docs)
        found = runner.run("patient_rows", checked)
        return found, Path(str(runner.build_docs()))

    without, first_docs = failures(tmp_path / "one")
    again, second_docs = failures(tmp_path / "two")
    assert pandas_execution_engine.HASH_THRESHOLD == 0
    # The fingerprint as GX had it: the runner switches it off on each context, so patch that out.
    monkeypatch.setattr("include.patient_import.gx_runner._no_data_fingerprint", lambda: None)
    monkeypatch.setattr(pandas_execution_engine, "HASH_THRESHOLD", 1e9)
    with_fingerprint, third_docs = failures(tmp_path / "three")

    assert without and without == again == with_fingerprint
    assert {f.code for f in without} >= {"missing_required_field"}
    for index in (first_docs, second_docs):
        pages = [p.read_text(encoding="utf-8") for p in index.parent.rglob("*.html")]
        assert len(pages) > 1 and not any("fingerprint" in page for page in pages)
    assert any("pandas_data_fingerprint" in p.read_text(encoding="utf-8") for p in third_docs.parent.rglob("*.html"))
