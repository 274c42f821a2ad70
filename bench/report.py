"""The bench's results as a table (Markdown), a JSON document and a chart (PNG)."""

from __future__ import annotations

import os
import platform
import statistics
from collections import defaultdict
from pathlib import Path

# The pipeline's stages (pipeline.run_stages), whose own peak RSS bench/ours.py measures.
_PIPELINE_STAGES = ("extract", "validate", "transform", "approval", "load", "report")
# The load stage's parts (bench/ours.py): the rows decided against the store (the stored patients
# read, `rules.decide_outcomes`), the written rows staged (COPY), the patients written, the change
# log (SPEC §8) and every row's outcome recorded (SPEC §4).
LOAD_PARTS = ("decide", "staging", "write", "change_log", "outcomes")
STAGES = ("extract", "read", "normalise", "validate", "gx_suites", "gx_docs", "transform", "load", *LOAD_PARTS,
          "report")
_LABELS = {"floor": "floor (SQL)", "floor:merge": "floor variant: COPY + MERGE",
           "floor:on_conflict": "floor variant: COPY + ON CONFLICT", "pandas": "naive pandas",
           "dlt": "dlt merge", "duckdb": "DuckDB", "ours": "ours"}
_ORDER = {"floor": 0, "floor:merge": 1, "floor:on_conflict": 2, "ours": 3, "dlt": 4, "duckdb": 5, "pandas": 6}
MODES = ("insert", "unchanged", "newer")
_METHOD = {"merge": "MERGE", "on_conflict": "ON CONFLICT"}
_STORE = {"insert": "empty (inserts)", "unchanged": "same file again (unchanged)",
          "newer": "newer but identical export"}
# Issue #14's targets (bench/run.py measures them; `met` is None when a run did not measure one).
FLOOR_LIMIT = {"postgresql": 1.5, "sqlite": 2.0}
PEAK_RSS_LIMIT_MB = 1024
PEAK_RSS_ROWS = 1_000_000
AIRFLOW_LIMIT = 1.2
SCHEDULED_LIMIT = 2.0


def machine() -> dict:
    memory_kb = 0
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(memory_kb / 1024 / 1024, 1), "cpu": cpu,
            "python": platform.python_version(), "system": f"{platform.system()} {platform.release()}"}


def machine_line(m: dict) -> str:
    pg = f", PostgreSQL {m['postgresql']}" if m.get("postgresql") else ""
    return (f"machine: {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gb']} GB memory, "
            f"{m['cpu'] or 'unknown CPU'}; Python {m['python']}{pg}; {m['system']}")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(results: dict) -> dict:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in results["samples"]:
        groups[(s["figure"], s["database"], s["rows"], s["mode"])].append(s)
    figures = []
    for (figure, database, rows, mode), samples in groups.items():
        finished = [s["seconds"] for s in samples if s["seconds"] is not None]
        # A figure stopped at the timeout in most of its runs has no median: only a lower bound.
        stopped = len(finished) * 2 <= len(samples) and len(finished) < len(samples)
        seconds = None if stopped else _median(finished)
        stages = sorted({k for s in samples for k in s["stages"]})
        figures.append({
            "figure": figure, "database": database, "rows": rows, "mode": mode, "runs": len(samples),
            "seconds": seconds, "seconds_all": [s["seconds"] for s in samples],
            "did_not_finish_in": results.get("figure_timeout_seconds") if stopped else None,
            "rows_per_second": (rows / seconds) if rows and seconds else None,
            "process_seconds": _median([s["process_seconds"] for s in samples]),
            "process_cpu_seconds": _median([s["process_cpu_seconds"] for s in samples]),
            "peak_rss_mb": _median([s["peak_rss_mb"] for s in samples]),
            "peak_rss_mb_max": max(s["peak_rss_mb"] for s in samples),
            "stages": {k: _median([s["stages"].get(k, 0.0) for s in samples]) for k in stages},
            # Each pipeline stage's own peak RSS (bench/ours.py), the largest of the runs.
            "stage_peak_rss_mb": _stage_peaks(samples),
        })
    figures += _best_floor(figures)
    by_key = {(f["figure"], f["database"], f["rows"], f["mode"]): f for f in figures}
    return {"figures": figures, "targets": _targets(by_key, results), "stores_agree": stores_agree(results)}


def _best_floor(figures: list[dict]) -> list[dict]:
    """The floor of each case: the faster of its variants (medians), named in `method`."""
    variants: dict[tuple, list[dict]] = defaultdict(list)
    for f in figures:
        if f["figure"].startswith("floor:") and f["seconds"] is not None:
            variants[(f["database"], f["rows"], f["mode"])].append(f)
    best = []
    for (_, _, _), candidates in variants.items():
        fastest = min(candidates, key=lambda f: f["seconds"])
        best.append(fastest | {"figure": "floor", "method": fastest["figure"].split(":", 1)[1]})
    return best


def _runs(count: int) -> str:
    return f"{count} run{'s' if count != 1 else ''}"


def _has_import_figures(results: dict) -> bool:
    """Whether the run measured an import figure at one of its sizes (not the Airflow or the tasks'
    figures alone, which have no import table and no chart)."""
    return any(f["figure"] in _LABELS and f["rows"] in results["sizes"] for f in results["summary"]["figures"])


def stores_agree(results: dict) -> dict:
    """Per size and database: whether every figure left the same patients (store digests)."""
    verdict = {}
    for where, digests in results.get("store_digests", {}).items():
        if not digests:  # no figure of that size and database ran its three cases
            continue
        distinct = {(d["rows"], d["sha256"]) for d in digests.values()}
        verdict[where] = {"agree": len(distinct) == 1, "figures": sorted(digests),
                          "rows": sorted(r for r, _ in distinct)}
    return verdict


def _ratio(by_key: dict, a: tuple, b: tuple) -> float | None:
    """a's time over b's; over b's lower bound when b did not finish (then an upper bound)."""
    if a not in by_key or b not in by_key or by_key[a]["seconds"] is None:
        return None
    other = by_key[b]["seconds"] or by_key[b]["did_not_finish_in"]
    return by_key[a]["seconds"] / other if other else None


def _target(name: str, database: str | None, rows: int | None, *, headline: bool, limit: float | None,
            ratio: float | None = None, value: float | None = None, unit: str | None = None,
            bound: bool = False, **extra) -> dict:
    measured = ratio if ratio is not None else value
    met = None if measured is None or limit is None else measured <= limit
    return {"target": name, "database": database, "rows": rows, "ratio": ratio, "value": value, "unit": unit,
            "limit": limit, "met": met, "headline": headline, "bound": bound} | extra


def _stage_peaks(samples: list[dict]) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for sample in samples:
        for stage, mb in ((sample.get("detail") or {}).get("stage_peak_rss_mb") or {}).items():
            peaks[stage] = max(peaks.get(stage, 0.0), mb)
    return peaks


def _peak_of_any_stage(figure: dict) -> float:
    """The largest of a figure's stage peaks; its process's peak where a run did not measure them
    (ours runs its stages in one process, so that bounds every stage's)."""
    return max(figure.get("stage_peak_rss_mb", {}).values(), default=figure["peak_rss_mb_max"])


def _targets(by_key: dict, results: dict) -> list[dict]:
    """Issue #14's targets that this run measured (met True/False), and the rest (met None)."""
    targets = []
    sizes = sorted(results["sizes"])
    for db in results["databases"]:
        checks = [(f"ours ≤ {FLOOR_LIMIT[db]}× the floor ({mode})", mode, "floor", FLOOR_LIMIT[db])
                  for mode in MODES]
        if db == "postgresql":
            checks += [(f"ours faster than {_LABELS[peer]} ({mode})", mode, peer, 1.0)
                       for peer in ("dlt", "duckdb") for mode in MODES]
        for name, mode, other, limit in checks:
            # A comparison's headline is the largest size at which both ran, finished or stopped: a
            # run may take a reference at fewer sizes than ours (--largest-figures ours,floor leaves
            # the peers out), and ours stopped at the timeout there is a lower bound, never skipped.
            ran = [(size, ("ours", db, size, mode), (other, db, size, mode)) for size in sizes]
            ran = [(size, a, b) for size, a, b in ran if a in by_key and b in by_key]
            if not ran and any(k[0] == "ours" and k[1] == db for k in by_key):
                targets.append(_target(name, db, None, limit=limit, headline=True))  # not measured
            for size, a, b in ran:
                ratio, lower = _ratio(by_key, a, b), False
                if ratio is None and by_key[a]["did_not_finish_in"] and by_key[b]["seconds"]:
                    ratio, lower = by_key[a]["did_not_finish_in"] / by_key[b]["seconds"], True
                target = _target(name, db, size, ratio=ratio, limit=limit, headline=size == ran[-1][0],
                                 bound=bool(by_key[b]["did_not_finish_in"]), lower_bound=lower,
                                 ours_seconds=by_key[a]["seconds"], other_seconds=by_key[b]["seconds"],
                                 method=by_key[b].get("method"))
                if lower and ratio is not None and ratio <= limit:
                    target["met"] = None  # stopped before the limit was reached: not known
                targets.append(target)
    # Each stage's own peak (a DAG runs each in a task process of its own), the largest of any
    # database and case at a size, at every size ours ran (the memory sizes included).
    by_size: dict[int, float] = {}
    for (figure, _, size, _), measured in by_key.items():
        if figure == "ours":
            by_size[size] = max(by_size.get(size, 0.0), _peak_of_any_stage(measured))
    if by_size:
        # At PEAK_RSS_ROWS; a run that stops short shows its largest size's figure, never "met".
        at = (PEAK_RSS_ROWS if PEAK_RSS_ROWS in by_size
              else max((s for s in by_size if s < PEAK_RSS_ROWS), default=None))
        target = _target(f"peak RSS of any stage ≤ {PEAK_RSS_LIMIT_MB} MB at {PEAK_RSS_ROWS:,} rows", None, at,
                         value=by_size.get(at), unit="MB", limit=PEAK_RSS_LIMIT_MB, headline=True,
                         by_size={str(n): mb for n, mb in sorted(by_size.items())})
        if at != PEAK_RSS_ROWS:
            target["met"] = None
        targets.append(target)
        # "... and flat beyond it (chunked)": within the same limit at every larger size measured
        # (bench/run.py's --memory-sizes); not measured by a run that stops at PEAK_RSS_ROWS.
        beyond = {size: mb for size, mb in by_size.items() if size > PEAK_RSS_ROWS}
        worst = max(beyond, key=beyond.get) if beyond else None
        targets.append(_target(f"peak RSS of any stage flat beyond {PEAK_RSS_ROWS:,} rows "
                               f"(≤ {PEAK_RSS_LIMIT_MB} MB at every larger size)", None, worst,
                               value=beyond.get(worst), unit="MB", limit=PEAK_RSS_LIMIT_MB, headline=True))
    for name, test, trivial in (
            ("patient_import via `airflow dags test` ≤ 1.2× the trivial DAG", "dags_test:patient_import",
             "dags_test:trivial_five_tasks"),
            ("DAG parse time ≤ 1.2× the trivial DAG's", "parse:patient_import", "parse:trivial_five_tasks")):
        a = next((k for k in by_key if k[0] == test), None)
        b = next((k for k in by_key if k[0] == trivial), None)
        ratio = by_key[a]["seconds"] / by_key[b]["seconds"] if a and b else None
        targets.append(_target(name, None, a[2] if a else None, ratio=ratio, limit=AIRFLOW_LIMIT, headline=True))
    scheduled = results.get("scheduled") or {}
    practices = scheduled.get("practices", {})
    twenty = practices.get("20")
    targets.append(_target(f"scheduled run, 20 practices × 1,000 rows ≤ {SCHEDULED_LIMIT}× the same-shape empty DAG",
                           None, None, ratio=twenty["ratio"] if twenty else None, limit=SCHEDULED_LIMIT,
                           headline=True))
    two_hundred = practices.get("200")
    targets.append(_target("scheduled run, 200 practices: measured (practices per minute per core)", None, None,
                           value=two_hundred["practices_per_minute_per_core"] if two_hundred else None,
                           unit="practices/min/core", limit=None, headline=True,
                           measured=two_hundred is not None))
    if two_hundred is not None:
        targets[-1]["met"] = True
    return targets


def met_label(met: bool | None) -> str:
    return {True: "met", False: "NOT MET", None: "not measured"}[met]


def _fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}" if value else ""


def markdown(results: dict) -> str:
    summary = results["summary"]
    figures = summary["figures"]
    runs = f"Median of {_runs(results['repeat'])} per figure"
    if results.get("largest_repeat", results["repeat"]) != results["repeat"]:
        runs += f" ({results['largest_repeat']} at {max(results['sizes']):,} rows)"
    largest_figures = [f for f in results.get("largest_figures", []) if f in _LABELS]
    if (len(results["sizes"]) > 1 and largest_figures
            and set(largest_figures) != set(results.get("figures", _LABELS)) & set(_LABELS)):
        runs += f"; at {max(results['sizes']):,} rows the figures " + ", ".join(_LABELS[f] for f in largest_figures)
    memory_sizes = results.get("memory_sizes") or []
    if memory_sizes:
        repeat = results.get("largest_repeat", results["repeat"])
        runs += (f"; at {', '.join(f'{n:,}' for n in memory_sizes)} rows ours alone, {_runs(repeat)} "
                 f"(its memory beyond {PEAK_RSS_ROWS:,} rows, `--memory-sizes`)")
    lines = [f"Machine: {machine_line(results['machine'])[len('machine: '):]}."]
    if _has_import_figures(results):
        lines += [f"{runs}; rows/s counts the export's data rows "
                      "(the floor and the peers load the clean CSV those rows become).", "",
                      "| rows | database | figure | store | seconds | rows/s | peak RSS (MB) |",
                      "|---:|---|---|---|---:|---:|---:|"]
    # A database with one floor variant (SQLite: no MERGE) shows the floor only.
    variants = defaultdict(set)
    for f in figures:
        if f["figure"].startswith("floor:"):
            variants[f["database"]].add(f["figure"])
    table = [f for f in figures if f["figure"] in _LABELS
             and not (f["figure"].startswith("floor:") and len(variants[f["database"]]) < 2)]
    table.sort(key=lambda f: (f["rows"], f["database"] != "postgresql", _ORDER[f["figure"]], MODES.index(f["mode"])))
    for f in table:
        store = _STORE[f["mode"]]
        if f["seconds"] is None:
            lines.append(f"| {f['rows']:,} | {f['database']} | {_LABELS[f['figure']]} | {store} | "
                         f"> {f['did_not_finish_in']} (stopped) | < {f['rows'] / f['did_not_finish_in']:,.0f} | |")
            continue
        label = _LABELS[f["figure"]] + (f", fastest: {_METHOD[f['method']]}" if f.get("method") else "")
        lines.append(f"| {f['rows']:,} | {f['database']} | {label} | {store} | {f['seconds']:.2f} | "
                     f"{_fmt_rate(f['rows_per_second'])} | {f['peak_rss_mb']:.0f} |")
    ours = sorted((f for f in figures if f["figure"] == "ours" and f["seconds"] is not None),
                  key=lambda f: (f["rows"], f["database"] != "postgresql", MODES.index(f["mode"])))
    if ours:
        present = [s for s in STAGES if any(s in f["stages"] for f in ours)]
        lines += ["", "Ours by stage (seconds; `validate` is what remains of the stage besides read, "
                      "normalise and the GX suites and Data Docs; `load` what remains of its stage besides "
                      f"its parts, {', '.join(LOAD_PARTS)}):", "",
                  "| rows | database | store | " + " | ".join(present) + " | total |",
                  "|---:|---|---|" + "---:|" * (len(present) + 1)]
        for f in ours:
            lines.append(f"| {f['rows']:,} | {f['database']} | {f['mode']} | "
                         + " | ".join(f"{f['stages'].get(s, 0.0):.2f}" for s in present) + f" | {f['seconds']:.2f} |")
        peaks = [f for f in ours if f.get("stage_peak_rss_mb")]
        if peaks:
            staged = [s for s in _PIPELINE_STAGES if any(s in f["stage_peak_rss_mb"] for f in peaks)]
            lines += ["", "Ours' peak RSS by stage (MB; each stage's own high-water mark, from the RSS it "
                          "starts with, the memory earlier stages freed given back first: a DAG runs each "
                          "stage in a task process of its own):", "",
                      "| rows | database | store | " + " | ".join(staged) + " | process |",
                      "|---:|---|---|" + "---:|" * (len(staged) + 1)]
            for f in peaks:
                lines.append(f"| {f['rows']:,} | {f['database']} | {f['mode']} | "
                             + " | ".join(f"{f['stage_peak_rss_mb'][s]:.0f}" if s in f["stage_peak_rss_mb"] else ""
                                          for s in staged) + f" | {f['peak_rss_mb']:.0f} |")
    airflow = [f for f in figures if f["figure"].startswith(("dags_test:", "parse:"))]
    if airflow:
        airflow_runs = results.get("airflow_repeat") or results["repeat"]
        how = ("one run each" if airflow_runs == 1 else
               f"median of {airflow_runs} runs each, the two DAGs in turn, each round in the other order")
        lines += ["", f"Through Airflow ({how}; `airflow dags test`: the whole command, Airflow's start "
                      "included; parse: one DagBag of the file, Airflow already imported):", "",
                  "| what | DAG | seconds | peak RSS (MB) |", "|---|---|---:|---:|"]
        for f in sorted(airflow, key=lambda f: f["figure"]):
            what, dag_id = f["figure"].split(":")
            label = "airflow dags test" if what == "dags_test" else "parse the DAG file"
            rows = f" ({f['rows']:,} rows)" if f["rows"] else ""
            lines.append(f"| {label} | {dag_id}{rows} | {f['seconds']:.3f} | {f['peak_rss_mb']:.0f} |")
    gens = [f for f in figures if f["figure"] == "generator"]
    if gens:
        lines += ["", "Generator: " + ", ".join(f"{f['rows']:,} rows in {f['seconds']:.1f} s" for f in
                                                 sorted(gens, key=lambda f: f["rows"])) + "."]
    lines += _agreement_lines(summary.get("stores_agree", {}))
    lines += _task_overhead_lines(results.get("task_overhead"))
    lines += _scheduled_lines(results.get("scheduled"))
    lines += ["", "Targets (issue #14):", "", "| target | where | measured | met |", "|---|---|---:|---|"]
    for t in summary["targets"]:
        where = ", ".join(x for x in (t["database"], f"{t['rows']:,} rows" if t.get("rows") else None) if x)
        lines.append(f"| {t['target']} | {where} | {_measured(t)} | {_met_cell(t['met'])} |")
    return "\n".join(lines) + "\n"


def _measured(t: dict) -> str:
    if t.get("ratio") is not None:
        sign = "≥ " if t.get("lower_bound") else "≤ " if t.get("bound") else ""
        return f"{sign}{t['ratio']:.2f}× (limit {t['limit']}×)"
    if t.get("value") is not None:
        limit = f" (limit {t['limit']:.0f})" if t.get("limit") else ""
        at = f" at {t['rows']:,} rows" if t.get("met") is None and t.get("rows") else ""
        return f"{t['value']:,.1f} {t.get('unit') or ''}{limit}{at}"
    return "—"


def _met_cell(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "not measured"}[met]


def target_lines(summary: dict) -> list[str]:
    """One line per target for the terminal: `met` / `NOT MET` / `not measured`."""
    lines = []
    for t in summary["targets"]:
        where = ", ".join(x for x in (t["database"], f"{t['rows']:,} rows" if t.get("rows") else None) if x)
        lines.append(f"  [{met_label(t['met']):^12}] {t['target']}{f' ({where})' if where else ''}: {_measured(t)}")
    return lines


def _agreement_lines(agree: dict) -> list[str]:
    if not agree:
        return []
    lines = ["", "Store contents after the three cases (patient values, key and `last_seen_exported_on`; "
                 "import ids left out), compared across every figure:", ""]
    for where, v in agree.items():
        lines.append(f"- {where}: {'the same' if v['agree'] else '**they differ**'} "
                     f"({', '.join(v['figures'])}; {', '.join(f'{r:,}' for r in v['rows'])} rows)")
    return lines


def _task_overhead_lines(overhead: dict | None) -> list[str]:
    if not overhead:
        return []
    lines = ["", "Per-task start-up cost (bench/task_overhead.py): a fresh Python process that imports "
                 "`airflow.sdk` (as the task runner has), then what the task of `dags/patient_import.py` "
                 "imports and sets up before its work; median of "
                 f"{overhead['repeat']} run(s). The trivial task imports `airflow.sdk` and `pendulum` only.", "",
             "| task | imports (s) | store engine + checks (s) | process wall (s) | over the trivial task (s) "
             "| heavy modules loaded |", "|---|---:|---:|---:|---:|---|"]
    trivial = overhead["trivial"]["process_seconds"]
    for name, t in [("trivial task", overhead["trivial"]), *overhead["tasks"].items()]:
        lines.append(f"| {name} | {t['imports_seconds']:.2f} | {t.get('engine_seconds', 0.0):.2f} | "
                     f"{t['process_seconds']:.2f} | {t['process_seconds'] - trivial:+.2f} | "
                     f"{', '.join(t.get('heavy_modules', [])) or '—'} |")
    return lines


def _scheduled_lines(scheduled: dict | None) -> list[str]:
    if not scheduled or not scheduled.get("practices"):
        return []
    lines = ["", "Scheduled runs on the real scheduler (`python -m bench.scheduled`), "
                 f"{scheduled.get('rows_per_practice', 1000):,} rows per practice, the preloading "
                 "LocalExecutor (include/executors.py) beside Airflow's plain one (— where a run left "
                 "it out):", "",
             "| practices | patient_import (s) | same-shape empty DAG (s) | ratio | practices/min/core "
             "| plain LocalExecutor (s) | plain / preloading | measured |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n, p in sorted(scheduled["practices"].items(), key=lambda kv: int(kv[0])):
        empty = f"{p['empty_seconds']:.1f}" if p.get("empty_seconds") else "—"
        ratio = f"{p['ratio']:.2f}×" if p.get("ratio") else "—"
        plain = p.get("plain_local_executor_seconds")
        plain_cells = f"{plain:.1f} | {plain / p['seconds']:.2f}×" if plain else "— | —"
        measured = p.get("measured_at") or scheduled.get("measured_at") or "—"
        lines.append(f"| {int(n):,} | {p['seconds']:.1f} | {empty} | {ratio} | "
                     f"{p['practices_per_minute_per_core']:.2f} | {plain_cells} | {measured} |")
    return lines


def _bar_chart(results: dict, path: Path, plt) -> Path:
    """One export size: seconds per figure and case, one panel per database (a rate-by-size line
    chart needs two sizes at least)."""
    figures = [f for f in results["summary"]["figures"]  # not a memory size's (ours alone)
               if f["figure"] in _LABELS and not f["figure"].startswith("floor:") and f["rows"] in results["sizes"]]
    databases = results["databases"]
    fig, axes = plt.subplots(1, len(databases), figsize=(6.2 * len(databases), 4.6), squeeze=False)
    colors = {"insert": "tab:blue", "unchanged": "tab:cyan", "newer": "tab:purple"}
    for ax, db in zip(axes[0], databases):
        names = sorted({f["figure"] for f in figures if f["database"] == db}, key=_ORDER.get)
        for i, mode in enumerate(MODES):
            for j, name in enumerate(names):
                f = next((f for f in figures
                          if f["figure"] == name and f["database"] == db and f["mode"] == mode), None)
                if f is None:
                    continue
                seconds = f["seconds"] or f["did_not_finish_in"]
                bar = ax.barh(j + (i - 1) * 0.27, seconds, height=0.27, color=colors[mode],
                              label=_STORE[mode] if j == 0 else None, hatch="//" if f["seconds"] is None else None)
                ax.bar_label(bar, labels=[f"{seconds:.1f}" + ("+ (stopped)" if f["seconds"] is None else "")],
                             fontsize=7, padding=2)
        ax.set_yticks(range(len(names)), [_LABELS[n] for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("seconds (median, log scale)")
        ax.set_title({"postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(db, db))
        ax.grid(True, axis="x", which="both", alpha=0.3)
        ax.legend(fontsize=7)
    rows = next(f["rows"] for f in figures)
    m = results["machine"]
    fig.suptitle(f"patient import, {rows:,} rows, {m['cores']} cores, {m['memory_gb']:.0f} GB "
                 f"(median of {_runs(results['repeat'])})", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def chart(results: dict, path: Path) -> Path | None:
    if not _has_import_figures(results):
        print("no import figure in this run (--figures): no chart")
        return None
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (uv sync --group bench): no chart")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = results["summary"]["figures"]
    databases = results["databases"]
    # One size of every figure (a memory size has ours alone): bars, not lines of one point.
    if len(results["sizes"]) == 1:
        return _bar_chart(results, path, plt)
    fig, axes = plt.subplots(1, len(databases), figsize=(6.2 * len(databases), 4.6), squeeze=False)
    series = (("floor", "insert", "floor (SQL), inserts", "k", "--"),
              ("floor", "unchanged", "floor (SQL), unchanged", "0.5", ":"),
              ("floor", "newer", "floor (SQL), newer identical", "0.7", "-."),
              ("ours", "insert", "ours, inserts", "tab:blue", "-"),
              ("ours", "unchanged", "ours, unchanged", "tab:cyan", "-"),
              ("ours", "newer", "ours, newer identical", "tab:purple", "-"),
              ("dlt", "insert", "dlt merge, inserts", "tab:orange", "-"),
              ("dlt", "unchanged", "dlt merge, unchanged", "tab:brown", ":"),
              ("dlt", "newer", "dlt merge, newer identical", "tab:olive", "-."),
              ("duckdb", "insert", "DuckDB, inserts", "tab:green", "-"),
              ("duckdb", "unchanged", "DuckDB, unchanged", "tab:green", ":"),
              ("duckdb", "newer", "DuckDB, newer identical", "tab:green", "-."),
              ("pandas", "insert", "naive pandas, inserts", "tab:red", "-"))
    for ax, db in zip(axes[0], databases):
        for figure, mode, label, color, style in series:
            points = sorted((f["rows"], f["rows_per_second"] or f["rows"] / f["did_not_finish_in"],
                             f["seconds"] is None) for f in figures
                            if f["figure"] == figure and f["mode"] == mode and f["database"] == db)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", color=color, label=label)
                # A figure stopped at the timeout is an upper bound on its rate: a hollow down-triangle.
                for rows, rate, stopped in points:
                    if stopped:
                        ax.plot([rows], [rate], marker="v", markersize=11, markerfacecolor="white", color=color)
                        ax.annotate("stopped", (rows, rate), textcoords="offset points", xytext=(6, -12),
                                    fontsize=7, color=color)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title({"postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(db, db))
        ax.set_xlabel("rows in the export")
        ax.set_ylabel("rows per second (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    m = results["machine"]
    runs = f"median of {_runs(results['repeat'])}"
    if results.get("largest_repeat", results["repeat"]) != results["repeat"]:
        runs += f", {results['largest_repeat']} at {max(results['sizes']):,} rows"
    fig.suptitle(f"patient import throughput, {m['cores']} cores, {m['memory_gb']:.0f} GB ({runs})", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


DOCS_BEGIN = "<!-- bench:begin (written by bench/report.py from bench/results/latest.json) -->"
DOCS_END = "<!-- bench:end -->"


def update_docs(path: Path, results: dict) -> None:
    """Replace the generated part of `path` (between DOCS_BEGIN and DOCS_END) with this run's
    tables; the prose around it is kept. Raises ValueError when the markers are missing."""
    text = path.read_text(encoding="utf-8")
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise ValueError(f"{path} has no {DOCS_BEGIN!r} … {DOCS_END!r} markers")
    head, rest = text.split(DOCS_BEGIN, 1)
    _, tail = rest.split(DOCS_END, 1)
    sizes = ", ".join(f"{n:,}" for n in sorted(results["sizes"]))
    run = (f"The run of {results['started_at'][:16].replace('T', ' ')} UTC, export sizes {sizes} rows, "
           f"commit {results.get('commit') or 'unknown'}; command `{results['command']}`.")
    path.write_text(f"{head}{DOCS_BEGIN}\n{run}\n\n{markdown(results)}{DOCS_END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.report [bench/results/latest.json]`: the tables, the targets with met /
    not met, docs/performance.md's generated part and the chart, again from a saved run."""
    import argparse
    import json

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default=str(root / "bench" / "results" / "latest.json"))
    parser.add_argument("--docs", help="rewrite this file's generated part (docs/performance.md)")
    parser.add_argument("--chart", help="write the chart here (docs/bench_rows_per_second.png)")
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text(encoding="utf-8"))
    # The summary is derived from the samples: written back, so the JSON and the docs agree.
    results["summary"] = summarise(results)
    Path(args.results).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(markdown(results))
    print("\n".join(target_lines(results["summary"])))
    if args.docs:
        update_docs(Path(args.docs), results)
    if args.chart:
        chart(results, Path(args.chart))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
