"""The accepted input lines in the store: what feeders send, a page at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Engine, exists, func, select, update

from corral.store.schema import batches, lines, records

IDS_PER_UPDATE = 500


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
        """Up to `limit` live-lane lines of `model` past input line `after`, in input order,
        that have no record (so a feed after Redis lost its part sends only what is left)."""
        with self._engine.connect() as connection:
            return [StoredLine(int(row.line_no), str(row.custom_id), str(row.job))
                    for row in connection.execute(
                        select(lines.c.line_no, lines.c.custom_id, lines.c.job)
                        .where(lines.c.batch_id == batch_id, lines.c.model == model,
                               lines.c.line_no > after, lines.c.lane == "live",
                               ~exists().where(records.c.batch_id == lines.c.batch_id,
                                               records.c.custom_id == lines.c.custom_id))
                        .order_by(lines.c.line_no).limit(limit))]

    def jobs(self, batch_id: str, custom_ids: Sequence[str],
             lane: str | None = None) -> dict[str, str]:
        """custom_id → stored job of these lines (those stored; on `lane` when given)."""
        found: dict[str, str] = {}
        with self._engine.connect() as connection:
            for start in range(0, len(custom_ids), IDS_PER_UPDATE):
                query = select(lines.c.custom_id, lines.c.job).where(
                    lines.c.batch_id == batch_id,
                    lines.c.custom_id.in_(custom_ids[start:start + IDS_PER_UPDATE]))
                if lane is not None:
                    query = query.where(lines.c.lane == lane)
                found.update((str(row.custom_id), str(row.job))
                             for row in connection.execute(query))
        return found

    def on_batch_lane(self, batch_id: str, model: str) -> list[StoredLine]:
        """The batch-lane lines of `model` that have no record, in input order."""
        with self._engine.connect() as connection:
            return [StoredLine(int(row.line_no), str(row.custom_id), str(row.job))
                    for row in connection.execute(
                        select(lines.c.line_no, lines.c.custom_id, lines.c.job)
                        .where(lines.c.batch_id == batch_id, lines.c.model == model,
                               lines.c.lane == "batch",
                               ~exists().where(records.c.batch_id == lines.c.batch_id,
                                               records.c.custom_id == lines.c.custom_id))
                        .order_by(lines.c.line_no))]

    def unended_live(self, batch_id: str, model: str) -> int:
        """How many live-lane lines of `model` in the batch have no record yet."""
        with self._engine.connect() as connection:
            return int(connection.execute(
                select(func.count()).select_from(lines).where(
                    lines.c.batch_id == batch_id, lines.c.model == model,
                    lines.c.lane == "live",
                    ~exists().where(records.c.batch_id == lines.c.batch_id,
                                    records.c.custom_id == lines.c.custom_id))).scalar_one())

    def batch_lane_models(self, batch_id: str) -> list[str]:
        """The models with lines on the batch lane."""
        with self._engine.connect() as connection:
            return sorted(str(model) for model in connection.execute(
                select(lines.c.model).where(lines.c.batch_id == batch_id,
                                            lines.c.lane == "batch").distinct()).scalars())

    def batches_on_batch_lane(self, model: str) -> list[str]:
        """The in-progress batches with lines of `model` on the batch lane and no record."""
        with self._engine.connect() as connection:
            return [str(batch_id) for batch_id in connection.execute(
                select(lines.c.batch_id).join(batches, batches.c.id == lines.c.batch_id)
                .where(lines.c.model == model, lines.c.lane == "batch",
                       batches.c.status == "in_progress",
                       ~exists().where(records.c.batch_id == lines.c.batch_id,
                                       records.c.custom_id == lines.c.custom_id))
                .distinct()).scalars()]

    def to_live_lane(self, batch_id: str, custom_ids: Sequence[str]) -> None:
        """Move these lines to the live lane (a hedge)."""
        with self._engine.begin() as connection:
            for start in range(0, len(custom_ids), IDS_PER_UPDATE):
                connection.execute(update(lines).where(
                    lines.c.batch_id == batch_id,
                    lines.c.custom_id.in_(custom_ids[start:start + IDS_PER_UPDATE]))
                    .values(lane="live"))
