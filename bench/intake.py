"""Benchmark 1: `corral submit` validating and accepting 100k and 1M lines — lines/s, peak RSS.

Each run is the real CLI in a child process (no worker running): one streaming pass that
validates and routes every line into the record store, in one transaction, then the batch opens
and the first share of each model's queue (up to ``CORRAL_QUEUE_DEPTH`` lines a model) is sent
from the store; the rest waits there. Every run starts from an empty Redis database 9 (the only
one flushed) and a fresh record store: a new SQLite file in the run's temp directory, or
``--store-url`` with corral's tables dropped and made again. Peak RSS is the child's (getrusage
of the waited process); a PostgreSQL server's own work is in neither figure.

    python -m bench.intake --sizes 100000,1000000 --runs 3
    python -m bench.intake --sizes 100000 --store-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.report import machine, machine_line
from bench.stores import describe, fresh_store
from corral.config import example_config_text
from corral.store import Store
from producer.batches import read_batch

REDIS_URL = "redis://127.0.0.1:6379/9"  # the benchmarks' database: only it is flushed
TARGET_LINES_PER_S = 20_000
TARGET_RSS_MB_1M = 250
TEXTS = ("Classify the sentiment of this review: the product arrived late but works well.",
         "Summarize: quarterly revenue grew 12% on strong cloud demand.",
         "Translate to French: where is the train station?",
         "Prove that the sum of two even numbers is even.",
         "Extract the company names from: Acme and Globex signed a deal.")
MODELS = ("auto", "auto", "gpt-5.4-mini", "deepseek-v3.2", "auto")


def write_batch(path: Path, lines: int) -> None:
    """A batch of short chat requests, explicit models and `auto` mixed."""
    with open(path, "w") as handle:
        for i in range(lines):
            handle.write(json.dumps({
                "custom_id": f"req-{i:07d}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": MODELS[i % 5], "max_tokens": 64, "messages": [
                    {"role": "user", "content": f"{TEXTS[i % 5]} #{i}"}]}}) + "\n")


def submit_once(path: Path, env: dict[str, str], store: Store, lines: int,
                logs: Path) -> tuple[float, float]:
    """One `corral submit` into `store`; returns (seconds, peak RSS in MB) once the batch it
    opened holds every line."""
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(logs / "submit.out", "wb") as out, open(logs / "submit.err", "wb") as err:
        child = subprocess.Popen([sys.executable, "-m", "producer", "submit", str(path)],
                                 env={**env, "CORRAL_STORE_URL": store.url}, stdout=out,
                                 stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, for its rusage
    if child.returncode != 0:
        raise SystemExit(f"submit exited {child.returncode}: "
                         f"{(logs / 'submit.err').read_text(errors='replace')[-2000:]}")
    batch_id = (logs / "submit.out").read_text().strip().splitlines()[-1]
    counts = read_batch(store, batch_id)["request_counts"]
    if counts["total"] != lines:
        raise SystemExit(f"batch {batch_id} holds {counts} for {lines} lines")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--store-url", default=None, metavar="URL",
                        help="a record store to wipe before each run (default: a new SQLite "
                             "file per run in the temp directory)")
    args = parser.parse_args()
    info = machine()
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="corral-intake-") as tmp:
        config = Path(tmp) / "corral.toml"
        config.write_text(example_config_text())
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")},
               "CORRAL_REDIS_URL": args.redis_url, "CORRAL_CONFIG": str(config)}
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"batch-{size}.jsonl"
            write_batch(path, size)
            runs = []
            for run in range(args.runs):
                client.flushdb()
                run_dir = Path(tmp) / f"run-{size}-{run + 1}"
                store = fresh_store(run_dir, args.store_url)
                runs.append(submit_once(path, env, store, size, run_dir))
            seconds = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            rows.append((size, path.stat().st_size / 1e6, seconds, size / seconds, rss))
            path.unlink()
    client.flushdb()
    print(f"record store: {describe(args.store_url)}")
    print(f"{'lines':>9} {'file MB':>8} {'median s':>9} {'lines/s':>9} {'peak RSS MB':>12}")
    for size, megabytes, seconds, rate, rss in rows:
        print(f"{size:>9,} {megabytes:>8.0f} {seconds:>9.2f} {rate:>9,.0f} {rss:>12.0f}")
    print(f"targets: >= {TARGET_LINES_PER_S:,} lines/s; peak RSS < {TARGET_RSS_MB_1M} MB "
          "at 1M lines")
    print(machine_line(info))


if __name__ == "__main__":
    main()
