"""The record store's schema, its group-committed writes of records and ledger rows, and the
ledger's totals, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from corral.store import (
    BatchRows,
    LedgerRow,
    RecordStore,
    store_engine,
    upgrade,
)
from corral.store.schema import batches, ledger, lines, records
from tests.store.rows import (
    DAY_S,
    NOW_S,
    FakeClock,
    add_batch,
    batch,
    call,
    count_rows,
    failure,
    ledger_keys,
    result,
    small_lines,
)

# Schema and engine.


def test_upgrade_creates_every_table_and_is_idempotent(engine: Engine) -> None:
    upgrade(engine)  # a second worker starting later
    assert set(inspect(engine).get_table_names()) >= {
        "batches", "lines", "records", "ledger", "retry_history", "alembic_version"}


def test_the_migrations_build_exactly_the_schema_the_code_declares(engine: Engine) -> None:
    # A column or table added to corral/store/schema.py without its migration (or the
    # reverse) shows here, on SQLite and on PostgreSQL.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from corral.store.schema import metadata

    with engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection), metadata)
    assert drift == []


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    engine = store_engine(f"sqlite:///{tmp_path / 'new' / 'corral.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"


def test_a_repeated_line_fails_the_whole_insert(engine: Engine) -> None:
    add_batch(engine, small_lines(*(f"q{i}" for i in range(10))))
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(lines), [
            {"batch_id": "batch_1", "custom_id": "new", "line_no": 11, "model": "small",
             "job": "{}"},
            {"batch_id": "batch_1", "custom_id": "q0", "line_no": 12, "model": "small",
             "job": "{}"}])
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(lines).values(batch_id="batch_1", custom_id="other",
                                                line_no=1, model="small", job="{}"))
    assert count_rows(engine, lines) == 10


# RecordStore.write: records, counts, ledger rows, batch ends.


def test_a_record_is_written_once_and_counts_move_once(engine: Engine, store: RecordStore,
                                                       batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a", "b", "c", "d"))
    assert store.write([result("a"), result("b")]) == [True, True]
    assert store.write([result("a", n=2), failure("c"), failure("c")]) == [False, True, False]
    row = batch(batch_rows)
    assert (row["completed"], row["failed"], row["status"]) == (2, 1, "in_progress")
    assert [record["custom_id"] for record in store.iter_records("batch_1")] == ["a", "b", "c"]
    assert next(store.iter_records("batch_1"))["n"] == 1  # the first record stands
    assert store.count_records("batch_1") == 3
    assert store.has_records("batch_1", ["a", "c", "d", "elsewhere"]) == {"a", "c"}
    assert store.has_records("batch_1", []) == set()


def test_a_write_for_a_deleted_batch_writes_nothing_of_it(
        engine: Engine, store: RecordStore, batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a"))
    add_batch(engine, small_lines("a"), "gone")
    batch_rows.delete("gone")
    assert store.write([result("a", batch_id="gone", unsettled=[
                            call("a", 1, unsettled=True, batch_id="gone")]), result("a")],
                       [call("a", 2, batch_id="gone"), call("a", 2)]) == [None, True]
    assert [count_rows(engine, table, "gone") for table in (batches, records, ledger)] == [
        0, 0, 0]
    assert ledger_keys(engine) == {("a", 2): (False, 0)}


def test_one_write_moves_the_counts_of_each_of_its_batches(engine: Engine, store: RecordStore,
                                                           batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a", "b", "c"))
    add_batch(engine, small_lines("a", "b", "c"), "batch_2")
    store.write([result("a"), failure("a", batch_id="batch_2"), result("b", batch_id="batch_2"),
                 failure("b")])
    assert (batch(batch_rows)["completed"], batch(batch_rows)["failed"]) == (1, 1)
    assert (batch(batch_rows, "batch_2")["completed"],
            batch(batch_rows, "batch_2")["failed"]) == (1, 1)


def test_records_come_back_in_completion_order_across_pages(engine: Engine, store: RecordStore,
                                                             monkeypatch) -> None:
    monkeypatch.setattr("corral.store.records.RECORDS_PER_READ", 7)
    add_batch(engine, small_lines(*(f"q{i}" for i in range(30))))
    order = [f"q{(i * 7) % 30}" for i in range(30)]
    for custom_id in order:
        store.write([result(custom_id)])
    assert [record["custom_id"] for record in store.iter_records("batch_1")] == order
    assert store.count_records("batch_1") == 30


def test_records_come_back_in_input_order_across_pages(engine: Engine, store: RecordStore,
                                                       monkeypatch) -> None:
    monkeypatch.setattr("corral.store.records.RECORDS_PER_READ", 3)
    add_batch(engine, small_lines(*(f"q{i}" for i in range(1, 11))), total=11)
    add_batch(engine, small_lines("q1", "q2"), "batch_2")
    for line_no in (7, 2, 10, 1, 9, 4, 3, 8, 5, 6):
        store.write([result(f"q{line_no}")])
    # Line 11 was refused at submit: its record carries its line number, it has no stored line.
    store.write([failure("refused", "invalid_request", line_no=11),
                 result("q1", batch_id="batch_2")])
    assert [record["custom_id"] for record in store.iter_records("batch_1", input_order=True)] \
        == [f"q{i}" for i in range(1, 11)] + ["refused"]
    assert [record["custom_id"] for record in store.iter_records("batch_2", input_order=True)] \
        == ["q1"]


def test_a_record_without_line_no_gets_its_stored_lines_number(engine: Engine,
                                                        store: RecordStore) -> None:
    add_batch(engine, small_lines("a", "b", "c"))
    store.write([result("c"), result("a", line_no=1)])
    with engine.connect() as connection:
        assert dict(connection.execute(select(records.c.custom_id, records.c.line_no)).all()) \
            == {"a": 1, "c": 3}


def test_a_first_record_writes_its_unsettled_calls_and_a_duplicate_does_not(
        engine: Engine, store: RecordStore) -> None:
    add_batch(engine, small_lines("a", "b"))
    store.write([result("a", unsettled=[call("a", 1, unsettled=True, row={"bound": 7})])])
    store.write([result("a", unsettled=[call("a", 2, unsettled=True, row={"bound": 8})]),
                 failure("b", unsettled=[call("b", 3, unsettled=True, row={"bound": 9})])])
    assert ledger_keys(engine) == {("a", 1): (True, 0), ("b", 3): (True, 0)}
    assert sorted((row["bound"], row["unsettled"]) for row in store.unsettled_rows("batch_1")) \
        == [(7, True), (9, True)]


def test_a_billed_call_replaces_its_unsettled_row_and_nothing_else_does(
        engine: Engine, store: RecordStore) -> None:
    add_batch(engine, small_lines("a"))
    unsettled = LedgerRow("batch_1", "a", 1, "small", unsettled=True, productive=False,
                          row={"input_tokens_max": 100, "output_tokens_max": 50})
    billed = LedgerRow("batch_1", "a", 1, "small", unsettled=False, productive=False,
                       input_tokens=10, output_tokens=5, cost_usd=Decimal("0.000012345"),
                       row={"cost_usd": "0.000012345"})
    store.write([], [unsettled])
    assert [row["input_tokens_max"] for row in store.unsettled_rows("batch_1")] == [100]
    store.write([], [billed])
    store.write([], [unsettled])  # a late copy of the mark changes nothing
    store.write([], [LedgerRow("batch_1", "a", 2, "small", unsettled=False,
                               productive=True, cost_usd=Decimal("0.1"))])
    rows = sorted(store.ledger_rows("batch_1"), key=lambda row: row.get("cost_usd", ""))
    assert [(row["unsettled"], row.get("cost_usd")) for row in rows] == [
        (False, None), (False, "0.000012345")]
    assert store.unsettled_rows("batch_1") == []
    with engine.connect() as connection:
        exact = connection.execute(text("SELECT cost_usd FROM ledger WHERE attempt = 1"))
        assert Decimal(str(exact.scalar_one())) == Decimal("0.000012345")


def test_a_records_call_is_written_either_way_and_productive_only_for_a_first_result(
        engine: Engine, store: RecordStore) -> None:
    add_batch(engine, small_lines("a", "b"))
    store.write([result("a", call=call("a", 1, productive=False, input_tokens=1)),
                 failure("b", call=call("b", 1, input_tokens=2))])
    store.write([result("a", call=call("a", 2, input_tokens=3))])  # a duplicate's call
    assert ledger_keys(engine) == {("a", 1): (False, 1), ("b", 1): (False, 2),
                                   ("a", 2): (False, 3)}
    with engine.connect() as connection:
        productive = {(row.custom_id, row.attempt): bool(row.productive)
                      for row in connection.execute(select(ledger))}
    assert productive == {("a", 1): True, ("b", 1): False, ("a", 2): False}


def test_a_billed_call_in_the_same_write_replaces_the_records_unsettled_row(
        engine: Engine, store: RecordStore) -> None:
    add_batch(engine, small_lines("a"))
    store.write([result("a", unsettled=[call("a", 1, unsettled=True)])],
                [call("a", 1, input_tokens=10), call("a", 2, input_tokens=20)])
    assert ledger_keys(engine) == {("a", 1): (False, 10), ("a", 2): (False, 20)}


def test_a_second_billed_row_of_a_call_does_not_replace_the_first(
        engine: Engine, store: RecordStore) -> None:
    add_batch(engine, small_lines("a"))
    store.write([], [call("a", 1, input_tokens=10)])
    store.write([], [call("a", 1, input_tokens=99), call("a", 1, unsettled=True)])
    assert ledger_keys(engine) == {("a", 1): (False, 10)}


def test_a_batch_completes_in_the_write_of_its_last_line(
        engine: Engine, store: RecordStore, batch_rows: BatchRows, clock: FakeClock) -> None:
    add_batch(engine, small_lines("a", "b", "c"))
    store.write([result("a"), failure("b"), result("a")])
    assert (batch(batch_rows)["status"], batch(batch_rows)["ended_at"]) == ("in_progress", None)
    assert batch_rows.open_ids() == ["batch_1"]
    clock.now_s = NOW_S + 60
    store.write([result("c")])
    row = batch(batch_rows)
    assert (row["status"], row["ended_at"], row["completed"], row["failed"]) == (
        "completed", NOW_S + 60, 2, 1)
    assert batch_rows.open_ids() == []
    clock.now_s = NOW_S + 120
    store.write([result("c")])  # a duplicate of the last line ends nothing twice
    assert batch(batch_rows)["ended_at"] == NOW_S + 60


def test_a_batch_with_no_successful_line_ends_failed(
        engine: Engine, store: RecordStore, batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a", "b"), total=3)
    store.write([failure("a"), failure("refused", "invalid_request", line_no=3)])
    assert batch(batch_rows)["status"] == "in_progress"
    store.write([failure("b")])
    row = batch(batch_rows)
    assert (row["status"], row["ended_at"], row["failed"]) == ("failed", NOW_S, 3)


def test_a_cancelled_batch_ends_cancelled_when_its_last_line_lands(
        engine: Engine, store: RecordStore, batch_rows: BatchRows, clock: FakeClock) -> None:
    add_batch(engine, small_lines("a", "b"))
    store.write([result("a")])
    clock.now_s = NOW_S + 5
    assert batch_rows.cancel("batch_1") is True
    row = batch(batch_rows)
    assert (row["status"], row["cancelling_at"], row["ended_at"]) == ("cancelling", NOW_S + 5,
                                                                       None)
    assert batch_rows.open_ids() == ["batch_1"]  # its calls in flight still land
    clock.now_s = NOW_S + 9
    store.write([result("b")])
    row = batch(batch_rows)
    assert (row["status"], row["ended_at"], row["completed"]) == ("cancelled", NOW_S + 9, 2)
    assert batch_rows.cancel("batch_1") is False  # ended: nothing to cancel


def test_an_expired_batch_ends_expired_and_only_past_its_window(
        engine: Engine, store: RecordStore, batch_rows: BatchRows, clock: FakeClock) -> None:
    add_batch(engine, small_lines("a", "b"))
    assert batch_rows.expire("batch_1") is False  # its window is still open
    clock.now_s = NOW_S + DAY_S
    assert batch_rows.expire("batch_1") is True
    assert batch(batch_rows)["status"] == "in_progress"
    store.write([result("a"), failure("b", "batch_expired")])
    assert (batch(batch_rows)["status"], batch(batch_rows)["ended_at"]) == (
        "expired", NOW_S + DAY_S)
    assert batch_rows.expire("batch_1") is False  # no longer in progress


# Ledger totals.


def totals_by_key(store: RecordStore) -> dict[tuple[str, bool], dict[str, Any]]:
    return {(row["model"], row["productive"]): row for row in store.ledger_totals("batch_1")}


def test_ledger_totals_split_models_and_productive_calls_and_skip_unsettled(
        engine: Engine, store: RecordStore) -> None:
    add_batch(engine, small_lines("a", "b"))
    add_batch(engine, small_lines("a"), "batch_2")
    store.write([], [
        call("a", 1, productive=False, input_tokens=10, output_tokens=0),
        call("a", 2, input_tokens=100, cached_input_tokens=40, output_tokens=20),
        call("b", 1, input_tokens=5, output_tokens=3),
        call("b", 2, model="big", input_tokens=7, output_tokens=9),
        call("b", 3, unsettled=True, input_tokens=1000),
        call("a", 1, batch_id="batch_2", input_tokens=1000)])
    totals = totals_by_key(store)
    assert set(totals) == {("small", False), ("small", True), ("big", True)}
    summed = {key: (row["requests"], row["input_tokens"], row["cached_input_tokens"],
                    row["output_tokens"]) for key, row in totals.items()}
    assert summed == {("small", False): (1, 10, 0, 0), ("small", True): (2, 105, 40, 23),
                      ("big", True): (1, 7, 0, 9)}
    assert all(type(value) is int for row in summed.values() for value in row)
    assert store.ledger_totals("missing") == []


def test_ledger_totals_sum_money_exactly(engine: Engine, store: RecordStore) -> None:
    add_batch(engine, small_lines("a"))
    costs = [Decimal("0.000000123456789012"), Decimal("0.1"), Decimal("0.2"),
             Decimal("0.000000000000000001"), Decimal("12345.678901234567890123")]
    store.write([], [call("a", attempt, cost_usd=cost, list_cost_usd=cost * 2)
                     for attempt, cost in enumerate(costs, start=1)])
    (row,) = store.ledger_totals("batch_1")
    assert isinstance(row["cost_usd"], Decimal)
    assert row["cost_usd"] == sum(costs)
    assert row["list_cost_usd"] == sum(costs) * 2
