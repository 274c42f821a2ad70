"""The file areas of SPEC §6: inboxes, the archive, the quarantine, staging and the outputs.

Every file the pipeline writes has a name without spaces or hyphens, and is written under a
temporary name first, so a retried task never sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from include.patient_import import settings, storage
from include.patient_import.storage import StoragePath
from include.patient_import.untrusted import printable

log = logging.getLogger(__name__)

# The date forms a file name may hold (SPEC §6), as (pattern, order of its year, month and day
# groups). Each is searched on its own, overlapping matches included, so that a name holding two
# different dates ("20261101-20261125", "11-05-2026 (from 20261104)") is seen to be ambiguous.
# Two-digit years (`11-25-26`) and day-first forms are not accepted: they cannot be told apart from
# month-first ones. Written here rather than with dateutil: its fuzzy parser turns any digits of a
# name (a version, a count) into some date, where we want only these unambiguous forms.
_YEAR = r"(19[0-9]{2}|20[0-9]{2})"
_MONTHS = {name: number for number, names in enumerate(
    [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",),
     ("jun", "june"), ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"),
     ("oct", "october"), ("nov", "november"), ("dec", "december")], start=1) for name in names}
_MONTH_NAME = r"(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")"
_NAME_DATE_FORMS: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(r"(?=(?<![0-9])" + pattern + r"(?![0-9]))", re.IGNORECASE), order) for pattern, order in (
        (_YEAR + r"([0-9]{2})([0-9]{2})", "ymd"),                              # 20261125
        (_YEAR + r"([-._ ])([0-9]{1,2})\2([0-9]{1,2})", "y-md"),               # 2026-11-25, 2026.11.25
        (r"([0-9]{1,2})([-._ ])([0-9]{1,2})\2" + _YEAR, "md-y"),               # 11-25-2026, 11.25.2026
        (r"(?<![a-z])" + _MONTH_NAME + r"[-._ ]?([0-9]{1,2})(?:st|nd|rd|th)?,?[-._ ]?" + _YEAR, "Mdy"),  # Nov 25 2026
        (r"([0-9]{1,2})(?:st|nd|rd|th)?[-._ ]?" + _MONTH_NAME + r"(?![a-z]),?[-._ ]?" + _YEAR, "dMy"),  # 25-Nov-2026
    ))
_DASHES = re.compile(r"[\u2010-\u2015\u2212\ufe58\ufe63\uff0d]")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")


def safe_name(name: str) -> str:
    """A file name without spaces, hyphens or anything a share or an importer trips over."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    stem = _UNSAFE.sub("_", stem).strip("_.") or "export"
    ext = _UNSAFE.sub("", ext).lower()
    return f"{stem}.{ext}" if ext else stem


def sha256_of(path: StoragePath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _name_dates(name: str) -> set[date]:
    """Every real date one of the accepted forms finds in `name`; impossible ones are dropped."""
    found: set[date] = set()
    for pattern, order in _NAME_DATE_FORMS:
        for match in pattern.finditer(name):
            groups = [g for g in match.groups() if g is not None and not re.fullmatch(r"[-._ ]", g)]
            if " " in match.groups() and any(len(g) == 1 for g in groups):
                continue  # "Top 10 2 2026": numbers between spaces are a date only when written 01 02
            if order in ("ymd", "y-md"):
                year, month, day = groups
            elif order == "md-y":
                month, day, year = groups
            elif order == "Mdy":
                month, day, year = _MONTHS[groups[0].lower()], groups[1], groups[2]
            else:
                day, month, year = groups[0], _MONTHS[groups[1].lower()], groups[2]
            try:
                found.add(date(int(year), int(month), int(day)))
            except ValueError:
                continue
    return found


def date_in_name(name: str) -> date | None:
    """The export date a file name holds (SPEC §6), or None.

    Accepted forms: `YYYYMMDD`, `YYYY-MM-DD`, `MM-DD-YYYY` (separator `-`, `.`, `_` or a space, the
    same twice; month and day with one or two digits, two between spaces) and the month by name (`Nov 25 2026`,
    `25-Nov-2026`), anywhere in the name but not inside a longer run of digits. Any Unicode dash
    counts as `-`. An impossible date (`02-30-2026`, the day-first `25-11-2026`) is not used; a name
    holding two different dates is ambiguous and gives None. The extension is not searched.
    """
    stem = name.rpartition(".")[0] or name
    text = _DASHES.sub("-", unicodedata.normalize("NFKC", stem))
    found = _name_dates(text)
    return found.pop() if len(found) == 1 else None


def landing_date(path: StoragePath) -> date:
    """The day the file landed: its modification time in the DAG's time zone."""
    return datetime.fromtimestamp(path.stat().st_mtime, ZoneInfo(settings.timezone())).date()


# Where an import's export date came from (the report's `export.exported_on_source`, SPEC §6).
FROM_CONF, FROM_FILE_NAME, FROM_LANDING = "conf", "file_name", "landed"


def dated_export(path: StoragePath, given: date | None = None, name: str | None = None) -> tuple[date, str]:
    """SPEC §6: (export date, its source): the run's `exported_on` (`conf`), else a date in the
    file name (`file_name`; `name` in place of the path's own), else the landing day (`landed`)."""
    if given:
        return given, FROM_CONF
    in_name = date_in_name(name or path.name)
    if in_name:
        return in_name, FROM_FILE_NAME
    return landing_date(path), FROM_LANDING


def export_date(path: StoragePath, given: date | None = None) -> date:
    """SPEC §6: the run's `exported_on`, else a date in the file name, else the landing day."""
    return dated_export(path, given)[0]


def original_name(archived: StoragePath) -> str:
    """An archived original's name without the `_<sha8>` the archive added (`archive_path`)."""
    stem, dot, ext = archived.name.rpartition(".")
    stem = stem if dot else archived.name
    stem = re.sub(r"_[0-9a-f]{8}$", "", stem)
    return f"{stem}.{ext}" if dot else stem


def archive_path(practice_id: str, exported_on: date, name: str, sha256: str) -> StoragePath:
    """`archive/<practice>/<YYYYMMDD>/<name>_<sha8>.<ext>`: one place per distinct export."""
    safe = safe_name(name)
    stem, dot, ext = safe.rpartition(".")
    stem, ext = (stem, f".{ext}") if dot else (safe, "")
    return settings.area("archive", practice_id, exported_on.strftime("%Y%m%d"), f"{stem}_{sha256[:8]}{ext}")


def archived_date(path: StoragePath) -> date | None:
    """The export date an archived file is filed under."""
    try:
        return datetime.strptime(path.parent.name, "%Y%m%d").date()
    except ValueError:
        return None


def archive(source: StoragePath, practice_id: str, exported_on: date, sha256: str, *, move: bool) -> StoragePath:
    """Keep the original unchanged in the archive; inbox files are moved, given files copied.

    Safe to repeat: an original already archived is not copied again.
    """
    target = archive_path(practice_id, exported_on, source.name, sha256)
    if not target.exists():
        storage.copy(source, target)
    if move:
        source.unlink(missing_ok=True)
    return target


def quarantine(archived: StoragePath, practice_id: str) -> StoragePath:
    """A copy of a rejected original where the office will look for it."""
    target = settings.area("quarantine", practice_id, archived.name)
    return target if target.exists() else storage.copy(archived, target)


class UnsafeFile(Exception):
    """A local export turned out, when opened, to be a link, not a regular file, hard-linked or
    somewhere else than the path checked (swapped between the check and the copy, SPEC §7)."""


class ChangedWhileRead(Exception):
    """A local export grew or shrank while it was read: it is still being written."""


@dataclass(frozen=True)
class Snapshot:
    """The bytes of one local export, read once through one handle (`snapshot`)."""

    size: int
    sha256: str
    copy: Path | None  # a private copy of exactly the bytes hashed; None when over the size limit
    device: int
    inode: int
    mtime_ns: int

    def head(self, limit: int = 8192) -> bytes:
        if self.copy is None:
            raise ValueError("a file over the size limit has no copy to read")
        with self.copy.open("rb") as handle:
            return handle.read(limit)


_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
_BLOCK = 1024 * 1024


def _opened_at(fd: int) -> str | None:
    """Where the kernel says an open handle's file is (Linux), or None where it cannot tell."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


@contextlib.contextmanager
def snapshot(path: Path, max_bytes: int, *, folder: Path | None = None) -> Iterator[Snapshot]:
    """Read a local export once, through one handle that never follows a link (SPEC §7).

    Checking a path and then opening it again by name lets a file, or a folder above it, be swapped
    for a link in between; hashing, sniffing and copying by name read three different files when
    it changes meanwhile, and a copy of a file that keeps growing has no end. So the file is opened
    once with `O_NOFOLLOW` (a FIFO does not block the open), the handle is checked (a regular file
    with one link, at `path` itself where the kernel tells), and exactly the `st_size` bytes seen
    then are hashed and, when not over `max_bytes`, copied to a private file in `folder` (the
    system's temporary folder when None), removed when the block ends.

    Args:
        path: an absolute local path whose folders are no links (an inbox entry, a resolved export_file).
        max_bytes: the size limit; a file over it is hashed, not copied.

    Raises:
        UnsafeFile: a link, not a regular file, several hard links, or not at `path` once opened.
        ChangedWhileRead: the file's size changed while it was read.
        FileNotFoundError: it has gone.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile("is a symbolic link") from None
        raise
    copy: Path | None = None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile("is not a regular file")
        if info.st_nlink > 1:
            raise UnsafeFile("has several hard links")
        opened = _opened_at(fd)
        if opened is not None and opened != str(path):
            raise UnsafeFile("was reached through a link when opened")
        digest = hashlib.sha256()
        out = None
        if info.st_size <= max_bytes:
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            out_fd, name = tempfile.mkstemp(prefix=".snapshot.", suffix=".tmp", dir=folder)
            copy = Path(name)
            out = os.fdopen(out_fd, "wb")
        with out or contextlib.nullcontext():
            remaining = info.st_size
            while remaining:
                block = os.read(fd, min(_BLOCK, remaining))
                if not block:
                    raise ChangedWhileRead("shrank while it was read")
                digest.update(block)
                if out is not None:
                    out.write(block)
                remaining -= len(block)
            if os.read(fd, 1):
                raise ChangedWhileRead("grew while it was read")
        yield Snapshot(info.st_size, digest.hexdigest(), copy, info.st_dev, info.st_ino, info.st_mtime_ns)
    finally:
        os.close(fd)
        if copy is not None:
            copy.unlink(missing_ok=True)


def remove_original(path: Path, snap: Snapshot) -> None:
    """Delete an inbox original once archived, unless the name now holds another file (a new drop
    or a link swapped in, or the same file written over): only the file that was read is removed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    seen = (snap.device, snap.inode, snap.size, snap.mtime_ns)
    if (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns) == seen and stat.S_ISREG(info.st_mode):
        path.unlink(missing_ok=True)
    else:
        log.warning("%s was replaced while it was archived; the new file is left in the inbox",
                    printable(path.name))


@dataclass(frozen=True)
class InboxFile:
    path: StoragePath
    size: int
    mtime: float


def refused_entry(path: StoragePath, inbox: StoragePath) -> str | None:
    """Why an inbox entry must not be read, without following it (SPEC §7); None when it may.

    A link, anything but a regular file, a file with several hard links (another name for a file
    elsewhere: the store, another practice's archive) or a path leaving the inbox is refused.
    Object stores have no links: their entries are only checked to be inside the inbox.
    """
    if storage.is_local(path):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return "has gone"
        if stat.S_ISLNK(info.st_mode):
            return "is a symbolic link"
    if not storage.is_inside(path, inbox):
        return "points outside the inbox"
    if not storage.is_local(path):
        return None if path.is_file() else "is not a regular file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_nlink > 1:
        return "has several hard links"
    return None


def linked_folder(folder: StoragePath, top: StoragePath) -> StoragePath | None:
    """The first of `top` and the folders below it down to `folder` that is a symbolic link, or
    None. Object stores have no links."""
    if not storage.is_local(folder):
        return None
    current = top
    if current.is_symlink():
        return current
    for part in folder.relative_to(top).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def practice_inbox(practice_id: str) -> StoragePath | None:
    """The practice's inbox folder when it may be read: a safe id, and neither `inbox/` nor
    `inbox/<practice>/` a link (its files would be moved out of the folder it points to)."""
    if not _safe_practice(practice_id, "inbox"):
        return None
    inbox = settings.area("inbox", practice_id)
    linked = linked_folder(inbox, settings.area("inbox"))
    if linked is not None:
        log.warning("inbox %s: %s is a symbolic link; nothing in it is read", practice_id,
                    printable(linked.name))
        return None
    return inbox if inbox.is_dir() else None


def waiting_inbox_files(practice_id: str, *, settle_seconds: int | None = None) -> list[InboxFile]:
    """Files in the practice's inbox whose size and modification time have stopped changing.

    A file is stable when its modification time is at least `settle_seconds` old and its size and
    modification time do not change over a short second look (it may still be being copied).
    Links (the entry, the practice's folder or `inbox/` itself) and hard-linked files are refused
    and left alone (SPEC §7).
    """
    settle = settings.inbox_settle_seconds() if settle_seconds is None else settle_seconds
    inbox = practice_inbox(practice_id)
    if inbox is None:
        return []
    entries = []
    for path in sorted(inbox.iterdir()):
        if path.name.startswith("."):
            continue
        reason = refused_entry(path, inbox)
        if reason:
            log.warning("inbox %s: %s %s; left alone", practice_id, printable(path.name), reason)
            continue
        entries.append(path)
    first = {path: path.stat() for path in entries}
    if first and settle:
        time.sleep(min(1.0, settle))
    stable = []
    now = time.time()
    for path, before in first.items():
        try:
            after = path.stat()
        except FileNotFoundError:
            continue
        if (after.st_size, after.st_mtime) != (before.st_size, before.st_mtime) or now - after.st_mtime < settle:
            log.info("inbox %s: %s is still being written; it waits for the next run", practice_id,
                     printable(path.name))
            continue
        stable.append(InboxFile(path, after.st_size, after.st_mtime))
    return stable


def archived_exports(practice_id: str) -> list[StoragePath]:
    if not _safe_practice(practice_id, "archive"):
        return []
    root = settings.area("archive", practice_id)
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("*/*") if p.is_file() and not p.name.startswith(".")), key=str)


def staging_dir(import_id: str) -> StoragePath:
    return settings.area("staging", import_id)


def upload_file(practice_id: str, import_id: str) -> StoragePath:
    """Where an import's Cash Practice upload file is published (SPEC §5): `outbox/<practice>/<import_id>.csv`,
    only once the import completed (the report stage moves it there from staging)."""
    return settings.area("outbox", practice_folder(practice_id), f"{import_id}.csv")


def clear_staging(import_id: str) -> None:
    storage.remove_tree(staging_dir(import_id))


# An import id is `<practice id>_<YYYYMMDD>_<digest>` (`extract.import_id_for`) and must fit the
# store's `imports.id` column (`store.py`, IMPORT_ID_LENGTH wide); a practice id is a folder name and
# starts every file name built from it (`<import id>.csv`). So a practice id is at most 58
# characters: a longer one failed its first import on PostgreSQL ("value too long for type
# character varying(80)") after the export was archived.
IMPORT_ID_LENGTH = 80
IMPORT_ID_DIGEST_LENGTH = 12
MAX_ID_LENGTH = IMPORT_ID_LENGTH - len("_YYYYMMDD_") - IMPORT_ID_DIGEST_LENGTH
# What an import id may look like wherever one comes from outside (a run's conf, a URL, the shell).
IMPORT_ID_PATTERN = rf"^[A-Za-z0-9_]{{1,{IMPORT_ID_LENGTH}}}$"
_SAFE_ID = re.compile(rf"[A-Za-z0-9_]{{1,{MAX_ID_LENGTH}}}")


def is_safe_id(value: str) -> bool:
    """Letters, digits and underscores only, at most `MAX_ID_LENGTH`: safe as one folder name."""
    return bool(_SAFE_ID.fullmatch(value or ""))


def _safe_practice(practice_id: str, area: str) -> bool:
    # A practice id from a run's conf ("..", "../x") must not turn the storage root or another
    # practice's folder into this practice's inbox: its files would be moved to the archive.
    if is_safe_id(practice_id):
        return True
    log.warning("%s of practice %r refused: a practice id is letters, digits and underscores only",
                area, printable(practice_id))
    return False


def practice_folder(practice_id: str) -> str:
    """The practice's folder in a file area; an id from a bad conf never becomes a path."""
    return practice_id if is_safe_id(practice_id) else "_unknown"


def undo_report_path(practice_id: str, import_id: str) -> StoragePath:
    """An undo's own report (SPEC §8), beside the import's: `reports/<practice_id>/<import_id>_undo.json`."""
    return settings.area("reports", practice_folder(practice_id), f"{import_id}_undo.json")
