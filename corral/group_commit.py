"""Group commit: requests that task slots make during a round trip (to Redis, or to the
record store) share the next one."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import redis

from corral.lua_scripts import ScriptCall, ScriptPipeline

Request = TypeVar("Request")
Answer = TypeVar("Answer")


class _Caller(Generic[Request, Answer]):
    """One caller's requests, and what became of them."""

    __slots__ = ("calls", "error", "leads", "ready", "results")

    def __init__(self, calls: Sequence[Request]) -> None:
        self.calls = calls
        self.results: list[Answer] = []
        self.error: BaseException | None = None
        self.leads = False
        self.ready = threading.Event()


class Grouped(Generic[Request, Answer]):
    """Sends each caller's requests in one round trip, shared with the requests of the callers
    that came while the previous round trip was in flight (as databases group their commits).

    A caller that finds no round trip in flight sends its requests at once: a lone caller (a
    prefork or solo worker, the CLI) waits for no one. Callers that come meanwhile queue
    theirs; when the round trip returns, the first of them sends the whole queue as one. Every
    caller gets the answers to its own requests, in order, or the first error among them; a
    round trip that fails fails each caller in it, which then handles the error as it would
    have alone. Thread-safe, and greenlet-safe under gevent's monkey-patching (its threading
    primitives yield to the hub). Subclasses say how a group is sent (`_send_all`).

    With a `delay_s` (PostgreSQL's commit_delay), a round trip first waits up to that long for
    the callers `expecting` to come (task slots running a line that will end in a call here)
    while some have not: a round trip that takes little CPU time but much of it per trip (a
    SQLite transaction under gevent, which blocks every greenlet) then carries many callers'
    requests instead of one. A caller that no one is expecting to join it never waits.
    """

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queued: list[_Caller[Request, Answer]] = []
        self._in_flight = False
        self._expected = 0
        self._delay_s = delay_s
        self.round_trips = 0  # sent so far

    @property
    def waiting(self) -> int:
        """Callers queued for the next round trip."""
        return len(self._queued)

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Mark a caller that will probably `run` before it leaves this block (a task slot
        running a line): a delayed round trip waits for it, or for it to leave."""
        with self._lock:
            self._expected += 1
        try:
            yield
        finally:
            with self._lock:
                self._expected -= 1
                self._arrived.notify_all()

    def run(self, calls: Sequence[Request]) -> list[Answer]:
        """Send `calls` (with whatever else is queued) and return their answers in order.

        Raises:
            Exception: the first error among `calls`' answers, or the round trip's.
        """
        caller: _Caller[Request, Answer] = _Caller(calls)
        with self._lock:
            self._queued.append(caller)
            caller.leads = not self._in_flight
            self._in_flight = True
            self._arrived.notify_all()
        if not caller.leads:
            caller.ready.wait()  # set with the results, or when the lead is handed over
        if caller.leads:
            self._send(caller)
        if caller.error is not None:
            raise caller.error
        return caller.results

    def _send_all(self, requests: list[Request]) -> list[Answer]:
        """Send one group's requests in one round trip; an answer may be an exception."""
        raise NotImplementedError

    def _shared_failure(self, err: BaseException) -> BaseException:
        """What each other caller of a failed round trip raises."""
        return err

    def _send(self, leader: _Caller[Request, Answer]) -> None:
        with self._lock:
            give_up_at = time.monotonic() + self._delay_s
            while len(self._queued) < self._expected:
                left_s = give_up_at - time.monotonic()
                if left_s <= 0:
                    break
                self._arrived.wait(left_s)
            group, self._queued = self._queued, []
            self.round_trips += 1
        try:
            results = self._send_all([call for caller in group for call in caller.calls])
            start = 0
            for caller in group:
                caller.results = results[start:start + len(caller.calls)]
                start += len(caller.calls)
                caller.error = next((result for result in caller.results
                                     if isinstance(result, BaseException)), None)
        except BaseException as err:
            for caller in group:
                if caller is not leader and not caller.results:
                    caller.error = self._shared_failure(err)
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


class GroupCommit(Grouped[ScriptCall, Any]):
    """Script calls to Redis, grouped: task slots that call during a round trip share the next
    one (one pipeline)."""

    def __init__(self, client: redis.Redis, *, delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self._client = client

    def _send_all(self, requests: list[ScriptCall]) -> list[Any]:
        pipe = ScriptPipeline(self._client)
        for script, keys, args in requests:
            pipe.call(script, keys, args)
        return pipe.execute()

    def _shared_failure(self, err: BaseException) -> BaseException:
        return _shared_failure(err)


def _shared_failure(err: BaseException) -> BaseException:
    """What a caller gets when the round trip carrying its calls failed with `err`: a copy of a
    Redis error (each caller raises its own), else a connection error naming what happened (a
    timeout or an exit in the sending slot must not reach the others as their own)."""
    if isinstance(err, redis.RedisError):
        return copy.copy(err)
    return redis.ConnectionError(
        f"the round trip carrying this call was interrupted: {type(err).__name__}")
