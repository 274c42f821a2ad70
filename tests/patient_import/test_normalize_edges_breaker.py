"""Hostile edges of names and addresses: invisible format characters (Unicode Cf, every plane) and
Unicode spaces at a value's edges go, visible text and joiners inside stay (SPEC §3 rule 6)."""

import sys
import unicodedata

import pytest

from include.patient_import.account_numbers import FORMAT_CHARACTERS, plain_separators
from include.patient_import.normalize import normalize_account_number, normalize_name, normalize_text

pytestmark = pytest.mark.unit

ALL_FORMAT = [chr(code) for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) == "Cf"]
SUPPLEMENTARY_FORMAT = [char for char in ALL_FORMAT if ord(char) > 0xFFFF and not 0xE0000 <= ord(char) < 0xE0080]
EDGE_MIX = (
    "\u00a0\u2007\u3000\ufeff\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064"
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u180e\u00ad"
    "\U000e0001\U000e0020\U000e007f\U0001d173\t "
)


def test_every_format_character_of_this_python_is_one_the_edges_lose():
    assert [char for char in ALL_FORMAT if char not in FORMAT_CHARACTERS] == []


@pytest.mark.parametrize("char", SUPPLEMENTARY_FORMAT, ids=lambda c: f"U+{ord(c):04X}")
def test_a_supplementary_format_character_alone_is_an_empty_cell(char):
    assert normalize_name(char) is None
    assert normalize_name(char * 3 + " \u00a0" + char) is None


@pytest.mark.parametrize("char", SUPPLEMENTARY_FORMAT, ids=lambda c: f"U+{ord(c):04X}")
def test_a_supplementary_format_character_at_an_edge_is_no_change(char):
    assert normalize_name(char + "Dover" + char) == "Dover"
    assert normalize_name(char + " Dover \u00a0" + char) == "Dover"
    assert normalize_account_number("123" + char) == "123"
    assert plain_separators("1" + char + "2") == "12"


def test_a_value_made_only_of_spaces_and_format_characters_is_empty():
    assert normalize_name(EDGE_MIX) is None
    assert normalize_name(EDGE_MIX * 1000) is None
    assert normalize_text(EDGE_MIX) == (None, None)


def test_spaces_and_format_characters_mixed_at_both_edges_go():
    assert normalize_name(EDGE_MIX + "12 Main\u00a0\u00a0St" + EDGE_MIX) == "12 Main St"
    assert normalize_name(" \u200b \u200b x \u200b \u200b ") == "x"


@pytest.mark.parametrize(
    "value",
    [
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # family emoji: the joiners make it one
        "Jose\u0301",  # combining accent
        "\u0301Jose",  # a leading combining mark is visible text
        "\u0645\u062d\u0645\u062f \u200f\u0639\u0644\u064a",  # Arabic, a direction mark inside
        "\u05e9\u05e8\u05d4\u200e-\u05db\u05d4\u05df",  # Hebrew, a direction mark inside
        "-",
        "'",
        "O'Brien-Smith",
        "a" * 100_000,
    ],
)
def test_visible_text_and_inner_joiners_stay(value):
    assert normalize_name(value) == value
    assert normalize_name("\u200f\u00a0" + value + "\ufeff\u200b") == value


def test_a_joiner_inside_stays_while_the_edges_go():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert normalize_name("\u200d" + family + "\u200d") == family
    assert normalize_name("x\u200b \u200by") == "x\u200b \u200by"
