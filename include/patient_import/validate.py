"""The validate stage: read the export, normalise it, and let the suites decide what is rejected.

The outcome goes to the import's staging folder: the normalised rows with their suite code
(Parquet), the rows as read (for the rejected-rows file), the listed problems (Parquet) and the
counts of the warnings not listed (JSON).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy.engine import Engine

from include.patient_import import catalogue as c
from include.patient_import import problems as p
from include.patient_import import records, settings, storage
from include.patient_import.catalogue import EXPORT_COLUMNS, IS_NEW, PATIENT_ROWS, PRACTICE_CAPACITY, REJECTED_SHARE
from include.patient_import.gx_runner import SuiteFailure, SuiteRunner
from include.patient_import.patients import count_patients, stored_account_numbers, stored_patients
from include.patient_import.practices import Practice, load_practices
from include.patient_import.problem_table import ProblemTable
from include.patient_import.rules import (
    CODE,
    PERSON_FIELDS,
    capacity_parameters,
    capacity_rejection,
    check_frame,
    new_patients,
    possible_duplicates,
    rejected_flags,
    too_many_rejected,
    unknown_practice,
    winning_codes,
)
from include.patient_import.schema import (
    DATA_COLUMNS,
    DEFAULT_HEADERS,
    FIELDS_BY_NAME,
    REQUIRED_FIELDS,
    ROW_NUMBER,
    HeaderMap,
)
from include.patient_import.staging import Job, Validation, parquet_bytes, save_validation, validated_table

log = logging.getLogger(__name__)

# The normalised columns validate computes on as Python values (the suites, capacity, possible
# duplicates); the others it keeps as Arrow from normalising on (`normalize_export(arrow=...)`):
# a million phone numbers and e-mails hold ~160 MB as Python strings, ~45 MB as Arrow (issue #14).
_COMPUTED_ON = frozenset({ROW_NUMBER, "account_number", "status", *PERSON_FIELDS})
_KEPT_AS_ARROW = tuple(column for column in DATA_COLUMNS if column not in _COMPUTED_ON)


def _row_messages(code: str, header: str, accounts: pd.Series):
    """The office-facing message of a failing row; an invalid account number's says what the value
    looks like (scientific notation, a date, a footer, a header), never the value itself."""
    if code == p.INVALID_ACCOUNT_NUMBER:
        from include.patient_import.normalize import account_number_problem

        return accounts.map(lambda text: account_number_problem(text if isinstance(text, str) else None)).to_numpy(
            dtype=object)
    return c.message(code, header=header)


def _row_problems(failures: list[SuiteFailure], accounts: pd.Series) -> tuple[dict[int, set[str]], ProblemTable]:
    """Each failing row's codes, and the failures as problems (`accounts`: account number by row)."""
    by_row: dict[int, set[str]] = {}
    # Every failure's rows as one table, sorted and capped once (issue #14); the same table as
    # one per failure added in turn (the cap is per code and field, the sort stable).
    rows, codes, fields, messages = [], [], [], []
    for failure in failures:
        header = FIELDS_BY_NAME[failure.field].header if failure.field else ""
        for row in failure.rows:
            by_row.setdefault(row, set()).add(failure.code)
        failed = pd.Series(list(failure.rows), dtype="int64")
        message = _row_messages(failure.code, header, accounts.reindex(failed))
        rows.append(failed.to_numpy())
        codes.append(np.full(len(failed), failure.code, dtype=object))
        fields.append(np.full(len(failed), failure.field, dtype=object))
        messages.append(np.full(len(failed), message, dtype=object) if isinstance(message, str) else message)
    if not any(len(part) for part in rows):
        return by_row, ProblemTable()
    failed = pd.Series(np.concatenate(rows), dtype="int64")
    return by_row, ProblemTable.of_rows(failed, code=np.concatenate(codes), field=np.concatenate(fields),
                                        message=np.concatenate(messages),
                                        account_numbers=accounts.reindex(failed).to_numpy())


# Title lines above the header are looked for among the first rows only.
_HEADER_SEARCH_ROWS = 50


def _header_like_row(frame: pd.DataFrame, header_map: HeaderMap = DEFAULT_HEADERS) -> tuple[int, list[str]] | None:
    """The first row whose cells name a required field and another field, with those fields' headers."""
    head = frame.head(_HEADER_SEARCH_ROWS)
    cells = head.drop(columns=[ROW_NUMBER]).astype("object").to_numpy()
    for number, row in zip(head[ROW_NUMBER].tolist(), cells):
        fields = [f for f in (header_map.field(str(v)) for v in row if isinstance(v, str) and v.strip()) if f]
        if len(set(fields)) >= 2 and set(fields) & set(REQUIRED_FIELDS):
            return int(number), [FIELDS_BY_NAME[f].header for f in dict.fromkeys(fields)]
    return None


def _missing_columns(parsed, header_map: HeaderMap = DEFAULT_HEADERS) -> p.ExportRejected:
    """`missing_required_columns`, saying where a header-like row was found or which sheets the
    workbook has, so the office knows what to fix (only header texts and sheet names, no values)."""
    missing = [FIELDS_BY_NAME[f].header for f in REQUIRED_FIELDS if f not in parsed.columns]
    where = "the first sheet" if parsed.file_type == "xlsx" else "the export"
    values = {"where": where, "missing": ", ".join(missing)}
    found = _header_like_row(parsed.frame, header_map)
    if found:
        number, headers = found
        message = c.message(p.MISSING_REQUIRED_COLUMNS, "header_below", **values, number=number,
                            unit="row" if parsed.file_type == "xlsx" else "line", headers=", ".join(headers))
    elif len(parsed.sheet_names) > 1:
        message = c.message(p.MISSING_REQUIRED_COLUMNS, "other_sheets", **values,
                            sheets=", ".join(repr(name) for name in parsed.sheet_names))
    else:
        message = c.message(p.MISSING_REQUIRED_COLUMNS, **values)
    return p.ExportRejected(p.MISSING_REQUIRED_COLUMNS, message)


def validate_export(engine: Engine, job, practice: Practice | None, *, today: date) -> Validation:
    """Validate one export; a file-level rejection is returned in the result, not raised."""
    from include.patient_import.normalize import normalize_export
    from include.patient_import.reader import read_export

    result = Validation()
    if job.rejection or practice is None:
        result.rejection = job.rejected() or unknown_practice()
        return result
    runner = SuiteRunner(docs_dir=settings.area("data_docs", job.practice_id, job.import_id))
    try:
        with storage.local_file(storage.path_of(job.source)) as source:
            parsed = read_export(source, settings.Limits.from_env(), practice.header_map)
        # The rows as read are kept as the bytes of raw.parquet and their frame is consumed while
        # normalising: a million rows as read hold ~350 MB as a frame, ~55 MB as Parquet (issue #14).
        result.raw, result.headers, result.columns = parquet_bytes(parsed.frame), parsed.headers, parsed.columns
        result.problems += parsed.problems
        if runner.run(EXPORT_COLUMNS, parsed.frame.head(0)):
            if not set(REQUIRED_FIELDS) & set(parsed.columns):
                # No required header at all: the first line is probably a patient, and its cells
                # must not reach the report as the names of unknown columns.
                result.problems = result.problems.without(p.UNKNOWN_COLUMN)
            raise _missing_columns(parsed, practice.header_map)

        # The columns validate does not compute on are Arrow from the start (issue #14).
        normalized = normalize_export(parsed.frame, today=today, consume=True, arrow=_KEPT_AS_ARROW)
        del parsed
        # Arrow's pool keeps what it freed until asked: the rows as read go back to the system
        # now, not after the suites.
        pa.default_memory_pool().release_unused()
        frame = normalized.frame
        accounts = pd.Series(frame["account_number"].to_numpy(dtype=object), index=frame[ROW_NUMBER].astype("int64"))
        by_row, row_problems = _row_problems(runner.run(PATIENT_ROWS, check_frame(frame, normalized.arrow)), accounts)
        frame[CODE] = winning_codes(frame[ROW_NUMBER], by_row)
        # Every row error is reported, so the office fixes them all at once; a skip only when it decided.
        winners = pd.Series(frame[CODE].to_numpy(dtype=object), index=frame[ROW_NUMBER].astype("int64"))
        listed = row_problems.listed
        decided = winners.reindex(listed["row"].astype("int64")).to_numpy(dtype=object) == listed["code"].to_numpy()
        result.problems += row_problems.where(listed["code"].isin(p.ROW_ERROR_CODES).to_numpy() | decided)
        # A rejected row reports why it was rejected, not what importing it would have left out.
        result.problems += normalized.warnings(rejected=frame[CODE].isin(p.ROW_ERROR_CODES).to_numpy(dtype=bool))
        try:
            _file_checks(engine, runner, practice, frame, result)
        finally:
            # The rows are staged whatever the file checks decided; as Arrow, their Python values
            # freed a column at a time (`frame` is this function's own).
            result.rows = validated_table(frame, normalized.arrow, (ROW_NUMBER, *DATA_COLUMNS, CODE))
    except p.ExportRejected as exc:
        result.rejection = exc
    finally:
        result.docs_index = runner.build_docs()
    return result


def _file_checks(engine: Engine, runner: SuiteRunner, practice: Practice, frame: pd.DataFrame,
                 result: Validation) -> None:
    """The checks on the whole file once each row has its code: the share of rejected rows (SPEC
    §3 rule 5), the practice's capacity, possible duplicates (SPEC §8). Raises ExportRejected."""
    flags = rejected_flags(frame[CODE])
    flags[ROW_NUMBER] = frame[ROW_NUMBER]
    if runner.run(REJECTED_SHARE, flags):
        raise too_many_rejected(frame[CODE])

    with engine.connect() as conn:
        # Capacity counts new patients only: the stored account numbers decide them (load
        # decides every outcome again, under the practice's lock).
        is_new = pd.DataFrame({ROW_NUMBER: frame[ROW_NUMBER],
                               IS_NEW: new_patients(frame, stored_account_numbers(conn, practice.id), practice)})
        stored_count = count_patients(conn, practice.id)
        # A possible duplicate shares a new row's birth date (SPEC §8): only the stored people
        # born on one of those days can match, not every stored patient (a daily export has a
        # few new rows; a practice, tens of thousands of patients). The people's fields are
        # store columns of the same names (schema.STORE_COLUMN).
        people = stored_patients(conn, practice.id, PERSON_FIELDS,
                                 born_on=frame.loc[is_new[IS_NEW].to_numpy(dtype=bool), "birth_date"])
    new = int(is_new[IS_NEW].sum())
    if new and runner.run(PRACTICE_CAPACITY, is_new, capacity_parameters(practice, stored_count)):
        raise capacity_rejection(practice, stored_count, new)
    result.problems += possible_duplicates(frame, is_new[IS_NEW], people)


# ---------------------------------------------------------------- the stage

@contextmanager
def _arrow_on_the_c_heap() -> Iterator[None]:
    """Arrow's buffers from the C heap Python's values use (`pa.system_memory_pool`), not from
    Arrow's own allocator (mimalloc), until the block ends. Validate turns Arrow text into Python
    strings and Python strings into Arrow columns, column after column, and what one heap frees
    the other cannot reuse: at a million rows its peak is ~80 MB lower so (issue #14).

    The pool is the process's: stages overlapping in threads of one process share one switch (the
    first in sets it, the last out puts back the pool the first found)."""
    global _c_heap_users, _pool_before
    with _c_heap_lock:
        if _c_heap_users == 0:
            _pool_before = pa.default_memory_pool()
            pa.set_memory_pool(pa.system_memory_pool())
        _c_heap_users += 1
    try:
        yield
    finally:
        with _c_heap_lock:
            _c_heap_users -= 1
            if _c_heap_users == 0 and _pool_before is not None:
                pa.set_memory_pool(_pool_before)
                _pool_before = None


_c_heap_lock = threading.Lock()
_c_heap_users = 0
_pool_before: pa.MemoryPool | None = None


def validate_import(engine: Engine, import_id: str) -> dict:
    """The validate stage: read, normalise and validate one export with the suites, keep the
    result in staging (`staging.Validation`) and record where its Data Docs are.

    Returns {"import_id", "read": rows read, "rejected": the file's rejection code or None}.
    """
    job = Job.load(import_id)
    practices = load_practices()
    with _arrow_on_the_c_heap():
        outcome = validate_export(engine, job, practices.get(job.practice_id), today=settings.today())
        save_validation(import_id, outcome)
    recorded: dict = {"export_columns": json.dumps(outcome.columns)} if outcome.columns else {}
    if outcome.docs_index:
        recorded["data_docs_path"] = str(outcome.docs_index)
    if recorded:  # the columns: what approval compares the next import's with (SPEC §8)
        records.update_import(engine, import_id, **recorded)
    log.info("import %s: validated %d rows; %s", import_id, outcome.read,
             f"file rejected: {outcome.rejection.code}" if outcome.rejection else outcome.problems.severity_summary())
    return {"import_id": import_id, "read": outcome.read,
            "rejected": outcome.rejection.code if outcome.rejection else None}
