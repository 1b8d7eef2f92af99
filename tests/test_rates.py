"""Rates, ETA and latency quantiles from counter samples, on a fake clock (no sleeping)."""

from __future__ import annotations

import math

import pytest

from producer.rates import RateTracker, format_duration_s, latency_quantile_ms


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def counters(calls: int, tokens: int = 0) -> dict[str, dict[str, int]]:
    return {"big": {"calls": calls, "input_tokens": tokens, "output_tokens": tokens // 2}}


def test_no_rate_or_eta_pace_before_two_samples() -> None:
    tracker = RateTracker(60, FakeClock())
    assert tracker.rate_per_s("big", "calls") is None
    assert tracker.eta_s(10) is None
    tracker.add(0, counters(0))
    assert tracker.rate_per_s("big", "calls") is None
    assert tracker.lines_per_s() is None
    assert tracker.eta_s(10) is None


def test_rate_since_start_while_younger_than_the_window() -> None:
    clock = FakeClock()
    tracker = RateTracker(60, clock)
    tracker.add(0, counters(0))
    clock.advance(10)
    tracker.add(20, counters(30, 1000))
    assert tracker.rate_per_s("big", "calls") == pytest.approx(3.0)
    assert tracker.rate_per_s("big", "input_tokens", "output_tokens") == pytest.approx(150.0)
    assert tracker.lines_per_s() == pytest.approx(2.0)


def test_rate_covers_only_the_last_window_once_old_enough() -> None:
    clock = FakeClock()
    tracker = RateTracker(60, clock)
    calls = 0
    for _ in range(60):  # 10 calls/s for a minute
        tracker.add(calls, counters(calls))
        clock.advance(1)
        calls += 10
    for _ in range(120):  # then 1 call/s for two minutes
        tracker.add(calls, counters(calls))
        clock.advance(1)
        calls += 1
    tracker.add(calls, counters(calls))
    assert tracker.rate_per_s("big", "calls") == pytest.approx(1.0)


def test_eta_is_lines_left_over_the_recent_pace() -> None:
    clock = FakeClock()
    tracker = RateTracker(60, clock)
    tracker.add(0, {})
    clock.advance(5)
    tracker.add(50, {})
    assert tracker.eta_s(200) == pytest.approx(15.0)


def test_eta_is_zero_when_every_line_ended_and_unknown_when_stalled() -> None:
    clock = FakeClock()
    tracker = RateTracker(60, clock)
    tracker.add(40, {})
    clock.advance(5)
    tracker.add(40, {})
    assert tracker.eta_s(100) is None
    tracker.add(100, {})
    assert tracker.eta_s(100) == 0.0


def test_counters_that_went_down_count_as_no_progress() -> None:
    clock = FakeClock()
    tracker = RateTracker(60, clock)
    tracker.add(10, counters(10))
    clock.advance(1)
    tracker.add(0, counters(0))
    assert tracker.rate_per_s("big", "calls") == 0.0
    assert tracker.lines_per_s() == 0.0


def test_unknown_model_has_rate_zero_and_two_samples_at_one_instant_none() -> None:
    clock = FakeClock()
    tracker = RateTracker(60, clock)
    tracker.add(0, counters(0))
    tracker.add(0, counters(5))
    assert tracker.rate_per_s("big", "calls") is None
    clock.advance(1)
    tracker.add(0, counters(5))
    assert tracker.rate_per_s("small", "calls") == 0.0


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateTracker(0)


@pytest.mark.parametrize(("buckets", "quantile", "expected"), [
    ({}, 0.5, None),
    ({"latency_le_100": 1}, 0.5, 100),
    ({"latency_le_50": 5, "latency_le_250": 5}, 0.5, 50),
    ({"latency_le_50": 4, "latency_le_250": 6}, 0.5, 250),
    ({"latency_le_50": 1, "latency_le_inf": 9}, 0.5, math.inf),
    ({"latency_le_50": 9, "latency_le_60000": 1}, 0.99, 60000),
    ({"latency_le_1000": 3, "calls": 99, "latency_ms_sum": 5}, 1.0, 1000),
])
def test_latency_quantile_is_the_bound_of_its_bucket(buckets, quantile, expected) -> None:
    assert latency_quantile_ms(buckets, quantile) == expected


@pytest.mark.parametrize("quantile", [0, -0.5, 1.5])
def test_latency_quantile_must_lie_in_the_unit_interval(quantile: float) -> None:
    with pytest.raises(ValueError):
        latency_quantile_ms({"latency_le_50": 1}, quantile)


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (math.inf, "-"), (0, "0s"), (42.4, "42s"), (185, "3m05s"),
    (3720, "1h02m"), (-3, "0s"),
])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration_s(seconds) == text
