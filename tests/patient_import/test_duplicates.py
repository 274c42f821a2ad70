"""Possible duplicate patients (SPEC §8): a new patient whose normalised first name, last name and
birth date match a stored patient or another row under another account number is warned, naming
that account number and never a name or a date. Nothing is merged."""

from __future__ import annotations

import csv
import json
from datetime import date

import numpy as np
import pandas as pd
import pytest

from include.patient_import import problems as p
from include.patient_import.normalize import name_match_key
from include.patient_import.rules import CODE, DUPLICATE_ACCOUNTS_NAMED, possible_duplicates
from include.patient_import.schema import ROW_NUMBER

pytestmark = pytest.mark.unit
TODAY = date(2026, 11, 30)


def rows(*people: tuple[str, str, str, str | None], codes: list[str | None] | None = None) -> pd.DataFrame:
    """Normalised rows from (account, first, last, ISO birth date); row numbers from 2."""
    frame = pd.DataFrame(people, columns=["account_number", "first_name", "last_name", "birth_date"], dtype=object)
    frame.insert(0, ROW_NUMBER, range(2, 2 + len(frame)))
    frame[CODE] = codes if codes is not None else [None] * len(frame)
    return frame


def stored(*people: tuple[str, str, str, str | None]) -> pd.DataFrame:
    """Stored patients as patients.stored_patients gives them: indexed by account, dates as ISO texts."""
    frame = pd.DataFrame(people, columns=["third_party_acct_number", "first_name", "last_name", "birth_date"],
                         dtype=object)
    return frame.set_index(frame["third_party_acct_number"])


NOBODY = stored()


def warned(table) -> dict[int, tuple[str, str]]:
    """row -> (account number, message) of every possible_duplicate_patient warning."""
    listed = table.listed
    found = listed[listed["code"] == p.POSSIBLE_DUPLICATE_PATIENT]
    return {int(r): (a, m) for r, a, m in found[["row", "account_number", "message"]].itertuples(index=False)}


# ---------------------------------------------------------------- the rule, on inline rows

def test_name_matching_ignores_case_accents_spaces_and_punctuation():
    assert name_match_key("  O'Brien-Núñez ") == name_match_key("OBRIEN NUNEZ") == "obriennunez"
    assert name_match_key("Zoë") == name_match_key("zoe")
    assert name_match_key("Straße") == name_match_key("STRASSE")
    assert name_match_key("Ana\u00a0María") == name_match_key("ana maria")
    assert name_match_key("Søren") != name_match_key("Soren")  # ø is a letter of its own, not an accent


def test_two_new_rows_of_one_person_under_two_accounts_warn_each_naming_the_other():
    frame = rows(("101", "José", "O'Brien", "1980-01-02"), ("202", " JOSE ", "obrien", "1980-01-02"))

    found = warned(possible_duplicates(frame, [1, 1], NOBODY))

    assert found[2][0] == "101" and "account 202:" in found[2][1]
    assert found[3][0] == "202" and "account 101:" in found[3][1]
    assert found[2][1].startswith("new patient with the same first name, last name and birth date")


def test_a_new_row_matching_a_stored_patient_is_warned_naming_the_stored_account():
    frame = rows(("300", "Renee", "LEFEVRE", "1975-06-30"))
    store = stored(("77", "Renée", "Lefèvre", "1975-06-30"), ("78", "Renée", "Lefèvre", "1975-07-01"))

    found = warned(possible_duplicates(frame, [1], store))

    assert list(found) == [2]
    assert found[2][0] == "300" and "account 77:" in found[2][1] and "78" not in found[2][1]


def test_namesakes_with_another_birth_date_are_not_warned():
    frame = rows(("101", "Mary", "Smith", "1980-01-02"), ("202", "Mary", "Smith", "1980-01-03"))
    store = stored(("9", "Mary", "Smith", "1990-05-05"))

    assert warned(possible_duplicates(frame, [1, 1], store)) == {}


def test_an_existing_patients_own_update_is_not_warned():
    # Account 77 is stored: its row updates it, even when a new row of the file matches it.
    frame = rows(("77", "Ann", "Lee", "1970-03-04"), ("88", "Ann", "Lee", "1970-03-04"))
    store = stored(("77", "ANN", "LEE", "1970-03-04"))

    found = warned(possible_duplicates(frame, [0, 1], store))

    assert list(found) == [3] and "account 77:" in found[3][1]


def test_rows_without_a_birth_date_or_rejected_rows_are_not_matched():
    frame = rows(("1", "Ann", "Lee", None), ("2", "Ann", "Lee", None), ("3", "Bo", "Ng", "1990-01-01"),
                 ("4", "Bo", "Ng", "1990-01-01"), codes=[None, None, p.MISSING_REQUIRED_FIELD, None])

    assert warned(possible_duplicates(frame, [1, 1, 0, 1], NOBODY)) == {}


def test_copies_under_the_same_account_number_are_not_possible_duplicates():
    frame = rows(("5", "Ann", "Lee", "1970-03-04"), ("5", "Ann", "Lee", "1970-03-04"),
                 codes=[None, p.DUPLICATE_ROW])

    assert warned(possible_duplicates(frame, [1, 0], stored(("5", "Ann", "Lee", "1970-03-04")))) == {}


def test_a_person_under_many_accounts_names_the_lowest_and_counts_the_rest():
    frame = rows(*[(str(n), "Ann", "Lee", "1970-03-04") for n in (40, 7, 300, 1000, 12)])

    found = warned(possible_duplicates(frame, [1] * 5, NOBODY))

    assert DUPLICATE_ACCOUNTS_NAMED == 3
    assert "accounts 7, 12, 300 and 1 more:" in found[2][1]  # row 2 is account 40
    assert "accounts 12, 40, 300 and 1 more:" in found[3][1]  # row 3 is account 7


def test_a_file_of_one_person_under_many_accounts_stays_bounded_and_counts_every_warning():
    many = 20_000
    frame = rows(*[(str(10_000 + n), "Ann", "Lee", "1970-03-04") for n in range(many)])

    table = possible_duplicates(frame, [1] * many, NOBODY)

    [count] = [c for c in table.counts() if c["code"] == p.POSSIBLE_DUPLICATE_PATIENT]
    assert count["total"] == many and count["listed"] <= 1_000
    assert set(table.listed["message"].str.len()) and all("more" in m for m in table.listed["message"])


def test_the_warning_names_account_numbers_only():
    frame = rows(("101", "Zebulonmarker", "Quixotemarker", "1987-03-14"),
                 ("202", "zebulonmarker", "QUIXOTEMARKER", "1987-03-14"))

    table = possible_duplicates(frame, [1, 1], NOBODY)

    text = json.dumps(table.listed.astype(str).to_dict("records")).casefold()
    assert len(table) == 2
    assert not any(marker in text for marker in ("zebulonmarker", "quixotemarker", "1987", "03-14", "3/14"))


# ---------------------------------------------------------------- whole imports of generated exports

PRACTICE = "practices:\n  - id: demo_clinic\n    name: Demo\n    capacity: 5000\n    systems: [drip_education]\n"


def _written_rows(path) -> list[dict]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _report_duplicates(report: dict) -> dict[int, tuple[str, str]]:
    return {x["row"]: (x["account_number"], x["message"]) for x in report["problems"]
            if x["code"] == p.POSSIBLE_DUPLICATE_PATIENT}


def test_generated_near_duplicates_in_one_export_are_warned_and_nothing_else(tmp_path, monkeypatch):
    from tools.corpus import patients_snapshot, prepare_home, run_import
    from tools.generator import EXPECTED_CODE, add_problems, generate_patients, write_export

    engine = prepare_home(tmp_path / "home", monkeypatch, limits=False, practices_yaml=PRACTICE)
    people = add_problems(generate_patients(400, seed=5, today=TODAY), seed=5, bad_share=0.02,
                          duplicate_share=0.01, near_duplicate_share=0.08, today=TODAY)
    path = write_export(people, tmp_path / "export.csv", fmt="csv", excel_artefacts=False, seed=5)
    expected_rows = {i + 2 for i in range(len(people)) if people[EXPECTED_CODE].iat[i] == p.POSSIBLE_DUPLICATE_PATIENT}
    # The generator's people: re-typed names (case, accents, punctuation, spaces) and namesakes.
    assert 20 <= len(expected_rows) and any(not name.isascii() for name in people["first_name"])

    [done] = run_import(engine, path, run_id="manual__near", exported_on=TODAY)

    found = _report_duplicates(done.report)
    assert set(found) == expected_rows
    key = people.assign(person=[f"{name_match_key(f)}|{name_match_key(la)}|{b}" for f, la, b in
                                zip(people["first_name"], people["last_name"], people["birth_date"])])
    for row, (account, message) in found.items():
        person = key["person"].iat[row - 2]
        others = set(key.loc[(key["person"] == person) & (key["account_number"] != account), "account_number"])
        assert account == key["account_number"].iat[row - 2]
        assert others and all(other in message for other in others)
    # Nothing merged: every warned patient is stored under its own account number.
    stored_accounts = set(patients_snapshot(engine))
    assert {account for account, _ in found.values()} <= stored_accounts
    engine.dispose()


def test_the_same_people_under_new_accounts_are_warned_against_the_store_and_updates_are_not(tmp_path, monkeypatch):
    from tools.corpus import prepare_home, run_import
    from tools.generator import generate_patients, write_export

    engine = prepare_home(tmp_path / "home", monkeypatch, limits=False, practices_yaml=PRACTICE)
    first = generate_patients(150, seed=8, first_account=10_001, today=TODAY)
    # The same seed makes the same people; another first account gives them new account numbers.
    again = generate_patients(150, seed=8, first_account=50_001, today=TODAY).iloc[:40]
    stored_export = write_export(first, tmp_path / "first.csv", seed=1)
    [a] = run_import(engine, stored_export, run_id="manual__a", exported_on=TODAY)
    assert a.report["counts"]["inserted"] == 150

    [b] = run_import(engine, write_export(again, tmp_path / "again.csv", seed=2), run_id="manual__b",
                     exported_on=TODAY)
    found = dict(_report_duplicates(b.report).values())  # account number -> message
    assert set(found) == {str(50_001 + i) for i in range(len(again)) if again["birth_date"].iat[i]}
    for account, message in found.items():
        assert f"account {int(account) - 40_000}:" in message  # the same person's stored account

    [c] = run_import(engine, write_export(first, tmp_path / "update.csv", seed=3), run_id="manual__c",
                     exported_on=TODAY)
    assert c.report["counts"]["inserted"] == 0 and _report_duplicates(c.report) == {}

    names = set(first["first_name"]) | set(first["last_name"]) | set(first["birth_date"]) - {""}
    text = json.dumps(b.report["problems"])
    assert not [value for value in names if len(value) > 3 and value in text]
    engine.dispose()


# ---------------------------------------------------------------- the generator's near-duplicates

def test_the_generator_adds_the_same_people_under_new_accounts_with_names_retyped_and_namesakes():
    from tools.generator import EXPECTED_CODE, add_problems, generate_patients

    patients = generate_patients(600, seed=3, today=TODAY)
    out = add_problems(patients, seed=3, bad_share=0.0, duplicate_share=0.0, near_duplicate_share=0.1, today=TODAY)

    added = out[~out["account_number"].isin(patients["account_number"])]
    assert len(out) == 660 and len(added) == 60 and out["account_number"].is_unique
    assert added["account_number"].astype(int).min() > patients["account_number"].astype(int).max()
    same = out[out[EXPECTED_CODE] == p.POSSIBLE_DUPLICATE_PATIENT]
    retyped = same[same["account_number"].isin(added["account_number"])]
    namesakes = added[added[EXPECTED_CODE] == ""]
    assert len(retyped) + len(namesakes) == 60 and len(same) == 2 * len(retyped) and len(namesakes) > 0
    originals = patients.assign(key=[f"{name_match_key(f)}|{name_match_key(la)}" for f, la in
                                     zip(patients["first_name"], patients["last_name"])])
    for row in retyped.itertuples():
        key = f"{name_match_key(row.first_name)}|{name_match_key(row.last_name)}"
        match = originals[(originals["key"] == key) & (originals["birth_date"] == row.birth_date)]
        assert len(match) >= 1 and (row.first_name, row.last_name) not in set(zip(match["first_name"],
                                                                                   match["last_name"]))
    for row in namesakes.itertuples():
        key = f"{name_match_key(row.first_name)}|{name_match_key(row.last_name)}"
        assert not ((originals["key"] == key) & (originals["birth_date"] == row.birth_date)).any()


def test_generated_exports_keep_account_numbers_unique_across_blocks_with_near_duplicates(tmp_path, monkeypatch):
    from tools import generator
    from tools.generator import generate_export

    monkeypatch.setattr(generator, "_BLOCK_ROWS", 500)  # four blocks
    path = generate_export(tmp_path / "export.csv", 2_000, seed=4, bad_share=0.0, duplicate_share=0.0,
                           near_duplicate_share=0.05, excel_artefacts=False, today=TODAY)

    accounts = [row["Account #"] for row in _written_rows(path)]
    assert len(accounts) == 2_000 and len(set(accounts)) == 2_000


@pytest.mark.parametrize("keys", [
    [], [5], [3, 3, 3], [9, -2, 9, 0, -2, 7], list(range(1000, 0, -1)) * 2,
    [2**62, -(2**62), 0, 2**62],
])
def test_the_distinct_person_keys_are_numpys_unique_in_ascending_order(keys):
    # possible_duplicates finds each person's distinct account numbers by one sort, not np.unique
    # (numpy 2.4 hashes first: ~100 times slower for a million new patients, issue #14).
    from include.patient_import.rules import _sorted_distinct

    values = np.array(keys, dtype=np.int64)
    assert np.array_equal(_sorted_distinct(values), np.unique(values))
    assert _sorted_distinct(values).dtype == np.int64


def test_distinct_keys_of_random_people_agree_with_numpy():
    from include.patient_import.rules import _sorted_distinct

    generator = np.random.default_rng(14)
    for size, high in ((10, 3), (1000, 50), (50_000, 10**12)):
        values = generator.integers(-high, high, size)
        assert np.array_equal(_sorted_distinct(values), np.unique(values))


def test_name_match_codes_are_equal_exactly_where_the_match_keys_are():
    from include.patient_import.normalize import name_match_codes

    names = ["  O'Brien-Núñez ", "OBRIEN NUNEZ", None, "Zoë", "zoe", "---", "Straße", "STRASSE", "Ann", None, "ann"]
    codes = name_match_codes(pd.Series(names, dtype=object))
    keys = [name_match_key(n) or None if n is not None else None for n in names]
    assert codes.dtype.kind == "i" and len(codes) == len(names)
    for i, key in enumerate(keys):
        assert (codes[i] == -1) == (key is None)
        for j, other in enumerate(keys):
            if key is not None and other is not None:
                assert (codes[i] == codes[j]) == (key == other)
    assert list(name_match_codes(np.array([], dtype=object))) == []
    assert list(name_match_codes(np.array([None, None], dtype=object))) == [-1, -1]


def test_name_match_codes_take_any_one_dimensional_sequence():
    # A list of pairs must stay one value per pair (np.asarray would make it 2-D: helper-67).
    from include.patient_import.normalize import name_match_codes

    assert list(name_match_codes([("A", "B"), ("a", "b"), None])) == [0, 0, -1]
    assert list(name_match_codes(pd.Series(["Ann", "ANN", None], index=[5, 1, 9]))) == [0, 0, -1]
