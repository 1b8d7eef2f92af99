"""A consumer without an event loop (gevent workers) restores a job left unacknowledged."""

from __future__ import annotations

import contextlib
import time

from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from workers import kombu_restore_without_loop

TASKS = Queue("corral.restore-test", Exchange("corral.restore-test", "direct"),
              "corral.restore-test")
OPTIONS = {"visibility_timeout": 60, "unacked_restore_interval": 1,
           "unacked_restore_throttle": 1}


def test_an_idle_drain_events_consumer_restores_a_job_unacked_past_the_visibility_timeout(
        redis_url: str, redis_client) -> None:
    kombu_restore_without_loop.install()
    kombu_restore_without_loop.install()  # idempotent
    # A worker takes the job and dies before acking it: the job stays in kombu's unacked hash.
    with Connection(redis_url, transport_options=OPTIONS) as lost:
        channel = lost.default_channel
        Producer(channel).publish({"job": 1}, exchange=TASKS.exchange,
                                  routing_key=TASKS.routing_key, declare=[TASKS])
        assert channel.basic_get(TASKS.name, no_ack=False) is not None
        channel.qos.restore_at_shutdown = False  # as a SIGKILL leaves it
    (tag,) = redis_client.hkeys("unacked")
    # ... long enough ago that its visibility timeout has passed.
    redis_client.zadd("unacked_index", {tag: time.time() - 3600})

    got: list[Message] = []
    with Connection(redis_url, transport_options=OPTIONS) as idle:
        Consumer(idle.default_channel, [TASKS], accept=["json"],
                 callbacks=[lambda _body, message: got.append(message)]).consume()
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                idle.drain_events(timeout=2)  # BRPOP answers empty every second
        assert [message.payload for message in got] == [{"job": 1}]
        assert got[0].delivery_info["redelivered"] is True
        got[0].ack()
    assert redis_client.hlen("unacked") == 0
