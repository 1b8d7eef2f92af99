"""Waiting for rate-limit capacity: the policy over a bucket store, cheap on Redis.

Within one process a single task slot per scope polls the store; the others queue on a local
gate, so the fleet sends Redis about one call per process per refill instead of one per slot.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping

from corral.config import RateScope
from corral.errors import InvalidRequestError
from workers.buckets import BucketStore
from workers.rate_limit_headers import parse_remaining

DEFAULT_COOLDOWN_MS = 1000  # a 429 without Retry-After still shuts the scope briefly
TIGHTEN_BELOW_SHARE = 0.1  # only a nearly empty provider bucket is worth a Redis call
POLL_JITTER_SHARE = 0.1  # spreads the pollers of different processes apart


class NoCallMadeError(Exception):
    """The provider was not called; the job goes back to its queue, no attempt spent."""

    def __init__(self, message: str, *, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CapacityWaitExceededError(NoCallMadeError):
    """No capacity within CORRAL_MAX_CAPACITY_WAIT_S (or a cooldown runs longer)."""


class ShuttingDownError(NoCallMadeError):
    """The worker is stopping: a job still waiting for capacity goes back to its queue."""


class RateLimiter:
    """Admits provider calls under a scope's limits; learns from 429s and provider headers."""

    def __init__(self, store: BucketStore, *, max_wait_s: float,
                 sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self._store = store
        self._max_wait_s = max_wait_s
        self._stopping = threading.Event()
        self._sleep = sleep or self._sleep_unless_stopping
        self._clock = clock
        self._rng = rng or random.Random()
        self._gates: dict[str, threading.Lock] = {}
        self._gates_lock = threading.Lock()

    def stop_waiting(self) -> None:
        """Make every current and future wait for capacity raise ShuttingDownError."""
        self._stopping.set()

    def _sleep_unless_stopping(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise ShuttingDownError("worker is shutting down")

    def _gate(self, scope: RateScope) -> threading.Lock:
        with self._gates_lock:
            return self._gates.setdefault(scope.name, threading.Lock())

    def acquire(self, scope: RateScope, tokens: int) -> float:
        """Block until one request and `tokens` tokens are taken; returns the seconds waited.

        Raises:
            CapacityWaitExceededError: no capacity within the configured wait.
            InvalidRequestError: the request is larger than the scope's TPM.
            ShuttingDownError: the worker is stopping.
        """
        start = self._clock()
        gate = self._gate(scope)
        while not gate.acquire(timeout=1.0):
            if self._stopping.is_set():
                raise ShuttingDownError("worker is shutting down")
            if self._clock() - start > self._max_wait_s:
                raise CapacityWaitExceededError(
                    f"no {scope.name} capacity within {self._max_wait_s:g} s", retry_after_s=1)
        try:
            while True:
                decision = self._store.acquire(scope, tokens)
                if decision.allowed:
                    return self._clock() - start
                if decision.never:
                    raise InvalidRequestError(
                        f"request needs {tokens} tokens but {scope.name} allows {scope.tpm} "
                        "per period")
                wait_s = decision.wait_ms / 1000 * (1 + self._rng.uniform(0, POLL_JITTER_SHARE))
                if self._clock() - start + wait_s > self._max_wait_s:
                    raise CapacityWaitExceededError(
                        f"no {scope.name} capacity within {self._max_wait_s:g} s",
                        retry_after_s=wait_s)
                self._sleep(wait_s)
        finally:
            gate.release()

    def rejected(self, scope: RateScope, tokens: int, retry_after_s: float | None) -> None:
        """The provider answered 429: it charged no tokens, and every worker must pause."""
        cooldown_ms = DEFAULT_COOLDOWN_MS if retry_after_s is None else int(retry_after_s * 1000)
        self._store.settle(scope, refund_tokens=tokens, cooldown_ms=cooldown_ms)

    def admitted(self, scope: RateScope, headers: Mapping[str, str]) -> None:
        """Lower the shared levels when the provider says it has less left than we think."""
        remaining = parse_remaining(headers)
        low_requests = remaining.requests is not None \
            and remaining.requests < scope.rpm * TIGHTEN_BELOW_SHARE
        low_tokens = remaining.tokens is not None \
            and remaining.tokens < scope.tpm * TIGHTEN_BELOW_SHARE
        if low_requests or low_tokens:
            self._store.settle(scope, remaining_requests=remaining.requests,
                               remaining_tokens=remaining.tokens)

