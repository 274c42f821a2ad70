"""One measured figure in a fresh process: `python -m bench.worker FIGURE '<json kwargs>'`.

The parent reads the result line and this process's peak RSS (its rusage), so one figure's
memory never shows in another's.
"""

from __future__ import annotations

import json
import sys

from bench.common import emit


def _figures():
    from bench import airflow_overhead, floor, ours, peers

    return {
        "prepare_store": ours.prepare_store,
        "ours": ours.run_ours,
        "floor": floor.run_floor,
        "clean_csv": floor.write_clean_csv,
        "pandas": peers.run_pandas,
        "dlt": peers.run_dlt,
        "duckdb": peers.run_duckdb,
        "store_digest": floor.store_digest,
        "parse": airflow_overhead.parse_dag_file,
    }


def main(argv: list[str]) -> int:
    figure, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    emit(_figures()[figure](**kwargs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
