"""Redis bytes per queued request and per stored result, by key kind (corral/redis_keys.py).

Each run starts from an empty Redis database 9 (the only one flushed) and one simulator at
0 ms with limits far above the load. ``corral submit`` queues ``--lines`` lines (prompts of
120-360 characters, ``max_tokens`` 50; ``CORRAL_QUEUE_DEPTH`` at least that, so no line waits
in the spool on disk) with no worker running; then every key of the database
is weighed with ``MEMORY USAGE key SAMPLES 0`` (exact, whole value): the batch's keys, the
broker's queue list ``corral.<model>`` holding one kombu message per job, kombu's bindings,
corral's fleet-wide keys. Total / lines = bytes per queued request. Then one worker runs the
batch to the end and is stopped, the keys are weighed again, and everything but what is left
of the broker's queue (the list, kombu's unacked hashes) / lines = bytes per stored result.

A run counts only if the batch expects every line after the submit and ends ``completed``
with one record per line. Sizes depend on the line count (Redis packs small hashes and lists
far tighter), so compare figures taken at the same ``--lines``.

Run it from the repository root with Redis at 127.0.0.1:6379::

    python -m bench.redis_bytes --lines 10000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import redis

from bench.harness import MODEL, stop_all, submit, wait_for_end
from bench.overhead_stack import MAX_TOKENS, OverheadStack, RunInvalidError
from bench.report import cell, machine, machine_line, median, table
from bench.workload import make_lines, write_jsonl
from corral.redis_keys import BatchKeys
from producer.batches import read_batch

QUEUE = f"corral.{MODEL}"
BROKER_KINDS = ("broker queue", "kombu unacked")  # what the "stored" phase leaves out


def key_kind(key: str, batch_id: str) -> str:
    """The kind of one key: the batch's named keys, the broker's, or corral's fleet-wide ones."""
    keys = BatchKeys(batch_id)
    named = {getattr(keys, name): f"batch {name}" for name in (
        "meta", "bodies", "order", "outcomes", "done", "ledger", "seq", "attempts",
        "inflight", "history")}
    if key in named:
        return named[key]
    if key.startswith(keys.lease_pattern.rstrip("*")):
        return "batch lease"
    if key.startswith(keys.meta + ":"):
        return "batch " + key.removeprefix(keys.meta + ":").split(":")[0]
    if key == QUEUE:
        return "broker queue"
    if key.startswith("unacked"):
        return "kombu unacked"
    if key.startswith("_kombu."):
        return "kombu bindings"
    if key.startswith("corral:"):
        return "fleet " + key.split(":")[1]
    return "other " + key


def weigh(client: redis.Redis, batch_id: str) -> dict[str, int]:
    """Bytes of every key of the database, summed by kind."""
    sizes: dict[str, int] = defaultdict(int)
    for key in client.scan_iter(count=1000):
        used = client.memory_usage(key, samples=0)
        sizes[key_kind(str(key), batch_id)] += int(used or 0)
    return dict(sizes)


def run_once(stack: OverheadStack, batch_file: Path, lines: int, run_dir: Path) \
        -> tuple[dict[str, int], dict[str, int], int]:
    """Weigh after the submit and after the run; also how many jobs the queue held."""
    stack.reset()
    batch_id = submit(batch_file, stack.corral_env)
    submitted = read_batch(stack.redis, batch_id)
    if submitted["request_counts"]["total"] != lines or submitted["status"] != "in_progress":
        raise RunInvalidError(f"after submit: {submitted['status']}, "
                              f"{submitted['request_counts']} for {lines} lines")
    on_queue = int(stack.redis.llen(QUEUE))
    queued = weigh(stack.redis, batch_id)
    workers = stack.start_corral_workers(1, run_dir)
    try:
        batch, unfinished = wait_for_end(stack.redis, batch_id, f"{stack.base_url}/_sim/stats",
                                         timeout_s=60 + lines / 20, stall_s=30)
    finally:
        stop_all(workers)
    counts = batch["request_counts"]
    records = stack.redis.hlen(BatchKeys(batch_id).outcomes)
    if unfinished or batch["status"] != "completed" or counts["completed"] != lines \
            or records != lines:
        raise RunInvalidError(f"batch {batch['status']} {unfinished}: {counts}, {records} "
                              "records")
    stored = {kind: size for kind, size in weigh(stack.redis, batch_id).items()
              if kind not in BROKER_KINDS}
    return queued, stored, on_queue


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.redis_bytes",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--lines", type=int, default=10_000, help="lines in the batch")
    add("--runs", type=int, default=3, help="runs; the table shows medians")
    add("--concurrency", type=int, default=32, help="threads of the one worker")
    add("--queue-depth", type=int, default=None,
        help="CORRAL_QUEUE_DEPTH (default: --lines, so every line is queued; with less, the "
             "rest waits in the submit's spool on disk)")
    add("--json-out", type=Path, default=None, help="also write the figures as JSON here")
    return parser


def per_line(runs: Sequence[dict[str, int]], lines: int) -> dict[str, float | None]:
    """Median bytes per line of each kind over the runs (a kind absent from a run is 0)."""
    kinds = sorted({kind for sizes in runs for kind in sizes})
    medians = {kind: median([sizes.get(kind, 0) / lines for sizes in runs]) for kind in kinds}
    medians["total"] = median([sum(sizes.values()) / lines for sizes in runs])
    return medians


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``--runs`` times; print bytes per queued request and per stored result by kind."""
    args = build_parser().parse_args(argv)
    info = machine()
    work_dir = Path(tempfile.mkdtemp(prefix="corral-redis-bytes-"))
    batch_file = write_jsonl(make_lines(args.lines, model=MODEL, min_chars=120, max_chars=360,
                                        max_tokens=MAX_TOKENS, seed=0),
                             work_dir / "batch.jsonl")
    queued_runs: list[dict[str, int]] = []
    stored_runs: list[dict[str, int]] = []
    on_queue: list[float | None] = []
    invalid: list[str] = []
    depth = {"CORRAL_QUEUE_DEPTH": str(args.queue_depth or args.lines)}
    with OverheadStack(work_dir, concurrency=args.concurrency, rate_limiter="shared",
                       extra_env=depth) as stack:
        for run in range(args.runs):
            try:
                queued, stored, jobs = run_once(stack, batch_file, args.lines,
                                                work_dir / f"run{run + 1}")
            except Exception as err:  # a broken run is reported, and the others go on
                invalid.append(f"run {run + 1}: {type(err).__name__}: {err}")
                print(f"redis_bytes: run {run + 1} INVALID: {err}", file=sys.stderr)
                continue
            queued_runs.append(queued)
            stored_runs.append(stored)
            on_queue.append(float(jobs))
        stack.reset()
    queued_per, stored_per = per_line(queued_runs, args.lines), per_line(stored_runs, args.lines)
    kinds = [kind for kind in sorted(set(queued_per) | set(stored_per)) if kind != "total"]
    rows = [(kind, cell(queued_per.get(kind), 1), cell(stored_per.get(kind), 1))
            for kind in [*kinds, "total"]]
    print(f"{args.lines} lines; medians of {len(queued_runs)} valid run(s) of {args.runs}; "
          f"jobs on the broker queue after submit: {cell(median(on_queue))}; "
          "Redis MEMORY USAGE (SAMPLES 0) bytes per line:")
    print(table(("key kind", "queued/request", "stored/result"), rows))
    for problem in invalid:
        print(f"INVALID (not in the medians): {problem}")
    print(machine_line(info, timed=False))
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "machine": info, "lines": args.lines, "runs": args.runs, "invalid": invalid,
            "queued_bytes_per_request": queued_per, "stored_bytes_per_result": stored_per,
            "jobs_on_queue_after_submit": median(on_queue),
            "raw": {"queued": queued_runs, "stored": stored_runs}}, indent=2))
    return 0 if not invalid and queued_runs else 1


if __name__ == "__main__":
    sys.exit(main())
