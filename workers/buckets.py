"""Storage for rate-limit buckets: the fleet-wide Redis script, and an in-process stand-in."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from corral import lua_scripts
from corral.config import RateScope
from corral.lua_scripts import ScriptCalls
from corral.redis_keys import bucket_key


@dataclass(frozen=True)
class Admission:
    """Where an admitted call stands in the scope's running totals, for settling it later, and
    the levels it left (None: not known)."""

    requests_total: int
    tokens_total: int
    at_ms: int
    requests_left: int | None = None
    tokens_left: int | None = None


@dataclass(frozen=True)
class Decision:
    """The answer of one acquire: taken, or how long until it could be."""

    allowed: bool
    wait_ms: int = 0
    never: bool = False  # the request is larger than the scope's TPM
    admission: Admission | None = None


class BucketStore(Protocol):
    """Where a scope's buckets live; `now_ms` None means the store's own clock."""

    def acquire(self, scope: RateScope, tokens: int, now_ms: int | None = None) -> Decision: ...

    def settle(self, scope: RateScope, *, refund_tokens: int | None = None,
               cooldown_ms: int | None = None, remaining_requests: int | None = None,
               remaining_tokens: int | None = None, admission: Admission | None = None,
               now_ms: int | None = None, pipe: ScriptCalls | None = None) -> None:
        ...

    def inline_args(self, scope: RateScope) -> tuple[str, list[int]] | None:
        """The bucket key and [rpm, tpm, period_ms] with which another script of the same
        Redis takes capacity as `acquire` would (start_job.lua); None when the buckets live
        elsewhere."""
        ...


def _arg(value: int | None) -> str | int:
    return "" if value is None else value


class RedisBucketStore:
    """The fleet-wide buckets: one Lua call per acquire or settle, on the Redis server clock."""

    def __init__(self, client: redis.Redis, *, period_s: float) -> None:
        self._script = lua_scripts.register(client, "bucket", package="workers")
        self._period_ms = int(period_s * 1000)

    def _call(self, op: str, scope: RateScope, now_ms: int | None, *extra: str | int,
              pipe: ScriptCalls | None = None) -> list:
        keys = [bucket_key(scope.name)]
        args = [op, scope.rpm, scope.tpm, self._period_ms, _arg(now_ms), *extra]
        if pipe is not None:
            pipe.call(self._script, keys, args)
            return []
        return self._script(keys=keys, args=args)  # type: ignore[no-any-return]

    def acquire(self, scope: RateScope, tokens: int, now_ms: int | None = None) -> Decision:
        """Take one request and `tokens` tokens, both or neither."""
        allowed, wait_ms, *taken = self._call("acquire", scope, now_ms, tokens)
        admission = Admission(*map(int, taken)) if allowed == 1 else None
        return Decision(allowed=allowed == 1, wait_ms=int(wait_ms), never=allowed == -1,
                        admission=admission)

    def settle(self, scope: RateScope, *, refund_tokens: int | None = None,
               cooldown_ms: int | None = None, remaining_requests: int | None = None,
               remaining_tokens: int | None = None, admission: Admission | None = None,
               now_ms: int | None = None, pipe: ScriptCalls | None = None) -> None:
        """Refund tokens, start a cooldown, or sync to what the provider reported after the
        call admitted as `admission` (queued on `pipe` when given, sent with its other
        commands)."""
        since = [admission.requests_total, admission.tokens_total, admission.at_ms] \
            if admission else ["", "", ""]
        self._call("settle", scope, now_ms, _arg(refund_tokens), _arg(cooldown_ms),
                   _arg(remaining_requests), _arg(remaining_tokens), *since, pipe=pipe)

    def inline_args(self, scope: RateScope) -> tuple[str, list[int]]:
        """The key and limits start_job.lua takes a call's capacity with (bucket_core.lua)."""
        return bucket_key(scope.name), [scope.rpm, scope.tpm, self._period_ms]


class LocalBucketStore:
    """One process's own buckets at the full limit: what per-worker limiting amounts to.

    Kept only to measure against the shared buckets (N processes admit up to N× the limit).
    """

    def __init__(self, *, period_s: float,
                 clock_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000)) -> None:
        self._period_ms = period_s * 1000
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._levels: dict[str, tuple[float, float, float]] = {}  # scope → (r, t, ts_ms)

    def _refilled(self, scope: RateScope, now_ms: int) -> tuple[float, float]:
        r, t, ts = self._levels.get(scope.name, (scope.rpm, scope.tpm, now_ms))
        elapsed = max(now_ms - ts, 0)
        return (min(scope.rpm, r + elapsed * scope.rpm / self._period_ms),
                min(scope.tpm, t + elapsed * scope.tpm / self._period_ms))

    def acquire(self, scope: RateScope, tokens: int, now_ms: int | None = None) -> Decision:
        if tokens > scope.tpm:
            return Decision(allowed=False, never=True)
        with self._lock:
            now_ms = self._clock_ms() if now_ms is None else now_ms
            r, t = self._refilled(scope, now_ms)
            if r >= 1 and t >= tokens:
                self._levels[scope.name] = (r - 1, t - tokens, now_ms)
                return Decision(allowed=True, admission=Admission(0, 0, now_ms))
            self._levels[scope.name] = (r, t, now_ms)
        wait_ms = max((1 - r) * self._period_ms / scope.rpm,
                      (tokens - t) * self._period_ms / scope.tpm, 1)
        return Decision(allowed=False, wait_ms=int(wait_ms) + 1)

    def settle(self, scope: RateScope, **_: object) -> None:
        """Local limiting ignores what the provider says, as per-worker limiters do."""

    def inline_args(self, scope: RateScope) -> None:
        """In-process buckets: no script can take from them."""


class UnlimitedBucketStore:
    """CORRAL_RATE_LIMITER=off: every call is admitted at once."""

    def acquire(self, scope: RateScope, tokens: int, now_ms: int | None = None) -> Decision:
        return Decision(allowed=True, admission=Admission(0, 0, 0))

    def settle(self, scope: RateScope, **_: object) -> None:
        """Nothing to settle."""

    def inline_args(self, scope: RateScope) -> None:
        """Nothing to take: every call is admitted by `acquire` at once."""
