"""Batch lifecycle commands: cancel, expire, resume, retry and delete, all safe mid-run.

Each is a few statements on the record store, however many lines the batch has, and a few
commands on Redis's hot state.
"""

from __future__ import annotations

from typing import NamedTuple

import redis
from celery import Celery

from corral.batch_state import rebuild_batch_state
from corral.config import CorralConfig
from corral.errors import BatchNotFoundError
from corral.feeder import Feeder
from corral.jobs import send_jobs
from corral.redis_keys import BATCH_INDEX, BatchKeys, circuit_key
from corral.store import Store
from corral.stored_job import job_model
from producer.batches import is_terminal, read_batch

CHUNK = 1000  # lines per Redis scan or store query


def _end_unstarted(client: redis.Redis, store: Store, feeder: Feeder, batch_id: str,
                   code: str) -> int:
    """File `code` for every line never started: those not yet sent to the queues, and
    those queued that no worker took. Holds the batch's feeder lock, so no chunk is on its
    way meanwhile. The caller has closed the batch in Redis first (cancelling, or past its
    window), so no worker starts a line from then on: what is queued and unstarted now stays
    so. Each record is committed before Redis drops the line's request."""
    keys = BatchKeys(batch_id)
    with feeder.holding_lock():
        state = feeder.state()
        unstarted = _queued_unstarted(client, keys)
        ended = store.batches.end_unfed(batch_id, code, state.fed_through(), unstarted)
        row = store.batches.get(batch_id)
        pipe = client.pipeline()
        for start in range(0, len(unstarted), CHUNK):
            pipe.hdel(keys.bodies, *unstarted[start:start + CHUNK])
        for cursor in state.cursors:  # nothing is left to feed
            pipe.hset(keys.meta, f"fed:{cursor.model}", cursor.lines)
        pipe.hincrby(keys.meta, "failed", ended)
        if row is not None and is_terminal({"status": row["status"]}):
            pipe.hset(keys.meta, mapping={"status": row["status"],
                                          f"{row['status']}_at": row["ended_at"]})
        pipe.execute()
    return ended


def _queued_unstarted(client: redis.Redis, keys: BatchKeys) -> list[str]:
    """Lines in flight (their request in Redis) that no worker has started."""
    queued = [str(custom_id) for custom_id in client.hkeys(keys.bodies)]
    unstarted: list[str] = []
    for start in range(0, len(queued), CHUNK):
        chunk = queued[start:start + CHUNK]
        started = client.hmget(keys.attempts, chunk)
        unstarted += [custom_id for custom_id, calls in zip(chunk, started, strict=True)
                      if calls is None]
    return unstarted


def cancel(client: redis.Redis, store: Store, feeder: Feeder, batch_id: str) -> int:
    """Cancel a batch: lines not started end as batch_cancelled now, without a provider call.

    Lines already running finish (their results are kept); a line waiting to retry ends as
    batch_cancelled when a worker next picks it up. Returns the lines ended now.
    """
    read_batch(store, batch_id)
    if not store.batches.cancel(batch_id):
        return 0
    row = store.batches.get(batch_id)
    assert row is not None
    client.hset(BatchKeys(batch_id).meta, mapping={
        "status": "cancelling", "end_status": "cancelled", "cancelling_at": row["cancelling_at"]})
    return _end_unstarted(client, store, feeder, batch_id, "batch_cancelled")


def expire_if_due(client: redis.Redis, store: Store, feeder: Feeder, batch_id: str) -> int:
    """After the completion window, end every line not started as batch_expired (workers
    start no line past the window)."""
    if not store.batches.expire(batch_id):
        return 0  # not due, or not in progress (a cancelling batch ends as cancelled)
    client.hset(BatchKeys(batch_id).meta, "end_status", "expired")
    return _end_unstarted(client, store, feeder, batch_id, "batch_expired")


def resume(client: redis.Redis, store: Store, app: Celery, config: CorralConfig,
           batch_id: str) -> int:
    """Queue again what may have lost its message; safe while workers run. Returns the lines
    sent now.

    If Redis lost the batch's state, it is rebuilt from the store, and every line with no
    terminal record is fed again. Otherwise every line in flight (its request in Redis) with
    no record gets one more message: a line still queued or running ignores it (its lease, or
    its request gone with its record, makes the second delivery a no-op).
    """
    read_batch(store, batch_id)
    if rebuild_batch_state(client, store, batch_id):
        return 0  # the feeder sends every line with no record, from the start
    keys = BatchKeys(batch_id)
    jobs: list[tuple[str, str]] = []
    for custom_id, raw_job in client.hscan_iter(keys.bodies, count=CHUNK):
        model = config.models.get(job_model(raw_job))
        if model is not None:
            jobs.append((str(custom_id), model.queue))
    ended = set()
    for start in range(0, len(jobs), CHUNK):
        ended |= store.records.has_records(batch_id, [cid for cid, _ in jobs[start:start + CHUNK]])
    return send_jobs(app, batch_id, [job for job in jobs if job[0] not in ended])


class Retried(NamedTuple):
    """What `retry` did: lines enqueued again, and failed lines it could not run."""

    enqueued: int
    not_stored: int  # no request kept: refused at submit


def retry(client: redis.Redis, store: Store, app: Celery, config: CorralConfig,
          batch_id: str, codes: set[str] | None = None) -> Retried:
    """Run failed lines again (those with these error codes, default all that can run).

    Each old record moves to the store's retry history; circuits of the batch's providers
    close, since a retry usually follows a fixed key. Lines refused at submit have no stored
    request: they keep their record and are counted apart.
    """
    read_batch(store, batch_id)
    rebuild_batch_state(client, store, batch_id)  # if Redis lost it
    reopened, not_stored = store.batches.reopen(batch_id, codes)
    if not reopened:
        return Retried(0, not_stored)
    keys = BatchKeys(batch_id)
    meta = client.hgetall(keys.meta)
    offset = int(meta.get("call_offset") or 0)  # type: ignore[union-attr]
    pipe = client.pipeline()
    jobs: list[tuple[str, str]] = []
    for line in reopened:
        model = config.models.get(line.model)
        if model is None:
            continue
        pipe.delete(circuit_key(model.provider))
        # Its calls are numbered on past its last one; its attempts count from 1 again.
        started = max(0, line.last_call - offset)
        pipe.hset(keys.attempts, line.custom_id, started)
        pipe.hset(keys.reruns, line.custom_id, started)
        pipe.hset(keys.bodies, line.custom_id, line.job)
        jobs.append((line.custom_id, model.queue))
    pipe.hincrby(keys.meta, "failed", -len(reopened))
    pipe.hset(keys.meta, mapping={"status": "in_progress", "end_status": "completed"})
    pipe.hdel(keys.meta, "finalizing_at", "completed_at", "failed_at", "expired_at",
              "cancelled_at")
    for key in keys.all():
        pipe.persist(key)
    pipe.execute()
    send_jobs(app, batch_id, jobs)
    return Retried(len(jobs), not_stored)


def delete(client: redis.Redis, store: Store, batch_id: str) -> None:
    """Remove the batch: its rows in the store, then every key of it in Redis."""
    if not store.batches.delete(batch_id):
        raise BatchNotFoundError(f"no batch {batch_id!r}")
    keys = BatchKeys(batch_id)
    leases = list(client.scan_iter(match=keys.lease_pattern, count=CHUNK))
    client.delete(*keys.all(), *leases)
    client.zrem(BATCH_INDEX, batch_id)
