"""Redis's part of a batch (hot state: status, live counts, feed cursors, caps), made from its
row in the record store: when it is submitted, and again when Redis lost it."""

from __future__ import annotations

import json
import logging
import math
from decimal import Decimal
from typing import Any

import redis

from corral.redis_keys import BATCH_INDEX, BatchKeys
from corral.stats import stat_field
from corral.store import Store
from corral.store.records import OPEN_STATUSES

log = logging.getLogger(__name__)

# Call numbers of a batch's lines start past this many times the store's rebuild count, so
# calls made after a rebuild never share a ledger key with calls made before it.
CALLS_PER_REBUILD = 10_000
REBUILD_LOCK_MS = 30_000


def batch_meta(row: dict[str, Any], lines_by_model: dict[str, int]) -> dict[str, str | int]:
    """The meta hash of a new batch, from its store row (nothing fed yet)."""
    options = json.loads(row["options"] or "{}")
    meta: dict[str, str | int] = {
        "id": row["id"], "status": row["status"], "end_status": row["end_status"],
        "created_at": row["created_at"], "in_progress_at": row["created_at"],
        "expires_at": row["expires_at"], "completion_window": row["completion_window"],
        "total": row["total"], "completed": row["completed"], "failed": row["failed"],
        "enqueued": 0, "models": json.dumps(options.get("models", [])),
        "input_file": row["input_file"], "config_source": options.get("config_source", ""),
        "call_offset": CALLS_PER_REBUILD * int(row["rebuilds"])}
    if row.get("cancelling_at"):
        meta["cancelling_at"] = row["cancelling_at"]
    if row.get("last_error"):
        meta["last_error"] = row["last_error"]
    if options.get("max_cost_usd") is not None:
        max_cost = Decimal(options["max_cost_usd"])
        meta["max_cost_nusd"] = math.floor(max_cost * 10**9)
        meta["max_cost_usd"] = format(max_cost, "f")
    for model, count in lines_by_model.items():
        meta.update({f"lines:{model}": count, f"fed:{model}": 0, f"fed_line:{model}": 0})
    return meta


def put_batch_state(client: redis.Redis, meta: dict[str, str | int],
                    stats: dict[str, int] | None = None) -> None:
    """Write a batch's meta (and live counters) and list it, in one transaction."""
    keys = BatchKeys(str(meta["id"]))
    pipe = client.pipeline()
    pipe.hset(keys.meta, mapping=meta)  # type: ignore[arg-type]
    if stats:
        pipe.hset(keys.stats, mapping=stats)  # type: ignore[arg-type]
    pipe.zadd(BATCH_INDEX, {str(meta["id"]): int(meta["created_at"])})
    pipe.execute()


def has_batch_state(client: redis.Redis, batch_id: str) -> bool:
    """Whether Redis holds the batch's meta (a meta without its id is a late writer's leftover
    in a Redis that lost the batch)."""
    return bool(client.hexists(BatchKeys(batch_id).meta, "id"))


def rebuild_batch_state(client: redis.Redis, store: Store, batch_id: str, *,
                        ended_too: bool = False) -> bool:
    """Make Redis's part of an open batch again from the store, after Redis lost it: its
    counts from the records, every model's cursor back at the start (feeding skips lines that
    have their record, so what is left is queued again), call numbers past the old ones.
    With `ended_too`, an ended batch's too (`corral retry` reopens it).

    Returns False when there was nothing to do (Redis has it, the batch is gone or ended, or
    another process is rebuilding it).
    """
    keys = BatchKeys(batch_id)
    lock = f"{keys.meta}:rebuild"
    if has_batch_state(client, batch_id) or not client.set(lock, "1", nx=True,
                                                           px=REBUILD_LOCK_MS):
        return False
    try:
        row = store.batches.get(batch_id)
        if row is None or has_batch_state(client, batch_id) or (
                row["status"] not in OPEN_STATUSES and not ended_too):
            return False
        rebuilds = store.batches.rebuilt(batch_id)
        by_model = list(store.batches.lines_by_model(batch_id))
        meta = batch_meta({**row, "rebuilds": rebuilds},
                          {model: lines for model, lines, _, _ in by_model})
        stats: dict[str, int] = {}
        for model, _, completed, failed in by_model:
            meta[f"fed:{model}"] = completed + failed
            stats[stat_field(model, "enqueued")] = completed + failed
            stats[stat_field(model, "completed")] = completed
            stats[stat_field(model, "failed")] = failed
        meta["enqueued"] = sum(completed + failed for _, _, completed, failed in by_model)
        spent = sum((Decimal(total["cost_usd"] or 0)
                     for total in store.records.ledger_totals(batch_id)), Decimal(0))
        meta["spent_nusd"] = math.floor(spent * 10**9)
        if row["ended_at"]:
            meta["finalizing_at"] = meta[f"{row['status']}_at"] = row["ended_at"]
        client.delete(keys.meta, keys.stats, keys.suspects)  # a late writer's leftovers
        put_batch_state(client, meta, stats)
        log.warning("batch %s: Redis had lost its state; rebuilt from the record store "
                    "(%d of %d lines ended; the rest will be queued again)", batch_id,
                    int(row["completed"]) + int(row["failed"]), int(row["total"]))
        return True
    finally:
        client.delete(lock)
