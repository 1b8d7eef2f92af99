"""Sending jobs: one pointer-only `corral.run_job` message per line, by task name."""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery
from kombu import Producer

from corral import fast_publish
from corral.celery_app import RUN_JOB_TASK


def send_jobs(app: Celery, batch_id: str, jobs: Iterable[tuple[str, str]]) -> int:
    """Send one message per (custom_id, queue) over one producer connection; returns the count.

    On a Redis broker the messages are built from one template per queue and pushed a thousand
    per LPUSH (`corral.fast_publish`), many times faster than `send_task` per line; elsewhere
    (AMQP) each goes through `send_task`. Either way a worker receives the same message.

    The Redis path publishes the ``task-sent`` events too (Flower lists each job as queued),
    a thousand per event message (`corral.sent_events`): one per line would double the Redis
    commands, and a large submit would overrun the pub/sub output buffer (32 MB by default) of
    a subscriber such as Flower, which Redis then disconnects. It sends no
    ``before/after_task_publish`` signal (nor adds children to a parent task's trail, which
    only result backends read).

    Raises:
        redis.RedisError: the Redis broker failed; some messages may be queued already, and
            sending them again is harmless (a duplicate finds the line's lease or record).
    """
    pending = list(jobs)
    if not pending:
        return 0
    with app.producer_or_acquire() as producer:
        channel = fast_publish.redis_channel(app, producer)
        if channel is not None:
            queues = {name: fast_publish.direct_queue(app, name)
                      for name in {queue for _, queue in pending}}
            direct = {name: queue for name, queue in queues.items() if queue is not None}
            if len(direct) == len(queues):
                return fast_publish.publish_jobs(app, producer, channel, batch_id, pending,
                                                 direct)
        return _send_each(app, producer, batch_id, pending)


def _send_each(app: Celery, producer: Producer, batch_id: str,
               jobs: list[tuple[str, str]]) -> int:
    for custom_id, queue in jobs:
        app.send_task(RUN_JOB_TASK, args=(batch_id, custom_id), queue=queue, producer=producer)
    return len(jobs)
