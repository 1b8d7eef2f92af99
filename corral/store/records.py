"""Records and ledger rows: the workers' group-committed writes, and reading them back."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Engine,
    Numeric,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    select,
    update,
)

from corral.store.engine import upsert_insert
from corral.store.schema import batches, ledger, lines, records

RECORDS_PER_READ = 1_000
IDS_PER_QUERY = 500  # ids per IN list: within every SQLite build's bound-parameter limit
OPEN_STATUSES = ("in_progress", "cancelling")

# The message of a record a line gets without a call, when it ends in bulk (stored as NULL).
BULK_MESSAGES = {
    "batch_cancelled": "the batch was cancelled",
    "batch_expired": "the batch's completion window ended before this line ran",
}


@dataclass(frozen=True)
class LedgerRow:
    """One provider call: billed (its usage priced), or unsettled (nobody saw it finish:
    `row` holds its bounds, and its cost is 0 to the bound, priced by the report)."""

    batch_id: str
    custom_id: str
    attempt: int
    model: str
    unsettled: bool
    productive: bool
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    list_cost_usd: Decimal = Decimal(0)
    client_request_id: str = ""
    row: dict[str, Any] | None = None
    lane: str = "live"


@dataclass(frozen=True)
class RecordRow:
    """A line's terminal record (an OpenAI batch output line); `error_code` None: a result.

    `line_no` is its input line (None: looked up from its stored line); `call` is the billed
    call that produced it, written either way, productive only when this record is the line's
    first result; `unsettled` are the ledger rows of the line's calls nobody saw finish,
    written only with its first record.
    """

    batch_id: str
    custom_id: str
    record: dict[str, Any]
    error_code: str | None = None
    line_no: int | None = None
    call: LedgerRow | None = None
    unsettled: Sequence[LedgerRow] = field(default=())


def bulk_record(batch_id: str, custom_id: str, code: str) -> dict[str, Any]:
    """The record of a line ended in bulk with `code` (its id derived, so every read of it
    agrees)."""
    digest = hashlib.blake2b(f"{batch_id}\0{custom_id}".encode(), digest_size=16).hexdigest()
    return {"id": f"batch_req_{digest}", "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": BULK_MESSAGES.get(code, code)}}


class RecordStore:
    """What corral keeps for good, on SQLite or PostgreSQL (schema: corral/store/schema.py)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock
        # Built once: SQLAlchemy then only looks a statement up in its cache per write, where
        # building one per row cost a worker more CPU than the rest of its line.
        self._line_numbers = select(lines.c.custom_id, lines.c.line_no).where(
            lines.c.batch_id == bindparam("batch_key"),
            lines.c.custom_id.in_(bindparam("custom_ids", expanding=True)))
        # RETURNING, not rowcount, says which rows were new: the one both dialects agree on,
        # and it works for many rows in one statement.
        self._insert_records = upsert_insert(engine, records).on_conflict_do_nothing(
            index_elements=["batch_id", "custom_id"]).returning(
                records.c.batch_id, records.c.custom_id)
        # Moves a batch's counts and ends it when that was its last line, in one statement;
        # RETURNING says the batch is still there (see `write`).
        completed = batches.c.completed + bindparam("new_completed")
        failed = batches.c.failed + bindparam("new_failed")
        self._count = update(batches).where(batches.c.id == bindparam("batch_key")).values(
            completed=completed, failed=failed, **_ending(completed, failed)[1],
        ).returning(batches.c.id)
        insert = upsert_insert(engine, ledger)
        # RETURNING makes SQLAlchemy send a group's rows in one statement (insertmanyvalues):
        # psycopg's own executemany sends them one by one in a pipeline, and under gevent each
        # send waited its turn while the transaction stayed open.
        self._insert_calls = insert.on_conflict_do_update(
            index_elements=["batch_id", "custom_id", "attempt"],
            set_={name: insert.excluded[name] for name in (
                "model", "unsettled", "productive", "input_tokens", "cached_input_tokens",
                "output_tokens", "cost_usd", "list_cost_usd", "client_request_id", "lane",
                "written_at", "row")},
            where=and_(ledger.c.unsettled, insert.excluded.unsettled.is_(False)),
        ).returning(ledger.c.attempt)

    def write(self, new_records: Sequence[RecordRow],
              calls: Sequence[LedgerRow] = ()) -> list[bool | None]:
        """Write records and ledger rows in one transaction (a group commit); returns, per
        record, whether it was the line's first (a duplicate changes nothing), or None when
        its batch is gone (deleted): then nothing of it is written, so a late writer never
        brings back part of a batch.

        A first record moves its batch's counts, writes the line's unsettled calls, and ends
        the batch when it was the last line. Ledger rows are unique per (batch, custom_id,
        attempt): a billed row replaces an unsettled one of the same call (its worker was
        only slow); otherwise the first stays.

        Three statements whatever the group's size (each one a round trip, and on SQLite a
        hand-over of the GIL): the records, the calls, then each batch's counts, whose
        update also finds a batch deleted meanwhile; that batch's rows are then taken out
        again, so the transaction leaves nothing of it.
        """
        now = int(self._clock())
        with self._engine.begin() as connection:
            new = self._insert(connection, new_records, now)
            flags: list[bool] = []
            moved = {batch_id: {"completed": 0, "failed": 0} for batch_id in (
                *(row.batch_id for row in new_records), *(call.batch_id for call in calls))}
            billed: list[LedgerRow] = [*calls]
            for row in new_records:
                first = (row.batch_id, row.custom_id) in new
                new.discard((row.batch_id, row.custom_id))  # a second copy is a duplicate
                flags.append(first)
                if row.call is not None:
                    billed.append(replace(row.call, productive=first and row.error_code is None))
                if first:
                    moved[row.batch_id]["failed" if row.error_code else "completed"] += 1
                    billed.extend(row.unsettled)
            if billed:
                connection.execute(self._insert_calls, [_call_params(call, now)
                                                        for call in one_row_per_call(billed)])
            gone = {batch_id for batch_id, counts in sorted(moved.items())
                    if connection.execute(self._count, {
                        "batch_key": batch_id, "new_completed": counts["completed"],
                        "new_failed": counts["failed"], "ended_now": now}).first() is None}
            for batch_id in sorted(gone):
                for table in (records, ledger):
                    connection.execute(delete(table).where(table.c.batch_id == batch_id))
        return [None if row.batch_id in gone else first
                for row, first in zip(new_records, flags, strict=True)]

    def _insert(self, connection: Any, rows: Sequence[RecordRow],
                now: int) -> set[tuple[str, str]]:
        """Insert the records not yet there, in one statement; returns the (batch_id,
        custom_id) of those that were new. A record without its line number gets the one
        its line was stored with."""
        line_numbers: dict[tuple[str, str], int] = {}
        for batch_id in sorted({row.batch_id for row in rows if row.line_no is None}):
            line_numbers.update(((batch_id, str(custom_id)), int(line_no))
                                for custom_id, line_no in connection.execute(
                self._line_numbers, {"batch_key": batch_id, "custom_ids": sorted(
                    {row.custom_id for row in rows
                     if row.batch_id == batch_id and row.line_no is None})}))
        params: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            key = (row.batch_id, row.custom_id)
            params.setdefault(key, {
                "batch_id": row.batch_id, "custom_id": row.custom_id,
                "line_no": row.line_no if row.line_no is not None else line_numbers.get(key),
                "error_code": row.error_code, "written_at": now,
                "record": json.dumps(row.record, separators=(",", ":"))})
        if not params:
            return set()
        return {(str(batch_id), str(custom_id)) for batch_id, custom_id in connection.execute(
            self._insert_records, list(params.values()))}

    def iter_records(self, batch_id: str, *,
                     input_order: bool = False) -> Iterator[dict[str, Any]]:
        """The batch's records in completion order (or input order), a page at a time: keyset
        paging, so memory stays flat however many there are."""
        key = records.c.line_no if input_order else records.c.seq
        after = -1
        while True:
            with self._engine.connect() as connection:
                page = connection.execute(
                    select(key.label("key"), records.c.custom_id, records.c.error_code,
                           records.c.record)
                    .where(records.c.batch_id == batch_id, key > after)
                    .order_by(key).limit(RECORDS_PER_READ)).all()
            if not page:
                return
            for row in page:
                yield json.loads(row.record) if row.record is not None else bulk_record(
                    batch_id, row.custom_id, row.error_code)
            after = page[-1].key

    def has_records(self, batch_id: str, custom_ids: Sequence[str]) -> set[str]:
        """Which of these lines have their record."""
        return set(self.error_codes(batch_id, custom_ids))

    def error_codes(self, batch_id: str, custom_ids: Sequence[str]) -> dict[str, str | None]:
        """custom_id → its record's error code (None: a result) of these lines that have
        their record."""
        codes: dict[str, str | None] = {}
        with self._engine.connect() as connection:
            for start in range(0, len(custom_ids), IDS_PER_QUERY):
                codes.update((str(row.custom_id), row.error_code)
                             for row in connection.execute(
                    select(records.c.custom_id, records.c.error_code).where(
                        records.c.batch_id == batch_id,
                        records.c.custom_id.in_(custom_ids[start:start + IDS_PER_QUERY]))))
        return codes

    def ledger_rows(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """The batch's ledger rows (billed and unsettled), as stored."""
        with self._engine.connect() as connection:
            for row in connection.execute(select(ledger.c.row, ledger.c.unsettled,
                                                 ledger.c.productive, ledger.c.lane)
                                          .where(ledger.c.batch_id == batch_id)):
                yield {**json.loads(row.row), "unsettled": bool(row.unsettled),
                       "productive": bool(row.productive), "lane": row.lane}

    def ledger_totals(self, batch_id: str) -> list[dict[str, Any]]:
        """Billed calls summed per (model, productive): requests, tokens, cost, list cost.

        PostgreSQL sums in SQL (money cast to NUMERIC, exact); SQLite, whose only decimal is a
        float, sums tokens in SQL and money here in Decimal, streaming the rows.
        """
        billed = (ledger.c.batch_id == batch_id, ledger.c.unsettled.is_(False))
        group = (ledger.c.model, ledger.c.productive)
        # PostgreSQL sums bigints as NUMERIC (a Decimal): cast back, so tokens are ints on both.
        tokens = (func.count().label("requests"),
                  *(cast(func.sum(ledger.c[name]), BigInteger).label(name) for name in (
                      "input_tokens", "cached_input_tokens", "output_tokens")))
        with self._engine.connect() as connection:
            if self._engine.dialect.name == "postgresql":
                return [dict(row._mapping) for row in connection.execute(
                    select(*group, *tokens,
                           func.sum(cast(ledger.c.cost_usd, Numeric)).label("cost_usd"),
                           func.sum(cast(ledger.c.list_cost_usd, Numeric)).label(
                               "list_cost_usd"))
                    .where(*billed).group_by(*group))]
            totals = {(row.model, bool(row.productive)): {
                **row._mapping, "productive": bool(row.productive), "cost_usd": Decimal(0),
                "list_cost_usd": Decimal(0)} for row in connection.execute(
                    select(*group, *tokens).where(*billed).group_by(*group))}
            money = connection.execution_options(yield_per=RECORDS_PER_READ).execute(
                select(*group, ledger.c.cost_usd, ledger.c.list_cost_usd).where(*billed))
            for row in money:
                sums = totals[(row.model, bool(row.productive))]
                sums["cost_usd"] += row.cost_usd
                sums["list_cost_usd"] += row.list_cost_usd
        return list(totals.values())

    def unsettled_rows(self, batch_id: str) -> list[dict[str, Any]]:
        """The batch's unsettled calls (few: killed workers, timeouts), as stored."""
        with self._engine.connect() as connection:
            return [{**json.loads(row.row), "unsettled": True} for row in connection.execute(
                select(ledger.c.row).where(ledger.c.batch_id == batch_id,
                                           ledger.c.unsettled.is_(True)))]

    def count_records(self, batch_id: str) -> int:
        """How many lines of the batch have their record."""
        with self._engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(records)
                                          .where(records.c.batch_id == batch_id)).scalar_one())


def finish_batches(connection: Any, batch_ids: Sequence[str], now: int) -> None:
    """End each open batch whose every line has its record: as its end_status (completed,
    cancelled, expired), or failed when it was to complete and no line succeeded."""
    if batch_ids:
        connection.execute(_FINISH, {"batch_ids": list(batch_ids), "ended_now": now})


def _ending(completed: Any, failed: Any) -> tuple[Any, dict[str, Any]]:
    """Whether an open batch with these counts has ended, and the values that end it (or
    leave it be): its end_status (failed when it was to complete and no line succeeded) and
    the time, `ended_now`."""
    ends = and_(batches.c.status.in_(OPEN_STATUSES), completed + failed >= batches.c.total)
    return ends, {
        "status": case((and_(ends, batches.c.end_status == "completed", completed == 0),
                        literal("failed")), (ends, batches.c.end_status),
                       else_=batches.c.status),
        "ended_at": case((ends, bindparam("ended_now")), else_=batches.c.ended_at)}


_ENDS, _END_VALUES = _ending(batches.c.completed, batches.c.failed)
_FINISH = update(batches).where(batches.c.id.in_(bindparam("batch_ids", expanding=True)),
                                _ENDS).values(**_END_VALUES)


def one_row_per_call(calls: Sequence[LedgerRow]) -> list[LedgerRow]:
    """The row each call keeps when a group holds it twice: a billed row over an unsettled
    one, else the first (as the ledger's upsert decides between a row and the stored one;
    one statement may not touch a row twice)."""
    chosen: dict[tuple[str, str, int], LedgerRow] = {}
    for call in calls:
        key = (call.batch_id, call.custom_id, call.attempt)
        kept = chosen.get(key)
        if kept is None or (kept.unsettled and not call.unsettled):
            chosen[key] = call
    return list(chosen.values())


def _call_params(call: LedgerRow, now: int) -> dict[str, Any]:
    return {"batch_id": call.batch_id, "custom_id": call.custom_id, "attempt": call.attempt,
            "model": call.model, "unsettled": call.unsettled, "productive": call.productive,
            "input_tokens": call.input_tokens, "cached_input_tokens": call.cached_input_tokens,
            "output_tokens": call.output_tokens, "cost_usd": call.cost_usd,
            "list_cost_usd": call.list_cost_usd, "client_request_id": call.client_request_id,
            "lane": call.lane, "written_at": now,
            "row": json.dumps(call.row or {}, separators=(",", ":"))}
