"""The practice registry (SPEC §6): a YAML file of practices and the systems they use.

Light on purpose (no pandas, numpy or pyarrow): the DAG files and the UI plugin read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from include.patient_import import settings
from include.patient_import.account_numbers import normalize_account_number
from include.patient_import.files import MAX_ID_LENGTH, is_safe_id
from include.patient_import.problems import ConfigurationError
from include.patient_import.schema import FIELD_NAMES, IGNORED_HEADER_KEYS, UPLOAD_EXTRA_COLUMNS, HeaderMap, header_key

DRIP_EDUCATION = "drip_education"
AUTO_DEBIT = "auto_debit"
CASH_PLAN_CALCULATOR = "cash_plan_calculator"
SYSTEMS = frozenset({DRIP_EDUCATION, AUTO_DEBIT, CASH_PLAN_CALCULATOR})
PAYMENT_PLAN_SYSTEMS = frozenset({AUTO_DEBIT, CASH_PLAN_CALCULATOR})
DEFAULT_CAPACITY = 1000
LARGE_PAYMENT_PLAN_IMPORT = 50  # SPEC §3 rule 3: more new patients than this earns a warning


@dataclass(frozen=True)
class Approval:
    """A practice's approval thresholds (SPEC §8 "Approval"): an import over any of them waits
    before its load for a person to approve it. None turns a check off.

    Shares are fractions (0.2 is 20 %); `timeout_hours` is how long the import waits for an
    answer before it is rejected `approval_timed_out`.
    """

    max_update_share: float | None = 0.2  # of the stored patients the import would update
    max_inserts: int | None = 500  # new patients the import would insert
    min_capacity_left_share: float | None = 0.05  # of the capacity still free after the import
    column_changes: bool = True  # the export's columns differ from the last completed import's
    max_possible_duplicates: int | None = 10  # `possible_duplicate_patient` warnings
    timeout_hours: float = 24.0


# The registry's `approval` keys, what each takes and whether null (the check off) is allowed.
# Hours: at least 0.001 (3.6 s: a test's clock, not an office's) and at most a year; a larger or
# infinite value overflowed Airflow's deadline (OverflowError) or the JSON of the decision, and
# the import failed as an infrastructure fault after every retry.
MIN_TIMEOUT_HOURS, MAX_TIMEOUT_HOURS = 0.001, 8760.0
_SHARE, _COUNT, _FLAG = "a share between 0 and 1", "a whole number >= 0", "true or false"
_HOURS = f"hours between {MIN_TIMEOUT_HOURS:g} and {MAX_TIMEOUT_HOURS:g}"
APPROVAL_KEYS: dict[str, str] = {
    "max_update_share": _SHARE, "max_inserts": _COUNT, "min_capacity_left_share": _SHARE,
    "column_changes": _FLAG, "max_possible_duplicates": _COUNT, "timeout_hours": _HOURS,
}


def _approval_value(where: str, key: str, value: object) -> object:
    kind = APPROVAL_KEYS[key]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is None and kind in (_SHARE, _COUNT):
        return None
    if kind == _SHARE and number and 0 <= value <= 1:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    if kind == _COUNT and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if kind == _FLAG and isinstance(value, bool):
        return value
    if kind == _HOURS and number and MIN_TIMEOUT_HOURS <= value <= MAX_TIMEOUT_HOURS:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    allowed = kind + (" or null (check off)" if kind in (_SHARE, _COUNT) else "")
    raise ConfigurationError(f"{where}: approval.{key} must be {allowed}, not {str(value)[:40]!r}")


def _approval(where: str, entry: object) -> Approval | None:
    """The `approval` mapping of a registry entry; absent: the practice's imports never wait."""
    if entry is None or entry is False:
        return None
    if entry is True or entry == {}:
        return Approval()
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where}: approval must be a mapping of thresholds "
                                 f"({', '.join(APPROVAL_KEYS)})")
    unknown = sorted(str(k) for k in entry if k not in APPROVAL_KEYS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown approval keys {unknown}; known: {list(APPROVAL_KEYS)}")
    return Approval(**{key: _approval_value(where, key, value) for key, value in entry.items()})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Practice:
    id: str
    name: str
    capacity: int = DEFAULT_CAPACITY
    systems: frozenset[str] = frozenset()
    payment_plan_accounts: frozenset[str] = frozenset()  # normalised account numbers
    upload_extra_columns: tuple[str, ...] = ()
    # (header, field name) pairs the practice's exports use besides the schema's (SPEC §8).
    column_aliases: tuple[tuple[str, str], ...] = ()

    @property
    def header_map(self) -> HeaderMap:
        """How this practice's export headers map to fields (its `column_aliases` included)."""
        return HeaderMap.of(self.column_aliases)
    approval: Approval | None = None  # None: imports never wait for approval (SPEC §8)

    @property
    def uses_drip_education(self) -> bool:
        return DRIP_EDUCATION in self.systems

    @property
    def payment_plan_only(self) -> bool:
        """Uses only Auto-Debit and/or the Cash Plan Calculator (SPEC §3 rule 3)."""
        return bool(self.systems) and self.systems <= PAYMENT_PLAN_SYSTEMS

    @property
    def payment_plan_list(self) -> frozenset[str] | None:
        """The accounts on a payment plan, when this practice keeps such a list; else None."""
        return self.payment_plan_accounts if self.payment_plan_only and self.payment_plan_accounts else None


def _practice(entry: object, position: int) -> Practice:
    where = f"practice #{position}"
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where}: expected a mapping with id, name, capacity, systems")
    pid = str(entry.get("id") or "")
    if not is_safe_id(pid):
        raise ConfigurationError(f"{where}: id {pid[:80]!r} must be letters, digits and underscores "
                                 f"(at most {MAX_ID_LENGTH})")
    where = f"practice {pid}"
    capacity = entry.get("capacity", DEFAULT_CAPACITY)
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
        raise ConfigurationError(f"{where}: capacity must be a whole number >= 0")
    systems = _names(entry, "systems", where)
    unknown = set(systems) - SYSTEMS
    if unknown:
        raise ConfigurationError(f"{where}: unknown systems {sorted(unknown)}; known: {sorted(SYSTEMS)}")
    accounts = entry.get("payment_plan_accounts") or []
    if not isinstance(accounts, list):
        raise ConfigurationError(f"{where}: payment_plan_accounts must be a list of account numbers")
    normalised = {n for n in map(normalize_account_number, map(str, accounts)) if n is not None}
    extras = tuple(_names(entry, "upload_extra_columns", where))
    bad = [c for c in extras if c not in UPLOAD_EXTRA_COLUMNS]
    if bad:
        raise ConfigurationError(
            f"{where}: unknown upload_extra_columns {bad}; known: {sorted(UPLOAD_EXTRA_COLUMNS)}")
    return Practice(id=pid, name=str(entry.get("name") or pid), capacity=capacity,
                    systems=frozenset(systems), payment_plan_accounts=frozenset(normalised),
                    upload_extra_columns=extras, column_aliases=_column_aliases(entry, where),
                    approval=_approval(where, entry.get("approval")))


def _names(entry: dict, key: str, where: str) -> list[str]:
    """A registry list of names (`systems`, `upload_extra_columns`); anything else is refused here,
    naming the practice and the key (a number there failed every run's planning as a TypeError)."""
    value = entry.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{where}: {key} must be a list of names, not {str(value)[:40]!r}")
    return value


def _column_aliases(entry: dict, where: str) -> tuple[tuple[str, str], ...]:
    """`column_aliases: {"Pt Acct": account_number}`: header -> field name (SPEC §8), checked here so
    that a typo stops the registry from loading instead of leaving a column unread."""
    aliases = entry.get("column_aliases") or {}
    if not isinstance(aliases, dict):
        raise ConfigurationError(f"{where}: column_aliases must be a mapping of header to field name")
    seen: dict[str, tuple[str, str]] = {}
    for header, name in aliases.items():
        if not isinstance(header, str) or not header_key(header):
            raise ConfigurationError(f"{where}: column_aliases key {str(header)[:80]!r} must be a header "
                                     "holding letters or digits")
        if name not in FIELD_NAMES:
            raise ConfigurationError(f"{where}: column_aliases {header[:80]!r}: unknown field {str(name)[:80]!r}; "
                                     f"known: {', '.join(FIELD_NAMES)}")
        key = header_key(header)
        if key in IGNORED_HEADER_KEYS:
            raise ConfigurationError(f"{where}: column_aliases {header[:80]!r} is a column the pipeline writes "
                                     "itself (rejected-rows file); it cannot name a field")
        if key in seen and seen[key][1] != name:
            raise ConfigurationError(f"{where}: column_aliases {seen[key][0][:80]!r} and {header[:80]!r} are the "
                                     "same header (case, spaces and punctuation do not count) for two fields")
        seen[key] = (header, name)
    return tuple(seen.values())


def load_practices(path: Path | None = None) -> dict[str, Practice]:
    """Read and check the registry; raises ConfigurationError with the entry at fault."""
    path = path or settings.practices_file()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigurationError(f"practice registry not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"practice registry {path} is not valid YAML: {exc}") from exc
    entries = data.get("practices") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigurationError(f"practice registry {path} must have a 'practices' list")
    practices: dict[str, Practice] = {}
    for position, entry in enumerate(entries, start=1):
        practice = _practice(entry, position)
        if practice.id in practices:
            raise ConfigurationError(f"practice registry {path}: practice {practice.id} is listed twice")
        practices[practice.id] = practice
    return practices
