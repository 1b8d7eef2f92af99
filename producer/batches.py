"""Batch objects in Redis: create one, read it back in OpenAI's shape, list them."""

from __future__ import annotations

import json
import math
import uuid
from decimal import Decimal
from typing import Any

import redis

from corral.errors import BatchLostError, BatchNotFoundError
from corral.redis_keys import BATCH_INDEX, BatchKeys
from producer.durations import parse_duration_s

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
TIMESTAMP_FIELDS = ("created_at", "in_progress_at", "finalizing_at", "completed_at",
                    "failed_at", "expired_at", "cancelling_at", "cancelled_at", "expires_at")
COMPLETION_WINDOW_DEFAULT = "24h"


def new_batch_id() -> str:
    """An id in OpenAI's `batch_…` form."""
    return f"batch_{uuid.uuid4().hex}"


def create_batch(client: redis.Redis, *, total: int, models: list[str], input_file: str,
                 completion_window: str = COMPLETION_WINDOW_DEFAULT,
                 config_source: str = "", max_cost_usd: Decimal | None = None,
                 batch_id: str | None = None, extra: dict[str, str | int] | None = None) -> str:
    """Store a new batch, in progress, that expects `total` terminal records."""
    batch_id = batch_id or new_batch_id()
    created_at, _ = client.time()  # the Redis clock, which the workers' checks also use
    meta: dict[str, str | int] = {
        "id": batch_id, "status": "in_progress", "end_status": "completed",
        "created_at": created_at, "in_progress_at": created_at,
        "expires_at": created_at + int(parse_duration_s(completion_window)),
        "completion_window": completion_window, "total": total, "completed": 0, "failed": 0,
        "enqueued": 0, "models": json.dumps(models), "input_file": input_file,
        "config_source": config_source}
    if max_cost_usd is not None:
        meta["max_cost_nusd"] = math.floor(max_cost_usd * 10**9)
        meta["max_cost_usd"] = format(max_cost_usd, "f")
    meta.update(extra or {})
    pipe = client.pipeline()
    pipe.hset(BatchKeys(batch_id).meta, mapping=meta)  # type: ignore[arg-type]
    pipe.zadd(BATCH_INDEX, {batch_id: created_at})
    pipe.execute()
    return batch_id


def read_batch(client: redis.Redis, batch_id: str) -> dict[str, Any]:
    """The batch object (DESIGN §3) for `batch_id`.

    Raises:
        BatchNotFoundError: no such batch.
        BatchLostError: only part of it is left (Redis lost its data while lines ran).
    """
    meta: dict[str, str] = client.hgetall(BatchKeys(batch_id).meta)  # type: ignore[assignment]
    if not meta:
        raise BatchNotFoundError(
            f"no batch {batch_id!r} in this Redis (a wrong id or Redis URL, past its retention, "
            "or lost with Redis's data)")
    return batch_object(meta, batch_id)


def lost_batch_error(batch_id: str, detail: str = "") -> BatchLostError:
    """The one-line error every command gives for a batch whose data Redis lost."""
    return BatchLostError(
        f"Redis lost the data of batch {batch_id}{detail} (restarted without persistence or "
        "flushed; or the batch was deleted): its records and cost ledger are gone unless Redis "
        "kept an AOF or snapshot to restore. Submit its input file again to run it anew")


def batch_object(meta: dict[str, str], batch_id: str = "") -> dict[str, Any]:
    """Shape a stored meta hash as OpenAI's Batch object (with corral's `models`).

    Raises:
        BatchLostError: the meta has no id (only fields a late writer left in an empty Redis).
    """
    if "id" not in meta or "status" not in meta:
        raise lost_batch_error(batch_id or meta.get("id", "?"))
    batch: dict[str, Any] = {
        "id": meta["id"], "object": "batch", "endpoint": "/v1/chat/completions",
        "status": meta["status"], "input_file": meta.get("input_file"),
        "completion_window": meta.get("completion_window", COMPLETION_WINDOW_DEFAULT),
        "request_counts": {"total": int(meta.get("total", 0)),
                           "completed": int(meta.get("completed", 0)),
                           "failed": int(meta.get("failed", 0))},
        "models": json.loads(meta.get("models", "[]")),
        "errors": None,
        "max_cost_usd": meta.get("max_cost_usd"),
        "spent_usd": format(Decimal(int(meta.get("spent_nusd", 0))) / 10**9, "f"),
    }
    if meta.get("last_error"):
        batch["errors"] = {"object": "list", "data": [json.loads(meta["last_error"])]}
    for field in TIMESTAMP_FIELDS:
        batch[field] = int(meta[field]) if meta.get(field) else None
    return batch


def list_batches(client: redis.Redis, limit: int = 50) -> list[dict[str, Any]]:
    """The newest batches first; index entries of batches past retention are dropped."""
    ids: list[str] = client.zrevrange(BATCH_INDEX, 0, limit - 1)  # type: ignore[assignment]
    pipe = client.pipeline()
    for batch_id in ids:
        pipe.hgetall(BatchKeys(batch_id).meta)
    metas = pipe.execute()
    gone = [batch_id for batch_id, meta in zip(ids, metas, strict=True) if not meta]
    if gone:
        client.zrem(BATCH_INDEX, *gone)
    # A meta without its id is what a late writer left of a batch Redis lost: not listed.
    return [batch_object(meta) for meta in metas if "id" in meta and "status" in meta]


def is_terminal(batch: dict[str, Any]) -> bool:
    """Whether the batch has ended."""
    return batch["status"] in TERMINAL_STATUSES
