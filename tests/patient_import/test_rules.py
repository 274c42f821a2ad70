"""SPEC §3 rules decided in code: duplicate columns for the suite, precedence, store-dependent outcomes."""

import random
from datetime import date

import numpy as np
import pandas as pd
import pytest

from include.patient_import import problems as p
from include.patient_import.practices import Practice
from include.patient_import.rules import (
    CHANGED_FIELDS,
    CODE,
    DATA_COLUMNS,
    OUTCOME,
    _field_names,
    capacity_parameters,
    check_frame,
    decide_outcomes,
    payment_plan_warning,
    winning_codes,
)
from include.patient_import.schema import STORE_COLUMN
from include.patient_import.suites import ACCOUNT_DATA_VARIANTS, EARLIER_COPIES
from tests.patient_import.frames import normalised

pytestmark = pytest.mark.unit

DRIP = Practice(id="c", name="C", systems=frozenset({"drip_education"}))
NO_DRIP = Practice(id="c", name="C", systems=frozenset({"auto_debit"}))


def stored(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), dtype="object")
    if frame.empty:
        frame = pd.DataFrame(columns=["third_party_acct_number", "last_seen_exported_on"], dtype="object")
    for column in [STORE_COLUMN.get(c, c) for c in DATA_COLUMNS]:
        if column not in frame:
            frame[column] = None
    return frame.set_index(frame["third_party_acct_number"])


def test_identical_rows_count_copies_and_different_rows_count_variants():
    frame = normalised({"account_number": "1"}, {"account_number": "1"}, {"account_number": "2"},
                       {"account_number": "2", "city": "Nampa"}, {"account_number": None})

    check = check_frame(frame)

    assert check[EARLIER_COPIES].tolist() == [0, 1, 0, 0, 0]
    assert check[ACCOUNT_DATA_VARIANTS].tolist() == [1, 1, 2, 2, 1]


def test_first_code_in_spec_order_wins():
    rows = pd.Series([2, 3, 4])
    codes = winning_codes(rows, {2: {p.DUPLICATE_ROW, p.MISSING_REQUIRED_FIELD}, 3: {p.DUPLICATE_ACCOUNT_NUMBER}})

    assert codes.tolist() == [p.MISSING_REQUIRED_FIELD, p.DUPLICATE_ACCOUNT_NUMBER, None]


def test_new_patients_insert_and_changed_stored_patients_update():
    frame = normalised({"account_number": "1"}, {"account_number": "2", "city": "Nampa"},
                       {"account_number": "3", "city": "Boise"})
    store = stored({"third_party_acct_number": "2", "city": "Boise", "first_name": "Ana", "last_name": "Lopez",
                    "status": "active", "last_seen_exported_on": "2026-01-01"},
                   {"third_party_acct_number": "3", "city": "Boise", "first_name": "Ana", "last_name": "Lopez",
                    "status": "active", "last_seen_exported_on": "2026-01-01"})

    decided = decide_outcomes(frame, store, DRIP, date(2026, 2, 1))

    assert decided[OUTCOME].tolist() == [p.INSERTED, p.UPDATED, p.UNCHANGED]


def test_empty_cell_is_not_a_change():
    frame = normalised({"account_number": "2", "city": None})
    store = stored({"third_party_acct_number": "2", "city": "Boise", "first_name": "Ana", "last_name": "Lopez",
                    "status": "active", "last_seen_exported_on": "2026-01-01"})

    assert decide_outcomes(frame, store, DRIP, date(2026, 2, 1))[OUTCOME].tolist() == [p.UNCHANGED]


@pytest.mark.parametrize("empty", [None, float("nan"), pd.NA], ids=["None", "NaN", "NA"])
def test_an_empty_cell_of_any_missing_kind_is_not_a_change(empty):
    frame = normalised({"account_number": "2", "city": "Boise", "email": empty}, {"account_number": "3", "city": empty})
    store = stored(*[{"third_party_acct_number": n, "city": "Boise", "email": "a@example.org", "first_name": "Ana",
                      "last_name": "Lopez", "status": "active", "last_seen_exported_on": "2026-01-01"} for n in "23"])

    assert decide_outcomes(frame, store, DRIP, date(2026, 2, 1))[OUTCOME].tolist() == [p.UNCHANGED] * 2


def test_empty_cells_of_the_readers_string_dtype_are_not_changes():
    frame = normalised({"account_number": "2", "city": None}, {"account_number": "3", "city": "Nampa"})
    frame["city"] = frame["city"].astype("str")  # pandas' own string dtype: NaN for an empty cell
    store = stored(*[{"third_party_acct_number": n, "city": "Boise", "first_name": "Ana", "last_name": "Lopez",
                      "status": "active", "last_seen_exported_on": "2026-01-01"} for n in "23"])

    decided = decide_outcomes(frame, store, DRIP, date(2026, 2, 1))

    assert decided[OUTCOME].tolist() == [p.UNCHANGED, p.UPDATED]
    assert decided[CHANGED_FIELDS].tolist() == [None, "city"]


def test_changed_field_names_equal_each_rows_changes_named_one_by_one():
    rng = random.Random(6)
    fields = ["first_name", "city", "zip", "email", "birth_date", "home_phone_ext", "last_visit"]
    values = {"first_name": ["Ana", "Bea"], "city": ["Boise", "Nampa", None], "zip": ["83702", None],
              "email": ["a@example.org", "b@example.org", None], "birth_date": ["1999-12-31", "2000-01-01", None],
              "home_phone_ext": ["12", None], "last_visit": ["2025-12-31", "2026-01-01", None]}
    stored_rows, rows = [], []
    for n in range(1, 400):
        before = {f: rng.choice([v for v in values[f] if v is not None] + [None]) for f in fields}
        after = {f: rng.choice(values[f]) for f in fields}
        stored_rows.append({"third_party_acct_number": str(n), "last_name": "Lopez", "status": "active",
                            "last_seen_exported_on": "2026-01-01", **before})
        rows.append({"account_number": str(n), **after})
    frame, store = normalised(*rows), stored(*stored_rows)

    decided = decide_outcomes(frame, store, DRIP, date(2026, 2, 1))

    expected = []
    for row, before in zip(rows, stored_rows):
        merged = {c: None for c in DATA_COLUMNS} | {"last_name": "Lopez", "first_name": "Ana", "status": "active"} | row
        changed = [c for c in DATA_COLUMNS
                   if merged[c] is not None and merged[c] != before.get(STORE_COLUMN.get(c, c))]
        expected.append(",".join(changed) or None)
    assert decided[CHANGED_FIELDS].tolist() == expected
    assert decided[OUTCOME].tolist() == [p.UPDATED if names else p.UNCHANGED for names in expected]


def test_changed_field_names_hold_for_more_fields_than_a_64_bit_integer_has_bits():
    fields = [f"field_{n}" for n in range(70)]  # DATA_COLUMNS may grow: the names must not wrap
    by_field = np.zeros((4, len(fields)), dtype=bool)
    by_field[0, [0, 64]] = True
    by_field[1, [63, 69]] = True
    by_field[2, 64] = True
    by_field[3, 0] = True

    names = _field_names(by_field, np.array([True, True, True, False]), pd.RangeIndex(4), fields)

    assert names.tolist() == ["field_0,field_64", "field_63,field_69", "field_64", None]


def test_a_new_patients_insert_is_a_change_and_an_identical_stored_one_is_not():
    frame = normalised({"account_number": "1"}, {"account_number": "2"}, {"account_number": "3", "city": "Nampa"})
    store = stored(*[{"third_party_acct_number": n, "first_name": "Ana", "last_name": "Lopez", "status": "active",
                      "last_seen_exported_on": "2026-01-01"} for n in "23"])

    decided = decide_outcomes(frame, store, DRIP, date(2026, 2, 1))

    assert decided[OUTCOME].tolist() == [p.INSERTED, p.UNCHANGED, p.UPDATED]
    assert decided["changed"].tolist() == [True, False, True]


def test_older_export_is_skipped_and_same_date_applies():
    frame = normalised({"account_number": "2", "city": "Nampa"})
    store = stored({"third_party_acct_number": "2", "city": "Boise", "first_name": "Ana", "last_name": "Lopez",
                    "status": "active", "last_seen_exported_on": "2026-02-01"})

    older = decide_outcomes(frame, store, DRIP, date(2026, 1, 31))
    tie = decide_outcomes(frame, store, DRIP, date(2026, 2, 1))

    assert (older[OUTCOME].tolist(), older[CODE].tolist()) == ([p.SKIPPED], [p.OLDER_THAN_STORED])
    assert tie[OUTCOME].tolist() == [p.UPDATED]


def test_inactive_new_patient_is_skipped_without_drip_but_stored_one_becomes_inactive():
    frame = normalised({"account_number": "1", "status": "inactive"}, {"account_number": "2", "status": "inactive"})
    store = stored({"third_party_acct_number": "2", "first_name": "Ana", "last_name": "Lopez",
                    "status": "active", "last_seen_exported_on": "2026-01-01"})

    decided = decide_outcomes(frame, store, NO_DRIP, date(2026, 2, 1))
    with_drip = decide_outcomes(frame, store, DRIP, date(2026, 2, 1))

    assert decided[CODE].tolist() == [p.INACTIVE_WITHOUT_DRIP_EDUCATION, None]
    assert decided[OUTCOME].tolist() == [p.SKIPPED, p.UPDATED]
    assert with_drip[OUTCOME].tolist() == [p.INSERTED, p.UPDATED]


def test_payment_plan_list_skips_other_accounts_only_for_payment_plan_practices():
    listed = Practice(id="c", name="C", systems=frozenset({"auto_debit"}), payment_plan_accounts=frozenset({"1"}))
    frame = normalised({"account_number": "1"}, {"account_number": "2"})

    decided = decide_outcomes(frame, stored(), listed, date(2026, 2, 1))

    assert decided[CODE].tolist() == [None, p.NOT_ON_PAYMENT_PLAN_LIST]
    mixed = Practice(id="c", name="C", systems=frozenset({"auto_debit", "drip_education"}),
                     payment_plan_accounts=frozenset({"1"}))
    assert mixed.payment_plan_list is None


def test_row_errors_keep_their_code_and_are_rejected():
    frame = normalised({"account_number": None}, {"account_number": "5"})
    frame[CODE] = [p.MISSING_REQUIRED_FIELD, None]

    decided = decide_outcomes(frame, stored(), DRIP, date(2026, 2, 1))

    assert decided[OUTCOME].tolist() == [p.REJECTED, p.INSERTED]
    assert p.Counts.of(decided[OUTCOME]) == p.Counts(read=2, inserted=1, rejected=1)


def test_capacity_parameter_is_never_negative():
    practice = Practice(id="c", name="C", capacity=10)

    assert capacity_parameters(practice, 3) == {"capacity_remaining": 7}
    assert capacity_parameters(practice, 12) == {"capacity_remaining": 0}


def test_large_import_warning_only_for_payment_plan_practice_without_list():
    assert payment_plan_warning(NO_DRIP, 51).code == p.LARGE_IMPORT_FOR_PAYMENT_PLAN_PRACTICE
    assert payment_plan_warning(NO_DRIP, 50) is None
    assert payment_plan_warning(DRIP, 500) is None
