"""Records and ledger rows: the workers' group-committed writes, and reading them back."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Engine, Numeric, and_, case, cast, func, literal, select, update

from corral.store.engine import upsert_insert
from corral.store.schema import batches, ledger, lines, records

RECORDS_PER_READ = 1_000
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

    def write(self, new_records: Sequence[RecordRow],
              calls: Sequence[LedgerRow] = ()) -> list[bool | None]:
        """Write records and ledger rows in one transaction (a group commit); returns, per
        record, whether it was the line's first (a duplicate changes nothing), or None when
        its batch is gone (deleted): then nothing of it is written, so a late writer never
        brings back part of a batch.

        A first record moves its batch's counts, writes the line's unsettled calls, and ends
        the batch when it was the last line (see `finish_batches`). Ledger rows are unique
        per (batch, custom_id, attempt): a billed row replaces an unsettled one of the same
        call (its worker was only slow); otherwise the first stays.
        """
        written: list[bool | None] = []
        now = int(self._clock())
        with self._engine.begin() as connection:
            wanted = {row.batch_id for row in new_records} | {call.batch_id for call in calls}
            present = {str(batch_id) for batch_id in connection.execute(
                select(batches.c.id).where(batches.c.id.in_(wanted))).scalars()} \
                if wanted else set()
            # RETURNING, not rowcount, says whether it was new: the one both dialects agree on.
            insert_record = upsert_insert(self._engine, records).on_conflict_do_nothing(
                index_elements=["batch_id", "custom_id"]).returning(records.c.seq)
            counts: dict[tuple[str, str], int] = {}
            billed: list[LedgerRow] = []
            for row in new_records:
                if row.batch_id not in present:
                    written.append(None)
                    continue
                line_no: Any = row.line_no if row.line_no is not None else select(
                    lines.c.line_no).where(lines.c.batch_id == row.batch_id,
                                           lines.c.custom_id == row.custom_id
                                           ).scalar_subquery()
                result = connection.execute(insert_record.values(
                    batch_id=row.batch_id, custom_id=row.custom_id, line_no=line_no,
                    error_code=row.error_code,
                    record=json.dumps(row.record, separators=(",", ":")), written_at=now))
                new = result.first() is not None
                written.append(new)
                if row.call is not None:
                    billed.append(replace(row.call, productive=new and row.error_code is None))
                if new:
                    column = "failed" if row.error_code else "completed"
                    counts[(row.batch_id, column)] = counts.get((row.batch_id, column), 0) + 1
                    billed.extend(row.unsettled)
            for (batch_id, column), amount in sorted(counts.items()):
                connection.execute(update(batches).where(batches.c.id == batch_id).values(
                    {column: batches.c[column] + amount}))
            billed.extend(call for call in calls if call.batch_id in present)
            if billed:
                self._write_calls(connection, billed, now)
            finish_batches(connection, sorted({batch_id for batch_id, _ in counts}), now)
        return written

    def _write_calls(self, connection: Any, calls: Sequence[LedgerRow], now: int) -> None:
        insert = upsert_insert(self._engine, ledger)
        settled_wins = insert.on_conflict_do_update(
            index_elements=["batch_id", "custom_id", "attempt"],
            set_={name: insert.excluded[name] for name in (
                "model", "unsettled", "productive", "input_tokens", "cached_input_tokens",
                "output_tokens", "cost_usd", "list_cost_usd", "client_request_id", "lane",
                "written_at", "row")},
            where=and_(ledger.c.unsettled, insert.excluded.unsettled.is_(False)))
        connection.execute(settled_wins, [
            {"batch_id": call.batch_id, "custom_id": call.custom_id, "attempt": call.attempt,
             "model": call.model, "unsettled": call.unsettled, "productive": call.productive,
             "input_tokens": call.input_tokens,
             "cached_input_tokens": call.cached_input_tokens,
             "output_tokens": call.output_tokens, "cost_usd": call.cost_usd,
             "list_cost_usd": call.list_cost_usd, "client_request_id": call.client_request_id,
             "lane": call.lane, "written_at": now,
             "row": json.dumps(call.row or {}, separators=(",", ":"))} for call in calls])

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
        with self._engine.connect() as connection:
            return {str(row.custom_id): row.error_code for row in connection.execute(
                select(records.c.custom_id, records.c.error_code).where(
                    records.c.batch_id == batch_id, records.c.custom_id.in_(custom_ids)))}

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
    if not batch_ids:
        return
    connection.execute(
        update(batches)
        .where(batches.c.id.in_(batch_ids), batches.c.status.in_(OPEN_STATUSES),
               batches.c.completed + batches.c.failed >= batches.c.total)
        .values(status=case((and_(batches.c.end_status == "completed",
                                  batches.c.completed == 0), literal("failed")),
                            else_=batches.c.end_status),
                ended_at=now))
