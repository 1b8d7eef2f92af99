"""Bucket headroom computed read-only like bucket.lua, and broker queue depth with priorities."""

from __future__ import annotations

import pytest

from corral.config import RateScope
from corral.redis_client import is_redis_url
from corral.redis_keys import bucket_key
from producer.fleet import headroom, read_headroom, read_queue_depths

KOMBU_PRIORITY_SEPARATOR = "\x06\x16"  # how kombu's Redis transport names priority lists

SCOPE = RateScope(name="sim:sim-big", rpm=600, tpm=60000)
PERIOD_MS = 60000


def test_a_missing_bucket_is_full() -> None:
    room = headroom(SCOPE, {}, now_ms=5000, period_ms=PERIOD_MS)
    assert (room.requests, room.tokens, room.cooldown_s) == (600, 60000, 0)
    assert (room.rpm, room.tpm, room.scope) == (600, 60000, "sim:sim-big")


def test_levels_refill_continuously_since_they_were_computed() -> None:
    state = {"r": "0", "t": "1000", "ts": "10000", "cool": "0"}
    room = headroom(SCOPE, state, now_ms=16000, period_ms=PERIOD_MS)  # a tenth of a period
    assert room.requests == pytest.approx(60)
    assert room.tokens == pytest.approx(7000)


def test_refill_is_capped_at_capacity() -> None:
    state = {"r": "590", "t": "59000", "ts": "0"}
    room = headroom(SCOPE, state, now_ms=PERIOD_MS, period_ms=PERIOD_MS)
    assert (room.requests, room.tokens) == (600, 60000)


def test_a_running_cooldown_leaves_no_headroom() -> None:
    # settle() after a 429 reopens the scope empty at `cool`; a later header sync may raise
    # the levels, but acquire still refuses until the cooldown ends.
    state = {"r": "5", "t": "500", "ts": "20000", "cool": "20000"}
    room = headroom(SCOPE, state, now_ms=18500, period_ms=PERIOD_MS)
    assert (room.requests, room.tokens) == (0, 0)
    assert room.cooldown_s == pytest.approx(1.5)
    after = headroom(SCOPE, state, now_ms=26000, period_ms=PERIOD_MS)
    assert after.cooldown_s == 0 and after.requests == pytest.approx(65)


def test_read_headroom_uses_the_redis_clock_and_changes_nothing(redis_client) -> None:
    seconds, micros = redis_client.time()
    now_ms = seconds * 1000 + micros // 1000
    redis_client.hset(bucket_key(SCOPE.name), mapping={"r": 0, "t": 0, "ts": now_ms, "cool": 0})
    other = RateScope(name="sim:sim-small", rpm=10, tpm=100)
    before = redis_client.hgetall(bucket_key(SCOPE.name))
    rooms = read_headroom(redis_client, [SCOPE, other], period_s=60)
    assert [room.scope for room in rooms] == ["sim:sim-big", "sim:sim-small"]
    assert 0 <= rooms[0].requests < 600 and rooms[0].tokens < 60000
    assert (rooms[1].requests, rooms[1].tokens) == (10, 100)
    assert redis_client.hgetall(bucket_key(SCOPE.name)) == before
    assert not redis_client.exists(bucket_key(other.name))


def test_queue_depth_sums_kombu_priority_lists(redis_client) -> None:
    redis_client.rpush("corral.big", "a", "b")
    redis_client.rpush(f"corral.big{KOMBU_PRIORITY_SEPARATOR}3", "c")
    redis_client.rpush(f"corral.big{KOMBU_PRIORITY_SEPARATOR}9", "d")
    redis_client.rpush("corral.bigger", "not this one")
    assert read_queue_depths(redis_client, ["corral.big", "corral.small", "corral.big"]) == {
        "corral.big": 4, "corral.small": 0}


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0", True), ("rediss://h:6380/0", True),
    ("unix:///tmp/redis.sock", True), ("amqp://guest@rabbit//", False)])
def test_only_redis_brokers_have_list_queues(url: str, expected: bool) -> None:
    assert is_redis_url(url) is expected
