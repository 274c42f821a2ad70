"""Text from the outside world (file names, column headers, conf values) made safe to show (SPEC §7),
and cells made safe to open in a spreadsheet (SPEC §5, `defuse`).

Every such text passes through `printable` before it reaches a log line, an exception message or
an alert: a file name holding a newline must not forge a log line, and one holding terminal
escapes must not repaint an operator's screen.
"""

from __future__ import annotations

import csv
import unicodedata

DEFAULT_LIMIT = 120
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_RESHAPING = ("Cf", "Zl", "Zp")  # format characters (bidi overrides, tags) and line/paragraph separators


def _escape(code: int) -> str:
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: object, limit: int = DEFAULT_LIMIT) -> str:
    """`text` on one line, every control, format or separator character escaped as `repr` would.

    Args:
        text: anything; `str(text)` is shown (None shows as `None`).
        limit: the most characters kept of the escaped text; longer texts end in `…(+N chars)`.

    Returns a string with no line breaks, no control characters and no bidi overrides, and
    with backslashes escaped so that an escape in the input cannot pass for one of ours.
    """
    # Not `repr()` itself: it keeps printable non-ASCII as it is (good, names are often accented)
    # but leaves U+2028, bidi overrides and other format characters that reshape a log line.
    out: list[str] = []
    for char in str(text):
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable() and unicodedata.category(char) not in _RESHAPING:
            out.append(char)
        else:
            out.append(_ESCAPES.get(char) or _escape(ord(char)))
    shown = "".join(out)
    if len(shown) > limit:
        return f"{shown[:limit]}…(+{len(shown) - limit} chars)"
    return shown


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection, SPEC §5).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def quoted_csv_writer(stream):  # noqa: ANN001, ANN201 - a text stream; csv's writer has no public type
    """The csv writer of every file handed to the office (the upload, rejected-rows and changes
    files, SPEC §5): every field quoted, quotes doubled, CRLF line ends. Cells go in defused."""
    return csv.writer(stream, quoting=csv.QUOTE_ALL, lineterminator="\r\n")


def defuse(value: object) -> str:
    """The cell as text that no spreadsheet runs as a formula: a leading apostrophe before one of
    `FORMULA_STARTS`; a missing value (`_missing`) as ""."""
    text = "" if _missing(value) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _missing(value: object) -> bool:
    """None, and a cell that is not equal to itself: a float NaN (numpy's too), pandas' NaT and
    numpy's; and pandas' NA, whose comparisons are NA, which has no truth value. (Not pandas'
    isna: this module is imported where pandas is not.) Each would be written as its name."""
    if value is None:
        return True
    if isinstance(value, str):  # most cells: no comparison needed
        return False
    try:
        return bool(value != value)
    except TypeError:  # pandas' NA
        return True
