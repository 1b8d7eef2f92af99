"""Draws docs/images/bench-*.svg from the tables the benchmarks printed into bench/results/.

Run from a checkout: `python scripts/plot_benchmarks.py` (needs matplotlib: the `plots` extra).
The parsers read the printed tables as they are and import nothing heavy, so a test checks
them without matplotlib; the drawing imports it lazily. Same results in, same bytes out: the
SVG ids are salted with a constant, the date is left out and text stays text.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

# Run as a script, this file's directory is first on sys.path, not the checkout's root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.result_tables import (
    ROOT,
    E2ERow,
    cancel_tables,
    cost_tables,
    e2e_store_sections,
    e2e_tables,
    enqueue_rows,
    intake_tables,
    machine_of,
    read,
    redis_growth,
)

IMAGES = ROOT / "docs" / "images"


# --- drawing (matplotlib imported lazily) -------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("svg")
    matplotlib.rcParams.update({
        "svg.hashsalt": "corral-bench",  # stable clip-path and glyph ids
        "svg.fonttype": "none",  # text as <text>: smaller files, readable diffs
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    })
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, name: str, title: str, source: str, machine: str) -> Path:
    lines = textwrap.wrap(title, width=int(fig.get_figwidth() * 11))
    fig.suptitle("\n".join(lines), fontsize=11, x=0.01, ha="left")
    fig.text(0.01, 0.01, f"machine: {machine} · bench/results/{source}", fontsize=7,
             color="#555555")
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # tight_layout leaves room for the suptitle
    path = IMAGES / f"bench-{name}.svg"
    fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return path


def _bars(ax: Any, labels: list[str], series: dict[str, list[float | None]], unit: str,
          fmt: str = "{:,.0f}") -> None:
    width = 0.8 / len(series)
    for index, (name, values) in enumerate(series.items()):
        xs = [i + (index - (len(series) - 1) / 2) * width for i in range(len(labels))]
        heights = [value or 0.0 for value in values]
        bars = ax.bar(xs, heights, width, label=name)
        ax.bar_label(bars, labels=[fmt.format(v) if v else "" for v in values], fontsize=6)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylabel(unit)
    tallest = max((value or 0.0) for values in series.values() for value in values)
    # Room for the legend above the bars; axes sharing y keep the tallest of them.
    ax.set_ylim(0, max(ax.get_ylim()[1], tallest * 1.3))
    if tallest >= 1000:
        ax.yaxis.set_major_formatter("{x:,.0f}")
    ax.legend(frameon=False, fontsize=7, loc="upper left", ncols=min(3, len(series)))


def plot_e2e(plt: Any) -> Path:
    text = read("e2e.txt")
    table = e2e_tables(text)[0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, procs in zip(axes, (1, 2), strict=True):
        rows = [row for row in table if row.procs == procs]
        if not rows:
            ax.set_visible(False)
            continue
        _bars(ax, [row.contender for row in rows],
              {"end to end (submit → last result)": [row.e2e for row in rows],
               "served (simulator's first → last call)": [row.served for row in rows]},
              "lines/s")
        ax.set_title(f"{procs} worker process{'es' if procs > 1 else ''}")
    return _save(plt, fig, "e2e", "End to end at 0 ms latency: corral against the bare Celery "
                 "task, 10,000 lines, medians of 5 (lines/s)", "e2e.txt", machine_of(text))


def plot_e2e_store(plt: Any) -> Path:
    text = read("e2e_store.txt")
    sections = e2e_store_sections(text)

    def rate(rows: list[E2ERow], contender: str) -> float | None:
        found = [row for row in rows if row.contender == contender]
        if not found:
            return None
        return found[0].e2e if found[0].e2e is not None else found[0].served

    fig, ax = plt.subplots(figsize=(10, 4.2))
    _bars(ax, [label for label, _ in sections],
          {"corral, task events on": [rate(rows, "corral") for _, rows in sections],
           "corral, task events off": [rate(rows, "corral-quiet") for _, rows in sections],
           "bare gevent task (stores nothing)": [rate(rows, "bare-gevent")
                                                for _, rows in sections]},
          "lines/s")
    ax.set_xlabel("record store @ commit, in the order the rounds ran")
    return _save(plt, fig, "e2e-store", "End to end on the record store: 2 gevent workers × 64 "
                 "slots, 10,000 lines at 0 ms, medians of 2 (lines/s)", "e2e_store.txt",
                 machine_of(text))


def plot_events(plt: Any) -> Path:
    text = read("e2e_events.txt")
    tables = e2e_tables(text)[:2]  # gevent × 64, then threads × 32 (the third: before)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, rows, pool in zip(axes, tables, ("gevent", "threads"), strict=True):
        procs = sorted({row.procs for row in rows})
        by = {(row.contender, row.procs): row.e2e for row in rows}
        _bars(ax, [f"{p} process{'es' if p > 1 else ''}" for p in procs],
              {"task events on": [by.get(("corral", p)) for p in procs],
               "task events off": [by.get(("corral-quiet", p)) for p in procs]}, "lines/s")
        ax.set_title(f"{pool} × {rows[0].slots} slots")
    return _save(plt, fig, "events", "What Flower's task events cost: corral end to end, "
                 "10,000 lines at 0 ms (lines/s)", "e2e_events.txt", machine_of(text))


def plot_worker_cpu(plt: Any) -> Path:
    text = read("worker_cost_store.txt")
    sqlite, postgresql = cost_tables(text)[:2]  # at 8a78cfc; the file's later tables are older
    rows = [(f"{r.contender} {r.pool}×{r.slots}" + (" SQLite" if r.contender == "corral" else ""),
             r) for r in sqlite]
    rows += [(f"{r.contender} {r.pool}×{r.slots} PostgreSQL", r) for r in postgresql]
    labels = [label for label, _ in rows]
    parts = {"workers": [r.workers_ms for _, r in rows],
             "Redis": [r.redis_ms for _, r in rows],
             "simulator": [r.simulator_ms for _, r in rows],
             "rest of the machine (PostgreSQL's server too)": [
                 max(0.0, r.machine_ms - r.workers_ms - r.redis_ms - r.simulator_ms)
                 for _, r in rows]}
    fig, ax = plt.subplots(figsize=(9, 4))
    bottom = [0.0] * len(rows)
    for name, values in parts.items():
        ax.bar(labels, values, 0.6, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for index, (_, r) in enumerate(rows):
        ax.annotate(f"{r.machine_ms:.2f} ms\n{r.rate:,.0f} lines/s", (index, bottom[index]),
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("CPU ms per line")
    ax.set_ylim(0, max(bottom) * 1.25)
    ax.tick_params(axis="x", labelrotation=15)
    ax.legend(frameon=False, fontsize=7, loc="upper left", ncols=4)
    return _save(plt, fig, "worker-cpu", "CPU per line by pool: one worker process, 10,000 "
                 "lines at 0 ms, medians of 2 (ms of CPU per line)", "worker_cost_store.txt",
                 machine_of(text))


INTAKE_CASES = {"storage (LineIntake alone)": "storing alone",
                "pipeline (validate+route+store)": "validate + route + store",
                "pipeline, validating in 1 process": "the same, validating in 1 process",
                "validate+route only (no store)": "validate + route, no store"}
DATABASES = {"sqlite": ", SQLite", "postgresql": ", PostgreSQL", "-": ""}


def plot_intake(plt: Any) -> Path:
    text = read("intake_store.txt")
    now, before = intake_tables(text)[:2]
    old = {(row.case, row.database): row for row in before}
    labels = [INTAKE_CASES.get(row.case, row.case) + DATABASES[row.database]
              for row in now]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, field, unit, target, sign in (
            (axes[0], "rate", "lines/s", 40_000, "≥"),
            (axes[1], "peak_rss_mb", "peak RSS summed over the processes, MB", 250, "<")):
        series = {"before (5267a67)": [getattr(old[(r.case, r.database)], field)
                                       if (r.case, r.database) in old else None for r in now],
                  "now (a097182)": [getattr(r, field) for r in now]}
        height = 0.38
        for index, (name, values) in enumerate(series.items()):
            ys = [i + (index - 0.5) * height for i in range(len(now))]
            bars = ax.barh(ys, [v or 0.0 for v in values], height, label=name)
            ax.bar_label(bars, labels=[f"{v:,.0f}" if v else "" for v in values],
                         fontsize=6, padding=2)
        ax.axvline(target, color="#b22222", linestyle="--", linewidth=1)
        ax.annotate(f"target {sign} {target:,}", (target, -0.6), xytext=(3, 0),
                    textcoords="offset points", fontsize=7, color="#b22222")
        ax.set_xlabel(unit)
        ax.xaxis.set_major_formatter("{x:,.0f}")
        ax.set_xlim(0, max(v or 0.0 for vs in series.values() for v in vs) * 1.2)
    axes[0].set_yticks(range(len(now)), labels)
    axes[0].invert_yaxis()
    axes[0].set_title("lines/s (target for validate + route + store)")
    axes[1].set_title("peak memory (target at 1M lines)")
    axes[0].legend(frameon=False, fontsize=7, loc="lower right")
    return _save(plt, fig, "intake", "Intake of 1,000,000 lines into the record store, "
                 "validation in one process per CPU, medians of 2", "intake_store.txt",
                 machine_of(text))


def plot_cancel(plt: Any) -> Path:
    text = read("cancel.txt")
    now, before = cancel_tables(text)[:2]
    keys = [(store, timed) for store, timed, _ in now]

    def median_of(rows: list[tuple[str, str, float]], key: tuple[str, str]) -> float | None:
        values = sorted(s for store, timed, s in rows if (store, timed) == key)
        if not values:
            return None
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

    fig, ax = plt.subplots(figsize=(7, 3.8))
    _bars(ax, [f"{DATABASES[store].removeprefix(', ')} ({timed})" for store, timed in keys],
          {"before (end_unfed sorted, IN lists)": [median_of(before, k) for k in keys],
           "now": [median_of(now, k) for k in keys]}, "seconds", fmt="{:.1f}")
    ax.axhline(10, color="#b22222", linestyle="--", linewidth=1)
    ax.annotate("target < 10 s", (-0.4, 10), va="bottom", fontsize=7, color="#b22222")
    return _save(plt, fig, "cancel", "corral cancel of a 1,000,000-line batch, no worker "
                 "running (s; command = whole CLI process, call = in-process)", "cancel.txt",
                 machine_of(text))


def plot_enqueue(plt: Any) -> Path:
    text = read("enqueue.txt")
    rows = enqueue_rows(text)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    labels = [variant for variant, *_ in rows]
    medians = [median for _, median, _, _ in rows]
    errors = [[m - low for _, m, low, _ in rows], [high - m for _, m, _, high in rows]]
    ax.barh(labels, medians, xerr=errors, color="#4c72b0", capsize=3)
    for index, value in enumerate(medians):
        ax.annotate(f"{value:,.0f}", (value, index), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("messages/s into a Redis queue (log scale; bars: min–max of 5 runs)")
    ax.invert_yaxis()
    return _save(plt, fig, "enqueue", "Enqueue of 20,000 jobs: median messages/s of 5 runs",
                 "enqueue.txt", machine_of(text) if "machine:" in text else "2 CPUs, AMD EPYC")


def plot_redis_bytes(plt: Any) -> Path:
    text = read("redis_bytes_store.txt")
    rows = redis_growth(text)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    bars = ax.bar([label for label, _ in rows], [mb for _, mb in rows], 0.5, color="#4c72b0")
    ax.bar_label(bars, fmt="+%.2f MB", fontsize=7)
    ax.axhline(32, color="#b22222", linestyle="--", linewidth=1)
    ax.annotate("target at 100,000 lines: ≤ 32 MB", (-0.3, 32), va="bottom", fontsize=7,
                color="#b22222")
    ax.set_ylim(0, 36)
    ax.set_xlabel("lines in the batch")
    ax.set_ylabel("peak growth of used_memory, MB")
    return _save(plt, fig, "redis-bytes", "Redis memory while a batch runs (2 workers, "
                 "CORRAL_QUEUE_DEPTH 5,000; the 1M run cut at 442,829 lines)",
                 "redis_bytes_store.txt", machine_of(text))


PLOTS = (plot_e2e, plot_e2e_store, plot_events, plot_worker_cpu, plot_intake, plot_cancel,
         plot_enqueue, plot_redis_bytes)


def main() -> int:
    try:
        plt = _pyplot()
    except ImportError:
        print("plot_benchmarks: needs matplotlib (pip install 'corral[plots]')", file=sys.stderr)
        return 2
    IMAGES.mkdir(parents=True, exist_ok=True)
    for plot in PLOTS:
        print(plot(plt).relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
