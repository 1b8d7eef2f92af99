"""Two crash findings re-measured: a SIGKILLed worker's calls in the cost report, and submit
--wait across a Redis that lost everything.

Part ``worker``: ``--workers`` worker processes (threads pool, ``--concurrency`` slots each)
run a ``--lines`` batch against the simulator at ``--latency-ms`` (so every slot has a call in
flight); worker 0 is SIGKILLed once 30% of the lines have their record. Once the batch ends it
prints the simulator's served calls beside ``corral cost BATCH --json`` (``requests``,
``unsettled_calls``, ``unsettled_max_cost_usd``): the report covers every served call when
requests + unsettled_calls >= served. Then the human ``corral cost BATCH`` table.

Part ``redis``: ``corral submit --wait`` waits on a ``--redis-lines`` batch; Redis (no
persistence) is SIGKILLed once a tenth of the lines were served, and restarted empty on the
same port. The record store keeps the batch's lines and every record, so the batch is expected
to end: the workers' feeding loops rebuild Redis's part of it from the store and queue again
every line with no record. It prints submit's exit code and stderr (exit 0 and no traceback
expected), the batch's end and its records in the store (one per line), the simulator's served
calls beside ``corral cost BATCH --json`` (lines queued again are called again; the report must
still cover every served call), the ``corral:batch:*`` keys the restarted Redis holds once late
writers had their chance, and what ``corral status`` and ``corral cost`` say.

Each part starts its own private redis-server (corral.embedded_redis), simulator and workers on
a fresh record store (a SQLite file in the part's directory, or ``--store-url`` with corral's
tables dropped and made again), and stops them all, even when it fails; Redis at 6379 is never
touched. Recovery timings are short (visibility 8 s) so the killed worker's jobs come back
within seconds.

Run it from the repository root::

    python -m bench.fault_accounting
    python -m bench.fault_accounting --only redis --redis-lines 3000
    python -m bench.fault_accounting --store-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.harness import (
    MODEL,
    WORKER_READY,
    Scenario,
    child_env,
    simulator_args,
    stop_all,
    write_config,
)
from bench.report import machine, machine_line, table
from bench.stores import describe, fresh_store
from bench.workload import make_lines, write_jsonl
from corral.embedded_redis import EmbeddedRedis
from corral.redis_keys import PREFIX
from corral.store import Store
from producer.batches import read_batch
from producer.local_stack import SIM_READY, ChildProcess, worker_command
from producer.views import wait_for_batch

PARTS = ("worker", "redis")
# Far above what 48 slots at 300 ms can send: no 429 muddles the counts.
UNLIMITED_RPM, UNLIMITED_TPM = 1_000_000, 1_000_000_000
MAX_TOKENS = 16
# A job lost with its worker comes back within seconds; the start-up check needs
# visibility 8 s > 2 x (capacity wait 1 s + deadline 2 s) + longest retry delay 0.5 s.
QUICK_RECOVERY = {
    "CORRAL_REQUEST_DEADLINE_S": "2",
    "CORRAL_MAX_CAPACITY_WAIT_S": "1",
    "CORRAL_VISIBILITY_TIMEOUT_S": "8",
    "CORRAL_RETRY_BASE_DELAY_S": "0.05",
    "CORRAL_MAX_RETRY_DELAY_S": "0.5",
    "CORRAL_RECONCILE_INTERVAL_S": "2",
}
KILL_WORKER_AT = 0.3  # share of lines with a record when worker 0 is SIGKILLed
KILL_REDIS_AT = 0.1  # share of lines served when Redis is SIGKILLed
REDIS_DOWN_S = 2.0  # how long Redis stays dead before it comes back empty
LATE_WRITERS_S = 10.0  # after submit exits: time for in-flight jobs to try their writes
BATCH_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 0.05
CLI_TIMEOUT_S = 120.0


@dataclasses.dataclass
class Fleet:
    """A running simulator and workers on one Redis and store, and corral's environment."""

    stats_url: str
    env: dict[str, str]
    workers: list[ChildProcess]
    store: Store

    def stats(self) -> dict[str, Any]:
        """The simulator's /_sim/stats."""
        return dict(httpx.get(self.stats_url, timeout=10.0).json())


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.fault_accounting",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--lines", type=int, default=1000, help="lines in the worker-kill batch")
    add("--workers", type=int, default=3, help="worker processes")
    add("--concurrency", type=int, default=16, help="task slots per worker process")
    add("--latency-ms", type=float, default=300.0, help="the simulator's latency")
    add("--redis-lines", type=int, default=3000, help="lines in the Redis-kill batch")
    add("--only", choices=PARTS, default=None, help="run one part")
    add("--store-url", default=None, metavar="URL",
        help="a record store to wipe before each part (default: a new SQLite file per part)")
    return parser


def start_fleet(stack: ExitStack, args: argparse.Namespace, redis_url: str,
                run_dir: Path) -> Fleet:
    """A simulator and ``args.workers`` consuming workers on ``redis_url`` and a fresh store,
    stopped by ``stack``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    store = fresh_store(run_dir, args.store_url)
    scenario = Scenario(redis_url=redis_url, rpm=UNLIMITED_RPM, tpm=UNLIMITED_TPM,
                        period_s=60.0, max_tokens=MAX_TOKENS, concurrency=args.concurrency,
                        latency_ms=args.latency_ms, jitter_ms=0.0,
                        run_timeout_s=BATCH_TIMEOUT_S)
    api_key = secrets.token_hex(16)
    sim = ChildProcess("simulator", simulator_args(scenario, "bucket", api_key),
                       dict(os.environ), run_dir)
    stack.callback(sim.stop)
    base_url = sim.wait_for(SIM_READY).group(1).decode()
    config_path = write_config(scenario, base_url, run_dir / "corral.toml")
    env = child_env(scenario, mode="shared", config_path=config_path, api_key=api_key,
                    store=store)
    env.update(QUICK_RECOVERY, PYTHONUNBUFFERED="1")
    workers: list[ChildProcess] = []
    stack.callback(stop_all, workers)
    for index in range(args.workers):
        workers.append(ChildProcess(f"worker-{index}", worker_command(
            queues=[f"corral.{MODEL}"], concurrency=args.concurrency,
            name=f"fault-{os.getpid()}-{index}", pool="threads"), env, run_dir))
    for worker in workers:
        worker.wait_for(WORKER_READY)
    return Fleet(f"{base_url}/_sim/stats", env, workers, store)


def corral(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m producer ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "producer", *args], env=env,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


def poll_until(probe: Any, *, timeout_s: float, what: str) -> None:
    """Call ``probe`` until it returns something truthy; raise after ``timeout_s``."""
    deadline_s = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline_s:
            raise TimeoutError(f"{what} not reached within {timeout_s:g} s")
        time.sleep(POLL_INTERVAL_S)


def stderr_lines(text: str) -> list[str]:
    """Non-empty lines of a child's stderr, or one "(empty)"."""
    return [line for line in text.splitlines() if line.strip()] or ["(empty)"]


def run_worker_kill(args: argparse.Namespace, work_dir: Path) -> list[str]:
    """Part ``worker``: the report's lines."""
    run_dir = work_dir / "worker"
    with ExitStack() as stack:
        server = EmbeddedRedis().start()
        stack.callback(server.stop)
        fleet = start_fleet(stack, args, server.url, run_dir)
        batch_file = write_jsonl(make_lines(args.lines, model=MODEL, min_chars=40,
                                            max_chars=120, max_tokens=MAX_TOKENS, seed=0),
                                 run_dir / "batch.jsonl")
        submitted = corral(fleet.env, "submit", str(batch_file))
        if submitted.returncode != 0:
            raise RuntimeError(f"submit exited {submitted.returncode}: {submitted.stderr}")
        batch_id = submitted.stdout.strip()
        records = fleet.store.records
        kill_at = int(args.lines * KILL_WORKER_AT)
        poll_until(lambda: records.count_records(batch_id) >= kill_at,
                   timeout_s=BATCH_TIMEOUT_S, what=f"{kill_at} records")
        fleet.workers[0].process.send_signal(signal.SIGKILL)
        records_at_kill = records.count_records(batch_id)
        in_flight_at_kill = fleet.stats()["in_flight"]
        batch = wait_for_batch(fleet.store, batch_id, show_progress=False,
                               timeout_s=BATCH_TIMEOUT_S)
        served = fleet.stats()["served"]
        as_json = corral(fleet.env, "cost", batch_id, "--json")
        human = corral(fleet.env, "cost", batch_id)
    total = json.loads(as_json.stdout)["total"] if as_json.returncode == 0 else {}
    counts = batch["request_counts"]
    covered = (total["requests"] + total["unsettled_calls"] >= served) if total else None
    rows = [
        ("lines", f"{args.lines:,}"),
        ("workers x slots", f"{args.workers} x {args.concurrency}"),
        ("simulator latency", f"{args.latency_ms:g} ms"),
        ("records when worker 0 was SIGKILLed", f"{records_at_kill:,}"),
        ("calls in flight at the simulator then", f"{in_flight_at_kill:,}"),
        ("batch status", batch["status"]),
        ("completed / failed", f"{counts['completed']:,} / {counts['failed']:,}"),
        ("calls the simulator served", f"{served:,}"),
        ("cost --json exit code", str(as_json.returncode)),
        ("requests", f"{total['requests']:,}" if total else "-"),
        ("unsettled_calls", f"{total['unsettled_calls']:,}" if total else "-"),
        ("unsettled_max_cost_usd", total.get("unsettled_max_cost_usd", "-")),
        ("requests + unsettled_calls >= served", "-" if covered is None
         else "yes" if covered else "NO"),
    ]
    return [
        f"Part worker: SIGKILL 1 of {args.workers} workers at "
        f"{KILL_WORKER_AT:.0%} of a {args.lines:,}-line batch",
        table(("measure", "value"), rows),
        "",
        f"`corral cost {batch_id}` (exit {human.returncode}):",
        human.stdout.rstrip(),
        *(f"stderr: {line}" for line in stderr_lines(human.stderr) if human.stderr.strip()),
    ]


def run_redis_kill(args: argparse.Namespace, work_dir: Path) -> list[str]:
    """Part ``redis``: the report's lines."""
    run_dir = work_dir / "redis"
    with ExitStack() as stack:
        server = EmbeddedRedis().start()
        stack.callback(server.stop)
        fleet = start_fleet(stack, args, server.url, run_dir)
        batch_file = write_jsonl(make_lines(args.redis_lines, model=MODEL, min_chars=40,
                                            max_chars=120, max_tokens=MAX_TOKENS, seed=1),
                                 run_dir / "batch.jsonl")
        out_path, err_path = run_dir / "submit.out", run_dir / "submit.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            waiting = subprocess.Popen([sys.executable, "-m", "producer", "submit", "--wait",
                                        str(batch_file)], env=fleet.env, stdout=out,
                                       stderr=err, stdin=subprocess.DEVNULL)
        stack.callback(_end, waiting)
        # The batch's row appears once the submit has taken the whole file in.
        poll_until(lambda: fleet.store.batches.newest(1) or waiting.poll() is not None,
                   timeout_s=CLI_TIMEOUT_S, what="the batch in the store")
        batch_ids = [row["id"] for row in fleet.store.batches.newest(2)]
        if len(batch_ids) != 1:
            raise RuntimeError(f"expected one batch, found {batch_ids}; submit: "
                               f"{err_path.read_text(errors='replace')[-2000:]}")
        batch_id = str(batch_ids[0])
        kill_at = int(args.redis_lines * KILL_REDIS_AT)
        poll_until(lambda: fleet.stats()["served"] >= kill_at or waiting.poll() is not None,
                   timeout_s=BATCH_TIMEOUT_S, what=f"{kill_at} served calls")
        server.kill()
        served_at_kill = fleet.stats()["served"]
        records_at_kill = fleet.store.records.count_records(batch_id)
        alive_at_kill = waiting.poll() is None
        time.sleep(REDIS_DOWN_S)
        restarted = EmbeddedRedis(port=server.port).start()
        stack.callback(restarted.stop)
        started_s = time.monotonic()
        exit_code = waiting.wait(timeout=BATCH_TIMEOUT_S + CLI_TIMEOUT_S)
        recovery_s = time.monotonic() - started_s
        time.sleep(LATE_WRITERS_S)
        client = redis.Redis.from_url(restarted.url, decode_responses=True)
        stack.callback(client.close)
        batch_keys = sorted(client.scan_iter(f"{PREFIX}:batch:*"))
        other_keys = sorted(set(client.scan_iter("*")) - set(batch_keys))
        served = fleet.stats()["served"]
        batch = read_batch(fleet.store, batch_id)
        records = fleet.store.records.count_records(batch_id)
        status = corral(fleet.env, "status", batch_id)
        cost = corral(fleet.env, "cost", batch_id, "--json")
    submit_err = err_path.read_text(errors="replace")
    counts = batch["request_counts"]
    total = json.loads(cost.stdout)["total"] if cost.returncode == 0 else {}
    covered = (total["requests"] + total["unsettled_calls"] >= served) if total else None
    rows = [
        ("lines", f"{args.redis_lines:,}"),
        ("workers x slots", f"{args.workers} x {args.concurrency}"),
        ("served when Redis was SIGKILLed", f"{served_at_kill:,}"),
        ("records in the store then", f"{records_at_kill:,}"),
        ("submit --wait still waiting then", "yes" if alive_at_kill else "NO"),
        ("Redis down before its empty restart", f"{REDIS_DOWN_S:g} s"),
        ("restart -> submit --wait exit", f"{recovery_s:.1f} s"),
        ("submit --wait exit code", str(exit_code)),
        ("'Traceback' in submit's stderr", "YES" if "Traceback" in submit_err else "no"),
        ("batch status", batch["status"]),
        ("completed / failed", f"{counts['completed']:,} / {counts['failed']:,}"),
        ("records in the store", f"{records:,}"),
        ("calls the simulator served in all", f"{served:,}"),
        ("cost --json: requests", f"{total['requests']:,}" if total else "-"),
        ("cost --json: unsettled_calls", f"{total['unsettled_calls']:,}" if total else "-"),
        ("requests + unsettled_calls >= served", "-" if covered is None
         else "yes" if covered else "NO"),
        (f"{PREFIX}:batch:* keys after {LATE_WRITERS_S:g} s", str(len(batch_keys))),
        ("status exit code", str(status.returncode)),
        ("cost --json exit code", str(cost.returncode)),
    ]
    return [
        f"Part redis: SIGKILL Redis (no persistence) at {KILL_REDIS_AT:.0%} of a "
        f"{args.redis_lines:,}-line batch under `submit --wait`, restart it empty",
        table(("measure", "value"), rows),
        "",
        "submit --wait stderr:",
        *(f"  {line}" for line in stderr_lines(submit_err)),
        "submit --wait stdout:",
        *(f"  {line}" for line in stderr_lines(out_path.read_text(errors="replace"))),
        f"{PREFIX}:batch:* keys in the restarted Redis:",
        *(f"  {key}" for key in batch_keys or ["(none)"]),
        f"other keys in the restarted Redis: {', '.join(other_keys) or '(none)'}",
        f"`corral status {batch_id}` stdout and stderr:",
        *(f"  {line}" for line in stderr_lines(status.stdout + status.stderr)),
        f"`corral cost {batch_id} --json` stderr:",
        *(f"  {line}" for line in stderr_lines(cost.stderr)),
    ]


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen parts and print their tables, then the machine."""
    args = build_parser().parse_args(argv)
    info = machine()
    work_dir = Path(tempfile.mkdtemp(prefix="corral-fault-accounting-"))
    print(f"fault_accounting: logs in {work_dir}", file=sys.stderr)
    parts = [args.only] if args.only else list(PARTS)
    runners = {"worker": run_worker_kill, "redis": run_redis_kill}
    failed = False
    print(time.strftime("fault_accounting, %Y-%m-%d %H:%M %Z"))
    print(f"record store: {describe(args.store_url)}")
    for part in parts:
        print()
        try:
            print("\n".join(runners[part](args, work_dir)))
        except Exception as err:  # one part failing still lets the other run
            failed = True
            print(f"Part {part}: FAILED: {type(err).__name__}: {err}")
    print()
    print(machine_line(info, timed=False))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
