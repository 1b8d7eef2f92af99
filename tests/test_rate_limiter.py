"""The waiting policy over a bucket store: fake store, fake clock, fake sleep."""

from __future__ import annotations

import random
import threading

import pytest

from corral.config import RateScope
from corral.errors import InvalidRequestError
from workers.buckets import Admission, Decision
from workers.rate_limit_headers import Remaining, parse_remaining
from workers.rate_limiter import CapacityWaitExceededError, RateLimiter

SCOPE = RateScope(name="p:m", rpm=100, tpm=10_000)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_s += seconds


class ScriptedStore:
    """Answers acquire from a list; records settle calls."""

    def __init__(self, *decisions: Decision) -> None:
        self.decisions = list(decisions)
        self.settled: list[dict] = []

    def acquire(self, scope, tokens, now_ms=None) -> Decision:
        return self.decisions.pop(0) if self.decisions else Decision(allowed=True)

    def settle(self, scope, **kwargs) -> None:
        self.settled.append(kwargs)

    def inline_args(self, scope) -> None:
        return None


def limiter_for(store, clock: FakeClock, max_wait_s: float = 60.0) -> RateLimiter:
    return RateLimiter(store, max_wait_s=max_wait_s, sleep=clock.sleep, clock=clock,
                       rng=random.Random(3))


def test_waits_what_the_store_says_plus_a_little_jitter_then_takes() -> None:
    clock = FakeClock()
    store = ScriptedStore(Decision(False, wait_ms=200), Decision(False, wait_ms=50))
    limiter_for(store, clock).acquire(SCOPE, 10)
    assert len(clock.slept) == 2
    assert 0.2 <= clock.slept[0] <= 0.22 and 0.05 <= clock.slept[1] <= 0.055


def test_gives_up_rather_than_wait_past_the_limit() -> None:
    clock = FakeClock()
    store = ScriptedStore(*[Decision(False, wait_ms=4000)] * 10)
    with pytest.raises(CapacityWaitExceededError):
        limiter_for(store, clock, max_wait_s=10).acquire(SCOPE, 10)
    assert clock.now_s <= 10


def test_a_request_that_never_fits_is_permanent() -> None:
    with pytest.raises(InvalidRequestError, match="allows 10000"):
        limiter_for(ScriptedStore(Decision(False, never=True)), FakeClock()).acquire(SCOPE, 10**6)


def test_a_429_refunds_tokens_and_starts_a_shared_cooldown() -> None:
    store = ScriptedStore()
    limiter = limiter_for(store, FakeClock())
    admission = Admission(5, 500, 1000)
    limiter.settle(SCOPE, 321, admission, headers={}, rate_limited=True, retry_after_s=2.5)
    limiter.settle(SCOPE, 7, None, headers={}, rate_limited=True)
    assert store.settled == [
        {"refund_tokens": 321, "cooldown_ms": 2500, "remaining_requests": None,
         "remaining_tokens": None, "admission": admission, "pipe": None},
        {"refund_tokens": 7, "cooldown_ms": 1000, "remaining_requests": None,
         "remaining_tokens": None, "admission": None, "pipe": None}]


def test_an_answer_passes_on_what_the_provider_has_left_and_silence_costs_nothing() -> None:
    store = ScriptedStore()
    limiter = limiter_for(store, FakeClock())
    limiter.settle(SCOPE, 40, None, headers={})
    limiter.settle(SCOPE, 40, None, headers={"x-ratelimit-remaining-tokens": "junk"})
    assert store.settled == []
    limiter.settle(SCOPE, 40, None, headers={"x-ratelimit-remaining-requests": "50"})
    assert store.settled == [{"refund_tokens": None, "cooldown_ms": None,
                              "remaining_requests": 50, "remaining_tokens": None,
                              "admission": None, "pipe": None}]


def test_a_report_is_synced_only_when_a_bucket_may_bind_or_the_provider_has_less() -> None:
    store = ScriptedStore()
    limiter = limiter_for(store, FakeClock())
    # SCOPE: 100 requests and 10,000 tokens a period; the slack is a tenth of each.
    headers = {"x-ratelimit-remaining-requests": "85", "x-ratelimit-remaining-tokens": "8900"}
    full = Admission(1, 40, 0, requests_left=90, tokens_left=9500)
    limiter.settle(SCOPE, 40, full, headers=headers)
    assert store.settled == []  # more than half left, and the provider about the same
    synced = [
        Admission(1, 40, 0, requests_left=49, tokens_left=9500),  # requests under half
        Admission(1, 40, 0, requests_left=90, tokens_left=4999),  # tokens under half
        Admission(1, 40, 0, requests_left=96, tokens_left=9500),  # provider 11 requests lower
        Admission(1, 40, 0, requests_left=90, tokens_left=10_000),  # 1,100 tokens lower
        Admission(1, 40, 0),  # levels not known (taken by an older worker)
    ]
    for admission in synced:
        limiter.settle(SCOPE, 40, admission, headers=headers)
    assert [call["admission"] for call in store.settled] == synced
    store.settled.clear()
    limiter.settle(SCOPE, 40, Admission(1, 40, 0, requests_left=96, tokens_left=9500),
                   headers={"x-ratelimit-remaining-tokens": "9000"})
    assert store.settled == []  # an unreported dimension is not compared
    limiter.settle(SCOPE, 40, full, headers=headers, rate_limited=True)
    assert [call["refund_tokens"] for call in store.settled] == [40]  # a 429 always settles


def test_one_poller_per_scope_per_process() -> None:
    inside = threading.Semaphore(1)
    overlaps: list[bool] = []

    class CountingStore(ScriptedStore):
        def acquire(self, scope, tokens, now_ms=None) -> Decision:
            overlaps.append(not inside.acquire(blocking=False))
            try:
                return Decision(allowed=True)
            finally:
                inside.release()

    limiter = RateLimiter(CountingStore(), max_wait_s=5)
    threads = [threading.Thread(target=lambda: [limiter.acquire(SCOPE, 1) for _ in range(200)])
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(overlaps) == 1600 and not any(overlaps)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"x-ratelimit-remaining-requests": "59", "x-ratelimit-remaining-tokens": "149984"},
     Remaining(59, 149984)),
    ({"x-ratelimit-remaining-requests": " 3 "}, Remaining(3, None)),
    ({"x-ratelimit-remaining-requests": "-1", "x-ratelimit-remaining-tokens": "lots"},
     Remaining(None, None)),
    ({"x-ratelimit-remaining-tokens": "1.5"}, Remaining(None, None)),
    ({"x-ratelimit-remaining-tokens": ""}, Remaining(None, None)),
    ({}, Remaining(None, None)),
])
def test_parse_remaining_headers(headers: dict[str, str], expected: Remaining) -> None:
    assert parse_remaining(headers) == expected


def test_a_line_takes_capacity_as_it_starts_only_while_no_slot_of_the_process_waits() -> None:
    polling, release = threading.Event(), threading.Event()

    class InlineStore(ScriptedStore):
        def acquire(self, scope, tokens, now_ms=None) -> Decision:
            polling.set()
            release.wait(5)
            return Decision(allowed=True)

        def inline_args(self, scope) -> tuple[str, list[int]]:
            return "bucket", [60, 6000, 60000]

    limiter = RateLimiter(InlineStore(), max_wait_s=5)
    assert limiter.inline_args(SCOPE) == ("bucket", [60, 6000, 60000])
    waiter = threading.Thread(target=limiter.acquire, args=(SCOPE, 1))
    waiter.start()
    assert polling.wait(5)
    assert limiter.inline_args(SCOPE) is None  # the waiting slot goes first
    release.set()
    waiter.join()
    assert limiter.inline_args(SCOPE) == ("bucket", [60, 6000, 60000])
