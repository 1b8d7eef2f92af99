"""One 0 ms simulator with limits far above any load, corral's config for it, Redis db 9, and a
fresh record store for each run."""

from __future__ import annotations

import os
import re
import secrets
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import bare_task
from bench.harness import (
    MODEL,
    WORKER_READY,
    Scenario,
    child_env,
    simulator_args,
    stop_all,
    write_config,
)
from bench.stores import fresh_store
from corral.store import Store
from producer.local_stack import SIM_READY, ChildProcess, worker_command

REDIS_URL = "redis://127.0.0.1:6379/9"  # the overhead benchmarks' database: only it is flushed
SIM_RPM = 1_000_000_000  # per 60 s: far above anything two cores can send
SIM_TPM = 1_000_000_000_000
MAX_TOKENS = 50
POLL_INTERVAL_S = 0.1


class RunInvalidError(RuntimeError):
    """A run did not serve or complete every line: its figures must not be reported."""


class OverheadStack(ExitStack):
    """The simulator (started once), corral's config and environment, and the worker starts.

    Args:
        work_dir: logs and the config go here.
        concurrency: task slots of each corral worker process.
        rate_limiter: ``CORRAL_RATE_LIMITER`` of corral's workers ("shared" or "off").
        extra_env: more ``CORRAL_*`` settings for corral's processes.
        store_url: the record store every ``reset`` wipes (None: each ``reset`` makes a new
            SQLite file under ``work_dir/stores``).
    """

    def __init__(self, work_dir: Path, *, concurrency: int, rate_limiter: str,
                 extra_env: dict[str, str] | None = None, corral_pool: str = "threads",
                 store_url: str | None = None) -> None:
        super().__init__()
        self.work_dir = work_dir
        self.corral_pool = corral_pool
        self.store_url = store_url
        self._resets = 0
        self.scenario = Scenario(
            redis_url=REDIS_URL, rpm=SIM_RPM, tpm=SIM_TPM, period_s=60.0, max_tokens=MAX_TOKENS,
            concurrency=concurrency, latency_ms=0.0, jitter_ms=0.0, run_timeout_s=0.0)
        self.api_key = secrets.token_hex(16)
        self.redis = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        self.callback(self.redis.close)
        sim = ChildProcess("simulator", simulator_args(self.scenario, "bucket", self.api_key),
                           dict(os.environ), work_dir)
        self.callback(sim.stop)
        self.base_url = sim.wait_for(SIM_READY).group(1).decode()
        self.simulator_pid = sim.process.pid
        config_path = write_config(self.scenario, self.base_url, work_dir / "corral.toml")
        self.store: Store = fresh_store(self._store_dir(), store_url)
        self.corral_env = child_env(self.scenario, mode=rate_limiter, config_path=config_path,
                                    api_key=self.api_key, store=self.store)
        self.corral_env.update(extra_env or {})
        self.http = httpx.Client(base_url=self.base_url, timeout=30.0)
        self.callback(self.http.close)

    def _store_dir(self) -> Path:
        self._resets += 1
        return self.work_dir / "stores" / f"run{self._resets}"

    def reset(self) -> None:
        """Empty Redis db 9, give the run a fresh record store (``store``, and
        CORRAL_STORE_URL in ``corral_env``), and zero the simulator's counters.

        Raises:
            RunInvalidError: a consumer is already blocked on db 9 (a worker left over from an
                interrupted run would take lines and skew every figure).
        """
        database = str(self.redis.connection_pool.connection_kwargs.get("db", 0))
        strays = [client["addr"] for client in self.redis.client_list()
                  if client.get("db") == database and client.get("cmd") in ("brpop", "blpop")]
        if strays:
            raise RunInvalidError(f"consumers from elsewhere on {REDIS_URL}: {strays}; stop them")
        self.redis.flushdb()
        self.store = fresh_store(self._store_dir(), self.store_url)
        self.corral_env["CORRAL_STORE_URL"] = self.store.url
        self.http.post("/_sim/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        """The simulator's /_sim/stats."""
        return dict(self.http.get("/_sim/stats").json())

    def start_corral_workers(self, processes: int, run_dir: Path, *, pool: str | None = None,
                             concurrency: int | None = None, python: str | None = None,
                             extra_env: dict[str, str] | None = None) -> list[ChildProcess]:
        """``processes`` corral workers (``corral_pool`` and the stack's concurrency unless
        given) on the benchmark model, consuming; ``python``: another environment's
        interpreter, whose installed corral they then run (to measure another commit);
        ``extra_env``: settings on top of the stack's."""
        run_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.corral_env, **(extra_env or {})}
        # Another environment's worker runs in its log directory: Celery puts the working
        # directory first on sys.path, and this checkout's modules must not shadow its own.
        cwd = run_dir if python else None

        def command(index: int) -> list[str]:
            args = worker_command(
                queues=[f"corral.{MODEL}"], concurrency=concurrency or self.scenario.concurrency,
                name=f"overhead-{os.getpid()}-{index}", pool=pool or self.corral_pool)
            return [python, *args[1:]] if python else args

        workers = [ChildProcess(f"corral-worker-{index}", command(index), env, run_dir, cwd)
                   for index in range(processes)]
        return self._ready(workers, WORKER_READY)

    def start_bare_workers(self, processes: int, *, pool: str, concurrency: int,
                           run_dir: Path) -> list[ChildProcess]:
        """``processes`` bare-task workers; gevent gets the free list, threads a shared client."""
        run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, bare_task.BROKER_ENV: REDIS_URL,
               bare_task.BASE_URL_ENV: f"{self.base_url}/v1", bare_task.KEY_ENV: self.api_key,
               bare_task.CLIENTS_ENV: "free-list" if pool == "gevent" else "shared"}
        workers = [ChildProcess(f"bare-{pool}-{index}", bare_task.worker_command(
            pool=pool, concurrency=concurrency, name=f"bare-{os.getpid()}-{index}"), env, run_dir)
            for index in range(processes)]
        return self._ready(workers, re.compile(bare_task.READY_LINE.encode()))

    @staticmethod
    def _ready(workers: list[ChildProcess], pattern: re.Pattern[bytes]) -> list[ChildProcess]:
        try:
            for worker in workers:
                worker.wait_for(pattern)
        except BaseException:
            stop_all(workers)
            raise
        return workers

    def wait_for_calls(self, calls: int, *, timeout_s: float, stall_s: float) -> dict[str, Any]:
        """Poll the simulator until it has answered ``calls`` chat calls; its stats then.

        Raises:
            RunInvalidError: no new call for ``stall_s``, or ``timeout_s`` passed.
        """
        deadline_s = time.monotonic() + timeout_s
        seen, seen_at_s = -1, time.monotonic()
        while True:
            stats = self.stats()
            now_s = time.monotonic()
            if stats["requests"] >= calls:
                return stats
            if stats["requests"] != seen:
                seen, seen_at_s = stats["requests"], now_s
            elif now_s - seen_at_s > stall_s:
                raise RunInvalidError(f"stalled at {seen} of {calls} calls")
            if now_s > deadline_s:
                raise RunInvalidError(f"timed out at {seen} of {calls} calls")
            time.sleep(POLL_INTERVAL_S)


def served_window_s(stats: dict[str, Any]) -> float | None:
    """First request in -> last response out, at the simulator, in seconds."""
    first_ms, last_ms = stats.get("first_request_ms"), stats.get("last_response_ms")
    if first_ms is None or last_ms is None or last_ms <= first_ms:
        return None
    return float(last_ms - first_ms) / 1000
