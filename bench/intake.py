"""Benchmark 1: `corral submit` validating and accepting 100k and 1M lines — lines/s, peak RSS.

Each run is the real CLI in a child process (no worker running): one streaming pass that
validates, routes and spools every line and stores the input order, then the batch opens and
the first share of each model's queue is sent. The detached feeder it starts is stopped and
the batch deleted after each run. Peak RSS is the child's (getrusage of the waited process).

    python -m bench.intake --sizes 100000,1000000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from corral.config import example_config_text
from corral.redis_keys import BatchKeys

REDIS_URL = "redis://127.0.0.1:6379/12"
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


def submit_once(path: Path, env: dict[str, str], client: redis.Redis) -> tuple[float, float]:
    """One `corral submit`; returns (seconds, peak RSS in MB) and cleans up after it."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "producer", "submit", str(path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    out, err = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"submit failed: {err.decode()[-2000:]}")
    batch_id = out.decode().strip().splitlines()[-1]
    holder = None
    for _ in range(50):  # the detached feeder takes its lock within moments
        holder = client.get(BatchKeys(batch_id).feeder)
        if holder:
            break
        time.sleep(0.05)
    if holder:
        os.kill(int(holder.split(":")[1]), signal.SIGTERM)
    client.flushdb()
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    client.flushdb()
    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="corral-intake-") as tmp:
        config = Path(tmp) / "corral.toml"
        config.write_text(example_config_text())
        env = {**os.environ, "CORRAL_REDIS_URL": args.redis_url, "CORRAL_CONFIG": str(config),
               "CORRAL_SPOOL_DIR": str(Path(tmp) / "spool")}
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"batch-{size}.jsonl"
            write_batch(path, size)
            runs = [submit_once(path, env, client) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            rows.append((size, path.stat().st_size / 1e6, seconds, size / seconds, rss))
            path.unlink()
    print(f"{'lines':>9} {'file MB':>8} {'median s':>9} {'lines/s':>9} {'peak RSS MB':>12}")
    for size, megabytes, seconds, rate, rss in rows:
        print(f"{size:>9,} {megabytes:>8.0f} {seconds:>9.2f} {rate:>9,.0f} {rss:>12.0f}")
    print(f"targets: >= {TARGET_LINES_PER_S:,} lines/s; peak RSS < {TARGET_RSS_MB_1M} MB "
          "at 1M lines")


if __name__ == "__main__":
    main()
