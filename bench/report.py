"""The bench's results as a table (Markdown), a JSON document and a chart (PNG)."""

from __future__ import annotations

import os
import platform
import statistics
from collections import defaultdict
from pathlib import Path

STAGES = ("extract", "read", "normalise", "validate", "gx_suites", "gx_docs", "transform", "load", "report")
_LABELS = {"floor": "floor (SQL)", "pandas": "naive pandas", "dlt": "dlt merge", "ours": "ours"}
_ORDER = {"floor": 0, "ours": 1, "dlt": 2, "pandas": 3}


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
        })
    by_key = {(f["figure"], f["database"], f["rows"], f["mode"]): f for f in figures}
    return {"figures": figures, "targets": _targets(by_key, results)}


def _ratio(by_key: dict, a: tuple, b: tuple) -> float | None:
    """a's time over b's; over b's lower bound when b did not finish (then an upper bound)."""
    if a not in by_key or b not in by_key or by_key[a]["seconds"] is None:
        return None
    other = by_key[b]["seconds"] or by_key[b]["did_not_finish_in"]
    return by_key[a]["seconds"] / other if other else None


def _targets(by_key: dict, results: dict) -> list[dict]:
    targets = []
    sizes = sorted(results["sizes"])
    biggest = sizes[-1]
    for db in results["databases"]:
        for size in sizes:
            checks = (
                ("ours ≤ 3× the floor, all inserts", ("ours", db, size, "insert"), ("floor", db, size, "insert"), 3.0),
                ("ours ≤ 2× the floor, unchanged re-import",
                 ("ours", db, size, "unchanged"), ("floor", db, size, "unchanged"), 2.0),
                ("ours faster than naive pandas (inserts)",
                 ("ours", db, size, "insert"), ("pandas", db, size, "insert"), 1.0),
                ("ours faster than dlt merge (inserts)",
                 ("ours", db, size, "insert"), ("dlt", db, size, "insert"), 1.0),
                ("ours faster than dlt merge (unchanged)",
                 ("ours", db, size, "unchanged"), ("dlt", db, size, "unchanged"), 1.0),
            )
            for name, a, b, limit in checks:
                ratio = _ratio(by_key, a, b)
                if ratio is not None:
                    targets.append({"target": name, "database": db, "rows": size, "ratio": ratio, "limit": limit,
                                    "met": ratio <= limit, "headline": db == "postgresql" and size == biggest,
                                    "bound": bool(by_key[b]["did_not_finish_in"])})
    ours_memory = [(size, by_key[("ours", db, size, mode)]["peak_rss_mb_max"])
                   for db in results["databases"] for size in sizes for mode in ("insert", "unchanged")
                   if ("ours", db, size, mode) in by_key]
    if ours_memory:
        worst = max(mb for _, mb in ours_memory)
        at_biggest = max(mb for size, mb in ours_memory if size == biggest)
        targets.append({"target": f"peak memory ≤ 2048 MB at {biggest:,} rows", "database": None, "rows": biggest,
                        "value": at_biggest, "limit": 2048, "met": at_biggest <= 2048, "headline": True,
                        "worst_mb": worst})
        if len(sizes) >= 2:
            small, large = sizes[0], sizes[-1]
            rss = {size: max(mb for s, mb in ours_memory if s == size) for size in (small, large)}
            # Linear at most: the growth per row from the smallest to the largest export
            # stays under the largest figure's own average (what memory would be if it were proportional).
            growth = (rss[large] - rss[small]) / (large - small) * 1e6
            targets.append({"target": "memory grows at most linearly with rows", "database": None, "rows": large,
                            "value": growth, "unit": "MB per million rows above the base",
                            "met": rss[large] <= rss[small] * large / small, "headline": True,
                            "base_mb": rss[small], "largest_mb": rss[large]})
    for name, test, trivial, limit in (
            ("patient_import via `airflow dags test` ≤ 1.2× the trivial DAG", "dags_test:patient_import",
             "dags_test:trivial_five_tasks", 1.2),
            ("DAG parse time ≤ 1.2× the trivial DAG's", "parse:patient_import", "parse:trivial_five_tasks", 1.2)):
        a = next((k for k in by_key if k[0] == test), None)
        b = next((k for k in by_key if k[0] == trivial), None)
        if a and b:
            ratio = by_key[a]["seconds"] / by_key[b]["seconds"]
            targets.append({"target": name, "database": None, "rows": a[2], "ratio": ratio, "limit": limit,
                            "met": ratio <= limit, "headline": True})
    return targets


def _fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}" if value else ""


def markdown(results: dict) -> str:
    summary = results["summary"]
    figures = summary["figures"]
    runs = f"Median of {results['repeat']} runs per figure"
    if results.get("largest_repeat", results["repeat"]) != results["repeat"]:
        runs += f" ({results['largest_repeat']} at {max(results['sizes']):,} rows)"
    lines = [f"Machine: {machine_line(results['machine'])[len('machine: '):]}.",
             f"{runs}; rows/s counts the export's data rows "
             "(the floor and the peers load the clean CSV those rows become).", ""]
    lines += ["| rows | database | figure | store | seconds | rows/s | peak RSS (MB) |",
              "|---:|---|---|---|---:|---:|---:|"]
    table = [f for f in figures if f["figure"] in _LABELS]
    table.sort(key=lambda f: (f["rows"], f["database"] != "postgresql", _ORDER[f["figure"]], f["mode"] != "insert"))
    for f in table:
        store = "empty (inserts)" if f["mode"] == "insert" else "same file again (unchanged)"
        if f["seconds"] is None:
            lines.append(f"| {f['rows']:,} | {f['database']} | {_LABELS[f['figure']]} | {store} | "
                         f"> {f['did_not_finish_in']} (stopped) | < {f['rows'] / f['did_not_finish_in']:,.0f} | |")
            continue
        lines.append(f"| {f['rows']:,} | {f['database']} | {_LABELS[f['figure']]} | {store} | {f['seconds']:.2f} | "
                     f"{_fmt_rate(f['rows_per_second'])} | {f['peak_rss_mb']:.0f} |")
    ours = sorted((f for f in figures if f["figure"] == "ours" and f["seconds"] is not None),
                  key=lambda f: (f["rows"], f["database"] != "postgresql", f["mode"] != "insert"))
    if ours:
        present = [s for s in STAGES if any(s in f["stages"] for f in ours)]
        lines += ["", "Ours by stage (seconds; `validate` is what remains of the stage besides read, "
                      "normalise and the GX suites and Data Docs):", "",
                  "| rows | database | store | " + " | ".join(present) + " | total |",
                  "|---:|---|---|" + "---:|" * (len(present) + 1)]
        for f in ours:
            lines.append(f"| {f['rows']:,} | {f['database']} | {f['mode']} | "
                         + " | ".join(f"{f['stages'].get(s, 0.0):.2f}" for s in present) + f" | {f['seconds']:.2f} |")
    airflow = [f for f in figures if f["figure"].startswith(("dags_test:", "parse:"))]
    if airflow:
        lines += ["", "Through Airflow (`airflow dags test`: the whole command, Airflow's start included; "
                      "parse: one DagBag of the file, Airflow already imported):", "",
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
    lines += ["", "Targets:", "", "| target | where | measured | met |", "|---|---|---:|---|"]
    for t in summary["targets"]:
        where = ", ".join(x for x in (t["database"], f"{t['rows']:,} rows" if t.get("rows") else None) if x)
        if "ratio" in t:
            measured = f"{'≤ ' if t.get('bound') else ''}{t['ratio']:.2f}× (limit {t['limit']}×)"
        elif t.get("unit"):
            measured = f"{t['base_mb']:.0f} → {t['largest_mb']:.0f} MB"
        else:
            measured = f"{t['value']:.0f} MB"
        lines.append(f"| {t['target']} | {where} | {measured} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def chart(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (uv sync --group bench): no chart")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = results["summary"]["figures"]
    databases = results["databases"]
    fig, axes = plt.subplots(1, len(databases), figsize=(6.2 * len(databases), 4.6), squeeze=False)
    series = (("floor", "insert", "floor (SQL), inserts", "k", "--"),
              ("floor", "unchanged", "floor (SQL), unchanged", "0.5", ":"),
              ("ours", "insert", "ours, inserts", "tab:blue", "-"),
              ("ours", "unchanged", "ours, unchanged", "tab:cyan", "-"),
              ("dlt", "insert", "dlt merge, inserts", "tab:orange", "-"),
              ("dlt", "unchanged", "dlt merge, unchanged", "tab:brown", ":"),
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
        ax.legend(fontsize=8)
    m = results["machine"]
    runs = f"median of {results['repeat']} runs"
    if results.get("largest_repeat", results["repeat"]) != results["repeat"]:
        runs += f", {results['largest_repeat']} at {max(results['sizes']):,} rows"
    fig.suptitle(f"patient import throughput, {m['cores']} cores, {m['memory_gb']:.0f} GB ({runs})", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
