"""Ending lines in bulk (cancel, expiry) on real Redis and a record store: Redis's part counts
the lines once, however often it is sent."""

from __future__ import annotations

import redis

from corral.batch_end import BULK_END_TOKEN, mirror_bulk_end
from corral.feeder import feed_state
from corral.redis_keys import BatchKeys
from corral.store import Store
from tests.store_batches import numbered, open_test_batch


def test_a_bulk_end_sent_again_after_a_lost_reply_counts_its_lines_once(
        redis_client: redis.Redis, store: Store) -> None:
    batch_id = open_test_batch(redis_client, store, numbered({"small": 3}))
    keys = BatchKeys(batch_id)
    state = feed_state(redis_client.hgetall(keys.meta))  # type: ignore[arg-type]
    ended = store.batches.end_unfed(batch_id, "batch_cancelled", state.fed_through(), [])
    assert ended == 3
    row = store.batches.get(batch_id)
    assert row is not None and row["failed"] == 3
    # Sent twice, as redis-py sends a transaction again when a reconnect lost its reply.
    for _ in range(2):
        mirror_bulk_end(redis_client, keys, [], state, ended, row,
                        token=f"{BULK_END_TOKEN}one")
    assert redis_client.hmget(keys.meta, "failed", "status", "fed:small") == [
        "3", row["status"], "3"]
    # Another bulk end (another token) counts on top.
    mirror_bulk_end(redis_client, keys, [], state, 1, row, token=f"{BULK_END_TOKEN}two")
    assert redis_client.hget(keys.meta, "failed") == "4"


def test_a_bulk_end_drops_the_requests_of_the_queued_lines_it_ended(
        redis_client: redis.Redis, store: Store) -> None:
    batch_id = open_test_batch(redis_client, store, numbered({"small": 2}))
    keys = BatchKeys(batch_id)
    redis_client.hset(keys.bodies, mapping={"small-0": "{}", "small-1": "{}"})
    state = feed_state(redis_client.hgetall(keys.meta))  # type: ignore[arg-type]
    mirror_bulk_end(redis_client, keys, ["small-0"], state, 1, store.batches.get(batch_id),
                    token=f"{BULK_END_TOKEN}one")
    assert redis_client.hkeys(keys.bodies) == ["small-1"]
    assert redis_client.hget(keys.meta, "failed") == "1"
