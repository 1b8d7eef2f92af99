"""One benchmark run: a fresh simulator, workers and record store, one submitted batch, the
server's counts."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.stores import fresh_store
from corral.store import Store
from producer.batches import is_terminal, read_batch
from producer.local_stack import SIM_READY, ChildProcess, stop_all, worker_command

MODEL = "bench"
UPSTREAM = "bench-up"
KEY_ENV = "CORRAL_BENCH_SIM_KEY"
SUBMIT_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 0.5
WORKER_READY = re.compile(rb"\bready\b")
MAX_RETRY_DELAY_S = 20.0
# Shorter than corral's defaults so a retried line comes back within a few limiter periods.
RETRY_ENV = {
    "CORRAL_RETRY_BASE_DELAY_S": "0.5",
    "CORRAL_MAX_RETRY_DELAY_S": f"{MAX_RETRY_DELAY_S:g}",
    "CORRAL_MAX_ATTEMPTS": "30",
}

CONFIG_TEMPLATE = """\
[providers.sim]
base_url = "{base_url}/v1"
api_key_env = "{key_env}"

[models."{model}"]
provider = "sim"
upstream = "{upstream}"
rpm = {rpm}
tpm = {tpm}
context_window = 128000
default_max_tokens = {max_tokens}
price = {{ input = 1.0, output = 2.0 }}

[router]
default = "{model}"
"""


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What every run shares: the server's limits (per period), latency, and bounds; and the
    store every run wipes (None: a new SQLite file in each run's directory)."""

    redis_url: str
    rpm: int
    tpm: int
    period_s: float
    max_tokens: int
    concurrency: int
    latency_ms: float
    jitter_ms: float
    run_timeout_s: float
    store_url: str | None = None

    @property
    def stall_s(self) -> float:
        """How long a live run can go without a new call or record: two periods + a backoff."""
        return 2 * self.period_s + MAX_RETRY_DELAY_S


@dataclasses.dataclass(frozen=True)
class RunCounts:
    """What one run left behind, at the simulator and in corral's records."""

    wall_s: float | None  # first request -> last response, at the simulator
    calls: int
    rate_limited: int
    lines: int
    terminal: int  # lines with their one terminal record
    failed: int
    unfinished: str  # "" when the batch ended, else "timeout" or "stalled"


def child_env(scenario: Scenario, *, mode: str, config_path: Path, api_key: str,
              store: Store) -> dict[str, str]:
    """The environment of the workers and the submit: ours without CORRAL_*, then the run's."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CORRAL_")}
    env.update(RETRY_ENV)
    env.update({
        "CORRAL_REDIS_URL": scenario.redis_url,
        "CORRAL_STORE_URL": store.url,
        "CORRAL_CONFIG": str(config_path),
        "CORRAL_RATE_PERIOD_S": f"{scenario.period_s:g}",
        "CORRAL_RATE_LIMITER": mode,
        KEY_ENV: api_key,
    })
    return env


def simulator_args(scenario: Scenario, limiter: str, api_key: str) -> list[str]:
    """``python -m simulator`` flags for one run."""
    spec = f"{UPSTREAM}:rpm={scenario.rpm},tpm={scenario.tpm},ctx=128000,max_tokens=" \
           f"{scenario.max_tokens}"
    return [sys.executable, "-m", "simulator", "--port", "0", "--model", spec,
            "--limiter", limiter, "--period-s", f"{scenario.period_s:g}",
            "--latency-ms", f"{scenario.latency_ms:g}",
            "--latency-jitter-ms", f"{scenario.jitter_ms:g}", "--api-key", api_key]


def write_config(scenario: Scenario, base_url: str, path: Path) -> Path:
    """corral.toml with the one benchmark model behind the simulator."""
    path.write_text(CONFIG_TEMPLATE.format(
        base_url=base_url, key_env=KEY_ENV, model=MODEL, upstream=UPSTREAM, rpm=scenario.rpm,
        tpm=scenario.tpm, max_tokens=scenario.max_tokens))
    return path


def submit(batch_file: Path, env: dict[str, str], *, python: str | None = None,
           cwd: Path | None = None) -> str:
    """``corral submit`` in a subprocess (of ``python``'s environment when given: its corral
    then takes the batch in and feeds it); returns the batch id it prints."""
    done = subprocess.run([python or sys.executable, "-m", "producer", "submit",
                           str(batch_file)], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=SUBMIT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"submit exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def wait_for_end(store: Store, batch_id: str, stats_url: str, *, timeout_s: float,
                 stall_s: float) -> tuple[dict[str, Any], str]:
    """Poll until the batch ends; returns it and "" (ended), "timeout" or "stalled".

    A run stalls when for ``stall_s`` no line ends and the simulator gets no call: lines
    that lost their job would otherwise hold the run until its timeout.
    """
    deadline_s = time.monotonic() + timeout_s
    progress: tuple[int, int] | None = None
    progress_at_s = time.monotonic()
    while True:
        batch = read_batch(store, batch_id)
        if is_terminal(batch):
            return batch, ""
        counts = batch["request_counts"]
        calls = httpx.get(stats_url, timeout=10.0).json()["requests"]
        now_s = time.monotonic()
        if (counts["completed"] + counts["failed"], calls) != progress:
            progress, progress_at_s = (counts["completed"] + counts["failed"], calls), now_s
        elif now_s - progress_at_s > stall_s:
            return batch, "stalled"
        if now_s > deadline_s:
            return batch, "timeout"
        time.sleep(POLL_INTERVAL_S)


def read_counts(store: Store, batch_id: str, batch: dict[str, Any],
                stats: dict[str, Any], unfinished: str) -> RunCounts:
    """The run's numbers from the final batch, its records in the store and the simulator's
    stats."""
    first_ms, last_ms = stats.get("first_request_ms"), stats.get("last_response_ms")
    wall_s = (last_ms - first_ms) / 1000 if first_ms is not None and last_ms is not None else None
    counts = batch["request_counts"]
    return RunCounts(
        wall_s=wall_s, calls=stats["requests"], rate_limited=stats["by_status"].get("429", 0),
        lines=counts["total"], terminal=store.records.count_records(batch_id),
        failed=counts["failed"], unfinished=unfinished)


def run_once(scenario: Scenario, *, mode: str, limiter: str, processes: int, batch_file: Path,
             run_dir: Path) -> RunCounts:
    """Start a simulator and ``processes`` workers on a fresh store, run ``batch_file``, stop
    everything."""
    run_dir.mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(scenario.redis_url, decode_responses=True)
    client.flushdb()  # only the benchmark's database
    store = fresh_store(run_dir, scenario.store_url)
    api_key = secrets.token_hex(16)
    with ExitStack() as stack:
        stack.callback(client.close)
        sim = ChildProcess("simulator", simulator_args(scenario, limiter, api_key),
                           dict(os.environ), run_dir)
        stack.callback(sim.stop)
        base_url = sim.wait_for(SIM_READY).group(1).decode()
        config_path = write_config(scenario, base_url, run_dir / "corral.toml")
        env = child_env(scenario, mode=mode, config_path=config_path, api_key=api_key,
                        store=store)
        workers = [ChildProcess(f"worker-{index}", worker_command(
            queues=[f"corral.{MODEL}"], concurrency=scenario.concurrency,
            name=f"bench-{os.getpid()}-{index}"), env, run_dir) for index in range(processes)]
        stack.callback(stop_all, workers)
        for worker in workers:
            worker.wait_for(WORKER_READY)
        batch_id = submit(batch_file, env)
        stats_url = f"{base_url}/_sim/stats"
        batch, unfinished = wait_for_end(store, batch_id, stats_url,
                                         timeout_s=scenario.run_timeout_s,
                                         stall_s=scenario.stall_s)
        stats = httpx.get(stats_url, timeout=10.0).json()
        return read_counts(store, batch_id, batch, stats, unfinished)
