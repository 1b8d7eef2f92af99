"""Polls again the provider batches whose poll message was lost (a worker killed while it
held the countdown message, a broker that lost its queues): every worker looks, a few poll
intervals apart; a poll that finds another chain's claim ends (workers/batch_lane.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from celery import Celery

from corral.celery_app import BATCH_POLL_TASK, BATCH_QUEUE
from corral.store import Store
from workers.periodic import Periodic

log = logging.getLogger(__name__)

STALE_POLLS = 3  # a provider batch not polled for this many intervals is polled again


class BatchLaneSweep(Periodic):
    """Every `poll_s × STALE_POLLS`, sends a poll for each stale provider batch."""

    name = "corral-batch-lane-sweep"

    def __init__(self, store: Store, app: Celery, *, poll_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(poll_s * STALE_POLLS)
        self._store = store
        self._app = app
        self._poll_s = poll_s
        self._clock = clock

    def tick(self) -> list[str]:
        """Send a poll for each stale provider batch; returns their ids."""
        stale = self._store.provider_batches.stale(
            int(self._clock() - self._poll_s * STALE_POLLS))
        for provider_batch_id in stale:
            self._app.send_task(BATCH_POLL_TASK, args=[provider_batch_id], queue=BATCH_QUEUE)
        if stale:
            log.warning("batch lane: %d provider batch(es) not polled for %g s; polling "
                        "again", len(stale), self._poll_s * STALE_POLLS)
        return stale
