"""Per-provider circuit: a refused key or quota stops calls fleet-wide with one clear message."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from corral.errors import PermanentError
from corral.redis_keys import circuit_key

log = logging.getLogger(__name__)

# How long a process trusts that a provider's circuit is closed without asking Redis; an open
# circuit is always re-read, so `corral retry` (which closes it) takes effect at once.
CLOSED_CACHE_S = 1.0


@dataclass(frozen=True)
class OpenCircuit:
    """Why calls to a provider are stopped."""

    code: str
    message: str


class CircuitBreaker:
    """Opens on 401/403 or insufficient_quota; lines on that provider then fail at once.

    It closes by itself after CORRAL_CIRCUIT_OPEN_S (the next call then finds out whether the
    key works again) or when `corral retry` clears it after the key was fixed.
    """

    def __init__(self, client: redis.Redis, *, open_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._open_s = open_s
        self._clock = clock
        self._closed_at: dict[str, float] = {}  # provider → when it was last seen closed
        self._lock = threading.Lock()

    def open(self, provider: str, err: PermanentError) -> OpenCircuit:
        """Open the provider's circuit for `err`; only the first opener logs it."""
        circuit = OpenCircuit(err.code, f"provider {provider!r} refused corral: {err.message}")
        opened = self._client.set(circuit_key(provider), json.dumps(circuit.__dict__),
                                  nx=True, px=int(self._open_s * 1000))
        if opened:
            log.error("%s; calls to %r stop for %g s; fix it, then run `corral retry BATCH`",
                      circuit.message, provider, self._open_s)
        with self._lock:
            self._closed_at.pop(provider, None)
        return circuit

    def check(self, provider: str) -> OpenCircuit | None:
        """The provider's open circuit, or None when calls may go ahead."""
        now = self._clock()
        with self._lock:
            closed_at = self._closed_at.get(provider)
        if closed_at is not None and now - closed_at < CLOSED_CACHE_S:
            return None
        raw = self._client.get(circuit_key(provider))
        if raw:
            return OpenCircuit(**json.loads(raw))
        with self._lock:
            self._closed_at[provider] = now
        return None
