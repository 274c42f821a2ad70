"""The hostile-memory corpus (SPEC §7, memory is bounded): peak memory of every stage, measured.

    python scripts/hostile_memory.py [--record DIR] [--only NAME ...] [--jobs N] [--kill-above-gb GB]

Each input is generated in a temporary folder just before it runs and deleted right after (the
largest is about 200 MB on disk), dropped into a practice's inbox and imported on a SQLite store
in a temporary home, with the embedded default limits, one stage at a time (extract, validate,
transform, load, report), each in a process of its own forked from this one (which has imported
the pipeline's modules and Great Expectations, as an Airflow worker's supervisor has): a stage
starts with no state of an earlier one, and its peak resident memory is the kernel's figure for
that process (`ru_maxrss` from `wait4`). A stage process that grows beyond `--kill-above-gb`
(default 4) is killed and counted as over.

`--jobs` inputs (default 2, at most the CPU count) run at once, each in a process of its own
forked from this one, with its own home and store; each forks its stage processes as above, so a
stage's peak is still that process's own. Two inputs of up to about 0.8 GB each at once is what
the default asks of the machine; `--jobs 1` runs one input at a time.

With `--record DIR` (first), the output goes to `DIR/hostile_memory.txt` and the exit status to
`DIR/hostile_memory.json`: `make test` starts it so, beside the suite at the lowest CPU priority,
and `scripts/reliability.py --memory-recorded` waits for it and prints it.

Prints one line per input, in the corpus order whatever order they end in: its outcome (status
and file-level codes), the peak of each stage, the largest, and whether it stayed within 2 GB.
Exits 1 when a stage went over 2 GB, crashed, or an input ended with another code than the one
it is meant to.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from itertools import chain
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PRACTICE = "memory_clinic"
EXPORTED_ON = date(2026, 11, 20)
STAGES = ("extract", "validate", "transform", "load", "report")
LIMIT_BYTES = 2 * 1024 ** 3
MB = 1024 * 1024
HEADER = "Account #,Last Name,First Name,Birth Date,Zip"
ROWS = "".join(f"{1000 + n},Quixote,Zebulon,3/14/1987,62701\n" for n in range(5))
# The limits a real deployment runs with: whatever the caller's environment set is dropped.
LIMIT_VARIABLES = ("PATIENT_IMPORT_MAX_FILE_MB", "PATIENT_IMPORT_MAX_ROWS", "PATIENT_IMPORT_MAX_COLUMNS",
                   "PATIENT_IMPORT_MAX_FIELD_LENGTH", "PATIENT_IMPORT_MAX_UNCOMPRESSED_MB",
                   "PATIENT_IMPORT_MAX_LINES_BEFORE_HEADER")

ACCEPTED = frozenset({"completed", "completed_with_errors"})


@dataclass
class Hostile:
    name: str
    what: str
    write: Callable[[Path], None]
    codes: frozenset[str]  # file-level codes it may end with; empty: it is imported


# ---------------------------------------------------------------- the inputs


def _write_repeated(path: Path, head: bytes, block: bytes, count: int, tail: bytes = b"") -> None:
    with path.open("wb") as f:
        f.write(head)
        step = max(1, (8 * MB) // len(block))
        for start in range(0, count, step):
            f.write(block * min(step, count - start))
        f.write(tail)


def _text(encoding: str, head: str, block: str, count: int, tail: str = "") -> Callable[[Path], None]:
    def write(path: Path) -> None:
        bom = b"\xff\xfe" if encoding == "utf-16-le" else b""
        _write_repeated(path, bom + head.encode(encoding), block.encode(encoding), count, tail.encode(encoding))
    return write


def _rows_with_invalid_optionals(path: Path) -> None:
    # Nine optional values wrong on every row: a warning each, every row imported.
    header = ("Account #,Last Name,First Name,State,Zip,Home Phone,Cell Phone,Email,Birth Date,Sex,"
              "Status,Last Visit\n")
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(header)
        for n in range(250_000):
            f.write(f"{500000 + n},Quixote,Zebulon,ZZ,12,123,555,not-an-email,13/45/2020,Q,maybe,99/99/9999\n")


def _workbook(path: Path, members: Iterator[tuple[str, Iterator[bytes]]], level: int = 6) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, parts in members:
            with archive.open(name, "w") as member:
                for part in parts:
                    member.write(part)


_CONTENT_TYPES = (b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/'
                  b'package/2006/content-types"><Default Extension="rels" ContentType="application/'
                  b'vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType='
                  b'"application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/'
                  b'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName='
                  b'"/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.'
                  b'spreadsheetml.worksheet+xml"/></Types>')
_ROOT_RELS = (b'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
              b'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
              b'officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>')
_NS = b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_RNS = b'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'


def _book_parts(sheet: Iterator[bytes], *, strings: Iterator[bytes] | None = None,
                sheets: int = 1) -> Iterator[tuple[str, Iterator[bytes]]]:
    """A minimal workbook: its first sheet's XML streamed from `sheet`."""
    listed = b"".join(b'<sheet name="S%d" sheetId="%d" r:id="rId%d"/>' % (n, n, n) for n in range(1, sheets + 1))
    rels = [b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            b'relationships/worksheet" Target="worksheets/sheet1.xml"/>']
    if strings is not None:
        rels.append(b'<Relationship Id="rIdS" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                    b'relationships/sharedStrings" Target="sharedStrings.xml"/>')
    yield "[Content_Types].xml", iter([_CONTENT_TYPES])
    yield "_rels/.rels", iter([_ROOT_RELS])
    yield "xl/workbook.xml", iter([b'<?xml version="1.0" encoding="UTF-8"?><workbook %s %s><sheets>' % (_NS, _RNS),
                                   listed, b"</sheets></workbook>"])
    yield "xl/_rels/workbook.xml.rels", iter([
        b'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
        b'package/2006/relationships">', *rels, b"</Relationships>"])
    if strings is not None:
        yield "xl/sharedStrings.xml", strings
    yield "xl/worksheets/sheet1.xml", sheet


def _sheet(rows: Iterator[bytes]) -> Iterator[bytes]:
    yield b'<?xml version="1.0" encoding="UTF-8"?><worksheet %s><sheetData>' % _NS
    yield (b'<row r="1"><c r="A1" t="inlineStr"><is><t>Account #</t></is></c><c r="B1" t="inlineStr"><is><t>'
           b'Last Name</t></is></c><c r="C1" t="inlineStr"><is><t>First Name</t></is></c></row>')
    yield from rows
    yield b"</sheetData></worksheet>"


def _varied(blocks: int, piece: bytes, *, seed: int) -> Iterator[bytes]:
    """`blocks` blocks of 1,000 `piece`s (about 1 MB each when a piece is), each piece's `%08x` a
    random tag: varied enough to stay under the zip-bomb ratio."""
    rng = random.Random(seed)
    for _ in range(blocks):
        yield b"".join(piece % rng.getrandbits(32) for _ in range(1000))


def _padded_sheet(path: Path) -> None:
    # A GB of comments (the old guard allowed half the XML's bytes in cells), varied enough to
    # stay under the zip-bomb ratio, around two far cells: A2500000 and GR1 span 2.5 million rows
    # by 200 columns, a 16 GB grid.
    rows = chain([b'<row r="1"><c r="GR1"><v>1</v></c></row>'],
                 _varied(1_000, b"<!--" + b"p" * 1000 + b"%08x-->", seed=11),
                 [b'<row r="2500000"><c r="A2500000"><v>1</v></c></row>'])
    _workbook(path, _book_parts(_sheet(rows)), level=1)


def _many_entries(path: Path) -> None:
    _workbook(path, _book_parts(_sheet(iter([b'<row r="2"><c r="A2"><v>1</v></c></row>']))))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as archive:
        for n in range(300_000):
            archive.writestr(f"xl/media/p{n}.bin", b"x")


def _many_sheets(path: Path) -> None:
    _workbook(path, _book_parts(_sheet(iter([b'<row r="2"><c r="A2"><v>1</v></c></row>'])), sheets=500_000))


def _shared_strings_bomb(path: Path) -> None:
    # One 30,000-character shared string used by a million cells: 30 GB once calamine copies it.
    long = b"".join(b"%05d" % n for n in range(6_000))
    strings = iter([b'<?xml version="1.0" encoding="UTF-8"?><sst %s count="1" uniqueCount="1"><si><t>' % _NS,
                    long, b"</t></si></sst>"])

    def rows() -> Iterator[bytes]:
        for start in range(2, 1_000_002, 10_000):
            yield b"".join(b'<row r="%d"><c r="A%d" t="s"><v>0</v></c></row>' % (n, n)
                           for n in range(start, start + 10_000))
    _workbook(path, _book_parts(_sheet(rows()), strings=strings))


def _shared_strings_count(path: Path) -> None:
    # 24 million distinct short entries: a table calamine would spend over a GB on.
    template = b"".join(b"<si><t>BBBB%04d</t></si>" % n for n in range(10_000))

    def strings() -> Iterator[bytes]:
        yield b'<?xml version="1.0" encoding="UTF-8"?><sst %s>' % _NS
        for block in range(2_400):
            yield template.replace(b"BBBB", b"%04x" % block)
        yield b"</sst>"
    _workbook(path, _book_parts(_sheet(iter([b'<row r="2"><c r="A2" t="s"><v>0</v></c></row>'])),
                                strings=strings()), level=1)


def _huge_cell(path: Path) -> None:
    rows = chain([b'<row r="2"><c r="A2" t="inlineStr"><is><t>'],
                 _varied(300, b"v" * 1000 + b"%08x", seed=12), [b"</t></is></c></row>"])
    _workbook(path, _book_parts(_sheet(rows)), level=1)


def _lying_sizes(path: Path) -> None:
    # The sheet's zip entry says 4 KB; it inflates to 20 MB and a far cell. zipfile reads what it
    # says, calamine what it holds.
    from tools.corpus import with_lying_size

    _workbook(path, _book_parts(_sheet(iter([
        b'<row r="2"><c r="A2"><v>1</v></c></row>', b" " * (20 * MB),
        b'<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>']))))
    path.write_bytes(with_lying_size(path.read_bytes(), "xl/worksheets/sheet1.xml", 4000))


def _over_size_limit(path: Path) -> None:
    _write_repeated(path, f"{HEADER}\n".encode(), b"1000,Quixote,Zebulon,3/14/1987,62701\n",
                    (201 * MB) // 37 + 1)


R, C, L, F = "unreadable_file", "too_many_columns", "field_too_long", "file_too_large"
# A tab-separated page copy has no quoting rules (SPEC §2): its unclosed quote is text, and the
# file is then refused for its rows.
T = "too_many_rows"


def corpus() -> list[Hostile]:
    return [
        Hostile("blank_lines_before_header.csv", "50,000,000 lines of one space, then the list (100 MB)",
                _text("utf-8", "", " \n", 50_000_000, f"{HEADER}\n{ROWS}"), frozenset({R})),
        Hostile("blank_lines_before_header_utf16.txt", "the same in UTF-16 (25,000,000 lines, 100 MB)",
                _text("utf-16-le", "", " \r\n", 16_000_000, f"{HEADER}\r\n{ROWS}"), frozenset({R})),
        Hostile("row_of_delimiters.csv", "one data row of 199 MB of commas",
                _text("utf-8", f"{HEADER}\n{ROWS}", ",", 199 * MB, "\n"), frozenset({C})),
        Hostile("row_of_delimiters_utf16.txt", "one data row of 100 MB of tabs, UTF-16",
                _text("utf-16-le", HEADER.replace(",", "\t") + "\r\n", "\t", 50 * MB, "\r\n"), frozenset({C})),
        Hostile("header_of_empty_columns.csv", "a header followed by 150,000,000 empty columns",
                _text("utf-8", "Account #,Last Name,First Name", ",", 150 * MB, f"\n{ROWS}"), frozenset({C})),
        Hostile("long_header_line.csv", "a header line of 150 MB without a delimiter",
                _text("utf-8", "", "Account", 150 * MB // 7, f"\n{ROWS}"), frozenset({L})),
        Hostile("unclosed_quote.csv", "a quote opened on row 2 and never closed over 150 MB of lines",
                _text("utf-8", f'{HEADER}\n1000,"Quixote', "Zebulon,3/14/1987,62701\n", 150 * MB // 24),
                frozenset({R})),
        Hostile("unclosed_quote_one_line.csv", "a quote never closed over 150 MB without a line break",
                _text("utf-8", f'{HEADER}\n1000,"Quixote', "Zebulon 3/14/1987 ", 150 * MB // 18), frozenset({R, L})),
        Hostile("unclosed_quote_utf16.txt", "a quote never closed over 100 MB of UTF-16 lines",
                _text("utf-16-le", HEADER.replace(",", "\t") + '\r\n1000\t"Quixote', "Zebulon\t62701\r\n",
                      50 * MB // 15), frozenset({R, T})),
        Hostile("padded_sheet.xlsx", "1 GB of XML comments around cells at A2500000 and GR1", _padded_sheet,
                frozenset({F, C})),
        Hostile("many_zip_entries.xlsx", "a workbook with 300,000 zip entries", _many_entries, frozenset({F})),
        Hostile("many_sheets.xlsx", "a workbook listing 500,000 sheets", _many_sheets, frozenset({F})),
        Hostile("shared_strings_bomb.xlsx", "a 30,000-character shared string used by 1,000,000 cells",
                _shared_strings_bomb, frozenset({F})),
        Hostile("shared_strings_count.xlsx", "24,000,000 distinct shared strings", _shared_strings_count,
                frozenset({F})),
        Hostile("huge_cell.xlsx", "one inline cell of 300 MB", _huge_cell, frozenset({L})),
        Hostile("lying_sizes.xlsx", "a sheet entry claiming 4 KB that inflates to 20 MB and a far cell",
                _lying_sizes, frozenset({R, F, C})),
        Hostile("over_size_limit.csv", "a well-formed list of 201 MB (the limit is 200 MB)", _over_size_limit,
                frozenset({F})),
        Hostile("rows_with_invalid_optionals.csv", "250,000 rows with nine invalid optional values each",
                _rows_with_invalid_optionals, frozenset()),
    ]


# ---------------------------------------------------------------- one stage, one process


def _stage(stage: str, import_id: str | None) -> dict:
    from include.patient_import import pipeline, records

    engine = records.open_store()
    try:
        if stage == "prepare":
            records.open_store(prepare=True).dispose()
            return {}
        if stage == "extract":
            run = pipeline.RunInfo(dag_id="hostile_memory", run_id=f"memory_{time.time_ns()}", map_index=0)
            return {"import_ids": pipeline.extract_exports(engine, PRACTICE, run, exported_on=EXPORTED_ON)}
        assert import_id is not None
        return pipeline.run_stage(engine, stage, import_id)
    finally:
        engine.dispose()


@dataclass
class Measured:
    peak: int = 0  # bytes
    failed: str | None = None
    result: dict = field(default_factory=dict)


def _watch(pid: int, kill_above: int) -> tuple[int, bool, object]:
    """Wait for the child; kill it when its resident memory passes `kill_above` bytes."""
    killed = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, killed, usage
        try:
            with open(f"/proc/{pid}/statm") as statm:
                resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            resident = 0
        if resident > kill_above and not killed:
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.02)


def run_stage(stage: str, import_id: str | None, work: Path, kill_above: int) -> Measured:
    out = work / f"{stage}.json"
    out.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the stage's own process
        status = 1
        try:
            log = os.open(work / "stages.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(log, 1)
            os.dup2(log, 2)
            out.write_text(json.dumps(_stage(stage, import_id), default=str), encoding="utf-8")
            status = 0
        except BaseException as exc:  # noqa: BLE001 - reported by the parent, never raised
            out.write_text(json.dumps({"error": type(exc).__name__, "code": getattr(exc, "code", None)}),
                           encoding="utf-8")
        finally:
            os._exit(status)
    status, killed, usage = _watch(pid, kill_above)
    measured = Measured(peak=usage.ru_maxrss * 1024)
    if killed:
        measured.failed = f"killed above {kill_above // 1024 ** 3} GB"
    elif os.WIFSIGNALED(status):
        measured.failed = f"died ({signal.Signals(os.WTERMSIG(status)).name})"
    elif out.is_file():
        measured.result = json.loads(out.read_text(encoding="utf-8"))
        if "error" in measured.result:
            measured.failed = measured.result["error"]
    else:
        measured.failed = f"exited {os.WEXITSTATUS(status)}"
    return measured


@dataclass
class Row:
    name: str
    outcome: str
    peaks: dict[str, Measured]
    ok_codes: bool

    @property
    def largest(self) -> int:
        return max((m.peak for m in self.peaks.values()), default=0)

    @property
    def within(self) -> bool:
        return self.largest <= LIMIT_BYTES and not any(m.failed for m in self.peaks.values())


def _generate(item: Hostile, path: Path) -> None:
    """Write the input from a process of its own, so that this one, which every stage process is
    forked from, stays as small as it started."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            item.write(path)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if status:
        raise SystemExit(f"hostile memory: could not write {item.name}")


def measure(item: Hostile, home: Path, kill_above: int) -> Row:
    from include.patient_import import settings

    inbox = settings.area("inbox", PRACTICE)
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / item.name
    _generate(item, path)
    peaks: dict[str, Measured] = {}
    try:
        peaks["extract"] = extracted = run_stage("extract", None, home, kill_above)
        ids = extracted.result.get("import_ids") or []
        if not ids:
            return Row(item.name, f"not extracted ({extracted.failed or 'no import'})", peaks, False)
        [import_id] = ids
        for stage in ("validate", "transform", "load"):
            peaks[stage] = run_stage(stage, import_id, home, kill_above)
            if peaks[stage].failed:
                break
        peaks["report"] = reported = run_stage("report", import_id, home, kill_above)  # runs whatever failed
        report_path = reported.result.get("report")
        if not report_path:
            return Row(item.name, "no report", peaks, False)
        report = json.loads(Path(report_path).read_text(encoding="utf-8"))
        codes = {p["code"] for p in report["problems"] if p.get("row") is None and p["code"] != "unknown_column"}
        status = report["status"]
        ok = (status in ACCEPTED and not codes) if not item.codes else bool(codes) and codes <= item.codes
        return Row(item.name, f"{status} {','.join(sorted(codes))}".strip(), peaks, ok)
    finally:
        path.unlink(missing_ok=True)
        for folder in ("archive", "quarantine", "staging", "outbox"):
            for leftover in sorted(settings.area(folder).rglob("*"), reverse=True):
                if leftover.is_file():
                    leftover.unlink()


def _setup(home: Path) -> None:
    """A home with the practice's registry, made the one this process (and what it forks) uses."""
    home.mkdir(parents=True, exist_ok=True)
    registry = home / "practices.yml"
    if not registry.is_file():
        registry.write_text(f"""
practices:
  - id: {PRACTICE}
    name: Memory Clinic
    capacity: 1000000
    systems: [drip_education]
""", encoding="utf-8")
    for name in LIMIT_VARIABLES:
        os.environ.pop(name, None)
    os.environ.pop("PATIENT_IMPORT_STORAGE", None)
    os.environ.update({"PATIENT_IMPORT_HOME": str(home), "PATIENT_IMPORT_PRACTICES": str(registry),
                       "PATIENT_IMPORT_SETTLE_SECONDS": "0"})


# ---------------------------------------------------------------- inputs side by side

Result = TypeVar("Result")


def in_order(count: int, jobs: int, start: Callable[[int, int], int], collect: Callable[[int, int, int], Result],
             poll_seconds: float = 0.05, first: tuple[int, ...] = ()) -> Iterator[tuple[int, Result]]:
    """Run `count` jobs, at most `jobs` at a time, and yield `(index, result)` in index order.

    The jobs start in index order, those in `first` before the others (the longest, so that they
    do not run alone at the end); the results still come in index order.

    `start(index, slot)` forks the job's process and returns its pid; `slot` (0 .. jobs-1) is one
    no other running job has, for what two jobs must not share (a home, a store). When the process
    has ended, `collect(index, slot, wait_status)` gives its result. A result is yielded as soon as
    every earlier one has been: a quick job waits for the slow one before it.

    Only the pids `start` returned are waited for (`waitpid(pid, WNOHANG)`, polled every
    `poll_seconds`): another child of this process is never reaped. A start or collect that raises
    leaves the jobs still running; the caller's process ending stops nothing, so both must not fail.
    """
    jobs = max(1, jobs)
    free = list(range(jobs))
    running: dict[int, tuple[int, int]] = {}  # pid -> (index, slot)
    results: dict[int, Result] = {}
    waiting = [i for i in first if 0 <= i < count] + [i for i in range(count) if i not in first]
    shown = 0
    while shown < count:
        while free and waiting:
            slot, index = free.pop(0), waiting.pop(0)
            running[start(index, slot)] = (index, slot)
        ended = []
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                ended.append((pid, status))
        if not ended:
            time.sleep(poll_seconds)
            continue
        for pid, status in ended:
            index, slot = running.pop(pid)
            results[index] = collect(index, slot, status)
            free.append(slot)
        while shown in results:
            yield shown, results.pop(shown)
            shown += 1


def _start_input(item: Hostile, home: Path, kill_above: int, out: Path) -> int:
    """Fork the process that measures one input in `home` (made this process's first, so the
    fork inherits it) and writes its Row to `out` as JSON; its pid."""
    _setup(home)
    out.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            row = measure(item, home, kill_above)
            out.write_text(json.dumps(asdict(row), default=str), encoding="utf-8")
            status = 0
        except BaseException as exc:  # noqa: BLE001 - reported by the parent, never raised
            out.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), encoding="utf-8")
        finally:
            os._exit(status)
    return pid


def _collected(item: Hostile, out: Path, status: int) -> Row:
    """The Row an input's process wrote, or a failed one when it wrote none."""
    try:
        data = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        how = (f"died ({signal.Signals(os.WTERMSIG(status)).name})" if os.WIFSIGNALED(status)
               else f"exited {os.waitstatus_to_exitcode(status)}")
        data = {"error": how}
    if "error" in data:
        # Counted as a stage that did not finish: never "within 2 GB" for want of a figure.
        return Row(item.name, "not measured", {"extract": Measured(failed=data["error"])}, False)
    peaks = {stage: Measured(**m) for stage, m in data["peaks"].items()}
    return Row(data["name"], data["outcome"], peaks, data["ok_codes"])


def _mb(size: int) -> str:
    return f"{size / MB:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="run only these inputs (by name)")
    parser.add_argument("--kill-above-gb", type=float, default=4.0,
                        help="kill a stage process whose resident memory passes this (default 4)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="inputs measured at once, each with its own store (default 2, at most the CPU count)")
    args = parser.parse_args(argv)
    items = [h for h in corpus() if not args.only or h.name in args.only]
    kill_above = int(args.kill_above_gb * 1024 ** 3)
    jobs = max(1, min(args.jobs, len(items) or 1))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="patient_import_memory_") as tmp:
        homes = [Path(tmp) / f"home{n}" for n in range(jobs)]
        # What every stage process starts from, as a worker's supervisor has it.
        import great_expectations  # noqa: F401

        from include.patient_import import load, pipeline, report, transform, validate  # noqa: F401
        for home in homes:
            _setup(home)
            prepared = run_stage("prepare", None, home, kill_above)
            if prepared.failed:
                print(f"hostile memory: the store could not be prepared ({prepared.failed})")
                return 1
        rows: list[Row] = []
        print("hostile memory: peak resident memory of each stage, MB, each in its own process "
              f"(limit {_mb(LIMIT_BYTES)} MB; {jobs} input{'s' if jobs > 1 else ''} at a time)")
        print(f"  {'input':38} {'outcome':34} " + " ".join(f"{s:>9}" for s in STAGES) + f" {'max':>7}  ≤ 2 GB")
        outs = [Path(tmp) / f"row{n}.json" for n in range(jobs)]
        measured = in_order(
            len(items), jobs,
            start=lambda index, slot: _start_input(items[index], homes[slot], kill_above, outs[slot]),
            collect=lambda index, slot, status: _collected(items[index], outs[slot], status),
            # An input meant to be imported goes through every stage with all its rows: the longest.
            first=tuple(i for i, item in enumerate(items) if not item.codes))
        for index, row in measured:
            item = items[index]
            rows.append(row)
            cells = []
            for stage in STAGES:
                m = row.peaks.get(stage)
                cells.append(f"{'-' if m is None else _mb(m.peak) + ('!' if m.failed else ''):>9}")
            verdict = "yes" if row.within else "NO"
            print(f"  {row.name:38} {row.outcome[:34]:34} {' '.join(cells)} {_mb(row.largest):>7}  {verdict}"
                  + ("" if row.ok_codes else f"   (expected {'/'.join(sorted(item.codes)) or 'imported'})"),
                  flush=True)
            for stage, m in row.peaks.items():
                if m.failed and not (stage == "validate" and m.failed == "ExportRejected"):
                    print(f"      {stage}: {m.failed}")
    over = [r.name for r in rows if not r.within]
    wrong = [r.name for r in rows if not r.ok_codes]
    print(f"  {len(rows)} inputs, {len(rows) - len(over)} within 2 GB, {len(rows) - len(wrong)} with the expected "
          f"outcome; took {time.perf_counter() - started:.0f} s")
    for name in over:
        print(f"FAILED: {name}: a stage needed more than 2 GB or did not finish")
    for name in wrong:
        print(f"FAILED: {name}: not the expected outcome")
    return 1 if over or wrong else 0


def recorded(folder: Path, argv: list[str]) -> int:
    """`main(argv)` with its output in `folder/hostile_memory.txt`, its pid in `.pid` while it runs
    and its exit status in `.json` at the end: how `make test` runs it beside the suite and
    `reliability.py --memory-recorded` reads it (`read_recorded`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hostile_memory.pid").write_text(str(os.getpid()), encoding="utf-8")
    # The descriptors, not sys.stdout: what a stage process or a library writes lands there too.
    with (folder / "hostile_memory.txt").open("wb") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    status = 1
    try:
        status = main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        (folder / "hostile_memory.json").write_text(json.dumps({"returncode": status}), encoding="utf-8")
    return status


def read_recorded(folder: Path, poll_seconds: float = 0.5) -> tuple[int, str]:
    """Wait for a `recorded` run in `folder` to end; returns (exit status, its output).

    Raises FileNotFoundError when none was started there, and RuntimeError when its process ended
    without its figures (killed).
    """
    pid_file, status_file = folder / "hostile_memory.pid", folder / "hostile_memory.json"
    if not pid_file.is_file():
        raise FileNotFoundError(f"no hostile-memory run recorded in {folder}")
    pid = int(pid_file.read_text(encoding="utf-8"))
    while not status_file.is_file():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            if status_file.is_file():
                break
            raise RuntimeError(f"the hostile-memory run (pid {pid}) ended without its figures") from None
        time.sleep(poll_seconds)
    status = json.loads(status_file.read_text(encoding="utf-8"))["returncode"]
    return status, (folder / "hostile_memory.txt").read_text(encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--record"] and len(sys.argv) > 2:
        raise SystemExit(recorded(Path(sys.argv[2]), sys.argv[3:]))
    raise SystemExit(main())
