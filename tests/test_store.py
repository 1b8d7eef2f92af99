"""The record store on real databases, SQLite and PostgreSQL, through one contract."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, Table, func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from corral.store import (
    BatchRows,
    LedgerRow,
    LineStore,
    RecordRow,
    RecordStore,
    ReopenedLine,
    StoredLine,
    bulk_record,
    store_engine,
    upgrade,
)
from corral.store.schema import batches, ledger, lines, records, retry_history

NOW_S = 1_700_000_000
DAY_S = 86_400


class FakeClock:
    """Seconds that move only when a test moves them."""

    def __init__(self, now_s: float = NOW_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def store(engine: Engine, clock: FakeClock) -> RecordStore:
    return RecordStore(engine, clock=clock)


@pytest.fixture()
def batch_rows(engine: Engine, clock: FakeClock) -> BatchRows:
    return BatchRows(engine, clock=clock)


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


# Reading batches.


def test_get_newest_and_open_ids_read_the_batch_rows(engine: Engine,
                                                     batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a"), "old", created_at=NOW_S - 10, options='{"m":1}')
    add_batch(engine, small_lines("a"), "new_b", created_at=NOW_S)
    add_batch(engine, small_lines("a"), "new_a", created_at=NOW_S, status="completed",
              ended_at=NOW_S)
    assert batch_rows.get("missing") is None
    row = batch(batch_rows, "old")
    assert (row["total"], row["completed"], row["failed"], row["end_status"], row["rebuilds"],
            row["options"], row["expires_at"]) == (1, 0, 0, "completed", 0, '{"m":1}',
                                                    NOW_S + DAY_S)
    assert [row["id"] for row in batch_rows.newest()] == ["new_b", "new_a", "old"]
    assert [row["id"] for row in batch_rows.newest(limit=2)] == ["new_b", "new_a"]
    assert sorted(batch_rows.open_ids()) == ["new_b", "old"]


def test_last_error_is_stored_as_json(engine: Engine, batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a"))
    batch_rows.set_last_error("batch_1", {"code": "invalid_api_key", "message": "refused"})
    assert json.loads(batch(batch_rows)["last_error"]) == {"code": "invalid_api_key",
                                                           "message": "refused"}


def test_rebuilt_counts_one_more_rebuild_each_time(engine: Engine,
                                                  batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a"))
    add_batch(engine, small_lines("a"), "batch_2")
    assert [batch_rows.rebuilt("batch_1") for _ in range(3)] == [1, 2, 3]
    assert batch(batch_rows, "batch_2")["rebuilds"] == 0


def test_ended_before_lists_batches_ended_before_a_time(engine: Engine,
                                                       batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a"), "early", status="completed", ended_at=NOW_S - 100)
    add_batch(engine, small_lines("a"), "late", status="completed", ended_at=NOW_S)
    add_batch(engine, small_lines("a"), "running")
    assert batch_rows.ended_before(NOW_S) == ["early"]
    assert sorted(batch_rows.ended_before(NOW_S + 1)) == ["early", "late"]


def test_lines_by_model_counts_lines_and_ended_lines(engine: Engine, store: RecordStore,
                                                    batch_rows: BatchRows) -> None:
    add_batch(engine, [("a", "big"), ("b", "small"), ("c", "big"), ("d", "small"),
                       ("e", "small")], total=6)
    add_batch(engine, [("a", "big")], "batch_2")
    store.write([result("a"), failure("d"), result("e"),
                 failure("refused", "invalid_request", line_no=6),
                 result("a", batch_id="batch_2")])
    assert sorted(batch_rows.lines_by_model("batch_1")) == [("big", 2, 1, 0),
                                                            ("small", 3, 1, 1)]
    assert list(batch_rows.lines_by_model("missing")) == []


# end_unfed: lines never sent, ended in one statement.


def test_end_unfed_ends_only_lines_past_each_models_cursor_without_a_record(
        engine: Engine, store: RecordStore, batch_rows: BatchRows) -> None:
    # big: lines 1, 3, 5, 7; small: 2, 4, 6, 8.
    add_batch(engine, [(f"q{i}", "big" if i % 2 else "small") for i in range(1, 9)])
    add_batch(engine, small_lines("q1", "q2"), "batch_2")
    store.write([result("q7"), result("q1")])  # q7 ran although past the cursor
    ended = batch_rows.end_unfed("batch_1", "batch_cancelled", {"big": 3, "small": 4})
    assert ended == 3
    with engine.connect() as connection:
        assert dict(connection.execute(
            select(records.c.custom_id, records.c.error_code)
            .where(records.c.batch_id == "batch_1")).all()) == {
            "q1": None, "q7": None, "q5": "batch_cancelled", "q6": "batch_cancelled",
            "q8": "batch_cancelled"}
    row = batch(batch_rows)
    assert (row["completed"], row["failed"], row["status"]) == (2, 3, "in_progress")
    assert count_rows(engine, records, "batch_2") == 0
    assert batch_rows.end_unfed("batch_1", "batch_cancelled", {"big": 3, "small": 4}) == 0


def test_end_unfed_ends_batch_lane_lines_before_the_cursor_too(
        engine: Engine, store: RecordStore, batch_rows: BatchRows) -> None:
    # A batch-lane line has no record until its provider batch is filed: cancelling the
    # batch must end it, wherever the live cursor stands.
    add_batch(engine, small_lines("q1", "q2", "q3"))
    with engine.begin() as connection:
        connection.execute(update(lines).where(lines.c.custom_id == "q1")
                           .values(lane="batch"))
    assert batch_rows.end_unfed("batch_1", "batch_cancelled", {"small": 3}) == 1
    with engine.connect() as connection:
        assert dict(connection.execute(
            select(records.c.custom_id, records.c.error_code)
            .where(records.c.batch_id == "batch_1")).all()) == {"q1": "batch_cancelled"}


def test_end_unfed_ends_unstarted_sent_lines_by_key_in_chunks(
        engine: Engine, store: RecordStore, batch_rows: BatchRows, monkeypatch) -> None:
    monkeypatch.setattr("corral.store.batch_rows.IDS_PER_QUERY", 2)
    add_batch(engine, small_lines(*(f"q{i}" for i in range(1, 9))))
    add_batch(engine, small_lines("q2", "q3"), "batch_2")
    store.write([result("q3")])  # started and ended meanwhile: keeps its record
    # All 8 were sent; q2..q5 never started (q3's record came first), "gone" is no line.
    ended = batch_rows.end_unfed("batch_1", "batch_cancelled", {"small": 8},
                                 ["q2", "q3", "q4", "q5", "gone"])
    assert ended == 3
    with engine.connect() as connection:
        assert dict(connection.execute(
            select(records.c.custom_id, records.c.line_no)
            .where(records.c.batch_id == "batch_1", records.c.error_code.is_not(None))).all()
        ) == {"q2": 2, "q4": 4, "q5": 5}
    assert count_rows(engine, records, "batch_2") == 0
    assert batch(batch_rows)["failed"] == 3


def test_end_unfed_ends_every_line_of_a_model_without_a_cursor(
        engine: Engine, batch_rows: BatchRows) -> None:
    add_batch(engine, [("a", "big"), ("b", "small"), ("c", "small")])
    assert batch_rows.end_unfed("batch_1", "batch_expired", {"big": 1}) == 2
    assert batch_rows.end_unfed("batch_1", "batch_expired", {}) == 1


def test_end_unfed_ends_the_batch_when_those_were_the_rest(
        engine: Engine, store: RecordStore, batch_rows: BatchRows, clock: FakeClock) -> None:
    add_batch(engine, small_lines("a", "b", "c"))
    store.write([result("a")])
    batch_rows.cancel("batch_1")
    clock.now_s = NOW_S + 30
    assert batch_rows.end_unfed("batch_1", "batch_cancelled", {"small": 1}) == 2
    row = batch(batch_rows)
    assert (row["status"], row["ended_at"], row["completed"], row["failed"]) == (
        "cancelled", NOW_S + 30, 1, 2)


def test_a_bulk_ended_line_reads_back_as_its_code_and_message(
        engine: Engine, store: RecordStore, batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a", "b", "c"))
    store.write([result("b")])
    batch_rows.end_unfed("batch_1", "batch_expired", {})
    read = list(store.iter_records("batch_1", input_order=True))
    assert read == [bulk_record("batch_1", "a", "batch_expired"), {"custom_id": "b", "n": 1},
                    bulk_record("batch_1", "c", "batch_expired")]
    assert read[0]["error"] == {
        "code": "batch_expired",
        "message": "the batch's completion window ended before this line ran"}
    assert read[0]["id"].startswith("batch_req_") and read[0]["id"] != read[2]["id"]
    assert list(store.iter_records("batch_1")) == [read[1], read[0], read[2]]
    assert bulk_record("batch_1", "a", "odd_code")["error"]["message"] == "odd_code"


# reopen: `corral retry`.


def test_reopen_moves_failed_records_to_history_and_reopens_the_batch(
        engine: Engine, store: RecordStore, batch_rows: BatchRows, clock: FakeClock) -> None:
    add_batch(engine, small_lines("ok", "tried", "never"), total=4)
    add_batch(engine, small_lines("tried"), "batch_2")
    store.write([result("ok"), failure("tried"),
                 failure("refused", "invalid_request", line_no=4)],
                [call("tried", 1), call("tried", 3, unsettled=True), call("tried", 2),
                 call("tried", 7, batch_id="batch_2")])
    batch_rows.end_unfed("batch_1", "batch_expired", {"small": 2})
    assert batch(batch_rows)["status"] == "completed"
    clock.now_s = NOW_S + 50
    reopened, not_stored = batch_rows.reopen("batch_1")
    assert sorted(reopened, key=lambda line: line.custom_id) == [
        ReopenedLine("never", "small", job_of("never"), 0),
        ReopenedLine("tried", "small", job_of("tried"), 3)]
    assert not_stored == 1
    row = batch(batch_rows)
    assert (row["status"], row["ended_at"], row["completed"], row["failed"]) == (
        "in_progress", None, 1, 1)
    assert sorted(batch_rows.open_ids()) == ["batch_1", "batch_2"]
    assert store.has_records("batch_1", ["ok", "tried", "never", "refused"]) == {"ok",
                                                                                 "refused"}
    with engine.connect() as connection:
        history = {row.custom_id: (row.record, row.replaced_at) for row in connection.execute(
            select(retry_history).where(retry_history.c.batch_id == "batch_1"))}
    assert set(history) == {"tried", "never"}
    assert json.loads(history["tried"][0]) == failure("tried").record
    assert history["tried"][1] == NOW_S + 50
    # The lines run again and the batch ends again.
    store.write([result("tried"), result("never")])
    assert (batch(batch_rows)["status"], batch(batch_rows)["completed"]) == ("completed", 3)


def test_reopen_takes_back_only_the_codes_asked_for(
        engine: Engine, store: RecordStore, batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a", "b", "c"))
    store.write([failure("a", "rate_limited"), failure("b", "invalid_request"), result("c")])
    assert batch(batch_rows)["status"] == "completed"
    reopened, not_stored = batch_rows.reopen("batch_1", {"rate_limited"})
    assert ([line.custom_id for line in reopened], not_stored) == (["a"], 0)
    assert (batch(batch_rows)["failed"], batch(batch_rows)["status"]) == (1, "in_progress")
    assert store.has_records("batch_1", ["a", "b", "c"]) == {"b", "c"}


def test_reopen_with_nothing_to_retry_leaves_the_batch_ended(
        engine: Engine, store: RecordStore, batch_rows: BatchRows) -> None:
    add_batch(engine, small_lines("a"), total=2)
    store.write([result("a"), failure("refused", "invalid_request", line_no=2)])
    assert batch_rows.reopen("batch_1") == ([], 1)
    row = batch(batch_rows)
    assert (row["status"], row["ended_at"], row["failed"]) == ("completed", NOW_S, 1)
    assert count_rows(engine, retry_history) == 0


# delete.


def test_delete_removes_the_batch_from_every_table_and_only_that_batch(
        engine: Engine, store: RecordStore, batch_rows: BatchRows) -> None:
    for batch_id in ("batch_1", "batch_2"):
        add_batch(engine, small_lines("a", "b"), batch_id)
        store.write([failure("a", batch_id=batch_id)], [call("a", 1, batch_id=batch_id)])
        batch_rows.reopen(batch_id)
        store.write([result("a", batch_id=batch_id)])
    tables = (batches, lines, records, ledger, retry_history)
    assert [count_rows(engine, table) for table in tables] == [1, 2, 1, 1, 1]
    assert batch_rows.delete("batch_1") is True
    assert [count_rows(engine, table) for table in tables] == [0, 0, 0, 0, 0]
    assert [count_rows(engine, table, "batch_2") for table in tables] == [1, 2, 1, 1, 1]
    assert batch_rows.get("batch_1") is None
    assert batch_rows.delete("batch_1") is False


# LineStore.


def test_unended_lines_skip_ended_ones_and_keep_to_model_cursor_and_limit(
        engine: Engine, store: RecordStore) -> None:
    add_batch(engine, [(f"q{i}", "big" if i % 3 == 0 else "small") for i in range(1, 11)])
    add_batch(engine, small_lines(*(f"q{i}" for i in range(1, 11))), "batch_2")
    store.write([result("q2"), failure("q5")])
    line_store = LineStore(engine)
    assert line_store.unended("batch_1", "small", 0, 100) == [
        StoredLine(line_no, f"q{line_no}", job_of(f"q{line_no}")) for line_no in (1, 4, 7, 8, 10)]
    assert [line.line_no for line in line_store.unended("batch_1", "small", 4, 2)] == [7, 8]
    assert [line.line_no for line in line_store.unended("batch_1", "big", 3, 100)] == [6, 9]
    assert line_store.unended("batch_1", "small", 10, 100) == []
    assert line_store.unended("batch_1", "other", 0, 100) == []


def test_jobs_returns_the_stored_jobs_of_stored_lines(engine: Engine) -> None:
    add_batch(engine, small_lines("a", "b", "c"))
    assert LineStore(engine).jobs("batch_1", ["a", "c", "refused"]) == {
        "a": job_of("a"), "c": job_of("c")}


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
