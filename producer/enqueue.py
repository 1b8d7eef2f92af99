"""Stores routed requests in Redis and sends one pointer-only job per line, in chunks."""

from __future__ import annotations

import json
from collections import Counter

import redis
from celery import Celery

from corral.jobs import send_jobs
from corral.records import OutcomeStore, error_record
from corral.redis_keys import BatchKeys
from corral.settings import get_settings
from corral.stats import stat_field
from producer.validator import AcceptedLine, RejectedLine

CHUNK_LINES = 500


class Enqueuer:
    """Buffers checked lines; each flush stores bodies, files rejections, then sends jobs.

    Bodies are written before the jobs that point at them, so a worker never finds a job
    without its body; a producer killed between the two leaves stored lines with no job,
    which `resume` finds. The input order of every line is kept for `results --order input`.
    """

    def __init__(self, client: redis.Redis, app: Celery, batch_id: str) -> None:
        self._client = client
        self._app = app
        self._batch_id = batch_id
        self._keys = BatchKeys(batch_id)
        self._outcomes = OutcomeStore(client, retention_s=get_settings().retention_s)
        self._pending: list[AcceptedLine | RejectedLine] = []
        self.enqueued = 0

    def add(self, line: AcceptedLine | RejectedLine) -> None:
        """Queue one line (a rejected one becomes an `invalid_request` error record)."""
        self._pending.append(line)
        if len(self._pending) >= CHUNK_LINES:
            self.flush()

    def flush(self) -> None:
        """Store and send everything buffered."""
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        accepted = [line for line in lines if isinstance(line, AcceptedLine)]
        pipe = self._client.pipeline(transaction=False)
        if accepted:
            pipe.hset(self._keys.bodies, mapping={
                line.custom_id: json.dumps(line.job(), separators=(",", ":"))
                for line in accepted})
        pipe.rpush(self._keys.order, *(_record_id(line) for line in lines))
        for model, count in Counter(line.model.name for line in accepted).items():
            pipe.hincrby(self._keys.stats, stat_field(model, "enqueued"), count)
        pipe.execute()
        for line in lines:
            if isinstance(line, RejectedLine):
                self._outcomes.record(self._batch_id, error_record(
                    line.record_id, code="invalid_request", message=f"line {line.number}: "
                    f"{line.reason}"))
        send_jobs(self._app, self._batch_id, [(line.custom_id, line.model.queue)
                                              for line in accepted])
        self.enqueued += len(accepted)
        self._client.hincrby(self._keys.meta, "enqueued", len(accepted))


def _record_id(line: AcceptedLine | RejectedLine) -> str:
    return line.custom_id if isinstance(line, AcceptedLine) else line.record_id
