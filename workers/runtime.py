"""The per-process parts a worker shares across its task slots, built once (again after fork)."""

from __future__ import annotations

import os
import threading

import httpx

from corral.config import CorralConfig, find_config_path, load_config
from corral.records import OutcomeStore
from corral.redis_client import connect
from corral.settings import get_settings
from workers.buckets import BucketStore, LocalBucketStore, RedisBucketStore, UnlimitedBucketStore
from workers.circuit import CircuitBreaker
from workers.job import JobRunner
from workers.provider_client import ProviderClient
from workers.rate_limiter import RateLimiter
from workers.reconciler import Reconciler

_lock = threading.Lock()
_runner: JobRunner | None = None
_reconciler: Reconciler | None = None


def job_runner() -> JobRunner:
    """This process's JobRunner, built on first use from the environment and corral.toml."""
    global _runner
    if _runner is None:
        with _lock:
            if _runner is None:
                _runner = _build_runner()
    return _runner


def reconciler() -> Reconciler:
    """This process's reconciler (not started)."""
    global _reconciler
    if _reconciler is None:
        with _lock:
            if _reconciler is None:
                from workers.app import app

                settings = get_settings()
                _reconciler = Reconciler(
                    connect(settings.redis_url), app, _config(), interval_s=
                    settings.reconcile_interval_s, broker_is_redis=settings.effective_broker_url
                    .startswith(("redis://", "rediss://", "unix://")))
    return _reconciler


def _config() -> CorralConfig:
    return load_config(find_config_path(get_settings().config))


def _build_runner() -> JobRunner:
    settings = get_settings()
    config = _config()
    client = connect(settings.redis_url)
    # One client per process: its connection pool is thread-safe and keeps connections alive
    # across the slots of a threads pool (DESIGN §4 measured this as the fast set-up).
    http = httpx.Client(limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))
    provider_client = ProviderClient(http, deadline_s=settings.request_deadline_s,
                                     connect_timeout_s=settings.connect_timeout_s)
    store: BucketStore
    if settings.rate_limiter == "shared":
        store = RedisBucketStore(client, period_s=settings.rate_period_s)
    elif settings.rate_limiter == "local":
        store = LocalBucketStore(period_s=settings.rate_period_s)
    else:
        store = UnlimitedBucketStore()
    limiter = RateLimiter(store, max_wait_s=settings.max_capacity_wait_s)
    return JobRunner(config=config, client=client,
                     outcomes=OutcomeStore(client, retention_s=settings.retention_s),
                     provider_client=provider_client, limiter=limiter,
                     circuit=CircuitBreaker(client, open_s=settings.circuit_open_s),
                     settings=settings)


def _forget_after_fork() -> None:
    global _runner, _reconciler, _lock
    _runner = None
    _reconciler = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
