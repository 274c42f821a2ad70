"""Outcomes of SPEC §3–§4, the problems an import lists, and the domain exceptions that carry them.

The codes, their severities and the precedence are the rule catalogue's (`catalogue.py`), re-exported
here for the stages. Messages never hold patient values: a row is identified by its row number and
account number.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import StrEnum

# The codes, for `p.<CODE>` in the stages.
from include.patient_import.catalogue import (  # noqa: F401 - re-exported
    APPROVAL_TIMED_OUT,
    CAPACITY_EXCEEDED,
    DUPLICATE_ACCOUNT_NUMBER,
    DUPLICATE_COLUMNS,
    DUPLICATE_ROW,
    EMPTY_FILE,
    EXISTING_PATIENTS_WITHOUT_ACCOUNT_NUMBER,
    EXPORT_DATE_FROM_LANDING_TIME,
    EXPORT_DATE_IN_FUTURE,
    EXPORT_FILE_NOT_ALLOWED,
    FIELD_TOO_LONG,
    FILE_ERROR_CODES,
    FILE_TOO_LARGE,
    IMPORT_FAILED,
    INACTIVE_WITHOUT_DRIP_EDUCATION,
    INVALID_ACCOUNT_NUMBER,
    LARGE_IMPORT_FOR_PAYMENT_PLAN_PRACTICE,
    MISSING_REQUIRED_COLUMNS,
    MISSING_REQUIRED_FIELD,
    NO_DATA_ROWS,
    NOT_APPROVED,
    NOT_ON_PAYMENT_PLAN_LIST,
    OLDER_THAN_STORED,
    POSSIBLE_DUPLICATE_PATIENT,
    PRECEDENCE,
    ROW_ERROR_CODES,
    SKIP_CODES,
    TEXT_REPAIRED,
    TOO_MANY_COLUMNS,
    TOO_MANY_REJECTED_ROWS,
    TOO_MANY_ROWS,
    UNKNOWN_COLUMN,
    UNKNOWN_PRACTICE,
    UNREADABLE_FILE,
    UNSUPPORTED_FILE_TYPE,
    UPLOAD_OVERWRITES_NEWER_DATA,
    ZIP_PADDED,
    Severity,
    invalid_code,
    severity_of,
)
from include.patient_import.schema import ACCOUNT_NUMBER_PATTERN

# The columns of a listed problem, as a report, the store and a ProblemTable name them (SPEC §6).
PROBLEM_COLUMNS: tuple[str, ...] = ("row", "account_number", "field", "code", "severity", "message")


class Status(StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    REJECTED = "rejected"
    FAILED = "failed"
    UNDONE = "undone"  # a completed import taken back (SPEC §8, undo.py)


# Row outcomes; every row read ends in exactly one (SPEC §4).
INSERTED, UPDATED, UNCHANGED, SKIPPED, REJECTED = "inserted", "updated", "unchanged", "skipped", "rejected"
OUTCOMES: tuple[str, ...] = (INSERTED, UPDATED, UNCHANGED, SKIPPED, REJECTED)


@dataclass(frozen=True)
class Counts:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    rejected: int = 0

    @classmethod
    def of(cls, outcomes) -> "Counts":
        """From a pandas Series of row outcomes."""
        tally = outcomes.value_counts()
        return cls(read=len(outcomes), **{o: int(tally.get(o, 0)) for o in OUTCOMES})

    @classmethod
    def all_rejected(cls, read: int) -> "Counts":
        return cls(read=read, rejected=read)

    def as_dict(self) -> dict[str, int]:
        return {"read": self.read, "inserted": self.inserted, "updated": self.updated,
                "unchanged": self.unchanged, "skipped": self.skipped, "rejected": self.rejected}


# Only a valid account number identifies a row (SPEC §4).
_ACCOUNT_NUMBER = re.compile(ACCOUNT_NUMBER_PATTERN)


@dataclass(frozen=True)
class Problem:
    """One line of the report's `problems`. `row` is None for a problem about the whole file."""

    code: str
    message: str
    row: int | None = None
    account_number: str | None = None
    field: str | None = None
    severity: str = ""

    def __post_init__(self) -> None:
        if not self.severity:
            object.__setattr__(self, "severity", str(severity_of(self.code)))
        if self.account_number is not None and not _ACCOUNT_NUMBER.fullmatch(self.account_number):
            # Only a valid account number identifies a row; an invalid one is whatever the cell
            # held (a name, a whole row split on the wrong delimiter) and must not reach a report.
            object.__setattr__(self, "account_number", None)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in ("row", "account_number", "field", "code", "severity", "message")}

    def sort_key(self) -> tuple:
        # Report order (SPEC §4): by row (file problems first), then field.
        return (self.row is not None, self.row or 0, self.field or "", self.code)


class ExportRejected(Exception):
    """A file-level rule rejected the whole export; no patient may change.

    Carries the problem code (SPEC §4), a message without patient values, and where relevant
    the row number and figures (e.g. capacity) for the report.
    """

    def __init__(self, code: str, message: str, *, row: int | None = None,
                 field: str | None = None, details: dict | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.row = row
        self.field = field
        self.details = dict(details or {})
        if row is not None:
            self.details.setdefault("row", row)

    def problem(self) -> Problem:
        # A file-level problem has `row: null` (SPEC §4); where the file broke is in the message
        # and, for the report's `details`, in details["row"].
        return Problem(code=self.code, message=self.message, field=self.field)


class ConfigurationError(Exception):
    """A setting or the practice registry is wrong: an operator must fix it, retries will not."""


class InputRefused(ConfigurationError):
    """A run's conf or `make import` named something it may not (SPEC §7): the run fails before any
    task reads or copies a file. `str()` is `"<code>: <message>"`; the message holds no patient value
    and shows outside-world text only through `untrusted.printable`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
