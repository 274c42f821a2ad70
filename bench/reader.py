"""The reader alone (issue #14): `read_export` by its general path (csv row by row), by its
columnar fast path, and a plain pyarrow.csv read of the same file as the reference.

    python -m bench.reader                      # 100,000 and 1,000,000 rows, best of 3
    python -m bench.reader --rows 100000 --repeat 5 --dir /tmp/exports

Exports are written by `tools.generator.generate_export` (seed 1, Excel's artefacts: blank lines,
a quoted line break in some cells, ="…" account numbers, CRLF, UTF-8 with a byte-order mark) and
kept in `--dir` for the next run. All in one process, so the ratios compare like with like on a
shared machine; the seconds themselves are noisy. Prints one line per file and path.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """The fastest of `repeat` runs, in seconds."""
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def measure(path: Path, repeat: int) -> dict[str, float]:
    """Seconds (best of `repeat`) of the general path, the fast path and plain pyarrow.csv."""
    import pyarrow.csv as pa_csv

    from include.patient_import import reader
    from include.patient_import.settings import Limits

    limits = Limits.from_env()
    fast = reader._read_export(path, limits, fast=True)
    general = reader._read_export(path, limits, fast=False)
    assert fast.frame.equals(general.frame), "the two paths disagree: run tests/patient_import/test_reader_fast_path.py"
    encoding = reader._text_encoding(path, path.read_bytes()[:65536])
    if reader._columnar_text(path, encoding, limits) is None:
        print(f"note: {path.name} does not take the fast path")
    return {
        "general": best_of(repeat, lambda: reader._read_export(path, limits, fast=False)),
        "fast": best_of(repeat, lambda: reader._read_export(path, limits, fast=True)),
        "pyarrow": best_of(repeat, lambda: pa_csv.read_csv(
            path, parse_options=pa_csv.ParseOptions(newlines_in_values=True))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "bench_reader")
    args = parser.parse_args(argv)

    from tools.generator import generate_export

    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"{'rows':>10} {'MB':>7} {'general s':>10} {'fast s':>8} {'pyarrow s':>10} "
          f"{'general/fast':>13} {'fast/pyarrow':>13}")
    for rows in args.rows:
        path = args.dir / f"export_{rows}_seed1.csv"
        if not path.exists():
            generate_export(path, rows, seed=1)
        s = measure(path, args.repeat)
        print(f"{rows:>10,} {path.stat().st_size / 1e6:>7.1f} {s['general']:>10.3f} {s['fast']:>8.3f} "
              f"{s['pyarrow']:>10.3f} {s['general'] / s['fast']:>12.1f}x {s['fast'] / s['pyarrow']:>12.1f}x",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
