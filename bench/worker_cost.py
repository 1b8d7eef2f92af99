"""CPU per line: what the worker processes, Redis, the simulator and the whole machine spend.

Throughput at 0 ms swings by ±15% between runs on a shared 2-core machine; CPU time per line
(read from /proc when the workers are ready and when the last line has ended) is steadier, and
it is what sets a CPU-bound fleet's rate. For each ``--setups`` entry (pool:slots) and round,
corral runs ``--lines`` lines (submitted first, then ``--processes`` workers started; with
``--queue-depth`` below the batch, the workers also feed the rest from the record store) on a
fresh record store per run (``--store-url`` wiped, else a new SQLite file), and so does the
bare Celery task of ``bench.bare_task`` (the same POST, nothing stored); ``--also
NAME=PYTHON`` adds corral from another environment (``pip install .`` of another commit into
a venv: its submit and workers; it must keep its records in the store, CORRAL_STORE_URL, as
this one reads them there), to compare commits side by side::

    python -m bench.worker_cost --lines 10000 --runs 3 --setups threads:8,gevent:64 \\
        --also before=/tmp/before-venv/bin/python

Linux only (/proc). Redis must run on this machine at 127.0.0.1:6379 (its CPU is read too).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import bare_task
from bench.harness import MODEL, UPSTREAM, stop_all, submit, wait_for_end
from bench.overhead_runs import run_timeout_s
from bench.overhead_stack import MAX_TOKENS, OverheadStack, RunInvalidError
from bench.report import cell, machine, machine_line, median, table
from bench.stores import describe
from bench.workload import make_lines, write_jsonl

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STALL_S = 60.0


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far (every core; /proc/stat's user, nice,
    system, irq and softirq: not idle, iowait, or time the hypervisor stole)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / TICKS_PER_S


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


@dataclasses.dataclass(frozen=True)
class Cost:
    """One run: lines/s from the workers being ready to the last line, CPU ms per line (the
    workers', Redis's, the simulator's, and the whole machine's), and Redis's reads per line
    (socket reads that found commands: about the round trips every client made)."""

    rate: float
    worker_ms: float
    redis_ms: float
    simulator_ms: float
    machine_ms: float
    redis_reads: float


def measure(stack: OverheadStack, contender: str, pool: str, slots: int, lines: int,
            batch_file: Path, bodies: list[dict], run_dir: Path, python: str | None, *,
            processes: int = 1) -> Cost:
    """Queue every line, start ``processes`` worker processes (corral's from ``python``'s
    environment when given), and time them until the lines have ended."""
    stack.reset()
    redis_pid = int(stack.redis.info("server")["process_id"])
    batch_id = ""
    if contender != "bare":
        # Another environment's corral takes the batch in and feeds it too, from the run's
        # directory (this checkout's modules must not shadow its own).
        run_dir.mkdir(parents=True, exist_ok=True)
        batch_id = submit(batch_file, stack.corral_env, python=python,
                          cwd=run_dir if python else None)
        workers = stack.start_corral_workers(processes, run_dir, pool=pool,
                                             concurrency=slots, python=python)
    else:
        bare_task.enqueue(bodies)
        workers = stack.start_bare_workers(processes, pool=pool, concurrency=slots,
                                           run_dir=run_dir)
    worker_pids = [worker.process.pid for worker in workers]

    def cpu_now() -> list[float]:
        return [sum(cpu_s(pid) for pid in worker_pids), cpu_s(redis_pid),
                cpu_s(stack.simulator_pid), machine_cpu_s()]

    def reads_now() -> int:
        return int(stack.redis.info("stats")["total_reads_processed"])

    try:
        started_s, before, reads_before = time.monotonic(), cpu_now(), reads_now()
        if contender != "bare":
            batch, unfinished = wait_for_end(stack.store, batch_id, f"{stack.base_url}/_sim/stats",
                                             timeout_s=run_timeout_s(lines), stall_s=STALL_S)
            if unfinished or batch["request_counts"]["completed"] != lines:
                raise RunInvalidError(f"batch {batch['status']} {unfinished}: "
                                      f"{batch['request_counts']}")
        else:
            stack.wait_for_calls(lines, timeout_s=run_timeout_s(lines), stall_s=STALL_S)
        elapsed_s, after, reads_after = time.monotonic() - started_s, cpu_now(), reads_now()
    finally:
        stop_all(workers)
    spent_ms = [(end - start) * 1000 / lines for start, end in zip(before, after, strict=True)]
    return Cost(lines / elapsed_s, *spent_ms, redis_reads=(reads_after - reads_before) / lines)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.worker_cost",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--lines", type=int, default=10_000)
    add("--runs", type=int, default=3, help="rounds; the table shows medians")
    add("--setups", type=lambda text: [(item.split(":")[0], int(item.split(":")[1]))
                                       for item in text.split(",")],
        default=[("threads", 8), ("gevent", 64)], help="pool:slots list")
    add("--contenders", type=lambda text: text.split(","), default=["corral", "bare"],
        help="comma list of corral, bare")
    add("--processes", type=int, default=1, help="worker processes per run")
    add("--queue-depth", type=int, default=None,
        help="CORRAL_QUEUE_DEPTH (default: the whole batch, so the submit queues it all)")
    add("--also", action="append", default=[], metavar="NAME=PYTHON",
        help="another corral: that interpreter's environment's (repeatable)")
    add("--corral-env", action="append", default=["CORRAL_TASK_EVENTS=false"],
        metavar="CORRAL_X=VALUE", help="a setting for corral's processes (repeatable)")
    add("--store-url", default=None, metavar="URL",
        help="a record store to wipe before each run (default: a new SQLite file per run)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Alternate the contenders and setups ``--runs`` times; print medians per row."""
    args = build_parser().parse_args(argv)
    info = machine()
    work_dir = Path(tempfile.mkdtemp(prefix="corral-worker-cost-"))
    lines = make_lines(args.lines, model=MODEL, min_chars=120, max_chars=360,
                       max_tokens=MAX_TOKENS, seed=0)
    batch_file = write_jsonl(lines, work_dir / "batch.jsonl")
    bodies = [{**line["body"], "model": UPSTREAM} for line in lines]
    extra_env = dict(setting.split("=", 1) for setting in args.corral_env)
    extra_env.setdefault("CORRAL_QUEUE_DEPTH", str(args.queue_depth or args.lines))
    others = dict(item.split("=", 1) for item in args.also)
    contenders = [*others, *args.contenders]
    rows: dict[tuple[str, str, int], list[Cost]] = {}
    with OverheadStack(work_dir, concurrency=8, rate_limiter="shared",
                       extra_env=extra_env, store_url=args.store_url) as stack:
        for run in range(args.runs):
            for contender in contenders:
                for pool, slots in args.setups:
                    name = f"{contender}-{pool}-{slots}-run{run + 1}"
                    cost = measure(stack, contender, pool, slots, args.lines, batch_file, bodies,
                                   work_dir / name, others.get(contender),
                                   processes=args.processes)
                    print(f"worker_cost: {name}: {cost}", file=sys.stderr)
                    rows.setdefault((contender, pool, slots), []).append(cost)
    header = ("contender", "pool", "slots", "lines/s", "workers ms/line", "redis ms/line",
              "simulator ms/line", "machine ms/line", "redis reads/line")
    print(f"{args.lines} lines, {args.processes} worker process(es), simulator at 0 ms, "
          f"limits far above the load, {', '.join(args.corral_env)}, record store "
          f"{describe(args.store_url)}; "
          f"medians of {args.runs} run(s):")
    print(table(header, [
        (contender, pool, str(slots),
         cell(median([cost.rate for cost in costs])),
         cell(median([cost.worker_ms for cost in costs]), 3),
         cell(median([cost.redis_ms for cost in costs]), 3),
         cell(median([cost.simulator_ms for cost in costs]), 3),
         cell(median([cost.machine_ms for cost in costs]), 3),
         cell(median([cost.redis_reads for cost in costs]), 2))
        for (contender, pool, slots), costs in rows.items()]))
    print(machine_line(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
