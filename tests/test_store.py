"""The record store on real databases, SQLite and PostgreSQL, through one contract."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from corral.store import LedgerRow, RecordRow, RecordStore, store_engine, upgrade
from corral.store.schema import metadata


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    """A migrated, empty store on each dialect."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'corral.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = store_engine(url)
    _drop_everything(engine)
    upgrade(engine)
    yield engine
    _drop_everything(engine)
    engine.dispose()


def _drop_everything(engine: Engine) -> None:
    metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


def result(custom_id: str, batch_id: str = "batch_1", n: int = 1) -> RecordRow:
    return RecordRow(batch_id, custom_id, {"custom_id": custom_id, "n": n})


def test_upgrade_creates_every_table_and_is_idempotent(engine: Engine) -> None:
    upgrade(engine)  # a second worker starting later
    assert set(inspect(engine).get_table_names()) >= {
        "batches", "lines", "records", "ledger", "retry_history", "alembic_version"}


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    engine = store_engine(f"sqlite:///{tmp_path / 'new' / 'corral.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"


def test_a_record_is_written_once_and_counts_move_once(engine: Engine) -> None:
    store = RecordStore(engine, clock=lambda: 1_700_000_000)
    store.create_batch("batch_1", total=3, completion_window="24h", input_file="in.jsonl")
    assert store.write([result("a"), result("b")]) == [True, True]
    assert store.write([result("a", n=2), RecordRow("batch_1", "c", {"custom_id": "c"},
                                                    "server_error_exhausted")]) == [False, True]
    batch = store.batch("batch_1")
    assert batch is not None
    assert (batch["completed"], batch["failed"], batch["created_at"]) == (2, 1, 1_700_000_000)
    assert [record["custom_id"] for record in store.iter_records("batch_1")] == ["a", "b", "c"]
    assert next(store.iter_records("batch_1"))["n"] == 1  # the first record stands


def test_records_come_back_in_completion_order_across_pages(engine: Engine,
                                                             monkeypatch) -> None:
    monkeypatch.setattr("corral.store.records.RECORDS_PER_READ", 7)
    store = RecordStore(engine)
    store.create_batch("batch_1", total=30, completion_window="24h")
    order = [f"q{(i * 7) % 30}" for i in range(30)]
    for custom_id in order:
        store.write([result(custom_id)])
    assert [record["custom_id"] for record in store.iter_records("batch_1")] == order
    assert store.count_records("batch_1") == 30


def test_a_billed_call_replaces_its_unsettled_row_and_nothing_else_does(
        engine: Engine) -> None:
    store = RecordStore(engine)
    store.create_batch("batch_1", total=1, completion_window="24h")
    unsettled = LedgerRow("batch_1", "a", 1, "small", unsettled=True, productive=False,
                          row={"input_tokens_max": 100, "output_tokens_max": 50})
    billed = LedgerRow("batch_1", "a", 1, "small", unsettled=False, productive=False,
                       input_tokens=10, output_tokens=5, cost_usd=Decimal("0.000012345"),
                       row={"cost_usd": "0.000012345"})
    store.write([], [unsettled])
    store.write([], [billed])
    store.write([], [unsettled])  # a late copy of the mark changes nothing
    store.write([], [LedgerRow("batch_1", "a", 2, "small", unsettled=False,
                               productive=True, cost_usd=Decimal("0.1"))])
    rows = sorted(store.ledger_rows("batch_1"), key=lambda row: row.get("cost_usd", ""))
    assert [(row["unsettled"], row.get("cost_usd")) for row in rows] == [
        (False, None), (False, "0.000012345")]
    with engine.connect() as connection:
        exact = connection.execute(text("SELECT cost_usd FROM ledger WHERE attempt = 1"))
        assert Decimal(str(exact.scalar_one())) == Decimal("0.000012345")


def test_lines_are_stored_in_chunks_and_a_repeat_fails_the_whole_chunk(engine: Engine,
                                                                       monkeypatch) -> None:
    monkeypatch.setattr("corral.store.records.LINES_PER_INSERT", 4)
    store = RecordStore(engine)
    store.create_batch("batch_1", total=10, completion_window="24h")
    accepted = [(f"q{i}", i + 1, "small", '{"tokens":1}') for i in range(10)]
    assert store.add_lines("batch_1", accepted) == 10
    with pytest.raises(IntegrityError):
        store.add_lines("batch_1", [("new", 11, "small", "{}"), accepted[0]])
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM lines")).scalar_one() == 10
