"""Two busy workers with remote control on, and Flower, through ten Redis SIGKILLs and restarts.

After each restart both workers are alive, keep consuming, answer `celery inspect ping`, and
Flower hears from them again (a fresh inspect reply in `/api/workers`, online in its events)
within 30 s. Once empty (no persistence: every restart loses the queues and batches) and once
with AOF (fsync always: nothing acknowledged is lost, so every batch completes, each line once).
Without workers/kombu_lost_connection.py a worker dies within a few kills (an AttributeError
in kombu's channel close).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from kombu.exceptions import OperationalError

from corral.celery_app import create_app
from corral.embedded_redis import EmbeddedRedis
from corral.store import open_store
from producer.local_stack import ChildProcess
from producer.views import wait_for_batch
from tests.integration.helpers import (
    poll,
    request,
    stop_before_their_redis,
    stored_records,
    write_jsonl,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

RESTARTS = 10
SLOTS = 32  # per worker
# Fewer lines than slots: every line is in flight at once, and each worker, with slots to
# spare, also waits on the queue (a BRPOP outstanding), which is when kombu's close broke.
LINES_PER_BATCH = 48
LATENCY_MS = 1500
BACK_WITHIN_S = 30.0
# A job lost with its worker (or with Redis) comes back within seconds; Flower inspects the
# fleet every 2 s instead of 10.
TIMINGS = {"CORRAL_REQUEST_DEADLINE_S": "3", "CORRAL_MAX_CAPACITY_WAIT_S": "1",
           "CORRAL_VISIBILITY_TIMEOUT_S": "10", "CORRAL_FLOWER_REFRESH_S": "2"}


def flower_hears_from(flower: httpx.Client, names: set[str], since: float) -> bool:
    """Whether Flower lists each worker with an inspect reply newer than `since` and shows it
    online from its events."""
    listed = flower.get("/api/workers").json()
    online = {worker["hostname"]: worker["status"]
              for worker in flower.get("/workers", params={"json": 1}).json()["data"]}
    return all(name in listed and listed[name].get("timestamp", 0) > since
               and online.get(name) for name in names)


def all_alive(workers: list[ChildProcess]) -> bool:
    """True, or fail at once naming the worker that died and its last log lines."""
    for worker in workers:
        assert worker.process.poll() is None, \
            f"{worker.name} died:\n{worker.log_path.read_text(errors='replace')[-1500:]}"
    return True


def ping(app: Any, names: set[str]) -> bool:
    """Whether every named worker answers `celery inspect ping` (False while this process's
    own broker connection is still the one Redis dropped)."""
    try:
        replies = app.control.inspect(timeout=1.0, destination=sorted(names)).ping() or {}
    except (redis.exceptions.ConnectionError, OperationalError):
        return False
    return names <= set(replies)


@pytest.mark.parametrize("persistence", ["empty", "aof"])
def test_busy_workers_survive_ten_redis_kills_and_flower_lists_them_after_each(
        tmp_path: Path, write_config, start_simulator, start_workers, corral,
        start_flower: Callable[..., httpx.Client], persistence: str) -> None:
    aof = persistence == "aof"
    data_dir = tmp_path / "redis-data"
    data_dir.mkdir()
    server = EmbeddedRedis(data_dir=data_dir, appendonly=aof, appendfsync="always").start()
    env = {**TIMINGS, "CORRAL_REDIS_URL": server.url}
    client = redis.Redis.from_url(server.url, decode_responses=True)
    app = create_app("corral-probe", broker_url=server.url)
    workers: list[ChildProcess] = []
    try:
        sim = start_simulator("--latency-ms", str(LATENCY_MS))
        config = write_config(f"{sim.base_url}/v1")
        workers = start_workers(config, ["corral.small"], processes=2, concurrency=SLOTS,
                                env=env)
        flower = start_flower(config, env=env)
        names = set(poll(lambda: len(listed := flower.get("/api/workers").json()) == 2
                         and listed))
        lines = [request(f"l{i}", "small", f"line {i}", max_tokens=16)
                 for i in range(LINES_PER_BATCH)]
        batches = []
        for restart in range(RESTARTS):
            submitted = corral("submit", str(write_jsonl(tmp_path / f"b{restart}.jsonl", lines)),
                               config=config, env_extra=env)
            assert submitted.returncode == 0, submitted.stderr
            batches.append(submitted.stdout.strip())
            # Under load: the workers consume (calls arrive), most lines are mid-call.
            poll(lambda: sim.stats()["in_flight"] >= LINES_PER_BATCH - 8, timeout_s=BACK_WITHIN_S,
                 interval_s=0.05)
            server.kill()
            server = EmbeddedRedis(port=server.port, data_dir=data_dir, appendonly=aof,
                                   appendfsync="always").start()
            restarted = time.time()
            poll(lambda: all_alive(workers) and ping(app, names), timeout_s=BACK_WITHIN_S)
            poll(lambda: flower_hears_from(flower, names, restarted),  # noqa: B023
                 timeout_s=BACK_WITHIN_S)

        # A batch submitted after the last restart completes.
        last = corral("submit", str(write_jsonl(tmp_path / "last.jsonl", lines)),
                      config=config, env_extra=env)
        batches.append(last.stdout.strip())
        batch = wait_for_batch(open_store(), batches[-1], show_progress=False, timeout_s=120)
        assert batch["request_counts"] == {"total": LINES_PER_BATCH,
                                           "completed": LINES_PER_BATCH, "failed": 0}
        if aof:  # nothing acknowledged was lost: every batch ends, each line with one record
            for batch_id in batches:
                batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=120)
                assert batch["request_counts"]["completed"] == LINES_PER_BATCH, batch_id
                assert sorted(stored_records(batch_id)) == \
                    sorted(line["custom_id"] for line in lines)
        assert all_alive(workers)

        # A worker that dies shows as offline in Flower within a minute and leaves its list.
        dead = workers[0]
        dead.process.kill()
        dead_name = next(name for name in names if name.startswith("test-0@"))
        poll(lambda: any(worker["hostname"] == dead_name and not worker["status"]
                         for worker in flower.get("/workers", params={"json": 1}).json()["data"]),
             timeout_s=60)
        poll(lambda: dead_name not in flower.get("/api/workers").json(), timeout_s=60)
    finally:
        stop_before_their_redis(workers)
        app.close()
        client.close()
        server.stop()
