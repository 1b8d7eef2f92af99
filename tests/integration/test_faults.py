"""Fault injection: kill, restart, storm and starve the real processes; nothing is lost.

After each: every accepted line has exactly one terminal record, none twice, and the cost
accounting covers every call the simulator served (see helpers.assert_complete).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis

from corral.embedded_redis import EmbeddedRedis
from corral.redis_keys import BATCH_INDEX, BatchKeys
from corral.stats import stat_field
from corral.store import open_store
from producer.local_stack import ChildProcess
from producer.views import wait_for_batch
from tests.integration.helpers import (
    assert_complete,
    assert_each_line_called_once,
    completion_order,
    poll,
    record_count,
    request,
    retry_history,
    stall_report,
    stop_before_their_redis,
    stored_records,
    write_jsonl,
)
from workers.reconciler import job_arguments

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# Short enough that a job lost with its worker comes back within seconds:
# visibility 8 s > 2 x (capacity wait 1 + deadline 2) + longest retry delay 0.5.
QUICK_RECOVERY = {"CORRAL_REQUEST_DEADLINE_S": "2", "CORRAL_MAX_CAPACITY_WAIT_S": "1",
                  "CORRAL_VISIBILITY_TIMEOUT_S": "8"}


def finished(client: redis.Redis, batch_id: str) -> int:
    return record_count(batch_id)


def lines(count: int, prefix: str = "l") -> list[dict]:
    return [request(f"{prefix}{i}", "small", f"line {i}", max_tokens=16) for i in range(count)]


def test_1_sigkill_one_of_three_workers_at_30_percent(tmp_path: Path, redis_client,
                                                      write_config, start_simulator,
                                                      start_workers, corral) -> None:
    sim = start_simulator("--latency-ms", "100")
    config = write_config(f"{sim.base_url}/v1")
    workers = start_workers(config, ["corral.small"], processes=3, concurrency=8,
                            env=QUICK_RECOVERY)
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(1000))),
                      config=config, env_extra=QUICK_RECOVERY).stdout.strip()
    poll(lambda: finished(redis_client, batch_id) >= 300, timeout_s=60.0)
    workers[0].process.send_signal(signal.SIGKILL)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=90)
    assert batch["status"] == "completed"
    served = sim.stats()["served"]
    assert_complete(redis_client, batch_id, 1000, served)
    assert batch["request_counts"]["failed"] == 0
    # The calls the killed worker had in flight are in the report, as the user sees it.
    report = json.loads(corral("cost", batch_id, "--json", config=config).stdout)["total"]
    assert report["requests"] + report["unsettled_calls"] >= served > 1000, (report, served)
    assert 1 <= report["unsettled_calls"] <= 8  # at most the killed worker's slots
    assert Decimal(report["unsettled_max_cost_usd"]) > 0
    table = corral("cost", batch_id, config=config).stdout
    assert "unsettled calls" in table and f"{report['unsettled_calls']:,}" in table


# gevent too: its 64 slots share round trips (corral/group_commit.py), so a restart fails
# whole groups of starts and records at once.
@pytest.mark.parametrize(("pool", "concurrency"), [("threads", 8), ("gevent", 64)])
def test_2_redis_restart_with_aof_mid_batch(tmp_path: Path, redis_client, write_config,
                                            start_simulator, start_workers, corral,
                                            pool: str, concurrency: int) -> None:
    data_dir = tmp_path / "redis-data"
    data_dir.mkdir()
    server = EmbeddedRedis(data_dir=data_dir, appendonly=True).start()
    private = {**QUICK_RECOVERY, "CORRAL_REDIS_URL": server.url}
    client = redis.Redis.from_url(server.url, decode_responses=True)
    workers: list[ChildProcess] = []
    try:
        sim = start_simulator("--latency-ms", "50")
        config = write_config(f"{sim.base_url}/v1")
        workers = start_workers(config, ["corral.small"], processes=2,
                                concurrency=concurrency, env=private, pool=pool)
        batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(600))),
                          config=config, env_extra=private).stdout.strip()
        poll(lambda: finished(client, batch_id) >= 150, timeout_s=60.0)
        server.stop()  # SHUTDOWN flushes the AOF, as a restart for maintenance would
        server = EmbeddedRedis(port=server.port, data_dir=data_dir, appendonly=True).start()
        batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=120)
        assert batch["status"] == "completed", stall_report(
            client, batch_id, logs=[worker.log_path for worker in workers])
        assert_complete(client, batch_id, 600, sim.stats()["served"])
        assert finished(client, batch_id) == 600
    finally:
        stop_before_their_redis(workers)
        client.close()
        server.stop()


def test_3_a_429_storm_pauses_every_worker_for_retry_after(tmp_path: Path, redis_client,
                                                          write_config, start_simulator,
                                                          start_workers, corral) -> None:
    sim = start_simulator("--latency-ms", "20")
    config = write_config(f"{sim.base_url}/v1")
    patient = {"CORRAL_MAX_ATTEMPTS": "30"}
    start_workers(config, ["corral.small"], processes=2, concurrency=8, env=patient)
    storm_s, retry_after_s = 30, 5
    httpx.post(f"{sim.base_url}/_sim/faults", json={"storm": {
        "model": "sim-small", "duration_s": storm_s, "retry_after_s": retry_after_s}})
    started = time.monotonic()
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(200))),
                      config=config, env_extra=patient).stdout.strip()
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=120)
    assert batch["request_counts"] == {"total": 200, "completed": 200, "failed": 0}
    assert time.monotonic() - started >= storm_s  # it really waited the storm out

    calls = httpx.get(f"{sim.base_url}/_sim/calls", params={"model": "sim-small"}).json()
    calls = sorted(calls["calls"])
    limited = [t for t, status in calls if status == 429]
    assert len(limited) >= storm_s // retry_after_s  # one round per cooldown at least
    # After each 429, no call goes out before Retry-After has passed, except calls that had
    # already been sent when the 429 was answered (they arrive within a few milliseconds).
    in_flight_ms, slack_ms = 100, 50
    for t_ms, _status in calls:
        known = [r for r in limited if r < t_ms - in_flight_ms]
        if known:
            assert t_ms >= known[-1] + retry_after_s * 1000 - slack_ms, (t_ms, known[-1])
    assert_complete(redis_client, batch_id, 200, sim.stats()["served"])


def test_4_random_5xx_and_hung_responses_are_retried_or_recorded(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator("--error-rate", "0.3", "--hang-rate", "0.02", "--seed", "7")
    config = write_config(f"{sim.base_url}/v1")
    env = {**QUICK_RECOVERY, "CORRAL_MAX_ATTEMPTS": "4"}
    start_workers(config, ["corral.small"], processes=2, concurrency=16, env=env)
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(400))),
                      config=config, env_extra=env).stdout.strip()
    wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=120)
    stats = sim.stats()
    batch = assert_complete(redis_client, batch_id, 400, stats["served"])
    assert stats["hung"] > 0 and int(stats["by_status"].get("500", 0)) > 0
    records = list(stored_records(batch_id).values())
    codes = {r["error"]["code"] for r in records if r["error"]}
    assert codes <= {"server_error_exhausted", "timeout_exhausted"}
    # 0.32^4 ≈ 1% of lines may exhaust their four attempts; the rest must succeed.
    assert batch["request_counts"]["completed"] >= 380
    # Lines were retried, and none was tried more than four times.
    retries = redis_client.hget(BatchKeys(batch_id).stats, stat_field("small", "retries"))
    assert int(retries or 0) > 0 and stats["requests"] <= 4 * 400


def test_5_sigterm_mid_request_finishes_running_jobs_and_requeues_the_rest(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator("--latency-ms", "1500")
    config = write_config(f"{sim.base_url}/v1")
    first, second = start_workers(config, ["corral.small"], processes=2, concurrency=4)
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(40))),
                      config=config).stdout.strip()
    poll(lambda: sim.stats()["requests"] >= 8, timeout_s=60.0)  # both workers are mid-request
    stopping = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    first.process.wait(timeout=30)
    assert time.monotonic() - stopping < 10  # bounded: one request, not the whole backlog
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=90)
    assert batch["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
    stats = sim.stats()
    assert stats["served"] == 40  # the calls running at SIGTERM finished; none was redone
    assert_complete(redis_client, batch_id, 40, stats["served"])
    assert second.process.poll() is None


def test_6_sigkill_the_feeding_process_halfway_and_the_workers_feed_the_rest(
        tmp_path: Path, redis_client, corral_env, write_config, start_simulator,
        start_workers) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    total = 10_000
    depth = {"CORRAL_QUEUE_DEPTH": "500"}
    submit = subprocess.Popen(
        [sys.executable, "-m", "producer", "submit", "--wait",
         str(write_jsonl(tmp_path / "big.jsonl", lines(total)))],
        env={**corral_env, **depth, "CORRAL_CONFIG": str(config)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The submitting process feeds the batch (it holds the feeder lock) ...
        holder = poll(lambda: redis_client.get(f"corral:batch:{{{batch_of(redis_client)}}}"
                                               ":feeder"), timeout_s=60.0)
        assert int(holder.split(":")[1]) == submit.pid
        batch_id = batch_of(redis_client)
        keys = BatchKeys(batch_id)
        start_workers(config, ["corral.small"], processes=2, concurrency=16, env=depth)
        poll(lambda: int(redis_client.hget(keys.meta, "fed:small")) >= total * 0.3,
             timeout_s=60.0, interval_s=0.005)
        # ... and dies halfway, with nobody to type a command.
        submit.kill()
        submit.wait(timeout=10)
        killed_at = time.monotonic()
        fed = int(redis_client.hget(keys.meta, "fed:small"))
        assert fed < total  # really killed halfway
        poll(lambda: int(redis_client.hget(keys.meta, "fed:small")) > fed, timeout_s=30.0,
             interval_s=0.05)
        taken_over_s = time.monotonic() - killed_at
        assert taken_over_s < 30  # a worker took the batch over (its lock runs out in 5 s)
        holder = redis_client.get(keys.feeder)
        assert holder is None or int(holder.split(":")[1]) != submit.pid
        batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=150)
    finally:
        if submit.poll() is None:
            submit.kill()
    assert batch["request_counts"] == {"total": total, "completed": total, "failed": 0}
    served = sim.stats()["served"]
    # A chunk fed twice (the dead feeder had not moved its cursor) never became a second call.
    assert_each_line_called_once(redis_client, batch_id, total, served)
    assert_complete(redis_client, batch_id, total, served)
    # Each line counts once as sent, a chunk fed again included.
    assert int(redis_client.hget(keys.meta, "enqueued")) == total
    assert int(redis_client.hget(keys.stats, stat_field("small", "enqueued"))) == total


def batch_of(client: redis.Redis) -> str | None:
    """The one batch this test's Redis lists, once submitted."""
    ids = client.zrange(BATCH_INDEX, 0, -1)
    return str(ids[0]) if ids else None


def test_7_invalid_key_fails_fast_then_retry_after_the_fix_completes(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    good_key, bad_key = "sk-canary-good-5f2a", "sk-canary-bad-91c7"
    sim = start_simulator("--api-key", good_key)
    key_file = tmp_path / "key"
    key_file.write_text(bad_key)
    config = write_config(f"{sim.base_url}/v1")
    config.write_text(config.read_text().replace(
        'api_key_env = "CORRAL_TEST_SIM_KEY"', f'api_key_file = "{key_file}"'))
    workers = start_workers(config, ["corral.small"], processes=2, concurrency=4)
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(100))),
                      config=config).stdout.strip()
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["status"] == "failed"
    assert batch["request_counts"]["failed"] == 100
    assert batch["errors"]["data"][0]["code"] == "authentication_error"
    assert sim.stats()["by_status"]["401"] <= 8  # failed fast: about one call per slot
    status = corral("status", batch_id, "--json", config=config)

    key_file.write_text(good_key)
    retried = corral("retry", batch_id, "--codes", "authentication_error", config=config)
    assert retried.returncode == 0 and retried.stdout.strip() == "100"
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["status"] == "completed"
    assert batch["completed_at"] is not None and batch["failed_at"] is None  # reopened cleanly
    assert batch["request_counts"] == {"total": 100, "completed": 100, "failed": 0}
    replaced = retry_history(batch_id)  # the first records, kept
    assert [record["error"]["code"] for record in replaced] == ["authentication_error"] * 100
    out = tmp_path / "out.jsonl"
    corral("results", batch_id, "-o", str(out), config=config)

    texts = [out.read_text(), (tmp_path / "out.errors.jsonl").read_text(), status.stdout,
             status.stderr, retried.stderr, *(w.log_path.read_text() for w in workers)]
    for key in (good_key, bad_key):
        assert not any(key in text for text in texts)
        for redis_key in redis_client.scan_iter("*"):
            assert key.encode() not in (redis_client.dump(redis_key) or b"")
        # Nor anywhere in the record store's database file (records, ledger, lines).
        store_file = Path(open_store().url.removeprefix("sqlite:///"))
        assert not any(key.encode() in path.read_bytes()
                       for path in store_file.parent.glob(store_file.name + "*"))


def test_8_malformed_and_oversized_lines_are_skipped_and_the_rest_runs(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    batch_file = write_jsonl(tmp_path / "mixed.jsonl", [
        *lines(50, "ok-"),
        '{"custom_id": "broken", "method": "POST", ',
        request("huge", "small", "x" * 3_000_000),
        "[]",
        request("too-many-tokens", "small", "hello", max_tokens=2_000_000),
        *lines(50, "more-"),
    ])
    submitted = corral("submit", str(batch_file), "--skip-invalid", config=config)
    assert submitted.returncode == 0, submitted.stderr
    assert "line 51: malformed JSON" in submitted.stderr
    assert "line 52: prompt of about 750000 tokens exceeds" in submitted.stderr
    assert "line 53: expected a JSON object" in submitted.stderr
    assert "line 54: request needs" in submitted.stderr
    batch_id = submitted.stdout.strip()
    start_workers(config, ["corral.small"])
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 104, "completed": 100, "failed": 4}
    assert_complete(redis_client, batch_id, 104, sim.stats()["served"])
    assert sim.stats()["served"] == 100


def test_lines_whose_messages_vanished_are_sent_again_by_the_reconciler(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(50))),
                      config=config).stdout.strip()
    redis_client.delete("corral.small")  # every message lost, as a broker crash might
    start_workers(config, ["corral.small"], processes=2)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 50, "completed": 50, "failed": 0}
    assert_complete(redis_client, batch_id, 50, sim.stats()["served"])
    assert sim.stats()["served"] == 50


def test_the_reconciler_resends_lost_lines_mid_batch_and_no_live_one(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    total = 1000
    sim = start_simulator("--latency-ms", "150")
    config = write_config(f"{sim.base_url}/v1")
    depth = {"CORRAL_QUEUE_DEPTH": "120"}  # the workers feed too: the same depth everywhere
    workers = start_workers(config, ["corral.small"], processes=2, concurrency=8, env=depth)
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(total))),
                      config=config, env_extra=depth).stdout.strip()
    poll(lambda: finished(redis_client, batch_id) >= 100, timeout_s=60.0)
    # Five messages vanish from the queue while both workers are busy with the rest.
    lost = [redis_client.lpop("corral.small") for _ in range(5)]
    assert redis_client.hlen("unacked") > 0
    lost_ids = [custom_id for _, custom_id in job_arguments(lost)]
    assert len(lost_ids) == 5
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=120)
    assert batch["request_counts"] == {"total": total, "completed": total, "failed": 0}
    assert_complete(redis_client, batch_id, total, sim.stats()["served"])
    assert sim.stats()["served"] == total  # no line was called twice
    resent = [int(match) for worker in workers for match in re.findall(
        rb"(\d+) lines had no record, lease or message", worker.log_path.read_bytes())]
    assert sum(resent) == 5, resent  # the five lost ones, and no live line
    # They came back mid-batch, not once it drained (hundreds of lines ended after them).
    done = completion_order(batch_id)
    assert max(done.index(custom_id) for custom_id in lost_ids) < total - 100


def test_a_line_whose_workers_keep_dying_ends_as_attempts_exhausted(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(3))),
                      config=config).stdout.strip()
    # Four deliveries of l0 started and never finished (their workers died mid-call).
    redis_client.hset(BatchKeys(batch_id).attempts, "l0", 4)
    start_workers(config, ["corral.small"], env={"CORRAL_MAX_ATTEMPTS": "4"})
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    record = stored_records(batch_id)["l0"]
    assert record["error"]["code"] == "attempts_exhausted"
    assert "started 4 times" in record["error"]["message"]
    assert sim.stats()["served"] == 2  # the poison line was not called a fifth time
