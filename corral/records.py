"""Terminal records (OpenAI batch output lines) and their write-once store in Redis."""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Callable
from typing import Any

import redis

from corral import lua_scripts
from corral.group_commit import GroupCommit
from corral.redis_keys import FLEET_STATS, BatchKeys


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


class Written(enum.IntEnum):
    """What `OutcomeStore.record` did."""

    GONE = -2  # not written: the batch is gone (deleted, expired, or lost with Redis's data)
    STARTED = -1  # not written: the line has started (only_unstarted)
    DUPLICATE = 0  # not written: the line already had its record
    NEW = 1  # written: this is the line's terminal record


DEFAULT_RETENTION_S = 7 * 24 * 3600


class OutcomeStore:
    """Writes each line's terminal record exactly once, and every billed call to the ledger."""

    def __init__(self, client: redis.Redis, *, retention_s: int = DEFAULT_RETENTION_S) -> None:
        self._retention_s = retention_s
        # Records share round trips with each other and with whatever else of the process
        # runs through this group (a worker's line starts).
        self.group_commit = GroupCommit(client)
        self._record_outcome = lua_scripts.register(client, "record_outcome")

    def record(self, batch_id: str, record: dict[str, Any], *,
               ledger_entry: dict[str, Any] | None = None,
               only_unstarted: bool = False, settled_call: str = "", model: str = "",
               call_counts: dict[str, int] | None = None,
               meta_fields: dict[str, str] | None = None,
               along: Callable[[lua_scripts.ScriptCalls], None] | None = None) -> Written:
        """Store `record` unless the line already has one; log `ledger_entry` either way.

        Args:
            batch_id: the batch.
            record: the terminal record; its `error` decides completed or failed.
            ledger_entry: the cost record of the call that produced it, if it was billed.
            only_unstarted: write only if no attempt of the line was ever started (so a
                cancel or an expiry never races a worker already calling the provider).
            settled_call: the `inflight` field of the call whose outcome this is known to be.
            model: the model whose live counters (corral/stats.py) the record moves.
            call_counts: what the call behind the record adds to them (`CallStats`).
            meta_fields: fields to set on the batch's meta in the same step (its end_status,
                its last_error), only while the batch exists.
            along: queues more commands to send in the same round trip, before the record.
        """
        keys = BatchKeys(batch_id)
        custom_id = record["custom_id"]
        error = record.get("error")
        counter = "failed" if error else "completed"
        entry = json.dumps(ledger_entry, separators=(",", ":")) if ledger_entry else ""
        counts = json.dumps(call_counts, separators=(",", ":")) if call_counts else ""
        script_keys = [
            keys.outcomes, keys.done, keys.meta, keys.ledger, keys.seq, keys.attempts,
            keys.lease(custom_id), keys.inflight, keys.stats, FLEET_STATS, keys.bodies,
            *keys.all()]
        args = [custom_id, json.dumps(record, separators=(",", ":")), counter, entry,
                self._retention_s, "1" if only_unstarted else "", settled_call, model, counts,
                error["code"] if error else "",
                json.dumps(meta_fields, separators=(",", ":")) if meta_fields else ""]
        calls = lua_scripts.ScriptCalls()
        if along is not None:
            along(calls)
        calls.call(self._record_outcome, script_keys, args)
        return Written(int(self.group_commit.run(calls.calls)[-1]))
