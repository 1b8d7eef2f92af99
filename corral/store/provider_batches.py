"""The provider batches (OpenAI batches, Anthropic message batches) a batch's lines run in:
what the batch lane submitted, polls, hedges and collects, and how long providers take."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from corral.store.schema import provider_batches

TURNAROUND_SAMPLE = 20  # the provider's last finished batches its turnaround is judged by


class ProviderBatches:
    """Rows of the provider batches, one per provider batch id."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, provider_batch_id: str, batch_id: str, provider: str, model: str,
            status: str, custom_ids: Sequence[str], created_at: int, tokens: int = 0) -> None:
        """Record a provider batch just created (`tokens`: its lines' reserved tokens)."""
        with self._engine.begin() as connection:
            connection.execute(insert(provider_batches).values(
                id=provider_batch_id, batch_id=batch_id, provider=provider, model=model,
                status=status, total=len(custom_ids), done=0, tokens=tokens,
                custom_ids=json.dumps(list(custom_ids)), created_at=created_at,
                collected=False))

    def get(self, provider_batch_id: str) -> dict[str, Any] | None:
        """One provider batch's row (custom_ids decoded), or None."""
        with self._engine.connect() as connection:
            row = connection.execute(select(provider_batches).where(
                provider_batches.c.id == provider_batch_id)).mappings().first()
        return _decoded(row) if row is not None else None

    def of_batch(self, batch_id: str) -> list[dict[str, Any]]:
        """A batch's provider batches, oldest first (custom_ids decoded)."""
        return [_decoded(row) for row in self._of_batch(batch_id, list(provider_batches.c))]

    def summaries(self, batch_id: str) -> list[dict[str, Any]]:
        """A batch's provider batches, oldest first, without their custom_ids (a view's
        refresh reads these: a provider batch may hold 50,000 ids)."""
        columns = [column for column in provider_batches.c if column.name != "custom_ids"]
        return [dict(row) for row in self._of_batch(batch_id, columns)]

    def _of_batch(self, batch_id: str, columns: list[Any]) -> list[Any]:
        with self._engine.connect() as connection:
            return list(connection.execute(select(*columns).where(
                provider_batches.c.batch_id == batch_id)
                .order_by(provider_batches.c.created_at, provider_batches.c.id)).mappings())

    def update(self, provider_batch_id: str, **values: Any) -> None:
        """Set fields of a provider batch's row (status, done, ended_at, hedged_at,
        polled_at, collected)."""
        with self._engine.begin() as connection:
            connection.execute(update(provider_batches).where(
                provider_batches.c.id == provider_batch_id).values(**values))

    def open_tokens(self, provider: str, model: str) -> int:
        """The reserved tokens of a model's provider batches not yet collected, across
        batches: what counts against the provider's enqueued-token limit."""
        with self._engine.connect() as connection:
            return int(connection.execute(
                select(func.coalesce(func.sum(provider_batches.c.tokens), 0)).where(
                    provider_batches.c.provider == provider,
                    provider_batches.c.model == model,
                    provider_batches.c.collected.is_(False))).scalar_one())

    def stale(self, polled_before: int) -> list[str]:
        """Provider batches not yet collected whose last poll (or creation) is older than
        `polled_before`: their poll message may be lost."""
        last = func.coalesce(provider_batches.c.polled_at, provider_batches.c.created_at)
        with self._engine.connect() as connection:
            return [str(pid) for pid in connection.execute(
                select(provider_batches.c.id).where(
                    provider_batches.c.collected.is_(False), last < polled_before)).scalars()]

    def turnaround_s(self, provider: str) -> float | None:
        """The median time the provider's last batches that ran every line took (not
        hedged, cancelled or expired), or None before any has. Measured to their
        collection, so up to a poll interval long; hedged batches are left out, so a provider
        that is always late does not lengthen it (CORRAL_BATCH_TURNAROUND_S should then)."""
        with self._engine.connect() as connection:
            spans = connection.execute(
                select(provider_batches.c.ended_at - provider_batches.c.created_at)
                .where(provider_batches.c.provider == provider,
                       provider_batches.c.status.in_(("completed", "ended")),
                       provider_batches.c.done == provider_batches.c.total,
                       provider_batches.c.hedged_at.is_(None),
                       provider_batches.c.ended_at.is_not(None))
                .order_by(provider_batches.c.ended_at.desc())
                .limit(TURNAROUND_SAMPLE)).scalars().all()
        return float(statistics.median(spans)) if spans else None


def _decoded(row: Any) -> dict[str, Any]:
    result = dict(row)
    result["custom_ids"] = json.loads(result["custom_ids"])
    return result
