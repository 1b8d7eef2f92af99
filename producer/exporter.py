"""`corral exporter`: Prometheus metrics of the fleet, read from Redis at every scrape."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator

import click
import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from redis.backoff import NoBackoff
from redis.retry import Retry

from corral.config import CorralConfig
from corral.redis_client import connect, is_redis_url
from corral.redis_keys import BATCH_INDEX, FLEET_STATS, BatchKeys
from corral.stats import LATENCY_BUCKETS_MS, by_model, latency_bucket
from producer.batches import TERMINAL_STATUSES
from producer.fleet import read_headroom, read_queue_depths
from producer.session import Session

log = logging.getLogger(__name__)

DEFAULT_PORT = 9464
SCRAPE_RETRIES = 1  # a connection dropped since the last scrape is reopened once
MAX_BATCHES = 1000  # newest batches looked at per scrape (the index holds the retention's)
TOKEN_KINDS = (("input", "input_tokens"), ("cached", "cached_tokens"),
               ("output", "output_tokens"))
PER_MODEL_COUNTERS = (
    ("corral_provider_calls", "Provider calls answered (any status), duplicates included.",
     "calls"),
    ("corral_rate_limited", "Provider calls answered with 429.", "rate_limited"),
    ("corral_retries", "Retries scheduled after a retryable provider error.", "retries"),
)


class CorralCollector:
    """Reads the fleet's counters, buckets, queues and batches when Prometheus scrapes.

    Nothing is cached between scrapes: the counters live in Redis (moved by the workers in the
    round trips that file records), so any number of exporters report the same values.
    """

    def __init__(self, client: redis.Redis, config: CorralConfig, *, period_s: float,
                 broker: redis.Redis | None = None) -> None:
        self._client = client
        self._config = config
        self._period_s = period_s
        self._broker = broker

    def collect(self) -> Iterator[Metric]:
        """Every metric family; `corral_redis_up` 0 (and nothing else) when Redis fails."""
        up = GaugeMetricFamily("corral_redis_up", "1 when the last scrape could read Redis.")
        try:
            families = [*self._stats(), *self._buckets(), *self._queues(), *self._batches()]
        except redis.RedisError as err:
            log.warning("scrape failed: %s", err)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _stats(self) -> list[Metric]:
        stats = by_model(self._client.hgetall(FLEET_STATS))  # type: ignore[arg-type]
        models = sorted(set(self._config.models) | set(stats))
        requests = CounterMetricFamily(
            "corral_requests", "Lines ended, by the model that ended them and outcome.",
            labels=["model", "outcome"])
        errors = CounterMetricFamily(
            "corral_request_errors", "Lines ended with an error record, by error code.",
            labels=["model", "code"])
        tokens = CounterMetricFamily(
            "corral_tokens", "Tokens billed; kind=input counts all prompt tokens, "
            "kind=cached the part of them served from the provider's cache.",
            labels=["model", "kind"])
        cost = CounterMetricFamily("corral_cost_usd", "Spend at our prices (USD).",
                                   labels=["model"])
        simple = [(CounterMetricFamily(name, doc, labels=["model"]), field)
                  for name, doc, field in PER_MODEL_COUNTERS]
        latency = HistogramMetricFamily(
            "corral_request_latency_seconds", "Latency of each provider call.",
            labels=["model"])
        for model in models:
            counts = stats.get(model, {})
            for outcome in ("completed", "failed"):
                requests.add_metric([model, outcome], counts.get(outcome, 0))
            for field, value in sorted(counts.items()):
                if field.startswith("failed:"):
                    errors.add_metric([model, field.removeprefix("failed:")], value)
            for kind, field in TOKEN_KINDS:
                tokens.add_metric([model, kind], counts.get(field, 0))
            cost.add_metric([model], counts.get("cost_nusd", 0) / 10**9)
            for family, field in simple:
                family.add_metric([model], counts.get(field, 0))
            buckets, seen = [], 0
            for bound in LATENCY_BUCKETS_MS:
                seen += counts.get(latency_bucket(bound), 0)
                buckets.append((floatToGoString(bound / 1000), seen))
            latency.add_metric([model], buckets, counts.get("latency_ms_sum", 0) / 1000)
        return [requests, errors, tokens, cost, *(family for family, _ in simple), latency]

    def _buckets(self) -> list[Metric]:
        scopes = {self._config.scope_of(model).name: self._config.scope_of(model)
                  for model in self._config.models.values()}
        rooms = read_headroom(self._client, scopes.values(), period_s=self._period_s)
        families = {
            "requests": GaugeMetricFamily(
                "corral_bucket_headroom_requests",
                "Requests the scope's shared bucket would admit now.", labels=["scope"]),
            "tokens": GaugeMetricFamily(
                "corral_bucket_headroom_tokens",
                "Tokens the scope's shared bucket would admit now.", labels=["scope"]),
            "rpm": GaugeMetricFamily(
                "corral_bucket_capacity_requests",
                "The scope's request limit per rate period.", labels=["scope"]),
            "tpm": GaugeMetricFamily(
                "corral_bucket_capacity_tokens",
                "The scope's token limit per rate period.", labels=["scope"]),
            "cooldown_s": GaugeMetricFamily(
                "corral_bucket_cooldown_seconds",
                "Seconds left of the scope's cooldown after a 429 (0: none).",
                labels=["scope"]),
        }
        for room in rooms:
            for field, family in families.items():
                family.add_metric([room.scope], float(getattr(room, field)))
        period = GaugeMetricFamily("corral_rate_period_seconds",
                                   "The period the limits are stated for (60: per minute).",
                                   value=self._period_s)
        info = GaugeMetricFamily("corral_model_info", "Each configured model's scope and queue.",
                                 labels=["model", "scope", "queue"])
        for name, model in sorted(self._config.models.items()):
            info.add_metric([name, self._config.scope_of(model).name, model.queue], 1)
        return [*families.values(), period, info]

    def _queues(self) -> list[Metric]:
        if self._broker is None:
            return []  # not a Redis broker (RabbitMQ has its own exporter)
        depth = GaugeMetricFamily("corral_queue_depth",
                                  "Jobs waiting in the broker queue (not yet reserved).",
                                  labels=["queue"])
        queues = [model.queue for model in self._config.models.values()]
        for queue, length in read_queue_depths(self._broker, queues).items():
            depth.add_metric([queue], length)
        return [depth]

    def _batches(self) -> list[Metric]:
        ids: list[str] = self._client.zrevrange(  # type: ignore[assignment]
            BATCH_INDEX, 0, MAX_BATCHES - 1)
        pipe = self._client.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hmget(BatchKeys(batch_id).meta, "status", "total", "completed", "failed")
        statuses: Counter[str] = Counter()
        remaining = GaugeMetricFamily("corral_lines_remaining",
                                      "Lines of an unfinished batch without a terminal record.",
                                      labels=["batch"])
        for batch_id, (status, total, completed, failed) in zip(ids, pipe.execute(),
                                                                 strict=True):
            if status is None:
                continue  # past retention; `corral status` prunes the index
            statuses[status] += 1
            if status not in TERMINAL_STATUSES:
                remaining.add_metric([batch_id], int(total or 0) - int(completed or 0)
                                     - int(failed or 0))
        batches = GaugeMetricFamily("corral_batches", "Batches in Redis by status (newest "
                                    f"{MAX_BATCHES}).", labels=["status"])
        for status, count in sorted(statuses.items()):
            batches.add_metric([status], count)
        return [batches, remaining]


def scrape_client(url: str) -> redis.Redis:
    """A client that fails a scrape at once when Redis is down, instead of riding out the
    outage as workers do: Prometheus would time the scrape out anyway, and `corral_redis_up`
    says more."""
    client = connect(url, check=False)
    client.set_retry(Retry(NoBackoff(), SCRAPE_RETRIES))
    return client


def collector_for(session: Session) -> CorralCollector:
    """A collector on the session's config, Redis and (when it is Redis) broker."""
    settings = session.settings
    client = scrape_client(settings.redis_url)
    broker_url = settings.effective_broker_url
    broker = None
    if broker_url == settings.redis_url:
        broker = client
    elif is_redis_url(broker_url):
        broker = scrape_client(broker_url)
    return CorralCollector(client, session.config, period_s=settings.rate_period_s,
                           broker=broker)


@click.command()
@click.option("--port", type=click.IntRange(min=0, max=65535), default=DEFAULT_PORT,
              show_default=True, help="Port to serve /metrics on (0: any free port).")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.pass_obj
def exporter(session: Session, port: int, host: str) -> None:
    """Serve Prometheus metrics at /metrics, read from Redis at every scrape."""
    registry = CollectorRegistry()
    registry.register(collector_for(session))
    server, _ = start_http_server(port, addr=host, registry=registry)
    click.echo(f"corral: exporter ready on http://{host}:{server.server_port}/metrics",
               err=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
