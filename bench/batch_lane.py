"""Deadline plans on the batch lane: cost and lines past a 2 h deadline for all-live, all-batch
and the plan, with a healthy and a stalled provider batch, on a time-scaled simulator.

corral's clocks are real seconds, so the scenario runs ``--scale`` times faster: one benchmark
second stands for ``--scale`` scenario seconds (48: the 2 h deadline is 150 s). Scaled alike:

- the deadline (``--deadline-min``) and the poll interval (``--poll-min``,
  ``CORRAL_BATCH_POLL_S``);
- the provider's batch turnaround (``--turnaround-min``): the simulator answers batch lines at
  ``lines / turnaround`` a second (``--batch-lines-per-s``), so a healthy provider batch of
  all the lines takes that long, and ``CORRAL_BATCH_TURNAROUND_S`` (what the planner assumes)
  is the same value;
- the provider's 24 h completion window (``--batch-window-s``).

The live limits are not scaled: ``--live-lines-per-s`` real lines a second (rpm = 60 × that,
tpm far above it, so requests bind), kept under what the workers can push. The buckets hold
one 60 s period, as corral's planner and hedge assume (``corral/live_time.py``), so a live run
starts with a burst of ``rpm`` lines: 48 scenario minutes' worth at this scale.

Modes (each on a fresh Redis database 9, a fresh SQLite store and a fresh simulator):
``all-live`` is ``corral submit`` without ``--deadline``; ``all-batch`` is ``submit --deadline``
with the provider's 24 h window (scaled), so loose that the plan puts every line on the batch
lane and the hedge is due only near that far deadline: against the 2 h deadline it runs
unhedged; ``plan`` is ``submit --deadline`` with the 2 h deadline (scaled). Scenarios:
``healthy`` provider batches, and ``stalled`` (``--batch-stall``: no provider batch makes
progress). A run ends when the batch ends, or (a stalled all-batch run) at the 2 h deadline
plus ``--grace-s``, when it is cancelled and its unfinished lines count as past the deadline.

Columns: ``cost $`` from ``corral cost --json`` once every provider batch of the batch is
collected (a hedged provider batch's answers bill, and are filed, after the batch ends);
``÷ live`` that over the healthy all-live cost; ``unprod $`` its ``unproductive_cost_usd``
(answers that came second: a hedged line answered by both lanes); ``planned`` live/batch
lines as submitted (the ``lines.lane`` column before any hedge);
``answered`` live/batch from the productive ledger rows' ``lane``; ``sim live/batch`` the
lines the simulator answered on each (``/_sim/stats`` ``by_lane``); ``past 2h`` lines whose
record was written (``records.written_at``, whole seconds) after the 2 h deadline (the batch's
``created_at`` + the deadline: ``options.deadline_at`` for the plan) or that had none by the
run's end; ``last-2h s`` the last record's ``written_at`` less that deadline; ``wall s`` from
launching ``corral submit`` to the last record; ``hedge`` whether a provider batch was hedged
live, and when (s after launching the submit).

Run it from the repository root with Redis at 127.0.0.1:6379 (about 20 minutes)::

    python -m bench.batch_lane --lines 50000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import func, select

from bench.batch_lane_report import Row, code_commit, format_rows, format_table_expected, targets
from bench.harness import KEY_ENV, MODEL, UPSTREAM, WORKER_READY, stop_all
from bench.report import machine, machine_line
from bench.stores import fresh_store
from bench.workload import make_lines, write_jsonl
from corral.store import Store
from corral.store.schema import lines as lines_table
from corral.store.schema import records
from producer.batches import is_terminal, read_batch
from producer.local_stack import SIM_READY, ChildProcess, worker_command

REDIS_URL = "redis://127.0.0.1:6379/9"
MODES = ("all-live", "all-batch", "plan")
SCENARIOS = ("healthy", "stalled")
WINDOW_MIN = 24 * 60  # the provider's completion window
REQUEST_DEADLINE_MIN = 5.0  # CORRAL_REQUEST_DEADLINE_S's default, 300 s, on the scenario's clock
COLLECT_WAIT_S = 400.0
CONFIG = """\
[providers.sim]
base_url = "{base_url}/v1"
api_key_env = "{key_env}"
batch_api = "openai"

[models."{model}"]
provider = "sim"
upstream = "{upstream}"
rpm = {rpm}
tpm = {tpm}
context_window = 128000
default_max_tokens = {max_tokens}
price = {{ input = 2.5, output = 10.0 }}

[router]
default = "{model}"
"""


@dataclasses.dataclass(frozen=True)
class Setup:
    """The scenario and its scaled values (``*_s``: benchmark seconds)."""

    lines: int
    scale: float
    deadline_min: float
    turnaround_min: float
    poll_min: float
    live_lines_per_s: float
    latency_ms: float
    processes: int
    concurrency: int
    max_tokens: int
    grace_s: float

    def real_s(self, scenario_min: float) -> float:
        """Benchmark seconds for scenario minutes."""
        return scenario_min * 60 / self.scale

    @property
    def rpm(self) -> int:
        return round(self.live_lines_per_s * 60)

    @property
    def tpm(self) -> int:
        return self.rpm * 1000  # far above: requests bind

    @property
    def batch_lines_per_s(self) -> float:
        return self.lines / self.real_s(self.turnaround_min)

    def describe(self) -> list[str]:
        """Every parameter, scenario and benchmark values side by side."""
        live_s = max(self.lines - self.rpm, 0) / self.live_lines_per_s
        return [
            f"scale: 1 benchmark s = {self.scale:g} scenario s; {self.lines:,} lines "
            f"(prompts of 120-360 characters, max_tokens {self.max_tokens}), one model",
            f"deadline {self.deadline_min:g} min -> {self.real_s(self.deadline_min):g} s; "
            f"provider batch turnaround {self.turnaround_min:g} min -> "
            f"{self.real_s(self.turnaround_min):g} s (simulator --batch-lines-per-s "
            f"{self.batch_lines_per_s:g}; CORRAL_BATCH_TURNAROUND_S the same); poll "
            f"{self.poll_min:g} min -> CORRAL_BATCH_POLL_S {self.real_s(self.poll_min):g}; "
            f"completion window 24 h -> --batch-window-s {self.real_s(WINDOW_MIN):g}; "
            f"request deadline {REQUEST_DEADLINE_MIN:g} min (the default) -> "
            f"CORRAL_REQUEST_DEADLINE_S {self.real_s(REQUEST_DEADLINE_MIN):g}",
            f"live: {self.live_lines_per_s:g} lines/s real (rpm {self.rpm:,}, tpm "
            f"{self.tpm:,} per 60 s, buckets start full), simulator latency "
            f"{self.latency_ms:g} ms; all {self.lines:,} lines live need >= {live_s:.1f} s "
            f"(= {live_s * self.scale / 60:.0f} scenario min); {self.processes} gevent "
            f"workers x {self.concurrency}",
            "prices $/MTok: live input 2.5, output 10; batch half (batch_price default)",
        ]


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.batch_lane",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--lines", type=int, default=50_000)
    add("--scale", type=float, default=48.0, help="scenario seconds per benchmark second")
    add("--deadline-min", type=float, default=120.0, help="the deadline, scenario minutes")
    add("--turnaround-min", type=float, default=30.0,
        help="a healthy provider batch's turnaround, scenario minutes")
    add("--poll-min", type=float, default=1.0, help="the poll interval, scenario minutes")
    add("--live-lines-per-s", type=float, default=300.0, help="live limit, real lines/s")
    add("--latency-ms", type=float, default=0.0)
    add("--processes", type=int, default=2)
    add("--concurrency", type=int, default=64, help="greenlets per worker process")
    add("--max-tokens", type=int, default=50)
    add("--grace-s", type=float, default=10.0,
        help="how long past the deadline an unfinished run is watched")
    add("--modes", type=lambda text: text.split(","), default=list(MODES))
    add("--scenarios", type=lambda text: text.split(","), default=list(SCENARIOS))
    return parser


def setup_of(args: argparse.Namespace) -> Setup:
    return Setup(lines=args.lines, scale=args.scale, deadline_min=args.deadline_min,
                 turnaround_min=args.turnaround_min, poll_min=args.poll_min,
                 live_lines_per_s=args.live_lines_per_s, latency_ms=args.latency_ms,
                 processes=args.processes, concurrency=args.concurrency,
                 max_tokens=args.max_tokens, grace_s=args.grace_s)


def corral_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m producer ARGS``; raises on a non-zero exit."""
    done = subprocess.run([sys.executable, "-m", "producer", *args], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"corral {args[0]} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def deadline_arg(setup: Setup, mode: str) -> list[str]:
    """``--deadline`` of a mode's submit, in benchmark seconds."""
    if mode == "all-live":
        return []
    minutes = WINDOW_MIN if mode == "all-batch" else setup.deadline_min
    return ["--deadline", f"{setup.real_s(minutes):g}s"]


def run_one(setup: Setup, mode: str, scenario: str, batch_file: Path, run_dir: Path) -> Row:
    """One mode in one scenario on a fresh simulator, store, Redis database and workers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.flushdb()  # only the benchmark's database
    store = fresh_store(run_dir)
    api_key = secrets.token_hex(16)
    row = Row(mode, scenario)
    with ExitStack() as stack:
        stack.callback(client.close)
        sim_args = [sys.executable, "-m", "simulator", "--port", "0", "--model",
                    f"{UPSTREAM}:rpm={setup.rpm},tpm={setup.tpm},ctx=128000",
                    "--latency-ms", f"{setup.latency_ms:g}", "--api-key", api_key,
                    "--batch-lines-per-s", f"{setup.batch_lines_per_s:g}",
                    "--batch-window-s", f"{setup.real_s(WINDOW_MIN):g}",
                    *(["--batch-stall"] if scenario == "stalled" else [])]
        sim = ChildProcess("simulator", sim_args, dict(os.environ), run_dir)
        stack.callback(sim.stop)
        base_url = sim.wait_for(SIM_READY).group(1).decode()
        config = run_dir / "corral.toml"
        config.write_text(CONFIG.format(base_url=base_url, key_env=KEY_ENV, model=MODEL,
                                        upstream=UPSTREAM, rpm=setup.rpm, tpm=setup.tpm,
                                        max_tokens=setup.max_tokens))
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("CORRAL_")}
        env.update({"CORRAL_REDIS_URL": REDIS_URL, "CORRAL_STORE_URL": store.url,
                    "CORRAL_CONFIG": str(config), "CORRAL_TASK_EVENTS": "false",
                    "CORRAL_BATCH_POLL_S": f"{setup.real_s(setup.poll_min):g}",
                    "CORRAL_BATCH_TURNAROUND_S": f"{setup.real_s(setup.turnaround_min):g}",
                    "CORRAL_REQUEST_DEADLINE_S":
                        f"{setup.real_s(REQUEST_DEADLINE_MIN):g}",
                    KEY_ENV: api_key})
        if mode != "all-live":
            estimate = corral_cli(env, "estimate", str(batch_file), *deadline_arg(setup, mode),
                                  "--json")
            row.expected = json.loads(estimate.stdout)["plans"]["plan"]
        workers = [ChildProcess(f"worker-{index}", worker_command(
            queues=[f"corral.{MODEL}"], concurrency=setup.concurrency,
            name=f"bench-lane-{os.getpid()}-{index}", pool="gevent"), env, run_dir)
            for index in range(setup.processes)]
        stack.callback(stop_all, workers)
        for worker in workers:
            worker.wait_for(WORKER_READY)
        started_s = time.time()
        batch_id = corral_cli(env, "submit", str(batch_file),
                              *deadline_arg(setup, mode)).stdout.strip().splitlines()[-1]
        row.planned = planned_lanes(store, batch_id)
        stored = store.batches.get(batch_id) or {}
        deadline_at = int(stored["created_at"]) + round(setup.real_s(setup.deadline_min))
        if mode == "plan":
            deadline_at = int(json.loads(stored["options"])["deadline_at"])
        batch = wait(store, batch_id, until_s=deadline_at + setup.grace_s
                     if mode == "all-batch" and scenario == "stalled" else None)
        if not is_terminal(batch):
            row.note = (f"not ended {setup.grace_s:g} s past the 2 h deadline (its hedge is "
                        f"due only near the 24 h one): cancelled")
            corral_cli(env, "cancel", batch_id)
            batch = wait(store, batch_id, until_s=time.time() + 60)
        fill_row(row, store, batch_id, deadline_at, started_s)
        if not collected(store, batch_id, until_s=time.time() + COLLECT_WAIT_S):
            row.note += (f"{'; ' if row.note else ''}a provider batch not collected "
                         f"{COLLECT_WAIT_S:g} s after the batch ended: its cost is missing")
        cost = json.loads(corral_cli(env, "cost", batch_id, "--json").stdout)
        row.cost_usd = Decimal(cost["total"]["cost_usd"])
        row.unproductive_usd = Decimal(cost["total"]["unproductive_cost_usd"])
        by_lane = httpx.get(f"{base_url}/_sim/stats", timeout=10).json()["by_lane"]
        row.sim_calls = (by_lane["live"], by_lane["batch"])
        print(f"batch_lane: {mode}/{scenario}: {row}", file=sys.stderr)
    return row


def planned_lanes(store: Store, batch_id: str) -> tuple[int, int]:
    """Lines on each lane as submitted (live, batch)."""
    with store.engine.connect() as connection:
        counts: dict[str, int] = dict(connection.execute(
            select(lines_table.c.lane, func.count()).where(lines_table.c.batch_id == batch_id)
            .group_by(lines_table.c.lane)).all())
    return counts.get("live", 0), counts.get("batch", 0)


def wait(store: Store, batch_id: str, *, until_s: float | None) -> dict[str, Any]:
    """Poll until the batch ends (or ``until_s``, epoch seconds)."""
    while True:
        batch = read_batch(store, batch_id)
        if is_terminal(batch) or (until_s is not None and time.time() > until_s):
            return batch
        time.sleep(0.5)


def collected(store: Store, batch_id: str, *, until_s: float) -> bool:
    """Wait until every provider batch of the batch is collected (a hedged one's answers are
    filed after the batch ends, and bill), or ``until_s``; whether they all were."""
    while True:
        if all(kept["collected"] for kept in store.provider_batches.of_batch(batch_id)):
            return True
        if time.time() > until_s:
            return False
        time.sleep(0.5)


def fill_row(row: Row, store: Store, batch_id: str, deadline_at: int,
             started_s: float) -> None:
    """Lines, lanes, lines past the deadline, wall time and the hedge, from the store."""
    batch = read_batch(store, batch_id)
    row.lines = batch["request_counts"]["total"]
    with store.engine.connect() as connection:
        mine = records.c.batch_id == batch_id
        finished, late, last = connection.execute(select(
            func.count(), func.count().filter(records.c.written_at > deadline_at),
            func.max(records.c.written_at)).where(mine, records.c.error_code.is_(None))).one()
    # Lines without a result by the end: cancelled, or never finished.
    row.unfinished = row.lines - finished
    row.past_deadline = late + row.unfinished
    ledger_lanes = {"live": 0, "batch": 0}
    for entry in store.records.ledger_rows(batch_id):
        if entry["productive"] and not entry["unsettled"]:
            ledger_lanes[entry["lane"]] = ledger_lanes.get(entry["lane"], 0) + 1
    row.answered = (ledger_lanes["live"], ledger_lanes["batch"])
    row.wall_s = None if last is None else last - started_s
    row.last_vs_deadline_s = None if last is None else last - deadline_at
    hedges = [kept["hedged_at"] for kept in store.provider_batches.of_batch(batch_id)
              if kept["hedged_at"] is not None]
    row.hedged_after_s = min(hedges) - started_s if hedges else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run every mode in every scenario once, then print the parameters, table and targets."""
    args = build_parser().parse_args(argv)
    setup = setup_of(args)
    info = machine()
    work_dir = Path(tempfile.mkdtemp(prefix="corral-batch-lane-"))
    batch_file = write_jsonl(make_lines(setup.lines, model=MODEL, min_chars=120, max_chars=360,
                                        max_tokens=setup.max_tokens, seed=0),
                             work_dir / "batch.jsonl")
    print(f"batch_lane: {setup.lines} lines; logs in {work_dir}", file=sys.stderr)
    rows = []
    for scenario in args.scenarios:
        for mode in args.modes:
            rows.append(run_one(setup, mode, scenario, batch_file,
                                work_dir / f"{scenario}-{mode}"))
    print("python -m bench.batch_lane " + shlex.join(argv if argv is not None else
                                                     sys.argv[1:]))
    print(f"code: {code_commit()}")
    print("\n".join(setup.describe()))
    print(format_table_expected(rows))
    print(format_rows(rows))
    for row in rows:
        if row.note:
            print(f"note: {row.scenario} {row.mode}: {row.note}")
    print("\n".join(targets(rows)))
    print(machine_line(info))
    return 0




if __name__ == "__main__":
    sys.exit(main())
