"""Finds accepted lines that nothing will ever run again, and sends them once more.

kombu's Redis transport can lose a message in flight when Redis restarts (popped from the
queue but not yet in its unacked hash). Such a line has no record, no lease, no message: it
would wait forever. Once a batch's queues and the broker's unacked hash are empty, every line
without a record or a lease is such a line, so it is sent again (a duplicate is harmless:
its lease or record makes the extra delivery a no-op).
"""

from __future__ import annotations

import json
import logging
import threading

import redis
from celery import Celery

from corral.config import CorralConfig
from corral.jobs import send_jobs
from corral.redis_keys import BATCH_INDEX, PREFIX, BatchKeys

log = logging.getLogger(__name__)

KOMBU_UNACKED_KEY = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged
LOCK_KEY = f"{PREFIX}:reconciler"
OPEN_STATUSES = ("in_progress", "cancelling")


class Reconciler:
    """One sweep at a time across the fleet (a Redis lock), every `interval_s` per worker."""

    def __init__(self, client: redis.Redis, app: Celery, config: CorralConfig, *,
                 interval_s: float, broker_is_redis: bool) -> None:
        self._client = client
        self._app = app
        self._config = config
        self._interval_s = interval_s
        self._broker_is_redis = broker_is_redis
        self._stop = threading.Event()

    def sweep(self) -> int:
        """Resend the lost lines of every open batch; returns how many were sent."""
        if not self._broker_is_redis:
            return 0  # queues and unacked messages live elsewhere (AMQP keeps its own)
        if not self._client.set(LOCK_KEY, "1", nx=True, px=int(self._interval_s * 1000)):
            return 0
        if self._client.hlen(KOMBU_UNACKED_KEY):
            return 0  # some message is still out with a worker
        return sum(self._sweep_batch(str(batch_id))
                   for batch_id in self._client.zrange(BATCH_INDEX, 0, -1))

    def _sweep_batch(self, batch_id: str) -> int:
        keys = BatchKeys(batch_id)
        status, total, models = self._client.hmget(keys.meta, "status", "total", "models")
        if status not in OPEN_STATUSES or not models:
            return 0
        if self._client.hlen(keys.outcomes) >= int(total or 0):
            return 0
        queues = {self._config.models[m].queue for m in json.loads(models)
                  if m in self._config.models}
        if any(self._client.llen(queue) for queue in queues):
            return 0  # lines still waiting their turn
        lost: list[tuple[str, str]] = []
        for custom_id, raw_job in self._client.hscan_iter(keys.bodies, count=1000):
            if self._client.hexists(keys.outcomes, custom_id) or \
                    self._client.exists(keys.lease(custom_id)):
                continue
            model = self._config.models.get(json.loads(raw_job)["model"])
            if model is not None:
                lost.append((str(custom_id), model.queue))
        if lost:
            log.warning("batch %s: %d lines had no record, lease or message; sending them "
                        "again", batch_id, len(lost))
        return send_jobs(self._app, batch_id, lost)

    def run_forever(self) -> None:
        """Sweep every interval until `stop()`; errors are logged, never fatal."""
        while not self._stop.wait(self._interval_s):
            try:
                self.sweep()
            except Exception:
                log.exception("reconciler sweep failed")

    def start(self) -> None:
        """Run in a daemon thread."""
        threading.Thread(target=self.run_forever, name="corral-reconciler", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
