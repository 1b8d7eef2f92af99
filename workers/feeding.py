"""Every worker feeds the batches nobody is feeding, so feeding depends on no one process, and
ends the batches whose completion window has passed, so expiry needs nobody to look.

Each look (every CORRAL_FEED_LOOK_S) lists the store's open batches; for each, a worker that
gets the batch's feeder lock tops its queues up (and rebuilds Redis's part of it first, if
Redis lost it: corral/batch_state.py). The submitting process holds the lock while it feeds,
renewing it every fraction of a second; when it dies, the lock runs out in a few seconds and
the next look of any worker goes on where it stopped. It also removes batches past retention.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from celery import Celery

from corral.batch_end import delete_batch, expire_if_due
from corral.config import CorralConfig
from corral.errors import CorralError
from corral.feeder import Feeder
from corral.store import Store
from workers.periodic import Periodic

log = logging.getLogger(__name__)

RETENTION_LOOK_S = 3600.0


class FeedingLoop(Periodic):
    name = "corral-feeding"

    """Looks for batches to feed every `interval_s`, in a daemon thread."""

    def __init__(self, client: redis.Redis, store: Store, app: Celery, config: CorralConfig,
                 *, depth: int, interval_s: float, retention_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(interval_s)
        self._client = client
        self._store = store
        self._app = app
        self._config = config
        self._depth = depth
        self._retention_s = retention_s
        self._clock = clock
        self._next_purge = 0.0

    def look(self) -> int:
        """Expire the open batches past their window, and feed the rest whose feeder lock is
        free; returns the lines sent."""
        sent = 0
        now = self._clock()
        for batch_id, expires_at in self._store.batches.open_deadlines().items():
            feeder = Feeder(self._client, self._store, self._app, self._config, batch_id,
                            depth=self._depth)
            try:
                if now >= expires_at and expire_if_due(self._client, self._store, feeder,
                                                       batch_id, now):
                    log.info("batch %s expired: its completion window has ended", batch_id)
                    continue
                sent += feeder.feed_if_free()
            except CorralError as err:
                log.info("batch %s not fed: %s", batch_id, err)
        if self._clock() >= self._next_purge:
            self._next_purge = self._clock() + RETENTION_LOOK_S
            self.purge()
        return sent

    def purge(self) -> int:
        """Remove the batches that ended more than the retention ago; returns how many."""
        gone = self._store.batches.ended_before(int(self._clock()) - self._retention_s)
        for batch_id in gone:
            delete_batch(self._client, self._store, batch_id)
        if gone:
            log.info("removed %d batches past retention", len(gone))
        return len(gone)

    def tick(self) -> object:
        return self.look()
