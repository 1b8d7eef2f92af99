"""The provider simulator's parts, pure, with a fake clock: limiters, headers, completions,
faults and config."""

from __future__ import annotations

import math

import pytest

from simulator.completions import (
    PromptCache,
    count_prompt_tokens,
    make_choices,
    messages_digest,
)
from simulator.config import ModelSpec, parse_model_spec
from simulator.faults import HANG, QUOTA, Fault, FaultSettings, RandomFaults, ScriptedFaults
from simulator.headers import format_go_duration, retry_after_headers
from simulator.limiters import SlidingWindow, TokenBucket, make_limiter

# --- limiters -------------------------------------------------------------------------------


def test_bucket_starts_full() -> None:
    bucket = TokenBucket(10, period_s=60)
    assert bucket.wait_s(10, now_s=100.0) == 0.0
    assert bucket.remaining(100.0) == 10


def test_bucket_refills_continuously() -> None:
    bucket = TokenBucket(10, period_s=60)
    bucket.take(10, now_s=0.0)
    assert bucket.wait_s(1, now_s=0.0) == pytest.approx(6.0)
    assert bucket.remaining(3.0) == pytest.approx(0.5)
    assert bucket.wait_s(1, now_s=3.0) == pytest.approx(3.0)
    assert bucket.wait_s(1, now_s=6.0) == 0.0


def test_bucket_refill_is_capped_at_capacity() -> None:
    bucket = TokenBucket(10, period_s=60)
    bucket.take(4, now_s=0.0)
    assert bucket.remaining(10_000.0) == 10
    assert bucket.reset_s(10_000.0) == 0.0


def test_bucket_never_fits_more_than_capacity() -> None:
    assert TokenBucket(10, period_s=60).wait_s(11, now_s=0.0) == math.inf


def test_window_charge_expires_exactly_one_period_later() -> None:
    window = SlidingWindow(5, period_s=10)
    window.take(5, now_s=1.0)
    assert window.wait_s(1, now_s=10.999) == pytest.approx(0.001)
    assert window.wait_s(1, now_s=11.0) == 0.0


def test_window_wait_is_time_until_enough_charges_expire() -> None:
    window = SlidingWindow(10, period_s=60)
    window.take(4, now_s=0.0)
    window.take(4, now_s=10.0)
    window.take(2, now_s=20.0)
    assert window.wait_s(3, now_s=30.0) == pytest.approx(30.0)  # the first charge frees 4
    assert window.wait_s(5, now_s=30.0) == pytest.approx(40.0)  # needs the second one too
    assert window.wait_s(11, now_s=30.0) == math.inf


def test_window_never_admits_more_than_limit_in_any_trailing_period() -> None:
    limiter = make_limiter("window", rpm=5, tpm=None, period_s=10.0)
    admitted: list[float] = []
    now_s = 0.0
    for _ in range(400):
        if limiter.try_acquire(1, 0, now_s).allowed:
            admitted.append(now_s)
        now_s += 0.37
    assert len(admitted) > 5 * 10  # it keeps admitting as the window slides
    for start_s in admitted:
        assert sum(1 for t in admitted if start_s <= t < start_s + 10.0) <= 5


@pytest.fixture(params=["bucket", "window"])
def limiter_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_limiter_admits_up_to_the_limit_then_says_how_long_to_wait(limiter_kind: str) -> None:
    limiter = make_limiter(limiter_kind, rpm=3, tpm=None, period_s=60.0)
    assert all(limiter.try_acquire(1, 0, 0.0).allowed for _ in range(3))
    refused = limiter.try_acquire(1, 0, 0.0)
    assert not refused.allowed
    assert refused.limited_by == "requests"
    assert refused.wait_s == pytest.approx(20.0 if limiter_kind == "bucket" else 60.0)
    assert limiter.try_acquire(1, 0, refused.wait_s).allowed


def test_limiter_refusal_uses_a_request_but_charges_no_tokens(limiter_kind: str) -> None:
    limiter = make_limiter(limiter_kind, rpm=10, tpm=100, period_s=60.0)
    assert limiter.try_acquire(1, 80, 0.0).allowed
    refused = limiter.try_acquire(1, 50, 0.0)
    assert (refused.allowed, refused.limited_by) == (False, "tokens")
    snapshot = limiter.snapshot(0.0)
    assert (snapshot.remaining_requests, snapshot.remaining_tokens) == (8, 20)


def test_limiter_without_limits_is_a_no_op() -> None:
    limiter = make_limiter("bucket", rpm=None, tpm=None, period_s=60.0)
    assert all(limiter.try_acquire(1, 10**9, 0.0).allowed for _ in range(1000))


# --- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.02, "20ms"),
        (0.0004, "1ms"),  # rounded up: never tell a client to come back early
        (0.1 * 3, "300ms"),  # float noise must not round up to 301ms
        (1, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (60, "1m0s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3723.25, "1h2m3.25s"),
    ],
)
def test_format_go_duration(seconds: float, expected: str) -> None:
    assert format_go_duration(seconds) == expected


@pytest.mark.parametrize(
    ("wait_ms", "retry_after"), [(0, "1"), (200, "1"), (1000, "1"), (1001, "2"), (19970, "20")]
)
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(
    wait_ms: int, retry_after: str
) -> None:
    assert dict(retry_after_headers(wait_ms)) == {
        "retry-after": retry_after,
        "retry-after-ms": str(wait_ms),
    }


# --- completions ----------------------------------------------------------------------------


def test_count_prompt_tokens_is_ceil_of_chars_over_four() -> None:
    assert count_prompt_tokens([{"role": "user", "content": "abcde"}]) == 2
    assert count_prompt_tokens([{"role": "user", "content": "abcd"}]) == 1
    assert count_prompt_tokens([{"role": "assistant", "content": None}]) == 0


def test_count_prompt_tokens_reads_only_text_parts() -> None:
    messages = [
        {"role": "system", "content": "abc"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "defgh"},
                {"type": "image_url", "image_url": {"url": "data:xxxxxxxxxxxxxxxx"}},
            ],
        },
    ]
    assert count_prompt_tokens(messages) == 2  # 8 characters


def test_completions_are_deterministic() -> None:
    messages = [{"role": "user", "content": "hello", "name": "a"}]
    reordered = [{"name": "a", "content": "hello", "role": "user"}]
    first = make_choices(messages_digest(messages), n=1, max_tokens=None)
    again = make_choices(messages_digest(reordered), n=1, max_tokens=None)
    other = make_choices(messages_digest([{"role": "user", "content": "bye"}]), 1, None)
    assert first == again
    assert first != other


def test_completion_length_matches_its_token_count() -> None:
    for index in range(50):
        digest = messages_digest([{"role": "user", "content": f"prompt {index}"}])
        (choice,) = make_choices(digest, n=1, max_tokens=None)
        assert 5 <= choice.completion_tokens <= 200
        assert len(choice.content) == 4 * choice.completion_tokens
        assert choice.finish_reason == "stop"


def test_max_tokens_caps_the_completion_with_finish_reason_length() -> None:
    (choice,) = make_choices(messages_digest([{"role": "user", "content": "x"}]), 1, 3)
    assert (choice.completion_tokens, choice.finish_reason, len(choice.content)) == (
        3,
        "length",
        12,
    )


def test_n_gives_distinct_choices() -> None:
    choices = make_choices(
        messages_digest([{"role": "user", "content": "x"}]), n=3, max_tokens=None
    )
    assert len({choice.content for choice in choices}) == 3


def test_prompt_cache_counts_a_repeated_long_system_prompt_in_blocks_of_128() -> None:
    cache = PromptCache()
    long_prompt = [{"role": "system", "content": "s" * 2100}, {"role": "user", "content": "q"}]
    assert cache.cached_tokens(long_prompt) == 0
    assert cache.cached_tokens(long_prompt) == 512  # 525 tokens, rounded down to 4 * 128
    short = [{"role": "system", "content": "s" * 1000}]
    assert cache.cached_tokens(short) == cache.cached_tokens(short) == 0
    user_first = [{"role": "user", "content": "s" * 2100}]
    assert cache.cached_tokens(user_first) == cache.cached_tokens(user_first) == 0


# --- faults and config ----------------------------------------------------------------------


def test_scripted_fail_answers_the_first_k_calls_then_lets_through() -> None:
    scripted = ScriptedFaults()
    text = "please [[sim:fail=503,times=2]]"
    digest = messages_digest([{"role": "user", "content": text}])
    assert scripted.check(text, digest) == Fault(503, "server_error")
    assert scripted.check(text, digest) == Fault(503, "server_error")
    assert scripted.check(text, digest) is None


def test_scripted_429_carries_its_retry_delay() -> None:
    scripted = ScriptedFaults()
    assert scripted.check("[[sim:fail=429,times=1]]", b"a") == Fault(429, "rate_limit", 200)
    text = "[[sim:fail=429,times=1,retry_ms=1500]]"
    assert scripted.check(text, b"b") == Fault(429, "rate_limit", 1500)


def test_scripted_hang_and_quota_always_apply() -> None:
    scripted = ScriptedFaults()
    assert [scripted.check("[[sim:hang]]", b"h") for _ in range(3)] == [HANG] * 3
    assert [scripted.check("[[sim:quota]]", b"q") for _ in range(3)] == [QUOTA] * 3
    assert scripted.check("no marker [[sim:fail=418,times=1]]", b"x") is None


def test_random_faults_replay_from_the_seed() -> None:
    settings = FaultSettings(error_rate=0.3, rate_limit_rate=0.2, hang_rate=0.1)
    first = RandomFaults(seed=7)
    second = RandomFaults(seed=7)
    assert [first.draw(settings) for _ in range(200)] == [second.draw(settings) for _ in range(200)]
    assert RandomFaults(0).draw(FaultSettings()) is None
    always = FaultSettings(error_rate=1.0)
    always_failing = RandomFaults(1)
    drawn = [always_failing.draw(always) for _ in range(50)]
    assert {fault.status for fault in drawn if fault is not None} == {500, 502, 503}
    assert None not in drawn


@pytest.mark.parametrize(
    "changes",
    [{"error_rate": -0.1}, {"error_rate": 0.7, "hang_rate": 0.7}, {"nope": 1}, {"latency_ms": "x"}],
)
def test_fault_settings_refuse_bad_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultSettings().updated(changes)


def test_parse_model_spec() -> None:
    assert parse_model_spec("gpt-4o:rpm=10,tpm=1000") == ModelSpec("gpt-4o", rpm=10, tpm=1000)
    assert parse_model_spec("m:ctx=8000").context_tokens == 8000
    assert parse_model_spec("ft:gpt-4o:org::abc") == ModelSpec("ft:gpt-4o:org::abc")
    for bad in ("m:rpm=0", "m:speed=3", "m:rpm=x", ":rpm=3"):
        with pytest.raises(ValueError):
            parse_model_spec(bad)
