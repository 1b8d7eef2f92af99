"""Finds accepted lines that nothing will ever run again, and sends them once more.

kombu's Redis transport can lose a message in flight when Redis restarts (popped from the
queue but not yet in its unacked hash), and a broker restart without persistence loses the
queues whole. Such a line has its request in Redis but no record, no lease and no message: it
would wait forever.

Each sweep reads every message the broker holds for corral (the models' queues and the
fleet's unacked hash, which holds what workers have taken: running, prefetched, or waiting
out a retry's countdown) and lists the stored lines of open batches that have neither a
record, nor a lease, nor a message. A message moves between queue and unacked hash in a few
milliseconds, and the feeder stores a line's request just before its message, so one sweep
can catch a live line between two places: a line is sent again only when two sweeps in a
row, an interval apart, found it so. This works while the fleet is busy (mid-batch), and a
duplicate would be harmless anyway (its lease or record makes the extra delivery a no-op).
"""

from __future__ import annotations

import base64
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator

import redis
from celery import Celery

from corral import lua_scripts
from corral.celery_app import RUN_JOB_TASK
from corral.config import CorralConfig
from corral.jobs import send_jobs
from corral.lua_scripts import ScriptPipeline
from corral.records import DEFAULT_RETENTION_S, end_line_call
from corral.redis_keys import BATCH_INDEX, PREFIX, BatchKeys
from corral.store import Store
from corral.stored_job import job_model
from workers.periodic import Periodic

log = logging.getLogger(__name__)

KOMBU_UNACKED_KEY = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged
LOCK_KEY = f"{PREFIX}:reconciler"
SCAN_COUNT = 1000
# How long a sweep's suspects wait for the next sweep to confirm them, in intervals.
SUSPECTS_TTL_INTERVALS = 3


class Reconciler(Periodic):
    name = "corral-reconciler"

    """One sweep at a time across the fleet (a Redis lock), every `interval_s` per worker."""

    def __init__(self, client: redis.Redis, store: Store, app: Celery, config: CorralConfig, *,
                 interval_s: float, broker_is_redis: bool,
                 retention_s: int = DEFAULT_RETENTION_S) -> None:
        super().__init__(interval_s)
        self._client = client
        self._store = store
        self._retention_s = retention_s
        self._end_line = lua_scripts.register(client, "end_line")
        self._app = app
        self._config = config
        self._broker_is_redis = broker_is_redis

    def sweep(self) -> int:
        """Resend the lost lines of every open batch; returns how many were sent."""
        if not self._broker_is_redis:
            return 0  # queues and unacked messages live elsewhere (AMQP keeps its own)
        if not self._client.set(LOCK_KEY, "1", nx=True, px=int(self._interval_s * 1000)):
            return 0
        # Open by the store's counts: Redis's live counters only mirror them, and one that
        # ran ahead (a count sent twice) must not hide a line that is still adrift.
        indexed = {str(batch_id) for batch_id in self._client.zrange(BATCH_INDEX, 0, -1)}
        batch_ids = [batch_id for batch_id in self._store.batches.open_ids()
                     if batch_id in indexed]
        if not batch_ids:
            return 0
        messaged = self.lines_with_messages()
        return sum(self._sweep_batch(batch_id, messaged.get(batch_id, set()))
                   for batch_id in batch_ids)

    def lines_with_messages(self) -> dict[str, set[str]]:
        """batch_id → custom_ids that have a corral.run_job message in a queue or taken by a
        worker (the unacked hash)."""
        queues = {model.queue for model in self._config.models.values()}
        raw: list[str] = []
        for queue in sorted(queues):
            raw.extend(self._client.lrange(queue, 0, -1))  # type: ignore[arg-type]
        for _, value in self._client.hscan_iter(KOMBU_UNACKED_KEY, count=SCAN_COUNT):
            raw.append(value)
        lines: dict[str, set[str]] = defaultdict(set)
        for batch_id, custom_id in job_arguments(raw):
            lines[batch_id].add(custom_id)
        return lines

    def _sweep_batch(self, batch_id: str, messaged: set[str]) -> int:
        keys = BatchKeys(batch_id)
        adrift = dict(self._adrift_lines(batch_id, keys, messaged))
        seen_before = self._client.smismember(keys.suspects, list(adrift)) if adrift else []
        confirmed = [custom_id for custom_id, seen in zip(adrift, seen_before, strict=True)
                     if seen]
        suspects = [custom_id for custom_id, seen in zip(adrift, seen_before, strict=True)
                    if not seen]
        pipe = self._client.pipeline()
        pipe.delete(keys.suspects)
        if suspects:
            pipe.sadd(keys.suspects, *suspects)
            pipe.pexpire(keys.suspects, int(self._interval_s * SUSPECTS_TTL_INTERVALS * 1000))
        pipe.execute()
        if not confirmed:
            return 0
        log.warning("batch %s: %d lines had no record, lease or message in two sweeps; "
                    "sending them again", batch_id, len(confirmed))
        return send_jobs(self._app, batch_id, [(custom_id, adrift[custom_id])
                                               for custom_id in confirmed])

    def _adrift_lines(self, batch_id: str, keys: BatchKeys,
                      messaged: set[str]) -> Iterator[tuple[str, str]]:
        """(custom_id, queue) of lines in flight (their request in Redis) with no record, no
        lease and no message.

        A line that has its record in the store but still its request in Redis (its worker
        died between the two) is let go of here instead. A stored request is parsed (for its
        model's queue) only once the line is found adrift.
        """
        candidates = [(str(custom_id), raw_job) for custom_id, raw_job
                      in self._client.hscan_iter(keys.bodies, count=SCAN_COUNT)
                      if custom_id not in messaged]
        for start in range(0, len(candidates), SCAN_COUNT):
            chunk = candidates[start:start + SCAN_COUNT]
            ended = self._store.records.error_codes(batch_id, [custom_id for custom_id, _
                                                                in chunk])
            if ended:
                self._release(batch_id, ended, dict(chunk))
            pipe = self._client.pipeline(transaction=False)
            for custom_id, _ in chunk:
                pipe.exists(keys.lease(custom_id))
            leases = pipe.execute()
            for (custom_id, raw_job), leased in zip(chunk, leases, strict=True):
                if custom_id in ended or leased:
                    continue
                model = self._config.models.get(job_model(raw_job))
                if model is not None:
                    yield custom_id, model.queue

    def _release(self, batch_id: str, ended: dict[str, str | None],
                 jobs: dict[str, str]) -> None:
        """Let Redis drop lines whose record the store has but whose end never reached Redis
        (their worker died between the two): their request goes, their counts move."""
        log.warning("batch %s: %d lines had their record but were still in flight in Redis "
                    "(a worker died as they ended); letting go of them", batch_id, len(ended))
        calls = ScriptPipeline(self._client)
        for custom_id, error_code in ended.items():
            calls.call(*end_line_call(self._end_line, batch_id, custom_id, first=True,
                                      error_code=error_code, retention_s=self._retention_s,
                                      model=job_model(jobs[custom_id])))
        calls.execute()

    def tick(self) -> object:
        return self.sweep()


def job_arguments(messages: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(batch_id, custom_id) of each corral.run_job message, as kombu's Redis transport
    stores it: in a queue the message's JSON, in the unacked hash [message, exchange,
    routing_key]; the body is Celery's protocol 2, [args, kwargs, embed], base64-encoded."""
    for raw in messages:
        try:
            message = json.loads(raw)
            if isinstance(message, list):
                message = message[0]
            if message.get("headers", {}).get("task") != RUN_JOB_TASK:
                continue
            args = json.loads(base64.b64decode(message["body"]))[0]
            yield str(args[0]), str(args[1])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue  # not a message of ours (or not one we can read): not evidence either

