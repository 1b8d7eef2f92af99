"""The write-once outcome store on a real Redis: one record, counters once, every cost kept."""

from __future__ import annotations

import json
from decimal import Decimal

from rich.console import Console

from corral.config import load_config
from corral.records import OutcomeStore, Written, error_record, result_record
from corral.redis_keys import BatchKeys
from producer.batches import create_batch, read_batch
from producer.costs import batch_cost
from producer.views import cost_table


def ledger_entry(custom_id: str, cost: str) -> dict:
    return {"custom_id": custom_id, "model": "small", "input_tokens": 10,
            "cached_input_tokens": 0, "output_tokens": 5, "cost_usd": cost,
            "list_cost_usd": cost}


def test_first_record_wins_and_counters_move_once(redis_client) -> None:
    batch_id = create_batch(redis_client, total=2, models=["small"], input_file="x")
    store = OutcomeStore(redis_client)
    first = result_record("a", request_id="r1", body={"n": 1})
    assert store.record(batch_id, first, ledger_entry=ledger_entry("a", "0.001"))
    assert not store.record(batch_id, result_record("a", request_id="r2", body={"n": 2}),
                            ledger_entry=ledger_entry("a", "0.002"))
    keys = BatchKeys(batch_id)
    assert json.loads(redis_client.hget(keys.outcomes, "a"))["response"]["request_id"] == "r1"
    assert redis_client.lrange(keys.done, 0, -1) == ["a"]
    batch = read_batch(redis_client, batch_id)
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 0}
    assert batch["status"] == "in_progress"
    ledger = [json.loads(e) for e in redis_client.lrange(keys.ledger, 0, -1)]
    assert [(e["cost_usd"], e["productive"]) for e in ledger] == [("0.001", True),
                                                                  ("0.002", False)]


def test_last_record_completes_the_batch(redis_client) -> None:
    batch_id = create_batch(redis_client, total=2, models=["small"], input_file="x")
    store = OutcomeStore(redis_client)
    store.record(batch_id, result_record("a", request_id="r", body={}))
    store.record(batch_id, error_record("b", code="invalid_request", message="bad"))
    batch = read_batch(redis_client, batch_id)
    assert batch["status"] == "completed" and batch["completed_at"] is not None
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}


def test_cost_report_sums_decimal_and_separates_unproductive(redis_client) -> None:
    batch_id = create_batch(redis_client, total=1, models=["small"], input_file="x")
    store = OutcomeStore(redis_client)
    store.record(batch_id, result_record("a", request_id="r", body={}),
                 ledger_entry=ledger_entry("a", "0.1"))
    store.record(batch_id, result_record("a", request_id="r", body={}),
                 ledger_entry=ledger_entry("a", "0.2"))
    report = batch_cost(redis_client, batch_id).as_json()
    assert report["total"]["cost_usd"] == "0.3"  # exact: 0.1 + 0.2 in Decimal
    assert report["total"]["unproductive_cost_usd"] == "0.2"
    assert report["models"]["small"]["requests"] == 2
    assert Decimal(report["total"]["savings_usd"]) == 0


def test_error_record_shape_matches_the_batch_output_format() -> None:
    record = error_record("q", code="context_length_exceeded", message="too long",
                          response={"status_code": 400, "request_id": "r", "body": {}})
    assert record["id"].startswith("batch_req_")
    assert record["error"] == {"code": "context_length_exceeded", "message": "too long"}
    assert record["response"]["status_code"] == 400


def mark(model: str = "small", input_max: int = 1000, output_max: int = 500) -> str:
    """A call mark as start_job.lua writes it."""
    return json.dumps({"model": model, "price_version": "v", "input_tokens_max": input_max,
                       "output_tokens_max": output_max, "started_ms": 1,
                       "client_request_id": "corral-x"})


def test_a_lines_leftover_marks_move_to_the_ledger_as_unsettled_when_it_ends(
        redis_client, write_config) -> None:
    batch_id = create_batch(redis_client, total=2, models=["small"], input_file="x")
    keys = BatchKeys(batch_id)
    # Call 1 of "a" was lost with its worker; call 2 is the one that answers.
    redis_client.hset(keys.attempts, "a", 2)
    redis_client.hset(keys.inflight, mapping={"a#1": mark(), "a#2": mark(), "b#1": mark()})
    store = OutcomeStore(redis_client)
    store.record(batch_id, result_record("a", request_id="r", body={}),
                 ledger_entry={**ledger_entry("a", "0.001"), "attempt": 2}, settled_call="a#2")
    assert redis_client.hkeys(keys.inflight) == ["b#1"]  # b is still running
    rows = [json.loads(e) for e in redis_client.lrange(keys.ledger, 0, -1)]
    assert sorted((row["attempt"], row.get("unsettled", False)) for row in rows) == [
        (1, True), (2, False)]
    lost = next(row for row in rows if row["attempt"] == 1)
    assert lost["client_request_id"] == "corral-x" and lost["productive"] is False

    config = load_config(write_config())
    price = config.models["small"].price
    worst = (1000 * price.input + 500 * price.output) / 1_000_000
    report = batch_cost(redis_client, batch_id, config)
    # a#1 moved to the ledger, b#1 still marked: both counted at their worst case.
    assert (report.total.requests, report.total.unsettled_calls) == (1, 2)
    assert report.total.unsettled_max_cost_usd == 2 * worst
    assert "unsettled calls" in _render(cost_table(report))


def test_an_unsettled_call_that_settles_late_is_counted_once_at_its_real_cost(
        redis_client) -> None:
    batch_id = create_batch(redis_client, total=1, models=["small"], input_file="x")
    keys = BatchKeys(batch_id)
    redis_client.hset(keys.attempts, "a", 2)
    redis_client.hset(keys.inflight, mapping={"a#1": mark(), "a#2": mark()})
    store = OutcomeStore(redis_client)
    store.record(batch_id, result_record("a", request_id="r2", body={}),
                 ledger_entry={**ledger_entry("a", "0.002"), "attempt": 2}, settled_call="a#2")
    # The worker of call 1 was only slow: its answer lands as a duplicate.
    store.record(batch_id, result_record("a", request_id="r1", body={}),
                 ledger_entry={**ledger_entry("a", "0.001"), "attempt": 1}, settled_call="a#1")
    report = batch_cost(redis_client, batch_id)
    assert (report.total.requests, report.total.unsettled_calls) == (2, 0)
    assert report.total.cost_usd == Decimal("0.003")


def test_a_late_writer_never_recreates_a_batch_that_is_gone(redis_client) -> None:
    batch_id = create_batch(redis_client, total=1, models=["small"], input_file="x")
    redis_client.flushdb()  # Redis lost everything
    store = OutcomeStore(redis_client)
    written = store.record(batch_id, result_record("a", request_id="r", body={}),
                           ledger_entry=ledger_entry("a", "0.001"), settled_call="a#1",
                           model="small", call_counts={"calls": 1},
                           meta_fields={"end_status": "expired"})
    assert written is Written.GONE
    assert redis_client.keys("corral:batch:*") == []


def _render(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()
