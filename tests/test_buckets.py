"""The fleet-wide bucket script on a real Redis, driven by a fake clock (now_ms)."""

from __future__ import annotations

import pytest

from corral.config import RateScope
from corral.redis_keys import bucket_key
from workers.buckets import Admission, Decision, LocalBucketStore, RedisBucketStore

SCOPE = RateScope(name="p:m", rpm=60, tpm=6000)  # 1 request and 100 tokens per second
PERIOD_S = 60.0


@pytest.fixture(params=["redis", "local"])
def store(request, redis_client):
    """The contract holds for the Redis store and the in-process stand-in alike."""
    if request.param == "redis":
        return RedisBucketStore(redis_client, period_s=PERIOD_S)
    return LocalBucketStore(period_s=PERIOD_S, clock_ms=lambda: 0)


def drain(store, tokens: int, now_ms: int) -> int:
    taken = 0
    while store.acquire(SCOPE, tokens, now_ms=now_ms).allowed:
        taken += 1
    return taken


def test_starts_full_and_admits_a_burst_up_to_capacity(store) -> None:
    assert drain(store, 1, now_ms=0) == 60  # the request bucket binds first


def test_token_bucket_binds_when_requests_are_large(store) -> None:
    assert drain(store, 1000, now_ms=0) == 6


def test_refill_is_continuous_and_the_wait_says_when(store) -> None:
    drain(store, 100, now_ms=0)
    denied = store.acquire(SCOPE, 100, now_ms=0)
    assert not denied.allowed and 999 <= denied.wait_ms <= 1001
    assert not store.acquire(SCOPE, 100, now_ms=500).allowed
    assert store.acquire(SCOPE, 100, now_ms=1000).allowed


def test_refill_is_capped_at_capacity(store) -> None:
    assert store.acquire(SCOPE, 6000, now_ms=0).allowed
    # An hour idle refills to the cap, not beyond: one full-size request, then nothing.
    assert store.acquire(SCOPE, 6000, now_ms=3_600_000).allowed
    assert not store.acquire(SCOPE, 1, now_ms=3_600_000).allowed


def test_both_buckets_are_taken_or_neither(store) -> None:
    drain(store, 1, now_ms=0)  # requests empty, tokens nearly full
    assert not store.acquire(SCOPE, 50, now_ms=0).allowed
    # the refused call took no tokens: after one request refills, 5,940 tokens remain
    assert store.acquire(SCOPE, 5940, now_ms=1000).allowed


def test_a_request_above_capacity_can_never_fit(store) -> None:
    decision = store.acquire(SCOPE, 6001, now_ms=0)
    assert decision == Decision(allowed=False, never=True)


def test_cooldown_shuts_the_scope_and_reopens_it_empty(redis_client) -> None:
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    store.settle(SCOPE, cooldown_ms=5000, now_ms=10_000)
    during = store.acquire(SCOPE, 1, now_ms=12_000)
    assert not during.allowed and during.wait_ms == 3000
    # At the end it is empty and refills at the steady rate: no burst of waiting workers.
    assert not store.acquire(SCOPE, 1, now_ms=15_000).allowed
    assert store.acquire(SCOPE, 1, now_ms=16_000).allowed
    assert not store.acquire(SCOPE, 1, now_ms=16_000).allowed


def test_a_shorter_cooldown_never_shortens_a_longer_one(redis_client) -> None:
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    store.settle(SCOPE, cooldown_ms=5000, now_ms=0)
    store.settle(SCOPE, cooldown_ms=1000, now_ms=100)
    assert store.acquire(SCOPE, 1, now_ms=2000).wait_ms == 3000


def test_refund_gives_tokens_back_but_not_the_request(redis_client) -> None:
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    assert store.acquire(SCOPE, 6000, now_ms=0).allowed
    store.settle(SCOPE, refund_tokens=6000, now_ms=0)
    assert drain(store, 100, now_ms=0) == 59  # 60 requests minus the one that was used


def test_a_report_raises_levels_by_what_was_admitted_after_that_call(redis_client) -> None:
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    first = store.acquire(SCOPE, 1, now_ms=0).admission
    assert first is not None and (first.requests_left, first.tokens_left) == (59, 5999)
    assert drain(store, 1, now_ms=0) == 59  # 59 more admitted after the first call
    # A sliding-window provider whose window moved on reports 70 left after the first call;
    # we have admitted 59 since, so 11 are ours to use now.
    store.settle(SCOPE, remaining_requests=70, admission=first, now_ms=0)
    assert drain(store, 1, now_ms=0) == 11


def test_a_refilling_provider_whose_report_lags_never_raises_us(redis_client) -> None:
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    first = store.acquire(SCOPE, 1, now_ms=0).admission
    assert drain(store, 1, now_ms=0) == 59
    # The first call's answer arrives 3 s later, after the others: the provider had 59 left
    # after admitting it, and we have admitted 59 since; our own refill of 3 stands.
    store.settle(SCOPE, remaining_requests=59, admission=first, now_ms=3000)
    assert drain(store, 1, now_ms=3000) == 3


def test_a_report_lowers_levels_counting_the_refill_since_that_call(redis_client) -> None:
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    first = store.acquire(SCOPE, 1, now_ms=0).admission
    # Someone else shares the provider's limit: 10 left after our call, 2 s ago.
    store.settle(SCOPE, remaining_requests=10, admission=first, now_ms=2000)
    assert drain(store, 1, now_ms=2000) == 12  # 10 + 2 s of refill


def test_a_report_from_before_the_key_was_recreated_is_ignored(redis_client) -> None:
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    stale = Admission(requests_total=500, tokens_total=9000, at_ms=0)
    store.settle(SCOPE, remaining_requests=0, remaining_tokens=0, admission=stale, now_ms=0)
    assert drain(store, 1, now_ms=0) == 60


def test_the_key_expires_once_it_would_be_full_again(redis_client) -> None:
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    store.acquire(SCOPE, 1)
    ttl_ms = redis_client.pttl(bucket_key(SCOPE.name))
    assert 0 < ttl_ms <= 2 * PERIOD_S * 1000


def test_server_clock_is_used_without_now_ms(redis_client) -> None:
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    assert store.acquire(SCOPE, 10).allowed
    ts_ms = float(redis_client.hget(bucket_key(SCOPE.name), "ts"))
    server_s, _ = redis_client.time()
    assert abs(ts_ms / 1000 - server_s) < 5
