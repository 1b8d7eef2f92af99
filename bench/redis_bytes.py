"""Redis memory while a batch runs and after it ends: bounded by the lines in flight, not the batch.

One run per ``--lines`` size (one model, prompts of 120-360 characters, ``max_tokens`` 50),
each from an empty Redis database 9 (the only one flushed) and a fresh record store (a new
SQLite file, or ``--store-url`` with corral's tables dropped and made again), against one
simulator at 0 ms with limits far above the load. ``--processes`` corral
workers (``--pool``, ``--concurrency`` slots each) are consuming before ``corral submit``; the
submit queues the first ``CORRAL_QUEUE_DEPTH`` lines (corral's default unless
``--queue-depth``) and the rest wait in the store until the workers' feeding loops send them.

Redis's ``used_memory`` (INFO memory) is read once the workers are ready, just before the
submit; a thread reads it every ``--sample-s`` seconds from the submit until the batch has
ended (its peak), weighing database 9's own keys each time too; and it is read again once the
batch has ended in the store and nothing of it is queued, unacked or leased. Then every key of
database 9 is weighed with ``MEMORY USAGE key SAMPLES 0`` (exact, whole value) and listed;
"keys left" are those the batch left (absent before the submit). MB are 10^6 bytes. "run s"
runs from launching the submit to the batch's end in the store; lines/s is lines ended over it.

``used_memory`` is the whole server's: clients of other databases on the same Redis (tests)
move it too, so each run also prints the key counts other databases had while it ran, and the
peak of database 9's own keys. A run counts only if the batch ends ``completed`` with every
line completed and one record per line in the store; a run cut at ``--run-timeout-s`` is shown
as cut, with its peak so far and how many lines had ended, and no figures after the end.

Run it from the repository root with Redis at 127.0.0.1:6379::

    python -m bench.redis_bytes --lines 10000,100000
    python -m bench.redis_bytes --lines 100000 --store-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from bench.harness import MODEL, stop_all, submit, wait_for_end
from bench.overhead_stack import MAX_TOKENS, REDIS_URL, OverheadStack, RunInvalidError
from bench.report import cell, machine, machine_line, table
from bench.stores import describe
from bench.workload import iter_lines, write_jsonl
from corral.redis_keys import BatchKeys
from corral.settings import Settings

QUEUE = f"corral.{MODEL}"
TARGET_LINES = 100_000
TARGET_PEAK_GROWTH_MB = 32
SETTLE_TIMEOUT_S = 30.0
STALL_S = 60.0
MB = 1_000_000  # the target's unit


def weigh(client: redis.Redis) -> dict[str, int]:
    """Bytes of every key of the client's database (a key gone meanwhile weighs 0)."""
    return {str(key): int(client.memory_usage(key, samples=0) or 0)
            for key in client.scan_iter(count=1000)}


def used_memory(client: redis.Redis) -> int:
    """The server's ``used_memory``: every database, clients' buffers, scripts."""
    return int(client.info("memory")["used_memory"])


class Sampler(threading.Thread):
    """Reads ``used_memory``, database 9's key bytes and the other databases' key counts every
    ``interval_s`` until ``stop``; keeps the peaks and the ranges."""

    def __init__(self, redis_url: str, interval_s: float) -> None:
        super().__init__(name="redis-sampler", daemon=True)
        self._client = redis.Redis.from_url(redis_url, decode_responses=True)
        self._interval_s = interval_s
        self._done = threading.Event()
        self._database = f"db{self._client.connection_pool.connection_kwargs.get('db', 0)}"
        self.samples = 0
        self.peak_used = 0
        self.peak_own_bytes = 0
        self.others: dict[str, tuple[int, int]] = {}  # database -> (fewest, most) keys
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            while True:
                self._sample()
                if self._done.wait(self._interval_s):
                    break
            self._sample()
        except redis.RedisError as err:  # reported with the run, never silently
            self.error = err
        finally:
            self._client.close()

    def _sample(self) -> None:
        self.peak_used = max(self.peak_used, used_memory(self._client))
        self.peak_own_bytes = max(self.peak_own_bytes, sum(weigh(self._client).values()))
        keyspace = self._client.info("keyspace")
        for database in {*keyspace, *self.others} - {self._database}:
            keys = int(keyspace.get(database, {}).get("keys", 0))
            fewest, most = self.others.get(database, (keys, keys))
            self.others[database] = (min(fewest, keys), max(most, keys))
        self.samples += 1

    def stop(self) -> None:
        """Take one last sample and end."""
        self._done.set()
        self.join()


@dataclasses.dataclass(frozen=True)
class Run:
    """One batch's figures (bytes) and what it left in database 9."""

    lines: int
    ended: int  # lines with their record when the run ended (all of them unless cut)
    cut_s: float | None  # the run was cut after this long (--run-timeout-s), before its end
    before: int
    peak: int
    after: int
    peak_own_bytes: int
    left: dict[str, int]  # keys absent before the submit -> bytes after the end
    kept: dict[str, int]  # keys there before the submit too -> bytes after the end
    seconds: float
    samples: int
    others: dict[str, tuple[int, int]]
    batch_id: str


def wait_until_settled(client: redis.Redis, batch_id: str) -> None:
    """Until nothing of the batch is queued, unacked or leased (the ended lines' acks and
    clean-up follow their records by moments)."""
    keys = BatchKeys(batch_id)
    deadline_s = time.monotonic() + SETTLE_TIMEOUT_S
    while client.llen(QUEUE) or client.hlen("unacked") or next(
            client.scan_iter(keys.lease_pattern, count=1000), None):
        if time.monotonic() > deadline_s:
            raise RunInvalidError(f"the batch's queue, unacked jobs or leases were still there "
                                  f"{SETTLE_TIMEOUT_S:g} s after it ended")
        time.sleep(0.1)


def run_once(stack: OverheadStack, args: argparse.Namespace, lines: int, batch_file: Path,
             run_dir: Path) -> Run:
    """Workers up, read, submit, sample until the batch ends, read and weigh again."""
    stack.reset()
    workers = stack.start_corral_workers(args.processes, run_dir, pool=args.pool)
    try:
        existing = weigh(stack.redis)
        before = used_memory(stack.redis)
        sampler = Sampler(REDIS_URL, args.sample_s)
        sampler.start()
        started_s = time.monotonic()
        try:
            batch_id = submit(batch_file, stack.corral_env)
            batch, unfinished = wait_for_end(stack.store, batch_id,
                                             f"{stack.base_url}/_sim/stats",
                                             timeout_s=args.run_timeout_s or 120 + lines / 50,
                                             stall_s=STALL_S)
            seconds = time.monotonic() - started_s
            if unfinished != "timeout":
                wait_until_settled(stack.redis, batch_id)
        finally:
            sampler.stop()
        after = used_memory(stack.redis)
        weights = weigh(stack.redis)
    finally:
        stop_all(workers)
    counts = batch["request_counts"]
    records = stack.store.records.count_records(batch_id)
    cut = unfinished == "timeout" and batch["status"] == "in_progress" and not counts["failed"]
    if not cut and (unfinished or batch["status"] != "completed"
                    or counts["completed"] != lines or records != lines):
        raise RunInvalidError(f"batch {batch['status']} {unfinished}: {counts}, {records} "
                              "records")
    if sampler.error is not None:
        raise RunInvalidError(f"sampling Redis failed: {sampler.error}")
    return Run(lines=lines, ended=records, cut_s=seconds if cut else None, before=before,
               peak=max(sampler.peak_used, after), after=after,
               peak_own_bytes=sampler.peak_own_bytes,
               left={key: size for key, size in weights.items() if key not in existing},
               kept={key: size for key, size in weights.items() if key in existing},
               seconds=seconds, samples=sampler.samples, others=sampler.others,
               batch_id=batch_id)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.redis_bytes",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--lines", type=lambda text: [int(item) for item in text.split(",")],
        default=[10_000, 100_000], help="batch sizes, one run each (comma list)")
    add("--processes", type=int, default=2, help="corral worker processes")
    add("--pool", choices=("threads", "gevent"), default="threads")
    add("--concurrency", type=int, default=16, help="task slots per worker process")
    add("--queue-depth", type=int, default=None,
        help="CORRAL_QUEUE_DEPTH (default: corral's, "
             f"{Settings.model_fields['queue_depth'].default})")
    add("--sample-s", type=float, default=0.5, help="seconds between reads while it runs")
    add("--run-timeout-s", type=float, default=None,
        help="cut a run after this long and show its peak so far (default: 120 s + 50 lines "
             "a second)")
    add("--corral-env", action="append", default=[], metavar="CORRAL_X=VALUE",
        help="a setting for corral's processes (repeatable)")
    add("--store-url", default=None, metavar="URL",
        help="a record store to wipe before each run (default: a new SQLite file per run)")
    return parser


def mb(value: int) -> str:
    """Bytes as MB with two decimals, signed when it is a change."""
    return f"{value / MB:,.2f}"


def report(runs: Sequence[Run]) -> list[str]:
    """The table, the target, then each run's keys left and its neighbours on the server."""
    rows = [(f"{run.lines:,}" if run.cut_s is None
             else f"{run.lines:,} (cut: {run.ended:,} ended)",
             mb(run.before), f"{(run.peak - run.before) / MB:+,.2f}",
             "-" if run.cut_s else f"{(run.after - run.before) / MB:+,.2f}",
             "-" if run.cut_s else f"{len(run.left)} ({cell(sum(run.left.values()))} B)",
             mb(run.peak_own_bytes), f"{run.seconds:,.0f}", cell(run.ended / run.seconds))
            for run in runs]
    out = [table(("lines", "used_memory before MB", "peak growth MB", "growth after end MB",
                  "keys left (bytes)", "db 9 keys peak MB", "run s", "lines/s"), rows)]
    for run in runs:
        if run.lines == TARGET_LINES and run.cut_s is None:
            growth_mb = (run.peak - run.before) / MB
            verdict = "met" if growth_mb <= TARGET_PEAK_GROWTH_MB else "NOT met"
            out.append(f"target: Redis grows by at most {TARGET_PEAK_GROWTH_MB} MB while a "
                       f"{TARGET_LINES:,}-line batch runs: {verdict} ({growth_mb:+.2f} MB)")
    for run in runs:
        if run.cut_s is not None:
            out += ["", f"{run.lines:,} lines ({run.batch_id}): cut after {run.cut_s:,.0f} s "
                    f"with {run.ended:,} lines ended; {run.samples} samples; peak growth "
                    "until then as above"]
            continue
        out += ["", f"{run.lines:,} lines ({run.batch_id}, shown as BATCH): "
                f"{run.samples} samples; keys after the end, MEMORY USAGE bytes:"]
        listed = [(key.replace(run.batch_id, "BATCH"), "left by the batch", cell(size))
                  for key, size in sorted(run.left.items())]
        listed += [(key.replace(run.batch_id, "BATCH"), "there before the submit",
                    cell(size)) for key, size in sorted(run.kept.items())]
        out.append(table(("key", "since", "bytes"), listed or [("(none)", "", "")]))
        others = ", ".join(f"{database} {fewest:,}-{most:,} keys"
                           for database, (fewest, most) in sorted(run.others.items()))
        out.append(f"other databases on this Redis while it ran: {others or 'none'}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """One run per size; print the table and what each run left."""
    args = build_parser().parse_args(argv)
    info = machine()
    work_dir = Path(tempfile.mkdtemp(prefix="corral-redis-bytes-"))
    print(f"redis_bytes: logs and stores in {work_dir}", file=sys.stderr)
    extra_env = dict(setting.split("=", 1) for setting in args.corral_env)
    if args.queue_depth:
        extra_env["CORRAL_QUEUE_DEPTH"] = str(args.queue_depth)
    depth = extra_env.get("CORRAL_QUEUE_DEPTH", Settings.model_fields["queue_depth"].default)
    runs: list[Run] = []
    invalid: list[str] = []
    with OverheadStack(work_dir, concurrency=args.concurrency, rate_limiter="shared",
                       extra_env=extra_env, corral_pool=args.pool,
                       store_url=args.store_url) as stack:
        for lines in args.lines:
            batch_file = write_jsonl(iter_lines(lines, model=MODEL, min_chars=120,
                                                max_chars=360, max_tokens=MAX_TOKENS, seed=0),
                                     work_dir / f"batch-{lines}.jsonl")
            try:
                run = run_once(stack, args, lines, batch_file, work_dir / f"run-{lines}")
            except Exception as err:  # a broken run is reported, and the others go on
                invalid.append(f"{lines:,} lines: {type(err).__name__}: {err}")
                print(f"redis_bytes: {lines} lines INVALID: {err}", file=sys.stderr)
                continue
            finally:
                batch_file.unlink()
            runs.append(run)
            print(f"redis_bytes: {lines} lines: before {mb(run.before)} MB, peak "
                  f"{mb(run.peak)} MB, after {mb(run.after)} MB", file=sys.stderr)
        stack.reset()
    print(f"One simulator at 0 ms, limits far above the load; {args.processes} worker "
          f"process(es), {args.pool} x {args.concurrency}; CORRAL_QUEUE_DEPTH {depth}"
          + "".join(f", {name}={value}" for name, value in extra_env.items()
                    if name != "CORRAL_QUEUE_DEPTH")
          + f"; record store {describe(args.store_url)}; Redis used_memory (INFO memory), "
          f"sampled every {args.sample_s:g} s:")
    if runs:
        print("\n".join(report(runs)))
    for problem in invalid:
        print(f"INVALID: {problem}")
    print(machine_line(info, timed=False))
    return 0 if not invalid and runs else 1


if __name__ == "__main__":
    sys.exit(main())
