"""send_jobs on Redis stores exactly the message Celery's send_task would; elsewhere it uses it."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery
from celery._state import _task_stack
from celery.utils.saferepr import saferepr
from kombu import Exchange, Queue

from corral import fast_publish
from corral.celery_app import RUN_JOB_TASK, create_app
from corral.jobs import send_jobs

QUEUE = "corral.unit"
ID_FIELDS = (("headers", "id"), ("headers", "root_id"), ("properties", "correlation_id"),
             ("properties", "delivery_tag"))


@pytest.fixture()
def app(redis_client: redis.Redis, redis_url: str) -> Iterator[Celery]:
    """An app on the test database (celeryconfig may have been imported for another URL)."""
    celery_app = create_app("corral-test", broker_url=redis_url)
    yield celery_app
    celery_app.close()


def pop_stored(client: redis.Redis, queue: str = QUEUE) -> dict[str, Any]:
    """The next message a worker would take (kombu BRPOPs the right end), decoded."""
    raw = client.rpop(queue)
    assert isinstance(raw, str), f"no message on {queue}"
    return json.loads(raw)


def without_ids(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its per-message ids blanked and its body decoded."""
    copy = json.loads(json.dumps(message))
    for section, field in ID_FIELDS:
        copy[section][field] = "<id>"
    copy["body"] = json.loads(base64.b64decode(copy["body"]))
    return copy


def send_one_with_celery(app: Celery, batch_id: str, custom_id: str) -> None:
    """One message the way corral's send_jobs sent every message before the fast path."""
    with app.producer_or_acquire() as producer:
        app.send_task(RUN_JOB_TASK, args=(batch_id, custom_id), queue=QUEUE, producer=producer)


@pytest.mark.parametrize("custom_id", [
    "req-000001",
    "it's",
    'say "hi"',
    "back\\slash",
    "질문-1",
    "x" * 1_000,  # Celery's argsrepr truncates this one
    "{braces} and %s",
])
def test_fast_message_equals_what_send_task_stores(app: Celery, redis_client: redis.Redis,
                                                   custom_id: str) -> None:
    send_one_with_celery(app, "batch_abc", custom_id)
    celery_message = pop_stored(redis_client)
    assert send_jobs(app, "batch_abc", [(custom_id, QUEUE)]) == 1
    fast_message = pop_stored(redis_client)

    assert without_ids(fast_message) == without_ids(celery_message)
    assert list(fast_message) == list(celery_message)
    for section in ("headers", "properties"):
        assert list(fast_message[section]) == list(celery_message[section])
    headers, properties = fast_message["headers"], fast_message["properties"]
    assert headers["id"] == headers["root_id"] == properties["correlation_id"]
    assert uuid.UUID(headers["id"]).version == 4
    assert uuid.UUID(properties["delivery_tag"]).version == 4
    assert headers["id"] != celery_message["headers"]["id"]


def test_an_unusual_batch_id_is_repr_d_as_celery_does(app: Celery,
                                                       redis_client: redis.Redis) -> None:
    send_one_with_celery(app, "batch 'quoted' \\ 한", "req-1")
    send_jobs(app, "batch 'quoted' \\ 한", [("req-1", QUEUE)])
    assert without_ids(pop_stored(redis_client)) == without_ids(pop_stored(redis_client))


def test_inside_a_task_the_parent_and_root_ids_are_celerys(app: Celery,
                                                           redis_client: redis.Redis) -> None:
    parent = SimpleNamespace(add_trail=lambda result: None, request=SimpleNamespace(
        id="parent-task-id", root_id="root-task-id", called_directly=False))
    _task_stack.push(parent)
    try:
        send_one_with_celery(app, "batch_abc", "fallback-line")
        send_jobs(app, "batch_abc", [("fallback-line", QUEUE)])
    finally:
        _task_stack.pop()
    celery_message, fast_message = pop_stored(redis_client), pop_stored(redis_client)
    assert fast_message["headers"]["root_id"] == "root-task-id"
    assert fast_message["headers"]["parent_id"] == "parent-task-id"
    assert without_ids(fast_message) == without_ids(celery_message)


def test_every_message_has_its_own_task_id_and_delivery_tag(app: Celery,
                                                            redis_client: redis.Redis) -> None:
    send_jobs(app, "batch_abc", [(f"line-{i}", QUEUE) for i in range(2_500)])
    messages = [json.loads(raw) for raw in redis_client.lrange(QUEUE, 0, -1)]
    assert len({m["headers"]["id"] for m in messages}) == 2_500
    assert len({m["properties"]["delivery_tag"] for m in messages}) == 2_500


def test_each_queue_is_consumed_in_input_order(app: Celery, redis_client: redis.Redis) -> None:
    jobs = [(f"line-{i}", "corral.a" if i % 3 else "corral.b") for i in range(2_345)]
    assert send_jobs(app, "batch_abc", jobs) == len(jobs)
    for queue in ("corral.a", "corral.b"):
        taken = []
        while redis_client.llen(queue):
            body = json.loads(base64.b64decode(pop_stored(redis_client, queue)["body"]))
            taken.append(body[0][1])
        assert taken == [custom_id for custom_id, name in jobs if name == queue]


def test_the_queue_binding_is_declared_as_send_task_declares_it(
        redis_url: str, redis_client: redis.Redis) -> None:
    bindings = []
    for queue in ("corral.celery-declared", "corral.fast-declared"):
        fresh = create_app("corral-test", broker_url=redis_url)  # nothing declared yet
        try:
            if queue == "corral.celery-declared":
                with fresh.producer_or_acquire() as producer:
                    fresh.send_task(RUN_JOB_TASK, args=("b", "c"), queue=queue,
                                    producer=producer)
            else:
                send_jobs(fresh, "b", [("c", queue)])
        finally:
            fresh.close()
        bindings.append({str(member).replace(queue, "<queue>") for member in
                         redis_client.smembers(f"_kombu.binding.{queue}")})
    assert bindings[0] == bindings[1] != set()


def test_redis_broker_does_not_call_send_task(app: Celery, redis_client: redis.Redis,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("send_task called on the Redis path")

    monkeypatch.setattr(app, "send_task", refuse)
    assert send_jobs(app, "batch_abc", [("a", QUEUE), ("b", QUEUE)]) == 2
    assert redis_client.llen(QUEUE) == 2


def record_send_task(app: Celery, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every send_task call's args from now on (the calls still send)."""
    sent: list[tuple[Any, ...]] = []
    original = app.send_task

    def recording(name: str, args: tuple[Any, ...], **options: Any) -> Any:
        sent.append(args)
        return original(name, args=args, **options)

    monkeypatch.setattr(app, "send_task", recording)
    return sent


@pytest.mark.parametrize("setting", [
    {"task_compression": "gzip"},
    {"task_protocol": 1},
    {"task_inherit_parent_priority": True},
    {"task_queues": [Queue(QUEUE, Exchange("corral.topic", type="topic"), routing_key="#")]},
])
def test_settings_the_template_does_not_cover_go_through_send_task(
        app: Celery, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        setting: dict[str, Any]) -> None:
    app.conf.update(setting)
    sent = record_send_task(app, monkeypatch)
    assert send_jobs(app, "batch_abc", [("a", QUEUE), ("b", QUEUE)]) == 2
    assert sent == [("batch_abc", "a"), ("batch_abc", "b")]


def test_other_brokers_go_through_send_task(monkeypatch: pytest.MonkeyPatch) -> None:
    memory_app = create_app("corral-test", broker_url="memory://")
    sent = record_send_task(memory_app, monkeypatch)
    try:
        assert send_jobs(memory_app, "batch_abc", [("a", QUEUE), ("b", QUEUE)]) == 2
    finally:
        memory_app.close()
    assert sent == [("batch_abc", "a"), ("batch_abc", "b")]


def test_no_jobs_sends_nothing(app: Celery, redis_client: redis.Redis) -> None:
    assert send_jobs(app, "batch_abc", []) == 0
    assert redis_client.keys("*") == []


def test_uuid4_strings_are_random_version_4_uuids() -> None:
    ids = fast_publish.uuid4_strings(5_000)
    parsed = [uuid.UUID(text) for text in ids]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == ids
    assert len(set(ids)) == 5_000


def published_events(pubsub: redis.client.PubSub, wanted: int) -> list[tuple[str, Any]]:
    """(routing key, decoded body) of kombu event messages, until `wanted` events arrived."""
    got: list[tuple[str, Any]] = []
    count = 0
    for _ in range(1_000):
        message = pubsub.get_message(timeout=5.0)
        assert message is not None, f"only {count} of {wanted} events arrived"
        if message["type"] != "pmessage":
            continue
        envelope = json.loads(message["data"])
        body = json.loads(base64.b64decode(envelope["body"]))
        got.append((message["channel"].rsplit("/", 1)[-1], body))
        count += len(body) if isinstance(body, list) else 1
        if count >= wanted:
            return got
    raise AssertionError("too many messages")


def test_fast_path_sends_the_task_sent_events_send_task_sends_a_thousand_per_message(
        app: Celery, redis_client: redis.Redis) -> None:
    pubsub = redis_client.pubsub()
    pubsub.psubscribe(own_events(redis_client))
    assert pubsub.get_message(timeout=5.0)["type"] == "psubscribe"
    send_one_with_celery(app, "batch_abc", "by-celery")
    ids = [f"line-{i}" for i in range(2_497)] + ['say "hi"', "back\\slash", "질문-1"]
    assert send_jobs(app, "batch_abc", [(custom_id, QUEUE) for custom_id in ids]) == 2_500
    messages = published_events(pubsub, 2_501)
    pubsub.close()

    (celery_key, celery_event), *fast = messages
    assert celery_key == "task.sent" and celery_event["type"] == "task-sent"
    assert [(key, len(body)) for key, body in fast] == \
        [("task.multi", 1_000), ("task.multi", 1_000), ("task.multi", 500)]
    events = [event for _, body in fast for event in body]
    stored = [json.loads(raw) for raw in reversed(redis_client.lrange(QUEUE, 0, -2))]
    assert [event["uuid"] for event in events] == [m["headers"]["id"] for m in stored]
    assert [event["args"] for event in events] == \
        [m["headers"]["argsrepr"] for m in stored] == \
        [saferepr(("batch_abc", custom_id)) for custom_id in ids]
    varying = {"uuid", "root_id", "args", "timestamp", "clock"}
    assert all(event["root_id"] == event["uuid"] for event in events)
    assert all({k: v for k, v in event.items() if k not in varying}
               == {k: v for k, v in celery_event.items() if k not in varying}
               for event in events)
    assert len({event["clock"] for event in events}) == 2_500  # each event ticks the clock


def test_no_sent_events_when_task_send_sent_event_is_off(app: Celery,
                                                         redis_client: redis.Redis) -> None:
    app.conf.task_send_sent_event = False
    pubsub = redis_client.pubsub()
    pubsub.psubscribe(own_events(redis_client))
    assert pubsub.get_message(timeout=5.0)["type"] == "psubscribe"
    send_jobs(app, "batch_abc", [("a", QUEUE)])
    send_one_with_celery(app, "batch_abc", "b")
    assert pubsub.get_message(timeout=0.5) is None
    pubsub.close()
    assert redis_client.llen(QUEUE) == 2


def own_events(client: redis.Redis) -> str:
    """The pattern of this test database's Celery event channels (kombu names them
    `/<db>.celeryev/...`): other users of the same Redis publish on their own."""
    return f"/{client.connection_pool.connection_kwargs.get('db', 0)}.celeryev*"
