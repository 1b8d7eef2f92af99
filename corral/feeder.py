"""The feeder: tops each model's share of the queues up from the record store as lines end.

A model may have `queue_depth` lines of all batches in the system at once (queued, running,
or waiting to retry). Batches feeding one model share that depth equally, so a small batch
submitted after a large one waits behind at most one share of it, not all of it. A share is
topped up in chunks (once a quarter of it, or 1,000 lines, has room), not line by line. The
cursor (lines fed, and the last input line sent, per model) lives in the batch's meta, so a
restarted feeder goes on where the last one stopped; at most the last chunk is sent twice,
and a line's lease or record makes a second message a no-op.

Any process may feed a batch: it takes the batch's feeder lock, a key with a short TTL that
it renews while it feeds. The submitting process feeds first; every worker looks for batches
nobody feeds (workers/feeding.py), so feeding goes on when that process dies. A batch whose
Redis state was lost is rebuilt from the store first (corral/batch_state.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from celery import Celery

from corral import lua_scripts
from corral.batch_state import rebuild_batch_state
from corral.config import CorralConfig
from corral.errors import BatchNotFoundError, CorralError
from corral.jobs import send_jobs
from corral.redis_keys import BatchKeys, feeding_key
from corral.stats import by_model, lines_in_flight
from corral.store import Store

log = logging.getLogger(__name__)

CHUNK_LINES = 1000
REFILL_PARTS = 4  # a share is topped up once a quarter of it has room (or a chunk's worth)
IDLE_S = 0.2
LOCK_MS = 5_000
FEEDING_TTL_S = 10


class FeederBusyError(CorralError):
    """Another feeder is sending this batch's lines."""


@dataclass(frozen=True)
class ModelCursor:
    """How far one model's lines of the batch have been fed."""

    model: str
    lines: int
    fed: int
    last_line: int  # the input line number of the last line sent


@dataclass(frozen=True)
class FeedState:
    """A batch's status and per-model cursors, as its meta holds them."""

    status: str | None
    cursors: list[ModelCursor]

    @property
    def unfed(self) -> int:
        """Lines not sent yet."""
        return sum(c.lines - c.fed for c in self.cursors)

    def fed_through(self) -> dict[str, int]:
        """Model → the input line number of the last line sent."""
        return {cursor.model: cursor.last_line for cursor in self.cursors}


def feed_state(meta: Mapping[str, str]) -> FeedState:
    """Read the feeder's fields of a batch's meta (`lines:<m>`, `fed:<m>`, `fed_line:<m>`)."""
    models = [name.removeprefix("lines:") for name in meta if name.startswith("lines:")]
    cursors = [ModelCursor(model, int(meta[f"lines:{model}"]), int(meta.get(f"fed:{model}", 0)),
                           int(meta.get(f"fed_line:{model}", 0))) for model in models]
    return FeedState(meta.get("status"), cursors)


class Feeder:
    """Feeds one batch; `feed_once` is one top-up, `run` loops until every line is fed."""

    def __init__(self, client: redis.Redis, store: Store, app: Celery, config: CorralConfig,
                 batch_id: str, *, depth: int,
                 wait: Callable[[float], bool] | None = None) -> None:
        self._client = client
        self._store = store
        self._app = app
        self._config = config
        self._batch_id = batch_id
        self._keys = BatchKeys(batch_id)
        self._depth = depth
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        # Who holds the batch (host:pid:nonce), readable in Redis when debugging.
        self._token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._store_bodies = lua_scripts.register(client, "store_bodies")
        self._feed_cursor = lua_scripts.register(client, "feed_cursor")

    def stop(self) -> None:
        """Stop `run` after its current top-up."""
        self._stop.set()

    def state(self) -> FeedState:
        """The batch's feed state now (Redis's part rebuilt from the store if Redis lost it).

        Raises:
            BatchNotFoundError: no such batch in the store.
        """
        meta: dict[str, str] = self._client.hgetall(self._keys.meta)  # type: ignore[assignment]
        if "id" not in meta:
            row = self._store.batches.get(self._batch_id)
            if row is None:
                raise BatchNotFoundError(f"no batch {self._batch_id!r}")
            rebuild_batch_state(self._client, self._store, self._batch_id)
            meta = self._client.hgetall(self._keys.meta)  # type: ignore[assignment]
            if "id" not in meta:  # ended (nothing to feed), or another process rebuilds it
                return FeedState(str(row["status"]), [])
        return feed_state(meta)

    def feed_once(self, state: FeedState | None = None) -> int:
        """Send what each model's fair share has room for; returns the lines sent. The caller
        holds the batch's feeder lock (`run`, `feed_if_free`, `holding_lock`): two feeders on
        one cursor would send the same lines twice."""
        state = state or self.state()
        if state.status != "in_progress":
            return 0
        live = by_model(self._client.hgetall(self._keys.stats))  # type: ignore[arg-type]
        now, _ = self._client.time()
        sent = 0
        for cursor in state.cursors:
            if cursor.fed >= cursor.lines:
                continue
            counts = live.get(cursor.model, {})
            in_system = lines_in_flight(counts, sent=cursor.fed)
            share, unfed = self._share(cursor.model, now), cursor.lines - cursor.fed
            room = min(share - in_system, unfed, CHUNK_LINES)
            # In chunks, not line by line as lines end: each top-up costs the feeder and
            # Redis a dozen calls, and the queue still holds the rest of the share.
            if room >= min(max(1, share // REFILL_PARTS), unfed, CHUNK_LINES):
                sent += self._send(cursor, room)
        return sent

    def run(self) -> int:
        """Feed until every line is sent, the batch closes, or `stop()`; returns lines sent.

        Raises:
            FeederBusyError: another feeder holds the batch.
        """
        self._take_lock()
        sent = 0
        try:
            while not self._stop.is_set() and self._still_mine():
                state = self.state()
                if state.status != "in_progress" or not state.unfed:
                    break
                fed = self.feed_once(state)
                sent += fed
                if not fed:
                    self._wait(IDLE_S)
        finally:
            self._release()
        return sent

    def feed_if_free(self) -> int:
        """Top up until the shares are full, if no other process holds the batch's feeder
        lock now (a worker's periodic look); returns the lines sent."""
        if not self._client.set(self._keys.feeder, self._token, nx=True, px=LOCK_MS):
            return 0
        sent = 0
        try:
            while self._still_mine() and (fed := self.feed_once()):
                sent += fed
            return sent
        finally:
            self._release()

    def _share(self, model: str, now: int) -> int:
        """This batch's part of the model's depth: equal among the batches feeding it."""
        key = feeding_key(model)
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(key, {self._batch_id: now})
        pipe.zremrangebyscore(key, "-inf", now - FEEDING_TTL_S)
        pipe.zcard(key)
        pipe.expire(key, FEEDING_TTL_S * 6)
        feeding = int(pipe.execute()[2])
        return max(1, self._depth // max(1, feeding))

    def _send(self, cursor: ModelCursor, room: int) -> int:
        lines = self._store.lines.unended(self._batch_id, cursor.model, cursor.last_line, room)
        if not lines:
            # Every line of the model past the cursor has its record (ended meanwhile, or
            # before Redis's part was rebuilt): nothing is left to send.
            if not self._feed_cursor(keys=[self._keys.meta, self._keys.stats],
                                     args=[cursor.model, cursor.lines, cursor.last_line, 0]):
                raise BatchNotFoundError(f"batch {self._batch_id!r} left Redis while fed")
            return 0
        queue = self._config.models[cursor.model].queue
        # Bodies before the jobs that point at them; the cursor after both.
        stored = self._store_bodies(keys=[self._keys.bodies, self._keys.meta],
                                    args=[part for line in lines
                                          for part in (line.custom_id, line.job)])
        if stored is None:
            raise BatchNotFoundError(f"batch {self._batch_id!r} left Redis while fed")
        send_jobs(self._app, self._batch_id, [(line.custom_id, queue) for line in lines])
        # The counts move with the cursor, in one write: a chunk fed again counts once.
        if not self._feed_cursor(keys=[self._keys.meta, self._keys.stats],
                                 args=[cursor.model, cursor.fed + len(lines),
                                       lines[-1].line_no, len(lines)]):
            raise BatchNotFoundError(f"batch {self._batch_id!r} left Redis while fed")
        return len(lines)

    @contextmanager
    def holding_lock(self) -> Iterator[None]:
        """Hold the batch's feeder lock for a block (no chunk is on its way meanwhile)."""
        self._take_lock()
        try:
            yield
        finally:
            self._release()

    def _take_lock(self) -> None:
        """Hold the batch's feeder lock, waiting out the lock of a feeder that died."""
        deadline = time.monotonic() + LOCK_MS / 1000 + 1
        while not self._client.set(self._keys.feeder, self._token, nx=True, px=LOCK_MS):
            if time.monotonic() > deadline or self._stop.is_set():
                raise FeederBusyError(f"batch {self._batch_id} is already being fed by "
                                      f"{self._client.get(self._keys.feeder)!r}")
            self._wait(IDLE_S)

    def _still_mine(self) -> bool:
        if self._client.get(self._keys.feeder) != self._token:
            log.warning("batch %s: another feeder took over", self._batch_id)
            return False
        self._client.pexpire(self._keys.feeder, LOCK_MS)
        return True

    def _release(self) -> None:
        if self._client.get(self._keys.feeder) == self._token:
            self._client.delete(self._keys.feeder)
