"""Terminal records (OpenAI batch output lines), and how a line's end is filed."""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from corral import lua_scripts
from corral.group_commit import GroupCommit
from corral.redis_keys import FLEET_STATS, BatchKeys
from corral.store.records import LedgerRow, RecordRow
from corral.store.writer import StoreWriter


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
    """A failed line: `error.code` (docs/concepts.md, the contract), and the provider's 4xx
    when there was one."""
    record = {"id": new_record_id(), "custom_id": custom_id, "response": response,
              "error": {"code": code, "message": message}}
    if route is not None:
        record["route"] = route
    return record


class Written(enum.IntEnum):
    """What `LineEnds.end` did."""

    GONE = -2  # not written: the batch is gone (deleted, or lost with Redis's data)
    DUPLICATE = 0  # not written: the line already had its record
    NEW = 1  # written: this is the line's terminal record


DEFAULT_RETENTION_S = 7 * 24 * 3600


@dataclass(frozen=True)
class LineEnd:
    """One line's end for `LineEnds.end_all`: its record, the billed call behind it (if any),
    the model whose live counters it moves and what it adds to them."""

    record: dict[str, Any]
    line_no: int | None = None
    call: LedgerRow | None = None
    model: str = ""
    call_counts: dict[str, int] | None = None

    def row(self, batch_id: str, unsettled: Sequence[LedgerRow] = ()) -> RecordRow:
        error = self.record.get("error")
        return RecordRow(batch_id, self.record["custom_id"], self.record,
                         error["code"] if error else None, self.line_no, self.call, unsettled)

    @property
    def error_code(self) -> str | None:
        error = self.record.get("error")
        return error["code"] if error else None


class LineEnds:
    """Ends lines: each record is committed to the record store (write-once, with its call's
    ledger row and the calls nobody saw finish), and only then does Redis drop what it held
    for the line in flight and move the live counters.

    Three group-committed round trips per end, each shared with the other task slots': read
    the line's marks (Redis), write (store), drop (Redis). A process that dies between the
    last two leaves the line's request in Redis: a redelivery runs it again, and the store
    keeps the first record (the second call is in the ledger, unproductive).
    """

    def __init__(self, client: redis.Redis, writer: StoreWriter, *,
                 retention_s: int = DEFAULT_RETENTION_S) -> None:
        self._retention_s = retention_s
        self._writer = writer
        self._client = client
        # Ends share round trips with each other and with whatever else of the process runs
        # through this group (a worker's line starts).
        self.group_commit = GroupCommit(client)
        self._line_marks = lua_scripts.register(client, "line_marks")
        self._end_line = lua_scripts.register(client, "end_line")

    def expecting(self) -> AbstractContextManager[None]:
        """Mark a task slot running a line, whose end a store transaction may wait to share
        (`Grouped.expecting`)."""
        return self._writer.expecting()

    def end(self, batch_id: str, record: dict[str, Any], *, line_no: int | None = None,
            call: LedgerRow | None = None, settled_call: str = "", others: bool = True,
            model: str = "",
            call_counts: dict[str, int] | None = None,
            meta_fields: dict[str, str] | None = None,
            along: Callable[[lua_scripts.ScriptCalls], None] | None = None) -> Written:
        """Store `record` unless the line already has one; log `call` either way.

        Args:
            batch_id: the batch.
            record: the terminal record; its `error` decides completed or failed.
            line_no: its input line, when known (else the store looks it up).
            call: the ledger row of the billed call that produced it, if there was one.
            settled_call: the `inflight` field of the call whose outcome this is known to be.
            others: whether the line may have other calls marked in flight (False when its
                start found none: then their read is saved, and end_line.lua returns any
                that came since).
            model: the model whose live counters (corral/stats.py) the record moves.
            call_counts: what the call behind the record adds to them (`CallStats`).
            meta_fields: fields to set on the batch's meta in Redis (its end_status, its
                last_error).
            along: queues more commands to send with Redis's part, before it.
        """
        keys = BatchKeys(batch_id)
        custom_id = record["custom_id"]
        end = LineEnd(record, line_no, call, model, call_counts)
        marks = self.group_commit.run([(self._line_marks,
                                        [keys.meta, keys.attempts, keys.inflight],
                                        [custom_id])])[0] if others else []
        unsettled = [unsettled_row(batch_id, custom_id, int(number), mark)
                     for number, mark in zip(marks[::2], marks[1::2], strict=True)
                     if keys.call_id(custom_id, int(number)) != settled_call]
        first = self._writer.write([end.row(batch_id, unsettled)])[0]
        if first is None:
            return Written.GONE
        settled = [keys.call_id(custom_id, row.attempt) for row in unsettled]
        if settled_call:
            settled.append(settled_call)
        calls = lua_scripts.ScriptCalls()
        if along is not None:
            along(calls)
        calls.call(*self._drop_call(batch_id, end, first, settled, meta_fields))
        # Redis's part of the batch may be gone (lost with its data): the store has the
        # record, and a rebuild recounts from it, so this end stands either way.
        _, *strays = self.group_commit.run(calls.calls)[-1]
        if strays:
            self._collect(batch_id, custom_id, strays)
        return Written.NEW if first else Written.DUPLICATE

    def end_all(self, batch_id: str, ends: Sequence[LineEnd]) -> list[Written]:
        """`end` for many lines that have no call in flight (a provider batch's answers):
        one store transaction for all their records and rows, then one Redis round trip."""
        firsts = self._writer.write([end.row(batch_id) for end in ends])
        calls = lua_scripts.ScriptCalls()
        filed = [(end, first) for end, first in zip(ends, firsts, strict=True)
                 if first is not None]
        for end, first in filed:
            calls.call(*self._drop_call(batch_id, end, first, (), None, fed=False))
        if filed:
            for (end, _), (_, *strays) in zip(filed, self.group_commit.run(calls.calls),
                                              strict=True):
                if strays:
                    self._collect(batch_id, end.record["custom_id"], strays)
        return [Written.GONE if first is None else Written.NEW if first else Written.DUPLICATE
                for first in firsts]

    def _drop_call(self, batch_id: str, end: LineEnd, first: bool, settled: Sequence[str],
                   meta_fields: dict[str, str] | None, *,
                   fed: bool = True) -> lua_scripts.ScriptCall:
        return end_line_call(self._end_line, batch_id, end.record["custom_id"], first=first,
                             error_code=end.error_code, retention_s=self._retention_s,
                             settled=settled, model=end.model, call_counts=end.call_counts,
                             meta_fields=meta_fields, fed=fed)

    def _collect(self, batch_id: str, custom_id: str, strays: list[Any]) -> None:
        """Write marks that came after the line's end began as unsettled rows, then drop them
        from Redis (in that order: a mark is never gone before its row is written)."""
        rows = [unsettled_row(batch_id, custom_id, int(number), mark)
                for number, mark in zip(strays[::2], strays[1::2], strict=True)]
        self._writer.write([], rows)
        self._client.hdel(BatchKeys(batch_id).inflight,
                          *(BatchKeys.call_id(custom_id, row.attempt) for row in rows))


def end_line_call(script: Script, batch_id: str, custom_id: str, *, first: bool,
                  error_code: str | None, retention_s: int, settled: Sequence[str] = (),
                  model: str = "", call_counts: dict[str, int] | None = None,
                  meta_fields: dict[str, str] | None = None,
                  fed: bool = True) -> lua_scripts.ScriptCall:
    """The end_line.lua call that lets Redis drop a line whose record the store has (see
    the script for what each argument does; `fed` is False for a provider batch's answer)."""
    keys = BatchKeys(batch_id)
    return (script, [keys.meta, keys.attempts, keys.reruns, keys.lease(custom_id),
                     keys.inflight, keys.bodies, keys.stats, FLEET_STATS, *keys.all()],
            [custom_id, "1" if first else "0", "failed" if error_code else "completed",
             retention_s, _compact(list(settled)) if settled else "", model,
             _compact(call_counts) if call_counts else "", error_code or "",
             _compact(meta_fields) if meta_fields else "", "1" if fed else "0"])


def unsettled_row(batch_id: str, custom_id: str, attempt: int, mark: str) -> LedgerRow:
    """The ledger row of a call nobody saw finish, from its mark: priced 0 to its bounds."""
    row = json.loads(mark)
    if not isinstance(row, dict):  # a mark from before marks carried their bounds
        row = {"started_s": row}
    row.update(custom_id=custom_id, attempt=attempt, unsettled=True, productive=False)
    return LedgerRow(batch_id, custom_id, attempt, str(row.get("model") or ""),
                     unsettled=True, productive=False,
                     client_request_id=str(row.get("client_request_id") or ""), row=row)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
