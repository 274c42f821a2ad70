"""`make bench` end to end at a tiny size, and how the report treats a peer stopped at the timeout.

The figures themselves are never asserted (timing belongs to the bench, not to tests): only that
the harness runs the real stages, records every figure and reports what it measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    """The real bench on SQLite, 300 rows, once: floor, naive pandas and ours."""
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATIENT_IMPORT_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--sizes", "300", "--repeat", "1", "--databases", "sqlite",
         "--figures", "floor,pandas,ours", "--out", str(out), "--chart", str(out / "chart.png")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"stdout": done.stdout, "results": json.loads((out / "latest.json").read_text()),
            "table": (out / "latest.md").read_text()}


@pytest.mark.integration
def test_the_bench_runs_every_figure_through_the_real_stages(tiny_run):
    results = tiny_run["results"]
    measured = {(s["figure"], s["mode"]) for s in results["samples"]}
    assert measured >= {("floor", "insert"), ("floor", "unchanged"), ("pandas", "insert"),
                        ("ours", "insert"), ("ours", "unchanged"), ("generator", "write")}
    ours = {s["mode"]: s for s in results["samples"] if s["figure"] == "ours"}
    assert ours["insert"]["detail"]["counts"]["read"] == 300
    assert ours["insert"]["detail"]["counts"]["inserted"] > 250
    assert ours["unchanged"]["detail"]["counts"]["inserted"] == 0
    assert set(ours["insert"]["stages"]) >= {"read", "normalise", "gx_suites", "transform", "load", "report"}
    assert all(s["seconds"] > 0 and s["peak_rss_mb"] > 0 for s in results["samples"])
    assert "| 300 | sqlite | ours | empty (inserts) |" in tiny_run["table"]
    assert "Targets:" in tiny_run["table"] and "machine:" in tiny_run["stdout"]


@pytest.mark.integration
def test_a_peer_stopped_at_the_timeout_is_reported_as_a_bound_never_a_time(tiny_run):
    results = json.loads(json.dumps(tiny_run["results"]))
    results["figure_timeout_seconds"] = 300
    for sample in results["samples"]:
        if sample["figure"] == "pandas":
            sample["seconds"] = None  # as `record` keeps a figure stopped at the timeout

    summary = report.summarise(results)
    [pandas] = [f for f in summary["figures"] if f["figure"] == "pandas"]
    assert pandas["seconds"] is None and pandas["did_not_finish_in"] == 300
    [target] = [t for t in summary["targets"] if t["target"] == "ours faster than naive pandas (inserts)"]
    ours = next(f for f in summary["figures"] if f["figure"] == "ours" and f["mode"] == "insert")
    assert target["bound"] and target["ratio"] == pytest.approx(ours["seconds"] / 300)
    text = report.markdown(results | {"summary": summary})
    assert "| 300 | sqlite | naive pandas | empty (inserts) | > 300 (stopped) |" in text
    assert f"≤ {target['ratio']:.2f}×" in text
