"""How close corral's rate limiting gets to a provider's limits, shared fleet-wide vs per worker.

One batch (``--requests`` lines, one model, prompts of 120-360 characters from a fixed seed,
``max_tokens`` 50, so both RPM and TPM bind) runs against the bundled simulator, once per
combination of worker-side limiting mode (``CORRAL_RATE_LIMITER`` on the workers: ``shared``,
``local``, ``off``), simulator limiter kind (``bucket``, ``window``) and number of worker
processes, each with ``--concurrency`` task slots. Each run gets a fresh simulator, fresh
workers, a fresh record store (a new SQLite file in its directory, or ``--store-url`` wiped)
and an empty Redis database 9 (only that database is ever flushed). Per run it prints:

- efficiency = (least time the simulator's limiter needs to admit the whole batch + median
  latency) / (first request -> last response, timed at the simulator); the least time comes
  from replaying the batch's charges through the simulator's own limiter on a virtual clock;
- the 429s the simulator answered, as a share of all chat calls and of the batch's lines;
- lines lost (no terminal record when the run ended) and lines failed (an error record).

A run whose batch does not end is cut at ``--run-timeout-s`` or when nothing moves for two
periods plus the longest backoff; its row says "timeout" or "stalled" and has no efficiency.

``--rpm`` and ``--tpm`` are per 60 s; each period of ``--period-s`` allows its share of them, so
``--requests 500 --period-s 10`` is the full benchmark's shape six times faster.

Run it from the repository root with Redis at 127.0.0.1:6379::

    python -m bench.rate_limits                       # the full matrix: about half an hour
    python -m bench.rate_limits --requests 500 --period-s 10 --processes 1,2 --modes shared
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.harness import MODEL, RunCounts, Scenario, run_once
from bench.least_time import least_admission_time_s
from bench.workload import charged_tokens, make_lines, write_jsonl
from corral.errors import CorralError
from simulator.config import LIMITER_KINDS

REDIS_URL = "redis://127.0.0.1:6379/9"  # the benchmarks' database: only it is flushed
MODES = ("shared", "local", "off")
PROMPT_CHARS = (120, 360)
SEED = 0
MINUTE_S = 60.0

COLUMNS = (  # header, width
    ("mode", 6), ("limiter", 7), ("procs", 5), ("efficiency", 10), ("least s", 8),
    ("wall s", 8), ("calls", 6), ("429s", 6), ("429/calls", 9), ("429/lines", 9),
    ("lost", 5), ("failed", 6), ("note", 7),
)


@dataclasses.dataclass(frozen=True)
class RunRow:
    """One run's line in the table (and in ``--json-out``)."""

    mode: str
    limiter: str
    processes: int
    least_s: float
    wall_s: float | None
    efficiency: float | None
    calls: int | None
    rate_limited: int | None
    share_of_calls: float | None
    share_of_lines: float | None
    lost: int | None
    failed: int | None
    note: str


def _csv(convert: Callable[[str], Any], allowed: Sequence[str] | None = None) \
        -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [convert(item.strip()) for item in text.split(",") if item.strip()]
        bad = [item for item in items if allowed is not None and item not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"expected a comma list of {allowed or 'values'}")
        return items
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.rate_limits",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--processes", type=_csv(int), default=[1, 2, 4], help="worker process counts")
    add("--limiters", type=_csv(str, LIMITER_KINDS), default=list(LIMITER_KINDS))
    add("--modes", type=_csv(str, MODES), default=["shared", "local"],
        help="CORRAL_RATE_LIMITER values for the workers")
    add("--requests", type=int, default=3000, help="lines in the batch")
    add("--period-s", type=float, default=60.0, help="the limiter period, simulator and corral")
    add("--rpm", type=int, default=1200, help="requests per 60 s")
    add("--tpm", type=int, default=120_000, help="tokens per 60 s")
    add("--max-tokens", type=int, default=50)
    add("--concurrency", type=int, default=64, help="task slots per worker process")
    add("--latency-ms", type=float, default=300.0)
    add("--jitter-ms", type=float, default=50.0)
    add("--run-timeout-s", type=float, default=None,
        help="bound on one run's batch (default: 4 x least time + 60 s)")
    add("--store-url", default=None, metavar="URL",
        help="a record store to wipe before each run (default: a new SQLite file per run)")
    add("--json-out", type=Path, default=None, help="also write the rows as JSON here")
    return parser


def per_period(per_minute: int, period_s: float) -> int:
    """The share of a per-60-s limit that one period allows (at least 1)."""
    return max(1, round(per_minute * period_s / MINUTE_S))


def make_row(mode: str, limiter: str, processes: int, least_s: float, median_latency_s: float,
             counts: RunCounts | None, note: str = "") -> RunRow:
    """A table row from a run's counts (None when the run failed before counting)."""
    if counts is None:
        return RunRow(mode, limiter, processes, least_s, None, None, None, None, None, None,
                      None, None, note or "error")
    wall_s = counts.wall_s
    # A batch that did not end has no end-to-end time to compare with.
    ended = not counts.unfinished
    return RunRow(
        mode, limiter, processes, least_s, wall_s,
        efficiency=(least_s + median_latency_s) / wall_s if wall_s and ended else None,
        calls=counts.calls, rate_limited=counts.rate_limited,
        share_of_calls=counts.rate_limited / counts.calls if counts.calls else None,
        share_of_lines=counts.rate_limited / counts.lines if counts.lines else None,
        lost=counts.lines - counts.terminal, failed=counts.failed,
        note=note or counts.unfinished)


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "ratio":
        return f"{value:.4f}"
    if kind == "share":
        return f"{value:.2%}"
    if kind == "seconds":
        return f"{value:.1f}"
    return str(value)


def format_row(row: RunRow) -> str:
    """One aligned table line."""
    cells = (row.mode, row.limiter, _cell(row.processes, ""), _cell(row.efficiency, "ratio"),
             _cell(row.least_s, "seconds"), _cell(row.wall_s, "seconds"), _cell(row.calls, ""),
             _cell(row.rate_limited, ""), _cell(row.share_of_calls, "share"),
             _cell(row.share_of_lines, "share"), _cell(row.lost, ""), _cell(row.failed, ""),
             row.note)
    return _join(cells)


def _join(cells: Sequence[str]) -> str:
    return "  ".join(cell.rjust(width) if index > 1 else cell.ljust(width)
                     for index, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True)))


def table_header() -> str:
    """The header line and its rule."""
    header = _join([name for name, _ in COLUMNS])
    return f"{header}\n{'-' * len(header)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run every (mode, limiter, processes) combination and print the table."""
    args = build_parser().parse_args(argv)
    rpm, tpm = per_period(args.rpm, args.period_s), per_period(args.tpm, args.period_s)
    lines = make_lines(args.requests, model=MODEL, min_chars=PROMPT_CHARS[0],
                       max_chars=PROMPT_CHARS[1], max_tokens=args.max_tokens, seed=SEED)
    charges = charged_tokens(lines)
    work_dir = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    batch_file = write_jsonl(lines, work_dir / "batch.jsonl")
    print(f"bench: {args.requests} lines, {sum(charges):,} tokens charged; per {args.period_s:g} s"
          f" period: {rpm} requests, {tpm:,} tokens; logs in {work_dir}", file=sys.stderr)
    rows: list[RunRow] = []
    print(table_header(), flush=True)
    for mode in args.modes:
        for limiter in args.limiters:
            least_s = least_admission_time_s(charges, kind=limiter, rpm=rpm, tpm=tpm,
                                             period_s=args.period_s)
            scenario = Scenario(
                redis_url=REDIS_URL, rpm=rpm, tpm=tpm, period_s=args.period_s,
                max_tokens=args.max_tokens, concurrency=args.concurrency,
                latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
                run_timeout_s=args.run_timeout_s or 4 * least_s + 60, store_url=args.store_url)
            for processes in args.processes:
                row = _run_row(scenario, mode, limiter, processes, least_s, batch_file,
                               work_dir / f"{mode}-{limiter}-{processes}")
                rows.append(row)
                print(format_row(row), flush=True)
    print(f"\n{table_header()}")
    print("\n".join(format_row(row) for row in rows), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    redis.Redis.from_url(REDIS_URL).flushdb()
    return 0


def _run_row(scenario: Scenario, mode: str, limiter: str, processes: int, least_s: float,
             batch_file: Path, run_dir: Path) -> RunRow:
    """Run once; a run that breaks is reported on stderr and as an "error" row."""
    median_latency_s = scenario.latency_ms / 1000  # jitter is uniform and symmetric
    try:
        counts = run_once(scenario, mode=mode, limiter=limiter, processes=processes,
                          batch_file=batch_file, run_dir=run_dir)
    except (CorralError, OSError, RuntimeError, subprocess.SubprocessError, redis.RedisError,
            httpx.HTTPError) as err:
        print(f"bench: run {mode}/{limiter}/{processes} failed: {err}", file=sys.stderr)
        return make_row(mode, limiter, processes, least_s, median_latency_s, None)
    return make_row(mode, limiter, processes, least_s, median_latency_s, counts)


if __name__ == "__main__":
    sys.exit(main())
