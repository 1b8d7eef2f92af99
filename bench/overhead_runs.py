"""One run of each contender in the end-to-end benchmark; each checks its own validity."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import bare_task
from bench.harness import KEY_ENV, stop_all, submit, wait_for_end
from bench.overhead_stack import (
    REDIS_URL,
    SIM_RPM,
    SIM_TPM,
    OverheadStack,
    RunInvalidError,
    served_window_s,
)

STALL_S = 60.0  # a run is cut after this long without a new call or record


@dataclasses.dataclass(frozen=True)
class Measure:
    """One valid run's rates, in lines per second (None: not defined for this contender).

    ``e2e``: from launching the command a user runs (``corral submit``, the reference client)
    until the last result is stored; ``served``: the simulator's first request in -> last
    response out; ``enqueue``: lines / the time to put them on the queue.
    """

    e2e: float | None
    served: float | None
    enqueue: float | None = None
    extra_calls: int = 0


def run_timeout_s(lines: int) -> float:
    """A bound on one run: a minute plus 50 lines/s, far below any healthy rate."""
    return 60.0 + lines / 50


def _served_rate(stats: dict[str, Any], lines: int) -> float | None:
    window_s = served_window_s(stats)
    return lines / window_s if window_s else None


def _check_served(stats: dict[str, Any], lines: int) -> None:
    if stats["served"] < lines or stats["requests"] != stats["served"]:
        raise RunInvalidError(f"the simulator served {stats['served']} of {lines} lines "
                              f"({stats['by_status']})")


def run_corral(stack: OverheadStack, batch_file: Path, lines: int, *, processes: int,
               prequeued: bool, run_dir: Path, extra_env: dict[str, str] | None = None) \
        -> Measure:
    """``corral submit`` with the workers already consuming (``prequeued``: started once it
    returned; lines beyond corral's queue depth wait in the record store, and the workers'
    feeding loops send them), the submit and the workers with ``extra_env`` on top of the
    stack's settings.

    The live run's end is the latest ``at`` of the batch's ledger rows (its worker's wall
    clock, s), which the worker stamps just before it commits the line's record to the store
    (the simulator's last response if no row has one).
    """
    stack.reset()
    env = {**stack.corral_env, **(extra_env or {})}
    workers = [] if prequeued else stack.start_corral_workers(processes, run_dir,
                                                              extra_env=extra_env)
    try:
        started_s = time.time()
        batch_id = submit(batch_file, env)
        submit_s = time.time() - started_s
        if prequeued:
            workers = stack.start_corral_workers(processes, run_dir, extra_env=extra_env)
        batch, unfinished = wait_for_end(stack.store, batch_id, f"{stack.base_url}/_sim/stats",
                                         timeout_s=run_timeout_s(lines), stall_s=STALL_S)
        counts = batch["request_counts"]
        stored = stack.store.records.count_records(batch_id)
        if unfinished or batch["status"] != "completed" or counts["completed"] != lines \
                or counts["failed"] or stored != lines:
            raise RunInvalidError(f"batch {batch['status']} {unfinished}: {counts}, "
                                  f"{stored} records")
        stats = stack.stats()
        last_at_s = max((float(row["at"]) for row in stack.store.records.ledger_rows(batch_id)
                         if row.get("at")), default=stats["last_response_ms"] / 1000)
        _check_served(stats, lines)
    finally:
        stop_all(workers)
    return Measure(e2e=None if prequeued else lines / (last_at_s - started_s),
                   served=_served_rate(stats, lines), enqueue=lines / submit_s,
                   extra_calls=stats["requests"] - lines)


def run_bare(stack: OverheadStack, bodies: list[dict[str, Any]], *, processes: int, pool: str,
             concurrency: int, run_dir: Path) -> Measure:
    """Enqueue one bare task per line, then start the workers; time the simulator's window."""
    stack.reset()
    started_s = time.monotonic()
    bare_task.enqueue(bodies)
    enqueue_s = time.monotonic() - started_s
    workers = stack.start_bare_workers(processes, pool=pool, concurrency=concurrency,
                                       run_dir=run_dir)
    try:
        stats = stack.wait_for_calls(len(bodies), timeout_s=run_timeout_s(len(bodies)),
                                     stall_s=STALL_S)
    finally:
        stop_all(workers)
    _check_served(stats, len(bodies))
    return Measure(e2e=None, served=_served_rate(stats, len(bodies)),
                   enqueue=len(bodies) / enqueue_s, extra_calls=stats["requests"] - len(bodies))


def run_bare_live(stack: OverheadStack, upstream_file: Path, lines: int, *, processes: int,
                  pool: str, concurrency: int, run_dir: Path) -> Measure:
    """The bare task end to end, as corral's is measured: its workers already consuming, then
    a process that sends one task per line of the file (``python -m bench.bare_task``), timed
    from its launch to the simulator's last response."""
    stack.reset()
    workers = stack.start_bare_workers(processes, pool=pool, concurrency=concurrency,
                                       run_dir=run_dir)
    try:
        env = {**os.environ, bare_task.BROKER_ENV: REDIS_URL}
        started_s = time.time()
        sent = subprocess.run([sys.executable, "-m", "bench.bare_task", str(upstream_file)],
                              env=env, capture_output=True, text=True,
                              timeout=run_timeout_s(lines), check=False)
        send_s = time.time() - started_s
        if sent.returncode != 0:
            raise RunInvalidError(f"bench.bare_task exited {sent.returncode}: "
                                  f"{sent.stderr.strip()[-2000:]}")
        # The simulator counts a call as it answers it: its last response is in these stats.
        stats = stack.wait_for_calls(lines, timeout_s=run_timeout_s(lines), stall_s=STALL_S)
    finally:
        stop_all(workers)
    _check_served(stats, lines)
    return Measure(e2e=lines / (stats["last_response_ms"] / 1000 - started_s),
                   served=_served_rate(stats, lines), enqueue=lines / send_s,
                   extra_calls=stats["requests"] - lines)


def run_reference(stack: OverheadStack, batch_file: Path, lines: int, *, max_in_flight: int,
                  run_dir: Path, loop_sleep_ms: float = 0.0) -> Measure:
    """The cookbook-style client as its own process, from launch to exit (``loop_sleep_ms``:
    its pause after each dispatch; the cookbook's is 1 ms)."""
    stack.reset()
    out_path = run_dir / "reference.results.jsonl"
    env = {**stack.corral_env, KEY_ENV: stack.api_key}
    command = [sys.executable, "-m", "bench.reference_client", str(batch_file),
               "-o", str(out_path), "--base-url", f"{stack.base_url}/v1",
               "--api-key-env", KEY_ENV, "--rpm", str(SIM_RPM), "--tpm", str(SIM_TPM),
               "--max-in-flight", str(max_in_flight), "--loop-sleep-ms", str(loop_sleep_ms)]
    started_s = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=run_timeout_s(lines), check=False)
    elapsed_s = time.monotonic() - started_s
    if done.returncode != 0:
        raise RunInvalidError(f"reference client exited {done.returncode}: "
                              f"{done.stderr.strip()[-2000:]}")
    with out_path.open(encoding="utf-8") as results:
        ok = sum(1 for raw in results if json.loads(raw)["error"] is None)
    if ok != lines:
        raise RunInvalidError(f"reference client stored {ok} results of {lines}")
    stats = stack.stats()
    _check_served(stats, lines)
    return Measure(e2e=lines / elapsed_s, served=_served_rate(stats, lines),
                   extra_calls=stats["requests"] - lines)
