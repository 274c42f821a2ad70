"""COPY's CSV alone (issue #14): `load._copy_csv` of a chunk built from the frame's own columns
(`load._arrow_column`) against the same CSV built from the columns' Python values
(`load._python_column`, the path it replaced), and `load.iso_dates` against its former
factorize-then-check-each-distinct-value form.

    python -m bench.copy_csv                       # 100,000 rows (one COPY chunk), 7 rounds
    python -m bench.copy_csv --rows 100000 --repeat 11

The frames are shaped like the load's (its dtypes as `patients.decided_rows` hands them on): the
staging table's 17 object text columns (None for 10 % of the cells, 5,000 distinct values each),
the two dates as ISO text in object columns (30,000 distinct days, 5 % None), the row number as
int64, the constants and the (empty) updated import id as pandas' text; `import_rows`' six columns.
The old and the new path run alternately in one process, so the ratios compare like with like on
a shared machine; prints the median and range of each, in ms.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pandas as pd


def frames(rows: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A staging-table chunk and an `import_rows` chunk of `rows` rows each."""
    rng = np.random.default_rng(seed)

    def texts(distinct: int, empty: float) -> pd.Series:
        words = np.array([f"w{i} x" for i in range(distinct)], dtype=object)
        cells = words[rng.integers(0, distinct, rows)]
        cells[rng.random(rows) < empty] = None
        return pd.Series(cells, dtype=object)

    def days() -> pd.Series:
        cells = np.datetime_as_string(np.datetime64("1940-01-01") + rng.integers(0, 30_000, rows)).astype(object)
        cells[rng.random(rows) < 0.05] = None
        return pd.Series(cells, dtype=object)

    staging = pd.DataFrame({"row_number": np.arange(2, rows + 2, dtype="int64"),
                            **{f"text{i}": texts(5_000, 0.1) for i in range(17)},
                            "birth_date": days(), "last_visit": days(), "practice_id": "bench_clinic",
                            "last_seen_exported_on": "2026-11-01", "created_import_id": "import_x",
                            "updated_import_id": pd.Series([None] * rows, dtype="str")})
    outcomes = pd.DataFrame({"import_id": "import_x", "row_number": np.arange(2, rows + 2, dtype="int64"),
                             "account_number": texts(rows, 0.0), "outcome": texts(3, 0.0),
                             "code": texts(5, 0.9), "changed_fields": pd.Series([None] * rows, dtype=object)})
    return staging, outcomes


def former_iso_dates(values: pd.Series) -> pd.Series:
    """`load.iso_dates` before the Arrow check: every distinct value checked in Python."""
    from include.patient_import import load
    from include.patient_import.normalize import object_array

    positions, distinct = pd.factorize(values.to_numpy(dtype=object))
    texts = object_array([load._date_text(value) for value in distinct.tolist()] + [None])
    return pd.Series(texts[positions], index=values.index, dtype="object")


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from include.patient_import import load

    staging, outcomes = frames(args.rows)
    for frame in (staging, outcomes):  # the two paths agree, or the figures mean nothing
        assert bytes(load._copy_csv(frame)) == bytes(load._copy_csv(frame, load._python_column))
    assert load.iso_dates(staging["birth_date"]).tolist() == former_iso_dates(staging["birth_date"]).tolist()
    runs: dict[str, Callable[[], object]] = {
        "staging CSV, Python values": lambda: load._copy_csv(staging, load._python_column),
        "staging CSV, frame columns": lambda: load._copy_csv(staging),
        "import_rows CSV, Python values": lambda: load._copy_csv(outcomes, load._python_column),
        "import_rows CSV, frame columns": lambda: load._copy_csv(outcomes),
        "iso_dates, each distinct value": lambda: former_iso_dates(staging["birth_date"]),
        "iso_dates, Arrow check": lambda: load.iso_dates(staging["birth_date"]),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, run in runs.items():
            times[name].append(seconds(run))
    for name, taken in times.items():
        print(f"{args.rows:>9,} rows  {name:32s} median {np.median(taken) * 1000:7.1f} ms"
              f"  range {min(taken) * 1000:.1f}-{max(taken) * 1000:.1f}")


if __name__ == "__main__":
    main()
