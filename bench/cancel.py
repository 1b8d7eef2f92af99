"""`corral cancel` of a 1,000,000-line batch: the whole command, and lifecycle.cancel alone.

For each ``--store-url`` (``sqlite``: a new SQLite file per batch in the temp directory; any
other URL has corral's tables dropped and made again before each batch) and each of ``--runs``
rounds, two batches are cancelled, each from an empty Redis database 9 (the only one flushed)
and a fresh store, with no worker running. ``corral submit`` takes the ``--lines`` file in (one
model, prompts of 40-120 characters): the first ``CORRAL_QUEUE_DEPTH`` lines are queued, the
rest wait in the store. Then:

- ``command``: ``corral cancel BATCH`` as a user runs it, timed from launch to exit (Python's
  start-up and corral's imports included);
- ``call``: on the second batch, ``producer.lifecycle.cancel`` in this process, its Redis
  client, store, Celery app and feeder made beforehand, timed around the call alone.

A cancel ends every line never started (``corral.batch_end.end_unstarted``, one transaction:
one INSERT for the lines still in the store, and one per 500 of the queued lines no worker
took). With no worker running that is every line, so a cancel counts only if the lines it
reports, the store's failed count and its records all equal ``--lines``, the batch ends
``cancelled``, and Redis holds no request of the batch any more.

    python -m bench.cancel
    python -m bench.cancel --store-url sqlite \\
        --store-url 'postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dcorral_bench'
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from bench.harness import CONFIG_TEMPLATE, KEY_ENV, MODEL, UPSTREAM
from bench.overhead_stack import REDIS_URL
from bench.report import machine, machine_line, table
from bench.stores import describe, fresh_store
from bench.workload import iter_lines, write_jsonl
from corral.redis_keys import BatchKeys
from corral.settings import Settings, get_settings
from corral.store import Store
from producer import lifecycle
from producer.batches import read_batch
from producer.session import Session

SQLITE = "sqlite"
# `corral cancel`'s stderr: "corral: BATCH STATUS: N lines cancelled without a provider call"
CANCEL_SAYS = re.compile(r": (\d+) lines cancelled")
QUEUE = f"corral.{MODEL}"
TARGET_S = 10.0
CLI_TIMEOUT_S = 3600.0
MODES = ("command", "call")


@dataclasses.dataclass(frozen=True)
class Cancelled:
    """One cancelled batch: how long its submit and its cancel took, and what it ended."""

    store: str
    mode: str
    submit_s: float
    cancel_s: float
    queued: int
    ended: int
    status: str


def own_url(store_url: str) -> str | None:
    """``fresh_store``'s argument for a ``--store-url``: None for a new SQLite file."""
    return None if store_url == SQLITE else store_url


def corral_env(config: Path, store_url: str) -> dict[str, str]:
    """Ours without CORRAL_*, then the run's Redis, config and store."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CORRAL_")}
    env.update({"CORRAL_REDIS_URL": REDIS_URL, "CORRAL_CONFIG": str(config),
                "CORRAL_STORE_URL": store_url, KEY_ENV: "unused"})
    return env


def submit(batch_file: Path, env: dict[str, str]) -> tuple[str, float]:
    """``corral submit``; returns the batch id and its seconds."""
    started_s = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "producer", "submit", str(batch_file)],
                          env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"submit exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip(), time.perf_counter() - started_s


def cancel_command(batch_id: str, env: dict[str, str]) -> tuple[int, float]:
    """``corral cancel BATCH``; returns the lines it says it ended and its seconds."""
    started_s = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "producer", "cancel", batch_id], env=env,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
    elapsed_s = time.perf_counter() - started_s
    if done.returncode != 0:
        raise RuntimeError(f"cancel exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    said = CANCEL_SAYS.search(done.stderr)
    if said is None:
        raise RuntimeError(f"cancel said {done.stderr.strip()!r}")
    return int(said.group(1)), elapsed_s


def cancel_call(batch_id: str, env: dict[str, str]) -> tuple[int, float]:
    """``lifecycle.cancel`` in this process, everything it needs made first."""
    saved = dict(os.environ)
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        session = Session(env["CORRAL_CONFIG"])
        client, store = session.redis, session.store
        feeder = session.feeder(batch_id)  # makes the Celery app too
        read_batch(store, batch_id)  # the store's engine connected, its schema checked
        client.ping()
        started_s = time.perf_counter()
        ended = lifecycle.cancel(client, store, feeder, batch_id)
        elapsed_s = time.perf_counter() - started_s
        session.app.close()
        client.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
    return ended, elapsed_s


def check(store: Store, client: redis.Redis, batch_id: str, lines: int, ended: int) -> str:
    """The batch's status, once the cancel is checked against the store and Redis.

    Raises:
        RuntimeError: the cancel did not end every line (none was started).
    """
    batch = read_batch(store, batch_id)
    failed = batch["request_counts"]["failed"]
    records = store.records.count_records(batch_id)
    requests = client.hlen(BatchKeys(batch_id).bodies)
    if not ended == failed == records == lines or requests or batch["status"] != "cancelled":
        raise RuntimeError(f"cancel ended {ended}, failed {failed}, records {records}, for "
                           f"{lines} lines; {requests} requests left in Redis; batch "
                           f"{batch['status']}")
    return str(batch["status"])


def run_once(store_url: str, mode: str, batch_file: Path, config: Path, lines: int,
             run_dir: Path) -> Cancelled:
    """Submit the file into a fresh store and empty Redis, then cancel it one way."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.flushdb()  # only the benchmarks' database
        store = fresh_store(run_dir, own_url(store_url))
        env = corral_env(config, store.url)
        batch_id, submit_s = submit(batch_file, env)
        queued = int(client.llen(QUEUE))
        ended, cancel_s = (cancel_command if mode == "command" else cancel_call)(batch_id, env)
        status = check(store, client, batch_id, lines, ended)
        client.flushdb()
    finally:
        client.close()
    return Cancelled(store.engine.dialect.name, mode, submit_s, cancel_s, queued, ended,
                     status)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.cancel",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--lines", type=int, default=1_000_000, help="lines in the batch")
    add("--runs", type=int, default=1, help="rounds (each cancels one batch each way)")
    add("--store-url", action="append", default=None, metavar="URL",
        help=f"a store to run on (repeatable): {SQLITE!r} for a new SQLite file per batch, or "
             "a URL whose corral tables may be wiped (default: sqlite)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Cancel batches on each store, each way; print one row per cancel."""
    args = build_parser().parse_args(argv)
    info = machine()
    store_urls = args.store_url or [SQLITE]
    work_dir = Path(tempfile.mkdtemp(prefix="corral-cancel-"))
    print(f"cancel: work in {work_dir}", file=sys.stderr)
    config = work_dir / "corral.toml"
    config.write_text(CONFIG_TEMPLATE.format(
        base_url="http://127.0.0.1:9", key_env=KEY_ENV, model=MODEL, upstream=UPSTREAM,
        rpm=10_000, tpm=10_000_000, max_tokens=50))
    batch_file = write_jsonl(iter_lines(args.lines, model=MODEL, min_chars=40, max_chars=120,
                                        max_tokens=50, seed=0), work_dir / "batch.jsonl")
    results: list[Cancelled] = []
    failures: list[str] = []
    for run in range(args.runs):
        for store_url in store_urls:
            for mode in MODES:
                name = f"run{run + 1}-{mode}-{len(results) + len(failures)}"
                try:
                    done = run_once(store_url, mode, batch_file, config, args.lines,
                                    work_dir / name)
                except Exception as err:  # a broken run is reported, and the others go on
                    failures.append(f"{name} on {describe(own_url(store_url))}: "
                                    f"{type(err).__name__}: {err}")
                    print(f"cancel: {failures[-1]}", file=sys.stderr)
                    continue
                finally:
                    for stale in (work_dir / name / "store").glob("corral.db*"):
                        stale.unlink()  # a million lines of SQLite: gigabytes
                results.append(done)
                print(f"cancel: {name}: {done}", file=sys.stderr)
    for store_url in store_urls:
        if store_url != SQLITE:
            fresh_store(work_dir, store_url)  # leave its tables empty
    batch_file.unlink()
    depth = Settings.model_fields["queue_depth"].default
    print(f"{args.lines:,}-line batch, one model, CORRAL_QUEUE_DEPTH {depth}, no worker "
          f"running; stores: {'; '.join(describe(own_url(url)) for url in store_urls)}")
    print(table(("store", "cancel timed", "submit s", "queued", "ended by cancel", "cancel s",
                 "status after"),
                [(done.store, done.mode, f"{done.submit_s:,.1f}", f"{done.queued:,}",
                  f"{done.ended:,}", f"{done.cancel_s:,.2f}", done.status)
                 for done in results]))
    slowest = max((done.cancel_s for done in results), default=None)
    if slowest is not None:
        print(f"target: cancel under {TARGET_S:g} s: "
              f"{'met' if slowest < TARGET_S else 'NOT met'} (slowest {slowest:.2f} s)")
    for failure in failures:
        print(f"FAILED: {failure}")
    print(machine_line(info))
    return 0 if results and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
