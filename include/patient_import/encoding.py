"""Which text encoding an export is in, and repairing text decoded twice (SPEC §2, "Input files").

Excel writes a CSV in one of five single-byte-compatible encodings: UTF-8, Windows-1252 ("CSV
(Comma delimited)"), Mac Roman ("CSV (Macintosh)") and the DOS code pages 437 and 850 ("CSV
(MS-DOS)"); UTF-16 ("Unicode Text") always starts with a byte-order mark and is decided by the
reader. Most byte strings decode without error in all of them, so the encoding is chosen by which
decoding gives **plausible text** in the name and address fields, scored by :func:`bad_characters`:

- a letter must be one that names are written with (Latin letters of Latin-1, Latin Extended-A,
  the Romanian, Vietnamese and Pinyin letters; `ɠ`, `ƒ` are not), with a plausible case (no
  capital inside a lower-case word: `JosÈ`, `MŸller`; no small letter inside a capitalised word:
  `GARCíA`), and not glued to a digit; a letter of another script is fine in a word of its own
  (`王芳`), not inside a Latin word;
- symbols (`‚ ¤ † © ±`, box drawing) must not touch a letter or a digit; dashes, quotes and
  fractions must not sit between two letters; apostrophes, the middle dot and hyphens may;
  C1 controls (what UTF-8 makes of Windows-1252's `Â€`), private-use and unassigned characters
  and U+FFFD never appear (zero-width and bidi marks are odd but no sign of a wrong encoding).

Text decoded twice before it reached us (`JosÃ©`) is what ftfy (:func:`ftfy.fix_encoding`)
repairs; a repair is accepted only when it gives plausible text, and it is counted, so a clean
decoding beats one that needs repairs.

The choice (:func:`choose_encoding`): every candidate that decodes the file is scored on the
distinct words holding non-ASCII bytes in the name and address columns (all columns when no
header is recognised): (characters still implausible after repair, words repaired). The lowest
wins, if its text has no implausible character left and no other candidate with the same score
reads the names differently; otherwise the file is `unreadable_file`, with a message saying to
save it as "CSV UTF-8". Candidates that read the names alike are then ranked on every column
(a no-break space in a phone number is a space in Windows-1252, `†` in Mac Roman), then in the
order UTF-8, Windows-1252, Mac Roman, DOS 437, DOS 850.

charset-normalizer (no longer a dependency) is not used for this: on the smallest real exports it
guesses wrong (it reads the DOS 437 file `Pe\\xa4a` as cp1250 `Pe¤a` and the Windows-1252 bytes
`REN\\xc9\\xa0` as UTF-8 `RENɠ`, because it prefers UTF-8 whenever the bytes are valid), and its
probabilistic guess cannot say "ambiguous" for a file whose names it cannot tell apart.
"""

from __future__ import annotations

import codecs
import csv
import functools
import re
import unicodedata
from collections import Counter
from itertools import islice
from pathlib import Path

import ftfy

from include.patient_import import catalogue
from include.patient_import.problems import UNREADABLE_FILE, ExportRejected
from include.patient_import.schema import DEFAULT_HEADERS, FIELDS_BY_NAME, HeaderMap

# Python codec names, in the order that breaks ties between candidates reading names alike.
CANDIDATES: tuple[str, ...] = ("utf-8", "cp1252", "mac_roman", "cp437", "cp850")
DESCRIPTIONS: dict[str, str] = {  # as the office knows them, for messages
    "utf-8": "UTF-8", "cp1252": "Windows-1252", "mac_roman": "Mac Roman",
    "cp437": "DOS (code page 437)", "cp850": "DOS (code page 850)",
}

# A word holding non-ASCII bytes, with the ASCII letters and digits around them (read as Latin-1,
# one character a byte, so any candidate can decode it again).
_TOKEN = re.compile(r"[A-Za-z0-9]*(?:[\x80-\xff]+[A-Za-z0-9]*)+")
# Beyond this many distinct non-ASCII cells, new ones are not sampled (names repeat; memory is bounded).
_MAX_CELLS = 200_000
# A message names the first line among this many of the words at fault (each is looked for in every cell).
_LINE_SEARCH = 20
_CP1252_UNDEFINED = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")
_CHUNK_BYTES = 1024 * 1024

# Letters names are written with, beyond ASCII (see the module docstring).
_NAME_LETTER_RANGES = ((0xC0, 0x17F), (0x1A0, 0x1A1), (0x1AF, 0x1B0), (0x1CD, 0x1DC), (0x218, 0x21B),
                       (0x1E00, 0x1EFF))
# Between letters: O’Brien, O´Brien, l·l, Smith‐Jones.
_JOINERS = frozenset("’‘´ʼ`·‐‑")
# Next to a letter, never between two: “Chip”, «Chip», ¿, ¡, – and — between spaces.
_QUOTES_AND_DASHES = frozenset("“”«»„‹›¿¡–—")
# Next to digits only: 123½, 3º, 2°.
_NUMERIC = frozenset("½¼¾°ºª²³¹")


def _is_name_letter(char: str) -> bool:
    code = ord(char)
    return char not in "×÷" and any(low <= code <= high for low, high in _NAME_LETTER_RANGES)


def _is_latin(char: str) -> bool:
    return char.isascii() and char.isalpha() or unicodedata.name(char, "").startswith("LATIN")


def _word(text: str, index: int) -> str:
    start = index
    while start and (text[start - 1].isalpha() or unicodedata.category(text[start - 1]) == "Mn"):
        start -= 1
    end = index + 1
    while end < len(text) and (text[end].isalpha() or unicodedata.category(text[end]) == "Mn"):
        end += 1
    return text[start:end]


def _bad_letter(text: str, index: int) -> bool:
    char = text[index]
    before = text[index - 1] if index else ""
    after = text[index + 1] if index + 1 < len(text) else ""
    word = _word(text, index)
    if not _is_name_letter(char):
        if _is_latin(char):
            return True  # ɠ, ƒ: Latin, but no name is written with them
        return any(_is_latin(c) for c in word)  # another script inside a Latin word
    if before.isdigit() or after.isdigit():
        return True
    if char.isupper():
        # A capital is plausible first in a word or in a word without small letters.
        return not word.startswith(char) and any(c.islower() for c in word)
    if char.islower() and after.isalpha() and after.isupper():
        # A capital right after an accented small letter (SmithðJones: Mac Roman's en dash read as
        # DOS 850) is no name's spelling; McDonald's capital follows an ASCII letter.
        return True
    if char.islower() and char != "ß":
        # A small letter inside a capitalised word (GARCíA); one capital (Mü) is a capitalised word.
        others = [c for c in word if c != char and (c.isupper() or c.islower())]
        return len(others) >= 2 and all(c.isupper() for c in others)
    return False


def _compound(text: str, index: int) -> bool:
    """Whether the dash at `index` joins two name parts (Smith–Jones, Anne–marie, GARCÍA—LÓPEZ: a
    hyphenated name typed with an en or em dash, as Word's autocorrect writes it): each part a word
    of two letters or more. Mojibake's dash takes a single letter's place (Pe–a, D–pont).

    Erring towards plausible is the safe side here: a dash read as plausible can only make another
    decoding a tie (the file is then rejected), while a real name's dash read as implausible let
    DOS 850's `ð` (Mac Roman's `–`) win alone: `Anneðmarie` was stored.
    """
    if text[index] not in "–—":
        return False
    return len(_word(text, index - 1)) >= 2 and len(_word(text, index + 1)) >= 2


def bad_characters(text: str) -> int:
    """How many characters of a text are implausible in a name or an address (module docstring)."""
    bad = 0
    for index, char in enumerate(text):
        if char.isascii():
            continue
        category = unicodedata.category(char)
        before = text[index - 1] if index else ""
        after = text[index + 1] if index + 1 < len(text) else ""
        if category.startswith("L") and char not in _NUMERIC:
            bad += _bad_letter(text, index)
        elif category == "Zs" or char in _JOINERS:
            continue
        elif category == "Mn":
            bad += not before.isalpha()  # a combining accent (macOS writes é as e + ◌́) follows a letter
        elif char in _QUOTES_AND_DASHES:
            bad += before.isalpha() and after.isalpha() and not _compound(text, index)
        elif char in _NUMERIC:
            bad += before.isalpha() or after.isalpha()
        elif "\x80" <= char <= "\x9f" or category in ("Co", "Cn") or char == "\ufffd":
            # C1 controls are what UTF-8 makes of Windows-1252 bytes (Â€ → U+0080); no encoding Excel
            # writes decodes to private-use or unassigned characters but UTF-8 of something else.
            bad += 1
        elif category in ("Cc", "Cf", "Zl", "Zp") and char != "\u00ad":
            continue  # zero-width and bidi marks, line separators: odd, but not a wrong encoding
        else:
            bad += any(c.isalnum() for c in (before, after))
    return bad


def repair(text: str) -> tuple[str, bool]:
    """The text with double decoding undone when that gives plausible text: (text, repaired).

    ftfy's repair is taken only when its result is plausible (it would turn the Windows-1252
    `É` + no-break space into UTF-8's `ɠ`, were that plausible).
    """
    return (text, False) if text.isascii() else _repair(text)


@functools.lru_cache(maxsize=1 << 14)
def _repair(text: str) -> tuple[str, bool]:
    fixed = ftfy.fix_encoding(text)
    if fixed != text and not bad_characters(fixed):
        return fixed, True
    return text, False


# --- choosing the encoding ------------------------------------------------------------------


def _valid_utf8(data) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        for start in range(0, len(data), _CHUNK_BYTES):
            decoder.decode(data[start:start + _CHUNK_BYTES])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _candidates(data) -> list[str]:
    """The encodings of :data:`CANDIDATES` that decode the bytes (the single-byte ones but
    Windows-1252 decode anything)."""
    undecodable = set()
    if not _valid_utf8(data):
        undecodable.add("utf-8")
    if _CP1252_UNDEFINED.search(data):
        undecodable.add("cp1252")
    return [encoding for encoding in CANDIDATES if encoding not in undecodable]


class _Words:
    """Distinct non-ASCII words with their count and first line: in the name and address columns,
    before the header (used as names when no header is recognised) and in every column.

    Cells are counted while reading (names and cities repeat endlessly) and cut into words once
    per distinct cell.
    """

    def __init__(self) -> None:
        self.cells: dict[str, Counter[str]] = {"named": Counter(), "unplaced": Counter(), "other": Counter()}
        self.cell_line: dict[str, int] = {}

    def add(self, cell: str, line: int, kind: str) -> None:
        counter = self.cells[kind]
        if cell in counter or len(self.cell_line) < _MAX_CELLS or cell in self.cell_line:
            counter[cell] += 1
            self.cell_line.setdefault(cell, line)

    def words(self, kinds: tuple[str, ...]) -> Counter[str]:
        out: Counter[str] = Counter()
        for kind in kinds:
            for cell, count in self.cells[kind].items():
                for token in _TOKEN.findall(cell):
                    out[token] += count
        return out

    def line(self, token: str) -> int:
        return min(line for cell, line in self.cell_line.items() if token in cell)


def _header_named_positions(cells: list[str], header_map: HeaderMap = DEFAULT_HEADERS) -> set[int] | None:
    """The name and address columns of a row that looks like the header (two known headers)."""
    fields = [header_map.field(cell) for cell in cells]
    if sum(field is not None for field in fields) < 2:
        return None
    return {i for i, field in enumerate(fields) if field and FIELDS_BY_NAME[field].kind == "name"}


def _collect_words(path: Path, delimiter: str,
                   header_map: HeaderMap = DEFAULT_HEADERS) -> tuple[_Words, tuple[str, ...]]:
    """The non-ASCII cells of the export, and which kinds of them hold its names and addresses."""
    words = _Words()
    named: set[int] | None = None
    # Latin-1 maps every byte to one character, and every candidate writes the delimiter, quote
    # and line breaks as ASCII: the cells come out byte for byte, to be decoded per candidate.
    with path.open("r", encoding="latin-1", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=False)
        start = 1
        try:
            for cells in reader:
                if named is None:
                    named = _header_named_positions(cells, header_map)
                    if named is None and not "".join(cells).isascii():
                        for cell in cells:
                            if not cell.isascii():
                                words.add(cell, start, "unplaced")
                elif not "".join(cells).isascii():
                    for position, cell in enumerate(cells):
                        if not cell.isascii():
                            words.add(cell, start, "named" if position in named else "other")
                start = reader.line_num + 1
        except csv.Error:
            pass  # a value over csv's size limit: the reader reports it; what was seen decides
    return words, ("named",) if named is not None else ("unplaced",)


@functools.lru_cache(maxsize=1 << 16)
def _read_word(token: str, encoding: str) -> tuple[str, int, bool]:
    text, repaired = repair(token.encode("latin-1").decode(encoding))
    return text, bad_characters(text), repaired


def _score(counter: Counter[str], encoding: str) -> tuple[tuple[int, int], dict[str, str]]:
    bad = repaired = 0
    texts = {}
    for token, count in counter.items():
        text, implausible, fixed = _read_word(token, encoding)
        bad += implausible * count
        repaired += fixed * count
        texts[token] = text
    return (bad, repaired), texts


def _symbols(text: str) -> int:
    """Non-ASCII characters that are neither letters, marks nor spaces (`»`, `–`, `¤`)."""
    return sum(1 for c in text if not c.isascii() and unicodedata.category(c)[0] not in "LMZ")


def choose_encoding(path: Path, data, delimiter: str, header_map: HeaderMap = DEFAULT_HEADERS) -> str:
    """The Python codec of a text export without a byte-order mark (module docstring).

    Args:
        path: the export; read again as Latin-1 to find its columns.
        data: its bytes (an mmap or bytes).
        delimiter: the delimiter of its header line.
        header_map: how the practice's headers map to fields (its `column_aliases` too), to find
            the name and address columns.

    Returns:
        "utf-8" for plain ASCII, else one of :data:`CANDIDATES`.

    Raises:
        ExportRejected: `unreadable_file` when no decoding is clearly plausible.
    """
    if not _HIGH_BYTE.search(data):
        return "utf-8"
    candidates = _candidates(data)
    cells, named_kinds = _collect_words(path, delimiter, header_map)
    named = cells.words(named_kinds)
    scored = {encoding: _score(named, encoding) for encoding in candidates}
    best = min(candidates, key=lambda e: (scored[e][0], candidates.index(e)))
    score, texts = scored[best]
    if score[0]:
        line = min(cells.line(t) for t in islice((t for t in texts if _read_word(t, best)[1]), _LINE_SEARCH))
        raise ExportRejected(
            UNREADABLE_FILE, catalogue.message(UNREADABLE_FILE, "garbled", line=line, best=DESCRIPTIONS[best]),
            row=line,
        )
    alike = [e for e in candidates if scored[e][1] == texts]
    for other in candidates:
        if other in alike or scored[other][0] != score:
            continue
        differing = [t for t in texts if scored[other][1][t] != texts[t]]
        if best == "utf-8" and all(_symbols(scored[other][1][t]) > _symbols(texts[t]) for t in differing):
            # Plausible UTF-8 letters beat a reading of the same bytes that puts symbols in their
            # place (Ș read as Mac Roman's `»ò`). Letters against letters stay a tie: Windows-1252
            # `Äž` is valid UTF-8 `Ğ`, DOS 850 `Úúú` is UTF-8 `飣`.
            continue
        line = min(cells.line(t) for t in islice(differing, _LINE_SEARCH))
        raise ExportRejected(
            UNREADABLE_FILE,
            catalogue.message(UNREADABLE_FILE, "ambiguous", line=line, best=DESCRIPTIONS[best],
                              other=DESCRIPTIONS[other]),
            row=line,
        )
    every = cells.words(("named", "unplaced", "other"))
    return min(alike, key=lambda e: (_score(every, e)[0], candidates.index(e)))
