"""The canonical patient fields: one list that feeds the reader, the suites, the store and the upload file."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One canonical field of a Genesis patient export, and its column in the store's `patients`.

    ``kind`` names the normaliser that cleans the value. The store column (``column``, default the
    field's name) is ``VARCHAR(max_length)`` when ``max_length`` is set, ``DATE`` for the date
    kinds, ``TEXT`` otherwise; ``store_default`` makes it NOT NULL with that default. The
    `Patient` model (store.py) is built from these, and tests/patient_import/test_store_schema.py
    holds it to the migrations.
    """

    name: str
    header: str
    aliases: tuple[str, ...] = ()
    required: bool = False
    kind: str = "text"
    max_length: int | None = None
    column: str = ""
    store_default: str | None = None

    def __post_init__(self) -> None:
        if not self.column:
            object.__setattr__(self, "column", self.name)

    @property
    def store_type(self) -> str:
        """`"date"`, `"varchar"` (of `max_length`) or `"text"`."""
        if self.kind in DATE_KINDS:
            return "date"
        return "text" if self.max_length is None else "varchar"


DATE_KINDS = frozenset({"birth_date", "date"})
# An account number: up to this many digits (SPEC §2), the width of its store column.
ACCOUNT_NUMBER_DIGITS = 32
# A valid normalised account number: digits, leading zeros dropped. The `patient_rows` suite
# checks it, and only such a value identifies a row in a problem (no capture group: pandas warns).
ACCOUNT_NUMBER_PATTERN = rf"^(?:0|[1-9][0-9]{{0,{ACCOUNT_NUMBER_DIGITS - 1}}})$"
# The status of a patient whose export leaves it empty (SPEC §2).
ACTIVE = "active"
# Phone extensions are kept apart from the 10 digits (SPEC §2); they are stored, not exported.
EXTENSION_MAX_LENGTH = 10

FIELDS: tuple[Field, ...] = (
    Field("account_number", "Account #", ("Acct #", "Account Number", "Acct No", "Account", "Chart #"),
          required=True, kind="account_number", max_length=ACCOUNT_NUMBER_DIGITS, column="third_party_acct_number"),
    Field("last_name", "Last Name", ("Last", "Surname"), required=True, kind="name"),
    Field("first_name", "First Name", ("First",), required=True, kind="name"),
    Field("middle_initial", "MI", ("Middle Initial", "Middle"), kind="name"),
    Field("address1", "Address", ("Address 1", "Street"), kind="name"),
    Field("address2", "Address 2", ("Apt", "Suite"), kind="name"),
    Field("city", "City", kind="name"),
    Field("state", "State", ("ST",), kind="state", max_length=2),
    Field("zip", "Zip", ("Zip Code", "Postal Code"), kind="zip", max_length=10),
    Field("home_phone", "Home Phone", ("Phone",), kind="phone", max_length=10),
    Field("cell_phone", "Cell Phone", ("Mobile", "Cell"), kind="phone", max_length=10),
    Field("email", "Email", ("E-mail", "Email Address"), kind="email"),
    Field("birth_date", "Birth Date", ("DOB", "Birthdate", "Date of Birth"), kind="birth_date"),
    Field("gender", "Sex", ("Gender",), kind="gender", max_length=1),
    Field("status", "Status", ("Patient Status",), kind="status", max_length=8, store_default=ACTIVE),
    Field("last_visit", "Last Visit", ("Last Visit Date",), kind="date"),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
FIELDS_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

EXTENSION_FIELDS: dict[str, str] = {"home_phone": "home_phone_ext", "cell_phone": "cell_phone_ext"}

# Every stored patient value an export can set: the canonical fields and the phone extensions.
# Here rather than in rules.py (which re-exports it): rules imports pandas, and what only needs the
# column list (the bench's SQL floor, its store digests) should not pay for that.
DATA_COLUMNS: tuple[str, ...] = FIELD_NAMES + tuple(EXTENSION_FIELDS.values())

# Fields stored under another name: the account number is the 3rd-party software account number.
STORE_COLUMN: dict[str, str] = {f.name: f.column for f in FIELDS if f.column != f.name}


def store_columns() -> list[tuple[str, str, int | None, str | None]]:
    """(column, store type, width, default) of every stored patient value, in the store's order:
    the fields, each phone followed by its extension (see `Field.store_type`)."""
    out: list[tuple[str, str, int | None, str | None]] = []
    for f in FIELDS:
        out.append((f.column, f.store_type, f.max_length, f.store_default))
        if f.name in EXTENSION_FIELDS:
            out.append((EXTENSION_FIELDS[f.name], "varchar", EXTENSION_MAX_LENGTH, None))
    return out

# The spreadsheet row a record starts on (SPEC §4): the only way rows are identified outside the store.
ROW_NUMBER = "row_number"

# The column the rejected-rows file adds so the office sees what to fix; recognised and ignored
# when that file is dropped into an inbox again.
PROBLEM_COLUMN = "Import Problem"
# Beside it, the row number the rejected row had in the export it came from (SPEC §5).
ORIGINAL_ROW_COLUMN = "Original Row"


def header_key(header: str) -> str:
    """Case, spaces, punctuation and order do not matter when matching headers (SPEC §2)."""
    return re.sub(r"[^0-9a-z]", "", header.casefold())


HEADER_TO_FIELD: dict[str, str] = {
    header_key(h): f.name for f in FIELDS for h in (f.header, *f.aliases)
}
IGNORED_HEADER_KEYS: frozenset[str] = frozenset({header_key(PROBLEM_COLUMN), header_key(ORIGINAL_ROW_COLUMN)})


def field_for_header(header: str) -> str | None:
    """The canonical field a header maps to, or None for an unknown column (no practice's aliases:
    see `HeaderMap`)."""
    return HEADER_TO_FIELD.get(header_key(header))


# How close an unknown header must be to a known one to be suggested (rapidfuzz's `fuzz.ratio`,
# 0-100, on `header_key`s). 80 keeps one-letter typos of short headers ("Cty", "Sx", "Emial") and
# leaves out other patient-record columns that merely share letters ("Work Phone", "Last Payment",
# "Middle Name", "Account Balance" score 67-77).
SUGGESTION_CUTOFF = 80


@dataclass(frozen=True)
class HeaderMap:
    """Which field each header of one practice's exports maps to: the schema's headers and aliases,
    then the practice's `column_aliases` (SPEC §8), which win over a built-in header of another
    field (a practice whose "Phone" column holds cell phones maps it to `cell_phone`).

    Build it with `HeaderMap.of(aliases)`; `DEFAULT_HEADERS` has no practice aliases.
    """

    by_key: dict[str, str]  # header_key -> field name
    texts: dict[str, str]  # header_key -> the header as written (what a suggestion shows)

    @classmethod
    def of(cls, aliases: Iterable[tuple[str, str]] = ()) -> HeaderMap:
        """The map with a practice's (header, field name) aliases; the names are not checked here
        (practices.py checks them when the registry is read)."""
        by_key = dict(HEADER_TO_FIELD)
        texts = {header_key(h): h for f in FIELDS for h in (f.header, *f.aliases)}
        for header, name in aliases:
            by_key[header_key(header)] = name
            texts[header_key(header)] = header
        return cls(by_key, texts)

    def field(self, header: str) -> str | None:
        """The canonical field a header maps to, or None for an unknown column."""
        return self.by_key.get(header_key(header))

    def suggestion(self, header: str, taken: Iterable[str] = ()) -> str | None:
        """The known header closest to an unknown one (`did you mean "Home Phone"?`), or None when
        none is close (`SUGGESTION_CUTOFF`) or the closest maps to a field another column of the
        file already fills (`taken`: field names). A typo keeps its first letter: a header starting
        otherwise is not suggested ("Mailing Address" is not "Email Address")."""
        # rapidfuzz, a maintained fuzzy-matching library (house rules), imported here: the registry
        # and the DAG files import this module and need no fuzzy matching.
        from rapidfuzz import fuzz, process

        key = header_key(header)
        if not key:
            return None
        taken = set(taken)
        choices = [k for k, name in self.by_key.items() if name not in taken and k[:1] == key[:1]]
        found = process.extractOne(key, choices, scorer=fuzz.ratio, score_cutoff=SUGGESTION_CUTOFF)
        return self.texts[found[0]] if found else None


DEFAULT_HEADERS = HeaderMap.of()


# The Cash Practice importer refuses a file whose first row is not this header (SPEC §5).
# Each column is filled from a store field; ClientID is Cash Practice's own id.
UPLOAD_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("ClientID", None),
    ("TPSID", "account_number"),
    ("Email", "email"),
    ("FirstName", "first_name"),
    ("LastName", "last_name"),
    ("Address", "address1"),
    ("City", "city"),
    ("State", "state"),
    ("Zip", "zip"),
    ("Phone", "home_phone"),
    ("WorkPhone", None),
    ("Cell", "cell_phone"),
)

# Columns a practice may add after the fixed ones with `upload_extra_columns`.
UPLOAD_EXTRA_COLUMNS: dict[str, str] = {
    "MiddleInitial": "middle_initial",
    "Address2": "address2",
    "BirthDate": "birth_date",
    "Gender": "gender",
    "Status": "status",
    "LastVisit": "last_visit",
    "HomePhoneExt": "home_phone_ext",
    "CellPhoneExt": "cell_phone_ext",
}
