"""Clean every value of an export and undo the damage Excel did to it (SPEC §2, "Values").

One normaliser per field ``kind`` of :mod:`include.patient_import.schema`, each usable on a single
string. :func:`normalize_export` applies them to a whole frame, calling each normaliser once per
distinct value (exports repeat cities, states, dates and statuses endlessly) and taking a
vectorised path for clean phone numbers, plain e-mails and dates in the common exact formats
(:func:`normalize_dates`), so a million rows stay cheap.

An invalid optional value is left out with an ``invalid_<field>`` warning; nothing here rejects a
row. Required fields and account-number validity are decided later (the Great Expectations suite
flags a non-digit account number; ``missing_required_field`` is decided on the result).

Decisions the spec leaves open:

- **Two-digit years** (``m/d/yy``): ``yy`` is 20yy unless that whole date is after ``today``,
  then 19yy (SPEC §2). Read on 2026-11-30, ``12/15/26`` is 1926-12-15 and ``11/30/26`` 2026-11-30.
- **Excel serial day numbers** are numbers from 1 to 2,958,465 (1900 date system, day 0 =
  1899-12-30, so 2,958,465 = 9999-12-31); a fraction is the time of day and is dropped
  (``46300.5`` is 2026-10-05). Excel's phantom 1900-02-29 makes serials below 61 one day off in
  Excel itself; no real date is that old.
- **Unicode separators** (SPEC §2): in account numbers, ZIPs, phones and dates every Unicode
  space is a space and every dash (en, em, minus, non-breaking hyphen) a ``-``.
- **Double-decoded text** in names and addresses (``JosÃ©``) is repaired where the repair gives
  plausible text (:func:`include.patient_import.encoding.repair`), with a ``text_repaired`` warning.
- **Timestamps**: ``yyyy-mm-dd hh:mm[:ss]`` (what an xlsx reader gives for a date cell) and
  ``m/d/yyyy h:mm`` (what Excel writes to CSV for one) keep their date; the time is dropped.
- **Status**: empty means active; an unrecognised word is warned (``invalid_status``) and falls
  back to active, the value an empty cell would have had.
- **A missing column** leaves the field None in every row, status included: no value, rather
  than a default that would overwrite what the store holds.
- **Phones** are valid when :func:`phonenumbers.is_valid_number` accepts them as North American
  numbers (so Canadian and Puerto Rican numbers are kept). The check is cached on the leading
  digits that decide it (:func:`deciding_prefix`).
- **E-mail domains** take email_validator's normalised form (lower case; an IDNA domain in its
  Unicode form); the local part is kept as written.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import re
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from email_validator import EmailNotValidError, validate_email

from include.patient_import import catalogue as c
from include.patient_import.account_numbers import (  # noqa: F401 - normalize_account_number re-exported
    ASCII_DIGITS,
    FORMAT_CHARACTERS,
    normalize_account_number,
    plain_separators,
    unfloat,
)
from include.patient_import.encoding import repair
from include.patient_import.problem_table import ProblemTable
from include.patient_import.problems import INVALID_ACCOUNT_NUMBER, TEXT_REPAIRED, ZIP_PADDED, invalid_code, severity_of
from include.patient_import.schema import (
    ACCOUNT_NUMBER_DIGITS,
    ACTIVE,
    EXTENSION_FIELDS,
    FIELD_NAMES,
    FIELDS,
    ROW_NUMBER,
    field_for_header,
)

OUTPUT_COLUMNS: tuple[str, ...] = (ROW_NUMBER, *FIELD_NAMES, *EXTENSION_FIELDS.values())


@dataclass
class NormalizedExport:
    """The export with every value normalised, and the warnings that cost a value.

    ``frame`` has :data:`OUTPUT_COLUMNS`, index 0..n-1: ``row_number`` as read, every other column
    object dtype holding ``str`` or ``None`` (no value); but for the columns in ``arrow``, which
    hold the same values as Arrow arrays (text, or null where a column has no value at all).
    """

    frame: pd.DataFrame
    # The columns asked for as Arrow (`normalize_export(arrow=...)`), by name, not in `frame`.
    arrow: dict[str, pa.Array] = dataclasses.field(default_factory=dict, repr=False)
    # (field, kind, positions, the warning codes at those positions): the warnings, kept until the
    # rows' outcomes are known, since a rejected row carries none (`warnings`). Only the rows
    # warned: a column of a million Nones takes 8 MB, one per field 120 MB (issue #14).
    warned: list[tuple[str, str, np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list, repr=False)

    @property
    def flagged(self) -> list[tuple[str, str, np.ndarray]]:
        """(field, kind, warning code or None by position) of each field `warned` holds."""
        out = []
        for name, kind, positions, codes in self.warned:
            column = np.full(len(self.frame), None, dtype=object)
            column[positions] = codes
            out.append((name, kind, column))
        return out

    @property
    def problems(self) -> ProblemTable:
        """Every row's warnings, capped per code and field (problem_table)."""
        return self.warnings()

    def warnings(self, rejected: np.ndarray | None = None) -> ProblemTable:
        """The warnings of the rows not `rejected` (booleans by position), built a field at a time
        and capped as they go: a quarter of a million rows with nine invalid values each must not
        become millions of Python objects (SPEC §7). A rejected row reports why it was rejected,
        not what importing it would have left out.

        Each warning names the row, its normalised account number and the field, never the value.
        """
        row_numbers = self.frame[ROW_NUMBER].to_numpy()
        accounts = self.frame["account_number"].to_numpy(dtype=object)
        # Every field's warnings as one table, sorted and capped once: a table per field added one
        # after another sorted and capped the growing whole again for each (issue #14). The same
        # table: the cap is per code and field, and the sort is stable (a test holds them equal).
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # positions, codes, fields
        messages: list[pd.Series] = []
        for name, kind, positions, codes in self.warned:
            if rejected is not None:
                kept = ~rejected[positions]
                positions, codes = positions[kept], codes[kept]
            if not len(positions):
                continue
            found = pd.Series(codes, dtype="object")
            messages.append(found.map({c: _message(name, kind, c) for c in set(found)}))
            parts.append((positions, codes, np.full(len(positions), name, dtype=object)))
        if not parts:
            return ProblemTable()
        positions, codes, fields = (np.concatenate(column) for column in zip(*parts))
        found = pd.Series(codes, dtype="object")
        return ProblemTable.of_rows(
            row_numbers[positions], code=found, field=fields, account_numbers=accounts[positions],
            message=pd.concat(messages, ignore_index=True),
            severity=found.map({c: str(severity_of(c)) for c in set(found)}))


# Result of an optional value: the cleaned value (None = left out) and a warning code, if any.
Cleaned = tuple[str | None, str | None]

# --- account number -----------------------------------------------------------------------------

_SCIENTIFIC = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]*)?[Ee][+-]?[0-9]+")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
# What Excel makes of a number it reads as a date (2-Mar, Mar-02, 2-Mar-26, 3/2/2026, 2026-03-02).
_EXCEL_DATE = re.compile(
    rf"[0-9]{{1,2}}[- /]{_MONTH}(?:[- /][0-9]{{2,4}})?|{_MONTH}[- /][0-9]{{1,4}}(?:[- /][0-9]{{2,4}})?"
    r"|[0-9]{1,2}/[0-9]{1,2}/[0-9]{2,4}|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}",
    re.IGNORECASE,
)
_FOOTER_WORDS = re.compile(r"\b(?:total|count|number|records?|patients?|page|printed|report)\b", re.IGNORECASE)


def account_number_problem(text: str | None) -> str:
    """What an invalid account number looks like, in words the office can act on; never the value.

    Args:
        text: the account number as :func:`normalize_account_number` left it.
    """
    return c.message(INVALID_ACCOUNT_NUMBER, _account_number_case(text or ""), digits=ACCOUNT_NUMBER_DIGITS)


def _account_number_case(text: str) -> str | None:
    """Which case of `invalid_account_number` (catalogue) the text is; None for any other."""
    if _SCIENTIFIC.fullmatch(text):
        return "scientific"
    if field_for_header(text) == "account_number":
        return "header"
    if _EXCEL_DATE.fullmatch(text):
        return "date"
    if _FOOTER_WORDS.search(text) or ":" in text:
        return "footer"
    if any(char.isalpha() for char in text):
        return "letters"
    if ASCII_DIGITS.fullmatch(text):
        return "too_long"
    return None


# --- names and addresses ------------------------------------------------------------------------

def normalize_name(raw: str) -> str | None:
    """Trimmed, inner runs of whitespace (tabs, non-breaking spaces) made one space; None when empty.

    Case, accents and punctuation stay as written.
    """
    # str.split() with no argument splits on every Unicode space, the non-breaking one included.
    # Format characters (zero-width space, BOM, word joiner, direction marks: Unicode category Cf)
    # are no spaces to it, but at a value's edge they are what a copied web page leaves there, not
    # part of the name: kept, a cell showing nothing would overwrite the stored value (SPEC §3
    # rule 6) and "Dover\u200b" would pass for a change. Inside a value (a joiner in a name) they stay.
    return " ".join(raw.split()).strip(_EDGE) or None


# What a name or address loses at its edges once its spaces are single ASCII ones.
_EDGE = " " + FORMAT_CHARACTERS


def normalize_text(raw: str) -> Cleaned:
    """A name or address as :func:`normalize_name` gives it, double-decoded text repaired first
    (``JosÃ©`` → ``José``, warning ``text_repaired``)."""
    text, repaired = repair(raw)
    return normalize_name(text), TEXT_REPAIRED if repaired else None


# --- zip ----------------------------------------------------------------------------------------

_ZIP5 = re.compile(r"[0-9]{5}")
_ZIP9 = re.compile(r"([0-9]{5})[- ]?([0-9]{4})")


def normalize_zip(raw: str) -> Cleaned:
    """``12345`` or ``12345-6789``; a ZIP whose leading zeros Excel dropped is padded (``zip_padded``)."""
    text = unfloat(plain_separators(raw).strip())
    if not text:
        return None, None
    if _ZIP5.fullmatch(text):
        return text, None
    plus4 = _ZIP9.fullmatch(text)
    if plus4:
        return f"{plus4.group(1)}-{plus4.group(2)}", None
    if ASCII_DIGITS.fullmatch(text):
        # Excel stores a ZIP as a number: 01234 becomes 1234, 01234-0567 (as 012340567) 12340567.
        if len(text) in (3, 4):
            return text.zfill(5), ZIP_PADDED
        if len(text) in (7, 8):
            padded = text.zfill(9)
            return f"{padded[:5]}-{padded[5:]}", ZIP_PADDED
    return None, invalid_code("zip")


# --- phones -------------------------------------------------------------------------------------

# phonenumbers decides North American validity from a number's first digits: the area code and
# the first exchange digit, except in the area codes below (Caribbean, territories, 5xx, 8xx)
# whose rules read up to seven digits. Tests prove it from the library's metadata. The check is
# cached on that prefix: numbers sharing one share a library call (~20-80 µs each).
_SHORT_PREFIX, _LONG_PREFIX = 4, 7
_LONG_PREFIX_AREA_CODES = frozenset({
    "242", "246", "264", "268", "284", "340", "345", "441", "473", "523", "524", "649", "658",
    "664", "670", "671", "684", "721", "758", "767", "784", "800", "829", "868", "869", "876",
})


def deciding_prefix(digits: str) -> str:
    """The leading digits of a 10-digit number that decide its validity."""
    length = _LONG_PREFIX if digits[:3] in _LONG_PREFIX_AREA_CODES else _SHORT_PREFIX
    return digits[:length]


@functools.lru_cache(maxsize=1 << 16)
def _valid_nanp_prefix(prefix: str) -> bool:
    number = phonenumbers.PhoneNumber(country_code=1, national_number=int(prefix.ljust(10, "0")))
    return phonenumbers.is_valid_number(number)


def is_valid_us_phone(digits: str) -> bool:
    """Whether 10 digits form a number phonenumbers accepts under North American numbering."""
    return (len(digits) == 10 and digits.isascii() and digits.isdigit() and digits[0] not in "01"
            and _valid_nanp_prefix(deciding_prefix(digits)))


_EXTENSION = re.compile(r"(.*?)\s*(?:extension|ext\.?|x|#)\s*([0-9]{1,10})", re.IGNORECASE | re.DOTALL)
_PHONE_TEXT = re.compile(r"\+?[0-9()\-. /]+")
_NON_DIGIT = re.compile(r"[^0-9]")
# The clean formats most exports use, all ASCII so pandas' regex engines (Python's and pyarrow's)
# read them alike: 5551234567, (555) 123-4567, 555-123-4567, 555.123.4567.
_CLEAN_PHONE = (r" *(?:[0-9]{10}|\([0-9]{3}\) ?[0-9]{3}-[0-9]{4}|[0-9]{3}-[0-9]{3}-[0-9]{4}"
                r"|[0-9]{3}\.[0-9]{3}\.[0-9]{4}) *")


def normalize_phone(raw: str, *, field: str = "home_phone") -> tuple[str | None, str | None, str | None]:
    """A US phone number as ``(10 digits, extension, warning)``.

    The extension (``x``, ``ext``, ``ext.``, ``#``) is kept apart; a leading ``1`` or ``+1`` is
    dropped. A number phonenumbers does not accept gives ``(None, None, invalid_<field>)``.
    """
    text = unfloat(plain_separators(raw).strip())
    if not text:
        return None, None, None
    extension = None
    split = _EXTENSION.fullmatch(text)
    if split:
        text, extension = split.group(1), split.group(2)
    digits = _NON_DIGIT.sub("", text) if _PHONE_TEXT.fullmatch(text) else ""
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    elif text.startswith("+"):
        digits = ""  # another country's code
    if not is_valid_us_phone(digits):
        return None, None, invalid_code(field)
    return digits, extension, None


# --- email --------------------------------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# Plain ASCII addresses, almost all of them: validated as email_validator does, but with the
# domain checked once per distinct domain (validate_email costs ~70 µs a call).
_PLAIN_ADDRESS = re.compile(rf"({_ATEXT}(?:\.{_ATEXT})*)@([A-Za-z0-9.-]+)")
_MAX_ADDRESS_BYTES = 254


@functools.lru_cache(maxsize=1 << 14)
def _checked_domain(domain: str) -> tuple[str, str] | None:
    """email_validator's (domain, ascii_domain) for a domain, or None when it is invalid."""
    try:
        probe = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    return probe.domain, probe.ascii_domain


def normalize_email(raw: str) -> Cleaned:
    """The address with its domain normalised (lower case), syntax checked, no DNS look-up."""
    text = raw.strip()
    if not text:
        return None, None
    plain = _PLAIN_ADDRESS.fullmatch(text)
    if plain:
        local, domain = plain.groups()
        checked = _checked_domain(domain)
        if checked is None:
            return None, invalid_code("email")
        normalized_domain, ascii_domain = checked
        # email_validator's length rule, in UTF-8 bytes, on the address as written, normalised
        # and IDNA-encoded.
        longest_domain = max(len(domain), len(normalized_domain.encode()), len(ascii_domain))
        if len(local) + 1 + longest_domain > _MAX_ADDRESS_BYTES:
            return None, invalid_code("email")
        return f"{local}@{normalized_domain.lower()}", None
    try:
        checked_address = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        return None, invalid_code("email")
    # Quoted local parts and display names are refused, so the last "@" ends the local part.
    return f"{text.rpartition('@')[0]}@{checked_address.domain.lower()}", None


# --- state --------------------------------------------------------------------------------------

_STATE_NAMES: dict[str, str] = {
    "ALABAMA": "AL", "ALASKA": "AK", "ARIZONA": "AZ", "ARKANSAS": "AR", "CALIFORNIA": "CA",
    "COLORADO": "CO", "CONNECTICUT": "CT", "DELAWARE": "DE", "FLORIDA": "FL", "GEORGIA": "GA",
    "HAWAII": "HI", "IDAHO": "ID", "ILLINOIS": "IL", "INDIANA": "IN", "IOWA": "IA", "KANSAS": "KS",
    "KENTUCKY": "KY", "LOUISIANA": "LA", "MAINE": "ME", "MARYLAND": "MD", "MASSACHUSETTS": "MA",
    "MICHIGAN": "MI", "MINNESOTA": "MN", "MISSISSIPPI": "MS", "MISSOURI": "MO", "MONTANA": "MT",
    "NEBRASKA": "NE", "NEVADA": "NV", "NEW HAMPSHIRE": "NH", "NEW JERSEY": "NJ", "NEW MEXICO": "NM",
    "NEW YORK": "NY", "NORTH CAROLINA": "NC", "NORTH DAKOTA": "ND", "OHIO": "OH", "OKLAHOMA": "OK",
    "OREGON": "OR", "PENNSYLVANIA": "PA", "RHODE ISLAND": "RI", "SOUTH CAROLINA": "SC",
    "SOUTH DAKOTA": "SD", "TENNESSEE": "TN", "TEXAS": "TX", "UTAH": "UT", "VERMONT": "VT",
    "VIRGINIA": "VA", "WASHINGTON": "WA", "WEST VIRGINIA": "WV", "WISCONSIN": "WI", "WYOMING": "WY",
    "DISTRICT OF COLUMBIA": "DC", "PUERTO RICO": "PR", "VIRGIN ISLANDS": "VI",
    "US VIRGIN ISLANDS": "VI", "GUAM": "GU", "AMERICAN SAMOA": "AS",
    "NORTHERN MARIANA ISLANDS": "MP", "ARMED FORCES AMERICAS": "AA", "ARMED FORCES EUROPE": "AE",
    "ARMED FORCES PACIFIC": "AP",
}
STATE_CODES: frozenset[str] = frozenset(_STATE_NAMES.values())
_STATE_LOOKUP: dict[str, str] = {**_STATE_NAMES, **{code: code for code in STATE_CODES}}


def normalize_state(raw: str) -> Cleaned:
    """The two-letter USPS code, from a code or a full name in any case (``new  york`` → ``NY``)."""
    key = " ".join(raw.replace(".", "").split()).upper()
    if not key:
        return None, None
    code = _STATE_LOOKUP.get(key)
    return (code, None) if code else (None, invalid_code("state"))


# --- dates --------------------------------------------------------------------------------------

_TIME = r"(?:[ T]([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]+)?)?(?: ?([AaPp][Mm]))?)?"
_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})" + _TIME)
_US_DATE = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4}|[0-9]{2})" + _TIME)
_SERIAL = re.compile(r"([0-9]{1,7})(?:\.[0-9]*)?")  # the fraction is a time of day
_EXCEL_EPOCH = datetime.date(1899, 12, 30)
_MAX_SERIAL = (datetime.date(9999, 12, 31) - _EXCEL_EPOCH).days  # 2,958,465
_MAX_AGE_YEARS = 120


def _valid_time(match: re.Match[str]) -> bool:
    hour, minute, second, meridiem = match.group(4, 5, 6, 7)
    if hour is None:
        return True
    top = 12 if meridiem else 23
    return int(hour) <= top and int(minute) <= 59 and int(second or 0) <= 59


def _pivot_date(year: int, month: int, day: int) -> datetime.date:
    """The date to compare with today; 29 February of a year without one counts as 1 March."""
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return datetime.date(year, month, 28) + datetime.timedelta(days=1)


def parse_date(raw: str, *, today: datetime.date) -> datetime.date | None:
    """The date a cell holds in any accepted format (module docstring), or None."""
    text = plain_separators(raw).strip()
    try:
        if m := _US_DATE.fullmatch(text):
            year, month, day = int(m.group(3)), int(m.group(1)), int(m.group(2))
            if len(m.group(3)) == 2:
                # By the whole date (SPEC §2): 12/15/26 read on 2026-11-30 is 1926-12-15.
                year += 2000 if _pivot_date(2000 + year, month, day) <= today else 1900
            return datetime.date(year, month, day) if _valid_time(m) else None
        if m := _ISO_DATE.fullmatch(text):
            return datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3))) if _valid_time(m) else None
        if m := _SERIAL.fullmatch(text):
            serial = int(m.group(1))
            return _EXCEL_EPOCH + datetime.timedelta(days=serial) if 1 <= serial <= _MAX_SERIAL else None
    except ValueError:  # 2/30/2001, month 13, year 0
        return None
    return None


def _years_before(day: datetime.date, years: int) -> datetime.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def normalize_date(raw: str, *, today: datetime.date, field: str = "last_visit") -> Cleaned:
    """An ISO date of something that has happened; in the future or unreadable → ``invalid_<field>``."""
    if not raw.strip():
        return None, None
    day = parse_date(raw, today=today)
    if day is None or day > today:
        return None, invalid_code(field)
    return day.isoformat(), None


def is_iso_date(value: object) -> bool:
    """`value` is a day's text exactly as `date.isoformat()` writes it (YYYY-MM-DD, a real day):
    what the normaliser writes and the store keeps, the one form dates are compared in (SPEC §3
    rule 7). `date.fromisoformat` alone also takes 20261130 and 2026-W48-1: the round trip keeps
    the one form."""
    if type(value) is not str or len(value) != 10:
        return False
    try:
        return datetime.date.fromisoformat(value).isoformat() == value
    except ValueError:  # 2023-02-30, month 13
        return False


def normalize_birth_date(raw: str, *, today: datetime.date, field: str = "birth_date") -> Cleaned:
    """An ISO birth date, not in the future and not more than 120 years before ``today``."""
    value, code = normalize_date(raw, today=today, field=field)
    if value is not None and datetime.date.fromisoformat(value) < _years_before(today, _MAX_AGE_YEARS):
        return None, invalid_code(field)
    return value, code


# The shapes the vectorised path decides: Genesis' own m/d/yyyy and ISO yyyy-m-d, ASCII digits and
# nothing else (no space, time or other separator), read by the same regular expressions as
# parse_date's (_US_DATE, _ISO_DATE) with a four-digit year and no time. Their days are counted with
# numpy's calendar; an impossible one (2/30/2001, month 13, year 0) is no date, as datetime.date
# refuses it in parse_date. No library parser: Arrow's strptime rolls 2/30 over into March, and
# pandas' inference guesses between d/m and m/d and pivots two-digit years its own way where SPEC §2
# fixes both. Everything else (two-digit years, serials, times, Unicode separators) goes to
# parse_date, the one definition of every format; tests/patient_import/test_normalize_dates.py holds
# both paths to the same results.
_FAST_DATES = (r"^(?P<m>[0-9]{1,2})/(?P<d>[0-9]{1,2})/(?P<y>[0-9]{4})$",
               r"^(?P<y>[0-9]{4})-(?P<m>[0-9]{1,2})-(?P<d>[0-9]{1,2})$")


def _calendar_days(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which texts have one of the `_FAST_DATES` shapes (booleans), and the day each names
    (datetime64[D], NaT where the shape names no real day, or the text has no such shape)."""
    shaped = np.zeros(len(texts), dtype=bool)
    days = np.full(len(texts), np.datetime64("NaT"), dtype="datetime64[D]")
    try:
        array = pa.array(texts, type=pa.large_string())
    except UnicodeEncodeError:  # a lone surrogate is no UTF-8: every value takes the Python path
        return shaped, days
    for pattern in _FAST_DATES:
        parts = pc.extract_regex(array, pattern)  # null where the text has another shape
        matched = parts.is_valid()
        rows = np.flatnonzero(matched.to_numpy(zero_copy_only=False))
        if not len(rows):
            continue
        hits = parts.filter(matched)
        year, month, day = (pc.cast(hits.field(name), pa.int64()).to_numpy() for name in "ymd")
        real = (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1)
        first = ((year - 1970) * 12 + month - 1).astype("datetime64[M]")  # the month, counted from 1970
        start = first.astype("datetime64[D]")
        real &= day <= ((first + 1).astype("datetime64[D]") - start).astype(np.int64)
        days[rows[real]] = start[real] + (day[real] - 1)
        shaped[rows] = True
    return shaped, days


def normalize_dates(texts: pd.Series, kind: str, field: str, today: datetime.date) -> list[np.ndarray]:
    """A date column's values and warning codes, as :func:`normalize_date` (kind ``date``) or
    :func:`normalize_birth_date` (kind ``birth_date``) gives them for each cell: once per distinct
    value, the common exact formats (``_FAST_DATES``) vectorised, the rest one by one.

    Args:
        texts: the column's text, ``""`` for empty (no missing values).
    Returns:
        [values, codes]: object arrays by position, ISO text or None, warning code or None.
    """
    positions, distinct = pd.factorize(texts)
    distinct_texts = distinct.tolist()
    values, codes = (np.full(len(distinct_texts), None, dtype=object) for _ in range(2))
    shaped, days = _calendar_days(distinct_texts)
    invalid = shaped & (np.isnat(days) | (days > np.datetime64(today, "D")))  # SPEC §2: not in the future
    if kind == "birth_date":  # nor more than 120 years back
        invalid |= shaped & (days < np.datetime64(_years_before(today, _MAX_AGE_YEARS), "D"))
    valid = shaped & ~invalid
    values[valid] = np.datetime_as_string(days[valid], unit="D").tolist()
    codes[invalid] = invalid_code(field)
    rest = np.flatnonzero(~shaped)
    if len(rest):
        normalizer = _normalizer(kind, field, today)
        results = [normalizer(distinct_texts[i]) for i in rest]
        values[rest] = object_array([value for value, _ in results])
        codes[rest] = object_array([code for _, code in results])
    return [values[positions], codes[positions]]


# --- status and gender --------------------------------------------------------------------------

INACTIVE = "inactive"
_STATUS_WORDS: dict[str, str] = {
    **dict.fromkeys(("active", "a", "y", "yes", "true", "1"), ACTIVE),
    **dict.fromkeys(("inactive", "i", "n", "no", "false", "0"), INACTIVE),
}
_GENDER_WORDS: dict[str, str] = {
    **dict.fromkeys(("m", "male", "man"), "M"),
    **dict.fromkeys(("f", "female", "woman"), "F"),
    **dict.fromkeys(("x", "non-binary", "nonbinary", "non binary", "other"), "X"),
    **dict.fromkeys(("u", "unknown", "unspecified"), "U"),
}


def _word(raw: str) -> str:
    return " ".join(raw.split()).casefold()


def normalize_status(raw: str) -> Cleaned:
    """``active`` or ``inactive``; empty is active, an unknown word is warned and taken as active."""
    word = _word(raw)
    if not word:
        return ACTIVE, None
    status = _STATUS_WORDS.get(word)
    return (status, None) if status else (ACTIVE, invalid_code("status"))


def normalize_gender(raw: str) -> Cleaned:
    """``M``, ``F``, ``X`` or ``U`` from the letter or the usual words, in any case."""
    word = _word(raw)
    if not word:
        return None, None
    gender = _GENDER_WORDS.get(word)
    return (gender, None) if gender else (None, invalid_code("gender"))


# --- the whole export ---------------------------------------------------------------------------

def _message(field: str, kind: str, code: str) -> str:
    """The warning's message (the rule catalogue's, for the field)."""
    return c.message(code, label=c.field_label(field))


# --- matching people (SPEC §8) -------------------------------------------------------------------

def name_match_key(text: str) -> str:
    """A name as it is compared to find the same person: case-folded, accents stripped, only letters
    and digits kept (``"  O'Brien-Núñez "`` → ``"obriennunez"``); "" when nothing is left.

    The standard library's decomposition (NFKD) strips accents and splits ligatures; letters that
    are not an accented form (ø, ł) stay as they are. A transliteration library (unidecode) would
    also merge those with o and l: a guess about two different letters that the contract does not ask for.
    """
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if char.isalnum())  # combining marks are not alphanumeric


def name_match_codes(names) -> np.ndarray:
    """One integer per value of `names` (a 1-D array or Series of texts and None), equal where
    `name_match_key` makes the values equal; -1 where the value is None or leaves nothing to
    compare. The key is made once per distinct value, and the values are never copied as keys:
    a million rows' names are two integer arrays (issue #14)."""
    positions, distinct = pd.factorize(object_array(list(names)))  # never 2-D, whatever the values
    keys = object_array([name_match_key(str(v)) or None for v in distinct.tolist()])
    # Each distinct value's key code (-1 for a None key), then -1 for position -1 (a None value).
    return np.append(pd.factorize(keys)[0], -1)[positions]


def object_array(items) -> np.ndarray:
    """A 1-D object array of the items, as they are."""
    # np.array(items, dtype=object) would build a 2-D array from a list of equal-length sequences.
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _apply_distinct(texts: pd.Series, normalizer: Callable[[str], tuple], width: int) -> list[np.ndarray]:
    """Run a normaliser once per distinct value; one object array per slot of its result."""
    positions, distinct = pd.factorize(texts)
    results = [normalizer(value) for value in distinct.tolist()]  # iterating an Arrow Index is ~8x slower
    return [object_array([result[slot] for result in results])[positions] for slot in range(width)]


def _texts(frame: pd.DataFrame, field: str) -> pd.Series:
    column = frame[field].reset_index(drop=True)
    if column.isna().any():
        column = column.astype(object).where(column.notna(), "")
    return column.astype(str)


def _normalize_phones(texts: pd.Series, field: str) -> list[np.ndarray]:
    """Values, extensions and warnings of a phone column: clean formats vectorised, the rest one by one."""
    values, extensions, codes = (np.full(len(texts), None, dtype=object) for _ in range(3))
    clean = texts.str.fullmatch(_CLEAN_PHONE).to_numpy(dtype=bool)
    if clean.any():
        rows = np.flatnonzero(clean)
        digits = texts[clean].str.replace(r"[^0-9]", "", regex=True)
        long_prefix = digits.str[:3].isin(_LONG_PREFIX_AREA_CODES)
        prefixes = digits.str[:_SHORT_PREFIX].where(~long_prefix, digits.str[:_LONG_PREFIX])
        positions, distinct = pd.factorize(prefixes)
        valid = np.array([p[0] not in "01" and _valid_nanp_prefix(p) for p in distinct.tolist()],
                         dtype=bool)[positions]
        del long_prefix, prefixes, positions  # before the Python strings come (issue #14)
        values[rows[valid]] = digits[valid].to_numpy(dtype=object)
        codes[rows[~valid]] = invalid_code(field)
    if not clean.all():
        rows = np.flatnonzero(~clean)
        rest = _apply_distinct(texts[~clean], functools.partial(normalize_phone, field=field), 3)
        values[rows], extensions[rows], codes[rows] = rest
    return [values, extensions, codes]


# Account numbers as Genesis writes them: ASCII digits and nothing else (leading zeros are dropped).
_PLAIN_ACCOUNT = ASCII_DIGITS.pattern


def _normalize_accounts(texts: pd.Series) -> np.ndarray:
    """Account numbers: plain digits vectorised, the rest (Excel's damage) one distinct value at a time."""
    values = np.full(len(texts), None, dtype=object)
    plain = texts.str.fullmatch(_PLAIN_ACCOUNT).to_numpy(dtype=bool)
    if plain.any():
        stripped = texts[plain].str.lstrip("0")
        values[plain] = stripped.where(stripped != "", "0").to_numpy(dtype=object)
    if not plain.all():
        (values[~plain],) = _apply_distinct(texts[~plain], lambda raw: (normalize_account_number(raw),), 1)
    return values


# What the vectorised e-mail path takes: _PLAIN_ADDRESS, whose ASCII classes both of pandas' regex
# engines (Python's and pyarrow's RE2) read alike. Such an address holds exactly one "@".
_PLAIN_EMAIL = _PLAIN_ADDRESS.pattern


def _normalize_emails(texts: pd.Series) -> list[np.ndarray]:
    """E-mails: plain ASCII addresses vectorised, with the domain checked once per distinct
    domain (as :func:`normalize_email` does); the rest one distinct value at a time."""
    values, codes = (np.full(len(texts), None, dtype=object) for _ in range(2))
    plain = texts.str.fullmatch(_PLAIN_EMAIL).to_numpy(dtype=bool)
    if plain.any():
        rows = np.flatnonzero(plain)
        # Split and joined as Arrow text, made Python strings once at the end: pandas' partition
        # of a million addresses took seconds and ~200 MB at validate's peak (issue #14). A plain
        # address holds exactly one "@".
        parts = pc.extract_regex(pa.array(texts).filter(pa.array(plain)), r"(?P<local>[^@]*)@(?P<domain>.*)")
        local, domain_texts = pc.struct_field(parts, "local"), pc.struct_field(parts, "domain")
        distinct = pc.unique(domain_texts)
        found = pc.index_in(domain_texts, value_set=distinct)
        positions, domains = found.to_numpy(), distinct.to_pylist()
        checked = [_checked_domain(domain) for domain in domains]
        valid_domain = np.array([c is not None for c in checked], dtype=bool)
        lowered = pa.array([c[0].lower() if c else None for c in checked], type=local.type)
        # email_validator's length rule, in UTF-8 bytes, on the address as written, normalised and
        # IDNA-encoded (as in normalize_email).
        longest = np.array([max(len(d), len(c[0].encode()), len(c[1])) if c else 0
                            for d, c in zip(domains, checked)], dtype=np.int64)
        local_length = pc.utf8_length(local).to_numpy()
        good = valid_domain[positions] & (local_length + 1 + longest[positions] <= _MAX_ADDRESS_BYTES)
        joined = pc.binary_join_element_wise(local, lowered.take(found), pa.scalar("@", type=local.type))
        # The parts go before the Python strings come: ~50 MB less at validate's peak (issue #14).
        del parts, local, domain_texts, found
        pa.default_memory_pool().release_unused()
        joined = joined.to_numpy(zero_copy_only=False)
        values[rows[good]] = joined[good]
        codes[rows[~good]] = invalid_code("email")
    if not plain.all():
        rows = np.flatnonzero(~plain)
        values[rows], codes[rows] = _apply_distinct(texts[~plain], normalize_email, 2)
    return [values, codes]


def _normalizer(kind: str, field: str, today: datetime.date) -> Callable[[str], Cleaned]:
    match kind:
        case "zip":
            return normalize_zip
        case "email":
            return normalize_email
        case "state":
            return normalize_state
        case "status":
            return normalize_status
        case "gender":
            return normalize_gender
        case "birth_date":
            return functools.partial(normalize_birth_date, today=today, field=field)
        case "date":
            return functools.partial(normalize_date, today=today, field=field)
    raise ValueError(f"no normaliser for field kind {kind!r}")


def normalize_export(frame: pd.DataFrame, *, today: datetime.date, consume: bool = False,
                     arrow: Collection[str] = ()) -> NormalizedExport:
    """Normalise every canonical field of an export read by the reader.

    Args:
        frame: ``row_number`` and some canonical field columns, text with ``""`` for empty.
            Other columns (``__extra_N``) are ignored; a missing field is None in every row.
        today: the day that decides future dates, two-digit years and the 120-year limit.
        consume: drop each field's column from `frame` once it is read, for a caller that needs
            them no more: the columns as read are freed as the normalised ones grow, not after
            (a million rows as read hold ~350 MB; issue #14).
        arrow: output columns (:data:`OUTPUT_COLUMNS`) given as Arrow arrays in
            ``NormalizedExport.arrow``, not in ``frame``: each is converted as soon as it is
            normalised, as ``DataFrame.to_parquet`` converts an object column, and its Python
            values freed (a million phone numbers or e-mails hold ~60 MB as Python strings,
            ~12-22 MB as Arrow; issue #14). Not the row number or the account number, which
            the warnings name each row by (ValueError).

    Returns:
        The normalised frame (:data:`OUTPUT_COLUMNS`) and its warnings, the warned rows' codes
        (:meth:`NormalizedExport.warnings` makes them problems once the rows' outcomes are known).
    """
    refused = sorted(set(arrow) & {ROW_NUMBER, "account_number"} | set(arrow) - set(OUTPUT_COLUMNS))
    if refused:  # `NormalizedExport.warnings` names each row by these, as Python values
        raise ValueError(f"normalize_export cannot give {refused} as Arrow")
    count = len(frame)
    columns: dict[str, np.ndarray] = {}
    arrays: dict[str, pa.Array] = {}
    warned: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for field in FIELDS:
        name, kind = field.name, field.kind
        if name not in frame.columns:
            columns[name] = np.full(count, None, dtype=object)
            if name in EXTENSION_FIELDS:
                columns[EXTENSION_FIELDS[name]] = np.full(count, None, dtype=object)
            continue
        texts = _texts(frame, name)
        if consume:
            del frame[name]
        if kind == "account_number":
            columns[name] = _normalize_accounts(texts)
        elif kind == "name":
            columns[name], codes = _apply_distinct(texts, normalize_text, 2)
            warned.append(_warned(name, kind, codes))
        elif kind == "email":
            columns[name], codes = _normalize_emails(texts)
            warned.append(_warned(name, kind, codes))
        elif kind == "phone":
            columns[name], columns[EXTENSION_FIELDS[name]], codes = _normalize_phones(texts, name)
            warned.append(_warned(name, kind, codes))
        elif kind in ("date", "birth_date"):
            columns[name], codes = normalize_dates(texts, kind, name, today)
            warned.append(_warned(name, kind, codes))
        else:
            columns[name], codes = _apply_distinct(texts, _normalizer(kind, name, today), 2)
            warned.append(_warned(name, kind, codes))
        if consume:
            # The column as read goes with `texts`; Arrow's pool keeps what was freed until asked.
            del texts
            pa.default_memory_pool().release_unused()
        _to_arrow(columns, arrays, arrow)
    _to_arrow(columns, arrays, arrow)

    # Not copied: a copy of every column took 150 MB more at a million rows.
    result = pd.DataFrame({ROW_NUMBER: pd.Series(frame[ROW_NUMBER].to_numpy()),
                           **{column: pd.Series(columns[column], dtype=object, copy=False)
                              for column in OUTPUT_COLUMNS[1:] if column in columns}}, copy=False)
    return NormalizedExport(frame=result, arrow={c: arrays[c] for c in OUTPUT_COLUMNS if c in arrays}, warned=warned)


def _to_arrow(columns: dict[str, np.ndarray], arrays: dict[str, pa.Array], wanted: Collection[str]) -> None:
    """Move the normalised `columns` named in `wanted` to `arrays` as Arrow, freeing their objects."""
    for name in [name for name in columns if name in wanted]:
        # As pyarrow's `Table.from_pandas` (`DataFrame.to_parquet`) converts an object column.
        arrays[name] = pa.array(columns.pop(name), from_pandas=True)


def _warned(name: str, kind: str, codes: np.ndarray) -> tuple[str, str, np.ndarray, np.ndarray]:
    """`NormalizedExport.warned`'s entry for a field's warning codes by position (None: no warning)."""
    positions = np.flatnonzero(pd.notna(codes))
    return name, kind, positions, codes[positions]
