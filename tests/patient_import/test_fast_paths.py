"""The vectorised fast paths (issue #6) give exactly what the one-by-one and library paths give."""

from __future__ import annotations

import datetime
import random

import pandas as pd
import pyarrow as pa
import pytest

from include.patient_import import problems as p
from include.patient_import import staging, transform
from include.patient_import.normalize import normalize_account_number, normalize_email, normalize_export
from include.patient_import.practices import Practice
from include.patient_import.rules import CODE, DATA_COLUMNS, check_frame, decide_outcomes, new_patients
from include.patient_import.schema import STORE_COLUMN, UPLOAD_COLUMNS, UPLOAD_EXTRA_COLUMNS
from include.patient_import.suites import ACCOUNT_DATA_VARIANTS, EARLIER_COPIES, IS_NEW
from tests.patient_import.frames import normalised
from tests.patient_import.test_normalize import library_email

pytestmark = pytest.mark.unit

TODAY = datetime.date(2025, 6, 1)
# Both string dtypes the normaliser meets: the reader's (pandas' str, Arrow-backed) and plain objects.
DTYPES = ["str", "object"]


def normalized_column(field: str, values: list[str], dtype: str) -> list:
    frame = pd.DataFrame({"row_number": range(2, len(values) + 2), field: pd.Series(values, dtype=dtype)})
    return normalize_export(frame, today=TODAY).frame[field].tolist()


# --- account numbers ----------------------------------------------------------------------------

ACCOUNTS = ["123", "00123", "0", "000", "10001", "9" * 30, " 123", "123 ", "#123", "# 123", '="00123"',
            "123.0", "1.23457E+11", "12a", "", "   ", "\u0661\u0662\u0663", "１２３", "12 34", "-5", "+5",
            "0x1F", "\u00a0123", "123\n"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_vectorised_account_numbers_agree_with_the_one_by_one_path(dtype):
    rng = random.Random(6)
    values = ACCOUNTS + [str(rng.randint(0, 10**12)).zfill(rng.randint(1, 14)) for _ in range(2000)]

    assert normalized_column("account_number", values, dtype) == [normalize_account_number(v) for v in values]


# --- e-mails ------------------------------------------------------------------------------------

EMAILS = ["a@b.co", "A+tag@Sub.Example.ORG", "John.Doe@EXAMPLE.COM", "x@xn--bcher-kva.de", "x@XN--BCHER-KVA.de",
          "x@ab--cd.com", "x@a-.com", "x@1.2.3.4", "x@a..com", ".x@a.com", "x.@a.com", "a@localhost",
          "a@example.invalid", "a@test", "a@example.com.", "a@exa_mple.com", "x@" + "a" * 63 + ".com",
          "x@" + "a" * 64 + ".com", "a" * 65 + "@example.com",
          "a" * 64 + "@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".com",
          "a" * 61 + "@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".com",
          "y" * 20 + "@" + "ü" * 40 + "." + "b" * 60 + "." + "c" * 60 + ".com",
          "a@Bücher.example", "josé@example.com", " padded@example.com ", "two@@example.com", "a@b@c.com",
          "no-at-sign", "", "   ", "tab\t@example.com", "a@example.com\n", "\"quoted\"@example.com",
          "Name <a@example.com>"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_vectorised_emails_agree_with_the_one_by_one_path_and_email_validator(dtype):
    rng = random.Random(6)
    generated = ["".join(rng.choice("aZ9._+-!'") for _ in range(rng.randint(0, 12))) + "@"
                 + "".join(rng.choice("aZ9.-") for _ in range(rng.randint(0, 20))) for _ in range(1500)]
    values = EMAILS + generated + EMAILS  # repeated values share their domain's check

    vectorised = normalized_column("email", values, dtype)

    assert vectorised == [normalize_email(v)[0] for v in values]
    assert vectorised == [library_email(v) if v.strip() else None for v in values]


def test_vectorised_emails_warn_exactly_where_the_one_by_one_path_does():
    frame = pd.DataFrame({"row_number": range(2, len(EMAILS) + 2), "email": EMAILS})

    problems = normalize_export(frame, today=TODAY).problems

    assert sorted(x.row for x in problems) == [row for row, raw in enumerate(EMAILS, start=2)
                                               if normalize_email(raw)[1] is not None]


# --- the decision against the store -------------------------------------------------------------

DAYS = [None, "1999-12-31", "2000-01-01", "2025-12-31", "2026-01-01", "2026-01-02"]
VALUES = {"city": ["Boise", "Nampa", None, float("nan")], "birth_date": DAYS + [float("nan")],
          "email": ["a@example.org", None], "home_phone_ext": ["12", None]}


def one_by_one(row: dict, before: dict | None, day: str) -> tuple[str, str | None, str | None, bool]:
    """SPEC §3 rules 6 and 7 for one row, the plain way: (outcome, code, changed fields, write)."""
    if before is None:
        return p.INSERTED, None, None, True
    seen = before["last_seen_exported_on"]
    if seen is not None and seen > day:
        return p.SKIPPED, p.OLDER_THAN_STORED, None, False
    changed = [c for c in DATA_COLUMNS if not pd.isna(row[c]) and row[c] != before[STORE_COLUMN.get(c, c)]]
    if changed:
        return p.UPDATED, None, ",".join(changed), True
    return p.UNCHANGED, None, None, seen is None or seen < day


def test_the_vectorised_decision_equals_deciding_each_row_one_by_one():
    rng = random.Random(6)
    day = "2026-01-01"
    rows = [{"account_number": str(n), **{f: rng.choice(v) for f, v in VALUES.items()}}
            for n in rng.sample(range(1, 600), 400)]
    stored = {}
    for n in rng.sample(range(1, 600), 350):
        stored[str(n)] = {STORE_COLUMN.get(c, c): None for c in DATA_COLUMNS} | {
            "third_party_acct_number": str(n), "first_name": "Ana", "last_name": "Lopez", "status": "active",
            "last_seen_exported_on": rng.choice(DAYS),
            **{f: rng.choice([v for v in values if isinstance(v, str) or v is None]) for f, values in VALUES.items()}}
    frame = normalised(*rows)
    store = pd.DataFrame(list(stored.values()), dtype="object").set_index("third_party_acct_number", drop=False)
    store = store.astype("object").where(store.notna(), None)

    decided = decide_outcomes(frame, store, Practice(id="c", name="C"), datetime.date.fromisoformat(day))

    expected = [one_by_one(row, stored.get(row["account_number"]), day)
                for row in frame.to_dict("records")]
    assert list(zip(decided["outcome"], decided[CODE], decided["changed_fields"], decided["write"])) == expected


# --- duplicate counts ---------------------------------------------------------------------------

def test_duplicate_counts_hashing_only_repeated_accounts_equal_hashing_every_row():
    rng = random.Random(6)
    rows = []
    for _ in range(400):
        account = rng.choice([None, *map(str, range(1, 150))])
        rows.append({"account_number": account, "city": rng.choice(["Boise", "Nampa", None]),
                     "email": rng.choice(["a@b.co", None])})
    frame = normalised(*rows)

    check = check_frame(frame)

    # The reference: every row hashed, as before the fast path.
    digest = pd.util.hash_pandas_object(frame[list(DATA_COLUMNS)].fillna("\x00"), index=False)
    keyed = pd.DataFrame({"account": frame["account_number"], "digest": digest})
    has = keyed["account"].notna()
    variants = keyed[has].groupby("account")["digest"].transform("nunique").reindex(frame.index).fillna(1)
    copies = keyed[has].groupby(["account", "digest"]).cumcount().reindex(frame.index).fillna(0)
    assert check[ACCOUNT_DATA_VARIANTS].tolist() == variants.astype("int64").tolist()
    assert check[EARLIER_COPIES].tolist() == copies.astype("int64").tolist()


# --- the upload file ----------------------------------------------------------------------------

CELLS = ["plain", "=1+1", "+1 555", "-5", "@SUM(A1)", "\tTab", "\rCR", "'quoted", "", None, "naïve", "a=b",
         " =lead space", "é=", "\U0001f600x"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_vectorised_defusing_agrees_with_defusing_each_cell(dtype):
    values = pd.Series(CELLS, dtype=dtype)

    assert transform.defuse_column(values) == [transform.defuse(v) for v in values.astype("object")]


def test_defusing_arrow_text_agrees_with_defusing_its_python_strings():
    """transform keeps the columns it only writes out as Arrow text (`staging.validated_row_blocks(texts=...)`)."""
    values = pd.Series(HOSTILE_CELLS, dtype=pd.ArrowDtype(pa.large_string()))

    assert transform.defuse_column(values) == [transform.defuse(v) for v in HOSTILE_CELLS]


@pytest.mark.parametrize("block", [1, 7, 64])
def test_the_upload_file_of_arrow_text_blocks_is_that_of_python_values(tmp_path, monkeypatch, block):
    """The staged rows as transform reads them (the upload's text columns as Arrow, a column with
    no value at all among them) write the file the rows as Python values write."""
    rng = random.Random(block)
    fields = ["first_name", "last_name", "address1", "city", "email", "home_phone", "zip", "birth_date", "status"]
    rows = normalised(*[{"account_number": str(n), **{f: rng.choice(HOSTILE_CELLS) for f in fields}}
                        for n in range(1, 150)])
    rows[CODE] = [rng.choice([None, None, p.INVALID_ACCOUNT_NUMBER]) for _ in range(len(rows))]
    rows["gender"] = None  # staged as an all-null column
    practice = Practice(id="c", name="C", upload_extra_columns=tuple(UPLOAD_EXTRA_COLUMNS))
    ids = {str(n): n * 10 for n in range(1, 150, 3)}
    monkeypatch.setattr(transform, "_BLOCK_ROWS", block)
    table = pa.Table.from_pandas(rows, preserve_index=False)
    texts = set(rows.columns) - {CODE, "status", "account_number", "row_number"}
    as_arrow = staging._validated_rows(table, texts)
    assert all(isinstance(as_arrow[name].dtype, pd.ArrowDtype) for name in texts)

    def upload(frame, name):
        return transform.write_upload_file(tmp_path / name, transform.upload_rows(frame, practice), practice,
                                           ids).read_bytes()

    assert upload(as_arrow, "arrow.csv") == upload(staging._validated_rows(table), "objects.csv")


def test_defusing_a_column_of_numbers_takes_each_cell_as_text():
    values = pd.Series([12, None, -3.5, float("nan")], dtype="object")

    assert transform.defuse_column(values) == ["12", "", "'-3.5", ""]


HOSTILE_CELLS = [*CELLS, '"', 'a"b', '""', '"=1"', "a\r\nb", "\n=1", "line\nbreak", "\r\n", "=", "-", "@", "+",
                 "\t", "\r", ",", "a,b", ";=1", "\u00a0=1", "\u200b=1", "\ufeff=1", "\x00", "x\x00y", "\x1b[0m",
                 "\u2028", "'", "''=1", "\\", "-1.5e3", "=HYPERLINK(\"http://x\")", "\U0001d400", "\u0301a"]


def test_the_upload_file_is_byte_for_byte_what_defusing_each_cell_with_the_csv_module_writes(tmp_path, monkeypatch):
    """The Arrow writer of the upload file against the csv module's (`write_csv`): every field
    quoted, quotes doubled, CRLF, formula starts defused (SPEC §5), on hostile cells in every
    column, across blocks."""
    rng = random.Random(14)
    fields = ["first_name", "last_name", "address1", "city", "email", "home_phone", "zip", "birth_date"]
    rows = normalised(*[{"account_number": str(n), **{f: rng.choice(HOSTILE_CELLS) for f in fields}}
                        for n in range(1, 200)])
    practice = Practice(id="c", name="C", upload_extra_columns=("BirthDate", "Status"))
    ids = {str(n): n * 10 for n in range(1, 200, 3)}
    monkeypatch.setattr(transform, "_BLOCK_ROWS", 64)

    written = transform.write_upload_file(tmp_path / "upload.csv", rows, practice, ids).read_bytes()

    columns = list(UPLOAD_COLUMNS) + [(n, UPLOAD_EXTRA_COLUMNS[n]) for n in practice.upload_extra_columns]
    cells = [[ids.get(row["account_number"]) if name == "ClientID" else (row[source] if source else None)
              for name, source in columns] for _, row in rows.iterrows()]
    expected = transform.write_csv(tmp_path / "expected.csv", [name for name, _ in columns], cells).read_bytes()
    assert written == expected
    assert written.startswith(b"\xef\xbb\xbf")


def test_an_upload_file_without_rows_is_its_header(tmp_path):
    rows = normalised({"account_number": "1"}).iloc[:0]
    written = transform.write_upload_file(tmp_path / "upload.csv", rows, Practice(id="c", name="C"), {})
    header = [name for name, _ in UPLOAD_COLUMNS]
    assert written.read_bytes() == transform.write_csv(tmp_path / "e.csv", header, []).read_bytes()


def test_client_ids_are_written_as_whole_numbers_when_known_and_new_patients_mix(tmp_path):
    rows = normalised({"account_number": "1", "first_name": "=cmd"}, {"account_number": "2"})

    path = transform.write_upload_file(tmp_path / "upload.csv", rows, Practice(id="c", name="C"), {"1": 12})

    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1].startswith('"12","1","","\'=cmd",')
    assert lines[2].startswith('"","2",')


# --- new patients for the capacity check --------------------------------------------------------

@pytest.mark.parametrize("practice", [
    Practice(id="c", name="C", systems=frozenset({"drip_education"})),
    Practice(id="c", name="C", systems=frozenset({"auto_debit"})),
    Practice(id="c", name="C", systems=frozenset({"auto_debit"}), payment_plan_accounts=frozenset({"3", "7", "11"})),
])
def test_new_patients_from_stored_accounts_alone_equal_the_full_decision(practice):
    rng = random.Random(6)
    frame = normalised(*[{"account_number": rng.choice([None, *map(str, range(1, 20))]),
                          "status": rng.choice(["active", "inactive"]), "city": rng.choice(["Boise", "Nampa"])}
                         for _ in range(200)])
    frame[CODE] = [rng.choice([None, None, None, "duplicate_row", "missing_required_field"]) for _ in range(200)]
    stored = pd.DataFrame({"third_party_acct_number": [str(n) for n in range(1, 20, 3)], "city": "Boise",
                           "last_seen_exported_on": "2026-01-01"}, dtype="object")
    for column in [STORE_COLUMN.get(c, c) for c in DATA_COLUMNS]:
        stored[column] = stored.get(column)
    stored = stored.set_index(stored["third_party_acct_number"])

    decided = decide_outcomes(frame, stored, practice, datetime.date(2025, 12, 1))

    assert new_patients(frame, stored.index, practice).tolist() == decided[IS_NEW].tolist()


def test_the_upload_file_written_block_by_block_equals_it_written_whole(tmp_path, monkeypatch):
    rows = normalised(*[{"account_number": str(n), "city": f"=City {n}", "email": f"p{n}@example.com"}
                        for n in range(1, 12)])
    practice = Practice(id="c", name="C", upload_extra_columns=("BirthDate", "Status"))
    whole = transform.write_upload_file(tmp_path / "whole.csv", rows, practice, {"3": 30, "4": 40}).read_bytes()

    monkeypatch.setattr(transform, "_BLOCK_ROWS", 4)
    blocks = transform.write_upload_file(tmp_path / "blocks.csv", rows, practice, {"3": 30, "4": 40}).read_bytes()

    assert blocks == whole
    assert whole.count(b"\r\n") == 12
