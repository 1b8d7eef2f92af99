"""Reuse one redis.Redis per kombu channel instead of building one per bookkeeping call.

kombu's Redis transport builds a new `redis.Redis` (on the channel's shared connection pool)
every time it records a delivered message as unacked and every time it acks one; with
redis-py 5+ that constructor is costly and runs on the worker's single consumer thread, the
one that limits a worker at short latencies (about 5% of a worker's samples under py-spy).
The client is thread-safe and holds no connection of its own, so one per channel and pool
serves every caller; a channel that gets a new pool (after a reconnect) gets a new client.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

_ATTRIBUTE = "_corral_sync_client"


def install() -> None:
    """Patch kombu's Redis channel once per process (idempotent)."""
    channel = kombu_redis.Channel
    if getattr(channel._create_client, "corral_reuses_client", False):
        return
    original = channel._create_client

    def create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return original(self, asynchronous=True)
        client = self.__dict__.get(_ATTRIBUTE)
        if client is None or client.connection_pool is not self.pool:
            client = self.__dict__[_ATTRIBUTE] = original(self)
        return client

    create_client.corral_reuses_client = True  # type: ignore[attr-defined]
    channel._create_client = create_client  # type: ignore[method-assign]
