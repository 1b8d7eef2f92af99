"""The record store's interface: batches, input lines, write-once records, the cost ledger."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, and_, func, select, update

from corral.store.engine import upsert_insert
from corral.store.schema import batches, ledger, lines, records

LINES_PER_INSERT = 5_000
RECORDS_PER_READ = 1_000


@dataclass(frozen=True)
class RecordRow:
    """A line's terminal record (an OpenAI batch output line); `error_code` None: a result."""

    batch_id: str
    custom_id: str
    record: dict[str, Any]
    error_code: str | None = None


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


class RecordStore:
    """What corral keeps for good, on SQLite or PostgreSQL (schema: corral/store/schema.py)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def create_batch(self, batch_id: str, *, total: int, completion_window: str,
                     input_file: str = "", options: dict[str, Any] | None = None) -> None:
        """A new batch, in progress, that expects `total` records."""
        with self._engine.begin() as connection:
            connection.execute(batches.insert().values(
                id=batch_id, status="in_progress", input_file=input_file,
                completion_window=completion_window, total=total, completed=0, failed=0,
                created_at=int(self._clock()), options=json.dumps(options or {})))

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's row, or None."""
        with self._engine.connect() as connection:
            row = connection.execute(select(batches).where(batches.c.id == batch_id)).first()
        return None if row is None else dict(row._mapping)

    def add_lines(self, batch_id: str, accepted: Iterable[tuple[str, int, str, str]]) -> int:
        """Store accepted lines, (custom_id, line number, model, stored job) each, in chunks of
        one transaction each; returns how many."""
        added = 0
        chunk: list[dict[str, Any]] = []
        with self._engine.begin() as connection:
            for custom_id, line_no, model, job in accepted:
                chunk.append({"batch_id": batch_id, "custom_id": custom_id,
                              "line_no": line_no, "model": model, "job": job})
                if len(chunk) == LINES_PER_INSERT:
                    connection.execute(lines.insert(), chunk)
                    added, chunk = added + len(chunk), []
            if chunk:
                connection.execute(lines.insert(), chunk)
                added += len(chunk)
        return added

    def write(self, new_records: Sequence[RecordRow],
              calls: Sequence[LedgerRow] = ()) -> list[bool]:
        """Write records and ledger rows in one transaction (a group commit); returns, per
        record, whether it was the line's first (a duplicate changes nothing).

        Ledger rows are unique per (batch, custom_id, attempt): a billed row replaces an
        unsettled one of the same call (its worker was only slow); otherwise the first stays.
        """
        written: list[bool] = []
        now = int(self._clock())
        with self._engine.begin() as connection:
            # RETURNING, not rowcount, says whether it was new: the one both dialects agree on.
            insert_record = upsert_insert(self._engine, records).on_conflict_do_nothing(
                index_elements=["batch_id", "custom_id"]).returning(records.c.seq)
            counts: dict[tuple[str, str], int] = {}
            for row in new_records:
                result = connection.execute(insert_record.values(
                    batch_id=row.batch_id, custom_id=row.custom_id, error_code=row.error_code,
                    record=json.dumps(row.record, separators=(",", ":")), written_at=now))
                new = result.first() is not None
                written.append(new)
                if new:
                    column = "failed" if row.error_code else "completed"
                    counts[(row.batch_id, column)] = counts.get((row.batch_id, column), 0) + 1
            for (batch_id, column), amount in sorted(counts.items()):
                connection.execute(update(batches).where(batches.c.id == batch_id).values(
                    {column: batches.c[column] + amount}))
            if calls:
                self._write_calls(connection, calls)
        return written

    def _write_calls(self, connection: Any, calls: Sequence[LedgerRow]) -> None:
        insert = upsert_insert(self._engine, ledger)
        settled_wins = insert.on_conflict_do_update(
            index_elements=["batch_id", "custom_id", "attempt"],
            set_={name: insert.excluded[name] for name in (
                "model", "unsettled", "productive", "input_tokens", "cached_input_tokens",
                "output_tokens", "cost_usd", "list_cost_usd", "client_request_id", "row")},
            where=and_(ledger.c.unsettled, insert.excluded.unsettled.is_(False)))
        connection.execute(settled_wins, [
            {"batch_id": call.batch_id, "custom_id": call.custom_id, "attempt": call.attempt,
             "model": call.model, "unsettled": call.unsettled, "productive": call.productive,
             "input_tokens": call.input_tokens,
             "cached_input_tokens": call.cached_input_tokens,
             "output_tokens": call.output_tokens, "cost_usd": call.cost_usd,
             "list_cost_usd": call.list_cost_usd, "client_request_id": call.client_request_id,
             "row": json.dumps(call.row or {}, separators=(",", ":"))} for call in calls])

    def iter_records(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """The batch's records in completion order, a page at a time (keyset on seq)."""
        after = 0
        while True:
            with self._engine.connect() as connection:
                page = connection.execute(
                    select(records.c.seq, records.c.record)
                    .where(records.c.batch_id == batch_id, records.c.seq > after)
                    .order_by(records.c.seq).limit(RECORDS_PER_READ)).all()
            if not page:
                return
            yield from (json.loads(row.record) for row in page)
            after = page[-1].seq

    def ledger_rows(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """The batch's ledger rows (billed and unsettled), as stored."""
        with self._engine.connect() as connection:
            for row in connection.execute(select(ledger.c.row, ledger.c.unsettled,
                                                 ledger.c.productive)
                                          .where(ledger.c.batch_id == batch_id)):
                yield {**json.loads(row.row), "unsettled": bool(row.unsettled),
                       "productive": bool(row.productive)}

    def count_records(self, batch_id: str) -> int:
        """How many lines of the batch have their record."""
        with self._engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(records)
                                          .where(records.c.batch_id == batch_id)).scalar_one())
