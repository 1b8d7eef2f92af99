"""Per-model RPM/TPM limiters: a continuous token bucket and a strict sliding window.

Both meters share one small interface and never read a clock: every call takes ``now_s``
(seconds on any monotonic scale), so tests drive them with a fake clock.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Protocol


class Meter(Protocol):
    """One limited quantity (requests or tokens) of one model."""

    limit: int

    def wait_s(self, amount: int, now_s: float) -> float:
        """Seconds until ``amount`` fits: 0.0 if it fits now, inf if it never can."""
        ...

    def take(self, amount: int, now_s: float) -> None:
        """Charge ``amount`` at ``now_s``."""
        ...

    def remaining(self, now_s: float) -> float:
        """How much could be charged right now."""
        ...

    def reset_s(self, now_s: float) -> float:
        """Seconds until the meter is back to its full limit if nothing more is charged."""
        ...


class TokenBucket:
    """Capacity ``limit``, refilled continuously at ``limit / period_s``, starting full."""

    def __init__(self, limit: int, period_s: float) -> None:
        self.limit = limit
        self._rate_per_s = limit / period_s
        self._level = float(limit)
        self._updated_s: float | None = None

    def _refill(self, now_s: float) -> None:
        if self._updated_s is None:
            self._updated_s = now_s
        elif now_s > self._updated_s:
            elapsed_s = now_s - self._updated_s
            self._level = min(self.limit, self._level + elapsed_s * self._rate_per_s)
            self._updated_s = now_s

    def wait_s(self, amount: int, now_s: float) -> float:
        self._refill(now_s)
        if amount > self.limit:
            return math.inf
        deficit = amount - self._level
        return 0.0 if deficit <= 0 else deficit / self._rate_per_s

    def take(self, amount: int, now_s: float) -> None:
        self._refill(now_s)
        self._level -= amount

    def remaining(self, now_s: float) -> float:
        self._refill(now_s)
        return max(0.0, self._level)

    def reset_s(self, now_s: float) -> float:
        self._refill(now_s)
        return (self.limit - self._level) / self._rate_per_s


class SlidingWindow:
    """Never more than ``limit`` charged in any trailing ``period_s``.

    A charge at ``t`` counts while ``now_s - t < period_s``, so it expires exactly at
    ``t + period_s``.
    """

    def __init__(self, limit: int, period_s: float) -> None:
        self.limit = limit
        self._period_s = period_s
        self._charges: collections.deque[tuple[float, int]] = collections.deque()
        self._used = 0

    def _expire(self, now_s: float) -> None:
        cutoff_s = now_s - self._period_s
        while self._charges and self._charges[0][0] <= cutoff_s:
            self._used -= self._charges.popleft()[1]

    def wait_s(self, amount: int, now_s: float) -> float:
        self._expire(now_s)
        excess = self._used + amount - self.limit
        if excess <= 0:
            return 0.0
        if amount > self.limit:
            return math.inf
        freed = 0
        for charged_s, charged in self._charges:
            freed += charged
            if freed >= excess:
                return charged_s + self._period_s - now_s
        return math.inf  # unreachable: the whole deque frees _used >= excess

    def take(self, amount: int, now_s: float) -> None:
        self._expire(now_s)
        self._charges.append((now_s, amount))
        self._used += amount

    def remaining(self, now_s: float) -> float:
        self._expire(now_s)
        return max(0, self.limit - self._used)

    def reset_s(self, now_s: float) -> float:
        self._expire(now_s)
        if not self._charges:
            return 0.0
        return self._charges[-1][0] + self._period_s - now_s


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of one admission: allowed, or how long to wait and which limit said no."""

    allowed: bool
    wait_s: float = 0.0
    limited_by: str | None = None  # "requests" or "tokens" when refused


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Limit, remaining and reset per dimension, for the x-ratelimit-* headers."""

    limit_requests: int | None
    limit_tokens: int | None
    remaining_requests: int | None
    remaining_tokens: int | None
    reset_requests_s: float | None
    reset_tokens_s: float | None


class RateLimiter:
    """Checks a model's request and token meters together; a None meter is unlimited."""

    def __init__(self, requests: Meter | None, tokens: Meter | None) -> None:
        self.requests = requests
        self.tokens = tokens

    def try_acquire(self, requests: int, tokens: int, now_s: float) -> Decision:
        """Admit ``requests`` calls costing ``tokens`` if both meters have room, atomically.

        A refused call still uses its request when the request meter had room, because
        providers count unsuccessful calls against RPM; it never charges tokens.

        Args:
            requests: Request units to charge (1 per call).
            tokens: Tokens to charge: prompt plus the output ceiling.
            now_s: The current time in seconds.

        Returns:
            Decision(allowed=True), or the wait in seconds and the limit that refused.
        """
        wait_requests_s = self.requests.wait_s(requests, now_s) if self.requests else 0.0
        wait_tokens_s = self.tokens.wait_s(tokens, now_s) if self.tokens else 0.0
        if wait_requests_s == 0.0 and wait_tokens_s == 0.0:
            if self.requests:
                self.requests.take(requests, now_s)
            if self.tokens:
                self.tokens.take(tokens, now_s)
            return Decision(allowed=True)
        if wait_requests_s == 0.0 and self.requests:
            self.requests.take(requests, now_s)
        limited_by = "requests" if wait_requests_s >= wait_tokens_s else "tokens"
        return Decision(False, max(wait_requests_s, wait_tokens_s), limited_by)

    def snapshot(self, now_s: float) -> Snapshot:
        """The current state of both meters."""
        req, tok = self.requests, self.tokens
        return Snapshot(
            limit_requests=req.limit if req else None,
            limit_tokens=tok.limit if tok else None,
            remaining_requests=math.floor(req.remaining(now_s)) if req else None,
            remaining_tokens=math.floor(tok.remaining(now_s)) if tok else None,
            reset_requests_s=req.reset_s(now_s) if req else None,
            reset_tokens_s=tok.reset_s(now_s) if tok else None,
        )


def make_limiter(kind: str, rpm: int | None, tpm: int | None, period_s: float) -> RateLimiter:
    """Build a RateLimiter of ``kind`` ("bucket" or "window") for one model's limits."""
    meter: type[TokenBucket] | type[SlidingWindow]
    meter = TokenBucket if kind == "bucket" else SlidingWindow
    return RateLimiter(
        requests=meter(rpm, period_s) if rpm is not None else None,
        tokens=meter(tpm, period_s) if tpm is not None else None,
    )
