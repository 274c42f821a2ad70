"""One measured figure in a fresh process: `python -m bench.worker FIGURE '<json kwargs>'`.

The parent reads the result line and this process's peak RSS (its rusage), so one figure's
memory never shows in another's.
"""

from __future__ import annotations

import importlib
import json
import sys

from bench.common import emit

# figure -> (module, function). Only the figure's own module is imported: a SQL floor or a store
# digest does not pay for pandas, DuckDB or Airflow, so its process holds what it measures and
# nothing else (each module imports its heavy libraries inside the function that needs them).
FIGURES: dict[str, tuple[str, str]] = {
    "prepare_store": ("bench.ours", "prepare_store"),
    "ours": ("bench.ours", "run_ours"),
    "floor": ("bench.floor", "run_floor"),
    "clean_csv": ("bench.floor", "write_clean_csv"),
    "pandas": ("bench.peers", "run_pandas"),
    "dlt": ("bench.peers", "run_dlt"),
    "duckdb": ("bench.peers", "run_duckdb"),
    "store_digest": ("bench.floor", "store_digest"),
    "parse": ("bench.airflow_overhead", "parse_dag_file"),
}


def main(argv: list[str]) -> int:
    figure, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    module, function = FIGURES[figure]
    emit(getattr(importlib.import_module(module), function)(**kwargs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
