"""The batch lifecycle through the CLI: cancel, completion window, retention, delete, list."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from corral.redis_keys import BATCH_INDEX, BatchKeys
from corral.store import open_store
from producer.views import wait_for_batch
from tests.integration.helpers import (
    assert_complete,
    poll,
    record_count,
    request,
    retry_history,
    stored_records,
    write_jsonl,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def lines(count: int) -> list[dict]:
    return [request(f"c{i}", "small", f"line {i}") for i in range(count)]


def codes(client, batch_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in stored_records(batch_id).values():
        error = record["error"]
        code = error["code"] if error else "ok"
        counts[code] = counts.get(code, 0) + 1
    return counts


def test_cancel_before_any_worker_ends_every_line_without_a_call(
        tmp_path: Path, redis_client, write_config, corral) -> None:
    config = write_config()
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(200))),
                      config=config).stdout.strip()
    cancelled = corral("cancel", batch_id, config=config)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == "cancelled"
    assert "200 lines cancelled" in cancelled.stderr
    batch = json.loads(corral("status", batch_id, "--json", config=config).stdout)
    assert batch["status"] == "cancelled" and batch["cancelled_at"] is not None
    assert codes(redis_client, batch_id) == {"batch_cancelled": 200}


def test_cancel_mid_run_keeps_finished_results(tmp_path: Path, redis_client, write_config,
                                               start_simulator, start_workers,
                                               corral) -> None:
    sim = start_simulator("--latency-ms", "300")
    config = write_config(f"{sim.base_url}/v1")
    start_workers(config, ["corral.small"], concurrency=4)
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(100))),
                      config=config).stdout.strip()
    deadline = time.monotonic() + 30
    while record_count(batch_id) < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert corral("cancel", batch_id, config=config).returncode == 0
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=30)
    assert batch["status"] == "cancelled"
    found = codes(redis_client, batch_id)
    assert found["ok"] >= 8 and found["batch_cancelled"] >= 70
    assert set(found) == {"ok", "batch_cancelled"}
    served = sim.stats()["served"]
    assert served == found["ok"]  # no cancelled line reached the provider
    assert_complete(redis_client, batch_id, 100, served)


def test_retry_after_a_cancel_reruns_every_line_fed_or_not(
        tmp_path: Path, redis_client, write_config, corral) -> None:
    config = write_config()
    env = {"CORRAL_QUEUE_DEPTH": "20"}  # no worker runs: 20 lines fed, 80 wait in the store
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(100))),
                      config=config, env_extra=env).stdout.strip()
    keys = BatchKeys(batch_id)
    fed = redis_client.hlen(keys.bodies)
    assert 0 < fed < 100
    assert corral("cancel", batch_id, config=config, env_extra=env).returncode == 0
    assert codes(redis_client, batch_id) == {"batch_cancelled": 100}

    retried = corral("retry", batch_id, config=config, env_extra=env)

    # Every line's request is in the store, so every cancelled line can run again.
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == "100"
    assert "100 failed lines enqueued again" in retried.stderr
    assert "left as they are" not in retried.stderr
    history = retry_history(batch_id)  # the old records, kept
    assert len(history) == 100
    assert {record["error"]["code"] for record in history} == {"batch_cancelled"}
    assert codes(redis_client, batch_id) == {}
    assert redis_client.hlen(keys.bodies) == 100  # all in flight again
    status = json.loads(corral("status", batch_id, "--json", config=config).stdout)
    assert status["status"] == "in_progress" and status["request_counts"]["failed"] == 0


def test_lines_not_done_by_the_completion_window_expire(tmp_path: Path, redis_client,
                                                       write_config, corral) -> None:
    config = write_config()
    submitted = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(30))),
                       "--completion-window", "1s", "--json", config=config)
    batch = json.loads(submitted.stdout)
    assert batch["expires_at"] == batch["created_at"] + 1
    time.sleep(2.1)  # a real deadline on the Redis clock; no worker runs meanwhile
    batch = json.loads(corral("status", batch["id"], "--json", config=config).stdout)
    assert batch["status"] == "expired" and batch["expired_at"] is not None
    assert codes(redis_client, batch["id"]) == {"batch_expired": 30}


def test_a_finished_batch_expires_after_retention_and_delete_removes_it_now(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    short = {"CORRAL_RETENTION_S": "600"}
    start_workers(config, ["corral.small"], env=short)
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(5))),
                      config=config, env_extra=short).stdout.strip()
    wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=30)
    for key in (k for k in BatchKeys(batch_id).all() if redis_client.exists(k)):
        assert 0 < redis_client.ttl(key) <= 600, key

    listed = json.loads(corral("status", "--json", config=config).stdout)
    assert [b["id"] for b in listed] == [batch_id]
    assert corral("delete", batch_id, config=config).returncode == 0
    assert redis_client.keys(f"*{batch_id}*") == []
    assert redis_client.zscore(BATCH_INDEX, batch_id) is None
    assert corral("status", batch_id, config=config).returncode == 4


def test_the_workers_expire_a_batch_past_its_window_with_nobody_looking(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator("--latency-ms", "300")
    config = write_config(f"{sim.base_url}/v1")
    depth = {"CORRAL_QUEUE_DEPTH": "50"}
    start_workers(config, ["corral.small"], processes=1, concurrency=2, env=depth)
    submitted = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines(200))),
                       "--completion-window", "2s", "--json", config=config, env_extra=depth)
    batch_id = json.loads(submitted.stdout)["id"]
    store = open_store()
    # No `corral status`: the store's row is read directly, and only the workers act.
    row = poll(lambda: (found := store.batches.get(batch_id)) and
               found["status"] != "in_progress" and found, timeout_s=120.0)
    assert row["status"] == "expired"
    found = codes(redis_client, batch_id)
    assert set(found) <= {"ok", "batch_expired"} and found["batch_expired"] >= 150
    assert sum(found.values()) == 200
    assert sim.stats()["served"] == found.get("ok", 0)  # no expired line was called
    assert_complete(redis_client, batch_id, 200, sim.stats()["served"])
