"""Batch lifecycle commands: cancel, expire, resume, retry and delete, all safe mid-run."""

from __future__ import annotations

import json
from typing import NamedTuple

import redis
from celery import Celery

from corral import lua_scripts
from corral.config import CorralConfig
from corral.errors import BatchNotFoundError
from corral.jobs import send_jobs
from corral.records import OutcomeStore, Written, error_record
from corral.redis_keys import BATCH_INDEX, BatchKeys, circuit_key
from producer.batches import is_terminal, read_batch
from producer.redis_lists import CHUNK, iter_chunks


def _end_unstarted(client: redis.Redis, outcomes: OutcomeStore, batch_id: str, code: str,
                   message: str) -> int:
    """File `code` for every line that has no record and was never started."""
    keys = BatchKeys(batch_id)
    ended = 0
    for _, ids in iter_chunks(client, keys.order):
        pipe = client.pipeline(transaction=False)
        pipe.hmget(keys.outcomes, ids)
        pipe.hmget(keys.attempts, ids)
        records, attempts = pipe.execute()
        for custom_id, record, started in zip(ids, records, attempts, strict=True):
            if record is None and started is None:
                written = outcomes.record(batch_id, error_record(
                    custom_id, code=code, message=message), only_unstarted=True)
                ended += written is Written.NEW
    return ended


def cancel(client: redis.Redis, outcomes: OutcomeStore, batch_id: str) -> int:
    """Cancel a batch: unstarted lines end as batch_cancelled now, without a provider call.

    Lines already running finish (their results are kept); workers end the rest of the
    started ones as batch_cancelled when they next pick them up. Returns the lines ended now.
    """
    batch = read_batch(client, batch_id)
    if is_terminal(batch):
        return 0
    now, _ = client.time()
    client.hset(BatchKeys(batch_id).meta, mapping={
        "status": "cancelling", "end_status": "cancelled", "cancelling_at": now})
    return _end_unstarted(client, outcomes, batch_id, "batch_cancelled",
                          "the batch was cancelled")


def expire_if_due(client: redis.Redis, outcomes: OutcomeStore, batch_id: str) -> int:
    """After the completion window, end every unstarted line as batch_expired."""
    batch = read_batch(client, batch_id)
    now, _ = client.time()
    if batch["status"] != "in_progress" or not batch["expires_at"] \
            or now < batch["expires_at"]:
        return 0  # a cancelling batch ends as cancelled, whatever the clock says
    client.hset(BatchKeys(batch_id).meta, "end_status", "expired")
    return _end_unstarted(client, outcomes, batch_id, "batch_expired",
                          "the batch's completion window ended before this line ran")


def requeue_stored(client: redis.Redis, app: Celery, config: CorralConfig,
                   batch_id: str) -> int:
    """Send every fed line that has no terminal record once more; safe while workers run.

    A line still queued or running gets a second message; its lease or its record makes the
    second delivery a no-op. Lines still in the spool are the feeder's (`corral feed`).
    """
    keys = BatchKeys(batch_id)
    read_batch(client, batch_id)
    jobs: list[tuple[str, str]] = []
    for custom_id, raw_job in client.hscan_iter(keys.bodies, count=CHUNK):
        if not client.hexists(keys.outcomes, custom_id):
            jobs.append((custom_id, config.models[json.loads(raw_job)["model"]].queue))
    return send_jobs(app, batch_id, jobs)


class Retried(NamedTuple):
    """What `retry` did: lines enqueued again, and failed lines it could not run."""

    enqueued: int
    not_stored: int  # no request kept: refused at submit, or never fed before the batch closed


def retry(client: redis.Redis, app: Celery, config: CorralConfig, batch_id: str,
          codes: set[str] | None = None) -> Retried:
    """Run failed lines again (those with these error codes, default all that can run).

    Each old record moves to the batch's history; circuits of the batch's providers close,
    since a retry usually follows a fixed key. Lines whose request was never stored in Redis
    keep their record and are counted apart.
    """
    keys = BatchKeys(batch_id)
    read_batch(client, batch_id)
    reopen = lua_scripts.register(client, "reopen_line")
    jobs: list[tuple[str, str]] = []
    not_stored = 0
    for custom_id, raw in client.hscan_iter(keys.outcomes, count=CHUNK):
        error = json.loads(raw).get("error")
        if not error or (codes is not None and error["code"] not in codes):
            continue
        raw_job = client.hget(keys.bodies, custom_id)
        if raw_job is None:  # refused at submit, or still spooled when the batch closed
            not_stored += 1
            continue
        model = config.models[json.loads(raw_job)["model"]]
        client.delete(circuit_key(model.provider))
        if reopen(keys=[keys.outcomes, keys.meta, keys.history, keys.attempts, keys.reruns,
                        *keys.all()],
                  args=[custom_id, raw]):
            jobs.append((custom_id, model.queue))
    send_jobs(app, batch_id, jobs)
    return Retried(len(jobs), not_stored)


def delete(client: redis.Redis, batch_id: str) -> None:
    """Remove every key of the batch now."""
    keys = BatchKeys(batch_id)
    if not client.exists(keys.meta):
        raise BatchNotFoundError(f"no batch {batch_id!r}")
    leases = list(client.scan_iter(match=keys.lease_pattern, count=CHUNK))
    client.delete(*keys.all(), *leases)
    client.zrem(BATCH_INDEX, batch_id)
