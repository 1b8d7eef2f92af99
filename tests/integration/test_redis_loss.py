"""When Redis loses a batch's data, every command says so in one line and exits 3 or 4, late
writers recreate nothing, and bad input never reaches a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis

from corral.embedded_redis import EmbeddedRedis
from corral.redis_keys import BatchKeys
from tests.integration.helpers import poll, request, write_jsonl

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


def test_every_command_says_redis_lost_the_batch_and_exits_4(tmp_path: Path, redis_client,
                                                            write_config, corral) -> None:
    config = write_config()  # no workers: the lines wait in the queue and the spool
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(300))),
                      config=config, env_extra=QUICK).stdout.strip()
    assert batch_id.startswith("batch_")
    redis_client.flushdb()  # Redis restarted without persistence
    # A call in flight at the crash, from before the scripts checked the batch, left this:
    redis_client.hincrby(BatchKeys(batch_id).meta, "completed", 1)
    commands = [["status", batch_id], ["status", batch_id, "--json"],
                ["status", batch_id, "--watch", "--interval", "0.1"],
                ["results", batch_id, "-o", str(tmp_path / "out.jsonl")], ["cost", batch_id],
                ["cost", batch_id, "--json"], ["cancel", batch_id], ["resume", batch_id],
                ["retry", batch_id], ["feed", batch_id]]
    for command in commands:
        result = corral(*command, config=config)
        assert_one_line(result, (4,), f"Redis lost the data of batch {batch_id}")
        assert result.stdout == "", command
    # `feed` names the spool it can no longer feed from: the cursor went with Redis.
    feed = corral("feed", batch_id, config=config)
    assert "whose spool is still at" in feed.stderr
    assert corral("status", config=config).returncode == 0  # the listing leaves it out


def test_a_batch_never_seen_is_not_found_and_exits_4(redis_client, write_config,
                                                      corral) -> None:
    for command in (["status", "batch_nope"], ["cost", "batch_nope"], ["feed", "batch_nope"]):
        assert_one_line(corral(*command, config=write_config()), (4,), "no batch 'batch_nope'")


def test_submit_wait_through_a_redis_crash_ends_in_one_line_and_leaves_no_partial_batch(
        tmp_path: Path, redis_client, corral_env, write_config, start_simulator,
        start_workers) -> None:
    server = EmbeddedRedis().start()  # no persistence: a crash loses everything
    private = {"CORRAL_REDIS_URL": server.url, **QUICK}
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        sim = start_simulator("--latency-ms", "300")
        config = write_config(f"{sim.base_url}/v1")
        start_workers(config, ["corral.small"], processes=1, concurrency=16, env=private)
        env = {**corral_env, **private, "CORRAL_CONFIG": str(config)}
        submit = subprocess.Popen(
            [sys.executable, "-m", "producer", "submit", "--wait",
             str(write_jsonl(tmp_path / "b.jsonl", lines(1000)))],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        poll(lambda: sim.stats()["served"] >= 50, timeout_s=60.0)
        server.kill()  # SIGKILL: calls are in flight, with their records still to write
        server = EmbeddedRedis(port=server.port).start()  # back, empty
        stdout, stderr = submit.communicate(timeout=120)
        result = subprocess.CompletedProcess(submit.args, submit.returncode, stdout, stderr)
        assert_one_line(result, (3, 4), "Redis lost the data of batch")
        # The workers' late writes found no batch and recreated none of it.
        poll(lambda: sim.stats()["in_flight"] == 0, timeout_s=30.0)
        leftovers = list(client.scan_iter("corral:batch:*"))
        assert leftovers == [], leftovers
    finally:
        client.close()
        server.stop()
