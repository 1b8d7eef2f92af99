"""The write-once outcome store on a real Redis: one record, counters once, every cost kept."""

from __future__ import annotations

import json
from decimal import Decimal

from corral.records import OutcomeStore, error_record, result_record
from corral.redis_keys import BatchKeys
from producer.batches import create_batch, read_batch
from producer.costs import batch_cost


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
