"""Line ends (corral.records.LineEnds) on a real Redis and the test's record store: the first
record is kept, counters move once, every call is costed, and Redis lets go of the line."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis
from rich.console import Console
from rich.table import Table

from corral import lua_scripts
from corral.config import load_config
from corral.records import LineEnd, LineEnds, Written, end_line_call, error_record, result_record
from corral.redis_keys import FLEET_STATS, BatchKeys
from corral.stats import stat_field
from corral.store import LedgerRow, RecordRow, Store
from corral.store.writer import StoreWriter
from corral.tokens import prompt_tokens_bound, requested_output_tokens
from producer.costs import batch_cost
from producer.views import cost_table
from tests.store_batches import BODY, DEFAULT_MAX_TOKENS, feed, open_test_batch

RETENTION_S = 3600
LEASE_MS = 60_000


@pytest.fixture()
def ends(redis_client: redis.Redis, store: Store) -> LineEnds:
    return LineEnds(redis_client, StoreWriter(store.records, deadline_s=5),
                    retention_s=RETENTION_S)


def fed_batch(client: redis.Redis, store: Store, *custom_ids: str) -> tuple[str, BatchKeys]:
    """A batch of these lines of "small", every one fed (its request in Redis)."""
    batch_id = open_test_batch(client, store, dict.fromkeys(custom_ids, "small"))
    feed(client, store, batch_id)
    return batch_id, BatchKeys(batch_id)


def start(client: redis.Redis, keys: BatchKeys, custom_id: str) -> int:
    """A worker starts a call of the line (start_job.lua: lease, attempt, call mark); returns
    its call number. Its X-Client-Request-Id is `req-<custom_id>-<call>`."""
    script = lua_scripts.register(client, "start_job", package="workers")
    call = int(client.hget(keys.attempts, custom_id) or 0) + 1
    result = script(keys=[keys.meta, keys.bodies, keys.attempts, keys.lease(custom_id),
                          keys.inflight, keys.reruns],
                    args=[custom_id, LEASE_MS, "test", f"req-{custom_id}-{call}", "v1"])
    assert result[0] == "run" and int(result[4]) == call
    return call


def lose_worker(client: redis.Redis, keys: BatchKeys, custom_id: str) -> None:
    """The worker running the line died: its lease runs out, its call mark stays."""
    client.delete(keys.lease(custom_id))


def billed(batch_id: str, custom_id: str, call: int, cost: str) -> LedgerRow:
    """The ledger row of a call that answered."""
    return LedgerRow(batch_id, custom_id, call, "small", unsettled=False, productive=True,
                     input_tokens=10, output_tokens=5, cost_usd=Decimal(cost),
                     list_cost_usd=Decimal(cost), client_request_id=f"req-{custom_id}-{call}",
                     row={"custom_id": custom_id, "attempt": call, "model": "small",
                          "cost_usd": cost})


def answer(ends: LineEnds, batch_id: str, custom_id: str, call: int, cost: str, *,
           others: bool = True) -> Written:
    """A worker files the result of call `call` of the line (`others`: its start found
    another call of the line marked in flight)."""
    return ends.end(batch_id, result_record(custom_id, request_id=f"r{call}", body={}),
                    call=billed(batch_id, custom_id, call, cost),
                    settled_call=BatchKeys.call_id(custom_id, call), others=others,
                    model="small", call_counts={"calls": 1})


def ledger(store: Store, batch_id: str) -> list[tuple[int, bool, bool, str]]:
    """(call, unsettled, productive, cost) of each of the batch's ledger rows."""
    return sorted((int(row["attempt"]), row["unsettled"], row["productive"],
                   str(row.get("cost_usd", "-"))) for row in store.records.ledger_rows(batch_id))


def test_the_first_record_wins_and_counters_move_once(redis_client: redis.Redis, store: Store,
                                                      ends: LineEnds) -> None:
    batch_id, keys = fed_batch(redis_client, store, "a", "b")
    start(redis_client, keys, "a")
    lose_worker(redis_client, keys, "a")  # only slow, in fact: call 1 answers later
    start(redis_client, keys, "a")
    assert answer(ends, batch_id, "a", 2, "0.2") is Written.NEW
    assert answer(ends, batch_id, "a", 1, "0.1") is Written.DUPLICATE

    (record,) = store.records.iter_records(batch_id)
    assert record["custom_id"] == "a" and record["response"]["request_id"] == "r2"
    row = store.batches.get(batch_id)
    assert row is not None
    assert (row["status"], row["completed"], row["failed"]) == ("in_progress", 1, 0)
    assert redis_client.hmget(keys.meta, "status", "completed") == ["in_progress", "1"]
    for stats in (keys.stats, FLEET_STATS):
        assert redis_client.hget(stats, stat_field("small", "completed")) == "1"
        assert redis_client.hget(stats, stat_field("small", "calls")) == "2"  # both billed
    # The late answer's cost is kept, as unproductive; it replaced call 1's unsettled row.
    assert ledger(store, batch_id) == [(1, False, False, "0.1"), (2, False, True, "0.2")]
    report = batch_cost(store, batch_id, client=redis_client).as_json()["total"]
    assert (report["requests"], report["unsettled_calls"]) == (2, 0)
    assert report["cost_usd"] == "0.3"  # exact: 0.1 + 0.2 in Decimal
    assert report["unproductive_cost_usd"] == "0.1"


def test_a_lines_leftover_marks_become_unsettled_rows_in_the_store_and_leave_redis(
        redis_client: redis.Redis, store: Store, ends: LineEnds, write_config) -> None:
    batch_id, keys = fed_batch(redis_client, store, "a", "b")
    start(redis_client, keys, "a")
    lose_worker(redis_client, keys, "a")  # call 1 of "a" was lost with its worker
    start(redis_client, keys, "a")  # call 2 is the one that answers
    redis_client.hset(keys.reruns, "a", 1)
    start(redis_client, keys, "b")  # still running
    assert answer(ends, batch_id, "a", 2, "0.001") is Written.NEW

    # Redis keeps nothing of "a": no request, attempt count, rerun count, lease or mark.
    assert redis_client.hkeys(keys.inflight) == ["b#1"]
    assert redis_client.hkeys(keys.bodies) == ["b"]
    assert redis_client.hkeys(keys.attempts) == ["b"]
    assert redis_client.hkeys(keys.reruns) == []
    assert redis_client.exists(keys.lease("a")) == 0
    assert redis_client.exists(keys.lease("b")) == 1
    assert ledger(store, batch_id) == [(1, True, False, "-"), (2, False, True, "0.001")]
    lost = next(row for row in store.records.ledger_rows(batch_id) if row["unsettled"])
    assert (lost["custom_id"], lost["client_request_id"]) == ("a", "req-a-1")

    config = load_config(write_config())
    price = config.models["small"].price
    worst = (prompt_tokens_bound(BODY) * price.input
             + requested_output_tokens(BODY, DEFAULT_MAX_TOKENS) * price.output) / 1_000_000
    report = batch_cost(store, batch_id, config, client=redis_client)
    # a#1 is in the store as unsettled, b#1 still marked in Redis: both at their worst case.
    assert (report.total.requests, report.total.unsettled_calls) == (1, 2)
    assert report.total.unsettled_max_cost_usd == 2 * worst > 0
    assert "unsettled calls" in _render(cost_table(report))


def test_a_mark_made_after_a_lone_calls_start_still_becomes_an_unsettled_row(
        redis_client: redis.Redis, store: Store, ends: LineEnds) -> None:
    batch_id, keys = fed_batch(redis_client, store, "a")
    start(redis_client, keys, "a")  # found no other call: its end skips the marks read
    lose_worker(redis_client, keys, "a")  # only slow: its lease ran out ...
    start(redis_client, keys, "a")  # ... and another worker started call 2
    assert answer(ends, batch_id, "a", 1, "0.001", others=False) is Written.NEW
    assert ledger(store, batch_id) == [(1, False, True, "0.001"), (2, True, False, "-")]
    assert redis_client.hgetall(keys.inflight) == {}
    assert redis_client.exists(keys.bodies, keys.attempts, keys.lease("a")) == 0
    # Call 2 answers after all: its billed row replaces its unsettled one.
    assert answer(ends, batch_id, "a", 2, "0.002") is Written.DUPLICATE
    assert ledger(store, batch_id) == [(1, False, True, "0.001"), (2, False, False, "0.002")]


@pytest.mark.parametrize("b_fails", [False, True])
def test_the_last_record_ends_the_batch_in_redis_and_in_the_store(
        redis_client: redis.Redis, store: Store, ends: LineEnds, b_fails: bool) -> None:
    ending = "completed"  # a line succeeded: an error record does not fail the batch
    batch_id, keys = fed_batch(redis_client, store, "a", "b")
    assert answer(ends, batch_id, "a", 1, "0.001") is Written.NEW
    assert redis_client.hget(keys.meta, "status") == "in_progress"
    assert redis_client.ttl(keys.meta) == -1  # no TTL while it runs
    record = error_record("b", code="invalid_request", message="bad") if b_fails \
        else result_record("b", request_id="r", body={})
    assert ends.end(batch_id, record, model="small") is Written.NEW

    meta = redis_client.hgetall(keys.meta)
    assert meta["status"] == ending and int(meta[f"{ending}_at"]) > 0
    assert meta["finalizing_at"] == meta[f"{ending}_at"]
    assert 0 < redis_client.ttl(keys.meta) <= RETENTION_S
    row = store.batches.get(batch_id)
    assert row is not None
    assert (row["status"], row["completed"], row["failed"]) == (
        ending, 1 if b_fails else 2, 1 if b_fails else 0)
    assert row["ended_at"] is not None


def test_many_ends_filed_at_once_keep_first_records_and_end_the_batch(
        redis_client: redis.Redis, store: Store, ends: LineEnds) -> None:
    batch_id, keys = fed_batch(redis_client, store, "a", "b", "c")
    assert answer(ends, batch_id, "a", 1, "0.1") is Written.NEW  # "a" ended live first
    written = ends.end_all(batch_id, [
        LineEnd(result_record(custom_id, request_id=f"rb-{custom_id}", body={}),
                call=billed(batch_id, custom_id, 0, "0.05"), model="small@batch",
                call_counts={"calls": 1})
        for custom_id in ("a", "b")] + [
        LineEnd(error_record("c", code="invalid_request", message="bad"),
                model="small@batch")])

    assert written == [Written.DUPLICATE, Written.NEW, Written.NEW]
    records = {record["custom_id"]: record for record in store.records.iter_records(batch_id)}
    assert records["a"]["response"]["request_id"] == "r1"  # the first record stands
    assert records["b"]["response"]["request_id"] == "rb-b"
    assert records["c"]["error"]["code"] == "invalid_request"
    row = store.batches.get(batch_id)
    assert row is not None
    assert (row["status"], row["completed"], row["failed"]) == ("completed", 2, 1)
    assert redis_client.hget(keys.meta, "status") == "completed"
    assert redis_client.hget(keys.stats, stat_field("small@batch", "calls")) == "2"
    assert redis_client.hlen(keys.bodies) == 0
    # Both of "a"'s calls are costed; the batch lane's, second, is unproductive.
    assert ledger(store, batch_id) == [(0, False, False, "0.05"), (0, False, True, "0.05"),
                                       (1, False, True, "0.1")]


def replay_end(client: redis.Redis, batch_id: str, custom_id: str, *, first: bool,
               fed: bool = True) -> list[int]:
    """Redis's part of a line's end (end_line.lua) sent on its own, as redis-py sends a
    call again when a Redis restart lost its reply."""
    script, keys, args = end_line_call(lua_scripts.register(client, "end_line"), batch_id,
                                       custom_id, first=first, error_code=None,
                                       retention_s=RETENTION_S, model="small", fed=fed)
    return script(keys=keys, args=args)


def test_an_end_sent_again_after_a_lost_reply_counts_its_line_once(
        redis_client: redis.Redis, store: Store, ends: LineEnds) -> None:
    batch_id, keys = fed_batch(redis_client, store, "a", "b")
    assert answer(ends, batch_id, "a", 1, "0.1") is Written.NEW
    assert replay_end(redis_client, batch_id, "a", first=True) == [1]
    # Counted once: the batch still waits for "b" in Redis as in the store.
    assert redis_client.hmget(keys.meta, "status", "completed") == ["in_progress", "1"]
    assert redis_client.hget(keys.stats, stat_field("small", "completed")) == "1"


def test_a_provider_batchs_duplicate_leaves_the_live_copys_end_to_count_it(
        redis_client: redis.Redis, store: Store, ends: LineEnds) -> None:
    batch_id, keys = fed_batch(redis_client, store, "a")
    # The live copy's record is in the store; its Redis part has not run yet.
    store.records.write([RecordRow(batch_id, "a", result_record("a", request_id="r",
                                                                body={}))])
    written = ends.end_all(batch_id, [LineEnd(result_record("a", request_id="rb", body={}),
                                              model="small@batch")])
    assert written == [Written.DUPLICATE]
    assert redis_client.hexists(keys.bodies, "a")  # still the live copy's to drop
    assert replay_end(redis_client, batch_id, "a", first=True)[0] == 1
    assert redis_client.hmget(keys.meta, "status", "completed") == ["completed", "1"]


def test_a_batch_where_no_line_succeeded_ends_failed(redis_client: redis.Redis,
                                                     store: Store, ends: LineEnds) -> None:
    batch_id, keys = fed_batch(redis_client, store, "a")
    record = error_record("a", code="invalid_request", message="bad")
    assert ends.end(batch_id, record, model="small") is Written.NEW
    assert redis_client.hget(keys.meta, "status") == "failed"
    assert redis_client.hget(keys.stats, stat_field("small", "failed:invalid_request")) == "1"
    row = store.batches.get(batch_id)
    assert row is not None and row["status"] == "failed"


def test_a_record_of_a_batch_gone_from_the_store_is_not_written(
        redis_client: redis.Redis, store: Store, ends: LineEnds) -> None:
    batch_id, keys = fed_batch(redis_client, store, "a", "b")
    start(redis_client, keys, "a")
    assert store.batches.delete(batch_id)  # deleted while its line ran
    assert answer(ends, batch_id, "a", 1, "0.001") is Written.GONE
    assert store.records.count_records(batch_id) == 0
    assert list(store.records.ledger_rows(batch_id)) == []
    # Nothing moved in Redis either (the delete clears Redis's part itself).
    assert redis_client.hget(keys.meta, "completed") == "0"
    assert redis_client.hexists(keys.inflight, "a#1")
    assert redis_client.exists(keys.stats, FLEET_STATS) == 0


def test_a_late_writer_never_recreates_a_batch_redis_lost(redis_client: redis.Redis,
                                                          store: Store, ends: LineEnds) -> None:
    batch_id, _ = fed_batch(redis_client, store, "a", "b")
    redis_client.flushdb()  # Redis lost everything; the store has the batch
    written = ends.end(batch_id, result_record("a", request_id="r", body={}),
                       call=billed(batch_id, "a", 1, "0.001"), settled_call="a#1",
                       model="small", call_counts={"calls": 1},
                       meta_fields={"end_status": "expired"})
    assert written is Written.NEW  # the record stands: a rebuild recounts from the store
    assert [record["custom_id"] for record in store.records.iter_records(batch_id)] == ["a"]
    assert ledger(store, batch_id) == [(1, False, True, "0.001")]
    assert redis_client.dbsize() == 0


def test_error_record_shape_matches_the_batch_output_format() -> None:
    record = error_record("q", code="context_length_exceeded", message="too long",
                          response={"status_code": 400, "request_id": "r", "body": {}})
    assert record["id"].startswith("batch_req_")
    assert record["error"] == {"code": "context_length_exceeded", "message": "too long"}
    assert record["response"]["status_code"] == 400


def _render(table: Table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()
