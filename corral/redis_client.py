"""Redis connections: one place that builds clients and turns connection failures into ours."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from corral.errors import RedisUnavailableError

# Ride out a Redis restart or failover (seconds) instead of failing the job in hand: about
# 30 s of capped exponential backoff. Every corral write is idempotent or write-once, so a
# command retried after a lost reply at most counts a ledger entry twice (never drops one).
OUTAGE_RETRIES = 20
OUTAGE_BACKOFF = ExponentialBackoff(cap=2.0, base=0.05)


def connect(url: str, *, check: bool = True) -> redis.Redis:
    """A client for `url` that decodes replies to str.

    Args:
        url: redis://, rediss:// or unix:// URL (password and TLS come with it).
        check: ping once so an unreachable server fails here with a clear message.

    Raises:
        RedisUnavailableError: when `check` and the server does not answer.
    """
    client = redis.Redis.from_url(
        url, decode_responses=True, health_check_interval=30, socket_connect_timeout=5,
        retry=Retry(OUTAGE_BACKOFF, OUTAGE_RETRIES),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    if check:
        try:
            # One quick ping without the outage retries: an unreachable server fails now.
            redis.Redis.from_url(url, socket_connect_timeout=5).ping()
        except redis.RedisError as err:
            raise RedisUnavailableError(
                f"Redis at {redact_url(url)} is not reachable ({err}); start Redis or set "
                "CORRAL_REDIS_URL (`corral run` and `corral demo` start one themselves)"
            ) from err
    return client


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://***@{host}"
