"""The least time a server limiter needs to admit a batch, by replay on a virtual clock."""

from __future__ import annotations

import math
from collections.abc import Sequence

from simulator.limiters import RateLimiter, make_limiter


def earliest_fit_s(limiter: RateLimiter, tokens: int, not_before_s: float) -> float:
    """The first moment at or after ``not_before_s`` when one request of ``tokens`` fits.

    Asks the meters directly, so looking never charges anything (a refused ``try_acquire``
    would use up a request).

    Raises:
        ValueError: the request can never fit.
    """
    meters = [(m, n) for m, n in ((limiter.requests, 1), (limiter.tokens, tokens)) if m]
    now_s = not_before_s
    while True:
        wait_s = max((meter.wait_s(amount, now_s) for meter, amount in meters), default=0.0)
        if wait_s == 0.0:
            return now_s
        if math.isinf(wait_s):
            raise ValueError(f"a request of {tokens} tokens never fits the limits")
        # Float rounding can leave a sliver to wait that no longer moves the clock.
        now_s = max(now_s + wait_s, math.nextafter(now_s, math.inf))


def least_admission_time_s(
    charges: Sequence[int], *, kind: str, rpm: int, tpm: int, period_s: float
) -> float:
    """Seconds from the first admission to the last when every request goes in, in order,
    at the earliest moment the simulator's own ``kind`` limiter (starting full) admits it.

    Args:
        charges: Tokens each request is charged (prompt estimate + max_tokens), in order.
        kind: "bucket" or "window", as the simulator's ``--limiter``.
        rpm: Requests allowed per period.
        tpm: Tokens allowed per period.
        period_s: The limiter period in seconds.
    """
    limiter = make_limiter(kind, rpm, tpm, period_s)
    now_s = 0.0
    for tokens in charges:
        now_s = earliest_fit_s(limiter, tokens, now_s)
        if not limiter.try_acquire(1, tokens, now_s).allowed:
            raise AssertionError("the limiter refused a request its meters said fits")
    return now_s
