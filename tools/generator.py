"""Realistic Genesis patient exports for the tests, the demo and the benchmarks.

Everything here is invented: names come from short pools, e-mails use the domains reserved for
examples (RFC 2606), so no generated address can reach a real mailbox, and phones are made of
real area codes and exchanges with random line numbers. Columns are built with numpy and
Arrow-backed pandas strings rather than row by row, so a million-row export takes seconds.
The same seed (and ``today``) always gives the same patients and the same file.

    python -m tools.generator --rows 1000 --seed 1 --format csv --out inbox/demo.csv
"""

from __future__ import annotations

import argparse
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.patient_import import problems
from include.patient_import.schema import FIELD_NAMES, FIELDS

FORMATS: dict[str, str] = {"csv": ",", "semicolon": ";", "tsv": "\t", "xlsx": ""}
ENCODINGS: tuple[str, ...] = ("utf-8", "utf-8-sig", "cp1252")
HEADER_STYLES: tuple[str, ...] = ("genesis", "aliases")

# add_problems() says, for each row, the problem it was made to carry: the code and field the
# pipeline's report should give that row ("" for a clean row).
EXPECTED_CODE = "expected_code"
EXPECTED_FIELD = "expected_field"

XLSX_MAX_ROWS = 1_048_576
# Rows are made, damaged and written a block at a time: generate_export's memory does not grow with
# the rows. Each block has its own random streams, so the block size is part of a seed's output.
_BLOCK_ROWS = 100_000
_EXCEL_EPOCH = np.datetime64("1899-12-30", "D")  # Excel serial day 0, after its 1900 leap-year bug

# Independent random streams, so that changing one part of the generator leaves the others' output alone.
_PATIENTS, _PROBLEMS, _ARTEFACTS = 1, 2, 3

# --- pools -----------------------------------------------------------------------------------

_FEMALE_COMMON = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
    "Karen", "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Kimberly", "Emily", "Donna",
    "Michelle", "Carol", "Amanda", "Melissa", "Deborah", "Stephanie", "Rebecca", "Sharon", "Laura",
    "Cynthia", "Amy", "Kathleen", "Angela", "Shirley", "Brenda", "Emma", "Anna", "Pamela", "Nicole",
    "Samantha", "Katherine", "Christine", "Helen", "Debra", "Rachel", "Carolyn", "Janet", "Maria",
    "Olivia", "Heather", "Catherine", "Diane", "Julie", "Victoria", "Joyce", "Lauren", "Kelly",
    "Christina", "Ruth", "Joan", "Virginia", "Judith", "Evelyn", "Hannah", "Andrea", "Megan",
    "Cheryl", "Jacqueline", "Madison", "Sophia", "Abigail", "Teresa", "Isabella", "Sara", "Janice",
)
_FEMALE_SPECIAL = (
    "Renée", "Zoë", "Chloé", "Siobhán", "Inés", "Noémie", "Ana María", "Mary-Kate", "Anne-Marie",
    "Zoé", "Béatrice", "Mónica", "Dolores", "Maëlle",
)
_MALE_COMMON = (
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
    "Christopher", "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Andrew",
    "Paul", "Joshua", "Kenneth", "Kevin", "Brian", "Timothy", "Ronald", "George", "Jason", "Edward",
    "Jeffrey", "Ryan", "Jacob", "Nicholas", "Gary", "Eric", "Jonathan", "Stephen", "Larry", "Justin",
    "Scott", "Brandon", "Benjamin", "Samuel", "Gregory", "Alexander", "Patrick", "Frank", "Raymond",
    "Jack", "Dennis", "Jerry", "Tyler", "Aaron", "Henry", "Douglas", "Peter", "Adam", "Nathan",
    "Zachary", "Walter", "Kyle", "Harold", "Carl", "Jeremy", "Gerald", "Keith", "Roger", "Arthur",
    "Terry", "Lawrence", "Sean", "Christian", "Ethan", "Austin", "Joe", "Albert", "Jesse", "Willie",
)
_MALE_SPECIAL = (
    "José", "André", "François", "Björn", "Jesús", "Seán", "Jean-Luc", "Zoltán", "Ramón", "Joël",
    "Søren", "Raúl", "Jürgen", "Efraín",
)
_LAST_COMMON = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson",
    "Taylor", "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White", "Harris", "Clark",
    "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Hill", "Green",
    "Adams", "Baker", "Nelson", "Carter", "Mitchell", "Roberts", "Turner", "Phillips", "Campbell",
    "Parker", "Evans", "Edwards", "Collins", "Stewart", "Morris", "Murphy", "Cook", "Rogers",
    "Morgan", "Cooper", "Peterson", "Reed", "Bailey", "Bell", "Kelly", "Howard", "Ward", "Cox",
    "Richardson", "Wood", "Watson", "Brooks", "Bennett", "Gray", "James", "Hughes", "Price",
    "Sanders", "Myers", "Long", "Ross", "Foster", "Powell", "Jenkins", "Perry", "Russell", "Sullivan",
    "Fisher", "Henderson", "Coleman", "Simmons", "Patterson", "Jordan", "Reynolds", "Hamilton",
    "Graham", "Kim", "Lee", "Chen", "Patel", "Lopez", "Gonzalez", "Hernandez", "Rivera", "Ramirez",
    "Torres", "Flores", "Murray", "Wallace", "Hayes", "Kowalski", "Schmidt", "Larson", "Olson",
)
_LAST_SPECIAL = (
    "O'Brien", "D'Angelo", "McDonald", "Nguyễn", "van der Berg", "Smith-Jones", "O'Connor",
    "García", "Müller", "Peña", "Núñez", "MacKenzie", "St. James", "De La Cruz", "Lefèvre",
    "Brontë", "O'Neil-Hayes", "Dvořák",
)
_SPECIAL_NAME_SHARE = 0.12

_STREETS = (
    "Main St", "Oak Ave", "Maple St", "Elm St", "Washington St", "Park Ave", "Cedar Ln", "Pine St",
    "Lake Dr", "Hill Rd", "Church St", "High St", "Spring St", "Chestnut St", "Walnut St",
    "Highland Ave", "Franklin St", "Center St", "School St", "Pleasant St", "Broadway", "Union St",
    "Prospect Ave", "Jefferson Ave", "Lincoln Ave", "Madison Ave", "Sunset Blvd", "Riverside Dr",
    "Forest Ave", "Meadow Ln", "Orchard Rd", "Cherry Ln", "Willow Way", "Birch Rd", "2nd St",
    "3rd Ave", "5th St", "Martin Luther King Jr Blvd", "O'Connell St", "Saint Anne's Way",
    "Old County Rd", "N Main St", "E 42nd St", "W Elm Ave", "Country Club Dr", "Route 9",
    "Rue de la Paix", "Cañada Rd",
)
_ADDRESS2_KINDS = ("Apt ", "Apt ", "Apt ", "Unit ", "Suite ", "# ", "Apt. ", "Bldg ")
# What offices type into the second address line that a CSV must quote.
_ADDRESS2_QUOTABLE = ('Bldg 2, Apt 5', 'Unit 3 "Rear"', 'c/o "Bud" Smith', 'Apt 7, Side Door',
                      'Suite 100, "The Annex"')

# (city, state, area code, ZIP codes): real places; New England and New Jersey ZIPs start with 0.
_CITIES: tuple[tuple[str, str, str, tuple[str, ...], float], ...] = (
    ("Boston", "MA", "617", ("02108", "02115", "02116", "02118", "02125", "02130", "02134", "02135"), 4),
    ("Cambridge", "MA", "617", ("02138", "02139", "02140", "02141"), 2),
    ("Worcester", "MA", "508", ("01602", "01603", "01604", "01605", "01609"), 2),
    ("Springfield", "MA", "413", ("01103", "01104", "01105", "01108", "01109"), 2),
    ("Lowell", "MA", "978", ("01850", "01851", "01852", "01854"), 1),
    ("Providence", "RI", "401", ("02903", "02904", "02906", "02908", "02909"), 2),
    ("Warwick", "RI", "401", ("02886", "02888", "02889"), 1),
    ("Hartford", "CT", "860", ("06103", "06105", "06106", "06112", "06114"), 2),
    ("New Haven", "CT", "203", ("06510", "06511", "06513", "06515"), 1),
    ("Stamford", "CT", "203", ("06901", "06902", "06903", "06905"), 1),
    ("Portland", "ME", "207", ("04101", "04102", "04103"), 1),
    ("Bangor", "ME", "207", ("04401",), 1),
    ("Burlington", "VT", "802", ("05401", "05403", "05408"), 1),
    ("Manchester", "NH", "603", ("03101", "03102", "03103", "03104"), 1),
    ("Nashua", "NH", "603", ("03060", "03062", "03063", "03064"), 1),
    ("Newark", "NJ", "973", ("07102", "07103", "07104", "07105", "07106"), 2),
    ("Jersey City", "NJ", "201", ("07302", "07304", "07305", "07306"), 1),
    ("Trenton", "NJ", "609", ("08608", "08609", "08611", "08618"), 1),
    ("Camden", "NJ", "856", ("08102", "08103", "08104", "08105"), 1),
    ("New York", "NY", "212", ("10001", "10002", "10011", "10016", "10023", "10025"), 3),
    ("Brooklyn", "NY", "718", ("11201", "11211", "11215", "11226"), 2),
    ("Buffalo", "NY", "716", ("14201", "14202", "14207", "14213"), 1),
    ("Philadelphia", "PA", "215", ("19103", "19104", "19107", "19130", "19147"), 2),
    ("Pittsburgh", "PA", "412", ("15213", "15217", "15222", "15232"), 1),
    ("Baltimore", "MD", "410", ("21201", "21202", "21218", "21224"), 1),
    ("Wilmington", "DE", "302", ("19801", "19802", "19805", "19806"), 1),
    ("Richmond", "VA", "804", ("23219", "23220", "23221", "23223"), 1),
    ("Charlotte", "NC", "704", ("28202", "28203", "28204", "28205"), 1),
    ("Winston-Salem", "NC", "336", ("27101", "27103", "27104"), 1),
    ("Atlanta", "GA", "404", ("30303", "30305", "30306", "30308", "30309"), 1),
    ("Miami", "FL", "305", ("33125", "33130", "33131", "33133", "33137"), 1),
    ("Tampa", "FL", "813", ("33602", "33603", "33606", "33609"), 1),
    ("Orlando", "FL", "407", ("32801", "32803", "32804", "32806"), 1),
    ("Nashville", "TN", "615", ("37203", "37204", "37206", "37208"), 1),
    ("Louisville", "KY", "502", ("40202", "40204", "40205", "40206"), 1),
    ("Columbus", "OH", "614", ("43201", "43205", "43206", "43215"), 1),
    ("Cleveland", "OH", "216", ("44102", "44113", "44114", "44118"), 1),
    ("Detroit", "MI", "313", ("48201", "48207", "48226"), 1),
    ("Indianapolis", "IN", "317", ("46202", "46203", "46204", "46205"), 1),
    ("Chicago", "IL", "312", ("60601", "60605", "60607", "60610", "60614"), 2),
    ("Milwaukee", "WI", "414", ("53202", "53204", "53207", "53211"), 1),
    ("Minneapolis", "MN", "612", ("55401", "55403", "55405", "55406", "55408"), 1),
    ("Des Moines", "IA", "515", ("50309", "50310", "50312", "50314"), 1),
    ("Kansas City", "MO", "816", ("64105", "64106", "64108", "64111"), 1),
    ("St. Louis", "MO", "314", ("63101", "63103", "63104", "63108"), 1),
    ("Omaha", "NE", "402", ("68102", "68105", "68106", "68131"), 1),
    ("Fargo", "ND", "701", ("58102", "58103", "58104"), 1),
    ("Sioux Falls", "SD", "605", ("57103", "57104", "57105"), 1),
    ("Oklahoma City", "OK", "405", ("73102", "73103", "73106", "73118"), 1),
    ("Dallas", "TX", "214", ("75201", "75204", "75205", "75206"), 1),
    ("Houston", "TX", "713", ("77002", "77004", "77006", "77007", "77019"), 2),
    ("Austin", "TX", "512", ("78701", "78702", "78703", "78704", "78705"), 1),
    ("San Antonio", "TX", "210", ("78205", "78207", "78209", "78212"), 1),
    ("New Orleans", "LA", "504", ("70112", "70115", "70116", "70118"), 1),
    ("Little Rock", "AR", "501", ("72201", "72202", "72204", "72205"), 1),
    ("Jackson", "MS", "601", ("39201", "39202", "39206", "39211"), 1),
    ("Birmingham", "AL", "205", ("35203", "35205", "35209", "35233"), 1),
    ("Columbia", "SC", "803", ("29201", "29203", "29204", "29205"), 1),
    ("Denver", "CO", "303", ("80202", "80203", "80205", "80206", "80218"), 1),
    ("Cañon City", "CO", "719", ("81212",), 0.3),
    ("Salt Lake City", "UT", "801", ("84101", "84102", "84103", "84105"), 1),
    ("Boise", "ID", "208", ("83702", "83704", "83705", "83706"), 1),
    ("Coeur d'Alene", "ID", "208", ("83814", "83815"), 0.5),
    ("Albuquerque", "NM", "505", ("87102", "87104", "87106", "87108"), 1),
    ("Española", "NM", "505", ("87532",), 0.3),
    ("Phoenix", "AZ", "602", ("85003", "85004", "85006", "85008", "85012"), 1),
    ("Las Vegas", "NV", "702", ("89101", "89102", "89104", "89106"), 1),
    ("Los Angeles", "CA", "213", ("90012", "90013", "90015", "90017", "90026"), 2),
    ("San Diego", "CA", "619", ("92101", "92102", "92103", "92104"), 1),
    ("San Francisco", "CA", "415", ("94102", "94103", "94107", "94110", "94117"), 1),
    ("Portland", "OR", "503", ("97201", "97205", "97209", "97211", "97214"), 1),
    ("Seattle", "WA", "206", ("98101", "98102", "98103", "98105", "98109"), 1),
    ("Billings", "MT", "406", ("59101", "59102", "59105"), 0.5),
    ("Cheyenne", "WY", "307", ("82001", "82007", "82009"), 0.5),
    ("Anchorage", "AK", "907", ("99501", "99503", "99504", "99508"), 0.5),
    ("Honolulu", "HI", "808", ("96813", "96814", "96815", "96816", "96822"), 0.5),
    ("Charleston", "WV", "304", ("25301", "25302", "25304", "25311"), 0.5),
)
# Exchanges that libphonenumber accepts with every area code above (the tests check each number);
# no N11 and no 555, which stricter validators refuse.
_EXCHANGES = (
    232, 248, 273, 296, 321, 342, 367, 389, 424, 436, 452, 478, 523, 541, 569, 582, 624, 637, 653,
    691, 724, 746, 762, 789, 823, 847, 864, 892, 923, 934, 947, 968,
)
_STATE_NAMES = {
    "AK": "Alaska", "AL": "Alabama", "AR": "Arkansas", "AZ": "Arizona", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "FL": "Florida", "GA": "Georgia",
    "HI": "Hawaii", "IA": "Iowa", "ID": "Idaho", "IL": "Illinois", "IN": "Indiana", "KY": "Kentucky",
    "LA": "Louisiana", "MA": "Massachusetts", "MD": "Maryland", "ME": "Maine", "MI": "Michigan",
    "MN": "Minnesota", "MO": "Missouri", "MS": "Mississippi", "MT": "Montana", "NC": "North Carolina",
    "ND": "North Dakota", "NE": "Nebraska", "NH": "New Hampshire", "NJ": "New Jersey",
    "NM": "New Mexico", "NV": "Nevada", "NY": "New York", "OH": "Ohio", "OK": "Oklahoma",
    "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina",
    "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VA": "Virginia",
    "VT": "Vermont", "WA": "Washington", "WI": "Wisconsin", "WV": "West Virginia", "WY": "Wyoming",
}
# example.com/.net/.org are reserved for documentation: nothing generated can reach a real mailbox.
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org")

# Values that break exactly one rule each (add_problems).
_SCIENTIFIC_ACCOUNT_RANGE = (10**11, 10**12)  # 12 digits: Excel shows them as 1.23457E+11
_INVALID_EMAILS = ("jsmith@", "mary.jones@@example.com", "bob.example.com", "ann@example",
                   "li wei@example.com", "@example.com")
_INVALID_PHONES = ("555-1234", "12345", "617-555-12345", "(617) 555-123")
_INVALID_ZIPS = ("ABCDE", "123456", "12", "9O210")
_UNKNOWN_STATES = ("XX", "ZZ", "QQ", "Atlantis")


def _slug(name: str) -> str:
    """ASCII letters of a name, lower-cased, for e-mail local parts (Nguyễn → nguyen)."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isascii() and c.isalpha()).lower()


def _pool(values: Sequence[str] | np.ndarray) -> pd.Series:
    return pd.Series(list(values), dtype="str")


def _name_pool(common: Sequence[str], special: Sequence[str]) -> tuple[pd.Series, pd.Series, np.ndarray]:
    names = (*common, *special)
    weights = np.concatenate([np.full(len(common), (1 - _SPECIAL_NAME_SHARE) / len(common)),
                              np.full(len(special), _SPECIAL_NAME_SHARE / len(special))])
    return _pool(names), _pool([_slug(n) for n in names]), weights


_FEMALE = _name_pool(_FEMALE_COMMON, _FEMALE_SPECIAL)
_MALE = _name_pool(_MALE_COMMON, _MALE_SPECIAL)
_FIRST = pd.concat([_FEMALE[0], _MALE[0]], ignore_index=True)
_FIRST_SLUG = pd.concat([_FEMALE[1], _MALE[1]], ignore_index=True)
_LAST = _name_pool(_LAST_COMMON, _LAST_SPECIAL)
_CITY_NAMES = _pool([c[0] for c in _CITIES])
_CITY_STATES = _pool([c[1] for c in _CITIES])
_CITY_AREA_CODES = np.array([int(c[2]) for c in _CITIES], dtype=np.int64)
_CITY_WEIGHTS = np.array([c[4] for c in _CITIES]) / sum(c[4] for c in _CITIES)
_ZIPS = _pool([z for c in _CITIES for z in c[3]])
_ZIP_COUNTS = np.array([len(c[3]) for c in _CITIES])
_ZIP_STARTS = np.concatenate([[0], np.cumsum(_ZIP_COUNTS)[:-1]])


# --- vectorised string helpers ---------------------------------------------------------------
#
# Columns are pandas "str" Series, stored as Arrow strings. Checks that pandas would run as
# regular expressions go straight to Arrow kernels or to numpy over the Arrow buffers: at a
# million rows a regular expression per column costs seconds.

def _take(pool: pd.Series, positions: np.ndarray) -> pd.Series:
    return _series(_arrow(pool).take(pa.array(positions, type=pa.int64())))


def _digits(values: np.ndarray, width: int = 0) -> pd.Series:
    text = pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.large_string())
    return _series(pc.utf8_lpad(text, width, "0") if width else text)


def _constant(value: str, n: int) -> pd.Series:
    return _take(_pool([value]), np.zeros(n, dtype=np.int64))


_NOTHING = pa.scalar("", pa.large_string())


def _join(*parts: pd.Series | str) -> pd.Series:
    """Row-wise concatenation in one Arrow pass (chained ``+`` copies every partial result)."""
    args = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else _arrow(p) for p in parts]
    return _series(pc.binary_join_element_wise(*args, _NOTHING))


def _series(arr: pa.Array) -> pd.Series:
    return pd.Series(pd.array(arr, dtype="str"))


def _where(condition: np.ndarray, s: pd.Series | str, other: pd.Series | str) -> pd.Series:
    """``s`` where ``condition`` holds, else ``other``: one Arrow pass, no pandas alignment."""
    s, other = (pa.scalar(v, pa.large_string()) if isinstance(v, str) else _arrow(v) for v in (s, other))
    return _series(pc.if_else(pa.array(condition, type=pa.bool_()), s, other))


def _apply(s: pd.Series, hit: np.ndarray, change: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``s`` with ``change`` applied to the rows hit only."""
    rows = np.flatnonzero(hit)
    return _assign(s, rows, change(s.iloc[rows].reset_index(drop=True)).to_numpy()) if len(rows) else s


def _assign(s: pd.Series, rows: np.ndarray, values: np.ndarray) -> pd.Series:
    """``s`` with ``values`` put at positions ``rows``."""
    if not len(rows):
        return s
    order = np.argsort(rows, kind="stable")
    mask = np.zeros(len(s), dtype=bool)
    mask[rows] = True
    replacements = pa.array(np.asarray(values, dtype=object)[order], type=pa.large_string())
    return _series(pc.replace_with_mask(_arrow(s), pa.array(mask), replacements))


def _arrow(s: pd.Series) -> pa.LargeStringArray:
    arr = pa.array(s)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if arr.type == pa.large_string() else arr.cast(pa.large_string())


def _flags(result: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(result, False).to_numpy(zero_copy_only=False)


def _is_decimal(s: pd.Series, length: int | None = None) -> np.ndarray:
    """ASCII digits only, at least one (and exactly ``length``)."""
    arr = _arrow(s)
    digits = _flags(pc.ascii_is_decimal(arr))
    return digits & (_flags(pc.equal(pc.utf8_length(arr), length))) if length else digits


def _contains_any(s: pd.Series, chars: str) -> np.ndarray:
    """Rows holding any of the ASCII ``chars``, found by scanning the Arrow data buffer."""
    arr = _arrow(s)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    found = np.zeros(len(arr), dtype=bool)
    if arr.buffers()[2] is None or offsets[-1] == offsets[0]:
        return found
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    hit = np.zeros(len(data), dtype=bool)
    for byte in chars.encode("ascii"):
        hit |= data == byte
    found[np.searchsorted(offsets, np.flatnonzero(hit) + offsets[0], side="right") - 1] = True
    return found


def _variants(rng: np.random.Generator, n: int, shares: Sequence[float],
              allowed: np.ndarray | None = None) -> np.ndarray:
    """Variant k+1 for ``shares[k]`` of the rows, 0 for the rest and for rows not ``allowed``."""
    p = np.array([1 - sum(shares), *shares])
    variant = rng.choice(len(p), size=n, p=p)
    if allowed is not None:
        variant[~allowed] = 0
    return variant


def _ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    month_start = days.astype("datetime64[M]")
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = month_start.astype(np.int64) % 12 + 1
    day = (days - month_start.astype("datetime64[D]")).astype(np.int64) + 1
    return year, month, day


def _mdy(days: np.ndarray) -> pd.Series:
    """Dates as Genesis writes them, m/d/yyyy; each day of the range is formatted once."""
    if not len(days):
        return _pool([])
    first = days.min()
    calendar = first + np.arange((days.max() - first).astype(np.int64) + 1)
    year, month, day = _ymd(calendar)
    formatted = _join(_digits(month), "/", _digits(day), "/", _digits(year))
    return _take(formatted, (days - first).astype(np.int64))


def _parse_mdy(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Which values are real m/d/yyyy (or mm/dd/yyyy) dates, and those dates as datetime64[D]."""
    arr = _arrow(s)
    days = np.full(len(arr), np.datetime64("NaT"), dtype="datetime64[D]")
    parts = pc.split_pattern(arr, "/")
    candidate = (_flags(pc.equal(pc.list_value_length(parts), 3))
                 & _flags(pc.ascii_is_decimal(pc.replace_substring(arr, "/", ""))))
    rows = np.flatnonzero(candidate)
    widths = pc.utf8_length(pc.list_flatten(parts.take(pa.array(rows)))).to_numpy().reshape(-1, 3)
    rows = rows[(widths[:, 0] >= 1) & (widths[:, 0] <= 2) & (widths[:, 1] >= 1) & (widths[:, 1] <= 2)
                & (widths[:, 2] == 4)]
    numbers = pc.cast(pc.list_flatten(parts.take(pa.array(rows))), pa.int64()).to_numpy()
    month, day, year = numbers.reshape(-1, 3).T
    plausible = (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
    rows, month, day, year = rows[plausible], month[plausible], day[plausible], year[plausible]
    dates = ((year - 1970) * 12 + month - 1).astype("datetime64[M]").astype("datetime64[D]") + (day - 1)
    real = _ymd(dates)[2] == day  # 2/30 rolls into March
    days[rows[real]] = dates[real]
    valid = np.zeros(len(arr), dtype=bool)
    valid[rows[real]] = True
    return valid, days


# --- patients --------------------------------------------------------------------------------

def generate_patients(rows: int, *, seed: int = 0, first_account: int = 10001,
                      inactive_share: float = 0.05, today: date | None = None) -> pd.DataFrame:
    """Clean patients as Genesis exports them, one row per patient.

    Args:
        rows: number of patients.
        seed: the same seed (and ``today``) gives the same patients.
        first_account: account numbers run from here, one per patient, in row order.
        inactive_share: share of patients whose status is "Inactive".
        today: the day birth and visit dates are counted back from (default: today).

    Returns:
        Columns ``schema.FIELD_NAMES``, all ``str``, "" for an empty value. Phones are 10 digits,
        dates m/d/yyyy, sex M/F, status Active/Inactive.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    _check_share("inactive_share", inactive_share)
    today64 = np.datetime64(today or date.today(), "D")
    blocks = [_patient_block(np.random.default_rng([seed, _PATIENTS, k]), n, first_account + start,
                             inactive_share, today64) for k, (start, n) in enumerate(_blocks(rows))]
    if not blocks:
        return _patient_block(np.random.default_rng(0), 0, first_account, inactive_share, today64)
    return pd.concat(blocks, ignore_index=True)


def _blocks(rows: int) -> list[tuple[int, int]]:
    """(first row, rows) of each block."""
    return [(start, min(_BLOCK_ROWS, rows - start)) for start in range(0, rows, _BLOCK_ROWS)]


def _patient_block(rng: np.random.Generator, rows: int, first_account: int, inactive_share: float,
                   today64: np.datetime64) -> pd.DataFrame:
    female = rng.random(rows) < 0.55  # chiropractic patients are a little more often women
    f_idx = np.where(female, rng.choice(len(_FEMALE[0]), size=rows, p=_FEMALE[2]),
                     len(_FEMALE[0]) + rng.choice(len(_MALE[0]), size=rows, p=_MALE[2]))
    l_idx = rng.choice(len(_LAST[0]), size=rows, p=_LAST[2])
    first = _take(_FIRST, f_idx)
    first_slug = _take(_FIRST_SLUG, f_idx)
    last = _take(_LAST[0], l_idx)
    last_slug = _take(_LAST[1], l_idx)
    initials = _pool(["", *"ABCDEFGHIJKLMNOPRSTVW"])
    middle = _take(initials, np.where(rng.random(rows) < 0.6, rng.integers(1, len(initials), rows), 0))

    city = rng.choice(len(_CITIES), size=rows, p=_CITY_WEIGHTS)
    zip_idx = _ZIP_STARTS[city] + (rng.random(rows) * _ZIP_COUNTS[city]).astype(np.int64)
    house = np.clip(rng.lognormal(5.0, 1.3, rows), 1, 19999).astype(np.int64)
    address1 = _join(_digits(house), " ", _take(_pool(_STREETS), rng.integers(0, len(_STREETS), rows)))
    po_box = rng.random(rows) < 0.02
    address1 = _where(~po_box, address1, _join("PO Box ", _digits(rng.integers(1, 9999, rows))))
    address2 = _address2(rng, rows)

    home = _phones(rng, _CITY_AREA_CODES[city])
    cell_area = np.where(rng.random(rows) < 0.8, _CITY_AREA_CODES[city],
                         _CITY_AREA_CODES[rng.integers(0, len(_CITIES), rows)])  # moved, kept their number
    cell = _phones(rng, cell_area)
    home = _where(rng.random(rows) >= 0.45, home, "")
    cell = _where(rng.random(rows) >= 0.15, cell, "")
    email = _where(rng.random(rows) >= 0.25, _emails(rng, first_slug, last_slug), "")

    age_days = ((1 + rng.beta(2.0, 2.6, rows) * 99) * 365.25).astype(np.int64)
    birth = today64 - np.clip(age_days, 366, 36_500)
    inactive = rng.random(rows) < inactive_share
    visit_ago = np.where(inactive, rng.integers(365, 8 * 365, rows), rng.integers(0, 3 * 365, rows))
    visit = np.maximum(today64 - visit_ago, birth + 30)
    visit = np.busday_offset(visit, 0, roll="backward", weekmask="1111110")  # clinics close on Sundays

    patients = pd.DataFrame({
        "account_number": _digits(first_account + np.arange(rows, dtype=np.int64)),
        "last_name": last,
        "first_name": first,
        "middle_initial": middle,
        "address1": address1,
        "address2": address2,
        "city": _take(_CITY_NAMES, city),
        "state": _take(_CITY_STATES, city),
        "zip": _take(_ZIPS, zip_idx),
        "home_phone": home,
        "cell_phone": cell,
        "email": email,
        "birth_date": _where(rng.random(rows) >= 0.01, _mdy(birth), ""),
        "gender": _take(_pool(["M", "F"]), female.astype(np.int64)),
        "status": _take(_pool(["Active", "Inactive"]), inactive.astype(np.int64)),
        "last_visit": _where(rng.random(rows) >= 0.02, _mdy(visit), ""),
    })
    return patients[list(FIELD_NAMES)]


def _address2(rng: np.random.Generator, rows: int) -> pd.Series:
    kinds = _take(_pool(_ADDRESS2_KINDS), rng.integers(0, len(_ADDRESS2_KINDS), rows))
    unit = _digits(rng.integers(1, 40, rows))
    letter = _take(_pool(["", *"ABCDEF"]), np.where(rng.random(rows) < 0.4, rng.integers(1, 7, rows), 0))
    quotable = _take(_pool(_ADDRESS2_QUOTABLE), rng.integers(0, len(_ADDRESS2_QUOTABLE), rows))
    variant = _variants(rng, rows, (0.12, 0.004))  # none, "Apt 4B", one that needs quoting
    return _where(variant == 1, _join(kinds, unit, letter), _where(variant == 2, quotable, ""))


def _phones(rng: np.random.Generator, area: np.ndarray) -> pd.Series:
    """10-digit US numbers that phonenumbers accepts: real area code, listed exchange, any line."""
    exchange = np.array(_EXCHANGES, dtype=np.int64)[rng.integers(0, len(_EXCHANGES), len(area))]
    return _digits(area * 10_000_000 + exchange * 10_000 + rng.integers(0, 10_000, len(area)))


def _emails(rng: np.random.Generator, first: pd.Series, last: pd.Series) -> pd.Series:
    rows = len(first)
    style = _variants(rng, rows, (0.2, 0.1, 0.1))  # first.last, f.last, last.first, first + number
    a = _where(style == 2, last, _where(style == 1, first.str[0], first))
    b = _where(style == 2, first, _where(style == 3, "", last))
    sep = _take(_pool((".", "", "_")), np.where(style == 3, 1, rng.choice(3, size=rows, p=(0.6, 0.3, 0.1))))
    number = _where((rng.random(rows) < 0.25) | (style == 3), _digits(rng.integers(1, 100, rows)), "")
    domain = _take(_pool(_EMAIL_DOMAINS), rng.choice(3, size=rows, p=(0.6, 0.25, 0.15)))
    return _join(a, sep, b, number, "@", domain)


# --- bad rows and duplicates -----------------------------------------------------------------

def _bad_kinds(rng: np.random.Generator,
               today64: np.datetime64) -> tuple[tuple[str, str, Callable[[int], pd.Series]], ...]:
    """(code, field, maker of bad values): one rule broken per row, in the order kinds are dealt."""
    def pick(pool: Sequence[str]) -> Callable[[int], pd.Series]:
        return lambda n: _take(_pool(pool), rng.integers(0, len(pool), n))

    def scientific(n: int) -> pd.Series:
        # A 12-digit number in Excel's General format; the lost digits cannot come back.
        return _pool([f"{v:.5E}" for v in rng.integers(*_SCIENTIFIC_ACCOUNT_RANGE, n).astype(float)])

    return (
        (problems.MISSING_REQUIRED_FIELD, "last_name", lambda n: _constant("", n)),
        (problems.MISSING_REQUIRED_FIELD, "first_name", lambda n: _constant("", n)),
        (problems.MISSING_REQUIRED_FIELD, "account_number", lambda n: _constant("", n)),
        (problems.INVALID_ACCOUNT_NUMBER, "account_number", scientific),
        (problems.invalid_code("email"), "email", pick(_INVALID_EMAILS)),
        (problems.invalid_code("home_phone"), "home_phone", pick(_INVALID_PHONES)),
        (problems.invalid_code("cell_phone"), "cell_phone", pick(_INVALID_PHONES)),
        (problems.invalid_code("zip"), "zip", pick(_INVALID_ZIPS)),
        (problems.invalid_code("birth_date"), "birth_date",
         lambda n: _mdy(today64 + rng.integers(1, 366, n))),
        (problems.invalid_code("state"), "state", pick(_UNKNOWN_STATES)),
    )


_CONFLICT_SHARE = 0.2  # of the duplicates: same account number, another patient's data
# Of the people added under a new account number: namesakes (same name, another birth date), the
# rest the same person again (possible_duplicate_patient).
_NAMESAKE_SHARE = 0.3


def add_problems(patients: pd.DataFrame, *, seed: int = 0, bad_share: float = 0.03,
                 duplicate_share: float = 0.01, today: date | None = None,
                 near_duplicate_share: float = 0.0) -> pd.DataFrame:
    """Patients with bad rows and duplicates added, in file order, saying what each row carries.

    A share ``bad_share`` of the patients break one rule each, the kinds dealt in turn: a missing
    last name, first name or account number, a scientific-notation account number (these 4 in 10
    reject the row), an invalid e-mail, home phone, cell phone or zip, a future birth date, an
    unknown state. ``duplicate_share`` adds copies of other patients at random places: 80 % exact
    copies (``duplicate_row`` on all but the first), 20 % another patient's data under an existing
    account number (``duplicate_account_number`` on both rows). ``near_duplicate_share`` adds
    people under new account numbers: 70 % the same person as an active patient with a birth date
    (first and last name written in another case, without accents, without punctuation or with
    other spaces; ``possible_duplicate_patient`` on both rows, as SPEC §8 warns every new patient
    of the pair), 30 % namesakes (same names, another birth date: no warning). Against a store
    that already holds the original, only the added row is warned.

    Args:
        patients: from ``generate_patients``.
        seed: the same seed gives the same rows.
        bad_share: share of ``patients`` made bad.
        duplicate_share: rows added, as a share of ``patients``.
        today: the day a birth date must not pass (default: today).
        near_duplicate_share: people added under new account numbers, as a share of ``patients``;
            their account numbers follow the highest of ``patients``.

    Returns:
        The rows to write, with two more columns, ``EXPECTED_CODE`` and ``EXPECTED_FIELD``: the
        problem the import report should give the row ("" for a clean row). Warnings that Excel's
        damage adds (``zip_padded``) are not listed.

    Raises:
        ValueError: a share outside [0, 1], or more problems than patients to carry them.
    """
    _check_share("bad_share", bad_share)
    _check_share("duplicate_share", duplicate_share)
    _check_share("near_duplicate_share", near_duplicate_share)
    rng = np.random.default_rng([seed, _PROBLEMS])
    highest = pd.to_numeric(patients["account_number"], errors="coerce").max() if len(patients) else 0
    return _add_problems(patients, rng, np.datetime64(today or date.today(), "D"),
                         round(bad_share * len(patients)), round(duplicate_share * len(patients)),
                         round(near_duplicate_share * len(patients)), int(0 if pd.isna(highest) else highest) + 1)


def _add_problems(patients: pd.DataFrame, rng: np.random.Generator, today64: np.datetime64,
                  n_bad: int, n_dup: int, n_near: int = 0, near_account: int = 0) -> pd.DataFrame:
    n = len(patients)
    n_conflict = round(n_dup * _CONFLICT_SHARE)
    if n_bad + n_dup + n_conflict + n_near > n:
        raise ValueError(f"{n} patients cannot carry {n_bad} bad rows, {n_dup} duplicates and "
                         f"{n_near} near-duplicates")

    # Disjoint roles, so each row carries one problem: bad rows, copied rows, donors of other data.
    shuffled = rng.permutation(n)
    bad = shuffled[:n_bad]
    sources = shuffled[n_bad:n_bad + n_dup]
    donors = shuffled[n_bad + n_dup:n_bad + n_dup + n_conflict]
    conflict_sources = sources[:n_conflict]

    frame = patients[list(FIELD_NAMES)]  # copy-on-write: changed columns are replaced, not edited
    kinds = _bad_kinds(rng, today64)
    # Each row's problem as a position in `carried`: 0 for none, then the bad kinds, then duplicates.
    carried = [("", ""), *((code, field) for code, field, _ in kinds),
               (problems.DUPLICATE_ACCOUNT_NUMBER, "account_number"),
               (problems.DUPLICATE_ROW, "account_number"),
               (problems.POSSIBLE_DUPLICATE_PATIENT, "")]
    conflict, duplicate, same_person = len(carried) - 3, len(carried) - 2, len(carried) - 1
    problem = np.zeros(n, dtype=np.int64)
    dealt = rng.permutation(np.arange(n_bad) % len(kinds))
    for k, (_, kind_field, make) in enumerate(kinds):
        rows = bad[dealt == k]
        if len(rows):
            frame[kind_field] = _assign(frame[kind_field], rows, make(len(rows)).to_numpy())
            problem[rows] = k + 1
    problem[conflict_sources] = conflict

    # Added rows are taken from `frame` (donors first), inserted at random places.
    taken_from = np.concatenate([np.arange(n), donors, sources[n_conflict:]])
    order = np.argsort(np.concatenate([np.arange(n, dtype=float), rng.uniform(0, n, n_dup)]), kind="stable")
    source_row = taken_from[order]
    out = frame.take(source_row).reset_index(drop=True)
    problem = problem[source_row]

    conflict_at = np.flatnonzero((order >= n) & (order < n + n_conflict))
    if len(conflict_at):
        accounts = frame["account_number"].to_numpy()[conflict_sources[order[conflict_at] - n]]
        out["account_number"] = _assign(out["account_number"], conflict_at, accounts)
        problem[conflict_at] = conflict

    # Of an exact copy and its original, the one higher in the file counts; the other is skipped.
    copied = np.isin(source_row, sources[n_conflict:])
    later = copied & pd.Series(np.where(copied, source_row, -1)).duplicated(keep="first").to_numpy()
    problem[later] = duplicate

    if n_near:
        out, problem = _add_near_duplicates(frame, out, problem, source_row, shuffled[n_bad + n_dup + n_conflict:],
                                            rng, n_near, near_account, same_person)
    out[EXPECTED_CODE] = _take(_pool([code for code, _ in carried]), problem)
    out[EXPECTED_FIELD] = _take(_pool([field for _, field in carried]), problem)
    return out


def _add_near_duplicates(frame: pd.DataFrame, out: pd.DataFrame, problem: np.ndarray, source_row: np.ndarray,
                         free: np.ndarray, rng: np.random.Generator, n_near: int, first_account: int,
                         same_person: int) -> tuple[pd.DataFrame, np.ndarray]:
    """`out` with `n_near` people added under new account numbers at random places (see add_problems).

    `free`: rows of `frame` that carry no problem and are not copied, in random order; the people
    are taken from those that are active and have a birth date (every one of them is then new).
    """
    eligible = free[((frame["status"].to_numpy(dtype=object)[free] == "Active")
                     & (frame["birth_date"].to_numpy(dtype=object)[free] != ""))]
    if len(eligible) < n_near:
        raise ValueError(f"only {len(eligible)} active patients with a birth date to add {n_near} near-duplicates of")
    sources = eligible[:n_near]
    namesake = rng.random(n_near) < _NAMESAKE_SHARE
    added = frame.take(sources).reset_index(drop=True)
    added["account_number"] = _digits(first_account + np.arange(n_near, dtype=np.int64))
    kind = rng.integers(0, 4, n_near)
    added["first_name"] = _name_variant(added["first_name"], kind)
    added["last_name"] = _name_variant(added["last_name"], kind)
    valid, born = _parse_mdy(added["birth_date"])
    born = np.where(valid, born, np.datetime64("2000-01-01", "D"))
    shifted = _mdy(born - rng.integers(1, 3650, n_near))  # earlier: never in the future, under 120 years
    added["birth_date"] = _where(namesake & valid, shifted, added["birth_date"])
    problem = problem.copy()
    problem[np.isin(source_row, sources[~namesake])] = same_person
    added_problem = np.where(namesake, 0, same_person)
    order = np.argsort(np.concatenate([np.arange(len(out), dtype=float), rng.uniform(0, len(out), n_near)]),
                       kind="stable")
    both = pd.concat([out, added[out.columns]], ignore_index=True).take(order).reset_index(drop=True)
    return both, np.concatenate([problem, added_problem])[order]


def _name_variant(names: pd.Series, kind: np.ndarray) -> pd.Series:
    """The same name as someone else at the front desk would type it: upper case (0), lower case
    with stray spaces (1), accents stripped in upper case (2), punctuation dropped and spaces
    doubled in lower case (3)."""
    text = names.astype(object)
    upper = text.str.upper()
    lower = " " + text.str.lower() + "  "
    plain = text.str.normalize("NFKD").str.replace("[\u0300-\u036f]", "", regex=True).str.upper()
    unpunctuated = text.str.replace("[-'.]", "", regex=True).str.replace(" ", "\u00a0 ", regex=False).str.lower()
    chosen = np.select([kind == 0, kind == 1, kind == 2], [upper, lower, plain], unpunctuated)
    return pd.Series(pd.array(chosen.astype(object), dtype="str"))


def _check_share(name: str, share: float) -> None:
    if not 0 <= share <= 1:
        raise ValueError(f"{name} must be between 0 and 1, got {share}")


# --- Excel artefacts -------------------------------------------------------------------------
#
# Every artefact leaves the normalised value as it was (SPEC §2), so a row keeps its outcome:
# an exact copy stays an exact copy however each copy is rendered. The two that add data (a phone
# extension, a line break in a cell) are kept off rows whose account number occurs more than once.

def _render_account(s: pd.Series, rng: np.random.Generator) -> pd.Series:
    # ="10001" is how exporters make Excel keep leading zeros; 10001.0 went through a float.
    variant = _variants(rng, len(s), (0.04, 0.03, 0.02, 0.03, 0.01), _is_decimal(s))
    before = _take(_pool(("", '="', "00", "#", "", " ")), variant)
    after = _take(_pool(("", '"', "", "", ".0", " ")), variant)
    return _join(before, s, after)


def _render_phone(s: pd.Series, rng: np.random.Generator, extension_ok: np.ndarray) -> pd.Series:
    ten = _is_decimal(s, 10)
    variant = _variants(rng, len(s), (0.30, 0.25, 0.10, 0.04, 0.03, 0.05, 0.03), ten)
    variant[(variant == 7) & ~extension_ok] = 2
    # as is, (617) 555-1234, 617-555-1234, 617.555.1234, 1-617-555-1234, +1 617 555 1234,
    # (617)555-1234, 617-555-1234 x12
    before = ("", "(", "", "", "1-", "+1 ", "(", "")
    middle = ("", ") ", "-", ".", "-", " ", ")", "-")
    after = ("", "-", "-", ".", "-", " ", "-", "-")
    extension = _take(_pool(("", " x12", " x204", " ext. 7", " ext 31")),
                      np.where(variant == 7, rng.integers(1, 5, len(s)), 0))
    formatted = _join(_take(_pool(before), variant), s.str[:3], _take(_pool(middle), variant), s.str[3:6],
                      _take(_pool(after), variant), s.str[6:], extension)
    return _where(ten, formatted, s)


def _render_date(s: pd.Series, rng: np.random.Generator, xlsx: bool,
                 two_digit_years: tuple[int, int]) -> pd.Series | np.ndarray:
    """Dates as Excel leaves them; each distinct value is parsed and formatted once.

    Two-digit years only within ``two_digit_years`` (inclusive), where every usual pivot
    (Excel's 1930, Python's 1969, "not in the future") reads them the same way.
    """
    codes, uniques = pd.factorize(s)
    uniques = pd.Series(uniques, dtype="str")
    valid_u, days_u = _parse_mdy(uniques)
    valid = valid_u[codes]
    if xlsx:
        cells = s.to_numpy(dtype=object)
        variant = _variants(rng, len(s), (0.5, 0.05), valid)
        days = days_u[codes]
        cells[variant == 1] = days[variant == 1].astype("datetime64[us]").astype(object)
        cells[variant == 2] = (days[variant == 2] - _EXCEL_EPOCH).astype(np.int64).astype(object)
        return cells

    known = np.where(valid_u, days_u, _EXCEL_EPOCH)
    year, month, day = _ymd(known)
    lo, hi = two_digit_years
    short = _join(_digits(month), "/", _digits(day), "/", _digits(year % 100, 2))
    table = pd.concat([
        uniques,
        _join(_digits(month, 2), "/", _digits(day, 2), "/", _digits(year)),
        _where((year >= lo) & (year <= hi), short, uniques),
        _digits((known - _EXCEL_EPOCH).astype(np.int64)),
        _join(_digits(year), "-", _digits(month, 2), "-", _digits(day, 2)),
    ], ignore_index=True)
    variant = _variants(rng, len(s), (0.10, 0.08, 0.05, 0.03), valid)
    return _take(table, variant * len(uniques) + codes)


def _render_choice(s: pd.Series, rng: np.random.Generator,
                   spellings: dict[str, tuple[tuple[str, float], ...]]) -> pd.Series:
    """Known values replaced by one of their other spellings, each at its share."""
    pool = np.array([spelling for options in spellings.values() for spelling, _ in options], dtype=object)
    chosen = np.full(len(s), -1)
    draw = rng.random(len(s))
    first = 0
    for value, options in spellings.items():
        k = np.searchsorted(np.cumsum([share for _, share in options]), draw, side="right")
        hit = (s == value).to_numpy() & (k < len(options))
        chosen[hit] = first + k[hit]
        first += len(options)
    rows = np.flatnonzero(chosen >= 0)
    return _assign(s, rows, pool[chosen[rows]])


_STATUS_SPELLINGS = {
    "Active": (("A", 0.04), ("Y", 0.02), ("Yes", 0.02), ("", 0.03), ("active", 0.02), ("ACTIVE", 0.02)),
    "Inactive": (("I", 0.10), ("N", 0.08), ("No", 0.04), ("inactive", 0.04), ("INACTIVE", 0.04)),
}
_GENDER_SPELLINGS = {
    "M": (("Male", 0.05), ("m", 0.03)),
    "F": (("Female", 0.05), ("f", 0.03)),
}
_STATE_CODES = pa.array(list(_STATE_NAMES), type=pa.large_string())
_STATE_FULL = _pool(list(_STATE_NAMES.values()))


def _render_state(s: pd.Series, rng: np.random.Generator) -> pd.Series:
    position = pc.index_in(_arrow(s), value_set=_STATE_CODES)
    known = _flags(pc.is_valid(position))
    draw = rng.random(len(s))
    full_rows = np.flatnonzero(known & (draw < 0.02))
    positions = position.to_numpy(zero_copy_only=False)[full_rows].astype(np.int64)
    out = _assign(s, full_rows, _STATE_FULL.to_numpy()[positions])
    return _where(known & (draw >= 0.02) & (draw < 0.05), s.str.lower(), out)


def _render_email(s: pd.Series, rng: np.random.Generator) -> pd.Series:
    arr = _arrow(s)
    plain = _flags(pc.equal(pc.count_substring(arr, "@"), 1)) & _flags(pc.match_substring(arr, "@example."))
    rows = np.flatnonzero(plain & (rng.random(len(s)) < 0.03))
    if not len(rows):
        return s
    parts = pc.split_pattern(arr.take(pa.array(rows)), "@")
    upper = pc.binary_join_element_wise(pc.list_element(parts, 0), pc.utf8_upper(pc.list_element(parts, 1)),
                                        pa.scalar("@", pa.large_string()))
    return _assign(s, rows, upper.to_numpy(zero_copy_only=False))  # domains are case-blind


def _render_spaces(s: pd.Series, rng: np.random.Generator, share: float, how: str) -> pd.Series:
    hit = (s != "").to_numpy() & (rng.random(len(s)) < share)
    if how == "trailing":
        return _apply(s, hit, lambda v: v + " ")
    if how == "leading":
        return _apply(s, hit, lambda v: " " + v)
    return _apply(s, hit, lambda v: v.str.replace(" ", "  ", n=1, regex=False))


def _numbers(s: pd.Series, rng: np.random.Generator, share: float, length: int | None = None) -> np.ndarray:
    """Cells Excel stores as numbers, for xlsx: leading zeros are gone."""
    cells = s.to_numpy(dtype=object)
    hit = _is_decimal(s, length) & (rng.random(len(s)) < share)
    cells[hit] = s[hit].astype(np.int64).to_numpy().astype(object)
    return cells


Cells = dict[str, "pd.Series | np.ndarray"]  # field -> one block's cells (object arrays for typed xlsx cells)


def _damage(block: pd.DataFrame, rng: np.random.Generator, *, xlsx: bool, data_ok: np.ndarray) -> Cells:
    """One block's cells with Excel's damage; for xlsx some cells are numbers and dates."""
    c = {name: block[name] for name in FIELD_NAMES}
    line_breaks = np.zeros(len(block), dtype=bool)
    spaced = np.flatnonzero(_contains_any(c["address2"], " ") & data_ok)
    if len(spaced):
        line_breaks[rng.choice(spaced, size=max(1, len(spaced) // 500), replace=False)] = True
    accounts = c["account_number"]
    out: Cells = {
        "account_number": _numbers(accounts, rng, 0.15) if xlsx else _render_account(accounts, rng),
        "last_name": _render_spaces(c["last_name"], rng, 0.01, "trailing"),
        "first_name": _render_spaces(c["first_name"], rng, 0.01, "leading"),
        "middle_initial": c["middle_initial"],
        "address1": _render_spaces(c["address1"], rng, 0.02, "double"),
        # Alt-Enter in a cell
        "address2": _apply(c["address2"], line_breaks, lambda v: v.str.replace(" ", "\n", n=1, regex=False)),
        "city": c["city"],
        "state": _render_state(c["state"], rng),
        "home_phone": _render_phone(c["home_phone"], rng, data_ok),
        "cell_phone": _render_phone(c["cell_phone"], rng, data_ok),
        "email": _render_email(c["email"], rng),
        "birth_date": _render_date(c["birth_date"], rng, xlsx, (1970, 1999)),
        "gender": _render_choice(c["gender"], rng, _GENDER_SPELLINGS),
        "status": _render_choice(c["status"], rng, _STATUS_SPELLINGS),
        "last_visit": _render_date(c["last_visit"], rng, xlsx, (2000, 2029)),
    }
    zips = c["zip"]
    if xlsx:
        out["zip"] = _numbers(zips, rng, 0.5, 5)  # 02134 becomes the number 2134
    else:
        leading_zero = _is_decimal(zips, 5) & _flags(pc.starts_with(_arrow(zips), "0"))
        lost = leading_zero & (rng.random(len(zips)) < 0.5)
        out["zip"] = _apply(zips, lost, lambda v: v.str.lstrip("0"))
    return out


# --- writing ---------------------------------------------------------------------------------

def write_export(patients: pd.DataFrame, path: Path, *, fmt: str = "csv", encoding: str = "utf-8-sig",
                 excel_artefacts: bool = True, seed: int = 0, header_style: str = "genesis") -> Path:
    """Write patients as a Genesis export that went through Excel.

    Args:
        patients: columns of ``schema.FIELD_NAMES``, values ``str``. Other columns are ignored;
            a field without a column is left out of the file (to make a file lacking a column).
        path: the file to write; its extension is not checked (a tab-separated ``.csv`` is real).
        fmt: "csv" (comma), "semicolon", "tsv" (the copied page saved as text) or "xlsx".
        encoding: "utf-8", "utf-8-sig" or "cp1252", for text formats. cp1252 cannot hold every
            character: as Excel does, "?" takes their place (Nguyễn → Nguy?n).
        excel_artefacts: apply, on a share of rows, what Excel does to an export: account numbers
            as ="10001", 0010001, #10001, 10001.0; leading zeros of zips dropped; phones written
            in several ways, a few with an extension; dates as mm/dd/yyyy, m/d/yy, yyyy-mm-dd or
            Excel serial numbers; other spellings of status and sex (A/I, Y/N, Male); full state
            names; stray spaces; a line break in a few address2 cells; trailing empty columns,
            blank lines, CRLF line endings. In xlsx: numbers and dates as typed cells, blank rows,
            a second sheet. Without artefacts a text file holds the values as they are, quoted
            only where needed, with LF line endings.
        seed: the same seed gives the same file.
        header_style: "genesis" (the export's own headers, in schema order) or "aliases" (other
            accepted headers in varied case, columns shuffled).

    Returns:
        ``path``.
    """
    # An exact copy must stay one: no extension or line break on a row whose account repeats.
    accounts = patients.get("account_number", pd.Series("", index=patients.index, dtype="str"))
    data_ok = ~(accounts.duplicated(keep=False) & (accounts != "")).to_numpy()
    blocks = ((patients.iloc[start:start + n], data_ok[start:start + n])
              for start, n in _blocks(len(patients)))
    return _write(blocks, len(patients), Path(path), fmt=fmt, encoding=encoding,
                  excel_artefacts=excel_artefacts, rng=np.random.default_rng([seed, _ARTEFACTS]),
                  header_style=header_style, present=[name for name in FIELD_NAMES if name in patients.columns])


def _write(blocks: Iterable[tuple[pd.DataFrame, np.ndarray | None]], rows: int, path: Path, *, fmt: str,
           encoding: str, excel_artefacts: bool, rng: np.random.Generator, header_style: str,
           present: Sequence[str] = FIELD_NAMES) -> Path:
    """Write blocks of rows as they come; ``data_ok`` None means: work it out within the block."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if header_style not in HEADER_STYLES:
        raise ValueError(f"header_style must be one of {HEADER_STYLES}, got {header_style!r}")
    if fmt == "xlsx" and 1 + rows + _blank_lines(rows) > XLSX_MAX_ROWS:
        raise ValueError(f"an xlsx sheet holds {XLSX_MAX_ROWS:,} rows; {rows:,} rows do not fit")

    headers, columns = _layout(rng, header_style, present)
    extra_columns = int(rng.integers(1, 4)) if excel_artefacts and fmt != "xlsx" else 0

    def rendered() -> Iterator[tuple[Cells, dict[int, bool]]]:
        for block, data_ok in blocks:
            block = block.reindex(columns=FIELD_NAMES, fill_value="").fillna("").astype("str")
            block = block.reset_index(drop=True)
            if not excel_artefacts:
                yield {name: block[name] for name in FIELD_NAMES}, {}
                continue
            if data_ok is None:
                accounts = block["account_number"]
                data_ok = ~(accounts.duplicated(keep=False) & (accounts != "")).to_numpy()
            at = rng.choice(len(block), size=min(len(block), _blank_lines(len(block))), replace=False)
            # after each of these rows: a truly empty line (True), or one of delimiters only
            blank_after = dict(zip(at.tolist(), (rng.random(len(at)) < 0.5).tolist()))
            yield _damage(block, rng, xlsx=fmt == "xlsx", data_ok=data_ok), blank_after

    if fmt == "xlsx":
        _write_xlsx(path, headers, columns, rendered(), excel_artefacts)
    else:
        _write_text(path, FORMATS[fmt], encoding, "\r\n" if excel_artefacts else "\n", headers, columns,
                    extra_columns, rendered(), excel_artefacts)
    return path


def _blank_lines(rows: int) -> int:
    return 1 + rows // 2000 if rows else 0


def _layout(rng: np.random.Generator, header_style: str,
            present: Sequence[str]) -> tuple[list[str], list[str]]:
    """The header cells, and the field in each column."""
    fields = [f for f in FIELDS if f.name in present]
    if header_style == "genesis":
        return [f.header for f in fields], [f.name for f in fields]
    headers, columns = [], []
    for i in rng.permutation(len(fields)):
        f = fields[i]
        names = f.aliases or (f.header,)
        header = names[int(rng.integers(0, len(names)))]
        headers.append((header, header.upper(), header.lower())[int(rng.choice(3, p=(0.6, 0.2, 0.2)))])
        columns.append(f.name)
    return headers, columns


def _write_text(path: Path, delimiter: str, encoding: str, newline: str, headers: list[str],
                columns: list[str], extra_columns: int, blocks: Iterator[tuple[Cells, dict[int, bool]]],
                excel_artefacts: bool) -> None:
    special = delimiter + '"\r\n'
    only_delimiters = delimiter * (len(columns) + extra_columns - 1)
    separator = pa.scalar(delimiter, pa.large_string())

    def quoted(s: pd.Series, bare_formula: bool) -> pd.Series:
        """RFC 4180 quoting, where a value needs it."""
        needs = _contains_any(s, special)
        if bare_formula:
            needs &= ~_flags(pc.starts_with(_arrow(s), '="'))  # written bare, as exporters do
        return _apply(s, needs, lambda v: _join('"', v.str.replace('"', '""', regex=False), '"'))

    # errors="replace": cp1252 has no ễ; Excel writes "?" in its place too.
    with open(path, "w", encoding=encoding, errors="replace", newline="") as out:
        out.write(delimiter.join(quoted(_pool([*headers, *[""] * extra_columns]), False)) + newline)
        for cells, blank_after in blocks:
            arrays = [_arrow(quoted(cells[name], name == "account_number")) for name in columns]
            arrays += [pa.nulls(len(arrays[0]), pa.large_string()).fill_null("")] * extra_columns
            lines = pc.binary_join_element_wise(*arrays, separator).to_pylist()
            for i in sorted(blank_after, reverse=True):
                lines.insert(i + 1, "" if blank_after[i] else only_delimiters)
            if lines:
                out.write(newline.join(lines) + newline)
        if excel_artefacts:  # rows Excel still counted as used
            out.write((only_delimiters + newline) * 2)


def _write_xlsx(path: Path, headers: list[str], columns: list[str],
                blocks: Iterator[tuple[Cells, dict[int, bool]]], excel_artefacts: bool) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Patient List")
    sheet.append(headers)
    for cells, blank_after in blocks:
        values = []
        for name in columns:
            column = cells[name]
            column = column.to_numpy(dtype=object) if isinstance(column, pd.Series) else column
            column[column == ""] = None  # Excel has no empty-string cells
            values.append(column)
        for i, row in enumerate(zip(*values)):
            sheet.append(row)
            if i in blank_after:
                sheet.append([])
    if excel_artefacts:
        workbook.create_sheet("Sheet2").append(["Printed from Genesis"])
    workbook.save(path)


def generate_export(path: Path, rows: int, *, seed: int = 0, fmt: str = "csv", bad_share: float = 0.03,
                    duplicate_share: float = 0.01, inactive_share: float = 0.05, first_account: int = 10001,
                    encoding: str = "utf-8-sig", excel_artefacts: bool = True, today: date | None = None,
                    header_style: str = "genesis", near_duplicate_share: float = 0.0) -> Path:
    """Write a realistic export: ``rows`` data rows of patients, bad rows, duplicates, Excel's damage.

    ``rows`` counts every data row, duplicates included (blank lines are not rows); the shares are
    shares of ``rows``. With the default shares under 2 % of the rows are rejected. Rows are made
    and written 100,000 at a time, so memory stays flat however many rows; a duplicate lies within
    the same block of rows as its original. See ``add_problems`` for the bad rows and duplicates
    and ``write_export`` for the rest.

    Returns:
        ``path``.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    for name, share in (("bad_share", bad_share), ("duplicate_share", duplicate_share),
                        ("inactive_share", inactive_share), ("near_duplicate_share", near_duplicate_share)):
        _check_share(name, share)
    today64 = np.datetime64(today or date.today(), "D")

    def blocks() -> Iterator[tuple[pd.DataFrame, None]]:
        account = first_account
        for k, (_, n) in enumerate(_blocks(rows)):
            n_dup, n_near = round(duplicate_share * n), round(near_duplicate_share * n)
            patients = _patient_block(np.random.default_rng([seed, _PATIENTS, k]), n - n_dup - n_near, account,
                                      inactive_share, today64)
            account += n - n_dup - n_near
            yield _add_problems(patients, np.random.default_rng([seed, _PROBLEMS, k]), today64,
                                round(bad_share * n), n_dup, n_near, account), None
            account += n_near

    return _write(blocks(), rows, Path(path), fmt=fmt, encoding=encoding, excel_artefacts=excel_artefacts,
                  rng=np.random.default_rng([seed, _ARTEFACTS]), header_style=header_style)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.generator",
                                     description="Write a made-up Genesis patient export.")
    parser.add_argument("--rows", type=int, required=True, help="data rows to write")
    parser.add_argument("--out", type=Path, required=True, help="file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", dest="fmt", choices=list(FORMATS), default="csv")
    parser.add_argument("--encoding", choices=ENCODINGS, default="utf-8-sig")
    parser.add_argument("--header-style", choices=HEADER_STYLES, default="genesis")
    parser.add_argument("--bad-share", type=float, default=0.03)
    parser.add_argument("--duplicate-share", type=float, default=0.01)
    parser.add_argument("--inactive-share", type=float, default=0.05)
    parser.add_argument("--near-duplicate-share", type=float, default=0.0,
                        help="people added again under new account numbers (names re-typed) or namesakes")
    parser.add_argument("--first-account", type=int, default=10001)
    parser.add_argument("--no-excel-artefacts", dest="excel_artefacts", action="store_false")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = generate_export(args.out, args.rows, seed=args.seed, fmt=args.fmt, bad_share=args.bad_share,
                           duplicate_share=args.duplicate_share, inactive_share=args.inactive_share,
                           first_account=args.first_account, encoding=args.encoding,
                           excel_artefacts=args.excel_artefacts, header_style=args.header_style,
                           near_duplicate_share=args.near_duplicate_share)
    print(f"{path}\t{args.rows} rows")  # never patient values


if __name__ == "__main__":
    main()
