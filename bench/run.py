"""`make bench`: every figure of issues #6 and #14 in one run on one machine, medians of several runs.

    python -m bench.run --sizes 1000,100000,1000000 --repeat 3

Ours, the floor (two SQL variants, the faster kept) and the peers (naive pandas, dlt, DuckDB),
each on its own fresh store in three cases: an export into an empty store, the same file again,
and the same rows exported a day later (rule 7 advances every patient's date). Then `airflow
dags test` and DAG parse time beside a trivial DAG, and each task's start-up cost. Every target
of issue #14 that the run measured is printed met / NOT MET, the others "not measured".

Each measured figure runs in a fresh process (`bench.worker`); its peak RSS is that process's
own, read from its rusage when it ends. Results: `bench/results/<timestamp>.json` and
`latest.json` (committed: every figure and target; the scheduled runs of `python -m
bench.scheduled --write` are kept from the previous latest.json) / `latest.md`, the chart
`docs/bench_rows_per_second.png`, and docs/performance.md's generated part (`--docs`); a run with
another `--out` writes its chart there and leaves the docs alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from bench import report, task_overhead
from bench.airflow_overhead import PATIENT_IMPORT_DAG, TRIVIAL_DAG
from bench.common import PRACTICE_ID, PRACTICES_YAML, RESULT_PREFIX, ROOT
from include.patient_import.settings import DEFAULT_MAX_ROWS

DATABASES = ("postgresql", "sqlite")
FIGURES = ("floor", "pandas", "duckdb", "dlt", "ours", "airflow", "tasks")
IMPORT_FIGURES = FIGURES[:5]  # measured per export size; --largest-figures chooses among them
# The cases every import figure runs in, in this order on one store: the export into an empty
# store, the same file again, the same rows exported a day later (rule 7 advances every
# patient's last_seen_exported_on, nothing else changes).
MODES = ("insert", "unchanged", "newer")
FLOOR_METHODS = ("merge", "on_conflict")
# The Airflow figures' fewest runs (`--airflow-repeat`): one `dags test` moves 10-20 % from run to
# run, as much as its target's margin, so the ratio is read on a median of three at least.
AIRFLOW_MIN_REPEAT = 3
# A peer's figure still running after this is stopped (SIGKILL: dlt defers SIGTERM) and reported
# as "did not finish": a lower bound on its time, never a guess. Our own figures get the safety limit.
DEFAULT_FIGURE_TIMEOUT_SECONDS = 1800
FIGURE_TIMEOUT_SECONDS = int(os.environ.get("BENCH_FIGURE_TIMEOUT") or DEFAULT_FIGURE_TIMEOUT_SECONDS)
SAFETY_TIMEOUT_SECONDS = 3 * 3600
_PEERS = ("pandas", "dlt", "duckdb")
SEED = 6


class FigureFailed(RuntimeError):
    pass


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out).resolve()
        self.work = self.out / "work"
        self.python = sys.executable
        # The export dates of the cases: a day apart, the newer today (never in the future).
        today = date.today()
        self.exported_on = {"insert": (today - timedelta(days=1)).isoformat(),
                            "unchanged": (today - timedelta(days=1)).isoformat(), "newer": today.isoformat()}
        self.digests: dict[str, dict[str, dict]] = {}
        self.task_overhead: dict | None = None
        self.commit = _commit()  # the code measured: taken before the run, edits during it aside
        self.samples: list[dict] = []
        self.stopped: set[tuple] = set()  # (figure, database, rows, mode) stopped at the timeout
        self.server = None
        self.practices = self.work / "practices.yml"
        self.log = self.out / "bench.log"

    # ------------------------------------------------------------------ processes

    def env(self, home: Path | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PATIENT_IMPORT_", "AIRFLOW_CONN_"))}
        env["PYTHONPATH"] = str(ROOT)
        env["PATIENT_IMPORT_PRACTICES"] = str(self.practices)
        env["PATIENT_IMPORT_MAX_FILE_MB"] = "2000"
        env["PATIENT_IMPORT_EXPORT_ROOTS"] = str(self.work / "exports")  # SPEC §7: the bench's own exports
        env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
        if home is not None:
            env["PATIENT_IMPORT_HOME"] = str(home)
        env.update(extra)
        return env

    def spawn(self, command: list[str], env: dict[str, str], label: str,
              timeout: float = SAFETY_TIMEOUT_SECONDS) -> dict:
        """Run one process to its end: wall seconds, peak RSS (MB), exit status, its result line."""
        stdout = self.work / "logs" / f"{label.replace(' ', '_')}.txt"
        stdout.parent.mkdir(parents=True, exist_ok=True)
        with open(stdout, "wb") as out, open(self.log, "ab") as err:
            err.write(f"\n=== {label}: {' '.join(command[:4])}\n".encode())
            err.flush()
            begin = time.perf_counter()
            proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=ROOT)
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
            wall = time.perf_counter() - begin
            timed_out = wall >= timeout
        proc.returncode = os.waitstatus_to_exitcode(status)
        text = stdout.read_text(encoding="utf-8", errors="replace")
        result = None
        for line in text.splitlines():
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
        return {"returncode": proc.returncode, "wall_seconds": wall, "timed_out": timed_out,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": usage.ru_maxrss / 1024, "result": result}

    def worker(self, figure: str, env: dict[str, str], label: str, **kwargs) -> dict:
        timeout = FIGURE_TIMEOUT_SECONDS if figure in _PEERS else SAFETY_TIMEOUT_SECONDS
        done = self.spawn([self.python, "-m", "bench.worker", figure, json.dumps(kwargs)], env, label, timeout)
        if done["timed_out"] and figure in _PEERS:
            return done
        if done["returncode"] != 0 or done["result"] is None:
            raise FigureFailed(f"{label} failed (exit {done['returncode']}); see {self.log}")
        return done

    def record(self, figure: str, database: str | None, size: int | None, mode: str, done: dict) -> None:
        result = done["result"] or {}
        seconds = None if done.get("timed_out") else result.get("seconds", done["wall_seconds"])
        sample = {"figure": figure, "database": database, "rows": size, "mode": mode,
                  "seconds": seconds, "timed_out_after": FIGURE_TIMEOUT_SECONDS if seconds is None else None,
                  "process_seconds": done["wall_seconds"],
                  "process_cpu_seconds": done["cpu_seconds"],
                  "peak_rss_mb": done["peak_rss_mb"], "stages": result.get("stages", {}),
                  "detail": {k: v for k, v in result.items() if k not in ("seconds", "stages")}}
        self.samples.append(sample)
        if seconds is None:
            # A lower bound is all a repeat could add: the figure is not run again at this size.
            self.stopped.add((figure, database, size, mode))
            print(f"  {figure:<17} {mode:<10} {database or '':<10} {size or '':>9} "
                  f"did not finish in {FIGURE_TIMEOUT_SECONDS} s: stopped, not repeated", flush=True)
            return
        rate = f"{size / seconds:>12,.0f} rows/s" if size else ""
        print(f"  {figure:<17} {mode:<10} {database or '':<10} {size or '':>9} "
              f"{seconds:8.2f} s {rate} {done['peak_rss_mb']:8.0f} MB", flush=True)

    # ------------------------------------------------------------------ databases

    def database(self, kind: str, name: str) -> tuple[str, Path]:
        """A fresh, empty store of `kind` and a fresh patient-import home for it."""
        home = self.work / "homes" / name
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        if kind == "sqlite":
            return f"sqlite:///{home / 'patient_store.db'}", home
        self.server.drop_database(name)
        return self.server.create_database(name), home

    def drop(self, kind: str, name: str) -> None:
        shutil.rmtree(self.work / "homes" / name, ignore_errors=True)
        if kind == "postgresql":
            self.server.drop_database(name)

    # ------------------------------------------------------------------ figures

    def generate(self, size: int) -> Path:
        path = self.work / "exports" / f"bench_{size}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        code = ("import sys, time, json; from pathlib import Path; "
                "from tools.generator import generate_export; "
                "t = time.perf_counter(); generate_export(Path(sys.argv[1]), int(sys.argv[2]), seed=int(sys.argv[3])); "
                f"print({RESULT_PREFIX!r} + json.dumps({{'seconds': time.perf_counter() - t}}))")
        done = self.spawn([self.python, "-c", code, str(path), str(size), str(SEED)], self.env(), f"generate {size}")
        if done["returncode"] != 0:
            raise FigureFailed(f"generating {size} rows failed; see {self.log}")
        self.record("generator", None, size, "write", done)
        return path

    @contextlib.contextmanager
    def prepared_store(self, name: str, kind: str) -> Iterator[tuple[str, Path, dict[str, str]]]:
        """A fresh store of `kind`, migrated with the bench practice (not measured), dropped after:
        (url, home, environment)."""
        url, home = self.database(kind, name)
        env = self.env(home)
        self.worker("prepare_store", env, f"prepare {name}", url=url)
        try:
            yield url, home, env
        finally:
            self.drop(kind, name)

    def sizes_round(self, size: int, export: Path, kind: str, repeat: int,
                    figures: tuple[str, ...] | None = None) -> None:
        """Every figure of one size on one database (`figures`; default: the run's for that size),
        each in its three cases (MODES) on one store: the export into an empty store, the same
        export again, then the same rows exported a day later. After the last case each store's
        contents are digested (not measured): ours, the floor and the peers must leave the same
        patients."""
        if figures is None:
            figures = self.args.largest_figures if size == max(self.args.sizes) else self.args.figures
        # The clean CSV the floor and the peers load; ours alone (a memory size) needs none.
        needs_clean = any(f in figures for f in IMPORT_FIGURES if f != "ours")
        tag = f"{kind[:2]}_{size}_{repeat}"
        clean = {"insert": self.work / "exports" / f"clean_{size}.csv",
                 "newer": self.work / "exports" / f"clean_newer_{size}.csv"}
        clean["unchanged"] = clean["insert"]
        digests = self.digests.setdefault(f"{kind} {size:,} rows, run {repeat + 1}", {})

        if "ours" in figures or (needs_clean and not clean["insert"].exists()):
            with self.prepared_store(f"ours_{tag}", kind) as (url, _, env):
                for mode in MODES:
                    done = self.worker("ours", env, f"ours {mode} {tag}", url=url, export=str(export),
                                       exported_on=self.exported_on[mode])
                    if "ours" in figures:
                        self.record("ours", kind, size, mode, done)
                    if mode == "insert" and needs_clean and not clean["insert"].exists():
                        self.worker("clean_csv", env, f"clean csv {size}", url=url, out=str(clean["insert"]))
                        self.worker("clean_csv", env, f"clean newer csv {size}", url=url, out=str(clean["newer"]),
                                    last_seen_exported_on=self.exported_on["newer"])
                    if "ours" not in figures:
                        break
                else:
                    digests["ours"] = self.digest(env, url)
        if "floor" in figures:
            for method in (FLOOR_METHODS if kind == "postgresql" else ("on_conflict",)):
                with self.prepared_store(f"floor_{method}_{tag}", kind) as (url, _, env):
                    for mode in MODES:
                        self.record(f"floor:{method}", kind, size, mode,
                                    self.worker("floor", env, f"floor {method} {mode} {tag}", url=url,
                                                clean_csv=str(clean[mode]), import_id=f"floor_{mode}",
                                                method=method))
                    digests[f"floor:{method}"] = self.digest(env, url)
        if "pandas" in figures and ("pandas", kind, size, "insert") not in self.stopped:
            with self.prepared_store(f"pandas_{tag}", kind) as (url, _, env):
                self.record("pandas", kind, size, "insert",
                            self.worker("pandas", env, f"pandas insert {tag}", url=url, clean_csv=str(clean["insert"])))
        for peer in ("duckdb", "dlt"):
            if peer not in figures or (peer, kind, size, "insert") in self.stopped:
                continue
            with self.prepared_store(f"{peer}_{tag}", kind) as (url, home, env):
                finished = True
                for mode in MODES:
                    if (peer, kind, size, mode) in self.stopped:
                        finished = False
                        break
                    extra = ({"pipelines_dir": str(home / "dlt_pipelines")} if peer == "dlt"
                             else {"work_dir": str(home)})
                    done = self.worker(peer, env, f"{peer} {mode} {tag}", url=url, clean_csv=str(clean[mode]),
                                       **extra)
                    self.record(peer, kind, size, mode, done)
                    if done["timed_out"]:
                        finished = False
                        break
                if finished:
                    digests[peer] = self.digest(env, url, **self.peer_table(peer, kind, home))
        for verdict in report.stores_agree({"store_digests": {"this round": digests}}).values():
            print(f"  stores after the three cases: {'the same' if verdict['agree'] else 'DIFFER'} ("
                  + ", ".join(f"{k} {d['rows']} rows {d['sha256'][:8]}" for k, d in digests.items()) + ")",
                  flush=True)

    def peer_table(self, peer: str, kind: str, home: Path) -> dict:
        """Where a peer's patients are: dlt writes its own dataset (a schema on PostgreSQL, an
        attached database file beside the store on SQLite)."""
        if peer != "dlt":
            return {}
        if kind == "postgresql":
            return {"schema": "bench_dlt"}
        return {"attach": str(home / "patient_store__bench_dlt.db")}

    def digest(self, env: dict[str, str], url: str, **where) -> dict:
        if "attach" in where:
            url = f"sqlite:///{where.pop('attach')}"
        done = self.worker("store_digest", env, "store digest", url=url, **where)
        return done["result"]

    def airflow(self) -> None:
        """`airflow dags test` of patient_import and of the trivial DAG; parse time of both files."""
        rows = self.args.airflow_rows
        export = self.work / "exports" / f"bench_{rows}.csv"
        if not export.exists():
            self.generate(rows)
        airflow_home = self.work / "airflow"
        shutil.rmtree(airflow_home, ignore_errors=True)
        airflow_home.mkdir(parents=True)
        base = {"AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                "PATIENT_IMPORT_RETRIES": "0"}
        airflow = str(Path(self.python).with_name("airflow"))
        migrated = self.spawn([airflow, "db", "migrate"], self.env(**base), "airflow db migrate")
        if migrated["returncode"] != 0:
            raise FigureFailed(f"airflow db migrate failed; see {self.log}")
        # One unmeasured round first: the first `dags test` after a migration pays one-off costs
        # (bytecode, the DAG bundle's first sync) that would land on whichever DAG ran first.
        dags = (("trivial_five_tasks", TRIVIAL_DAG), ("patient_import", PATIENT_IMPORT_DAG))
        for repeat in range(-1, self.args.airflow_repeat):
            # Each round in the other order (ABBA...): what running second costs or saves falls on
            # both DAGs alike.
            ordered = dags if repeat % 2 == 0 else dags[::-1]
            for dag_id, dag_file in ordered:
                if repeat < 0:
                    continue
                done = self.worker("parse", self.env(**base), f"parse {dag_id}", dag_file=str(dag_file))
                self.record(f"parse:{dag_id}", None, None, "parse", done)
            for dag_id, dag_file in ordered:
                home = self.work / "homes" / f"airflow_{dag_id}_{repeat}"
                shutil.rmtree(home, ignore_errors=True)
                home.mkdir(parents=True)
                # Each DAG from its own folder: `dags test -f` wants the file inside the DAGs folder.
                env = self.env(home, **base, AIRFLOW__CORE__DAGS_FOLDER=str(dag_file.parent))
                conf = "{}"
                if dag_id == "patient_import":
                    # The store exists already, as in production: plan_imports only checks it.
                    self.worker("prepare_store", env, "prepare airflow store",
                                url=f"sqlite:///{home / 'patient_store.db'}")
                    conf = json.dumps({"practice_id": PRACTICE_ID, "export_file": str(export),
                                       "exported_on": self.exported_on["newer"], "dry_run": False})
                done = self.spawn([airflow, "dags", "test", dag_id, "-f", str(dag_file), "-c", conf], env,
                                  f"dags test {dag_id}")
                if done["returncode"] != 0:
                    raise FigureFailed(f"airflow dags test {dag_id} failed; see {self.log}")
                if repeat >= 0:
                    self.record(f"dags_test:{dag_id}", None, rows if dag_id == "patient_import" else None,
                                "dags test", done)
                shutil.rmtree(home, ignore_errors=True)

    # ------------------------------------------------------------------ the run

    def run(self) -> dict:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.log.write_text("", encoding="utf-8")
        self.practices.write_text(PRACTICES_YAML, encoding="utf-8")
        machine = report.machine()
        print(report.machine_line(machine), flush=True)
        started = datetime.now(timezone.utc)
        databases = self.args.databases
        server_cm = None
        # No import figure (--figures airflow, tasks): no size is measured, no store is compared,
        # no PostgreSQL server is needed.
        imports = _measures_imports(self.args)
        if "postgresql" in databases and imports:
            sys.path.insert(0, str(ROOT))
            from tools.harness.postgres import PostgresServer

            server_cm = PostgresServer.started()
            self.server = server_cm.__enter__()
            machine["postgresql"] = self._postgres_version()
        try:
            # The sizes, then the memory sizes (issue #14's "flat beyond" 1,000,000 rows): ours alone,
            # run as the largest size is (its repeats, its databases).
            rounds = ([(size, None) for size in self.args.sizes if imports]
                      + [(size, ("ours",)) for size in self.args.memory_sizes])
            for size, figures in rounds:
                print(f"{size:,} rows" + (" (ours only: its memory)" if figures else ""), flush=True)
                export = self.generate(size)
                largest = size >= max(self.args.sizes)
                repeats = self.args.largest_repeat if largest else self.args.repeat
                kinds = [k for k in databases if not largest or k in self.args.largest_databases]
                for repeat in range(repeats):
                    for kind in kinds:
                        self.sizes_round(size, export, kind, repeat, figures)
            if "airflow" in self.args.figures:
                print("Airflow", flush=True)
                self.airflow()
            if "tasks" in self.args.figures:
                print("Per-task start-up cost", flush=True)
                self.task_overhead = task_overhead.measure(self.args.repeat)
                for name, t in self.task_overhead["tasks"].items():
                    print(f"  {name:<20} {t['process_seconds']:6.2f} s ({t['over_trivial_seconds']:+.2f} s over "
                          f"the trivial task's {self.task_overhead['trivial']['process_seconds']:.2f} s)", flush=True)
        finally:
            if server_cm is not None:
                server_cm.__exit__(None, None, None)
            if not self.args.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)
        return {"started_at": started.isoformat(), "finished_at": datetime.now(timezone.utc).isoformat(),
                "machine": machine, "sizes": self.args.sizes, "memory_sizes": self.args.memory_sizes,
                "repeat": self.args.repeat,
                "airflow_repeat": self.args.airflow_repeat if "airflow" in self.args.figures else None,
                "largest_repeat": self.args.largest_repeat, "largest_databases": list(self.args.largest_databases),
                "figures": list(self.args.figures), "largest_figures": list(self.args.largest_figures),
                "command": reproducing_command(self.args),
                "figure_timeout_seconds": FIGURE_TIMEOUT_SECONDS, "commit": self.commit,
                "databases": list(databases), "samples": self.samples, "store_digests": self.digests,
                "task_overhead": self.task_overhead}

    def _postgres_version(self) -> str:
        import sqlalchemy as sa

        engine = sa.create_engine(self.server.url())
        try:
            with engine.connect() as conn:
                return conn.exec_driver_sql("SHOW server_version").scalar_one()
        finally:
            engine.dispose()


def _commit() -> str | None:
    """The checked-out commit (with "+changes" when the work tree differs), or None without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+changes" if dirty else "")) or None


def _row_counts(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    """`text`'s comma-separated row counts (1_000_000 allowed); a usage error, not a traceback, for
    anything else."""
    try:
        return [int(s.replace("_", "")) for s in _csv_list(text)]
    except ValueError:
        parser.error(f"{option}: row counts separated by commas, not {text!r}")


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES") or "1000,100000,1000000",
                        help="export sizes in rows, comma-separated")
    # The BENCH_* numbers go through argparse as texts: a bad one is a usage error naming the option.
    parser.add_argument("--repeat", type=int, default=os.environ.get("BENCH_REPEAT") or "3",
                        help="runs of each import figure (BENCH_REPEAT); the median is reported")
    parser.add_argument("--memory-sizes", default=os.environ.get("BENCH_MEMORY_SIZES") or "",
                        help="sizes beyond the memory target's 1,000,000 rows, up to 2,000,000 (the most rows "
                             "an export may hold, PATIENT_IMPORT_MAX_ROWS' default), at which ours alone runs "
                             "(its three cases, --largest-databases, --largest-repeat times), for the target's "
                             "'flat beyond it'; 'none' for none. Default: 2,000,000 when --sizes reaches "
                             "1,000,000 and --figures holds ours; none otherwise")
    parser.add_argument("--databases", default=os.environ.get("BENCH_DATABASES") or ",".join(DATABASES))
    parser.add_argument("--largest-repeat", type=int, default=os.environ.get("BENCH_LARGEST_REPEAT") or None,
                        help="runs of each figure at the largest size (default: --repeat)")
    parser.add_argument("--largest-databases", default=os.environ.get("BENCH_LARGEST_DATABASES") or "",
                        help="databases at the largest size (default: --databases)")
    parser.add_argument("--figures", default=os.environ.get("BENCH_FIGURES") or ",".join(FIGURES))
    parser.add_argument("--largest-figures", default=os.environ.get("BENCH_LARGEST_FIGURES") or "",
                        help="import figures at the largest size (default: --figures; with one size, that "
                             "size's), e.g. ours,floor for the 1,000,000-row memory and floor targets "
                             "without the slower peers")
    parser.add_argument("--airflow-rows", type=int, default=1000)
    parser.add_argument("--airflow-repeat", type=int, default=os.environ.get("BENCH_AIRFLOW_REPEAT") or None,
                        help="runs of each Airflow figure (BENCH_AIRFLOW_REPEAT), the two DAGs in turn, each "
                             "round in the other order (default: --repeat, at least 3: a `dags test` takes "
                             "~15 s and moves 10-20 %% from run to run, so its target is read on a median)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--chart", default=None,
                        help="the chart's path (default: docs/bench_rows_per_second.png when --out is the "
                             "default bench/results; <out>/bench_rows_per_second.png otherwise)")
    parser.add_argument("--docs", default=None,
                        help="rewrite this file's generated part (default: docs/performance.md when --out "
                             "is the default bench/results; none otherwise)")
    parser.add_argument("--keep-work", action="store_true", help="keep the exports and stores under <out>/work")
    return parser


# Where the results go, not what is measured: left out of the recorded command but --out elsewhere.
_NOT_SETTINGS = frozenset({"help", "out", "chart", "docs", "keep_work"})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    # A run elsewhere (a trial, a test) leaves the committed docs and chart alone.
    committed = Path(args.out).resolve() == (ROOT / "bench" / "results").resolve()
    if args.docs is None and committed:
        args.docs = str(ROOT / "docs" / "performance.md")
    if args.chart is None:
        args.chart = str((ROOT / "docs" if committed else Path(args.out)) / "bench_rows_per_second.png")
    args.sizes = _row_counts(parser, "--sizes", args.sizes)
    args.databases = tuple(d for d in _csv_list(args.databases))
    args.figures = tuple(_csv_list(args.figures))
    if args.memory_sizes == "":
        reaches = "ours" in args.figures and max(args.sizes, default=0) >= report.PEAK_RSS_ROWS
        args.memory_sizes = str(DEFAULT_MAX_ROWS) if reaches else "none"
    # Each once, and not a size --sizes measures already.
    args.memory_sizes = [] if args.memory_sizes.lower() == "none" else sorted(
        set(_row_counts(parser, "--memory-sizes", args.memory_sizes)) - set(args.sizes))
    if args.largest_repeat is None:
        args.largest_repeat = args.repeat
    if args.airflow_repeat is None:
        args.airflow_repeat = max(args.repeat, AIRFLOW_MIN_REPEAT)
    args.largest_databases = tuple(_csv_list(args.largest_databases)) or args.databases
    args.largest_figures = (tuple(_csv_list(args.largest_figures))
                            or tuple(f for f in args.figures if f in IMPORT_FIGURES))
    unknown = ((set(args.databases) - set(DATABASES)) | (set(args.largest_databases) - set(DATABASES))
               | (set(args.figures) - set(FIGURES)) | (set(args.largest_figures) - set(FIGURES)))
    if unknown or min(args.repeat, args.largest_repeat, args.airflow_repeat) < 1 or not args.sizes:
        parser.error(f"unknown databases or figures {sorted(unknown)}, or no sizes, or --repeat, "
                     "--largest-repeat or --airflow-repeat < 1")
    if any(not report.PEAK_RSS_ROWS < size <= DEFAULT_MAX_ROWS for size in args.memory_sizes):
        # Beyond DEFAULT_MAX_ROWS ours refuses the export (too_many_rows): its figure would be a refusal's.
        parser.error(f"--memory-sizes are sizes beyond {report.PEAK_RSS_ROWS:,} rows, up to {DEFAULT_MAX_ROWS:,} "
                     "(the most an export may hold: PATIENT_IMPORT_MAX_ROWS' default)")
    if args.memory_sizes and "ours" not in args.figures:
        parser.error("--memory-sizes run ours: --figures must include it")
    not_imports = set(args.largest_figures) - set(IMPORT_FIGURES)
    if not_imports:  # Airflow's and the tasks' figures are not by size
        parser.error(f"--largest-figures takes import figures only ({', '.join(IMPORT_FIGURES)}), "
                     f"not {', '.join(sorted(not_imports))}")
    if committed and not _measures_imports(args):
        # The committed results hold every figure and target (issue #14): a run of the Airflow or
        # the tasks' figures alone would replace them with its own few.
        parser.error("a run without an import figure (--figures " + ",".join(args.figures) + ") would replace "
                     "the committed results: write it elsewhere with --out (make bench BENCH_OUT=...)")
    return args


def reproducing_command(args: argparse.Namespace) -> str:
    """The command that runs this bench again, every setting of the parser spelled out with the
    value this run took: the BENCH_* variables `make bench` passes through the environment are not
    in the command line (issue #14: the committed run's command must repeat it)."""
    options = []
    for action in _parser()._actions:
        if action.dest in _NOT_SETTINGS:
            continue
        value = getattr(args, action.dest)
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value) or "none"  # (only --memory-sizes may be empty)
        options.append(f"{action.option_strings[0]} {value}")
    if Path(args.out).resolve() != (ROOT / "bench" / "results").resolve():
        options.append(f"--out {args.out}")
    timeout = ("" if FIGURE_TIMEOUT_SECONDS == DEFAULT_FIGURE_TIMEOUT_SECONDS
               else f"BENCH_FIGURE_TIMEOUT={FIGURE_TIMEOUT_SECONDS} ")
    return timeout + " ".join(["python -m bench.run", *options])


def _measures_imports(args: argparse.Namespace) -> bool:
    """Whether the run measures an import figure at some size (--figures or --largest-figures)."""
    return any(f in IMPORT_FIGURES for f in (*args.figures, *args.largest_figures))


def _keep_scheduled(results: dict, previous: Path) -> None:
    """The scheduled runs (`python -m bench.scheduled --write`, tens of minutes on the real
    scheduler) are not part of this run: the figures already in `previous` are kept, with the
    time they were measured, so that latest.json still holds every target."""
    try:
        scheduled = json.loads(previous.read_text(encoding="utf-8")).get("scheduled")
    except (OSError, ValueError):
        return
    if scheduled:
        results["scheduled"] = scheduled


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A stopped bench (SIGTERM) unwinds like Ctrl-C: its PostgreSQL server is stopped, not orphaned.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bench = Bench(args)
    results = bench.run()
    out = Path(args.out)
    _keep_scheduled(results, out / "latest.json")
    summary = report.summarise(results)
    results["summary"] = summary
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = report.markdown(results)
    for name in (f"{stamp}.json", "latest.json"):
        (out / name).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "latest.md").write_text(text, encoding="utf-8")
    chart = report.chart(results, Path(args.chart))
    if args.docs:
        report.update_docs(Path(args.docs), results)
    print()
    print(text)
    print("Targets (issue #14):")
    print("\n".join(report.target_lines(summary)))
    for where, verdict in summary["stores_agree"].items():
        print(f"  stores after the three cases, {where}: {'the same' if verdict['agree'] else 'DIFFER'} "
              f"({', '.join(verdict['figures'])})")
    print(f"results: {out / 'latest.json'}  table: {out / 'latest.md'}  chart: {chart or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
