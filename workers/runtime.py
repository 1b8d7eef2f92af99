"""The per-process parts a worker shares across its task slots, built once (again after fork)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, cast

import httpx

from corral.config import CorralConfig, find_config_path, load_config
from corral.jobs import send_jobs
from corral.records import LineEnds
from corral.redis_client import connect, is_redis_url
from corral.settings import get_settings
from corral.store import forget_stores, open_store
from corral.store.writer import StoreWriter
from workers.batch_api import batch_api_for
from workers.batch_lane import BatchLane
from workers.batch_lane_sweep import BatchLaneSweep
from workers.buckets import BucketStore, LocalBucketStore, RedisBucketStore, UnlimitedBucketStore
from workers.circuit import CircuitBreaker
from workers.feeding import FeedingLoop
from workers.job import JobRunner
from workers.provider_client import HttpClients, ProviderClient
from workers.rate_limiter import RateLimiter
from workers.reconciler import Reconciler

_lock = threading.RLock()  # re-entrant: one lazily built part may need another
_instances: dict[str, Any] = {}


def _once(name: str, build: Callable[[], Any]) -> Any:
    if name not in _instances:
        with _lock:
            if name not in _instances:
                _instances[name] = build()
    return _instances[name]


def job_runner() -> JobRunner:
    """This process's JobRunner, built on first use from the environment and corral.toml."""
    return cast(JobRunner, _once("job_runner", _build_runner))


def batch_lane() -> BatchLane:
    """This process's batch lane (workers/batch_lane.py)."""
    return cast(BatchLane, _once("batch_lane", _build_batch_lane))


def _build_batch_lane() -> BatchLane:
    settings = get_settings()
    config = _config()
    client = connect(settings.redis_url)
    store = open_store()
    writer = StoreWriter(store.records, deadline_s=settings.store_write_deadline_s)
    http = httpx.Client()
    return BatchLane(config=config, client=client, store=store,
                     ends=LineEnds(client, writer, retention_s=settings.retention_s),
                     api_for=lambda model: batch_api_for(config.provider_of(model), http),
                     send_jobs=_send_jobs, poll_s=settings.batch_poll_s,
                     call_s=settings.request_deadline_s,
                     turnaround_s=lambda provider: store.provider_batches.turnaround_s(
                         provider) or settings.batch_turnaround_s)


def batch_lane_sweep() -> BatchLaneSweep:
    """This process's sweep for provider batches whose poll was lost (not started)."""
    return cast(BatchLaneSweep, _once("batch_lane_sweep", _build_batch_lane_sweep))


def _build_batch_lane_sweep() -> BatchLaneSweep:
    from workers.app import app

    return BatchLaneSweep(open_store(), app, poll_s=get_settings().batch_poll_s)


def reconciler() -> Reconciler:
    """This process's reconciler (not started)."""
    return cast(Reconciler, _once("reconciler", _build_reconciler))


def feeding_loop() -> FeedingLoop:
    """This process's feeding loop (not started)."""
    return cast(FeedingLoop, _once("feeding", _build_feeding_loop))


def _build_feeding_loop() -> FeedingLoop:
    from workers.app import app

    settings = get_settings()
    return FeedingLoop(connect(settings.redis_url), open_store(), app, _config(),
                       depth=settings.queue_depth, interval_s=settings.feed_look_s,
                       retention_s=settings.retention_s)


def _build_reconciler() -> Reconciler:
    from workers.app import app

    settings = get_settings()
    return Reconciler(connect(settings.redis_url), open_store(), app, _config(),
                      interval_s=settings.reconcile_interval_s, retention_s=settings.retention_s,
                      broker_is_redis=is_redis_url(settings.effective_broker_url))


def _config() -> CorralConfig:
    return cast(CorralConfig, _once("config", lambda: load_config(
        find_config_path(get_settings().config))))


def _gevent_patched() -> bool:
    """Whether this process runs a gevent pool (Celery monkey-patches before anything else)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("socket"))


def _build_runner() -> JobRunner:
    settings = get_settings()
    config = _config()
    client = connect(settings.redis_url)
    # Threads share one client (its pool is thread-safe and keeps connections alive across
    # slots); gevent takes one per running call from a free list (docs/concepts.md: both measured).
    http = HttpClients(lambda: httpx.Client(limits=httpx.Limits(
        max_connections=None, max_keepalive_connections=256)), shared=not _gevent_patched())
    provider_client = ProviderClient(http, deadline_s=settings.request_deadline_s,
                                     connect_timeout_s=settings.connect_timeout_s)
    buckets: BucketStore
    if settings.rate_limiter == "shared":
        buckets = RedisBucketStore(client, period_s=settings.rate_period_s)
    elif settings.rate_limiter == "local":
        buckets = LocalBucketStore(period_s=settings.rate_period_s)
    else:
        buckets = UnlimitedBucketStore()
    limiter = RateLimiter(buckets, max_wait_s=settings.max_capacity_wait_s)
    store = open_store()
    writer = StoreWriter(store.records, deadline_s=settings.store_write_deadline_s,
                         delay_s=settings.store_commit_delay_s)
    return JobRunner(config=config, client=client,
                     ends=LineEnds(client, writer, retention_s=settings.retention_s),
                     batches=store.batches,
                     provider_client=provider_client, limiter=limiter,
                     circuit=CircuitBreaker(client, open_s=settings.circuit_open_s),
                     settings=settings, send_jobs=_send_jobs)


def _send_jobs(batch_id: str, jobs: list[tuple[str, str]]) -> int:
    from workers.app import app

    return send_jobs(app, batch_id, jobs)


def _forget_after_fork() -> None:
    global _lock
    _instances.clear()
    forget_stores(close=False)  # a database connection must not be shared across a fork
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_forget_after_fork)
