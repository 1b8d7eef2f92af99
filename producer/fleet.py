"""Read-only views of the fleet's shared state: bucket headroom per scope, broker queue depth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as KombuRedisChannel

from corral.config import RateScope
from corral.redis_keys import bucket_key


@dataclass(frozen=True)
class Headroom:
    """What a scope's shared buckets would admit right now, and their capacity per period."""

    scope: str
    requests: float
    tokens: float
    rpm: int
    tpm: int
    cooldown_s: float


def headroom(scope: RateScope, state: Mapping[str, str], *, now_ms: int,
             period_ms: int) -> Headroom:
    """The levels `bucket.lua` would compute at `now_ms`, without taking anything.

    Same refill rule as the script (capacity per period, continuous, capped; a missing key is a
    full bucket). While a cooldown runs the script admits nothing, so the headroom is zero.
    """
    requests = float(state.get("r", scope.rpm))
    tokens = float(state.get("t", scope.tpm))
    computed_ms = float(state.get("ts", now_ms))
    cool_ms = float(state.get("cool", 0))
    elapsed_ms = now_ms - computed_ms
    if elapsed_ms > 0:
        requests = min(scope.rpm, requests + elapsed_ms * scope.rpm / period_ms)
        tokens = min(scope.tpm, tokens + elapsed_ms * scope.tpm / period_ms)
    cooldown_ms = max(cool_ms - now_ms, 0.0)
    if cooldown_ms > 0:
        requests = tokens = 0.0
    return Headroom(scope.name, requests, tokens, scope.rpm, scope.tpm, cooldown_ms / 1000)


def redis_now_ms(client: redis.Redis) -> int:
    """The Redis server clock in ms, the one the bucket script uses."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def read_headroom(client: redis.Redis, scopes: Iterable[RateScope], *,
                  period_s: float) -> list[Headroom]:
    """Every scope's headroom now, in one round trip plus the clock."""
    scopes = list(scopes)
    pipe = client.pipeline(transaction=False)
    for scope in scopes:
        pipe.hgetall(bucket_key(scope.name))
    states = pipe.execute()
    now_ms = redis_now_ms(client)
    period_ms = int(period_s * 1000)  # as the workers pass it to the script
    return [headroom(scope, state, now_ms=now_ms, period_ms=period_ms)
            for scope, state in zip(scopes, states, strict=True)]


def read_queue_depths(broker: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each Celery queue (all priority lists summed); not those reserved
    by a worker (prefetched or running), which kombu keeps in its `unacked` hash.

    kombu's Redis transport keeps messages of priority 1-9 in sibling lists named
    `<queue><Channel.sep><step>`.
    """
    queues = sorted(set(queues))
    pipe = broker.pipeline(transaction=False)
    for queue in queues:
        for step in PRIORITY_STEPS:
            pipe.llen(f"{queue}{KombuRedisChannel.sep}{step}" if step else queue)
    lengths = pipe.execute()
    per_queue = len(PRIORITY_STEPS)
    return {queue: sum(lengths[i * per_queue:(i + 1) * per_queue])
            for i, queue in enumerate(queues)}
