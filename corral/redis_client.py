"""Redis connections: one place that builds clients and turns connection failures into ours."""

from __future__ import annotations

import ssl
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from corral.errors import RedisUnavailableError
from corral.settings import Settings, get_settings

# Ride out a Redis restart or failover (seconds) instead of failing the job in hand: about
# 30 s of capped exponential backoff. Every corral write is idempotent or write-once (a
# line's end counts it as its request leaves; a bulk end counts once per token), so a command
# retried after a lost reply at most moves a live call counter twice, or counts twice a
# provider batch's answer filed with no live copy; the store's records and ledger are never
# touched.
OUTAGE_RETRIES = 20
OUTAGE_BACKOFF = ExponentialBackoff(cap=2.0, base=0.05)
MASK = "***"


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(url: str) -> bool:
    """Whether `url` names a Redis server (a broker URL may also be RabbitMQ's amqp://)."""
    return url.startswith(REDIS_SCHEMES)


def connect(url: str, *, check: bool = True, settings: Settings | None = None) -> redis.Redis:
    """A client for `url` that decodes replies to str.

    Args:
        url: redis://, rediss:// or unix:// URL; a password or ACL user comes with it, and
            redis-py's query parameters (`?ssl_ca_certs=…`) work too.
        check: ping once so an unreachable server fails here with a clear message.
        settings: where the TLS files of a rediss:// URL come from (default: the process's).

    Raises:
        RedisUnavailableError: when `check` and the server does not answer, refuses the
            credentials, or its certificate does not verify.
    """
    options = tls_options_for(url, settings)
    client = redis.Redis.from_url(
        url, decode_responses=True, health_check_interval=30, socket_connect_timeout=5,
        retry=Retry(OUTAGE_BACKOFF, OUTAGE_RETRIES),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], **options)
    if check:
        # One quick ping without the outage retries: an unreachable server fails now.
        probe = redis.Redis.from_url(url, socket_connect_timeout=5, **options)
        try:
            probe.ping()
        except redis.RedisError as err:
            raise RedisUnavailableError(unavailable_message(url, err)) from err
        finally:
            probe.close()
    return client


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's (and kombu's `broker_use_ssl`) TLS arguments from CORRAL_REDIS_TLS_*.

    The server's certificate is always verified: against CORRAL_REDIS_TLS_CA_FILE if set,
    else the system's CAs. (kombu alone would skip verification on a bare rediss:// URL.)
    """
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.redis_tls_cert_file:
        options["ssl_certfile"] = settings.redis_tls_cert_file
    if settings.redis_tls_key_file:
        options["ssl_keyfile"] = settings.redis_tls_key_file
    return options


def tls_options_for(url: str, settings: Settings | None = None) -> dict[str, Any]:
    """The TLS arguments a client for `url` needs: none unless it is rediss://.

    redis-py lets the URL's own query parameters override these.
    """
    if not url.startswith("rediss://"):
        return {}
    return tls_options(settings or get_settings())


def unavailable_message(url: str, err: redis.RedisError) -> str:
    """What to tell the user when Redis at `url` failed with `err` (no password in it)."""
    where = f"Redis at {redact_url(url)}"
    if isinstance(err, redis.AuthenticationError):
        return (f"{where} refused the credentials ({err}); check the password or ACL user in "
                "CORRAL_REDIS_URL")
    if url.startswith("rediss://") and any(sign in str(err).lower()
                                            for sign in ("ssl", "certificate", "tls")):
        return (f"{where}: TLS failed ({err}); check CORRAL_REDIS_TLS_CA_FILE (and the client "
                "certificate, if the server asks for one)")
    return (f"{where} is not reachable ({err}); start Redis or set CORRAL_REDIS_URL "
            "(`corral run` and `corral demo` start one themselves)")


def redact_url(url: str) -> str:
    """The URL with any password (userinfo or `password=` query) masked, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, qmark, query = rest.partition("?")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        rest = f"{user}:{MASK}@{host}" if ":" in credentials else f"{MASK}@{host}"
    if query:
        query = "&".join(f"password={MASK}" if part.lower().startswith("password=") else part
                         for part in query.split("&"))
    return f"{scheme}://{rest}{qmark}{query}"
