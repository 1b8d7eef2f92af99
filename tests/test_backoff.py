"""Retry-After parsing (junk included) and capped full-jitter backoff, from tables."""

from __future__ import annotations

import random

import pytest

from workers.backoff import backoff_delay_s, parse_retry_after_s


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after-ms": "junk", "retry-after": "2"}, 2.0),
    ({"retry-after-ms": "-5", "retry-after": "2"}, 2.0),
    ({"retry-after-ms": "nan"}, None),
    ({"retry-after": "inf"}, None),
    ({"retry-after": "-1"}, None),
    ({"retry-after": "soon"}, None),
    ({"retry-after": ""}, None),
    ({"retry-after": "Fri, 27 Nov 2026 09:00:10 GMT"}, 10.0),
    ({"retry-after": "Fri, 27 Nov 2026 08:59:00 GMT"}, 0.0),
    ({}, None),
])
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now_s = 1795770000.0  # 2026-11-27 09:00:00 UTC
    assert parse_retry_after_s(headers, now_s=now_s) == expected


def test_backoff_ceiling_doubles_per_attempt_and_is_capped() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    rng = Top()
    delays = [backoff_delay_s(n, base_s=1, cap_s=10, rng=rng) for n in range(1, 7)]
    assert delays == [1, 2, 4, 8, 10, 10]


def test_backoff_is_never_shorter_than_retry_after_but_never_past_the_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 10):
        delay = backoff_delay_s(attempt, base_s=0.5, cap_s=30, retry_after_s=5, rng=rng)
        assert 5 <= delay <= 30
    assert backoff_delay_s(1, base_s=0.5, cap_s=30, retry_after_s=99, rng=rng) == 30


def test_backoff_jitter_spreads_values() -> None:
    rng = random.Random(1)
    delays = {round(backoff_delay_s(4, base_s=1, cap_s=60, rng=rng), 6) for _ in range(50)}
    assert len(delays) > 40 and all(0 <= d <= 8 for d in delays)
