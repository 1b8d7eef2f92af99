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

LOCAL_CACHE_S = 1.0  # how stale a process's view of other processes' circuits may be


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
        self._cache: dict[str, tuple[float, OpenCircuit | None]] = {}
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
            self._cache[provider] = (self._clock(), circuit)
        return circuit

    def check(self, provider: str) -> OpenCircuit | None:
        """The provider's open circuit, or None when calls may go ahead."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(provider)
        if cached is not None and now - cached[0] < LOCAL_CACHE_S:
            return cached[1]
        raw = self._client.get(circuit_key(provider))
        circuit = OpenCircuit(**json.loads(raw)) if raw else None
        with self._lock:
            self._cache[provider] = (now, circuit)
        return circuit
