"""Security figures for `make reliability` (SPEC §7): each trust boundary tried with hostile values.

    python scripts/security_figures.py [--list]

Every case runs against the package in a fresh temporary home: a hostile run conf (`export_file`,
`practice_id`, `exported_on`) goes through `planning.check_conf` and extract; hostile inbox contents
(links at every level, hard links, a named pipe, a file over the size limit, a name with a newline)
go through extract. A case is **refused** when the package refuses it (an `InputRefused`, or the
entry left alone, or the import rejected without a copy) and **leaked** when anything was copied
into the archive, quarantine, outbox, staging or reports, an import was registered where none may
be, or an original changed. Prints `boundaries tried N, refused N, leaked 0`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.harness.registry import practice, registry_yaml  # noqa: E402 - after the repository is on sys.path

PRACTICE = "demo_clinic"
OTHER = "other_clinic"
REGISTRY = registry_yaml(practice(PRACTICE, "Demo"), practice(OTHER, "Other"))
EXPORT = "Account #,Last Name,First Name,Address,City,State,Zip\n1001,Lopez,Ana,1 Main St,Boise,ID,83705\n"
# AIRFLOW_HOME is left alone: Airflow reads it once, and the home's own `airflow/` folder is refused too.
_ENV = ("PATIENT_IMPORT_HOME", "PATIENT_IMPORT_STORAGE", "PATIENT_IMPORT_PRACTICES", "PATIENT_IMPORT_EXPORT_ROOTS",
        "PATIENT_IMPORT_MAX_FILE_MB", "PATIENT_IMPORT_SETTLE_SECONDS")


@dataclass
class Case:
    name: str
    boundary: str
    refused: bool = False
    leaked: list[str] = field(default_factory=list)


@dataclass
class Place:
    """One fresh home with an export root, a file outside it and another practice's files."""

    tmp: Path
    home: Path
    exports: Path
    engine: object = None

    def inbox(self) -> Path:
        """The practice's inbox folder, made empty."""
        inbox = self.home / "inbox" / PRACTICE
        inbox.mkdir(parents=True)
        return inbox

    def file(self, relative: str, text: str = EXPORT, *, age: float = 3600) -> Path:
        path = self.tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        os.utime(path, (time.time() - age,) * 2)
        return path


@contextlib.contextmanager
def _place() -> Iterator[Place]:
    from include.patient_import.records import open_store

    saved = {k: os.environ.get(k) for k in _ENV}
    with tempfile.TemporaryDirectory(prefix="patient_import_security_") as folder:
        tmp = Path(folder)
        place = Place(tmp, tmp / "home", tmp / "exports")
        place.exports.mkdir(parents=True)
        place.home.mkdir()
        (tmp / "practices.yml").write_text(REGISTRY, encoding="utf-8")
        os.environ.update({"PATIENT_IMPORT_HOME": str(place.home),
                           "PATIENT_IMPORT_PRACTICES": str(tmp / "practices.yml"),
                           "PATIENT_IMPORT_EXPORT_ROOTS": str(place.exports), "PATIENT_IMPORT_MAX_FILE_MB": "1",
                           "PATIENT_IMPORT_SETTLE_SECONDS": "0"})
        os.environ.pop("PATIENT_IMPORT_STORAGE", None)
        place.engine = open_store(prepare=True)
        try:
            yield place
        finally:
            place.engine.dispose()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _snapshot(place: Place) -> dict:
    """Every file outside the areas the pipeline may write, with its content and times."""
    found = {}
    for path in sorted(place.tmp.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.suffix == ".db" or ".db-" in path.name:
            continue
        info = path.lstat()
        found[str(path)] = (info.st_size, info.st_mtime_ns, path.read_bytes()[:1_000_000])
    return found


def _written(place: Place, before: dict) -> list[str]:
    """Files the pipeline wrote or changed since `before` (the ones a refusal must not leave)."""
    after = _snapshot(place)
    changed = sorted(p for p, v in after.items() if before.get(p) != v) + sorted(set(before) - set(after))
    # An import's own bookkeeping (its job in staging) holds names and checksums, no patient file.
    return [p for p in changed if not (Path(p).name == "job.json" and Path(p).parent.parent.name == "staging")]


def _imports(place: Place) -> list[dict]:
    import sqlalchemy as sa

    from include.patient_import.store import Import

    with place.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(Import.__table__)).mappings()]


def _run(place: Place, run_id: str):
    from include.patient_import.extract import RunInfo

    return RunInfo(dag_id="security", run_id=run_id, map_index=0)


# ---------------------------------------------------------------- run conf


def _conf_cases(place: Place) -> dict[str, dict]:
    outside = place.file("outside/x.csv")
    (place.exports / "passwd.csv").symlink_to("/etc/passwd")
    (place.exports / "escape.csv").symlink_to(outside)
    original = place.file("exports/original.csv")
    os.link(original, place.exports / "hardlink.csv")
    theirs = place.file(f"home/archive/{OTHER}/20260101/theirs_abcdef12.csv")
    place.file(f"home/inbox/{OTHER}/theirs.csv")
    place.file("home/airflow/airflow.cfg", "[core]\n")
    export = lambda value, practice=PRACTICE: {"practice_id": practice, "export_file": value}  # noqa: E731
    return {
        "export_file: relative path": export("exports/original.csv"),
        "export_file: .. out of the root": export(f"{place.exports}/../outside/x.csv"),
        "export_file: symlink in a root to /etc/passwd": export(str(place.exports / "passwd.csv")),
        "export_file: symlink in a root to outside": export(str(place.exports / "escape.csv")),
        "export_file: /etc/passwd": export("/etc/passwd"),
        "export_file: file:///etc/passwd": export("file:///etc/passwd"),
        "export_file: http://": export("http://127.0.0.1:9/x.csv"),
        "export_file: https://": export("https://example.invalid/x.csv"),
        "export_file: s3:// outside the roots": export("s3://aws_default@bucket/x.csv"),
        "export_file: chained fsspec URL": export(f"simplecache::file://{original}"),
        "export_file: the store's SQLite file": export(str(place.home / "patient_store.db")),
        "export_file: Airflow's home": export(str(place.home / "airflow" / "airflow.cfg")),
        "export_file: /proc/self/environ": export("/proc/self/environ"),
        "export_file: another practice's archive": export(str(theirs)),
        "export_file: another practice's inbox": export(str(place.home / "inbox" / OTHER / "theirs.csv")),
        "export_file: hard link": export(str(place.exports / "hardlink.csv")),
        "export_file: newline in the name": export(f"{original}\nWARNING forged"),
        "practice_id: ..": {"practice_id": ".."},
        "practice_id: ../x": {"practice_id": "../x"},
        "practice_id: ../../elsewhere/x": export(str(original), "../../elsewhere/x"),
        "practice_id: a/b": {"practice_id": "a/b"},
        "practice_id: unicode lookalike": {"practice_id": "dеmo_clinic"},
        "practice_id: not registered": {"practice_id": "nobody_clinic"},
        "exported_on: in the future": {"practice_id": PRACTICE, "exported_on": "2999-01-01"},
    }


def _try_conf(place: Place, name: str, conf: dict, cases: list[Case]) -> None:
    from include.patient_import import planning
    from include.patient_import.extract import extract_exports
    from include.patient_import.problems import InputRefused

    case = Case(name, "run conf")
    before = _snapshot(place)
    refusals = 0
    try:
        planning.check_conf(conf, store=place.engine)
    except InputRefused:
        refusals += 1
    if "exported_on" not in conf:  # extract checks the practice and export_file again
        try:
            extract_exports(place.engine, conf.get("practice_id") or PRACTICE, _run(place, name),
                            export_file=conf.get("export_file"))
        except InputRefused:
            refusals += 1
    case.refused = refusals == (1 if "exported_on" in conf else 2)
    case.leaked = _written(place, before) + [f"import {i['id']}" for i in _imports(place)]
    cases.append(case)


# ---------------------------------------------------------------- inbox contents


def _inbox_cases() -> dict[str, Callable[[Place], Path]]:
    def entry_link(place: Place) -> Path:
        inbox = place.inbox()
        (inbox / "link.csv").symlink_to(place.file("outside/x.csv"))
        return inbox

    def hard_link(place: Place) -> Path:
        inbox = place.inbox()
        os.link(place.file("outside/x.csv"), inbox / "x.csv")
        return inbox

    def linked_practice_folder(place: Place) -> Path:
        place.file("share/x 20260101.csv")
        (place.home / "inbox").mkdir()
        (place.home / "inbox" / PRACTICE).symlink_to(place.tmp / "share", target_is_directory=True)
        return place.home / "inbox"

    def linked_inbox_root(place: Place) -> Path:
        place.file(f"share/{PRACTICE}/x 20260101.csv")
        (place.home / "inbox").symlink_to(place.tmp / "share", target_is_directory=True)
        return place.home

    def named_pipe(place: Place) -> Path:
        inbox = place.inbox()
        os.mkfifo(inbox / "pipe.csv")
        return inbox

    def newline_name(place: Place) -> Path:
        inbox = place.inbox()
        (inbox / "x.csv\nCRITICAL forged").symlink_to(place.file("outside/x.csv"))
        return inbox

    def too_large(place: Place) -> Path:
        place.file(f"home/inbox/{PRACTICE}/big.csv", EXPORT + "1002,Lee,Bo,2 Main St,Boise,ID,83705\n" * 40_000)
        return place.home / "inbox" / PRACTICE

    return {"inbox: symbolic link entry": entry_link, "inbox: hard-linked file": hard_link,
            "inbox: symlinked practice folder": linked_practice_folder,
            "inbox: symlinked inbox/ root": linked_inbox_root,
            "inbox: named pipe": named_pipe, "inbox: link named with a newline": newline_name,
            "inbox: file over the size limit": too_large}


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _try_inbox(place: Place, name: str, build: Callable[[Place], Path], cases: list[Case]) -> None:
    from include.patient_import.extract import extract_exports

    case = Case(name, "inbox")
    build(place)
    before = _snapshot(place)
    lines = _Lines()
    logging.getLogger("include.patient_import").addHandler(lines)
    try:
        ids = extract_exports(place.engine, PRACTICE, _run(place, name))
    finally:
        logging.getLogger("include.patient_import").removeHandler(lines)
    imports = _imports(place)
    if name.endswith("size limit"):
        # Taken but rejected unarchived: its name, size and checksum recorded, nothing copied.
        case.refused = (len(ids) == 1 and imports[0]["archive_path"] is None
                        and imports[0]["export_sha256"] and imports[0]["export_bytes"] > 1024 * 1024)
    else:
        case.refused = ids == [] and imports == []
        case.leaked += [f"import {i['id']}" for i in imports]
    case.leaked += _written(place, before)
    case.leaked += [f"forged log line: {m!r}" for m in lines.messages if "\n" in m or "\r" in m]
    cases.append(case)


def security_figures() -> dict:
    """Try every boundary; returns `{"tried": n, "refused": n, "leaked": n, "cases": [Case, ...]}`.

    `leaked` counts the cases that left anything behind (a copy, an import, a changed original, a
    forged log line); it must be 0, and `refused` must equal `tried`.
    """
    cases: list[Case] = []
    with _place() as place:
        names = list(_conf_cases(place))
    for name in names:
        with _place() as place:
            _try_conf(place, name, _conf_cases(place)[name], cases)
    for name, build in _inbox_cases().items():
        with _place() as place:
            _try_inbox(place, name, build, cases)
    return {"tried": len(cases), "refused": sum(c.refused for c in cases),
            "leaked": sum(bool(c.leaked) for c in cases), "cases": cases}


def summary_line(figures: dict) -> str:
    return f"boundaries tried {figures['tried']}, refused {figures['refused']}, leaked {figures['leaked']}"


def failures(figures: dict) -> list[str]:
    """What fails `make reliability`: a boundary not refused, or one that leaked."""
    return [f"boundary {c.name!r}: " + ("not refused" if not c.refused else f"leaked {c.leaked[:3]}")
            for c in figures["cases"] if not c.refused or c.leaked]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print each case")
    args = parser.parse_args(argv)
    with contextlib.redirect_stderr(io.StringIO()):
        figures = security_figures()
    if args.list:
        for case in figures["cases"]:
            print(f"  {case.name:48} {'refused' if case.refused else 'NOT REFUSED'}"
                  f"{'  leaked: ' + ', '.join(case.leaked[:3]) if case.leaked else ''}")
    print(summary_line(figures))
    for failure in failures(figures):
        print(f"FAILED: {failure}")
    return 1 if failures(figures) else 0


if __name__ == "__main__":
    raise SystemExit(main())
