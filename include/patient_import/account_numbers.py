"""Account numbers without Excel's damage (SPEC §2), and the Unicode separators of structured values.

Light on purpose: the practice registry (practices.py) normalises its `payment_plan_accounts` with
these, and must load without pandas or numpy (the DAG and the plugin read the registry at parse
time). :mod:`include.patient_import.normalize` applies them to whole exports.
"""

from __future__ import annotations

import re
import unicodedata

ASCII_DIGITS = re.compile(r"[0-9]+")
# A number Excel (or an xlsx reader) turned into a float: "123.0".
_FLOAT_WHOLE = re.compile(r"([0-9]+)\.0+")

# Every Unicode space as " " and every dash as "-" (SPEC §2), for structured values: what Excel
# and copied web pages put in phones and ZIPs (no-break spaces, en dashes, minus signs). Format
# characters (Unicode category Cf: zero-width space, BOM, word joiner, direction marks) are
# invisible and carry nothing in a digit string; copied web pages leave them in cells. They are
# dropped, so that "123\u200b" is the account 123 and not a rejected row. Scanned: the BMP and
# the supplementary blocks that hold format characters (Kaithi's number signs, the Egyptian
# hieroglyph, shorthand and musical format controls, the tags); every plane would cost ~0.25 s at
# DAG parse time. tests/patient_import/test_normalize_edges_breaker.py checks no Cf is missed.
_SUPPLEMENTARY_FORMAT_BLOCKS = (
    range(0x11000, 0x11200),
    range(0x13430, 0x13460),
    range(0x1BCA0, 0x1BCB0),
    range(0x1D100, 0x1D200),
    range(0xE0000, 0xE0080),
)


def _separators() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for code in [*range(0x80, 0x10000), *(c for block in _SUPPLEMENTARY_FORMAT_BLOCKS for c in block)]:
        category = unicodedata.category(chr(code))
        if category == "Zs":
            table[code] = " "
        elif category == "Pd" or chr(code) in "\u2212\ufe63\uff0d":
            table[code] = "-"
        elif category == "Cf":
            table[code] = None
    return table


_SEPARATORS = _separators()
# The invisible format characters `plain_separators` drops; names and addresses lose them at their
# edges only (normalize.normalize_name).
FORMAT_CHARACTERS = "".join(chr(code) for code, plain in _SEPARATORS.items() if plain is None)


def plain_separators(text: str) -> str:
    """The text with Unicode spaces and dashes made ASCII ones, and invisible format characters
    dropped."""
    return text if text.isascii() else text.translate(_SEPARATORS)


def unfloat(text: str) -> str:
    """`123.0` → `123`: a whole number Excel wrote as a float; anything else as it is."""
    m = _FLOAT_WHOLE.fullmatch(text)
    return m.group(1) if m else text


# Excel's way of keeping leading zeros in a CSV: the cell is written as the formula ="00123".
_EXCEL_TEXT_FORMULA = re.compile(r'="(.*)"', re.DOTALL)


def normalize_account_number(raw: str) -> str | None:
    """The account number without Excel's damage, or None when empty.

    Surrounding spaces, ``="..."`` quoting, a leading ``#`` and a trailing ``.0`` are removed and
    leading zeros dropped (``00123`` → ``123``). Anything that is still not digits (``1.23457E+11``,
    letters) is returned cleaned but not repaired: the validation suite rejects it.
    """
    text = plain_separators(raw).strip()
    quoted = _EXCEL_TEXT_FORMULA.fullmatch(text)
    if quoted:
        text = quoted.group(1).strip()
    if text.startswith("#"):
        text = text[1:].lstrip()
    text = unfloat(text)
    if ASCII_DIGITS.fullmatch(text):
        text = text.lstrip("0") or "0"
    return text or None
