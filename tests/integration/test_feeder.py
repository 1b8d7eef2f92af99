"""The feeder: Redis holds what is in flight, and batches on one model share it fairly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from corral.redis_keys import BatchKeys
from corral.store import open_store
from corral.store.schema import lines as lines_table
from producer.costs import batch_cost
from producer.views import wait_for_batch
from tests.integration.helpers import assert_complete, record_count, request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def lines(count: int, prefix: str) -> list[dict]:
    return [request(f"{prefix}{i}", "small", f"line {i}", max_tokens=8) for i in range(count)]


def test_a_small_batch_is_not_stuck_behind_a_large_one_and_redis_holds_only_a_share(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator("--latency-ms", "40")
    config = write_config(f"{sim.base_url}/v1")
    depth = 40
    env = {"CORRAL_QUEUE_DEPTH": str(depth)}
    big_total, small_total = 1500, 20
    big = corral("submit", str(write_jsonl(tmp_path / "big.jsonl", lines(big_total, "b"))),
                 config=config, env_extra=env)
    assert big.returncode == 0, big.stderr
    big_id = big.stdout.strip()
    big_keys = BatchKeys(big_id)
    # The workers feed too (whoever feeds keeps to the same depth).
    start_workers(config, ["corral.small"], processes=1, concurrency=4, env=env)

    most_stored = 0

    def big_done() -> int:
        nonlocal most_stored
        most_stored = max(most_stored, redis_client.hlen(big_keys.bodies))
        return record_count(big_id)

    deadline = time.monotonic() + 60
    while big_done() < 100:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    small = corral("submit", str(write_jsonl(tmp_path / "small.jsonl", lines(small_total, "s"))),
                   config=config, env_extra=env)
    assert small.returncode == 0, small.stderr
    small_id = small.stdout.strip()
    while record_count(small_id) < small_total:
        assert time.monotonic() < deadline, "the small batch waited behind the large one"
        big_done()
        time.sleep(0.02)
    big_done_when_small_ended = big_done()
    # FIFO over whole batches would have run all 1,500 big lines first.
    assert big_done_when_small_ended < big_total // 2

    # Results can be exported while the batch runs: what has finished so far.
    partial = tmp_path / "partial.jsonl"
    exported = corral("results", big_id, "-o", str(partial), config=config)
    assert exported.returncode == 0, exported.stderr
    written = partial.read_text().splitlines()
    assert big_done_when_small_ended <= len(written) <= big_done() < big_total
    assert all(json.loads(line)["response"]["status_code"] == 200 for line in written)

    batch = wait_for_batch(open_store(), big_id, show_progress=False, timeout_s=120)
    assert batch["request_counts"]["completed"] == big_total
    big_done()
    assert 0 < most_stored <= depth  # never more than the model's depth of bodies in Redis
    assert redis_client.hlen(big_keys.bodies) == 0
    served = sim.stats()["served"]
    for batch_id, total in ((big_id, big_total), (small_id, small_total)):
        assert_complete(redis_client, batch_id, total, total)
    costs = [batch_cost(open_store(), batch_id, client=redis_client).total
             for batch_id in (big_id, small_id)]
    billed = sum(cost.requests for cost in costs)
    unsettled = sum(cost.unsettled_calls for cost in costs)
    assert billed == big_total + small_total  # one billed call per line, none twice
    assert big_total + small_total <= served <= billed + unsettled  # every call accounted


def test_a_refused_file_leaves_no_rows_and_no_keys(tmp_path: Path, redis_client,
                                                    write_config, corral) -> None:
    config = write_config("http://127.0.0.1:9/v1")
    bad = write_jsonl(tmp_path / "bad.jsonl", [*lines(2000, "x"), "{oops"])
    refused = corral("submit", str(bad), config=config)
    assert refused.returncode == 2
    assert "line 2001: malformed JSON" in refused.stderr
    assert redis_client.dbsize() == 0
    store = open_store()
    assert store.batches.newest() == []
    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(lines_table)).scalar() == 0
