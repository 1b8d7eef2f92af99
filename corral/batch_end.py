"""Ending a batch: its lines in bulk (cancel, expiry after the completion window), or the
batch itself (delete, retention).

Used by the CLI (`corral cancel`, and `status`/`results`, which expire a batch whose window
has passed) and by every worker's feeding loop (which expires overdue batches nobody looks at).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis

from corral import lua_scripts
from corral.feeder import Feeder, FeedState
from corral.redis_keys import BATCH_INDEX, BatchKeys
from corral.store import Store
from corral.store.records import OPEN_STATUSES

CHUNK = 1000  # lines per Redis command
EXPIRY_SWEPT = "expiry_swept"  # meta field: the lines not started were ended as expired
BULK_END_TOKEN = "bulk_end:"  # meta fields: one per bulk end, so each counts once


def end_unstarted(client: redis.Redis, store: Store, feeder: Feeder, batch_id: str,
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
        mirror_bulk_end(client, keys, unstarted, state, ended, store.batches.get(batch_id),
                        token=f"{BULK_END_TOKEN}{uuid.uuid4().hex}")
    return ended


def mirror_bulk_end(client: redis.Redis, keys: BatchKeys, unstarted: list[str],
                    state: FeedState, ended: int, row: dict[str, Any] | None, *,
                    token: str) -> None:
    """Redis's part of ending lines in bulk, in one transaction: the requests of the queued
    lines go, nothing is left to feed, `ended` lines count as failed (once per `token`, so a
    transaction redis-py sends again counts them once), and the store's end of the batch, if
    these were its last lines."""
    pipe = client.pipeline()
    for start in range(0, len(unstarted), CHUNK):
        pipe.hdel(keys.bodies, *unstarted[start:start + CHUNK])
    for cursor in state.cursors:  # nothing is left to feed
        pipe.hset(keys.meta, f"fed:{cursor.model}", cursor.lines)
    lua_scripts.register(client, "count_once")(keys=[keys.meta], args=[token, "failed", ended],
                                               client=pipe)
    if row is not None and row["status"] not in OPEN_STATUSES:
        pipe.hset(keys.meta, mapping={"status": row["status"],
                                      f"{row['status']}_at": row["ended_at"]})
    pipe.execute()


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


def cancel_batch(client: redis.Redis, store: Store, feeder: Feeder, batch_id: str) -> int:
    """Cancel a batch: lines not started end as batch_cancelled now, without a provider call.

    Lines already running finish (their results are kept); a line waiting to retry ends as
    batch_cancelled when a worker next picks it up. Returns the lines ended now.
    """
    if not store.batches.cancel(batch_id):
        return 0
    row = store.batches.get(batch_id)
    assert row is not None
    client.hset(BatchKeys(batch_id).meta, mapping={
        "status": "cancelling", "end_status": "cancelled", "cancelling_at": row["cancelling_at"]})
    return end_unstarted(client, store, feeder, batch_id, "batch_cancelled")


def expire_if_due(client: redis.Redis, store: Store, feeder: Feeder, batch_id: str,
                  now: float | None = None) -> int:
    """After the completion window, end every line not started as batch_expired (workers
    start no line past the window), once; returns the lines ended now.

    The batch is marked to end as expired (a worker that meets an expired line marks it
    too), and its lines not started are swept once: a flag in its meta says the sweep is done,
    so the workers' loops look at an expired batch cheaply until its running lines end.
    """
    row = store.batches.get(batch_id)
    moment = time.time() if now is None else now
    if row is None or row["status"] != "in_progress" or moment < row["expires_at"]:
        return 0  # not due (a cancelling batch ends as cancelled, whatever the clock says)
    keys = BatchKeys(batch_id)
    store.batches.expire(batch_id)
    if client.hget(keys.meta, EXPIRY_SWEPT):
        return 0
    client.hset(keys.meta, "end_status", "expired")
    ended = end_unstarted(client, store, feeder, batch_id, "batch_expired")
    client.hset(keys.meta, EXPIRY_SWEPT, 1)
    return ended


def delete_batch(client: redis.Redis, store: Store, batch_id: str) -> bool:
    """Remove the batch: its rows in the store, then every key of it in Redis (leases
    included); False when the store had no such batch."""
    if not store.batches.delete(batch_id):
        return False
    keys = BatchKeys(batch_id)
    leases = list(client.scan_iter(match=keys.lease_pattern, count=CHUNK))
    client.delete(*keys.all(), *leases)
    client.zrem(BATCH_INDEX, batch_id)
    return True
