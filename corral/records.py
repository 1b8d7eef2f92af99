"""Terminal records (OpenAI batch output lines) and their write-once store in Redis."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis

from corral import lua_scripts
from corral.redis_keys import BatchKeys


def new_record_id() -> str:
    """An id for one output line, in OpenAI's `batch_req_…` form."""
    return f"batch_req_{uuid.uuid4().hex}"


def result_record(custom_id: str, *, request_id: str, body: dict[str, Any],
                  route: dict[str, Any] | None = None) -> dict[str, Any]:
    """A successful line: the provider's chat.completion under `response.body`."""
    record = {"id": new_record_id(), "custom_id": custom_id,
              "response": {"status_code": 200, "request_id": request_id, "body": body},
              "error": None}
    if route is not None:
        record["route"] = route
    return record


def error_record(custom_id: str, *, code: str, message: str,
                 response: dict[str, Any] | None = None,
                 route: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failed line: `error.code` from DESIGN §3, and the provider's 4xx when there was one."""
    record = {"id": new_record_id(), "custom_id": custom_id, "response": response,
              "error": {"code": code, "message": message}}
    if route is not None:
        record["route"] = route
    return record


class OutcomeStore:
    """Writes each line's terminal record exactly once, and every billed call to the ledger."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._record_outcome = lua_scripts.register(client, "record_outcome")

    def record(self, batch_id: str, record: dict[str, Any], *,
               ledger_entry: dict[str, Any] | None = None) -> bool:
        """Store `record` unless the line already has one; log `ledger_entry` either way.

        Returns:
            True when this call wrote the line's record, False for a duplicate.
        """
        keys = BatchKeys(batch_id)
        counter = "failed" if record.get("error") else "completed"
        entry = json.dumps(ledger_entry, separators=(",", ":")) if ledger_entry else ""
        wrote = self._record_outcome(
            keys=[keys.outcomes, keys.done, keys.meta, keys.ledger],
            args=[record["custom_id"], json.dumps(record, separators=(",", ":")), counter, entry],
        )
        return bool(wrote)

    def has_outcome(self, batch_id: str, custom_id: str) -> bool:
        """Whether the line already ended, so a redelivered job need not call the provider."""
        return bool(self._client.hexists(BatchKeys(batch_id).outcomes, custom_id))
