"""kombu's Redis channel reuses one client per pool once patched, and still talks to Redis."""

from __future__ import annotations

from kombu import Connection

from workers import kombu_client_reuse


def test_one_client_per_channel_and_pool(redis_url: str, redis_client) -> None:
    kombu_client_reuse.install()
    kombu_client_reuse.install()  # idempotent
    with Connection(redis_url) as connection:
        channel = connection.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        assert channel._create_client(asynchronous=True) is not first
        with channel.conn_or_acquire() as client:
            client.set("probe", "1")
        assert redis_client.get("probe") == "1"
        channel._pool = None  # what a reconnect does: a new pool, so a new client
        assert channel._create_client() is not first
