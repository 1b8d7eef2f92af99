"""Rows for the record store's tests: batches and their lines inserted as submit stores them,
records and ledger rows as workers write them, and a clock the tests move."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, Table, func, insert, select

from corral.store import BatchRows, LedgerRow, RecordRow
from corral.store.schema import batches, ledger, lines

NOW_S = 1_700_000_000
DAY_S = 86_400


class FakeClock:
    """Seconds that move only when a test moves them."""

    def __init__(self, now_s: float = NOW_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def add_batch(engine: Engine, accepted: Sequence[tuple[str, str]] = (),
              batch_id: str = "batch_1", *, total: int | None = None,
              **columns: Any) -> None:
    """Insert a batch row and its accepted lines, (custom_id, model) numbered from 1 in order.

    `total` defaults to the accepted lines (more: lines refused at submit); `columns` override
    the batch row's other columns.
    """
    row = {"id": batch_id, "status": "in_progress", "completion_window": "24h",
           "total": len(accepted) if total is None else total, "created_at": NOW_S,
           "expires_at": NOW_S + DAY_S, **columns}
    with engine.begin() as connection:
        connection.execute(insert(batches).values(row))
        if accepted:
            connection.execute(insert(lines), [
                {"batch_id": batch_id, "custom_id": custom_id, "line_no": line_no,
                 "model": model, "job": job_of(custom_id)}
                for line_no, (custom_id, model) in enumerate(accepted, start=1)])


def job_of(custom_id: str) -> str:
    return json.dumps({"custom_id": custom_id})


def small_lines(*custom_ids: str) -> list[tuple[str, str]]:
    return [(custom_id, "small") for custom_id in custom_ids]


def result(custom_id: str, batch_id: str = "batch_1", n: int = 1, **fields: Any) -> RecordRow:
    return RecordRow(batch_id, custom_id, {"custom_id": custom_id, "n": n}, **fields)


def failure(custom_id: str, code: str = "server_error_exhausted", batch_id: str = "batch_1",
            **fields: Any) -> RecordRow:
    return RecordRow(batch_id, custom_id,
                     {"custom_id": custom_id, "error": {"code": code}}, code, **fields)


def call(custom_id: str, attempt: int, *, unsettled: bool = False, productive: bool = True,
         batch_id: str = "batch_1", model: str = "small", **fields: Any) -> LedgerRow:
    return LedgerRow(batch_id, custom_id, attempt, model, unsettled=unsettled,
                     productive=productive, **fields)


def count_rows(engine: Engine, table: Table, batch_id: str = "batch_1") -> int:
    column = table.c.id if table is batches else table.c.batch_id
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)
                                      .where(column == batch_id)).scalar_one())


def ledger_keys(engine: Engine) -> dict[tuple[str, int], tuple[bool, int]]:
    """(custom_id, attempt) → (unsettled, input_tokens) of batch_1's ledger."""
    with engine.connect() as connection:
        return {(row.custom_id, row.attempt): (bool(row.unsettled), int(row.input_tokens))
                for row in connection.execute(
                    select(ledger.c.custom_id, ledger.c.attempt, ledger.c.unsettled,
                           ledger.c.input_tokens).where(ledger.c.batch_id == "batch_1"))}


def batch(batch_rows: BatchRows, batch_id: str = "batch_1") -> dict[str, Any]:
    row = batch_rows.get(batch_id)
    assert row is not None
    return row
