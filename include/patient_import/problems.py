"""Outcome and problem codes of SPEC §3–§4, and the domain exceptions that carry them.

Messages never hold patient values: a row is identified by its row number and account number.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Status(StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    REJECTED = "rejected"
    FAILED = "failed"


# Row outcomes; every row read ends in exactly one (SPEC §4).
INSERTED, UPDATED, UNCHANGED, SKIPPED, REJECTED = "inserted", "updated", "unchanged", "skipped", "rejected"
OUTCOMES: tuple[str, ...] = (INSERTED, UPDATED, UNCHANGED, SKIPPED, REJECTED)

# File-level errors (row = null).
UNSUPPORTED_FILE_TYPE = "unsupported_file_type"
UNREADABLE_FILE = "unreadable_file"
EMPTY_FILE = "empty_file"
NO_DATA_ROWS = "no_data_rows"
MISSING_REQUIRED_COLUMNS = "missing_required_columns"
DUPLICATE_COLUMNS = "duplicate_columns"
FILE_TOO_LARGE = "file_too_large"
TOO_MANY_COLUMNS = "too_many_columns"
FIELD_TOO_LONG = "field_too_long"
TOO_MANY_ROWS = "too_many_rows"
UNKNOWN_PRACTICE = "unknown_practice"
EXPORT_DATE_IN_FUTURE = "export_date_in_future"
CAPACITY_EXCEEDED = "capacity_exceeded"
EXISTING_PATIENTS_WITHOUT_ACCOUNT_NUMBER = "existing_patients_without_account_number"
TOO_MANY_REJECTED_ROWS = "too_many_rejected_rows"
# Added (README, "Problem codes"): an infrastructure fault that retries could not overcome.
IMPORT_FAILED = "import_failed"
# Added (README, "Problem codes"; SPEC §7): a run's `export_file` outside the allowed roots. It fails
# the run before anything is read or copied, so it never appears in an import's report.
EXPORT_FILE_NOT_ALLOWED = "export_file_not_allowed"

# Row errors and skips, in the order that decides a row's one outcome (SPEC §3).
MISSING_REQUIRED_FIELD = "missing_required_field"
INVALID_ACCOUNT_NUMBER = "invalid_account_number"
DUPLICATE_ACCOUNT_NUMBER = "duplicate_account_number"
DUPLICATE_ROW = "duplicate_row"
INACTIVE_WITHOUT_DRIP_EDUCATION = "inactive_without_drip_education"
NOT_ON_PAYMENT_PLAN_LIST = "not_on_payment_plan_list"
OLDER_THAN_STORED = "older_than_stored"

ROW_ERROR_CODES: tuple[str, ...] = (MISSING_REQUIRED_FIELD, INVALID_ACCOUNT_NUMBER, DUPLICATE_ACCOUNT_NUMBER)
SKIP_CODES: tuple[str, ...] = (
    DUPLICATE_ROW, INACTIVE_WITHOUT_DRIP_EDUCATION, NOT_ON_PAYMENT_PLAN_LIST, OLDER_THAN_STORED,
)
PRECEDENCE: tuple[str, ...] = ROW_ERROR_CODES + SKIP_CODES

# Warnings.
ZIP_PADDED = "zip_padded"
UNKNOWN_COLUMN = "unknown_column"
LARGE_IMPORT_FOR_PAYMENT_PLAN_PRACTICE = "large_import_for_payment_plan_practice"
# Added (README, "Problem codes"): a name or address decoded twice before it reached us, repaired.
TEXT_REPAIRED = "text_repaired"
# Added (README, "Problem codes"; SPEC §6): neither the run's conf nor the file name gave the export
# date; the day the file landed was used.
EXPORT_DATE_FROM_LANDING_TIME = "export_date_from_landing_time"
# Added (README, "Problem codes"; SPEC §3 rule 7): rows of the upload file are older than what the
# store holds (`older_than_stored`); uploading the file would overwrite newer data in Cash Practice.
UPLOAD_OVERWRITES_NEWER_DATA = "upload_overwrites_newer_data"


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


def invalid_code(field: str) -> str:
    """The warning for an optional value that was left out (`invalid_email`, ...)."""
    return f"invalid_{field}"


def severity_of(code: str) -> Severity:
    if code in SKIP_CODES:
        return Severity.INFO
    if code in ROW_ERROR_CODES or code in FILE_ERROR_CODES:
        return Severity.ERROR
    return Severity.WARNING


FILE_ERROR_CODES: frozenset[str] = frozenset({
    UNSUPPORTED_FILE_TYPE, UNREADABLE_FILE, EMPTY_FILE, NO_DATA_ROWS, MISSING_REQUIRED_COLUMNS,
    DUPLICATE_COLUMNS, FILE_TOO_LARGE, TOO_MANY_COLUMNS, FIELD_TOO_LONG, TOO_MANY_ROWS,
    UNKNOWN_PRACTICE, EXPORT_DATE_IN_FUTURE, CAPACITY_EXCEEDED,
    EXISTING_PATIENTS_WITHOUT_ACCOUNT_NUMBER, TOO_MANY_REJECTED_ROWS, IMPORT_FAILED, EXPORT_FILE_NOT_ALLOWED,
})


_ACCOUNT_NUMBER = re.compile(r"[0-9]{1,32}")


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
