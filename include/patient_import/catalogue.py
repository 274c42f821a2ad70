"""The rule catalogue: every problem code of SPEC §3–§4 once, with what the rest of the package
needs to know about it.

Each `Rule` says its code, severity, scope (the whole file or one row), its place in the order that
decides a row's one outcome (SPEC §3), the office-facing message (a `str.format` template; never a
patient value) and, for the codes a Great Expectations suite decides, the expectation that decides
it. `suites.py` writes the suites from here, the stages take their messages from here, the report
and the UI take severities from here, and the README's "Where each rule lives" table lists every
code (a test checks it).

This module sits under everything else: it imports only `schema`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from include.patient_import.schema import ACCOUNT_NUMBER_PATTERN, FIELDS, REQUIRED_FIELDS


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Scope(StrEnum):
    FILE = "file"  # the problem is about the whole export (`row` is null); the import is rejected
    ROW = "row"  # the problem is about one row


# The suites in `expectations/` (one JSON file each).
EXPORT_COLUMNS = "export_columns"
PATIENT_ROWS = "patient_rows"
REJECTED_SHARE = "rejected_share"
PRACTICE_CAPACITY = "practice_capacity"
SUITE_NAMES: tuple[str, ...] = (EXPORT_COLUMNS, PATIENT_ROWS, REJECTED_SHARE, PRACTICE_CAPACITY)

# Columns the rules derive for the suites (see rules.check_frame and rules.decide_outcomes).
ACCOUNT_DATA_VARIANTS = "account_data_variants"  # distinct normalised rows sharing the account number
EARLIER_COPIES = "earlier_copies"  # identical rows above this one
REJECTED = "rejected"  # 1 when a row error applies
IS_NEW = "is_new"  # 1 when the row would insert a patient
CAPACITY_REMAINING = "capacity_remaining"  # the `practice_capacity` suite's runtime parameter

# The codes (SPEC §4; the README's "Problem codes" lists those added to it).
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
IMPORT_FAILED = "import_failed"
EXPORT_FILE_NOT_ALLOWED = "export_file_not_allowed"
MISSING_REQUIRED_FIELD = "missing_required_field"
INVALID_ACCOUNT_NUMBER = "invalid_account_number"
DUPLICATE_ACCOUNT_NUMBER = "duplicate_account_number"
DUPLICATE_ROW = "duplicate_row"
INACTIVE_WITHOUT_DRIP_EDUCATION = "inactive_without_drip_education"
NOT_ON_PAYMENT_PLAN_LIST = "not_on_payment_plan_list"
OLDER_THAN_STORED = "older_than_stored"
ZIP_PADDED = "zip_padded"
UNKNOWN_COLUMN = "unknown_column"
LARGE_IMPORT_FOR_PAYMENT_PLAN_PRACTICE = "large_import_for_payment_plan_practice"
TEXT_REPAIRED = "text_repaired"
EXPORT_DATE_FROM_LANDING_TIME = "export_date_from_landing_time"
UPLOAD_OVERWRITES_NEWER_DATA = "upload_overwrites_newer_data"
POSSIBLE_DUPLICATE_PATIENT = "possible_duplicate_patient"
NOT_APPROVED = "not_approved"
APPROVAL_TIMED_OUT = "approval_timed_out"
# Why an import waits for approval (SPEC §8): reasons in `imports.approval` and the approver's text,
# never problems of the report (`rules.approval_reasons` decides them).
UPDATES_OVER_SHARE = "updates_over_share"
INSERTS_OVER_LIMIT = "inserts_over_limit"
CAPACITY_NEARLY_FULL = "capacity_nearly_full"
COLUMNS_CHANGED = "columns_changed"
POSSIBLE_DUPLICATES_OVER_LIMIT = "possible_duplicates_over_limit"
APPROVAL_REASON_CODES: tuple[str, ...] = (
    UPDATES_OVER_SHARE, INSERTS_OVER_LIMIT, CAPACITY_NEARLY_FULL, COLUMNS_CHANGED, POSSIBLE_DUPLICATES_OVER_LIMIT)

# SPEC §3 rule 5: more than this share of rejected rows and the file is probably the wrong one.
MAX_REJECTED_SHARE = 0.25


@dataclass(frozen=True)
class Expectation:
    """One expectation of a suite; its `meta` names the code (and field) it decides."""

    suite: str
    type: str
    kwargs: dict[str, Any]
    field: str | None = None


@dataclass(frozen=True)
class Rule:
    """One problem code. For the codes the reader decides while parsing a file (file type,
    encoding, limits), `message` says what the code means and each case says what the reader met
    and how to fix it."""

    code: str
    severity: Severity
    scope: Scope
    message: str  # office-facing template; `{...}` holds figures, headers or field names only
    spec: str = ""  # where the rule comes from (SPEC section, or README "Problem codes" for added ones)
    expectations: tuple[Expectation, ...] = field(default_factory=tuple)
    # Messages for the cases of a code the office fixes differently, by case name; `message` is the
    # one for any other case.
    cases: tuple[tuple[str, str], ...] = ()

    def format(self, case: str | None = None, **values: Any) -> str:
        template = dict(self.cases)[case] if case is not None else self.message
        return template.format(**values)


# What the office does about a file it cannot use (ends several messages below).
_DROP_AGAIN = "save the patient list as CSV (or .xlsx) and drop it again"
_SAVE_AS = 'save it again in Excel as "CSV UTF-8 (Comma delimited)" and drop it again'
# A workbook whose first sheet holds no list: the same message, and which sheets there are.
_FIRST_SHEET_ONLY = ("{message}; the workbook's sheets are {sheets} and only the first is read: move the "
                     "patient list to the first sheet")
# What an `export_file` (a run's conf, `make import`) may not be, by case (SPEC §7; boundaries.py).
_EXPORT_FILE_REFUSALS: tuple[tuple[str, str], ...] = tuple((case, "export_file {given!r} " + why) for case, why in (
    ("empty", "must be an absolute path or a storage URL"),
    ("not_a_path", "is not a path"),
    ("no_scheme", "is neither a path nor a storage URL"),
    ("relative", "must be an absolute path"),
    ("outside_roots", "is not under a root listed in PATIENT_IMPORT_EXPORT_ROOTS"),
    ("system_file", "is a system file"),
    ("patient_store", "is the patient store"),
    ("airflow_home", "is inside Airflow's home"),
    ("registry", "is the practice registry"),
    ("file_areas", "is inside the file areas (only the practice's own inbox, archive and quarantine may be "
                   "re-run)"),
    ("hard_links", "has several hard links"),
    ("remote", "uses {scheme}://, which is never read"),
    ("not_plain", "is not a plain object path"),
    ("unsafe", "{reason}"),  # the file turned unsafe while it was read (files.UnsafeFile says how)
))


def _rules() -> Iterator[Rule]:
    ERR, WARN, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO
    FILE, ROW = Scope.FILE, Scope.ROW
    # --- file-level errors (row = null); the reader's cases say what it met and how to fix it.
    yield Rule(UNSUPPORTED_FILE_TYPE, ERR, FILE, "this is {what}, not a patient export", "§4", cases=(
        ("looks_like", "this is {what}, not a patient export; " + _DROP_AGAIN),
        ("nul_line", "this is binary data (line {line} holds NUL bytes), not a patient export; " + _DROP_AGAIN),
        ("named_xlsx", "this is not a valid Excel workbook: it is {what}, not a patient export; " + _DROP_AGAIN),
    ))
    yield Rule(UNREADABLE_FILE, ERR, FILE, "the file cannot be read", "§4", cases=(
        ("damaged_xlsx", "this .xlsx workbook is damaged or incomplete and cannot be opened; " + _DROP_AGAIN),
        ("damaged_zip", "this zip archive is damaged or incomplete and cannot be opened; " + _DROP_AGAIN),
        ("damaged_workbook", "the workbook is damaged and cannot be read; " + _DROP_AGAIN),
        ("lying_part", "the workbook part {part!r} does not hold what its zip entry declares; the file is "
                       "damaged or was made to mislead"),
        ("not_valid_text", "the file is not valid {encoding} text"),
        ("mixed_utf8", "the file starts with the UTF-8 mark but line {line} is not UTF-8 (it mixes text "
                       "encodings); " + _SAVE_AS),
        ("bad_utf16", "the file starts like UTF-16 text but is not valid UTF-16"),
        ("garbled", "line {line} holds letters that read as garbled text in every encoding Excel writes "
                    "(best: {best}); " + _SAVE_AS),
        ("ambiguous", "line {line} reads as different letters in {best} and in {other}, and nothing in the "
                      "file tells which is meant; " + _SAVE_AS),
        ("unclosed_quote", "row {row} runs over several lines and more than {longest} characters; a quote is "
                           "probably never closed"),
        ("blank_line", "line {row} holds more than {longest} characters of blank space"),
        ("quoting", "row {row}: the quoting is broken ({error}); a quote is probably never closed or is "
                    "followed by text"),
        ("value_over_lines", "row {row}: the value in column {label!r} runs over {lines} lines and {length} "
                             "characters; a quote is probably never closed"),
        ("blank_lines_first", "the first {blank} lines are blank; the header must be the first line with text, "
                              "within the first {within}"),
        ("row_too_wide", "row {row} has {values} values but the header has {width} columns"),
        ("header_below_title", "row {row} has {values} values but the header has {width} columns; row {row} "
                               "looks like the header: delete the lines above it and drop the file again"),
    ))
    yield Rule(EMPTY_FILE, ERR, FILE, "the file is empty", "§4", cases=(
        ("zero_bytes", "the file is empty (0 bytes)"),
        ("blank_rows", "the file holds no data, only blank rows"),
        ("first_sheet", "the first sheet of the workbook is empty"),
        ("first_sheet_only", _FIRST_SHEET_ONLY),
    ))
    yield Rule(NO_DATA_ROWS, ERR, FILE, "the file has a header but no patient rows", "§4", cases=(
        ("first_sheet_only", _FIRST_SHEET_ONLY),
    ))
    yield Rule(MISSING_REQUIRED_COLUMNS, ERR, FILE, "{where} has no column for: {missing} (required)", "§4",
               (Expectation(EXPORT_COLUMNS, "expect_table_columns_to_match_set",
                            {"column_set": list(REQUIRED_FIELDS), "exact_match": False}),),
               cases=(
                   # `unit`: "row" in a workbook, "line" in a text file.
                   ("header_below", "{where} has no column for: {missing} (required); {unit} {number} looks like "
                                    "the header ({headers}): delete the {unit}s above it and drop the file again"),
                   ("other_sheets", "{where} has no column for: {missing} (required); the workbook's sheets are "
                                    "{sheets} and only the first is read: move the patient list to the first "
                                    "sheet (or save that sheet alone as CSV) and drop it again"),
               ))
    yield Rule(DUPLICATE_COLUMNS, ERR, FILE, "two columns map to the same field", "§4", cases=(
        ("headers", "columns {first!r} and {second!r} both map to the field {field}; keep one of them"),
    ))
    yield Rule(FILE_TOO_LARGE, ERR, FILE,
               "the file is {size_mb:.1f} MB; the limit is {limit_mb:.1f} MB; it was neither archived nor "
               "quarantined", "§7", cases=(
                   ("read", "the file is {size_mb:.1f} MB; the limit is {limit_mb:.1f} MB"),
                   ("unpacked", "the workbook unpacks to {size_mb:.1f} MB; the limit is {limit_mb:.1f} MB"),
                   ("ratio", "the workbook part {part!r} unpacks to {ratio} times its size: this is not a normal "
                             "workbook"),
                   ("zip_entries", "the zip holds {entries} entries ({directory_mb:.1f} MB of directory); a "
                                   "workbook holds a few dozen and the limit is {limit}"),
                   ("xml_comment", "the workbook part {part!r} holds more than {limit_mb:.1f} MB of XML in a "
                                   "comment; this is not a normal workbook"),
                   ("xml_piece", "the workbook part {part!r} holds more than {limit_mb:.1f} MB of XML in one "
                                 "piece; this is not a normal workbook"),
                   # `part`: the styles, content list, list of sheets or list of parts.
                   ("small_part", "the workbook's {part} ({member!r}) is {size_mb:.1f} MB; a workbook's is a "
                                  "few KB and the limit is {limit_mb:.1f} MB"),
                   ("grid", "the first sheet's cells reach row {rows}, a range far larger than the data it holds "
                            "(stray cells far below or right of the list?); delete them and save again"),
                   ("grid_wide", "the first sheet's cells reach row {rows} and column {columns}, a range far "
                                 "larger than the data it holds (stray cells far below or right of the list?); "
                                 "delete them and save again"),
                   ("sheet_text", "the first sheet's cells hold {size_mb:.1f} MB of text (shared strings "
                                  "repeated); as a CSV file that is over the limit of {limit_mb:.1f} MB"),
                   ("sheet_memory", "reading the first sheet would take about {size_mb:.1f} MB of memory; the "
                                    "limit is {limit_mb:.1f} MB (fewer rows, columns or distinct values fit)"),
                   ("shared_strings", "the workbook lists more than {limit} distinct values; the limit is {limit}"),
               ))
    yield Rule(TOO_MANY_COLUMNS, ERR, FILE, "the file has more columns than the limit of {limit}", "§7", cases=(
        ("record", "row {row} has more than {columns} columns in its first {longest} characters; the limit is "
                   "{limit}"),
        ("header", "the header has {columns} columns; the limit is {limit}"),
        ("used", "the file has {columns} columns holding a header or a value; the limit is {limit}"),
        ("sheet", "the first sheet has cells up to column {columns}; the limit is {limit}"),
    ))
    yield Rule(FIELD_TOO_LONG, ERR, FILE, "a cell holds more than {limit} characters of text", "§7", cases=(
        ("record", "row {row} is more than {longest} characters long: a value is longer than the limit of "
                   "{limit}"),
        ("csv_limit", "row {row}: a value is more than {limit} characters long"),
        ("header", "the header of column {column} is {length} characters long; the limit is {limit}"),
        ("value", "row {row}: the value in column {label!r} is {length} characters long; the limit is {limit}"),
        ("workbook_cell", "a cell of the workbook holds more than {limit_mb:.1f} MB of text"),
    ))
    yield Rule(TOO_MANY_ROWS, ERR, FILE, "the file has more rows than the limit of {limit}", "§7", cases=(
        ("rows", "the file has more than {limit} data rows (the limit)"),
    ))
    yield Rule(UNKNOWN_PRACTICE, ERR, FILE, "unknown practice", "§3", cases=(
        ("not_an_id", "practice id {given!r} is not letters, digits and underscores (at most {max_length}); "
                      "known practices: {known}"),
        ("not_registered", "practice {given!r} is not in the practice registry; known practices: {known}"),
    ))
    yield Rule(EXPORT_DATE_IN_FUTURE, ERR, FILE, "the export date {exported_on} is in the future", "§3 rule 7",
               cases=(("conf", "exported_on {exported_on} is in the future"),))
    yield Rule(CAPACITY_EXCEEDED, ERR, FILE,
               "importing {new} new patients would exceed the practice's capacity of {capacity} "
               "({stored} stored; {overflow} over)", "§3 rule 1",
               (Expectation(PRACTICE_CAPACITY, "expect_column_sum_to_be_between",
                            {"column": IS_NEW, "min_value": 0, "max_value": {"$PARAMETER": CAPACITY_REMAINING}}),))
    yield Rule(EXISTING_PATIENTS_WITHOUT_ACCOUNT_NUMBER, ERR, FILE,
               "the practice has stored patients without an account number; importing would create "
               "duplicates of them. Give them their Genesis account numbers first.", "§3 rule 4")
    yield Rule(TOO_MANY_REJECTED_ROWS, ERR, FILE,
               "{rejected} of {read} rows ({share:.0%}) were rejected; more than a quarter "
               "means this is probably not the right file", "§3 rule 5",
               (Expectation(REJECTED_SHARE, "expect_column_mean_to_be_between",
                            {"column": REJECTED, "min_value": 0, "max_value": MAX_REJECTED_SHARE}),))
    yield Rule(IMPORT_FAILED, ERR, FILE, "{reason}", "README \"Problem codes\"", cases=(
        ("quarantined", "the export failed {failures} times and was quarantined; it is imported again only "
                        "when re-run explicitly"),
        ("not_completed", "the import did not complete (an infrastructure fault that retries could not "
                          "overcome); no patient changed. Re-run it after the fault is fixed."),
        ("store_unreachable", "the patient store could not be reached to finish the import"),
    ))
    yield Rule(EXPORT_FILE_NOT_ALLOWED, ERR, FILE, "{reason}", "README \"Problem codes\"; §7",
               cases=_EXPORT_FILE_REFUSALS)
    yield Rule(NOT_APPROVED, ERR, FILE,
               "the import waited for approval ({reasons}) and {who} rejected it; no patient was changed",
               "§8 Approval",
               cases=(("unanswered", "the import waited for approval ({reasons}) and its load ran without an "
                                     "answer (the approval step was skipped or marked done by hand); no patient "
                                     "was changed. Import the file again to ask again"),))
    yield Rule(APPROVAL_TIMED_OUT, ERR, FILE,
               "the import waited for approval ({reasons}) and nobody answered within {hours:g} hours; "
               "no patient was changed. Import the file again to ask again", "§8 Approval")
    # --- why an import waits for approval (info about the whole file; figures and field names only).
    yield Rule(UPDATES_OVER_SHARE, INFO, FILE,
               "would update {updated} of the {stored} stored patients ({share:.0%}; more than {limit:.0%} waits)",
               "§8 Approval")
    yield Rule(INSERTS_OVER_LIMIT, INFO, FILE, "would insert {inserted} new patients (more than {limit} waits)",
               "§8 Approval")
    yield Rule(CAPACITY_NEARLY_FULL, INFO, FILE,
               "would leave {left} of the practice's capacity of {capacity} free ({share:.1%}; less than "
               "{limit:.0%} waits)", "§8 Approval",
               cases=(("after_earlier", "would leave {left} of the practice's capacity of {capacity} free "
                                        "({share:.1%}; less than {limit:.0%} waits), counting the {earlier} new "
                                        "patients of the practice's imports before it in this run"),))
    yield Rule(COLUMNS_CHANGED, INFO, FILE,
               "the export's columns differ from the last completed import's ({previous_import}): "
               "{added_count} added ({added}), {removed_count} removed ({removed})", "§8 Approval")
    yield Rule(POSSIBLE_DUPLICATES_OVER_LIMIT, INFO, FILE,
               "{possible_duplicates} possible duplicate patients (more than {limit} waits)", "§8 Approval")
    # --- row errors and skips, in the order that decides a row's one outcome (SPEC §3).
    yield Rule(MISSING_REQUIRED_FIELD, ERR, ROW, "{header} is required", "§3 rule 5",
               tuple(Expectation(PATIENT_ROWS, "expect_column_values_to_not_be_null", {"column": name}, name)
                     for name in REQUIRED_FIELDS))
    yield Rule(INVALID_ACCOUNT_NUMBER, ERR, ROW,
               "the account number is not a whole number (it holds a decimal point, a sign or other "
               "characters); it must be digits only", "§3 rule 5",
               (Expectation(PATIENT_ROWS, "expect_column_values_to_match_regex",
                            {"column": "account_number", "regex": ACCOUNT_NUMBER_PATTERN}, "account_number"),),
               cases=(
                   ("scientific", "the account number is in scientific notation (like 1.23E+11): Excel turned a "
                                  "long number into it and lost digits; type the full account number"),
                   ("header", "the row repeats the header line (a header copied again below the first); "
                              "delete the row"),
                   ("date", "the account number looks like a date (like 2-Mar): Excel turned the number into a "
                            "date; format the column as Text and type the account number again"),
                   ("footer", "the row is a line of text such as a total or a footer (like \"Total Patients\"), "
                              "not a patient; delete it"),
                   ("letters", "the account number holds letters; it must be digits only"),
                   ("too_long", "the account number has more than {digits} digits"),
               ))
    yield Rule(DUPLICATE_ACCOUNT_NUMBER, ERR, ROW,
               "another row of the file has this account number with different data; neither is imported",
               "§3 rule 5",
               (Expectation(PATIENT_ROWS, "expect_column_values_to_be_between",
                            {"column": ACCOUNT_DATA_VARIANTS, "max_value": 1}, "account_number"),))
    yield Rule(DUPLICATE_ROW, INFO, ROW, "identical to an earlier row of the file; imported once", "§3 rule 5",
               (Expectation(PATIENT_ROWS, "expect_column_values_to_be_between",
                            {"column": EARLIER_COPIES, "max_value": 0}, "account_number"),))
    yield Rule(INACTIVE_WITHOUT_DRIP_EDUCATION, INFO, ROW,
               "new inactive patient skipped: the practice does not use Drip-Education", "§3 rule 2")
    yield Rule(NOT_ON_PAYMENT_PLAN_LIST, INFO, ROW,
               "skipped: the account is not on the practice's payment-plan list", "§3 rule 3")
    yield Rule(OLDER_THAN_STORED, INFO, ROW, "skipped: the patient was already updated from a newer export",
               "§3 rule 7")
    # --- warnings
    yield Rule(ZIP_PADDED, WARN, ROW, "zip had lost its leading zeros to Excel; padded with zeros", "§2")
    yield Rule(UNKNOWN_COLUMN, WARN, FILE, "column {label!r} is not a patient field and is ignored", "§2; §8",
               cases=(("suggestion", "column {label!r} is not a patient field and is ignored; did you mean "
                                     "\"{suggestion}\"? (rename the column, or add it to the practice's "
                                     "column_aliases)"),))
    yield Rule(LARGE_IMPORT_FOR_PAYMENT_PLAN_PRACTICE, WARN, FILE,
               "{new} new patients for a practice that uses only payment-plan systems and keeps "
               "no payment_plan_accounts list (more than {limit})", "§3 rule 3")
    yield Rule(TEXT_REPAIRED, WARN, ROW,
               "{label} had been garbled by reading its text in the wrong encoding (as Ã© for é); repaired",
               "README \"Problem codes\"")
    yield Rule(EXPORT_DATE_FROM_LANDING_TIME, WARN, FILE,
               "neither the run nor the file name gave the export date; the day the file landed "
               "({exported_on}) was used. Give the run an export date, or name the file with it "
               "(e.g. 'Patients 2026-11-25.csv'), when the file was exported on another day",
               "README \"Problem codes\"; §6")
    yield Rule(UPLOAD_OVERWRITES_NEWER_DATA, WARN, FILE,
               "{older} rows are older than what the store holds (older_than_stored): uploading {upload} "
               "to Cash Practice would overwrite their newer data there.", "README \"Problem codes\"; §3 rule 7",
               cases=(("every_row", "every row is older than what the store holds ({older} rows older_than_stored): "
                       "this export of {exported_on} is older than the data already imported, and uploading "
                       "{upload} to Cash Practice would overwrite newer data there. Do not upload it."),))
    yield Rule(POSSIBLE_DUPLICATE_PATIENT, WARN, ROW,
               "new patient with the same first name, last name and birth date as account {accounts}: "
               "possibly the same person under two account numbers; imported, nothing merged", "§8",
               cases=(("several", "new patient with the same first name, last name and birth date as accounts "
                                  "{accounts}: possibly the same person under several account numbers; imported, "
                                  "nothing merged"),
                      ("more", "new patient with the same first name, last name and birth date as accounts "
                               "{accounts} and {more} more: possibly the same person under several account "
                               "numbers; imported, nothing merged")))
    # An optional value that was left out: one code per field whose normaliser can refuse a value.
    for f in FIELDS:
        if f.kind in INVALID_REASONS:
            yield Rule(invalid_code(f.name), WARN, ROW, "{label} " + INVALID_REASONS[f.kind], "§2")


# Why a value of each field kind was refused (the `invalid_<field>` warnings).
INVALID_REASONS: dict[str, str] = {
    "zip": "is not a 5-digit ZIP or ZIP+4; left out",
    "phone": "is not a valid US number; left out",
    "email": "is not a valid e-mail address; left out",
    "state": "is not a USPS state code or state name; left out",
    "birth_date": "is not a date, is in the future or is more than 120 years ago; left out",
    "date": "is not a date or is in the future; left out",
    "gender": "is not M, F, X or U; left out",
    "status": "is not Active or Inactive; imported as active",
}


def invalid_code(field_name: str) -> str:
    """The warning for an optional value that was left out (`invalid_email`, ...)."""
    return f"invalid_{field_name}"


def field_label(field_name: str) -> str:
    """A field's name as a message says it (`home phone`)."""
    return field_name.replace("_", " ")


def _once(rules: Iterator[Rule]) -> dict[str, Rule]:
    """The rules by code; a code written twice is an error, not a silent override."""
    found: dict[str, Rule] = {}
    for rule in rules:
        if rule.code in found:
            raise ValueError(f"problem code {rule.code!r} is in the catalogue twice")
        found[rule.code] = rule
    return found


RULES: dict[str, Rule] = _once(_rules())

# The order that decides a row's one outcome (SPEC §3): row errors, then skips.
PRECEDENCE: tuple[str, ...] = (
    MISSING_REQUIRED_FIELD, INVALID_ACCOUNT_NUMBER, DUPLICATE_ACCOUNT_NUMBER,
    DUPLICATE_ROW, INACTIVE_WITHOUT_DRIP_EDUCATION, NOT_ON_PAYMENT_PLAN_LIST, OLDER_THAN_STORED,
)
ROW_ERROR_CODES: tuple[str, ...] = tuple(c for c in PRECEDENCE if RULES[c].severity is Severity.ERROR)
SKIP_CODES: tuple[str, ...] = tuple(c for c in PRECEDENCE if RULES[c].severity is Severity.INFO)
FILE_ERROR_CODES: frozenset[str] = frozenset(
    c for c, r in RULES.items() if r.scope is Scope.FILE and r.severity is Severity.ERROR)


def rule(code: str) -> Rule:
    """The catalogue entry of a code; KeyError for a code the catalogue does not hold."""
    return RULES[code]


def message(code: str, case: str | None = None, **values: Any) -> str:
    """The office-facing message of `code` (of one of its `cases`), its template filled with `values`."""
    return RULES[code].format(case, **values)


def severity_of(code: str) -> Severity:
    """A code's severity; a code outside the catalogue is a warning."""
    known = RULES.get(code)
    return known.severity if known else Severity.WARNING


def rank(code: str) -> int:
    """A row code's place in the precedence (0 decides first)."""
    return PRECEDENCE.index(code)


def expectations(suite: str) -> list[tuple[str, Expectation]]:
    """(code, expectation) of one suite, in catalogue order."""
    return [(r.code, e) for r in RULES.values() for e in r.expectations if e.suite == suite]
