import datetime
import random
import re._constants as sre_constants
import re._parser as sre_parser

import numpy as np
import pandas as pd
import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from include.patient_import.normalize import (
    OUTPUT_COLUMNS,
    STATE_CODES,
    deciding_prefix,
    is_valid_us_phone,
    normalize_account_number,
    normalize_birth_date,
    normalize_date,
    normalize_email,
    normalize_export,
    normalize_gender,
    normalize_name,
    normalize_phone,
    normalize_state,
    normalize_status,
    normalize_text,
    normalize_zip,
)
from include.patient_import.schema import FIELD_NAMES

pytestmark = pytest.mark.unit

TODAY = datetime.date(2025, 6, 1)
VALID_PHONE = "2125550147"  # New York area code, any exchange from 2 up is valid


def export(**columns) -> pd.DataFrame:
    count = len(next(iter(columns.values())))
    return pd.DataFrame({"row_number": range(2, count + 2), **columns})


def normalized(**columns):
    return normalize_export(export(**columns), today=TODAY)


# --- account number -----------------------------------------------------------------------------

def test_account_number_loses_surrounding_spaces_including_non_breaking():
    assert normalize_account_number(" \u00a0123\t ") == "123"


def test_account_number_loses_a_leading_hash():
    assert normalize_account_number("#123") == "123"


def test_account_number_loses_excel_text_formula_quoting():
    assert normalize_account_number('="00123"') == "123"


def test_account_number_loses_a_trailing_point_zero():
    assert normalize_account_number("123.0") == "123"


def test_account_number_loses_leading_zeros():
    assert normalize_account_number("00123") == "123"


def test_account_number_of_only_zeros_is_zero():
    assert normalize_account_number("000") == "0"


def test_account_number_with_every_artefact_at_once_is_cleaned():
    assert normalize_account_number(' ="#000456" ') == "456"


def test_empty_account_number_is_none():
    assert normalize_account_number(" \u00a0 ") is None


def test_account_number_in_scientific_notation_stays_non_digit():
    assert normalize_account_number("1.23457E+11") == "1.23457E+11"


def test_account_number_with_letters_keeps_its_leading_zeros():
    assert normalize_account_number("00A12") == "00A12"


def test_account_number_with_decimals_other_than_zero_is_not_truncated():
    assert normalize_account_number("123.5") == "123.5"


# --- names and addresses ------------------------------------------------------------------------

def test_name_is_trimmed():
    assert normalize_name("  Smith  ") == "Smith"


def test_name_inner_runs_of_spaces_tabs_and_non_breaking_spaces_become_one_space():
    assert normalize_name("12  Main\t\u00a0St") == "12 Main St"


def test_name_keeps_case_accents_and_apostrophes():
    assert normalize_name("josé  O'Brien-NÚÑEZ") == "josé O'Brien-NÚÑEZ"


def test_empty_name_is_none():
    assert normalize_name(" \t ") is None


# --- zip ----------------------------------------------------------------------------------------

def test_five_digit_zip_is_kept():
    assert normalize_zip("02134") == ("02134", None)


@pytest.mark.parametrize("raw", ["12345-6789", "123456789", "12345 6789"])
def test_zip_plus_four_is_stored_with_a_hyphen(raw):
    assert normalize_zip(raw) == ("12345-6789", None)


def test_four_digit_zip_is_padded_with_a_warning():
    assert normalize_zip("2134") == ("02134", "zip_padded")


def test_three_digit_zip_is_padded_with_a_warning():
    assert normalize_zip("501") == ("00501", "zip_padded")


def test_eight_digit_zip_plus_four_is_padded_with_a_warning():
    assert normalize_zip("21340567") == ("02134-0567", "zip_padded")


def test_seven_digit_zip_plus_four_is_padded_with_a_warning():
    assert normalize_zip("5011234") == ("00501-1234", "zip_padded")


def test_zip_loses_a_trailing_point_zero_before_padding():
    assert normalize_zip("2134.0") == ("02134", "zip_padded")


@pytest.mark.parametrize("raw", ["12", "123456", "1234-5678", "ABCDE", "1234S", "1.2E+4"])
def test_malformed_zip_is_left_out_with_invalid_zip(raw):
    assert normalize_zip(raw) == (None, "invalid_zip")


def test_empty_zip_is_none_without_warning():
    assert normalize_zip("  ") == (None, None)


# --- phones -------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["2125550147", "(212) 555-0147", "(212)555-0147", "212-555-0147",
                                 "212.555.0147", " 212 555 0147 "])
def test_phone_in_a_usual_format_is_stored_as_ten_digits(raw):
    assert normalize_phone(raw) == (VALID_PHONE, None, None)


@pytest.mark.parametrize("raw", ["+1 212 555 0147", "1-212-555-0147", "+1 (212) 555-0147", "12125550147"])
def test_phone_loses_a_leading_country_code_one(raw):
    assert normalize_phone(raw) == (VALID_PHONE, None, None)


@pytest.mark.parametrize("raw", ["212-555-0147 x12", "212-555-0147x12", "212-555-0147 ext 12",
                                 "212-555-0147 Ext. 12", "212-555-0147 #12", "212 555 0147 extension 12"])
def test_phone_extension_is_kept_apart(raw):
    assert normalize_phone(raw) == (VALID_PHONE, "12", None)


def test_phone_stored_by_excel_as_a_number_loses_its_point_zero():
    assert normalize_phone("2125550147.0") == (VALID_PHONE, None, None)


@pytest.mark.parametrize("raw, digits", [("416-555-0147", "4165550147"), ("787-555-0147", "7875550147")])
def test_canadian_and_puerto_rican_phones_are_valid(raw, digits):
    assert normalize_phone(raw) == (digits, None, None)


@pytest.mark.parametrize("raw", [
    "555-0147",            # no area code
    "212-555-01470",       # 11 digits not starting with 1
    "555-123-4567",        # area code 555 is not assigned
    "123-456-7890",        # area codes never start with 1
    "212-155-0147",        # exchanges never start with 1
    "+44 20 7946 0958",    # another country
    "+212 555 0147",       # a plus without the 1
    "212-JKL-0147",        # letters
    "2.12555E+09",         # Excel's scientific notation lost digits
])
def test_invalid_phone_is_left_out_with_invalid_home_phone(raw):
    assert normalize_phone(raw) == (None, None, "invalid_home_phone")


def test_invalid_phone_leaves_its_extension_out_too():
    assert normalize_phone("555-123-4567 x12") == (None, None, "invalid_home_phone")


def test_invalid_cell_phone_is_warned_as_invalid_cell_phone():
    assert normalize_phone("123", field="cell_phone") == (None, None, "invalid_cell_phone")


def test_empty_phone_is_none_without_warning():
    assert normalize_phone(" ") == (None, None, None)


# --- phones: the cached check and the vectorised path agree with the library --------------------

def library_phone(raw: str) -> str | None:
    """The reference: phonenumbers itself, on the raw text."""
    try:
        number = phonenumbers.parse(raw, "US")
    except phonenumbers.NumberParseException:
        return None
    if number.country_code != 1 or not phonenumbers.is_valid_number(number):
        return None
    return str(number.national_number)


def sample_numbers(count: int, seed: int = 20250601) -> list[str]:
    """Random 10-digit numbers over every area code, with more where validity reads seven digits."""
    rng = random.Random(seed)
    numbers = [f"{rng.randint(2_000_000_000, 9_999_999_999)}" for _ in range(count)]
    numbers += [f"{npa}{rng.randint(0, 9_999_999):07d}" for npa in range(200, 1000) for _ in range(3)]
    long_area_codes = {n[:3] for n in numbers if len(deciding_prefix(n)) == 7}
    numbers += [f"{npa}{rng.randint(0, 9_999_999):07d}" for npa in long_area_codes for _ in range(200)]
    return numbers


def test_cached_phone_check_agrees_with_the_library_on_a_sample():
    disagreements = [n for n in sample_numbers(5000) if is_valid_us_phone(n) != (library_phone(n) == n)]
    assert disagreements == []


@pytest.mark.parametrize("template", ["{}", "({}) {}-{}", "({}){}-{}", "{}-{}-{}", "{}.{}.{}"])
def test_vectorised_phone_path_agrees_with_the_one_by_one_path_and_the_library(template):
    numbers = sample_numbers(1000, seed=len(template))
    raws = [template.format(n) if template == "{}" else template.format(n[:3], n[3:6], n[6:])
            for n in numbers]

    vectorised = normalized(home_phone=raws).frame["home_phone"].tolist()

    assert vectorised == [normalize_phone(raw)[0] for raw in raws]
    assert vectorised == [library_phone(raw) for raw in raws]


# A tiny reader of phonenumbers' patterns (digits, classes, groups, alternation, bounded repeats):
# how many leading digits can decide whether a 10-digit number matches, given its area code.
_ALL_DIGITS = frozenset("0123456789")


def _digit_set(op, arg) -> set[str] | None:
    if op is sre_constants.LITERAL:
        return {chr(arg)}
    if op is sre_constants.CATEGORY and arg is sre_constants.CATEGORY_DIGIT:
        return set(_ALL_DIGITS)
    if op is sre_constants.IN:
        chars: set[str] = set()
        for item_op, item in arg:
            if item_op is sre_constants.LITERAL:
                chars.add(chr(item))
            elif item_op is sre_constants.RANGE:
                chars |= {chr(c) for c in range(item[0], item[1] + 1)}
            elif item_op is sre_constants.CATEGORY and item is sre_constants.CATEGORY_DIGIT:
                chars |= _ALL_DIGITS
            else:
                raise ValueError(f"unsupported class item {item_op}")
        return chars
    return None


def _reads(items, positions: set[int], known: str) -> tuple[set[int], int]:
    """End positions of the paths still possible, and the deepest unknown digit any path tests."""
    depth = 0
    for op, arg in items:
        chars = _digit_set(op, arg)
        if chars is not None:
            positions = {p for p in positions if p >= len(known) or known[p] in chars}
            unknown = [p for p in positions if p >= len(known)]
            if unknown and not _ALL_DIGITS <= chars:
                depth = max(depth, max(unknown) + 1)
            positions = {p + 1 for p in positions}
        elif op is sre_constants.SUBPATTERN:
            positions, sub = _reads(arg[3], positions, known)
            depth = max(depth, sub)
        elif op is sre_constants.BRANCH:
            ends: set[int] = set()
            for alternative in arg[1]:
                alt_ends, sub = _reads(alternative, positions, known)
                ends |= alt_ends
                depth = max(depth, sub)
            positions = ends
        elif op is sre_constants.MAX_REPEAT and arg[1] is not sre_constants.MAXREPEAT:
            low, high, sub_items = arg
            ends, current = set(), positions
            for count in range(high + 1):
                if count >= low:
                    ends |= current
                if count < high:
                    current, sub = _reads(sub_items, current, known)
                    depth = max(depth, sub)
            positions = ends
        else:
            raise ValueError(f"unsupported pattern element {op}")
    return positions, depth


def digits_read(pattern: str, known: str = "") -> int:
    return _reads(sre_parser.parse(pattern), {0}, known)[1]


def test_pattern_reader_counts_the_deepest_constrained_digit():
    assert digits_read(r"52[34][2-9]1[02-9]\d{4}") == 6
    assert digits_read(r"[2-9]\d{9}") == 1
    assert digits_read(r"\d{10}") == 0
    assert digits_read(r"(?:2\d|3)[4-6]\d{7}") == 3


def test_pattern_reader_ignores_branches_the_known_digits_rule_out():
    assert digits_read(r"212[2-9]\d{6}|246(?:2[0-4]|3[5-9])\d{5}", known="212") == 4


def test_pattern_reader_refuses_what_it_cannot_bound():
    with pytest.raises(ValueError):
        digits_read(r"(?=2)\d{10}")


def test_deciding_prefix_holds_every_digit_the_phone_metadata_reads():
    # is_valid_number on a +1 number: the first region whose leading digits match (or, for the US
    # and Canada, which have none, whose patterns match) is chosen, then its patterns decide.
    # Possible lengths are checked too, but every number here has ten digits.
    regions = []
    for region in COUNTRY_CODE_TO_REGION_CODE[1]:
        metadata = PhoneMetadata.metadata_for_region(region)
        descs = [getattr(metadata, name) for name in (
            "general_desc", "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost",
            "personal_number", "voip", "pager", "uan", "voicemail")]
        patterns = [sre_parser.parse(d.national_number_pattern) for d in descs
                    if d is not None and d.national_number_pattern]
        leading = sre_parser.parse(metadata.leading_digits) if metadata.leading_digits else None
        regions.append((leading, patterns))

    too_short = {}
    for npa in (f"{n}" for n in range(200, 1000)):
        needed = 3
        for leading, patterns in regions:
            if leading is not None:
                ends, depth = _reads(leading, {0}, npa)
                needed = max(needed, depth)
                if not ends:
                    continue  # this region is never chosen for this area code
            needed = max(needed, *(_reads(p, {0}, npa)[1] for p in patterns))
        if needed > len(deciding_prefix(npa + "0000000")):
            too_short[npa] = needed
    assert too_short == {}


# --- email --------------------------------------------------------------------------------------

def test_email_domain_is_lower_cased_and_local_part_kept_as_written():
    assert normalize_email("John.Smith@Example.COM") == ("John.Smith@example.com", None)


def test_email_role_name_local_part_is_kept_as_written():
    assert normalize_email("Info@Example.com") == ("Info@example.com", None)


def test_email_is_trimmed():
    assert normalize_email("  a.b@mail.example.org\u00a0") == ("a.b@mail.example.org", None)


def test_international_email_is_accepted():
    assert normalize_email("josé@Bücher.de") == ("josé@bücher.de", None)


@pytest.mark.parametrize("raw", [
    "john", "john@", "@example.com", "john@@example.com", "john..smith@example.com",
    "john@localhost", "john@example", "john@example.test", "john@-example.com", "john@exa mple.com",
    "John Smith <john@example.com>", '"john"@example.com', "john@example.123",
    "a" * 250 + "@example.com",
])
def test_invalid_email_is_left_out_with_invalid_email(raw):
    assert normalize_email(raw) == (None, "invalid_email")


def test_empty_email_is_none_without_warning():
    assert normalize_email(" ") == (None, None)


def library_email(raw: str) -> str | None:
    """The reference: email_validator on every address, no cache, no fast path."""
    text = raw.strip()
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{text.rpartition('@')[0]}@{checked.domain.lower()}"


@pytest.mark.parametrize("raw", [
    "a@b.co", "A+tag@Sub.Example.ORG", "x@xn--bcher-kva.de", "x@XN--BCHER-KVA.de", "x@ab--cd.com",
    "x@a-.com", "x@a.-b.com", "x@1.2.3.4", "x@a.b-", "x@a..com", ".x@a.com", "x.@a.com",
    "x@" + "a" * 63 + ".com", "x@" + "a" * 64 + ".com",
    "a" * 64 + "@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".com",
    "a" * 61 + "@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".com",
    "x@" + ("a" * 50 + ".") * 5 + "com",
    "y" * 20 + "@" + "ü" * 40 + "." + "b" * 60 + "." + "c" * 60 + ".com",
])
def test_email_fast_path_agrees_with_email_validator(raw):
    value, code = normalize_email(raw)
    assert value == library_email(raw)
    assert (code is None) == (value is not None)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(local=st.text(alphabet="aZ9._+-!'", min_size=0, max_size=70),
       domain=st.text(alphabet="aZ9.-", min_size=0, max_size=200))
def test_email_fast_path_agrees_with_email_validator_on_generated_addresses(local, domain):
    raw = f"{local}@{domain}"
    assert normalize_email(raw)[0] == library_email(raw)


# --- state --------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, code", [("ny", "NY"), (" Ca ", "CA"), ("dc", "DC"), ("pr", "PR"),
                                       ("VI", "VI"), ("gu", "GU"), ("AS", "AS"), ("mp", "MP"),
                                       ("AA", "AA"), ("ae", "AE"), ("Ap", "AP")])
def test_state_code_in_any_case_is_upper_cased(raw, code):
    assert normalize_state(raw) == (code, None)


@pytest.mark.parametrize("raw, code", [("new  york", "NY"), ("District of Columbia", "DC"),
                                       ("TEXAS", "TX"), ("Puerto Rico", "PR"),
                                       ("U.S. Virgin Islands", "VI"), ("D.C.", "DC"),
                                       ("armed forces europe", "AE")])
def test_full_state_name_is_mapped_to_its_code(raw, code):
    assert normalize_state(raw) == (code, None)


def test_every_state_code_is_a_two_letter_usps_code():
    assert len(STATE_CODES) == 50 + 1 + 5 + 3
    assert all(len(code) == 2 and code.isupper() for code in STATE_CODES)


@pytest.mark.parametrize("raw", ["XX", "New Yrok", "N", "Ontario", "N Y"])
def test_unknown_state_is_left_out_with_invalid_state(raw):
    assert normalize_state(raw) == (None, "invalid_state")


def test_empty_state_is_none_without_warning():
    assert normalize_state("") == (None, None)


# --- dates --------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["5/6/1990", "05/06/1990", "1990-05-06", "1990-05-06 00:00:00",
                                 "5/6/1990 0:00", "32999", "32999.0"])
def test_birth_date_in_every_accepted_format_is_stored_iso(raw):
    assert normalize_birth_date(raw, today=TODAY) == ("1990-05-06", None)


def test_excel_serial_day_one_is_the_last_day_of_1899():
    assert normalize_date("1", today=TODAY) == ("1899-12-31", None)


@pytest.mark.parametrize("raw", ["0", "2958466", "-5", "0.5", "2958466.25", "1.2.3"])
def test_excel_serial_out_of_range_is_invalid(raw):
    assert normalize_date(raw, today=TODAY) == (None, "invalid_last_visit")


@pytest.mark.parametrize("raw", ["46300.5", "46300.999", "46300.0", "46300", "46300."])
def test_excel_serial_with_a_time_of_day_keeps_its_date(raw):
    assert normalize_date(raw, today=datetime.date(2026, 11, 30)) == ("2026-10-05", None)


@pytest.mark.parametrize("raw, expected", [
    ("12/15/26", "1926-12-15"),   # this year, but after today: last century
    ("11/30/26", "2026-11-30"),   # today
    ("11/29/26", "2026-11-29"),
    ("1/2/27", "1927-01-02"),
    ("2/29/28", "1928-02-29"),    # a leap day after today
    ("2/29/24", "2024-02-29"),
])
def test_two_digit_year_pivots_on_the_whole_date(raw, expected):
    assert normalize_date(raw, today=datetime.date(2026, 11, 30)) == (expected, None)


@pytest.mark.parametrize("separator", ["\u00a0", "\u202f", "\u2007", "\u2009", "\u3000"])
def test_unicode_spaces_count_as_spaces_in_phones_and_zips(separator):
    assert normalize_phone(f"(217){separator}555-0131") == ("2175550131", None, None)
    assert normalize_zip(f"02116{separator}1234") == ("02116-1234", None)
    assert normalize_account_number(f"{separator}1301{separator}") == "1301"


@pytest.mark.parametrize("dash", ["\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212", "\ufe63", "\uff0d"])
def test_unicode_dashes_count_as_hyphens_in_phones_zips_and_dates(dash):
    assert normalize_phone(f"217{dash}555{dash}0131") == ("2175550131", None, None)
    assert normalize_zip(f"02116{dash}1234") == ("02116-1234", None)
    assert normalize_date(f"2025{dash}01{dash}02", today=TODAY) == ("2025-01-02", None)


def test_date_with_a_no_break_space_before_its_time_keeps_its_date():
    assert normalize_date("1/2/2025\u00a010:30", today=TODAY) == ("2025-01-02", None)


@pytest.mark.parametrize("raw, expected", [
    ("JosÃ©", "José"), ("MÃ¼ller", "Müller"), ("PeÃ±a", "Peña"), ("FranÃ§ois", "François"),
    ("JosÃƒÂ©", "José"),        # decoded twice over
    ("Jos├⌐", "José"),           # UTF-8 read as DOS 437
])
def test_double_decoded_name_is_repaired_with_text_repaired(raw, expected):
    assert normalize_text(raw) == (expected, "text_repaired")


@pytest.mark.parametrize("raw", ["José", "RENÉ\u00a0", "Peña", "O’Brien", "GARCÍA", "Ann", "王芳", "Łukasz"])
def test_plausible_name_is_kept_without_warning(raw):
    assert normalize_text(raw) == (" ".join(raw.split()), None)


def test_text_repaired_warning_names_row_and_field_but_no_value():
    frame = pd.DataFrame({"row_number": [2, 3], "account_number": ["1", "2"],
                          "last_name": ["MÃ¼ller", "Plain"], "first_name": ["Ann", "Bo"]})
    result = normalize_export(frame, today=TODAY)

    assert result.frame["last_name"].tolist() == ["Müller", "Plain"]
    [problem] = result.problems
    assert (problem.row, problem.account_number, problem.field, problem.code, problem.severity) == (
        2, "1", "last_name", "text_repaired", "warning")
    assert "ller" not in problem.message


def test_two_digit_year_not_after_this_year_is_in_this_century():
    assert normalize_date("1/2/25", today=TODAY) == ("2025-01-02", None)


def test_two_digit_year_after_this_year_is_in_the_last_century():
    assert normalize_birth_date("1/2/26", today=TODAY) == ("1926-01-02", None)


def test_two_digit_birth_year_90_is_1990():
    assert normalize_birth_date("5/6/90", today=TODAY) == ("1990-05-06", None)


@pytest.mark.parametrize("raw", ["2/30/2001", "13/1/2001", "2001-02-29", "0/1/2001", "1/2/0000",
                                 "yesterday", "1990/05/06", "1-2-2001", "1/2/203", "1990-05-06 25:00:00"])
def test_impossible_or_unreadable_birth_date_is_left_out_with_invalid_birth_date(raw):
    assert normalize_birth_date(raw, today=TODAY) == (None, "invalid_birth_date")


def test_birth_date_in_the_future_is_invalid():
    assert normalize_birth_date("6/2/2025", today=TODAY) == (None, "invalid_birth_date")


def test_birth_date_today_is_valid():
    assert normalize_birth_date("6/1/2025", today=TODAY) == ("2025-06-01", None)


def test_birth_date_more_than_120_years_back_is_invalid():
    assert normalize_birth_date("5/31/1905", today=TODAY) == (None, "invalid_birth_date")


def test_birth_date_exactly_120_years_back_is_valid():
    assert normalize_birth_date("6/1/1905", today=TODAY) == ("1905-06-01", None)


def test_last_visit_in_the_future_is_left_out_with_invalid_last_visit():
    assert normalize_date("2025-06-02", today=TODAY) == (None, "invalid_last_visit")


def test_last_visit_today_is_valid():
    assert normalize_date("2025-06-01", today=TODAY) == ("2025-06-01", None)


def test_empty_date_is_none_without_warning():
    assert normalize_date(" ", today=TODAY) == (None, None)


# --- status and gender --------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["Active", "ACTIVE", "a", "Y", "yes", "True", "TRUE", "1", " active "])
def test_active_variants_are_active(raw):
    assert normalize_status(raw) == ("active", None)


@pytest.mark.parametrize("raw", ["Inactive", "INACTIVE", "i", "N", "no", "False", "FALSE", "0"])
def test_inactive_variants_are_inactive(raw):
    assert normalize_status(raw) == ("inactive", None)


def test_empty_status_is_active_without_warning():
    assert normalize_status("") == ("active", None)


def test_unknown_status_is_warned_and_falls_back_to_active():
    assert normalize_status("Deceased") == ("active", "invalid_status")


@pytest.mark.parametrize("raw, code", [("M", "M"), ("male", "M"), ("Man", "M"), ("f", "F"),
                                       ("FEMALE", "F"), ("woman", "F"), ("x", "X"),
                                       ("Non-Binary", "X"), ("nonbinary", "X"), ("Other", "X"),
                                       ("U", "U"), ("unknown", "U"), ("Unspecified", "U")])
def test_gender_words_are_mapped_to_a_letter(raw, code):
    assert normalize_gender(raw) == (code, None)


@pytest.mark.parametrize("raw", ["?", "boy", "MF"])
def test_unknown_gender_is_left_out_with_invalid_gender(raw):
    assert normalize_gender(raw) == (None, "invalid_gender")


def test_empty_gender_is_none_without_warning():
    assert normalize_gender(" ") == (None, None)


# --- the whole export ---------------------------------------------------------------------------

def test_export_has_row_number_every_field_and_both_extensions():
    result = normalized(account_number=["1"])

    assert tuple(result.frame.columns) == OUTPUT_COLUMNS
    assert OUTPUT_COLUMNS == ("row_number", *FIELD_NAMES, "home_phone_ext", "cell_phone_ext")


def test_export_values_are_object_dtype_holding_str_or_none():
    frame = normalized(account_number=["007", ""], first_name=["Ann", ""]).frame

    assert all(frame[c].dtype == object for c in OUTPUT_COLUMNS[1:])
    assert frame["account_number"].tolist() == ["7", None]
    assert frame["first_name"].tolist() == ["Ann", None]


def test_export_missing_column_is_none_in_every_row():
    frame = normalized(account_number=["1", "2"]).frame

    assert frame["email"].tolist() == [None, None]
    assert frame["status"].tolist() == [None, None]
    assert frame["home_phone_ext"].tolist() == [None, None]


def test_export_ignores_extra_columns():
    frame = normalized(account_number=["1"], __extra_1=["secret"]).frame

    assert "__extra_1" not in frame.columns


def test_export_keeps_row_numbers_and_resets_the_index():
    source = pd.DataFrame({"row_number": [5, 9], "account_number": ["1", "2"]}, index=[10, 20])

    frame = normalize_export(source, today=TODAY).frame

    assert frame["row_number"].tolist() == [5, 9]
    assert frame.index.tolist() == [0, 1]


def test_export_normalises_each_column_with_its_kind():
    frame = normalized(account_number=['="0042"'], last_name=[" O'Neil  Jr "], state=["texas"],
                       zip=["2134"], email=["A@B.COM"], birth_date=["5/6/90"], gender=["female"],
                       status=[""], last_visit=["45000"]).frame

    assert frame.iloc[0][["account_number", "last_name", "state", "zip", "email", "birth_date",
                          "gender", "status", "last_visit"]].tolist() == [
        "42", "O'Neil Jr", "TX", "02134", "A@b.com", "1990-05-06", "F", "active", "2023-03-15"]


def test_export_puts_phone_extensions_in_their_own_columns():
    frame = normalized(home_phone=["212-555-0147 x7"], cell_phone=["(212) 555-0148 ext. 8"]).frame

    assert frame.iloc[0][["home_phone", "home_phone_ext", "cell_phone", "cell_phone_ext"]].tolist() == [
        VALID_PHONE, "7", "2125550148", "8"]


def test_export_mixes_vectorised_and_one_by_one_phones_in_row_order():
    frame = normalized(home_phone=["212-555-0147", "+1 212 555 0148", "", "555-123-4567"]).frame

    assert frame["home_phone"].tolist() == [VALID_PHONE, "2125550148", None, None]


def test_export_warns_with_row_normalised_account_number_and_field():
    result = normalized(account_number=['="0042"'], email=["not-an-email"])

    [problem] = result.problems
    assert (problem.code, problem.row, problem.account_number, problem.field, problem.severity) == (
        "invalid_email", 2, "42", "email", "warning")


def test_export_warning_for_a_row_without_account_number_has_none():
    [problem] = normalized(account_number=[""], state=["XX"]).problems

    assert problem.account_number is None


def test_export_warns_zip_padded_and_keeps_the_value():
    result = normalized(zip=["2134"])

    assert [p.code for p in result.problems] == ["zip_padded"]
    assert result.frame["zip"].tolist() == ["02134"]


def test_export_warns_every_invalid_field():
    result = normalized(zip=["1"], home_phone=["1"], cell_phone=["1"], email=["1"], state=["1"],
                        birth_date=["x"], gender=["1"], status=["x"], last_visit=["x"])

    assert sorted(p.code for p in result.problems) == sorted(
        ["invalid_zip", "invalid_home_phone", "invalid_cell_phone", "invalid_email", "invalid_state",
         "invalid_birth_date", "invalid_gender", "invalid_status", "invalid_last_visit"])


def test_export_judges_dates_against_the_given_today():
    result = normalize_export(export(last_visit=["2025-06-02"]), today=datetime.date(2025, 6, 2))

    assert result.frame["last_visit"].tolist() == ["2025-06-02"]
    assert result.problems == []


def test_export_problems_come_in_row_order_then_field():
    result = normalized(state=["XX", "NY", "XX"], email=["bad", "bad", "a@b.co"])

    assert [(p.row, p.field) for p in result.problems] == [(2, "email"), (2, "state"), (3, "email"),
                                                           (4, "state")]


def test_export_problem_messages_never_contain_the_value():
    values = dict(zip=["98765432109"], home_phone=["555-867-5309"], cell_phone=["555-867-5310"],
                  email=["jenny.secret@nowhere"], state=["Narnia"], birth_date=["12/31/2999"],
                  gender=["Wizard"], status=["Departed"], last_visit=["31/12/2024"])

    result = normalized(**values)

    assert len(result.problems) == len(values)
    for problem in result.problems:
        assert values[problem.field][0] not in problem.message
        assert problem.message.endswith(("left out", "imported as active"))


def test_export_of_no_rows_is_an_empty_frame():
    source = pd.DataFrame({"row_number": pd.Series([], dtype="int64"), "email": pd.Series([], dtype=str)})

    result = normalize_export(source, today=TODAY)

    assert len(result.frame) == 0
    assert result.problems == []


def test_export_treats_missing_cells_as_empty():
    source = pd.DataFrame({"row_number": [2], "email": [None], "status": [np.nan]})

    result = normalize_export(source, today=TODAY)

    assert result.frame.iloc[0][["email", "status"]].tolist() == [None, "active"]
    assert result.problems == []


# --- properties ---------------------------------------------------------------------------------

ANY_TEXT = st.text(max_size=40)
SAFE = settings(max_examples=300, deadline=None)


@SAFE
@given(ANY_TEXT)
def test_text_normalisers_never_raise(raw):
    assert normalize_account_number(raw) is None or isinstance(normalize_account_number(raw), str)
    assert normalize_name(raw) is None or isinstance(normalize_name(raw), str)
    for normalizer in (normalize_zip, normalize_email, normalize_state, normalize_status, normalize_gender):
        value, code = normalizer(raw)
        assert value is None or isinstance(value, str)


@SAFE
@given(ANY_TEXT)
def test_phone_and_date_normalisers_never_raise(raw):
    assert len(normalize_phone(raw)) == 3
    assert len(normalize_date(raw, today=TODAY)) == 2
    assert len(normalize_birth_date(raw, today=TODAY)) == 2


@SAFE
@given(st.from_regex(r"\s*[#=\"0-9.,E+\-xX() ]{0,15}\s*", fullmatch=True))
def test_normalisers_never_raise_on_excel_like_numbers(raw):
    normalize_account_number(raw)
    normalize_zip(raw)
    normalize_phone(raw)
    normalize_date(raw, today=TODAY)


@st.composite
def exports(draw) -> pd.DataFrame:
    rows = draw(st.integers(min_value=0, max_value=8))
    fields = draw(st.lists(st.sampled_from(FIELD_NAMES), unique=True))
    columns = {f: draw(st.lists(ANY_TEXT, min_size=rows, max_size=rows)) for f in fields}
    return pd.DataFrame({"row_number": pd.Series(range(2, rows + 2), dtype="int64"), **columns})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exports())
def test_export_keeps_every_row_of_an_arbitrary_frame(frame):
    result = normalize_export(frame, today=TODAY)

    assert len(result.frame) == len(frame)
    assert result.frame["row_number"].tolist() == frame["row_number"].tolist()
    for column in OUTPUT_COLUMNS[1:]:
        assert all(v is None or isinstance(v, str) for v in result.frame[column])
