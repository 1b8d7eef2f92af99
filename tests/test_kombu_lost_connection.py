"""A worker's kombu channels when Redis dies under them: Celery's own clean-up, in process."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue
from kombu.common import Broadcast, ignore_errors

from corral.embedded_redis import EmbeddedRedis
from workers import kombu_client_reuse, kombu_lost_connection

TASKS = Queue("corral.tasks", Exchange("corral.tasks", "direct"), "corral.tasks")


@pytest.fixture()
def doomed_redis() -> Iterator[EmbeddedRedis]:
    """A private Redis that the test kills."""
    with EmbeddedRedis() as server:
        yield server


def test_a_worker_connection_lost_mid_poll_closes_without_an_attribute_error(
        doomed_redis: EmbeddedRedis) -> None:
    kombu_client_reuse.install()
    kombu_lost_connection.install()
    kombu_lost_connection.install()  # idempotent
    connection = Connection(doomed_redis.url)
    tasks = connection.default_channel
    Producer(tasks).publish({"job": 1}, exchange=TASKS.exchange, routing_key=TASKS.routing_key,
                            declare=[TASKS])
    delivered: list[Message] = []
    Consumer(tasks, [TASKS], callbacks=[lambda _body, message: delivered.append(message)],
             accept=["json"]).consume()
    connection.drain_events(timeout=5)  # one job delivered, not yet acked (acks_late)
    with pytest.raises(socket.timeout):
        connection.drain_events(timeout=0.1)  # leaves a BRPOP outstanding, as a worker's poll
    # Remote control's broadcast consumer: a second channel, whose close also fails below.
    Consumer(connection.channel(), [Broadcast("corral.test.pidbox")], no_ack=True,
             callbacks=[lambda _body, _message: None], accept=["json"]).consume()
    assert len(delivered) == 1 and tasks._in_poll

    doomed_redis.kill()
    # What Celery's consumer does on a lost broker connection (on_connection_error_after_
    # connected): collect the connection, which detaches its transport, then close it.
    connection.collect(socket_timeout=1)
    ignore_errors(connection, connection.close)  # an AttributeError would escape this
    assert tasks.closed

    # The job ends after the loss: its ack fails as a lost connection, which Celery logs.
    with pytest.raises(redis.exceptions.ConnectionError):
        delivered[0].ack()
    delivered[0].ack_log_error(logging.getLogger(__name__),
                               connection.connection_errors + connection.channel_errors)
