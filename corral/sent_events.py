"""`task-sent` events for jobs pushed by corral's fast path, a thousand to one event message.

`send_task` publishes one `task-sent` event per message (Flower then lists the task as queued).
The fast path (corral/fast_publish.py) pushes a thousand messages per command, so it sends
their events the way Celery's workers send buffered task events: one message holding a list
of events (routing key `task.multi`), which every Celery event receiver (Flower, `celery
events`) unpacks. A 100,000-line share costs 100 event messages, and a subscriber's pub/sub
buffer sees a few hundred kilobytes at a time. Like the messages, each event is cut from a
template rather than built as a dict and serialised: the events would otherwise cost more
than the messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from celery import Celery
from celery.utils.time import utcoffset
from kombu import Producer
from kombu.clocks import LamportClock

from corral.celery_app import RUN_JOB_TASK

EVENTS_PER_MESSAGE = 1000


def publish_sent_events(app: Celery, producer: Producer, sent: Sequence[tuple[str, str, str]],
                        root_id: str | None = None, parent_id: str | None = None) -> int:
    """Publish one `task-sent` event per message, as `send_task` would for a message sent with
    `queue=` (default exchange, the queue's name as routing key); returns how many were
    published. The caller checks `task_send_sent_event`.

    Args:
        app: the app whose event settings (exchange, serializer, clock) the events follow.
        producer: a producer of `app`'s pool.
        sent: (task id, the task's argsrepr as a JSON string, queue name) per message.
        root_id: the messages' root task id, when sent from inside a task (else their own).
        parent_id: the messages' parent task id, when sent from inside a task.

    Raises:
        kombu/redis connection errors: the broker failed; the jobs are queued regardless.
    """
    if not sent:
        return 0
    dispatcher = app.amqp._event_dispatcher  # the one send_task publishes through
    fixed = json.dumps({
        "parent_id": parent_id, "name": RUN_JOB_TASK, "kwargs": "{}", "retries": 0,
        "eta": None, "expires": None, "exchange": "", "hostname": dispatcher.hostname,
        "utcoffset": utcoffset(), "pid": dispatcher.pid, "type": "task-sent"})[1:-1]
    queues_json = {queue: json.dumps(queue) for _, _, queue in sent}
    for start in range(0, len(sent), EVENTS_PER_MESSAGE):
        chunk = sent[start:start + EVENTS_PER_MESSAGE]
        first_clock = _take_clock_values(dispatcher.clock, len(chunk))
        timestamp = time.time()
        events = []
        for offset, (task_id, args_json, queue) in enumerate(chunk):
            queue_json = queues_json[queue]
            events.append(
                f'{{"uuid":"{task_id}","root_id":"{root_id or task_id}","args":{args_json},'
                f'"queue":{queue_json},"routing_key":{queue_json},'
                f'"clock":{first_clock + offset},"timestamp":{timestamp},{fixed}}}')
        producer.publish(f"[{','.join(events)}]", content_type="application/json",
                         content_encoding="utf-8", routing_key="task.multi",
                         exchange=dispatcher.exchange.name, declare=[dispatcher.exchange],
                         headers=dispatcher.headers, delivery_mode=dispatcher.delivery_mode)
    return len(sent)


def _take_clock_values(clock: LamportClock, count: int) -> int:
    """Advance the app's Lamport clock by `count` ticks at once; returns the first tick's
    value (each event gets its own, as `count` calls of `forward()` would give)."""
    first = int(clock.forward())
    if count > 1:
        clock.adjust(first + count - 2)  # sets max(value, other) + 1: the last tick
    return first
