"""Rates, ETA and latency quantiles of a batch from counter samples (pure; clock injected)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from corral.stats import LATENCY_BUCKETS_MS, latency_bucket

Counters = Mapping[str, Mapping[str, int]]  # model → counter → value (corral.stats.by_model)


@dataclass(frozen=True)
class Sample:
    """The batch's counters as read at one moment of the sampler's clock."""

    at_s: float
    lines_done: int
    counters: Counters


class RateTracker:
    """Keeps the samples of the last `window_s` (plus one older) to turn counters into rates.

    A rate is (newest − oldest kept) / (time between them): over the last window once the
    watch has run that long, since its first sample before that. Counters that went down (a
    batch deleted and resubmitted under the same key cannot, but a flushed Redis can) count as
    no progress rather than negative progress.
    """

    def __init__(self, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self._clock = clock
        self._samples: deque[Sample] = deque()

    def add(self, lines_done: int, counters: Counters) -> Sample:
        """Record the counters as of now; drops samples no longer needed for the window."""
        sample = Sample(self._clock(), lines_done, counters)
        self._samples.append(sample)
        # Keep the newest sample that is at least window_s old as the base of every rate.
        while len(self._samples) > 2 and self._samples[1].at_s <= sample.at_s - self.window_s:
            self._samples.popleft()
        return sample

    def _span(self) -> tuple[Sample, Sample, float] | None:
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        elapsed_s = last.at_s - first.at_s
        return (first, last, elapsed_s) if elapsed_s > 0 else None

    def rate_per_s(self, model: str, *counters: str) -> float | None:
        """Growth per second of the sum of `counters` of `model`; None before two samples."""
        span = self._span()
        if span is None:
            return None
        first, last, elapsed_s = span

        def total(sample: Sample) -> int:
            values = sample.counters.get(model, {})
            return sum(values.get(counter, 0) for counter in counters)

        return max(total(last) - total(first), 0) / elapsed_s

    def lines_per_s(self) -> float | None:
        """Lines ended (completed or failed) per second; None before two samples."""
        span = self._span()
        if span is None:
            return None
        first, last, elapsed_s = span
        return max(last.lines_done - first.lines_done, 0) / elapsed_s

    def eta_s(self, lines_total: int) -> float | None:
        """Seconds until the last line ends at the recent pace; None while nothing is known.

        Zero once every line has ended; None when no line ended within the window (a stalled
        batch has no ETA rather than an infinite one).
        """
        if not self._samples:
            return None
        left = lines_total - self._samples[-1].lines_done
        if left <= 0:
            return 0.0
        pace = self.lines_per_s()
        if not pace:
            return None
        return left / pace


def latency_quantile_ms(counters: Mapping[str, int], quantile: float) -> float | None:
    """The upper bound (ms) of the latency bucket holding that quantile of the calls.

    The buckets are corral.stats' non-cumulative `latency_le_<ms>` counters; the answer is as
    coarse as they are (p50 = 250 means "between 100 and 250 ms"), and may be `inf`. None when
    no call was timed.
    """
    if not 0 < quantile <= 1:
        raise ValueError("quantile must lie in (0, 1]")
    counts = [(bound, counters.get(latency_bucket(bound), 0)) for bound in LATENCY_BUCKETS_MS]
    calls = sum(count for _, count in counts)
    if calls == 0:
        return None
    rank = quantile * calls
    seen = 0
    for bound, count in counts:
        seen += count
        if seen >= rank:
            return bound
    return math.inf


def format_duration_s(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `42s`; `-` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    whole = max(round(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
