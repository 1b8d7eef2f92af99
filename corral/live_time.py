"""How long the live lane needs for some lines under a scope's limits: the planner's and the
batch lane's hedge clock."""

from __future__ import annotations

PERIOD_S = 60.0  # providers' limits are per minute


def live_seconds(lines: int, tokens: float, *, rpm: int, tpm: int) -> float:
    """Least time to admit `lines` requests of `tokens` reserved tokens in all: the buckets
    start full, then refill at the limit (provider latency not included)."""
    if lines <= 0:
        return 0.0
    over_requests = (lines - rpm) * PERIOD_S / rpm
    over_tokens = (tokens - tpm) * PERIOD_S / tpm
    return max(over_requests, over_tokens, 0.0)


# The live lane runs a few per cent under its limits' ceiling (50,000 lines: 110 s against
# 106.7 s, bench/results/batch_lane.txt) and a hedge's lines start a little late: a hedge
# plans 10% more than the ceiling's time.
LIVE_SLACK = 1.1


def hedge_seconds(lines: int, tokens: float, *, rpm: int, tpm: int) -> float:
    """The live time a hedge plans for `lines` requests of `tokens` tokens in all."""
    return live_seconds(lines, tokens, rpm=rpm, tpm=tpm) * LIVE_SLACK
