"""Spending caps held by several workers at once, and a once-only fallback on context length."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from corral.store import open_store
from producer.batches import read_batch
from producer.costs import batch_cost
from producer.views import wait_for_batch
from tests.integration.helpers import (
    assert_complete,
    request,
    settled_live_counts,
    stored_records,
    write_jsonl,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_batch_cap_is_never_passed_by_several_workers(tmp_path: Path, redis_client,
                                                        write_config, start_simulator,
                                                        start_workers, corral) -> None:
    sim = start_simulator("--latency-ms", "20")
    config = write_config(f"{sim.base_url}/v1")
    lines = [request(f"b{i}", "small", f"say {i}", max_tokens=100) for i in range(200)]
    cap = Decimal("0.002")  # about 50 lines at their worst case of ~$0.00004 each
    submitted = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines)),
                       "--max-cost", str(cap), "--json", config=config)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = json.loads(submitted.stdout)["id"]
    start_workers(config, ["corral.small"], processes=3, concurrency=8)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)

    spent = batch_cost(open_store(), batch_id, client=redis_client).total.cost_usd
    assert 0 < spent <= cap  # every call reserved its worst case first: never past the cap
    records = list(stored_records(batch_id).values())
    exceeded = [r for r in records if r["error"] and r["error"]["code"] == "budget_exceeded"]
    completed = batch["request_counts"]["completed"]
    assert len(exceeded) + completed == 200 and len(exceeded) > 100
    assert sim.stats()["served"] == completed  # nothing more was spent once the cap was hit
    live = read_batch(open_store(), batch_id, redis_client)  # with its live spend from Redis
    assert Decimal(live["spent_usd"]) >= spent  # the fleet-wide counter, rounded up
    assert_complete(redis_client, batch_id, 200, sim.stats()["served"])


def test_context_length_exceeded_reroutes_once_to_the_fallback(tmp_path: Path, redis_client,
                                                              write_config, start_simulator,
                                                              start_workers, corral) -> None:
    sim = start_simulator("--model", "sim-small:ctx=50", "--model", "sim-big")
    config = write_config(f"{sim.base_url}/v1")
    config.write_text(config.read_text().replace(
        'aliases = ["cheap"]', 'aliases = ["cheap"]\nfallback = "big"'))
    batch_file = write_jsonl(tmp_path / "f.jsonl", [request("long", "small", "x" * 400),
                                                    request("short", "small", "hi")])
    batch_id = corral("submit", str(batch_file), config=config).stdout.strip()
    start_workers(config, ["corral.small", "corral.big"])
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    out = tmp_path / "out.jsonl"
    assert corral("results", batch_id, "-o", str(out), "--with-route",
                  config=config).returncode == 0
    records = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["long"]["response"]["body"]["model"] == "sim-big"
    assert records["long"]["route"]["fallback_from"] == "small"
    assert "fallback from small after context_length_exceeded" in \
        records["long"]["route"]["reason"]
    assert records["short"]["route"]["model"] == "small"
    assert sim.stats()["by_status"]["400"] == 1


def test_lines_that_fall_back_leave_their_models_share_so_the_feeder_goes_on(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    # Every line overflows small's context and falls back to big. The feeder may keep only 2
    # lines of small in flight: counted as still in flight there, the first two would stop it.
    sim = start_simulator("--model", "sim-small:ctx=50", "--model", "sim-big")
    config = write_config(f"{sim.base_url}/v1")
    config.write_text(config.read_text().replace(
        'aliases = ["cheap"]', 'aliases = ["cheap"]\nfallback = "big"'))
    lines = 8
    batch_file = write_jsonl(tmp_path / "f.jsonl", [request(f"long-{i}", "small", "x" * 400)
                                                    for i in range(lines)])
    submitted = corral("submit", str(batch_file), config=config,
                       env_extra={"CORRAL_QUEUE_DEPTH": "2"})
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    start_workers(config, ["corral.small", "corral.big"])
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": lines, "completed": lines, "failed": 0}
    live = settled_live_counts(redis_client, batch_id, lines)
    assert live["small"]["rerouted"] == -lines and live["big"]["rerouted"] == lines
    for counts in live.values():  # nothing left in flight on either model
        assert counts.get("enqueued", 0) + counts["rerouted"] == \
            counts.get("completed", 0) + counts.get("failed", 0)
