"""The Prometheus collector: what a scrape reports from the counters, buckets, queues, batches."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from corral.config import load_config
from corral.redis_keys import FLEET_STATS, BatchKeys, bucket_key
from corral.stats import stat_field
from corral.store import Store
from producer.exporter import CorralCollector, scrape_client
from tests.store_batches import numbered, open_test_batch


def scrape(collector: CorralCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture()
def collector(redis_client, write_config) -> CorralCollector:
    return CorralCollector(redis_client, load_config(write_config()), period_s=60,
                           broker=redis_client)


def test_counters_come_from_the_fleet_stats(redis_client, collector) -> None:
    counts = {"completed": 7, "failed": 2, "failed:server_error_exhausted": 2, "calls": 12,
              "rate_limited": 3, "retries": 3, "input_tokens": 900, "cached_tokens": 100,
              "output_tokens": 250, "cost_nusd": 1_234_500, "latency_ms_sum": 2400,
              "latency_le_50": 2, "latency_le_250": 8, "latency_le_inf": 2}
    redis_client.hset(FLEET_STATS, mapping={stat_field("big", k): v for k, v in counts.items()})
    samples = scrape(collector)
    assert value(samples, "corral_redis_up") == 1
    assert value(samples, "corral_requests_total", model="big", outcome="completed") == 7
    assert value(samples, "corral_requests_total", model="big", outcome="failed") == 2
    assert value(samples, "corral_request_errors_total", model="big",
                 code="server_error_exhausted") == 2
    assert value(samples, "corral_provider_calls_total", model="big") == 12
    assert value(samples, "corral_rate_limited_total", model="big") == 3
    assert value(samples, "corral_retries_total", model="big") == 3
    assert value(samples, "corral_tokens_total", model="big", kind="input") == 900
    assert value(samples, "corral_tokens_total", model="big", kind="cached") == 100
    assert value(samples, "corral_tokens_total", model="big", kind="output") == 250
    assert value(samples, "corral_cost_usd_total", model="big") == pytest.approx(0.0012345)
    # Cumulative buckets in seconds; _count is every timed call.
    assert value(samples, "corral_request_latency_seconds_bucket", model="big", le="0.05") == 2
    assert value(samples, "corral_request_latency_seconds_bucket", model="big", le="0.1") == 2
    assert value(samples, "corral_request_latency_seconds_bucket", model="big", le="0.25") == 10
    assert value(samples, "corral_request_latency_seconds_bucket", model="big", le="60.0") == 10
    assert value(samples, "corral_request_latency_seconds_bucket", model="big", le="+Inf") == 12
    assert value(samples, "corral_request_latency_seconds_count", model="big") == 12
    assert value(samples, "corral_request_latency_seconds_sum", model="big") == 2.4
    # A configured model that has not run yet is reported at zero, not missing.
    assert value(samples, "corral_requests_total", model="small", outcome="completed") == 0
    assert value(samples, "corral_request_latency_seconds_count", model="small") == 0


def test_buckets_queues_and_batches(redis_client, store: Store, collector) -> None:
    seconds, micros = redis_client.time()
    now_ms = seconds * 1000 + micros // 1000
    redis_client.hset(bucket_key("sim:sim-big"), mapping={
        "r": 0, "t": 0, "ts": now_ms + 30000, "cool": now_ms + 30000})
    redis_client.rpush("corral.small", "job-1", "job-2")
    running = open_test_batch(redis_client, store, numbered({"big": 5}))
    redis_client.hset(BatchKeys(running).meta, "completed", 2)
    done = open_test_batch(redis_client, store, numbered({"big": 1}))
    redis_client.hset(BatchKeys(done).meta, mapping={"status": "completed", "completed": 1})
    samples = scrape(collector)
    assert value(samples, "corral_bucket_headroom_requests", scope="sim:sim-big") == 0
    assert 29 < value(samples, "corral_bucket_cooldown_seconds", scope="sim:sim-big") <= 30
    assert value(samples, "corral_bucket_headroom_requests", scope="sim:sim-small") == 100000
    assert value(samples, "corral_bucket_headroom_tokens", scope="sim:sim-small") == 1000000
    assert value(samples, "corral_bucket_capacity_tokens", scope="sim:sim-big") == 10000000
    assert value(samples, "corral_rate_period_seconds") == 60
    assert value(samples, "corral_model_info", model="big", scope="sim:sim-big",
                 queue="corral.big") == 1
    assert value(samples, "corral_queue_depth", queue="corral.small") == 2
    assert value(samples, "corral_queue_depth", queue="corral.big") == 0
    assert value(samples, "corral_batches", status="in_progress") == 1
    assert value(samples, "corral_batches", status="completed") == 1
    assert value(samples, "corral_lines_remaining", batch=running) == 3
    assert ("corral_lines_remaining", (("batch", done),)) not in samples


def test_no_queue_depth_without_a_redis_broker(redis_client, write_config) -> None:
    samples = scrape(CorralCollector(redis_client, load_config(write_config()), period_s=60))
    assert not [name for name, _ in samples if name == "corral_queue_depth"]


def test_an_unreachable_redis_is_reported_not_raised(write_config) -> None:
    dead = scrape_client("redis://127.0.0.1:1/0")
    samples = scrape(CorralCollector(dead, load_config(write_config()), period_s=60))
    assert samples == {("corral_redis_up", ()): 0}
