"""Retention of patient files: what is older than `PATIENT_IMPORT_RETENTION_DAYS` is deleted.

Purged: the areas that keep patient files after an import, `archive/`, `quarantine/`, `outbox/`,
`reports/` and `data_docs/`, and the folders a purge leaves empty (the area roots stay). Never
touched: `inbox/` (exports still waiting) and `staging/` (imports running), the store and the
local Airflow home. A file's age is its modification time: when it was archived, quarantined or
written. Symbolic links are neither followed nor removed. The patient store keeps its patients
and import records; a purged file's path in an old import record then points at nothing.

    python -m include.patient_import.retention [--days N] [--dry-run]

prints every file it removes (paths under the storage root: names the pipeline gave them) and a
summary; `make purge` and the daily DAG `patient_import_retention` run the same `purge`.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from include.patient_import import settings, storage
from include.patient_import.untrusted import printable

log = logging.getLogger(__name__)

PURGED_AREAS: tuple[str, ...] = ("archive", "quarantine", "outbox", "reports", "data_docs")
_DAY_SECONDS = 24 * 60 * 60


@dataclass
class PurgeResult:
    """What a purge removed (or, on a dry run, would remove); paths relative to the storage root."""

    older_than_days: int
    cutoff: datetime
    dry_run: bool = False
    removed: list[Path] = field(default_factory=list)
    removed_dirs: list[Path] = field(default_factory=list)
    bytes_removed: int = 0
    kept: int = 0
    links_left: list[Path] = field(default_factory=list)
    by_area: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict:
        """Figures only (no paths): what the DAG task returns."""
        return {"older_than_days": self.older_than_days, "dry_run": self.dry_run,
                "files_removed": len(self.removed), "bytes_removed": self.bytes_removed,
                "dirs_removed": len(self.removed_dirs), "files_kept": self.kept,
                "links_left": len(self.links_left), "by_area": dict(self.by_area)}

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        areas = ", ".join(f"{area} {n}" for area, n in self.by_area.items() if n) or "nothing"
        return (f"{verb} {len(self.removed)} files ({self.bytes_removed / (1024 * 1024):.1f} MB; {areas}) "
                f"and {len(self.removed_dirs)} empty folders older than {self.older_than_days} days "
                f"(before {self.cutoff:%Y-%m-%d %H:%M %Z}); kept {self.kept} files")


def purge(older_than_days: int, now: datetime | None = None, *, dry_run: bool = False) -> PurgeResult:
    """Delete the patient files older than `older_than_days` from the purged areas.

    Args:
        older_than_days: files modified before `now` minus this many days go (at least 1).
        now: the moment the age is measured from; the current time when omitted.
        dry_run: only say what would go.

    Returns:
        What was removed and kept.

    Raises:
        ValueError: `older_than_days` below 1.
    """
    if older_than_days < 1:
        raise ValueError(f"older_than_days must be at least 1, got {older_than_days}")
    now = now or datetime.now().astimezone()
    cutoff = now.timestamp() - older_than_days * _DAY_SECONDS
    result = PurgeResult(older_than_days, datetime.fromtimestamp(cutoff, now.tzinfo), dry_run)
    root = settings.storage_root()
    for area in PURGED_AREAS:
        result.by_area[area] = _purge_area(settings.area(area), root, cutoff, result)
    log.info("retention: %s", result.summary())
    return result


def _purge_area(area, root, cutoff: float, result: PurgeResult) -> int:
    if not storage.is_local(area):
        return _purge_objects(area, root, cutoff, result)
    if area.is_symlink() or not area.is_dir():
        if area.is_symlink():
            result.links_left.append(area.relative_to(root))
        return 0
    removed = 0
    gone: set[str] = set()
    emptied: set[str] = set()  # folders this purge took something out of
    # Bottom-up, so that a folder is looked at after everything in it.
    for folder, dirs, names in os.walk(area, topdown=False, followlinks=False):
        for name in [*names, *dirs]:
            path = os.path.join(folder, name)
            if path in gone:
                continue
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                result.links_left.append(Path(path).relative_to(root))
            elif stat.S_ISREG(info.st_mode):
                if info.st_mtime < cutoff:
                    if not result.dry_run:
                        os.unlink(path)
                    gone.add(path)
                    emptied.add(folder)
                    removed += 1
                    result.removed.append(Path(path).relative_to(root))
                    result.bytes_removed += info.st_size
                    log.info("retention: %s %s", "would remove" if result.dry_run else "removed",
                             printable(Path(path).relative_to(root), limit=400))
                else:
                    result.kept += 1
        if folder == str(area) or not all(os.path.join(folder, e) in gone for e in os.listdir(folder)):
            continue
        # An empty folder this purge did not empty may have just been made by a running import.
        if folder not in emptied and os.lstat(folder).st_mtime >= cutoff:
            continue
        if not result.dry_run:
            try:
                os.rmdir(folder)
            except OSError:  # something arrived meanwhile: it stays
                continue
        gone.add(folder)
        emptied.add(os.path.dirname(folder))
        result.removed_dirs.append(Path(folder).relative_to(root))
    return removed


def _purge_objects(area, root, cutoff: float, result: PurgeResult) -> int:
    """The same purge in an object store: no links, and folders vanish with their last object."""
    removed = 0
    prefix = len(str(root).rstrip("/")) + 1
    for found in storage.files_under(area):
        relative = Path(str(found.path)[prefix:])
        if found.mtime >= cutoff:
            result.kept += 1
            continue
        if not result.dry_run:
            found.path.unlink(missing_ok=True)
        removed += 1
        result.removed.append(relative)
        result.bytes_removed += found.size
        log.info("retention: %s %s", "would remove" if result.dry_run else "removed",
                 printable(relative, limit=400))
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.patient_import.retention",
        description=f"Delete patient files older than the retention period from {', '.join(PURGED_AREAS)}.")
    parser.add_argument("--days", default=None,
                        help="retention in days (default: $PATIENT_IMPORT_RETENTION_DAYS, else 365)")
    parser.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    args = parser.parse_args(argv)
    # One line naming the value, not argparse's usage: `make purge DAYS=0` is how most people call it.
    days: int | None = settings.retention_days()
    if args.days is not None:
        try:
            days = int(args.days)
        except ValueError:
            days = None
    if days is None or days < 1:
        print(f"purge: DAYS (--days) must be a whole number of days, at least 1; got {args.days!r}. "
              "Files younger than that are kept; DAYS=0 would delete what was imported today.", file=sys.stderr)
        return 2
    result = purge(days, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in result.removed:
        print(f"{verb} {printable(path, limit=400)}")
    for path in result.removed_dirs:
        print(f"{verb} empty folder {printable(path, limit=400)}")
    for path in result.links_left:
        print(f"left alone (symbolic link) {printable(path, limit=400)}")
    print(f"{settings.storage_root()}: {result.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
