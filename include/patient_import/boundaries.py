"""Trust boundaries (SPEC §7): what a run's conf may name, checked before any file is touched.

Whoever may trigger the DAG chooses `practice_id` and `export_file`. Both are checked here, once,
before any path, id or URL is built from them: by `planning.check_conf` when the run is planned
(and by `make import` before it starts the run), and again by extract before it copies anything.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from include.patient_import import catalogue, files, settings, storage
from include.patient_import import problems as p
from include.patient_import.files import is_safe_id
from include.patient_import.untrusted import printable

# Schemes that fetch from a server rather than an object store the operator configured: never read,
# even when listed as a root (a worker must not be turned into a web client).
REMOTE_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "sftp", "ssh", "scp", "smb", "cifs", "webdav",
                            "dav", "davs", "ws", "wss", "data", "git", "github", "hf", "jlab", "jupyter"})
# The practice's own areas, which an operator may re-run an export from explicitly (SPEC §7).
OWN_AREAS = ("inbox", "archive", "quarantine")
# Kernel views of processes and devices (`/proc/self/environ` holds the worker's secrets).
SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_practice_id(practice_id: object, registered) -> str:
    """The practice id itself when it is safe and registered (SPEC §7).

    Args:
        practice_id: what the conf, `make import` or a form gave.
        registered: the registered practice ids (a dict or set).

    Raises `InputRefused` (`unknown_practice`) naming the known practices.
    """
    known = ", ".join(sorted(registered)) or "none"
    if not isinstance(practice_id, str) or not is_safe_id(practice_id):
        raise p.InputRefused(p.UNKNOWN_PRACTICE, catalogue.message(
            p.UNKNOWN_PRACTICE, "not_an_id", given=printable(practice_id), max_length=files.MAX_ID_LENGTH,
            known=known))
    if practice_id not in registered:
        raise p.InputRefused(p.UNKNOWN_PRACTICE,
                             catalogue.message(p.UNKNOWN_PRACTICE, "not_registered", given=practice_id, known=known))
    return practice_id


def refusal(export_file: object, case: str, **values: object) -> p.InputRefused:
    """`export_file_not_allowed` for `export_file`, in one of the catalogue's cases (`values` fill it)."""
    return p.InputRefused(p.EXPORT_FILE_NOT_ALLOWED, catalogue.message(
        p.EXPORT_FILE_NOT_ALLOWED, case, given=printable(export_file), **values))


# RFC 3986's scheme: a letter, then letters, digits, `+`, `-`, `.`. Anything else before `://`
# (`/exports/a://b`) is no URL, and must not be handed to an object-store client as one.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def _scheme(text: str) -> str | None:
    """The lower-cased URL scheme, None for a path; "" when `://` follows something that is no scheme."""
    scheme, sep, _ = text.partition("://")
    if not sep:
        return None
    return scheme.lower() if _SCHEME.fullmatch(scheme) else ""


def _local_root(entry: str) -> Path | None:
    path = Path(entry[len("file://"):] if entry.lower().startswith("file://") else entry)
    # A relative root would depend on the worker's working directory: it allows nothing.
    return path.resolve() if path.is_absolute() else None


def _within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _store_files(store) -> list[Path]:
    """The SQLite files of the default store and of `store` (an Engine, a URL or None)."""
    found = [settings.home() / "patient_store.db"]
    url = getattr(store, "url", store)
    if url is not None:
        from sqlalchemy.engine import make_url

        parsed = make_url(str(url)) if not hasattr(url, "database") else url
        if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
            found.append(Path(parsed.database))
    return [f.resolve() for f in found]


def _own_areas(practice_id: str) -> list:
    return [settings.area(area, practice_id) for area in OWN_AREAS]


def _own_local_areas(practice_id: str) -> list[Path]:
    """The practice's own local folders, unless one is (or sits below) a link: a linked
    `inbox/<practice>` must not turn the folder it points to into an allowed root."""
    root = settings.storage_root()
    if not storage.is_local(root):
        return []
    root = root.resolve()
    folders = [root / area / practice_id for area in OWN_AREAS]
    return [folder for folder in folders if files.linked_folder(folder, root) is None]


def _local_refusal(path: Path, practice_id: str, roots: list[Path], store) -> str | None:
    """Why a resolved local path may not be read (a case of `export_file_not_allowed`), or None."""
    own = _own_local_areas(practice_id)
    if not any(_within(path, root) for root in roots + own):
        return "outside_roots"
    if any(_within(path, root) for root in SYSTEM_ROOTS):
        return "system_file"
    for db in _store_files(store):
        if path.parent == db.parent and path.name.startswith(db.name):  # the db, its -wal, -journal
            return "patient_store"
    # The local Airflow home `make up` keeps in $PATIENT_IMPORT_HOME, whatever AIRFLOW_HOME says here.
    if _within(path, settings.airflow_home()) or _within(path, settings.home() / "airflow"):
        return "airflow_home"
    if _within(path, settings.practices_file().resolve()):
        return "registry"
    if any(_within(path, area) for area in own):
        return None
    storage_root = settings.storage_root()
    if storage.is_local(storage_root):
        if any(_within(path, (storage_root / area).resolve()) for area in settings.AREAS):
            return "file_areas"
    return None


def check_export_file(export_file: object, practice_id: str, *, store=None) -> storage.StoragePath:
    """The path a run may read `export_file` from, links resolved (SPEC §7).

    Allowed: a regular file with one hard link under a root of `$PATIENT_IMPORT_EXPORT_ROOTS`
    (`settings.export_roots`), or in the practice's own inbox, archive or quarantine; an
    object-storage URL only under a listed URL root. Never: another practice's file areas,
    staging or reports, the store's SQLite file (`store`: its Engine or URL; the default store
    always), Airflow's home (`$AIRFLOW_HOME` and `$PATIENT_IMPORT_HOME/airflow`), the practice
    registry, `/proc`, `/sys`, `/dev`, an `http(s)://` or
    other remote scheme, a chained fsspec URL.

    `practice_id` must already be checked (`check_practice_id`).

    Raises `InputRefused` (`export_file_not_allowed`) when refused, before the file is opened;
    `ConfigurationError` when an allowed path is missing or not a regular file.
    """
    if not isinstance(export_file, str) or not export_file.strip():
        raise refusal(export_file, "empty")
    if any(ch in export_file for ch in "\x00\n\r") or "::" in export_file:
        raise refusal(export_file, "not_a_path")
    scheme = _scheme(export_file)
    if scheme == "":
        raise refusal(export_file, "no_scheme")
    if scheme is not None and scheme != "file":
        return _check_url(export_file, scheme, practice_id)
    given = Path(export_file[len("file://"):] if scheme == "file" else export_file)
    if not given.is_absolute():
        raise refusal(export_file, "relative")
    roots = [r for r in (_local_root(e) for e in settings.export_roots() if _scheme(e) in (None, "file")) if r]
    resolved = given.resolve()
    why = _local_refusal(resolved, practice_id, roots, store)
    if why:
        raise refusal(export_file, why)
    try:
        info = resolved.stat()
    except OSError:
        raise p.ConfigurationError(f"export_file {printable(export_file)!r} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise p.ConfigurationError(f"export_file {printable(export_file)!r} is not a regular file")
    if info.st_nlink > 1:
        # A hard link carries no trace of where else the file lives (the store, another practice).
        raise refusal(export_file, "hard_links")
    return resolved


def _check_url(export_file: str, scheme: str, practice_id: str) -> storage.StoragePath:
    if scheme in REMOTE_SCHEMES:
        raise refusal(export_file, "remote", scheme=scheme)
    rest = export_file.split("://", 1)[1]
    if any(part in (".", "..") for part in rest.split("/")) or "//" in rest:
        raise refusal(export_file, "not_plain")
    try:
        path = storage.path_of(export_file)
    except (ValueError, TypeError):  # `s3:///key` (no bucket): the client refuses to build it
        raise refusal(export_file, "not_plain") from None
    own = [a for a in _own_areas(practice_id) if not storage.is_local(a)]
    roots = [storage.path_of(e.rstrip("/")) for e in settings.export_roots()
             if _scheme(e) not in (None, "file", "") and _scheme(e) not in REMOTE_SCHEMES]
    if not any(storage.is_inside(path, root) for root in own + roots):
        raise refusal(export_file, "outside_roots")
    storage_root = settings.storage_root()
    if (not any(storage.is_inside(path, area) for area in own)
            and not storage.is_local(storage_root) and storage.is_inside(path, storage_root)):
        raise refusal(export_file, "file_areas")
    return path
