"""The business rules of SPEC §3–§4: every decision about a file or a row, in one module.

Row errors (missing fields, account numbers, duplicates), the 25 % rule and capacity are decided by
the suites the rule catalogue defines (`catalogue.py`); this module derives the columns those
suites check, takes the decisions that need the store or the practice (unknown practice, future
export date, stored patients without an account number, inactive patients, payment-plan lists,
export order, insert / update / unchanged) and the possible duplicate patients of SPEC §8, and
builds each decision's problem with the catalogue's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from enum import StrEnum

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.patient_import import catalogue as c
from include.patient_import import problems as p
from include.patient_import.catalogue import (
    ACCOUNT_DATA_VARIANTS,
    CAPACITY_NEARLY_FULL,
    CAPACITY_REMAINING,
    COLUMNS_CHANGED,
    EARLIER_COPIES,
    INSERTS_OVER_LIMIT,
    IS_NEW,
    POSSIBLE_DUPLICATES_OVER_LIMIT,
    REJECTED,
    UPDATES_OVER_SHARE,
)
from include.patient_import.normalize import name_match_codes, object_array
from include.patient_import.practices import LARGE_PAYMENT_PLAN_IMPORT, Approval, Practice
from include.patient_import.problem_table import ProblemTable
from include.patient_import.schema import DATA_COLUMNS, ROW_NUMBER, STORE_COLUMN

CODE = "code"
OUTCOME = "outcome"
WRITE = "write"  # the row must be written to the store (see decide_outcomes)
# An updated row's changed fields (SPEC §8), comma-separated in DATA_COLUMNS order; None otherwise.
CHANGED_FIELDS = "changed_fields"


def check_frame(normalized: pd.DataFrame, arrow: Mapping[str, pa.Array] | None = None) -> pd.DataFrame:
    """The frame the `patient_rows` suite validates: required fields plus duplicate counts.

    Rows are compared on all their normalised data; rows without an account number are left to
    the missing-field check. Only rows whose account number appears more than once are hashed:
    the others have one variant and no earlier copy.

    `arrow`: the normalised columns `normalized` holds as Arrow arrays instead
    (`NormalizedExport.arrow`); only the repeated rows' values are taken from them.
    """
    frame = normalized[[ROW_NUMBER, "account_number", "last_name", "first_name"]].copy()
    account = normalized["account_number"]
    repeated = account.notna() & account.duplicated(keep=False)
    variants = pd.Series(1, index=frame.index, dtype="int64")
    copies = pd.Series(0, index=frame.index, dtype="int64")
    if repeated.any():
        data = _rows_data(normalized, arrow or {}, repeated.to_numpy(dtype=bool))
        digest = pd.util.hash_pandas_object(data.astype("object").fillna("\x00"), index=False)
        keyed = pd.DataFrame({"account": account[repeated], "digest": digest})
        variants[repeated] = keyed.groupby("account")["digest"].transform("nunique").astype("int64")
        copies[repeated] = keyed.groupby(["account", "digest"]).cumcount().astype("int64")
    frame[ACCOUNT_DATA_VARIANTS] = variants
    frame[EARLIER_COPIES] = copies
    return frame


def _rows_data(normalized: pd.DataFrame, arrow: Mapping[str, pa.Array], rows: np.ndarray) -> pd.DataFrame:
    """`normalized.loc[rows, DATA_COLUMNS]`, a column `normalized` lacks taken from `arrow` (as
    Python values, None for null)."""
    positions = np.flatnonzero(rows)
    return pd.DataFrame({name: normalized[name].to_numpy()[positions] if name in normalized.columns
                         else arrow[name].take(pa.array(positions)).to_numpy(zero_copy_only=False)
                         for name in DATA_COLUMNS}, index=normalized.index[positions])


def winning_codes(row_numbers: pd.Series, failures: dict[int, set[str]]) -> pd.Series:
    """The one code per row that decides its outcome, by SPEC §3's order; None where none applies."""
    best = {row: min(codes, key=c.rank) for row, codes in failures.items() if codes}
    return row_numbers.map(best).astype("object").where(row_numbers.isin(best.keys()), None)


def rejected_flags(codes: pd.Series) -> pd.DataFrame:
    """The `rejected_share` suite's frame: 1 for each row a row error rejects (SPEC §3 rule 5)."""
    return pd.DataFrame({REJECTED: codes.isin(p.ROW_ERROR_CODES).astype("int64")})


def too_many_rejected(codes: pd.Series) -> p.ExportRejected:
    """SPEC §3 rule 5's rejection, once the `rejected_share` suite found more than
    `catalogue.MAX_REJECTED_SHARE` of the rows (`codes`: each row's winning code) rejected."""
    rejected = int(codes.isin(p.ROW_ERROR_CODES).sum())
    return p.ExportRejected(
        p.TOO_MANY_REJECTED_ROWS,
        c.message(p.TOO_MANY_REJECTED_ROWS, rejected=rejected, read=len(codes), share=rejected / len(codes)),
        details={"rejected_rows": rejected, "read": len(codes)})


def unknown_practice() -> p.ExportRejected:
    """An export for a practice the registry does not hold (SPEC §3)."""
    return p.ExportRejected(p.UNKNOWN_PRACTICE, c.message(p.UNKNOWN_PRACTICE))


def export_date_rejection(exported_on: date, today: date) -> p.ExportRejected | None:
    """SPEC §3 rule 7: an export dated after `today` (the DAG's time zone) is refused."""
    if exported_on > today:
        return p.ExportRejected(p.EXPORT_DATE_IN_FUTURE,
                                c.message(p.EXPORT_DATE_IN_FUTURE, exported_on=exported_on.isoformat()))
    return None


def landing_time_warning(exported_on: str) -> p.Problem:
    """SPEC §6: an export dated by the day it landed (no date in the conf or its name) carries a
    file-level warning saying so (`exported_on`: YYYY-MM-DD)."""
    return p.Problem(code=p.EXPORT_DATE_FROM_LANDING_TIME,
                     message=c.message(p.EXPORT_DATE_FROM_LANDING_TIME, exported_on=exported_on))


def accountless_rejection(stored_without_account: int) -> p.ExportRejected | None:
    """SPEC §3 rule 4: while the practice has stored patients without an account number (counted
    under the practice's lock), no import may run: it would create duplicates of them."""
    if stored_without_account:
        return p.ExportRejected(p.EXISTING_PATIENTS_WITHOUT_ACCOUNT_NUMBER,
                                c.message(p.EXISTING_PATIENTS_WITHOUT_ACCOUNT_NUMBER))
    return None


def _practice_rule_codes(frame: pd.DataFrame, exists: pd.Series, practice: Practice) -> pd.Series:
    """The suite's codes, then the skips of rules 2 (new inactive patients) and 3 (payment-plan list)."""
    code = frame[CODE].astype("object")
    inactive_new = code.isna() & ~exists & frame["status"].eq("inactive") & (not practice.uses_drip_education)
    code = code.mask(inactive_new, p.INACTIVE_WITHOUT_DRIP_EDUCATION)
    plan = practice.payment_plan_list
    if plan is not None:
        code = code.mask(code.isna() & ~frame["account_number"].isin(plan), p.NOT_ON_PAYMENT_PLAN_LIST)
    return code


def passes_practice_rules(frame: pd.DataFrame, practice: Practice) -> pd.Series:
    """Booleans: the rows with no suite code that rules 2 and 3 keep when every row is taken as a
    new patient, whatever the store holds (the upload file carries no status: an inactive row
    must not make Cash Practice deactivate anyone)."""
    nobody_stored = pd.Series(False, index=frame.index)
    return _practice_rule_codes(frame, nobody_stored, practice).isna()


def new_patients(frame: pd.DataFrame, stored_accounts, practice: Practice) -> pd.Series:
    """`decide_outcomes(...)[IS_NEW]` from the stored account numbers alone: 1 for each row that
    would insert a patient. Enough for the capacity check, and far cheaper than reading and
    comparing every stored value (only stored patients can be skipped as older or be unchanged).

    `stored_accounts`: the stored account numbers, list-like or Arrow text
    (`patients.stored_account_numbers`)."""
    accounts = frame["account_number"]
    if isinstance(stored_accounts, pa.Array | pa.ChunkedArray):
        found = pc.is_in(pa.array(accounts.to_numpy(dtype=object), type=pa.string(), from_pandas=True),
                         value_set=stored_accounts)
        exists = pd.Series(found.to_numpy(zero_copy_only=False), index=frame.index, dtype=bool)
    else:
        exists = accounts.isin(stored_accounts)
    return (_practice_rule_codes(frame, exists, practice).isna() & ~exists).astype("int64")


def export_day(exported_on: date) -> date:
    """The export's day (SPEC §3 rule 7): a `datetime`'s (a pandas Timestamp's) own date, in the
    time zone it carries, else `exported_on`. The store keeps days and rule 7 compares days: a
    datetime's ISO text is later than its day's, so the same day would look newer."""
    return exported_on.date() if isinstance(exported_on, datetime) else exported_on


def decide_outcomes(frame: pd.DataFrame, stored: pd.DataFrame, practice: Practice,
                    exported_on: date) -> pd.DataFrame:
    """Each row's outcome and code, given the store (SPEC §3 rules 2, 3, 7 and the sync rule 6).

    Args:
        frame: the normalised rows (dates as ISO texts, None or NaN for an empty cell) and their
            suite `code` (row errors and duplicate copies).
        stored: the practice's stored patients indexed by their (unique) account number, with
            `last_seen_exported_on` and the store column of every `DATA_COLUMNS` field, dates as
            ISO texts, None for a null (`patients.stored_patients`); `date` objects do not compare.
        exported_on: the export's date (rule 7), a datetime taken as its day (`export_day`).

    Returns `frame` with `outcome`, `code`, `changed` (rows whose write changes the store: an
    insert, or a stored value), `changed_fields` (SPEC §8: an updated row's changed field names,
    comma-separated; None for every other row), `is_new` and `write` (the rows the load writes).
    """
    out = frame.copy(deep=False)  # copy-on-write: the columns added below leave `frame` as it is
    account = out["account_number"]
    # Where each row's patient is in `stored`; -1 for a new one. Plain numpy from here: pandas'
    # object comparisons check every pair for NA, at ten times numpy's cost.
    at = stored.index.get_indexer(account.to_numpy(dtype=object)) if len(stored) else np.full(len(out), -1)
    found = at >= 0
    exists = pd.Series(found, index=out.index)
    code = _practice_rule_codes(out, exists, practice)

    # ISO dates compare as texts; "" for a stored patient never seen (or a new one) is before any.
    last_seen = np.full(len(out), "", dtype=object)
    if found.any():
        seen = stored["last_seen_exported_on"].to_numpy(dtype=object)[at[found]]
        last_seen[found] = np.where(pd.isna(seen), "", seen)
    day = export_day(exported_on).isoformat()
    older = code.isna() & pd.Series(found & (last_seen > day), index=out.index)
    code = code.mask(older, p.OLDER_THAN_STORED)

    # One comparison decides both whether a row changes a stored patient and which fields it
    # changes: a value the row has (an empty cell changes nothing) that differs from the stored one.
    by_field = np.zeros((len(out), len(DATA_COLUMNS)), dtype=bool)
    if found.any():
        stored_at = np.where(found, at, 0)
        # Field by field: the file's and the store's cells as 2-D object arrays, and their copies,
        # would take half a gigabyte each at a million rows.
        for position, field in enumerate(DATA_COLUMNS):
            new = out[field].to_numpy(dtype=object)
            present = pd.notna(new) & found
            before = stored[STORE_COLUMN.get(field, field)].to_numpy(dtype=object)[stored_at]
            # No NaN or NA left to compare (NA's comparison has no truth value).
            by_field[:, position] = present & (np.where(present, new, None) != before)
    changed = by_field.any(axis=1)

    # Each outcome as a mask, a later one winning (a row error over a skip over a write); numpy
    # booleans, not pandas' comparisons of the outcome texts (issue #14). `inserted` and `updated`
    # are rows without a code, so no skip or row error overrides them.
    uncoded = code.isna().to_numpy(dtype=bool)
    inserted, updated = uncoded & ~found, uncoded & found & changed
    skipped, rejected = code.isin(p.SKIP_CODES).to_numpy(bool), code.isin(p.ROW_ERROR_CODES).to_numpy(bool)
    outcome = np.full(len(out), p.UNCHANGED, dtype=object)
    for mask, name in ((inserted, p.INSERTED), (updated, p.UPDATED), (skipped, p.SKIPPED), (rejected, p.REJECTED)):
        outcome[mask] = name
    unchanged = ~(inserted | updated | skipped | rejected)
    out[OUTCOME] = pd.Series(outcome, index=out.index, dtype="object")
    out[CODE] = code
    out["changed"] = pd.Series((changed | ~found) & uncoded, index=out.index)
    out[CHANGED_FIELDS] = _field_names(by_field, updated, out.index)
    out[IS_NEW] = pd.Series(inserted.astype("int64"), index=out.index)
    # What the load must write: new and changed patients, and an unchanged one only when its
    # export date moves the stored one forward (rule 7); any other write would change nothing.
    out[WRITE] = pd.Series(inserted | updated | (unchanged & (last_seen < day)), index=out.index)
    return out


def _field_names(by_field: np.ndarray, rows: np.ndarray, index: pd.Index,
                 fields: Sequence[str] = DATA_COLUMNS) -> pd.Series:
    """"first_name,city" per row of `rows` from the per-field booleans (rows x `fields`);
    None for the other rows."""
    names = np.full(len(by_field), None, dtype=object)
    if rows.any():
        # Each distinct set of changed fields is named once (a file changes the same few sets),
        # found as one key per row: its flags packed 8 to a byte, compared as raw bytes. Not an
        # int64 with a bit per field: the 64th field would shift out of it and go unnamed.
        flags = by_field[rows]
        packed = np.ascontiguousarray(np.packbits(flags, axis=1))
        keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
        _, first, positions = np.unique(keys, return_index=True, return_inverse=True)
        texts = object_array([",".join(f for f, on in zip(fields, flags[row].tolist()) if on)
                              for row in first.tolist()])
        names[rows] = texts[positions.ravel()]
    return pd.Series(names, index=index, dtype="object")


def field_counts(decided: pd.DataFrame) -> dict[str, int]:
    """SPEC §8 `changes.fields`: per field, how many updated patients it changed (fields with none
    left out), in DATA_COLUMNS order. `decided` is `decide_outcomes`' frame."""
    names = decided[CHANGED_FIELDS].dropna()
    if names.empty:
        return {}
    tally = names.str.split(",").explode().value_counts()
    return {field: int(tally[field]) for field in DATA_COLUMNS if field in tally}


def capacity_parameters(practice: Practice, stored_count: int) -> dict[str, int]:
    """The `practice_capacity` suite's parameter: how many new patients still fit (never negative,
    so an import that adds nobody always passes, SPEC §3 rule 1)."""
    return {CAPACITY_REMAINING: max(practice.capacity - stored_count, 0)}


def capacity_rejection(practice: Practice, stored_count: int, new: int) -> p.ExportRejected:
    overflow = stored_count + new - practice.capacity
    return p.ExportRejected(
        p.CAPACITY_EXCEEDED,
        c.message(p.CAPACITY_EXCEEDED, new=new, capacity=practice.capacity, stored=stored_count, overflow=overflow),
        details={"capacity": practice.capacity, "stored": stored_count, "new": new, "overflow": overflow},
    )


def payment_plan_warning(practice: Practice, new: int) -> p.Problem | None:
    """SPEC §3 rule 3: a large import for a payment-plan-only practice without a list."""
    if practice.payment_plan_only and practice.payment_plan_list is None and new > LARGE_PAYMENT_PLAN_IMPORT:
        return p.Problem(code=p.LARGE_IMPORT_FOR_PAYMENT_PLAN_PRACTICE,
                         message=c.message(p.LARGE_IMPORT_FOR_PAYMENT_PLAN_PRACTICE, new=new,
                                           limit=LARGE_PAYMENT_PLAN_IMPORT))
    return None


def skip_messages(codes: pd.Series) -> pd.Series:
    """The office-facing message of each row's skip code (SPEC §3 rules 2, 3 and 7)."""
    return codes.map({code: c.message(code) for code in set(codes.dropna())})


# ---------------------------------------------------------------- possible duplicates (SPEC §8)

# What identifies a person across account numbers: the stored columns `possible_duplicates` reads.
PERSON_FIELDS: tuple[str, ...] = ("first_name", "last_name", "birth_date")
# A warning names at most this many other account numbers; it counts the rest.
DUPLICATE_ACCOUNTS_NAMED = 3


def _person_codes(*parts: pd.DataFrame) -> np.ndarray:
    """One integer per row of `parts`, in order (each with `PERSON_FIELDS`): first name and last
    name as `normalize.name_match_key` compares them, and the ISO birth date; -1 where any of the
    three is missing. Integers, not joined texts: a million rows are matched with numpy and integer
    joins. A field's values are gathered one field at a time, never all three fields' at once."""
    codes = []
    for name in PERSON_FIELDS:
        values = np.concatenate([part[name].to_numpy(dtype=object) for part in parts])
        codes.append(name_match_codes(values) if name in PERSON_FIELDS[:2] else pd.factorize(values)[0])
        del values
    missing = np.logical_or.reduce([part < 0 for part in codes])
    combined = np.zeros(len(missing), dtype=np.int64)
    for part in codes:  # re-factorised at each step, so the product never outgrows the row count squared
        combined = pd.factorize(combined * (int(part.max(initial=0)) + 1) + np.maximum(part, 0))[0]
    combined[missing] = -1
    return combined


def _sorted_distinct(keys: np.ndarray) -> np.ndarray:
    """`np.unique(keys)` for a 1-D integer array: its distinct values in ascending order.

    Not `np.unique`: numpy 2.4 finds the distinct values of an integer array by hashing, then
    sorts them, and for a million keys that are nearly all distinct (an export of new patients)
    that took ~3.7 s against ~0.04 s for one sort and a comparison of neighbours (issue #14).
    numpy's default sort: ~6 ms for a million keys in any order (a stable sort is faster on keys
    nearly in order but ~90 ms on shuffled ones)."""
    ordered = np.sort(keys)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if len(ordered) else ordered


def _account_ranks(accounts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each account number in numeric order, the distinct numbers in that order);
    normalised account numbers are digits without leading zeros, so shorter is lower."""
    positions, distinct = pd.factorize(accounts)
    texts = distinct.astype(str)
    order = np.lexsort((texts, np.char.str_len(texts)))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[positions], distinct[order]


def possible_duplicates(frame: pd.DataFrame, is_new, stored: pd.DataFrame) -> ProblemTable:
    """SPEC §8: each new patient whose first name, last name and birth date match a stored patient
    or another row of the file under a different account number, warned
    `possible_duplicate_patient` with the other account numbers (never a name or a date). Nothing
    is merged.

    Args:
        frame: the normalised rows with their suite `code`; rows with a row error are not matched.
        is_new: per row of `frame`, 1 (or True) when it would insert a patient (`new_patients`).
        stored: the practice's stored patients indexed by account number, with `PERSON_FIELDS`,
            the birth date as ISO text like the frame's (`patients.stored_patients`).

    Returns the warnings (capped per code like every warning, problem_table). People are matched
    as integer codes with numpy and one join, not row by row; each person contributes at most
    `DUPLICATE_ACCOUNTS_NAMED` + 1 account numbers to the join, so a file of one name and birth
    date under a million account numbers stays linear.
    """
    count = len(frame)
    person = _person_codes(frame, stored)
    accounts = np.concatenate([frame["account_number"].to_numpy(dtype=object), stored.index.to_numpy(dtype=object)])
    usable = person >= 0
    usable[:count] &= frame["account_number"].notna().to_numpy() & ~frame[CODE].isin(p.ROW_ERROR_CODES).to_numpy()
    new = np.zeros(len(person), dtype=bool)
    new[:count] = usable[:count] & np.asarray(is_new, dtype=bool)
    if not new.any():
        return ProblemTable()
    wanted = np.zeros(int(person.max()) + 1, dtype=bool)
    wanted[person[new]] = True
    candidate = usable & wanted[np.maximum(person, 0)]
    rank, by_rank = _account_ranks(accounts[candidate])
    # Each person's distinct account numbers, lowest first.
    # As one integer per pair: numpy's unique of rows (axis=0) sorts them as records, several
    # times slower. Both below the row count, so the key is in int64 and sorts as the pairs do.
    width = np.int64(len(rank) + 1)
    keys = _sorted_distinct(person[candidate].astype(np.int64) * width + rank)
    pairs = np.stack([keys // width, keys % width], axis=1)
    accounts_per_person = np.bincount(pairs[:, 0], minlength=len(wanted))
    shared = accounts_per_person > 1
    if not shared[person[new]].any():
        return ProblemTable()
    pairs = pairs[shared[pairs[:, 0]]]
    first_of_person = np.r_[0, np.flatnonzero(np.diff(pairs[:, 0])) + 1]
    place = np.arange(len(pairs)) - np.repeat(first_of_person, np.diff(np.r_[first_of_person, len(pairs)]))
    named = pd.DataFrame({"person": pairs[:, 0], "other": pairs[:, 1]})[place <= DUPLICATE_ACCOUNTS_NAMED]

    own_rank = np.full(len(person), -1, dtype=np.int64)
    own_rank[candidate] = rank
    warned_at = np.flatnonzero(new & shared[np.maximum(person, 0)])
    warned = pd.DataFrame({"position": warned_at, "person": person[warned_at], "own": own_rank[warned_at]})
    joined = warned.merge(named, on="person")
    joined = joined[joined["own"] != joined["other"]].sort_values(["position", "other"], kind="stable")
    joined = joined[joined.groupby("position").cumcount() < DUPLICATE_ACCOUNTS_NAMED]
    joined["other"] = by_rank[joined["other"].to_numpy()]
    by_row = joined.groupby("position", sort=True).agg(person=("person", "first"), others=("other", ", ".join),
                                                       shown=("other", "size"))
    more = accounts_per_person[by_row["person"].to_numpy()] - 1 - by_row["shown"].to_numpy()
    positions = by_row.index.to_numpy()
    return ProblemTable.of_rows(frame[ROW_NUMBER].to_numpy()[positions], code=p.POSSIBLE_DUPLICATE_PATIENT,
                                message=_duplicate_messages(by_row["others"], by_row["shown"], more),
                                account_numbers=accounts[positions])


def _duplicate_messages(others: pd.Series, shown: pd.Series, more) -> np.ndarray:
    """The catalogue's message per warned row, formatted once per distinct (accounts, count, more)."""
    cases = pd.DataFrame({"others": others.to_numpy(), "shown": shown.to_numpy(), "more": np.asarray(more)})
    positions, distinct = pd.factorize(pd.MultiIndex.from_frame(cases))
    texts = [c.message(p.POSSIBLE_DUPLICATE_PATIENT,
                       "more" if extra else ("several" if number > 1 else None), accounts=names, more=extra)
             for names, number, extra in distinct.tolist()]
    return object_array(texts)[positions]

# ---------------------------------------------------------------- approval (SPEC §8)

class Answer(StrEnum):
    """The answer recorded for an import that waited for approval (`imports.approval["answer"]`)."""

    APPROVED = "approved"
    REJECTED = "rejected"  # a person chose Reject
    TIMED_OUT = "timed_out"  # nobody answered within the practice's `timeout_hours`


def _reason(code: str, case: str | None = None, **figures) -> dict:
    return {"code": code, "message": c.message(code, case, **figures), **figures}


def approval_reasons(approval: Approval, *, counts: p.Counts, stored: int, capacity: int,
                     columns: list[str], previous_columns: list[str] | None, previous_import: str | None,
                     possible_duplicates: int, earlier_inserts: int = 0) -> list[dict]:
    """Why an import must wait for a person before its load (SPEC §8 "Approval"): one dict per
    threshold it is over, `{"code", "message", **figures}` (counts, shares, limits, field names;
    the codes and messages are the catalogue's `APPROVAL_REASON_CODES`). An empty list: it loads
    without waiting.

    `counts` are the would-be outcomes (`patients.decide_against_store`), `stored` the practice's
    stored patients before the import, `columns` the export's canonical fields and
    `previous_columns` those of the practice's last completed import (None: no such import, nothing
    to compare with). `earlier_inserts`: the new patients that the practice's imports decided
    before this one in the same run would insert and this one does not; they are not stored yet
    but take capacity before this import loads. Shares are fractions of `stored` and of `capacity`.
    """
    reasons = []
    limit = approval.max_update_share
    if limit is not None and stored and counts.updated / stored > limit:
        reasons.append(_reason(UPDATES_OVER_SHARE, updated=counts.updated, stored=stored,
                               share=counts.updated / stored, limit=limit))
    if approval.max_inserts is not None and counts.inserted > approval.max_inserts:
        reasons.append(_reason(INSERTS_OVER_LIMIT, inserted=counts.inserted, limit=approval.max_inserts))
    limit = approval.min_capacity_left_share
    if limit is not None and capacity > 0 and counts.inserted:
        # Only an import that adds patients brings the practice nearer its capacity.
        left = max(capacity - stored - earlier_inserts - counts.inserted, 0)
        if left / capacity < limit:
            reasons.append(_reason(CAPACITY_NEARLY_FULL, "after_earlier" if earlier_inserts else None, left=left,
                                   capacity=capacity, share=left / capacity, limit=limit,
                                   **({"earlier": earlier_inserts} if earlier_inserts else {})))
    if approval.column_changes and previous_columns is not None and set(columns) != set(previous_columns):
        added = sorted(set(columns) - set(previous_columns))
        removed = sorted(set(previous_columns) - set(columns))
        reasons.append(_reason(COLUMNS_CHANGED, previous_import=previous_import, added_count=len(added),
                               added=", ".join(added) or "none", removed_count=len(removed),
                               removed=", ".join(removed) or "none"))
    limit = approval.max_possible_duplicates
    if limit is not None and possible_duplicates > limit:
        reasons.append(_reason(POSSIBLE_DUPLICATES_OVER_LIMIT, possible_duplicates=possible_duplicates, limit=limit))
    return reasons


def approval_rejection(approval: dict | None) -> p.ExportRejected | None:
    """The rejection of an import that waited for approval and was not approved (SPEC §8), from its
    recorded approval (`approval.py`: `{"waits", "answer", "by", "reasons", "timeout_hours"}`):
    `not_approved` when rejected — or still unanswered when its load runs —, `approval_timed_out`
    when nobody answered in time; None when it did not wait or was approved."""
    if not approval or not approval.get("waits") or approval.get("answer") == Answer.APPROVED:
        return None
    reasons = ", ".join(r["code"] for r in approval.get("reasons") or []) or "over a threshold"
    details = {"reasons": [r["code"] for r in approval.get("reasons") or []]}
    if approval.get("answer") == Answer.TIMED_OUT:
        return p.ExportRejected(p.APPROVAL_TIMED_OUT, c.message(
            p.APPROVAL_TIMED_OUT, reasons=reasons, hours=approval.get("timeout_hours") or 0), details=details)
    if approval.get("answer") == Answer.REJECTED:
        message = c.message(p.NOT_APPROVED, reasons=reasons, who=approval.get("by") or "a reviewer")
    else:
        message = c.message(p.NOT_APPROVED, "unanswered", reasons=reasons)
    return p.ExportRejected(p.NOT_APPROVED, message, details=details)
