"""When Redis loses everything, nothing finished is lost: every command still answers from the
record store, Redis's part of a batch is rebuilt from it, and every line ends exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

from corral.embedded_redis import EmbeddedRedis
from corral.redis_keys import BatchKeys
from corral.store import open_store
from producer.costs import batch_cost
from producer.local_stack import ChildProcess
from tests.integration.helpers import poll, request, stop_before_their_redis, write_jsonl

QUICK = {"CORRAL_QUEUE_DEPTH": "100"}


def lines(count: int) -> list[dict]:
    return [request(f"l{i}", "small", f"line {i}", max_tokens=16) for i in range(count)]


def assert_one_line(result: subprocess.CompletedProcess[str], codes: tuple[int, ...],
                    says: str) -> None:
    """The command failed cleanly: an expected exit code, and one line that says why."""
    assert result.returncode in codes, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    messages = [line for line in result.stderr.splitlines() if line.startswith("corral:")]
    assert any(says in line for line in messages), result.stderr


def test_every_command_works_after_redis_lost_everything(tmp_path: Path, redis_client,
                                                          write_config, corral) -> None:
    config = write_config()  # no workers: the lines wait in the queue and the store
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(300))),
                      config=config, env_extra=QUICK).stdout.strip()
    assert batch_id.startswith("batch_")
    redis_client.flushdb()  # Redis restarted without persistence
    # A call in flight at the crash, from before the scripts checked the batch, left this:
    redis_client.hincrby(BatchKeys(batch_id).meta, "completed", 1)
    for command in (["status", batch_id], ["status", batch_id, "--json"],
                    ["results", batch_id, "-o", str(tmp_path / "out.jsonl")],
                    ["cost", batch_id], ["cost", batch_id, "--json"]):
        result = corral(*command, config=config)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert json.loads(corral("status", batch_id, "--json", config=config).stdout)[
        "request_counts"] == {"total": 300, "completed": 0, "failed": 0}
    # `resume` rebuilds Redis's part from the store (the leftover is replaced), and the feeder
    # queues every line again from the first.
    resumed = corral("resume", batch_id, config=config, env_extra=QUICK)
    assert resumed.returncode == 0, resumed.stderr
    meta = redis_client.hgetall(BatchKeys(batch_id).meta)
    assert (meta["id"], meta["completed"], meta["total"]) == (batch_id, "0", "300")
    assert int(meta["call_offset"]) > 0  # new calls never share a ledger key with old ones
    assert redis_client.llen("corral.small") == 100  # the queue depth, fed again
    assert batch_id in corral("status", config=config).stdout


def test_a_batch_never_seen_is_not_found_and_exits_4(redis_client, write_config,
                                                      corral) -> None:
    for command in (["status", "batch_nope"], ["cost", "batch_nope"], ["feed", "batch_nope"]):
        assert_one_line(corral(*command, config=write_config()), (4,), "no batch 'batch_nope'")


def test_a_redis_killed_mid_batch_and_back_empty_loses_no_line_and_runs_each_once(
        tmp_path: Path, redis_client, corral_env, write_config, start_simulator,
        start_workers, corral) -> None:
    server = EmbeddedRedis().start()  # no persistence: a crash loses everything
    private = {"CORRAL_REDIS_URL": server.url, **QUICK}
    client = redis.Redis.from_url(server.url, decode_responses=True)
    workers: list[ChildProcess] = []
    try:
        sim = start_simulator("--latency-ms", "100")
        config = write_config(f"{sim.base_url}/v1")
        workers = start_workers(config, ["corral.small"], processes=1, concurrency=16,
                                env=private)
        env = {**corral_env, **private, "CORRAL_CONFIG": str(config)}
        submit = subprocess.Popen(
            [sys.executable, "-m", "producer", "submit", "--wait",
             str(write_jsonl(tmp_path / "b.jsonl", lines(1000)))],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        poll(lambda: sim.stats()["served"] >= 300, timeout_s=60.0)
        server.kill()  # SIGKILL: calls are in flight, with their records still to write
        server = EmbeddedRedis(port=server.port).start()  # back, empty
        # The workers reconnect and rebuild the batch from the store on their own, and the
        # waiting submit sees it end.
        stdout, stderr = submit.communicate(timeout=180)
        assert submit.returncode == 0, stderr
        assert "Traceback" not in stderr
        batch_id = stdout.strip().splitlines()[-1]
        store = open_store()
        batch = store.batches.get(batch_id)
        assert batch is not None and batch["status"] == "completed"
        assert (batch["completed"], batch["failed"]) == (1000, 0)
        ids = [record["custom_id"] for record in store.records.iter_records(batch_id)]
        assert sorted(ids) == sorted(f"l{i}" for i in range(1000))  # each line once
        # Only lines in flight at the kill (16 slots, and each slot's prefetched message) may
        # have run twice: their records landed after the rebuild had queued them again.
        served = sim.stats()["served"]
        assert 1000 <= served <= 1000 + 2 * 16, served
        cost = batch_cost(store, batch_id, client=client).total
        assert cost.requests + cost.unsettled_calls >= served
        resumed = corral("resume", batch_id, config=config, env_extra=private)
        assert resumed.returncode == 0, resumed.stderr  # an ended batch: nothing to send
        assert resumed.stdout.strip() == "0"
    finally:
        stop_before_their_redis(workers)
        client.close()
        server.stop()
