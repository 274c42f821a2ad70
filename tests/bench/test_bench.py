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
from bench.report import LOAD_PARTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    """The real bench on SQLite, 300 rows, once: floor, naive pandas, DuckDB and ours, each in the
    three cases (inserts, unchanged, newer but identical export)."""
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATIENT_IMPORT_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--sizes", "300", "--repeat", "1", "--databases", "sqlite",
         "--figures", "floor,pandas,duckdb,ours", "--out", str(out), "--chart", str(out / "chart.png")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"stdout": done.stdout, "results": json.loads((out / "latest.json").read_text()),
            "table": (out / "latest.md").read_text()}


@pytest.mark.integration
def test_the_bench_runs_every_figure_through_the_real_stages(tiny_run):
    results = tiny_run["results"]
    measured = {(s["figure"], s["mode"]) for s in results["samples"]}
    assert measured >= {(figure, mode) for figure in ("floor:on_conflict", "duckdb", "ours")
                        for mode in ("insert", "unchanged", "newer")}
    assert measured >= {("pandas", "insert"), ("generator", "write")}
    ours = {s["mode"]: s for s in results["samples"] if s["figure"] == "ours"}
    assert ours["insert"]["detail"]["counts"]["read"] == 300
    assert ours["insert"]["detail"]["counts"]["inserted"] > 250
    assert ours["unchanged"]["detail"]["counts"]["inserted"] == 0
    assert ours["newer"]["detail"]["counts"]["inserted"] == 0
    # The newer export changes no value: every patient comes out unchanged, only its date advances.
    assert ours["newer"]["detail"]["counts"]["unchanged"] == ours["insert"]["detail"]["counts"]["inserted"]
    assert set(ours["insert"]["stages"]) >= {"read", "normalise", "gx_suites", "transform", "load", "report",
                                             *LOAD_PARTS}
    # The newer export's patients are only seen again: their date moves, logged as seen entries.
    assert set(ours["newer"]["stages"]) >= {"decide", "staging", "write", "change_log", "outcomes"}
    assert "| load | decide | staging | write | change_log | outcomes | report | total |" in tiny_run["table"]
    assert all(s["seconds"] > 0 and s["peak_rss_mb"] > 0 for s in results["samples"])
    assert "| 300 | sqlite | ours | empty (inserts) |" in tiny_run["table"]
    assert "Targets (issue #14):" in tiny_run["table"] and "machine:" in tiny_run["stdout"]


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
    text = report.markdown(results | {"summary": summary})
    assert "| 300 | sqlite | naive pandas | empty (inserts) | > 300 (stopped) |" in text
    assert "< 1 |" in text  # its rate: an upper bound


@pytest.mark.integration
def test_a_peer_stopped_at_the_timeout_makes_its_target_a_bound(tiny_run):
    results = json.loads(json.dumps(tiny_run["results"]))
    results["figure_timeout_seconds"] = 300
    results["databases"] = ["postgresql"]
    for sample in results["samples"]:
        sample["database"] = "postgresql"  # the peer targets are PostgreSQL's
        if sample["figure"] == "duckdb" and sample["mode"] == "newer":
            sample["seconds"] = None

    summary = report.summarise(results)
    [target] = [t for t in summary["targets"] if t["target"] == "ours faster than DuckDB (newer)"]
    ours = next(f for f in summary["figures"] if f["figure"] == "ours" and f["mode"] == "newer")
    assert target["bound"] and target["ratio"] == pytest.approx(ours["seconds"] / 300)
    assert f"≤ {target['ratio']:.2f}×" in report.markdown(results | {"summary": summary})


@pytest.mark.integration
def test_ours_the_floor_and_the_peers_leave_the_same_patients(tiny_run):
    """After the three cases every store holds the same patient values and export dates: the
    floor and the peers honour the sync rules the comparison assumes (rule 7's date advance)."""
    digests = tiny_run["results"]["store_digests"]
    [(where, by_figure)] = digests.items()
    assert set(by_figure) == {"ours", "floor:on_conflict", "duckdb"}
    assert len({(d["rows"], d["sha256"]) for d in by_figure.values()}) == 1, by_figure
    assert tiny_run["results"]["summary"]["stores_agree"][where]["agree"]
    assert "the same (duckdb, floor:on_conflict, ours" in tiny_run["table"]


@pytest.mark.integration
def test_every_target_of_issue_14_is_reported_met_not_met_or_not_measured(tiny_run):
    results = tiny_run["results"]
    targets = {t["target"]: t for t in results["summary"]["targets"]}
    for mode in ("insert", "unchanged", "newer"):
        floor = targets[f"ours ≤ 2.0× the floor ({mode})"]
        assert floor["database"] == "sqlite" and floor["met"] in (True, False) and floor["ratio"] > 0
    # Measured at 300 rows: shown, but the target is about 1,000,000 rows.
    rss = targets["peak RSS of any stage ≤ 1024 MB at 1,000,000 rows"]
    assert rss["value"] > 0 and rss["met"] is None
    # The figure is the largest stage's own peak (not the whole process's, every stage in it).
    ours = [f for f in results["summary"]["figures"] if f["figure"] == "ours"]
    assert all({"validate", "transform", "load"} <= set(f["stage_peak_rss_mb"]) for f in ours), ours
    assert rss["value"] == max(max(f["stage_peak_rss_mb"].values()) for f in ours)
    assert "Ours' peak RSS by stage" in tiny_run["table"]
    # Not measured by this run (no Airflow figure, no scheduler): said so, never guessed.
    for name, target in targets.items():
        if "airflow" in name or "scheduled" in name or "parse" in name:
            assert target["met"] is None, name
    assert "[    met     ]" in tiny_run["stdout"] or "[  NOT MET   ]" in tiny_run["stdout"]
    assert "not measured" in tiny_run["stdout"]


def test_the_floor_keeps_the_faster_variant_per_case():
    def sample(figure, mode, seconds):
        return {"figure": figure, "database": "postgresql", "rows": 10, "mode": mode, "seconds": seconds,
                "process_seconds": seconds, "process_cpu_seconds": seconds, "peak_rss_mb": 1.0, "stages": {}}

    results = {"sizes": [10], "databases": ["postgresql"], "samples": [
        sample("floor:merge", "insert", 1.0), sample("floor:on_conflict", "insert", 2.0),
        sample("floor:merge", "unchanged", 3.0), sample("floor:on_conflict", "unchanged", 0.5),
        sample("ours", "insert", 1.2), sample("ours", "unchanged", 1.0)]}
    summary = report.summarise(results)
    floor = {f["mode"]: f for f in summary["figures"] if f["figure"] == "floor"}
    assert (floor["insert"]["method"], floor["insert"]["seconds"]) == ("merge", 1.0)
    assert (floor["unchanged"]["method"], floor["unchanged"]["seconds"]) == ("on_conflict", 0.5)
    targets = {t["target"]: t for t in summary["targets"]}
    assert targets["ours ≤ 1.5× the floor (insert)"]["met"] is True
    assert targets["ours ≤ 1.5× the floor (unchanged)"]["met"] is False


def test_the_task_overhead_reads_every_task_of_the_dag_and_what_it_imports():
    from bench.task_overhead import dag_tasks

    tasks = dag_tasks()
    assert set(tasks) >= {"plan_imports", "extract_exports", "validate_exports", "transform_exports",
                          "load_patients", "report_imports"}
    assert tasks["plan_imports"]["engine"] == "prepare"
    assert all(t["engine"] for t in tasks.values())
    assert "import great_expectations" in tasks["validate_exports"]["imports"]
    assert not any("great_expectations" in line for line in tasks["load_patients"]["imports"])
    # One level into the stage functions: their stage modules are start-up cost too.
    assert any("include.patient_import.transform" in line for line in tasks["transform_exports"]["imports"])


def test_the_task_overhead_child_sets_up_the_store_as_a_task_does(tmp_path):
    """The child process `measure` starts for every task: it must import and open the store (a
    moved function broke `make bench` here while every other figure ran)."""
    import os

    from bench.common import PRACTICES_YAML
    from bench.task_overhead import _child_code, _measure

    (tmp_path / "practices.yml").write_text(PRACTICES_YAML, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATIENT_IMPORT_", "AIRFLOW_CONN_"))}
    env |= {"PYTHONPATH": str(ROOT), "PATIENT_IMPORT_HOME": str(tmp_path),
            "PATIENT_IMPORT_PRACTICES": str(tmp_path / "practices.yml")}
    measured = _measure(_child_code([], "prepare"), env)
    assert measured["engine_seconds"] > 0 and (tmp_path / "patient_store.db").is_file()


def test_the_floor_honours_rules_6_and_7_as_ours_does(tmp_path, monkeypatch):
    """An empty cell keeps the stored value; an older export changes nothing; a newer identical
    one advances last_seen_exported_on only (SPEC §3 rules 6 and 7)."""
    import csv

    import sqlalchemy as sa

    from bench.common import PRACTICE_ID, PRACTICES_YAML, written_columns
    from bench.floor import run_floor, store_digest
    from bench.ours import prepare_store

    practices = tmp_path / "practices.yml"
    practices.write_text(PRACTICES_YAML, encoding="utf-8")
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path))
    monkeypatch.setenv("PATIENT_IMPORT_PRACTICES", str(practices))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    prepare_store(url)
    columns = written_columns()

    def load(name: str, exported_on: str, city: str) -> dict:
        row = {c: "" for c in columns} | {
            "third_party_acct_number": "A1", "first_name": "Ann", "last_name": "Lee", "status": "active",
            "city": city, "practice_id": PRACTICE_ID, "last_seen_exported_on": exported_on}
        path = tmp_path / f"{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, columns, lineterminator="\n")
            writer.writeheader()
            writer.writerow(row)
        return run_floor(url, str(path), import_id=name)

    def stored() -> dict:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            row = conn.exec_driver_sql("SELECT city, last_seen_exported_on, created_import_id, "
                                       "updated_import_id FROM patients").one()
        engine.dispose()
        return dict(row._mapping)

    assert load("first", "2026-01-10", "Austin")["written"] == 1
    assert load("again", "2026-01-10", "Austin")["written"] == 0  # unchanged: nothing written
    assert load("older", "2026-01-01", "Dallas")["written"] == 0  # rule 7: older_than_stored
    assert stored() == {"city": "Austin", "last_seen_exported_on": "2026-01-10",
                        "created_import_id": "first", "updated_import_id": None}
    assert load("newer", "2026-01-20", "")["written"] == 1  # rule 6: the empty city keeps Austin
    assert stored() == {"city": "Austin", "last_seen_exported_on": "2026-01-20",
                        "created_import_id": "first", "updated_import_id": None}
    load("changed", "2026-01-20", "Dallas")  # the same date applies (a tie: the later import wins)
    assert stored()["city"] == "Dallas" and stored()["updated_import_id"] == "changed"
    assert store_digest(url)["rows"] == 1


def test_a_worker_imports_only_its_figures_module():
    """The SQL floor and the store digest run without pandas, DuckDB, GX or Airflow in their
    process: what the bench measures for them is theirs, and the smoke run stays cheap."""
    from bench.worker import FIGURES

    code = ("import importlib, sys; from bench.worker import FIGURES; "
            "[getattr(importlib.import_module(FIGURES[f][0]), FIGURES[f][1]) for f in sys.argv[1:]]; "
            "print(sorted(m for m in ('pandas', 'duckdb', 'great_expectations', 'airflow', 'dlt') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, "floor", "store_digest", "clean_csv"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "[]"
    assert all(callable(getattr(__import__(module, fromlist=[name]), name)) for module, name in FIGURES.values())


def test_a_run_elsewhere_leaves_the_committed_chart_and_docs_alone(tmp_path):
    from bench.run import parse_args

    trial = parse_args(["--sizes", "300", "--out", str(tmp_path)])
    assert Path(trial.chart) == tmp_path / "bench_rows_per_second.png"
    assert trial.docs is None
    committed = parse_args(["--sizes", "300"])
    assert Path(committed.chart) == ROOT / "docs" / "bench_rows_per_second.png"
    assert Path(committed.docs) == ROOT / "docs" / "performance.md"


def test_the_scheduled_runs_are_kept_from_the_previous_results(tmp_path):
    from bench.run import _keep_scheduled

    scheduled = {"rows_per_practice": 1000, "measured_at": "2026-11-30T11:57:34+00:00",
                 "practices": {"20": {"seconds": 150.0, "empty_seconds": 120.0, "ratio": 1.25,
                                      "practices_per_minute_per_core": 4.0}}}
    previous = tmp_path / "latest.json"
    previous.write_text(json.dumps({"samples": [], "scheduled": scheduled}))
    results: dict = {"samples": []}
    _keep_scheduled(results, previous)
    assert results["scheduled"] == scheduled
    assert "| 2026-11-30T11:57:34+00:00 |" in "\n".join(report._scheduled_lines(results["scheduled"]))
    fresh: dict = {}
    _keep_scheduled(fresh, tmp_path / "missing.json")  # no earlier run: nothing to keep
    assert "scheduled" not in fresh


def test_a_scheduled_run_replaces_only_the_practice_counts_it_measured():
    from bench.scheduled import recorded

    earlier = {"rows_per_practice": 1000, "measured_at": "2026-11-30T11:57:34+00:00",
               "practices": {"20": {"seconds": 150.0, "empty_seconds": 120.0, "ratio": 1.25,
                                    "practices_per_minute_per_core": 4.0,
                                    "plain_local_executor_seconds": 500.0}}}
    # 200 practices without the empty DAG and without the plain executor.
    now = recorded(earlier, {"preloading": {200: {"seconds": 1500.0, "empty_seconds": None}}},
                   ["preloading"], 1000, 2, "2026-11-30T21:00:00+00:00")
    assert now["practices"]["20"] == {**earlier["practices"]["20"], "measured_at": "2026-11-30T11:57:34+00:00"}
    assert now["practices"]["200"]["ratio"] is None
    assert now["practices"]["200"]["practices_per_minute_per_core"] == 200 / 25 / 2
    assert list(now["practices"]) == ["20", "200"]
    lines = "\n".join(report._scheduled_lines(now))
    assert "| 200 | 1500.0 | — | — | 4.00 | — | — | 2026-11-30T21:00:00+00:00 |" in lines
    assert "| 20 | 150.0 | 120.0 | 1.25× | 4.00 | 500.0 | 3.33× | 2026-11-30T11:57:34+00:00 |" in lines
    # Figures of another export size are not mixed in.
    other = recorded({**earlier, "rows_per_practice": 5000}, {"preloading": {200: {"seconds": 1500.0,
                     "empty_seconds": None}}}, ["preloading"], 1000, 2, "2026-11-30T21:00:00+00:00")
    assert list(other["practices"]) == ["200"]


def test_each_comparison_headlines_the_largest_size_it_was_measured_at():
    """`--largest-figures ours,floor`: the peers are left out at the largest size, so their
    targets headline the size below it while the floor's headline the largest."""
    def sample(figure, rows, seconds):
        return {"figure": figure, "database": "postgresql", "rows": rows, "mode": "insert", "seconds": seconds,
                "process_seconds": seconds, "process_cpu_seconds": seconds, "peak_rss_mb": 1.0, "stages": {}}

    results = {"sizes": [10, 100], "databases": ["postgresql"], "samples": [
        sample("ours", 10, 2.0), sample("floor:merge", 10, 1.0), sample("dlt", 10, 4.0),
        sample("ours", 100, 30.0), sample("floor:merge", 100, 10.0)]}
    targets = report.summarise(results)["targets"]
    headline = {t["target"]: (t["rows"], t["ratio"]) for t in targets if t["headline"] and t["rows"]}
    assert headline["ours ≤ 1.5× the floor (insert)"] == (100, 3.0)
    assert headline["ours faster than dlt merge (insert)"] == (10, 0.5)
    assert [t["rows"] for t in targets if t["target"] == "ours ≤ 1.5× the floor (insert)"] == [10, 100]


def test_the_largest_size_takes_its_own_figures():
    from bench.run import parse_args

    args = parse_args(["--sizes", "10,100", "--figures", "ours,floor,dlt", "--largest-figures", "ours,floor"])
    assert (args.figures, args.largest_figures) == (("ours", "floor", "dlt"), ("ours", "floor"))
    assert parse_args(["--sizes", "10", "--figures", "ours"]).largest_figures == ("ours",)
    with pytest.raises(SystemExit):
        parse_args(["--sizes", "10", "--largest-figures", "ours,nothing"])


def test_the_largest_size_takes_import_figures_only():
    from bench.run import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--sizes", "10,100", "--largest-figures", "ours,airflow"])


def test_ours_stopped_where_the_floor_finished_is_a_lower_bound_not_met_beyond_the_limit():
    def sample(figure, rows, seconds):
        return {"figure": figure, "database": "sqlite", "rows": rows, "mode": "insert", "seconds": seconds,
                "process_seconds": 1.0, "process_cpu_seconds": 1.0, "peak_rss_mb": 1.0, "stages": {}}

    results = {"sizes": [100, 1000], "databases": ["sqlite"], "figure_timeout_seconds": 900, "samples": [
        sample("ours", 100, 1.0), sample("floor:on_conflict", 100, 1.0),
        sample("ours", 1000, None), sample("floor:on_conflict", 1000, 10.0)]}
    summary = report.summarise(results)
    [headline] = [t for t in summary["targets"] if t["target"] == "ours ≤ 2.0× the floor (insert)" and t["headline"]]
    assert (headline["rows"], headline["ratio"], headline["lower_bound"], headline["met"]) == (1000, 90.0, True, False)
    assert "≥ 90.00×" in "\n".join(report.target_lines(summary))


def test_the_memory_target_is_read_at_a_million_rows_and_flat_beyond_it():
    """Issue #14: each stage ≤ 1 GB at 1,000,000 rows, "and flat beyond it": a figure at a larger
    size (`--memory-sizes`) that goes over the limit fails the second target, not the first."""
    def sample(rows, mode, validate_mb):
        return {"figure": "ours", "database": "sqlite", "rows": rows, "mode": mode, "seconds": 1.0,
                "process_seconds": 1.0, "process_cpu_seconds": 1.0, "peak_rss_mb": validate_mb, "stages": {},
                "detail": {"stage_peak_rss_mb": {"validate": validate_mb, "load": 500.0}}}

    def memory_targets(samples):
        results = {"sizes": [100_000, 1_000_000], "databases": ["sqlite"], "samples": samples}
        targets = report.summarise(results)["targets"]
        return [(t["rows"], t["value"], t["met"]) for t in targets if t["target"].startswith("peak RSS")]

    measured = [sample(100_000, "insert", 400.0), sample(1_000_000, "insert", 900.0),
                sample(1_000_000, "newer", 1000.0)]
    assert memory_targets(measured) == [(1_000_000, 1000.0, True), (None, None, None)]
    assert memory_targets(measured + [sample(2_000_000, "insert", 1600.0)]) == [
        (1_000_000, 1000.0, True), (2_000_000, 1600.0, False)]
    assert memory_targets(measured + [sample(2_000_000, "unchanged", 1000.0)])[1] == (2_000_000, 1000.0, True)
    # A run that stops short of 1,000,000 rows shows its largest size's figure, never "met".
    assert memory_targets(measured[:1]) == [(100_000, 500.0, None), (None, None, None)]  # its load's 500


def test_a_run_that_reaches_a_million_rows_measures_memory_at_the_most_rows_an_export_may_hold():
    from bench.run import parse_args
    from include.patient_import.settings import DEFAULT_MAX_ROWS

    assert parse_args(["--sizes", "1000,100000,1000000"]).memory_sizes == [DEFAULT_MAX_ROWS]
    assert parse_args(["--sizes", "1000"]).memory_sizes == []
    assert parse_args(["--sizes", "1000000", "--memory-sizes", "none"]).memory_sizes == []
    assert parse_args(["--sizes", "1000", "--memory-sizes", "1_500_000,2000000,1500000"]).memory_sizes == [
        1_500_000, 2_000_000]
    # A size --sizes measures already is not run again; a run without ours runs no memory size.
    assert parse_args(["--sizes", "1000,2000000"]).memory_sizes == []
    assert parse_args(["--sizes", "1000000", "--figures", "floor,airflow"]).memory_sizes == []
    for refused in (["--memory-sizes", "1000000"],  # not beyond the target's size
                    ["--memory-sizes", "2000001"],  # refused by the pipeline (too_many_rows): no figure
                    ["--memory-sizes", "2000000", "--figures", "floor"],
                    ["--memory-sizes", "bogus"]):  # a usage error, not a traceback
        with pytest.raises(SystemExit):
            parse_args(["--sizes", "1000", *refused])


def test_a_run_of_the_airflow_figures_alone_makes_no_chart(tmp_path):
    """`--figures airflow` measures no import: the run ends with its results, not a chart's
    StopIteration."""
    figures = [{"figure": "dags_test:patient_import", "database": None, "rows": 1000, "mode": "dags test",
                "seconds": 15.0, "did_not_finish_in": None}]
    results = {"summary": {"figures": figures}, "databases": ["sqlite"], "sizes": [1000],
               "machine": {"cores": 2, "memory_gb": 24}, "repeat": 1}
    assert report.chart(results, tmp_path / "chart.png") is None
    assert not (tmp_path / "chart.png").exists()


def test_the_airflow_figures_are_a_median_of_three_runs_at_least(monkeypatch):
    """One `airflow dags test` moves 10-20 % from run to run, as much as the 1.2x target's margin:
    its ratio is read on a median, whatever --repeat the import figures take."""
    from bench.run import AIRFLOW_MIN_REPEAT, parse_args

    monkeypatch.delenv("BENCH_AIRFLOW_REPEAT", raising=False)
    monkeypatch.delenv("BENCH_REPEAT", raising=False)
    assert AIRFLOW_MIN_REPEAT == 3
    assert parse_args(["--sizes", "300", "--repeat", "1"]).airflow_repeat == 3
    assert parse_args(["--sizes", "300", "--repeat", "5"]).airflow_repeat == 5
    assert parse_args(["--sizes", "300", "--repeat", "1", "--airflow-repeat", "1"]).airflow_repeat == 1
    monkeypatch.setenv("BENCH_AIRFLOW_REPEAT", "2")
    assert parse_args(["--sizes", "300", "--repeat", "1"]).airflow_repeat == 2
    monkeypatch.setenv("BENCH_AIRFLOW_REPEAT", "")
    assert parse_args(["--sizes", "300", "--repeat", "1"]).airflow_repeat == 3


@pytest.mark.parametrize("argv, env", [
    (["--airflow-repeat", "0"], {}), (["--airflow-repeat", "-1"], {}), (["--largest-repeat", "0"], {}),
    ([], {"BENCH_AIRFLOW_REPEAT": "abc"}), ([], {"BENCH_REPEAT": "2.5"}), ([], {"BENCH_LARGEST_REPEAT": "x"})],
    ids=["zero", "negative", "largest-zero", "env-text", "env-repeat-float", "env-largest-text"])
def test_a_bad_number_of_runs_is_a_usage_error_not_a_traceback(monkeypatch, capsys, tmp_path, argv, env):
    from bench.run import parse_args

    for name in ("BENCH_AIRFLOW_REPEAT", "BENCH_REPEAT", "BENCH_LARGEST_REPEAT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--sizes", "300", "--out", str(tmp_path), *argv])
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_a_run_without_an_import_figure_never_replaces_the_committed_results(tmp_path, capsys):
    """The committed latest.json holds every figure and target: the Airflow or the tasks' figures
    alone go elsewhere (--out)."""
    from bench.run import parse_args

    for figures in ("airflow", "tasks", "airflow,tasks"):
        with pytest.raises(SystemExit):
            parse_args(["--sizes", "300", "--figures", figures])
        assert "write it elsewhere with --out" in capsys.readouterr().err
        assert parse_args(["--sizes", "300", "--figures", figures, "--out", str(tmp_path)]).docs is None
    # An import figure at the largest size alone is a measured size.
    assert parse_args(["--sizes", "300", "--figures", "tasks", "--largest-figures", "ours"]).docs


def test_the_recorded_command_runs_the_same_bench_again(monkeypatch, tmp_path):
    """make bench passes its BENCH_* settings through the environment: the command recorded in
    latest.json (and docs/performance.md) spells every one out, so that it repeats the run."""
    from bench.run import parse_args, reproducing_command

    monkeypatch.setenv("BENCH_LARGEST_FIGURES", "ours,floor")
    monkeypatch.setenv("BENCH_LARGEST_REPEAT", "1")
    monkeypatch.setenv("BENCH_AIRFLOW_REPEAT", "4")
    args = parse_args(["--sizes", "100000,1000000", "--repeat", "1", "--out", str(tmp_path)])
    command = reproducing_command(args)
    assert "--largest-figures ours,floor" in command and "--largest-repeat 1" in command
    assert "--airflow-repeat 4" in command and "--memory-sizes 2000000" in command
    for name in ("BENCH_LARGEST_FIGURES", "BENCH_LARGEST_REPEAT", "BENCH_AIRFLOW_REPEAT"):
        monkeypatch.delenv(name)
    again = parse_args(command.split()[3:])
    assert vars(again) == vars(args)
    assert reproducing_command(again) == command


def test_each_round_of_the_airflow_figures_runs_the_two_dags_in_the_other_order(tmp_path, monkeypatch):
    """What running first or second costs falls on both DAGs alike (ABBA)."""
    from bench.run import Bench, parse_args

    bench = Bench(parse_args(["--sizes", "300", "--figures", "airflow", "--airflow-repeat", "4",
                              "--out", str(tmp_path)]))
    ran: list[str] = []
    monkeypatch.setattr(bench, "generate", lambda rows: tmp_path / "export.csv")
    monkeypatch.setattr(bench, "worker", lambda figure, env, label, **kwargs: {"returncode": 0, "result": {}})
    monkeypatch.setattr(bench, "record", lambda figure, *args: ran.append(figure))

    def spawn(command, env, label, *args):
        return {"returncode": 0}
    monkeypatch.setattr(bench, "spawn", spawn)
    bench.airflow()
    tests = [f.split(":")[1] for f in ran if f.startswith("dags_test:")]
    assert tests == ["trivial_five_tasks", "patient_import", "patient_import", "trivial_five_tasks"] * 2


def test_the_airflow_table_says_how_many_runs_its_medians_are_of():
    figures = [{"figure": "dags_test:patient_import", "database": None, "rows": 1000, "mode": "dags test",
                "seconds": 15.0, "peak_rss_mb": 500.0}]
    results = {"summary": {"figures": figures, "targets": []}, "databases": [], "sizes": [1000],
               "machine": report.machine(), "repeat": 1, "airflow_repeat": 3}
    text = report.markdown(results)
    assert "Through Airflow (median of 3 runs each, the two DAGs in turn" in text
    assert "| airflow dags test | patient_import (1,000 rows) | 15.000 | 500 |" in text
    # No import figure ran: no import table, no "Median of 1 run per figure" above it.
    assert "per figure" not in text and "| rows | database | figure |" not in text
    assert "Through Airflow (one run each;" in report.markdown({**results, "airflow_repeat": 1})


def test_a_size_no_figure_ran_at_is_no_disagreement_of_stores():
    """A run of the Airflow figures alone compares no store: it must not print DIFFER."""
    digest = {"rows": 976, "sha256": "ab" * 32}
    results = {"store_digests": {"sqlite 1,000 rows, run 1": {},
                                 "postgresql 1,000 rows, run 1": {"ours": digest, "floor": dict(digest)}}}
    assert report.stores_agree(results) == {
        "postgresql 1,000 rows, run 1": {"agree": True, "figures": ["floor", "ours"], "rows": [976]}}
