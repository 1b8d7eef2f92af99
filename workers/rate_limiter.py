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
from corral.lua_scripts import ScriptCalls
from workers.buckets import Admission, BucketStore
from workers.rate_limit_headers import Remaining, parse_remaining

DEFAULT_COOLDOWN_MS = 1000  # a 429 without Retry-After still shuts the scope briefly
POLL_JITTER_SHARE = 0.1  # spreads the pollers of different processes apart
# A provider's report is not synced while the call left more than this share of a bucket...
FAR_LEVEL_SHARE = 0.5
# ... and the provider has at most this share of the capacity less left than the call did.
SYNC_SLACK_SHARE = 0.1


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

    def acquire(self, scope: RateScope, tokens: int) -> Admission | None:
        """Block until one request and `tokens` tokens are taken; returns the admission.

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
                    return decision.admission
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

    def inline_args(self, scope: RateScope) -> tuple[str, list[int]] | None:
        """How start_job.lua may take a call's capacity in the round trip that starts the
        line (see `BucketStore.inline_args`); None when it cannot, or while a slot of this
        process waits for the scope: the waiting slot goes first.
        """
        if self._gate(scope).locked():
            return None
        return self._store.inline_args(scope)

    def settle(self, scope: RateScope, tokens: int, admission: Admission | None, *,
               headers: Mapping[str, str], rate_limited: bool = False,
               retry_after_s: float | None = None,
               pipe: ScriptCalls | None = None) -> None:
        """A call taken by `acquire` has ended: settle what it taught, if anything.

        A 429 charged no tokens and shuts the scope for every worker (Retry-After, else a
        second); an answer's x-ratelimit-remaining-* headers sync the shared levels, unless
        the sync could not matter now (`_far_from_binding`).
        """
        remaining = parse_remaining(headers)
        if not rate_limited and (remaining == Remaining(None, None)
                                 or _far_from_binding(scope, admission, remaining)):
            return  # nothing learned, or nothing that matters now: no Redis call
        cooldown_ms = None
        if rate_limited:
            cooldown_ms = DEFAULT_COOLDOWN_MS if retry_after_s is None \
                else int(retry_after_s * 1000)
        self._store.settle(scope, refund_tokens=tokens if rate_limited else None,
                           cooldown_ms=cooldown_ms, remaining_requests=remaining.requests,
                           remaining_tokens=remaining.tokens, admission=admission, pipe=pipe)


def _far_from_binding(scope: RateScope, admission: Admission | None,
                      remaining: Remaining) -> bool:
    """Whether syncing to the provider's report can wait: the call left our buckets more than
    half full, and the provider reports about as much left (or more).

    A sync only moves a level by about how far the report is from what the call left
    (bucket.lua), so it could only lower ours by less than the slack, and a raise is of no use
    while the bucket is far from empty. Each report is compared afresh: a provider whose levels
    fall behind ours by more than the slack is synced; so is every report once a level is
    below half. Saves a script call per answer at high throughput.
    """
    if admission is None:
        return False
    for left, reported, capacity in ((admission.requests_left, remaining.requests, scope.rpm),
                                     (admission.tokens_left, remaining.tokens, scope.tpm)):
        if reported is None:
            continue
        if left is None or left < capacity * FAR_LEVEL_SHARE \
                or reported < left - capacity * SYNC_SLACK_SHARE:
            return False
    return True
