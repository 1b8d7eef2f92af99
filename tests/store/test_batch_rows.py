"""The record store's batches and lines on SQLite and PostgreSQL: reading them, ending the
unfed in bulk, reopening for `corral retry`, deleting."""

from __future__ import annotations

import json

from sqlalchemy import Engine, select, update

from corral.store import (
    BatchRows,
    LineStore,
    RecordStore,
    ReopenedLine,
    StoredLine,
    bulk_record,
)
from corral.store.schema import batches, ledger, lines, records, retry_history
from tests.store.rows import (
    DAY_S,
    NOW_S,
    FakeClock,
    add_batch,
    batch,
    call,
    count_rows,
    failure,
    job_of,
    result,
    small_lines,
)

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
