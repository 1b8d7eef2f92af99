"""Batch lifecycle commands: cancel, resume, retry and delete, all safe mid-run.

Each is a few statements on the record store, however many lines the batch has, and a few
commands on Redis's hot state.
"""

from __future__ import annotations

from typing import NamedTuple

import redis
from celery import Celery

from corral.batch_end import cancel_batch, delete_batch
from corral.batch_state import rebuild_batch_state
from corral.config import CorralConfig
from corral.errors import BatchNotFoundError
from corral.feeder import Feeder
from corral.jobs import send_jobs
from corral.redis_keys import BatchKeys, circuit_key
from corral.store import Store
from corral.stored_job import job_model
from producer.batches import read_batch

CHUNK = 1000  # lines per Redis scan or store query


def cancel(client: redis.Redis, store: Store, feeder: Feeder, batch_id: str) -> int:
    """Cancel a batch (see corral.batch_end.cancel_batch); returns the lines ended now.

    Raises:
        BatchNotFoundError: no such batch.
    """
    read_batch(store, batch_id)
    return cancel_batch(client, store, feeder, batch_id)


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
    rebuild_batch_state(client, store, batch_id, ended_too=True)  # if Redis lost it
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
    """Remove the batch now (corral.batch_end.delete_batch)."""
    if not delete_batch(client, store, batch_id):
        raise BatchNotFoundError(f"no batch {batch_id!r}")
