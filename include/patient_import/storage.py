"""Where the file areas live: a local folder, or an object store (SPEC §6).

`PATIENT_IMPORT_STORAGE` is a local path by default. In production it is an object-storage URL
such as `s3://<conn_id>@<bucket>/<prefix>`: Airflow's `ObjectStoragePath` opens it with the
credentials of that Airflow connection, so the tasks of one run can execute on different workers.
A scheme Airflow has no filesystem for (`memory://`, for one) is opened by fsspec directly.

Every path the pipeline keeps (in the store, in staging) is the string of its path object, and
`path_of` turns it back into one. The few operations that differ between a disk and an object
store are here, and only here:

- Writes and moves are whole or nothing. On a disk a file is written under a temporary name and renamed; an
  object store has no rename but shows an object only once its upload completes, so the file is
  written locally first and then uploaded.
- Readers that need a real file (memory-mapped CSV, the `.xlsx` zip) get a local copy.
- Great Expectations renders Data Docs into a local folder; `put_folder` copies it into place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

# A path in the file areas: a `pathlib.Path`, or a `upath.UPath` (Airflow's `ObjectStoragePath`).
StoragePath: TypeAlias = Any


def is_url(text: str) -> bool:
    return "://" in text


def path_of(text: str) -> StoragePath:
    """A path object for a stored path or URL; URLs through `ObjectStoragePath` where Airflow knows the scheme."""
    scheme, url, rest = text.partition("://")
    if not url:
        return Path(text)
    if scheme.lower() == "file":
        return Path(rest)
    try:
        from airflow.sdk import ObjectStoragePath
        from airflow.sdk.io.fs import has_fs
    except ImportError:  # the package without Airflow: fsspec alone
        pass
    else:
        if has_fs(scheme.lower()):
            return ObjectStoragePath(text)
    from upath import UPath

    return UPath(text)


def is_local(path: StoragePath) -> bool:
    return isinstance(path, Path)


def is_inside(path: StoragePath, root: StoragePath) -> bool:
    """Whether `path` is `root` or below it, without following `..` or links out of it."""
    if is_local(path) != is_local(root):
        return False
    if is_local(path):
        try:
            path.resolve().relative_to(root.resolve())
        except ValueError:
            return False
        return True
    if ".." in str(path).split("/"):
        return False
    return str(path) == str(root) or str(path).startswith(str(root).rstrip("/") + "/")


@contextlib.contextmanager
def writing(path: StoragePath, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """A handle whose file appears at `path` only when the block completes; nothing on an error."""
    local = path if is_local(path) else None
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent)
    else:
        fd, name = tempfile.mkstemp(prefix="patient_import_", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        with tmp.open(mode, **kwargs) as handle:
            yield handle
        if local is not None:
            os.replace(tmp, local)
        else:
            path.fs.put_file(str(tmp), path.path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: StoragePath, text: str) -> StoragePath:
    with writing(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def copy(source: StoragePath, target: StoragePath) -> StoragePath:
    """Copy a file whole or not at all; within one object store the store copies it itself."""
    if not is_local(source) and not is_local(target) and source.fs is target.fs:
        target.fs.copy(source.path, target.path)
        return target
    with source.open("rb") as src, writing(target) as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
    return target


def move(source: StoragePath, target: StoragePath) -> bool:
    """Move a file to `target`, which shows it whole or not at all: a rename on one disk, else a
    whole copy (an object appears only once its copy completes) and then the source removed.
    Returns False when there is no `source` (already moved: a re-run moves nothing)."""
    if not source.exists():
        return False
    if is_local(source) and is_local(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)
            return True
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # another device: copied below
                raise
    copy(source, target)
    source.unlink(missing_ok=True)
    return True


def remove_tree(path: StoragePath) -> None:
    """Remove a folder and everything in it; nothing there is fine."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        path.fs.rm(path.path, recursive=True)


@contextlib.contextmanager
def local_file(path: StoragePath) -> Iterator[Path]:
    """The file on the local disk: itself, or a temporary copy of the object."""
    if is_local(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="patient_import_") as folder:
        copy_at = Path(folder) / path.name
        path.fs.get_file(path.path, str(copy_at))
        yield copy_at


def put_folder(local: Path, target: StoragePath) -> StoragePath:
    """Copy a local folder's files to `target`, keeping their relative paths."""
    for file in sorted(local.rglob("*")):
        if file.is_file():
            dest = target.joinpath(*file.relative_to(local).parts)
            if is_local(dest):
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, dest)
            else:
                dest.fs.put_file(str(file), dest.path)
    return target


@dataclass(frozen=True)
class StoredFile:
    path: StoragePath
    size: int
    mtime: float


def files_under(folder: StoragePath) -> list[StoredFile]:
    """Every file below an object-store folder with its size and modification time; none when
    the folder does not exist."""
    found = folder.fs.find(folder.path, detail=True)
    listed = []
    for key, info in sorted(found.items()):
        if info.get("type") == "directory":
            continue
        relative = key[len(folder.path.rstrip("/")) + 1:]
        path = folder.joinpath(*relative.split("/"))
        listed.append(StoredFile(path, int(info.get("size") or 0), _mtime(path, info)))
    return listed


def _mtime(path: StoragePath, info: dict) -> float:
    for key in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return value.timestamp()
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    return path.stat().st_mtime
