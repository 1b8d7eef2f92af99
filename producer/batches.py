"""Batch objects: read from the record store in OpenAI's shape, listed."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import redis

from corral.errors import BatchNotFoundError
from corral.redis_client import redact_url
from corral.redis_keys import BatchKeys
from corral.store import Store
from producer.durations import parse_duration_s

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
TIMESTAMP_FIELDS = ("created_at", "in_progress_at", "finalizing_at", "completed_at",
                    "failed_at", "expired_at", "cancelling_at", "cancelled_at", "expires_at")
COMPLETION_WINDOW_DEFAULT = "24h"


def new_batch_id() -> str:
    """An id in OpenAI's `batch_…` form."""
    return f"batch_{uuid.uuid4().hex}"


def batch_options(models: list[str], config_source: str, max_cost_usd: Decimal | None,
                  deadline_at: int | None = None) -> dict[str, Any]:
    """What a batch's store row keeps in `options` (`deadline_at`: `submit --deadline`)."""
    options: dict[str, Any] = {
        "models": models, "config_source": config_source,
        "max_cost_usd": None if max_cost_usd is None else format(max_cost_usd, "f")}
    if deadline_at is not None:
        options["deadline_at"] = deadline_at
    return options


def expires_at(created_at: int, completion_window: str) -> int:
    """When a batch created at `created_at` (s) runs out of its window."""
    return created_at + int(parse_duration_s(completion_window))


def read_batch(store: Store, batch_id: str, client: redis.Redis | None = None) -> dict[str, Any]:
    """The batch object (docs/concepts.md) for `batch_id`, from the record store; with `client`, its
    spend so far from Redis's live counters.

    Raises:
        BatchNotFoundError: no such batch.
    """
    row = store.batches.get(batch_id)
    if row is None:
        raise BatchNotFoundError(
            f"no batch {batch_id!r} in the record store at {redact_url(store.url)} (a wrong id "
            "or CORRAL_STORE_URL, past its retention, or deleted)")
    spent_nusd = None
    if client is not None:
        try:
            spent_nusd = client.hget(BatchKeys(batch_id).meta, "spent_nusd")
        except redis.RedisError:
            spent_nusd = None  # a live figure only: the batch's state is in the store
    return with_provider_batches(store, batch_object(row, int(spent_nusd or 0)))


def with_provider_batches(store: Store, batch: dict[str, Any]) -> dict[str, Any]:
    """`batch` with the provider batches its batch lane runs in, when it has any."""
    kept = store.provider_batches.summaries(batch["id"])
    if kept:
        batch["provider_batches"] = [provider_batch_object(row) for row in kept]
    return batch


def provider_batch_object(row: dict[str, Any]) -> dict[str, Any]:
    """A provider batch of the batch lane as `status` shows it."""
    return {"id": row["id"], "provider": row["provider"], "model": row["model"],
            "status": row["status"], "total": int(row["total"]), "done": int(row["done"]),
            "created_at": int(row["created_at"]),
            "ended_at": int(row["ended_at"]) if row.get("ended_at") else None,
            "hedged_at": int(row["hedged_at"]) if row.get("hedged_at") else None}


def batch_object(row: dict[str, Any], spent_nusd: int = 0) -> dict[str, Any]:
    """Shape a batch's store row as OpenAI's Batch object (with corral's `models`)."""
    options = json.loads(row.get("options") or "{}")
    status = row["status"]
    batch: dict[str, Any] = {
        "id": row["id"], "object": "batch", "endpoint": "/v1/chat/completions",
        "status": status, "input_file": row.get("input_file"),
        "completion_window": row.get("completion_window") or COMPLETION_WINDOW_DEFAULT,
        "request_counts": {"total": int(row["total"]), "completed": int(row["completed"]),
                           "failed": int(row["failed"])},
        "models": options.get("models", []),
        "errors": None,
        "max_cost_usd": options.get("max_cost_usd"),
        "spent_usd": format(Decimal(spent_nusd) / 10**9, "f"),
    }
    if row.get("last_error"):
        batch["errors"] = {"object": "list", "data": [json.loads(row["last_error"])]}
    stamps = {"created_at": row["created_at"], "in_progress_at": row["created_at"],
              "expires_at": row.get("expires_at"), "cancelling_at": row.get("cancelling_at")}
    if row.get("ended_at") and status in TERMINAL_STATUSES:
        stamps.update({"finalizing_at": row["ended_at"], f"{status}_at": row["ended_at"]})
    for field in TIMESTAMP_FIELDS:
        batch[field] = int(stamps[field]) if stamps.get(field) else None
    return batch


def list_batches(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """The newest batches first, from the record store."""
    return [batch_object(row) for row in store.batches.newest(limit)]


def is_terminal(batch: dict[str, Any]) -> bool:
    """Whether the batch has ended."""
    return batch["status"] in TERMINAL_STATUSES
