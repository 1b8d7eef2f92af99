"""Batch rows: read, list, and every change of a batch's state done in one SQL statement or
transaction (cancel, expiry, retry, delete, retention), however many lines it has."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    column,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
    values,
)

from corral.store.engine import upsert_insert
from corral.store.records import OPEN_STATUSES, finish_batches
from corral.store.schema import batches, ledger, lines, records, retry_history

ALL_TABLES = (records, ledger, lines, retry_history)
IDS_PER_QUERY = 500  # custom_ids per IN list: well inside both databases' parameter limits


@dataclass(frozen=True)
class ReopenedLine:
    """A failed line taken back for `corral retry`: its stored job, and its last call number
    (so its next calls are numbered past it)."""

    custom_id: str
    model: str
    job: str
    last_call: int


class BatchRows:
    """The batches table and the batch-wide statements on the others."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def get(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's row, or None."""
        with self._engine.connect() as connection:
            row = connection.execute(select(batches).where(batches.c.id == batch_id)).first()
        return None if row is None else dict(row._mapping)

    def newest(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest batches first."""
        with self._engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(
                select(batches).order_by(batches.c.created_at.desc(), batches.c.id.desc())
                .limit(limit))]

    def open_ids(self) -> list[str]:
        """Batches whose lines still run (in progress or cancelling)."""
        return list(self.open_deadlines())

    def open_deadlines(self) -> dict[str, int]:
        """Batch id → when its window ends (s), of batches whose lines still run."""
        with self._engine.connect() as connection:
            return {str(row.id): int(row.expires_at) for row in connection.execute(
                select(batches.c.id, batches.c.expires_at).where(
                    batches.c.status.in_(OPEN_STATUSES)))}

    def cancel(self, batch_id: str) -> bool:
        """Mark an in-progress batch cancelling (it ends as cancelled); False when it was not
        in progress (already cancelling, or ended)."""
        now = int(self._clock())
        with self._engine.begin() as connection:
            changed = connection.execute(
                update(batches).where(batches.c.id == batch_id,
                                      batches.c.status == "in_progress")
                .values(status="cancelling", end_status="cancelled", cancelling_at=now)).rowcount
        return bool(changed)

    def expire(self, batch_id: str) -> bool:
        """Mark an in-progress batch past its window to end as expired; False otherwise
        (not due, not in progress, or already marked)."""
        with self._engine.begin() as connection:
            changed = connection.execute(
                update(batches).where(batches.c.id == batch_id,
                                      batches.c.status == "in_progress",
                                      batches.c.end_status != "expired",
                                      batches.c.expires_at <= int(self._clock()))
                .values(end_status="expired")).rowcount
        return bool(changed)

    def set_last_error(self, batch_id: str, error: dict[str, str]) -> None:
        """Why the batch fails fast (a refused key, no quota): shown by `status`."""
        with self._engine.begin() as connection:
            connection.execute(update(batches).where(batches.c.id == batch_id)
                               .values(last_error=json.dumps(error)))

    def end_unfed(self, batch_id: str, code: str, fed_through: dict[str, int],
                  unstarted: Sequence[str] = ()) -> int:
        """Give a `code` record, in one transaction, to every line that has none and either
        lies past its model's feed cursor (line numbers up to `fed_through` were sent), is on
        the batch lane, or is one of `unstarted` (sent, but never started); returns how many.

        The records are stored without text (see `corral.store.records.bulk_record`). A line
        whose record a worker writes meanwhile keeps that one: write-once, not a failure.
        """
        now = int(self._clock())
        chosen = [lines.c.line_no, literal(code).label("error_code"),
                  literal(now).label("written_at")]
        # Past the cursors: every line of the batch but those sent (the records' key turns
        # away the lines that already have one: write-once, no anti-join needed).
        # (A batch-lane line is never "sent" here: it has no record until its provider
        # batch is filed, so it ends now too; a late answer is a duplicate.)
        sent = [and_(lines.c.model == model, lines.c.line_no <= line_no,
                     lines.c.lane == "live")
                for model, line_no in fed_through.items()]
        queries = [select(lines.c.batch_id, lines.c.custom_id, *chosen).where(
            lines.c.batch_id == batch_id, *([~or_(*sent)] if sent else []))]
        # Sent but never started: their lines found by key from a list of ids (an IN list
        # made PostgreSQL scan the whole batch for each 500 of them).
        for start in range(0, len(unstarted), IDS_PER_QUERY):
            # The list is a VALUES in a CTE inside a subquery: SQLite takes no column names
            # on a VALUES in FROM, and counts no rows changed by a statement that starts
            # with WITH; a WHERE, not a JOIN's ON, so SQLite does not take the upsert's ON
            # CONFLICT for a join's.
            ids = select(values(column("custom_id", lines.c.custom_id.type), name="ids").data(
                [(custom_id,) for custom_id in unstarted[start:start + IDS_PER_QUERY]]
            ).cte(nesting=True)).subquery("unstarted")
            queries.append(select(lines.c.batch_id, lines.c.custom_id, *chosen).where(
                lines.c.batch_id == batch_id, lines.c.custom_id == ids.c.custom_id))
        ended = 0
        with self._engine.begin() as connection:
            for query in queries:
                # SQLAlchemy keeps an INSERT's rowcount only when asked (psycopg gave -1).
                ended += connection.execute(
                    upsert_insert(self._engine, records).from_select(
                        ["batch_id", "custom_id", "line_no", "error_code", "written_at"],
                        query).on_conflict_do_nothing(index_elements=["batch_id", "custom_id"]),
                    execution_options={"preserve_rowcount": True}).rowcount or 0
            if ended:
                connection.execute(update(batches).where(batches.c.id == batch_id)
                                   .values(failed=batches.c.failed + ended))
                finish_batches(connection, [batch_id], now)
        return ended

    def reopen(self, batch_id: str, codes: set[str] | None = None) -> tuple[
            list[ReopenedLine], int]:
        """Take back the failed records (with these codes, default all) of lines that can run
        again, into the retry history, and reopen the batch; returns those lines and how many
        failed lines have no stored request (refused at submit) and keep their record."""
        now = int(self._clock())
        with self._engine.begin() as connection:
            found = self._failed_lines(connection, batch_id, codes)
            reopened = [line for line in found if line is not None]
            not_stored = sum(1 for line in found if line is None)
            if reopened:
                ids = [line.custom_id for line in reopened]
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    connection.execute(insert(retry_history).from_select(
                        ["batch_id", "custom_id", "record", "replaced_at"],
                        select(records.c.batch_id, records.c.custom_id,
                               func.coalesce(records.c.record, literal('{"error":{"code":"')
                                             + records.c.error_code + literal('"}}')),
                               literal(now))
                        .where(records.c.batch_id == batch_id,
                               records.c.custom_id.in_(chunk))))
                    connection.execute(delete(records).where(records.c.batch_id == batch_id,
                                                             records.c.custom_id.in_(chunk)))
                connection.execute(
                    update(batches).where(batches.c.id == batch_id)
                    .values(failed=batches.c.failed - len(reopened), status="in_progress",
                            end_status="completed", ended_at=None, cancelling_at=None))
        return reopened, not_stored

    def _failed_lines(self, connection: Any, batch_id: str,
                      codes: set[str] | None) -> list[ReopenedLine | None]:
        """Failed lines with these codes: each stored line, or None for one refused at
        submit (no stored request)."""
        last_call = select(func.coalesce(func.max(ledger.c.attempt), 0)).where(
            ledger.c.batch_id == batch_id, ledger.c.custom_id == records.c.custom_id
        ).scalar_subquery()
        query = (select(records.c.custom_id, lines.c.model, lines.c.job,
                        last_call.label("last_call"))
                 .select_from(records.outerjoin(lines, and_(
                     lines.c.batch_id == records.c.batch_id,
                     lines.c.custom_id == records.c.custom_id)))
                 .where(records.c.batch_id == batch_id, records.c.error_code.is_not(None)))
        if codes is not None:
            query = query.where(records.c.error_code.in_(codes))
        return [None if row.job is None else ReopenedLine(row.custom_id, row.model, row.job,
                                                          int(row.last_call))
                for row in connection.execute(query)]

    def delete(self, batch_id: str) -> bool:
        """Remove the batch and everything of it; False when there was no such batch.

        The batch row goes first: a writer that moves its counts after that finds it gone and
        takes its own rows out, and one that moved them before has committed when this
        transaction (waiting on the row's lock) deletes the rest.
        """
        with self._engine.begin() as connection:
            found = bool(connection.execute(delete(batches).where(
                batches.c.id == batch_id)).rowcount)
            for table in ALL_TABLES:
                connection.execute(delete(table).where(table.c.batch_id == batch_id))
            return found

    def ended_before(self, when: int) -> list[str]:
        """Batches that ended before `when` (seconds): what retention removes."""
        with self._engine.connect() as connection:
            return [str(batch_id) for batch_id in connection.execute(
                select(batches.c.id).where(batches.c.ended_at < when)).scalars()]

    def rebuilt(self, batch_id: str) -> int:
        """Count one more rebuild of the batch's Redis state; returns the new count."""
        with self._engine.begin() as connection:
            connection.execute(update(batches).where(batches.c.id == batch_id)
                               .values(rebuilds=batches.c.rebuilds + 1))
            return int(connection.execute(select(batches.c.rebuilds).where(
                batches.c.id == batch_id)).scalar_one())

    def lines_by_model(self, batch_id: str) -> Iterator[tuple[str, int, int, int]]:
        """(model, lines, lines with a result, lines with an error record) per model."""
        results = func.count(records.c.seq) - func.count(records.c.error_code)
        with self._engine.connect() as connection:
            for row in connection.execute(
                    select(lines.c.model, func.count().label("lines"),
                           results.label("completed"),
                           func.count(records.c.error_code).label("failed"))
                    .select_from(lines.outerjoin(records, and_(
                        records.c.batch_id == lines.c.batch_id,
                        records.c.custom_id == lines.c.custom_id)))
                    .where(lines.c.batch_id == batch_id).group_by(lines.c.model)):
                yield str(row.model), int(row.lines), int(row.completed), int(row.failed)
