"""Reads the tables the benchmarks printed into bench/results/ back as rows (for the plots).

The tables are read as printed, with nothing heavy imported: scripts/plot_benchmarks.py draws
them, and a test checks the parsing without matplotlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SLOTS_NO_CAP = 0  # the cookbook loop's "no cap" in the slots column

E2E_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\d+|no cap)\s+([\d,]+|-)\s+([\d,]+|-)\s+([\d,]+|-)"
                     r"\s+(\d+)/(\d+)\s+(\d+)\s*$")
COST_ROW = re.compile(r"^(\S+)\s+(threads|gevent)\s+(\d+)\s+([\d,]+)" + r"\s+([\d.]+)" * 5
                      + r"\s*$")
INTAKE_ROW = re.compile(r"^(.+?)\s+(sqlite|postgresql|-)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)"
                        r"\s+([\d.]+)\s+([\d,]+)\s+(\d+)\s*$")
CANCEL_ROW = re.compile(r"^(sqlite|postgresql)\s+(command|call)\s+([\d.]+)\s+([\d,]+)"
                        r"\s+([\d,]+)\s+([\d.]+)\s+(\w+)\s*$")
ENQUEUE_ROW = re.compile(r"^(\(\w+'?\) .+?)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+(\d+)/(\d+)\s*$")
REDIS_ROW = re.compile(r"^([\d,]+)( \(cut: [\d,]+ ended\))?\s+([\d.]+)\s+\+([\d.]+)\s+")
MACHINE = re.compile(r"^machine: (\d+) CPUs, ([^,]+),")
COMMIT = re.compile(r"\b([0-9a-f]{7})\b")


def number(text: str) -> float | None:
    """A printed figure ("1,074", "0.38") as a float; "-" as None."""
    return None if text == "-" else float(text.replace(",", ""))


def machine_of(text: str) -> str:
    """The machine the first `machine:` line names, e.g. "2 CPUs, AMD EPYC"."""
    for line in text.splitlines():
        found = MACHINE.match(line)
        if found:
            model = found[2].replace("(R)", "").removesuffix(" Processor")
            return f"{found[1]} CPUs, {model}"
    return "2 CPUs"


def row_groups(text: str, row: re.Pattern[str]) -> list[list[re.Match[str]]]:
    """The file's tables in order: each a run of consecutive lines matching `row`."""
    tables: list[list[re.Match[str]]] = []
    previous = False
    for line in text.splitlines():
        found = row.match(line)
        if found and not previous:
            tables.append([])
        if found:
            tables[-1].append(found)
        previous = found is not None
    return tables


@dataclass(frozen=True)
class E2ERow:
    """One contender of bench.end_to_end's table (lines/s; None where it printed "-")."""

    contender: str
    procs: int
    slots: int
    e2e: float | None
    served: float | None
    enqueue: float | None


def e2e_tables(text: str) -> list[list[E2ERow]]:
    """Every bench.end_to_end table in a file, in order."""
    return [[E2ERow(m[1], int(m[2]), SLOTS_NO_CAP if m[3] == "no cap" else int(m[3]),
                    number(m[4]), number(m[5]), number(m[6])) for m in table]
            for table in row_groups(text, E2E_ROW)]


def e2e_store_sections(text: str) -> list[tuple[str, list[E2ERow]]]:
    """e2e_store.txt's rounds as ("<store> @ <commit>", table), in the order they ran; a
    section whose title names no commit ran at the one before it ("the same commit")."""
    parts = re.split(r"^== (.+?) ==$", text, flags=re.M)
    sections: list[tuple[str, list[E2ERow]]] = []
    commit = "?"
    for title, body in zip(parts[1::2], parts[2::2], strict=True):
        found = COMMIT.search(title)
        commit = found[1] if found else commit
        store = ("PostgreSQL" if "PostgreSQL" in title else "SQLite" if "SQLite" in title
                 else "records in Redis")
        tables = e2e_tables(body)
        if tables:
            sections.append((f"{store} @ {commit}", tables[0]))
    return sections


@dataclass(frozen=True)
class CostRow:
    """One contender of bench.worker_cost's table: lines/s and CPU ms per line."""

    contender: str
    pool: str
    slots: int
    rate: float
    workers_ms: float
    redis_ms: float
    simulator_ms: float
    machine_ms: float
    redis_reads: float


def cost_tables(text: str) -> list[list[CostRow]]:
    """Every bench.worker_cost table with the machine columns, in order."""
    return [[CostRow(m[1], m[2], int(m[3]), number(m[4]) or 0.0,
                     *(float(m[i]) for i in range(5, 10))) for m in table]
            for table in row_groups(text, COST_ROW)]


@dataclass(frozen=True)
class IntakeRow:
    """One case of bench.intake_store's summary: lines/s and summed peak RSS."""

    case: str
    database: str
    median_s: float
    rate: float
    peak_rss_mb: int


def intake_tables(text: str) -> list[list[IntakeRow]]:
    """bench.intake_store's summary tables, newest first as the file keeps them."""
    return [[IntakeRow(m[1].strip(), m[2], float(m[6]), number(m[7]) or 0.0, int(m[8]))
             for m in table] for table in row_groups(text, INTAKE_ROW)]


def cancel_tables(text: str) -> list[list[tuple[str, str, float]]]:
    """bench.cancel's tables as (store, what was timed, cancel s) rows, newest first."""
    return [[(m[1], m[2], float(m[6])) for m in table]
            for table in row_groups(text, CANCEL_ROW)]


def enqueue_rows(text: str) -> list[tuple[str, float, float, float]]:
    """bench.enqueue's first table: (variant, median, min, max) messages/s."""
    return [(m[1].strip(), number(m[2]) or 0.0, number(m[3]) or 0.0, number(m[4]) or 0.0)
            for m in row_groups(text, ENQUEUE_ROW)[0]]


def redis_growth(text: str) -> list[tuple[str, float]]:
    """bench.redis_bytes on the store: (lines, peak growth of used_memory in MB)."""
    return [(m[1] + (" (cut)" if m[2] else ""), float(m[4]))
            for m in row_groups(text, REDIS_ROW)[0]]


def read(name: str) -> str:
    return (RESULTS / name).read_text(encoding="utf-8")
