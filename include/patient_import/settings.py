"""Settings from the environment (SPEC §6), with the embedded defaults. Read when called, never cached,
so a test or a `make import` can point the pipeline somewhere else."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTATIONS_DIR = REPO_ROOT / "expectations"
DEFAULT_PRACTICES_FILE = REPO_ROOT / "config" / "practices.yml"

AREAS = ("inbox", "archive", "quarantine", "outbox", "staging", "reports", "data_docs")


def _int_env(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def home() -> Path:
    """`$PATIENT_IMPORT_HOME`: the local Airflow home and the default SQLite store."""
    return Path(os.environ.get("PATIENT_IMPORT_HOME") or REPO_ROOT / "var").resolve()


def storage_root():
    """`$PATIENT_IMPORT_STORAGE`: the file areas (inbox, archive, ...); a local path or an
    object-storage URL (`s3://<conn_id>@<bucket>/<prefix>`, see `storage.py`)."""
    from include.patient_import.storage import is_url, path_of

    raw = (os.environ.get("PATIENT_IMPORT_STORAGE") or "").strip()
    if raw and is_url(raw):
        return path_of(raw.rstrip("/"))
    return Path(raw).resolve() if raw else home()


def area(name: str, *parts: str):
    if name not in AREAS:
        raise ValueError(f"unknown file area {name!r}")
    return storage_root().joinpath(name, *parts)


MAKE_IMPORT_FILE = "PATIENT_IMPORT_MAKE_IMPORT_FILE"


def export_roots() -> list[str]:
    """`$PATIENT_IMPORT_EXPORT_ROOTS`: where a run's `export_file` may be read from (SPEC §7).

    Paths or storage URLs separated by `:` (the `:` of a URL's `://` does not separate); empty
    entries are ignored. Default: none, so a run reads only the inboxes (and the practice's own
    archive, when an export is re-run explicitly). Checked by `boundaries.check_export_file`.
    """
    raw = os.environ.get("PATIENT_IMPORT_EXPORT_ROOTS", "")
    roots = [entry.strip() for entry in re.split(r":(?!//)", raw) if entry.strip()]
    # `make import`'s own FILE (scripts/run_dag.py), one path never split: a local path may hold a
    # `:` (`Patient List 10:30.csv`, a Mac name with a slash), which the list above would cut in two.
    given = os.environ.get(MAKE_IMPORT_FILE, "")
    return roots + ([given] if given.strip() else [])


def airflow_home() -> Path:
    """Airflow's home (`$AIRFLOW_HOME`, else Airflow's own default `~/airflow`): never an export."""
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow").resolve()


def practices_file() -> Path:
    return Path(os.environ.get("PATIENT_IMPORT_PRACTICES") or DEFAULT_PRACTICES_FILE)


def default_store_url() -> str:
    return f"sqlite:///{home() / 'patient_store.db'}"


# The most data rows an export may hold unless PATIENT_IMPORT_MAX_ROWS says otherwise (`too_many_rows`).
DEFAULT_MAX_ROWS = 2_000_000


@dataclass(frozen=True)
class Limits:
    """What an export may hold before it is refused (SPEC §4 file codes); all configurable."""

    max_file_bytes: int
    max_rows: int
    max_columns: int
    max_field_length: int
    max_uncompressed_bytes: int  # an .xlsx is a zip: bounds what its sheet may inflate to
    # Blank lines (or sheet rows) allowed above the header; more and the file is refused rather
    # than searched to its end (SPEC §7, memory is bounded).
    max_lines_before_header: int = 1_000

    @classmethod
    def from_env(cls) -> "Limits":
        return cls(
            max_file_bytes=_int_env("PATIENT_IMPORT_MAX_FILE_MB", 200) * 1024 * 1024,
            max_rows=_int_env("PATIENT_IMPORT_MAX_ROWS", DEFAULT_MAX_ROWS),
            max_columns=_int_env("PATIENT_IMPORT_MAX_COLUMNS", 200),
            max_field_length=_int_env("PATIENT_IMPORT_MAX_FIELD_LENGTH", 1_000),
            max_uncompressed_bytes=_int_env("PATIENT_IMPORT_MAX_UNCOMPRESSED_MB", 1_000) * 1024 * 1024,
            max_lines_before_header=_int_env("PATIENT_IMPORT_MAX_LINES_BEFORE_HEADER", 1_000, minimum=0),
        )


def inbox_settle_seconds() -> int:
    """How long a file's size and modification time must be still before it is picked up."""
    return _int_env("PATIENT_IMPORT_SETTLE_SECONDS", 5, minimum=0)


def retention_days() -> int:
    return _int_env("PATIENT_IMPORT_RETENTION_DAYS", 365)


def stale_after_days() -> int:
    return _int_env("PATIENT_IMPORT_STALE_AFTER_DAYS", 14)


def timezone() -> str:
    """The DAG's time zone: the export date of a file without one in its name is its landing day here."""
    return os.environ.get("PATIENT_IMPORT_TIMEZONE", "UTC")


def today() -> date:
    """Today in the DAG's time zone: what an export date is judged against (SPEC §3, §6)."""
    return datetime.now(ZoneInfo(timezone())).date()
