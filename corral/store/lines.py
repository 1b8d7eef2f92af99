"""The accepted input lines in the store: what feeders send, a page at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Engine, exists, select

from corral.store.schema import lines, records


class StoredLine(NamedTuple):
    """One accepted line: its input line number, custom_id and stored job (JSON)."""

    line_no: int
    custom_id: str
    job: str


class LineStore:
    """Reads accepted lines for feeding and re-running."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def unended(self, batch_id: str, model: str, after: int, limit: int) -> list[StoredLine]:
        """Up to `limit` lines of `model` past input line `after`, in input order, that have
        no record (so a feed after Redis lost its part sends only what is left)."""
        with self._engine.connect() as connection:
            return [StoredLine(int(row.line_no), str(row.custom_id), str(row.job))
                    for row in connection.execute(
                        select(lines.c.line_no, lines.c.custom_id, lines.c.job)
                        .where(lines.c.batch_id == batch_id, lines.c.model == model,
                               lines.c.line_no > after,
                               ~exists().where(records.c.batch_id == lines.c.batch_id,
                                               records.c.custom_id == lines.c.custom_id))
                        .order_by(lines.c.line_no).limit(limit))]

    def jobs(self, batch_id: str, custom_ids: Sequence[str]) -> dict[str, str]:
        """custom_id → stored job of these lines (those stored)."""
        with self._engine.connect() as connection:
            return {str(row.custom_id): str(row.job) for row in connection.execute(
                select(lines.c.custom_id, lines.c.job).where(
                    lines.c.batch_id == batch_id, lines.c.custom_id.in_(custom_ids)))}
