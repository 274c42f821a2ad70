"""Reliability figures: `make reliability` (also the last step of `make test`).

    python scripts/reliability.py [--list] [--figures DIR]

Prints, and exits 1 when a must-be-zero figure is not zero:

- **bad inputs tried / rejected cleanly**: every file of the hostile corpus (tools/corpus.py)
  through the five stages in-process, on a SQLite store in a temporary home, with the corpus
  limits. Clean: no exception, the expected status and code, counts adding up, no patient
  changed, the original archived (and, when rejected, quarantined), no upload file left.
  With `--corpus-recorded` (what `make test` passes) the figures that
  tests/patient_import/test_hostile_inputs.py recorded for the whole corpus
  (`reliability/corpus.json`, tools.corpus.CorpusFigures) are taken instead of importing every file
  a second time; without them, or alone (`make reliability`), the corpus is imported here.
- **markers found** (must be 0): the corpus's patient values found in a report, a log line or the
  Data Docs, plus the `markers_found` other tests recorded.
- **rows lost / duplicated** (must be 0): a generated export with duplicate and bad rows,
  imported twice; every row must have one recorded outcome, every patient the report counts as
  imported must be in the store and the upload file once, and the second import adds nobody.
- **hostile memory** (must stay ≤ 2 GB): scripts/hostile_memory.py, each memory-hostile input
  imported one stage per process, the peak resident memory of each stage printed.
- **boundaries tried / refused / leaked** (leaked must be 0, refused must equal tried): every
  trust boundary of SPEC §7 tried with hostile conf values and inbox contents
  (scripts/security_figures.py).
- **faults injected / survived**: summed from the JSON files other tests (fault injection,
  marker scans) leave in `$PATIENT_IMPORT_HOME/reliability/` (default `var/reliability/`), each
  `{"faults_injected": n, "faults_survived": n, "markers_found": n}` (any key may be missing).
  A fault not survived counts as a must-be-zero failure.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROWS_PRACTICE = "rows_clinic"
ROWS_EXPORT_ROWS = 2_000


@dataclass
class Figures:
    """Every figure but the corpus's own (`corpus`: tools.corpus.CorpusFigures, once counted)."""

    corpus: Any = None
    markers_found: int = 0  # recorded by other tests
    rows_lost: int = 0
    rows_duplicated: int = 0
    faults_injected: int = 0
    faults_survived: int = 0
    figure_files: list[str] = field(default_factory=list)
    unclean: list[str] = field(default_factory=list)  # beyond the corpus: the generated export

    @property
    def markers(self) -> int:
        return self.markers_found + (self.corpus.markers_found if self.corpus else 0)

    @property
    def failures(self) -> list[str]:
        found = []
        unclean = (self.corpus.unclean if self.corpus else []) + self.unclean
        if unclean:
            found.append(f"{len(unclean)} corpus files not handled cleanly: {', '.join(unclean)}")
        if self.markers:
            found.append(f"{self.markers} patient-value markers found")
        if self.rows_lost or self.rows_duplicated:
            found.append(f"{self.rows_lost} rows lost, {self.rows_duplicated} rows duplicated")
        if self.faults_survived < self.faults_injected:
            found.append(f"{self.faults_injected - self.faults_survived} injected faults not survived")
        return found


def _read_recorded(directory: Path, figures: Figures) -> None:
    from tools.corpus import CORPUS_FIGURES_FILE

    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        if path.name == CORPUS_FIGURES_FILE:
            continue  # the corpus's own figures (--corpus-recorded), not a ledger of faults
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: not a reliability figures file ({exc})") from None
        figures.figure_files.append(path.name)
        figures.faults_injected += int(recorded.get("faults_injected", 0))
        figures.faults_survived += int(recorded.get("faults_survived", 0))
        figures.markers_found += int(recorded.get("markers_found", 0))


def _use_home(home: Path) -> None:
    from tools.corpus import CORPUS_PRACTICE, LIMITS_ENV
    from tools.harness.registry import practice, registry_yaml

    home.mkdir(parents=True, exist_ok=True)
    registry = home / "practices.yml"
    registry.write_text(registry_yaml(CORPUS_PRACTICE, practice(ROWS_PRACTICE, "Rows Clinic", capacity=100000)),
                        encoding="utf-8")
    # The corpus and generated exports are written in this home and imported as `export_file`s:
    # it is their one export root (SPEC §7; the store and file areas inside it stay refused).
    os.environ.update({"PATIENT_IMPORT_HOME": str(home), "PATIENT_IMPORT_PRACTICES": str(registry),
                       "PATIENT_IMPORT_SETTLE_SECONDS": "0", "PATIENT_IMPORT_EXPORT_ROOTS": str(home),
                       **LIMITS_ENV})
    os.environ.pop("PATIENT_IMPORT_STORAGE", None)


def _run_corpus(home: Path, engine, listing: bool):
    """Import every corpus file (tools/corpus.py) and count how cleanly each ended."""
    import hashlib

    from tools.corpus import (
        CorpusFigures,
        baseline_rows,
        csv_text,
        data_docs_and_report_texts,
        patients_snapshot,
        run_import,
        why_unclean,
        write_corpus,
    )

    baseline = home / "baseline.csv"
    baseline.write_text(csv_text(baseline_rows()), encoding="utf-8")
    found = CorpusFigures()
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger().addHandler(handler)
    logging.getLogger("include").setLevel(logging.DEBUG)
    try:
        run_import(engine, baseline, run_id="baseline", exported_on=date.fromordinal(date.today().toordinal() - 30))
        for n, (item, path) in enumerate(write_corpus(home / "corpus")):
            before = patients_snapshot(engine)
            start = time.perf_counter()
            try:
                [imported] = run_import(engine, path, run_id=f"corpus_{n}")
                why = why_unclean(item, imported, before, patients_snapshot(engine),
                                  hashlib.sha256(path.read_bytes()).hexdigest())
                found.count_markers(data_docs_and_report_texts(imported.report))
                outcome = f"{imported.report['status']} {','.join(sorted(imported.file_codes))}"
            except Exception as exc:  # noqa: BLE001 - a crash is exactly what this counts
                why, outcome = f"crashed: {type(exc).__name__}", "crash"
            found.add(item, why)
            if listing:
                print(f"  {item.name:34} {outcome:45} {time.perf_counter() - start:6.2f}s  {why or 'clean'}")
    finally:
        logging.getLogger().removeHandler(handler)
    found.count_markers([log.getvalue()])
    return found


def _check_rows(home: Path, engine, figures: Figures) -> dict:
    """Import a generated export twice; compare the store and the upload file with the reports."""
    import sqlalchemy as sa

    from include.patient_import.store import ImportRow
    from tools.corpus import LIMITS_ENV, patients_snapshot, run_import
    from tools.generator import generate_export

    for name in LIMITS_ENV:  # the embedded limits: this export is a good one
        os.environ.pop(name, None)
    export = generate_export(home / "generated.csv", ROWS_EXPORT_ROWS, seed=7, duplicate_share=0.05,
                             bad_share=0.03)
    [first] = run_import(engine, export, run_id="rows_1", practice_id=ROWS_PRACTICE)
    stored = patients_snapshot(engine, ROWS_PRACTICE)
    [second] = run_import(engine, export, run_id="rows_2", practice_id=ROWS_PRACTICE)
    stored_again = patients_snapshot(engine, ROWS_PRACTICE)
    for imported in (first, second):
        if imported.report["status"] not in ("completed", "completed_with_errors"):
            figures.unclean.append(f"generated export ({imported.report['status']}: "
                                   f"{sorted(imported.file_codes)})")
            return {"first": first.report["counts"], "second": second.report["counts"], "stored": len(stored_again)}

    table = ImportRow.__table__
    lost = duplicated = 0
    for imported in (first, second):
        counts = imported.report["counts"]
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.row_number, table.c.account_number, table.c.outcome)
                                .where(table.c.import_id == imported.report["import_id"])).all()
        numbers = [r.row_number for r in rows]
        lost += max(0, counts["read"] - len(set(numbers)))
        duplicated += len(numbers) - len(set(numbers))
        kept = {r.account_number for r in rows if r.outcome in ("inserted", "updated", "unchanged")}
        lost += len(kept - set(stored_again))
    with Path(first.report["files"]["upload"]).open(encoding="utf-8", newline="") as handle:
        upload = [row["TPSID"] for row in csv.DictReader(handle)]
    lost += len(set(stored) - set(upload)) + len(set(upload) - set(stored))
    duplicated += len(upload) - len(set(upload))
    duplicated += abs(len(stored) - first.report["counts"]["inserted"])
    duplicated += second.report["counts"]["inserted"] + abs(len(stored_again) - len(stored))
    figures.rows_lost += lost
    figures.rows_duplicated += duplicated
    return {"first": first.report["counts"], "second": second.report["counts"], "stored": len(stored_again)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the reliability figures; exit 1 if a must-be-zero one is not.")
    parser.add_argument("--list", action="store_true", help="print each corpus file's outcome")
    parser.add_argument("--figures", type=Path, default=None,
                        help="folder of recorded figures (default: $PATIENT_IMPORT_HOME/reliability)")
    parser.add_argument("--corpus-recorded", action="store_true",
                        help="take the corpus figures the tests recorded (make test), when they cover the whole "
                             "corpus, instead of importing every corpus file again")
    parser.add_argument("--memory-recorded", action="store_true",
                        help="wait for the hostile-memory figures `make test` started beside the suite "
                             "(hostile_memory.py --record, in the figures folder) instead of measuring them here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    from include.patient_import import settings

    figures = Figures()
    recorded = args.figures or settings.home() / "reliability"
    _read_recorded(recorded, figures)
    from tools.corpus import CorpusFigures

    corpus_figures = CorpusFigures.recorded(recorded) if args.corpus_recorded and not args.list else None
    started = time.perf_counter()
    # Its own processes, its own home and the embedded limits: nothing of the checks below, so it
    # runs beside them (on two cores, about the time of the longer instead of the sum); its lines
    # are printed after the figures.
    memory = None if args.memory_recorded else subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "hostile_memory.py")], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # GX's progress bars and the package's warnings go to stderr; the log is scanned, not shown.
    with tempfile.TemporaryDirectory(prefix="patient_import_reliability_") as tmp, \
            contextlib.redirect_stderr(io.StringIO()):
        home = Path(tmp) / "home"
        _use_home(home)
        from include.patient_import.records import open_store

        engine = open_store(prepare=True)
        try:
            if args.list:
                print("corpus (tools/corpus.py), package level:")
            if corpus_figures is None:
                corpus_figures = _run_corpus(home, engine, args.list)
                corpus_source = "imported here"
            else:
                corpus_source = f"recorded by the tests in {recorded}"
            figures.corpus = corpus_figures
            rows = _check_rows(home, engine, figures)
        finally:
            engine.dispose()
        security = _security()

    print("reliability figures")
    if figures.figure_files:
        print(f"  faults injected / survived          {figures.faults_injected} / {figures.faults_survived}"
              f"   ({len(figures.figure_files)} files in {recorded})")
    else:
        print(f"  faults injected / survived          none recorded ({recorded}/*.json)")
    corpus = figures.corpus
    print(f"  bad inputs tried / rejected cleanly {corpus.rejected_expected} / {corpus.rejected_cleanly}"
          f"   (+ {corpus.accepted_expected} read as documented: {corpus.accepted_cleanly} clean; {corpus_source})")
    print(f"  markers found (must be 0)           {figures.markers}")
    print(f"  rows lost (must be 0)               {figures.rows_lost}"
          f"   ({ROWS_EXPORT_ROWS} generated rows imported twice: {rows['first']} then {rows['second']})")
    print(f"  rows duplicated (must be 0)         {figures.rows_duplicated}   ({rows['stored']} patients stored)")
    print(f"  {security['line']} (scripts/security_figures.py)")
    print(f"  took {time.perf_counter() - started:.0f} s")
    memory_status, memory_output = _memory_figures(memory, recorded)
    sys.stdout.write(memory_output)
    sys.stdout.flush()
    failures = figures.failures + security["failures"] + (
        ["hostile memory: a stage over 2 GB, crashed or misjudged"] if memory_status else [])
    for failure in failures:
        print(f"FAILED: {failure}")
    # The plain closing line CI reads: one check per must-hold figure above.
    checks = 7
    print(f"reliability: {checks - min(len(failures), checks)} passed, "
          f"{min(len(failures), checks)} failed")
    return 1 if failures else 0


def _memory_figures(memory: subprocess.Popen | None, recorded: Path) -> tuple[int, str]:
    """The hostile-memory run's exit status and output: the one started here, or the one `make test`
    started beside the suite (`hostile_memory.py --record`), waited for."""
    if memory is not None:
        output = memory.communicate()[0]
        return memory.returncode, output
    from scripts.hostile_memory import read_recorded

    try:
        return read_recorded(recorded)
    except (FileNotFoundError, RuntimeError) as exc:
        return 1, f"hostile memory: {exc}\n"


def _security() -> dict:
    """SPEC §7: every trust boundary tried against the package (scripts/security_figures.py)."""
    from scripts.security_figures import failures, security_figures, summary_line

    found = security_figures()
    return {"line": summary_line(found), "failures": failures(found)}


if __name__ == "__main__":
    raise SystemExit(main())
