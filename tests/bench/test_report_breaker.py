"""Hostile review of 6429cd2 (`--largest-figures`, each comparison headlined at the largest size it
was measured at), on synthetic results: what the report claims when ours stops at the timeout at
the largest size, and when a comparison is measured at no size at all."""

from __future__ import annotations

from bench import report


def _sample(figure: str, rows: int, seconds: float | None, mode: str = "insert") -> dict:
    return {"figure": figure, "database": "postgresql", "rows": rows, "mode": mode, "seconds": seconds,
            "process_seconds": 1.0, "process_cpu_seconds": 1.0, "peak_rss_mb": 1.0, "stages": {}}


def test_ours_stopped_at_the_largest_size_is_not_headlined_as_met_at_a_smaller_one():
    """Ours stopped at the timeout at 1,000 rows where the floor took 10 s: the floor comparison's
    headline must not be the 100-row ratio, met, as if the largest size had not been measured."""
    results = {"sizes": [100, 1000], "databases": ["postgresql"], "figure_timeout_seconds": 900, "samples": [
        _sample("ours", 100, 1.0), _sample("floor:merge", 100, 1.0),
        _sample("ours", 1000, None), _sample("floor:merge", 1000, 10.0)]}
    floor = [t for t in report.summarise(results)["targets"] if t["target"] == "ours ≤ 1.5× the floor (insert)"]
    headline = [t for t in floor if t["headline"]]
    assert headline and headline[0]["rows"] == 1000 and headline[0]["met"] is not True, floor


def test_a_comparison_measured_at_no_size_is_reported_not_measured():
    """`_targets`: "Issue #14's targets that this run measured (met True/False), and the rest
    (met None)". With `--largest-figures ours,floor` and one size (or --figures without the peers)
    the dlt and DuckDB targets must still be listed, not measured, not vanish."""
    results = {"sizes": [1000], "databases": ["postgresql"], "samples": [
        _sample("ours", 1000, 10.0), _sample("floor:merge", 1000, 10.0)]}
    names = {t["target"]: t["met"] for t in report.summarise(results)["targets"]}
    assert names.get("ours faster than dlt merge (insert)", "missing") is None
    assert names.get("ours faster than DuckDB (insert)", "missing") is None
