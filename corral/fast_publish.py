"""Many `corral.run_job` messages straight into kombu's Redis lists, as `send_task` stores them."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import redis
from celery import Celery
from celery.utils.saferepr import saferepr
from kombu import Producer, Queue
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps as serialize
from kombu.transport.redis import Channel as RedisChannel
from kombu.utils.json import dumps as json_dumps

from corral.celery_app import RUN_JOB_TASK
from corral.sent_events import publish_sent_events

VALUES_PER_LPUSH = 1000
LPUSHES_PER_ROUND_TRIP = 8
# Printable ASCII without quotes or backslash, short enough that Celery's saferepr of
# (batch_id, custom_id) is plain repr (saferepr truncates near its 1,024-character limit).
_PLAIN_ID = re.compile(r"[ !#-&(-\[\]-~]{1,400}")
_MIN_ARGSREPR_SIZE = 1024
_MARK = f"corralslot{secrets.token_hex(8)}"
_SLOTS = ("task_id", "tag", "body", "argsrepr")
# bytes.translate tables that set the version (4) and variant (10xx) bits of a random UUID.
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT_RFC = bytes((b & 0x3F) | 0x80 for b in range(256))


@dataclass(frozen=True)
class MessageTemplate:
    """One queue's stored message cut around its per-message parts, filled in by `render`.

    Attributes:
        key: the Redis list kombu's Redis transport pushes the queue's messages onto.
        literals: the envelope's JSON between the per-message parts (one more than ``slots``).
        slots: which part goes after each literal, an index into (task id, delivery tag,
            base64 body, JSON-escaped argsrepr).
        body_head: the task body's JSON up to the custom_id's JSON string.
        body_tail: the task body's JSON after it.
        batch_id: the first task argument, the same in every message.
        plain_prefix: ``argsrepr`` up to the custom_id when it can be built without saferepr
            (plain batch_id, Celery's default size limit), else None.
        repr_maxsize: Celery's argsrepr size limit.
        repr_maxlevels: Celery's argsrepr depth limit.
    """

    key: str
    literals: tuple[str, ...]
    slots: tuple[int, ...]
    body_head: bytes
    body_tail: bytes
    batch_id: str
    plain_prefix: str | None
    repr_maxsize: int
    repr_maxlevels: int

    def render(self, custom_id: str, task_id: str, delivery_tag: str) -> tuple[str, str]:
        """The stored JSON of one message, and its argsrepr as a JSON string."""
        if self.plain_prefix is not None and _PLAIN_ID.fullmatch(custom_id):
            id_json = f'"{custom_id}"'.encode()
            # Printable ASCII without quotes or backslashes: JSON as it is.
            argsrepr_json = f"\"{self.plain_prefix}{custom_id}')\""
        else:
            id_json = json.dumps(custom_id).encode()
            argsrepr_json = json.dumps(saferepr((self.batch_id, custom_id), self.repr_maxsize,
                                                maxlevels=self.repr_maxlevels))
        body = base64.b64encode(self.body_head + id_json + self.body_tail).decode("ascii")
        parts = (task_id, delivery_tag, body, argsrepr_json[1:-1])
        # A join of the cut pieces: several times faster than str.format on the ~750
        # characters of the envelope.
        pieces = [self.literals[0]]
        for slot, literal in zip(self.slots, self.literals[1:], strict=True):
            pieces.append(parts[slot])
            pieces.append(literal)
        return "".join(pieces), argsrepr_json


def redis_channel(app: Celery, producer: Producer) -> RedisChannel | None:
    """The producer's kombu Redis channel when messages can be pushed to it directly, else None.

    Direct pushing covers what corral configures: task protocol 2, JSON, no compression,
    base64 bodies, and no priority inherited from a parent task (every message goes to the
    priority-0 list, the one named after the queue).
    """
    conf = app.conf
    if conf.task_protocol != 2 or conf.task_serializer != "json" or conf.task_compression \
            or conf.task_inherit_parent_priority:
        return None
    channel = producer.channel
    if not isinstance(channel, RedisChannel) or channel.body_encoding != "base64":
        return None
    return channel


def direct_queue(app: Celery, name: str) -> Queue | None:
    """Celery's declaration of queue ``name`` if it is a plain direct queue, else None."""
    queue: Queue = app.amqp.queues[name]
    arguments = getattr(queue, "queue_arguments", None) or {}
    if queue.exchange.type != "direct" or "x-expires" in arguments:
        return None
    return queue


def build_template(app: Celery, channel: RedisChannel, queue: Queue,
                   batch_id: str) -> MessageTemplate:
    """The envelope of a `corral.run_job` message on plain direct ``queue``, by Celery and kombu.

    Celery's own ``create_task_message`` makes the headers, properties and body exactly as
    ``send_task`` would (reply_to, origin, and root/parent ids when called inside a task);
    kombu's own ``prepare_message`` wraps them as its Redis channel does before LPUSH.
    """
    marks = {slot: f"{_MARK}{slot}" for slot in (*_SLOTS, "custom_id")}
    root_id, parent_id = _parent_ids(app)
    headers, properties, body, _ = app.amqp.create_task_message(
        marks["task_id"], RUN_JOB_TASK, (batch_id, marks["custom_id"]), None,
        reply_to=app.thread_oid, root_id=root_id, parent_id=parent_id,
        argsrepr=marks["argsrepr"], ignore_result=None)
    content_type, content_encoding, body_json = serialize(body, serializer="json")
    body_head, body_tail = body_json.encode(content_encoding).split(
        json.dumps(marks["custom_id"]).encode(), 1)
    delivery_mode = maybe_delivery_mode(queue.exchange.delivery_mode
                                        or app.conf.task_default_delivery_mode)
    message = channel.prepare_message(marks["body"], 0, content_type, content_encoding,
                                      headers, dict(properties, delivery_mode=delivery_mode))
    message["properties"].update(
        body_encoding=channel.body_encoding, delivery_tag=marks["tag"],
        delivery_info={"exchange": "", "routing_key": queue.name})
    cut = re.split(f"{_MARK}({'|'.join(_SLOTS)})", json_dumps(message))
    plain = _PLAIN_ID.fullmatch(batch_id) and app.amqp.argsrepr_maxsize >= _MIN_ARGSREPR_SIZE
    return MessageTemplate(
        key=queue.name, literals=tuple(cut[0::2]),
        slots=tuple(_SLOTS.index(slot) for slot in cut[1::2]), body_head=body_head,
        body_tail=body_tail, batch_id=batch_id,
        plain_prefix=f"('{batch_id}', '" if plain else None,
        repr_maxsize=app.amqp.argsrepr_maxsize, repr_maxlevels=app.conf.task_repr_maxlevels)


def _parent_ids(app: Celery) -> tuple[str | None, str | None]:
    """(root_id, parent_id) of messages sent from inside a task (a worker's fallback), as
    `send_task` sets them; (None, None) elsewhere."""
    parent = app.current_worker_task
    if not parent:
        return None, None
    return parent.request.root_id or parent.request.id, parent.request.id


def uuid4_strings(count: int) -> list[str]:
    """``count`` random version-4 UUIDs as Celery writes them (``str(uuid.uuid4())``)."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT_RFC)
    hexed = raw.hex()
    return [f"{hexed[i:i + 8]}-{hexed[i + 8:i + 12]}-{hexed[i + 12:i + 16]}-"
            f"{hexed[i + 16:i + 20]}-{hexed[i + 20:i + 32]}" for i in range(0, 32 * count, 32)]


def push_messages(client: redis.Redis, messages: Iterable[tuple[str, str]]) -> int:
    """LPUSH (key, message) pairs, up to 1,000 values a command, 8 commands a round trip.

    Values pushed by one LPUSH land in the order given, so each list stays first in, first
    out, as with one LPUSH per message. Returns how many were pushed.
    """
    pushed = 0
    pending: dict[str, list[str]] = {}
    pipe = client.pipeline(transaction=False)
    for key, message in messages:
        values = pending.setdefault(key, [])
        values.append(message)
        if len(values) >= VALUES_PER_LPUSH:
            pipe.lpush(key, *values)
            pushed += len(values)
            del pending[key]
            if len(pipe) >= LPUSHES_PER_ROUND_TRIP:
                pipe.execute()
    for key, values in pending.items():
        pipe.lpush(key, *values)
        pushed += len(values)
    if len(pipe):
        pipe.execute()
    return pushed


def rendered(templates: dict[str, MessageTemplate], jobs: Sequence[tuple[str, str]],
             sent: list[tuple[str, str, str]] | None = None) -> Iterator[tuple[str, str]]:
    """(list key, message JSON) per (custom_id, queue); ids drawn for a thousand at a time.

    With `sent`, appends each message's (task id, argsrepr as a JSON string, queue name).
    """
    for start in range(0, len(jobs), VALUES_PER_LPUSH):
        block = jobs[start:start + VALUES_PER_LPUSH]
        ids = uuid4_strings(2 * len(block))
        for (custom_id, queue), task_id, delivery_tag in zip(block, ids[0::2], ids[1::2],
                                                             strict=True):
            template = templates[queue]
            message, argsrepr_json = template.render(custom_id, task_id, delivery_tag)
            if sent is not None:
                sent.append((task_id, argsrepr_json, queue))
            yield template.key, message


def publish_jobs(app: Celery, producer: Producer, channel: RedisChannel, batch_id: str,
                 jobs: Sequence[tuple[str, str]], queues: dict[str, Queue]) -> int:
    """Declare each queue once (as `send_task` does), then push every job's message, then
    their `task-sent` events (corral/sent_events.py).

    Args:
        app: the Celery app whose configuration and declarations the messages follow.
        producer: a producer of ``app``'s pool, on ``channel``.
        channel: from `redis_channel`.
        batch_id: the first argument of every message.
        jobs: (custom_id, queue name) pairs; each queue name is a key of ``queues``.
        queues: each queue's declaration, from `direct_queue`.

    Returns:
        How many messages were pushed.

    Raises:
        redis.RedisError: the broker failed; messages of earlier round trips are queued.
    """
    for queue in queues.values():
        producer.maybe_declare(queue)
    templates = {name: build_template(app, channel, queue, batch_id)
                 for name, queue in queues.items()}
    sent: list[tuple[str, str, str]] | None = [] if app.conf.task_send_sent_event else None
    with channel.conn_or_acquire() as client:
        pushed = push_messages(client, rendered(templates, jobs, sent))
    if sent:
        root_id, parent_id = _parent_ids(app)
        publish_sent_events(app, producer, sent, root_id=root_id, parent_id=parent_id)
    return pushed
