"""Group commit: script calls that task slots make during a round trip to Redis share the next."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

import redis

from corral.lua_scripts import ScriptCall, ScriptPipeline


class _Caller:
    """One caller's calls, and what became of them."""

    __slots__ = ("calls", "error", "leads", "ready", "results")

    def __init__(self, calls: Sequence[ScriptCall]) -> None:
        self.calls = calls
        self.results: list[Any] = []
        self.error: BaseException | None = None
        self.leads = False
        self.ready = threading.Event()


class GroupCommit:
    """Sends each caller's script calls in one round trip, shared with the calls of the callers
    that came while the previous round trip was in flight (as databases group their commits).

    A caller that finds no round trip in flight sends its calls at once: a lone caller (a
    prefork or solo worker, the CLI) waits for no one. Callers that come meanwhile queue theirs;
    when the round trip returns, the first of them sends the whole queue as one pipeline. Every
    caller gets the results of its own calls, in order, or the first error among them; a round
    trip that fails (Redis gone after redis-py's retries) fails each caller in it, which then
    handles the error as it would have alone. Thread-safe, and greenlet-safe under gevent's
    monkey-patching (its threading primitives yield to the hub).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._queued: list[_Caller] = []
        self._in_flight = False
        self.round_trips = 0  # sent so far

    @property
    def waiting(self) -> int:
        """Callers queued for the next round trip."""
        return len(self._queued)

    def run(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Send `calls` (with whatever else is queued) and return their results in order.

        Raises:
            redis.RedisError: the first error among `calls`, or the round trip's.
        """
        caller = _Caller(calls)
        with self._lock:
            self._queued.append(caller)
            caller.leads = not self._in_flight
            self._in_flight = True
        if not caller.leads:
            caller.ready.wait()  # set with the results, or when the lead is handed over
        if caller.leads:
            self._send(caller)
        if caller.error is not None:
            raise caller.error
        return caller.results

    def _send(self, leader: _Caller) -> None:
        with self._lock:
            group, self._queued = self._queued, []
            self.round_trips += 1
        try:
            pipe = ScriptPipeline(self._client)
            for caller in group:
                for script, keys, args in caller.calls:
                    pipe.call(script, keys, args)
            results = pipe.execute()
            start = 0
            for caller in group:
                caller.results = results[start:start + len(caller.calls)]
                start += len(caller.calls)
                caller.error = next(
                    (result for result in caller.results if isinstance(result, Exception)), None)
        except BaseException as err:
            for caller in group:
                if caller is not leader and not caller.results:
                    caller.error = _shared_failure(err)
            raise
        finally:
            with self._lock:
                if self._queued:
                    self._queued[0].leads = True
                    self._queued[0].ready.set()
                else:
                    self._in_flight = False
            for caller in group:
                caller.ready.set()


def _shared_failure(err: BaseException) -> BaseException:
    """What a caller gets when the round trip carrying its calls failed with `err`: a copy of a
    Redis error (each caller raises its own), else a connection error naming what happened (a
    timeout or an exit in the sending slot must not reach the others as their own)."""
    if isinstance(err, redis.RedisError):
        return copy.copy(err)
    return redis.ConnectionError(
        f"the round trip carrying this call was interrupted: {type(err).__name__}")
