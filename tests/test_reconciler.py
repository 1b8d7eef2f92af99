"""The reconciler on a real Redis: mid-batch, with a busy fleet, it sends again only lines
that two sweeps in a row found with no record, no lease and no message."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from corral.celery_app import create_app
from corral.config import CorralConfig, load_config
from corral.jobs import send_jobs
from corral.redis_keys import BatchKeys
from corral.stored_job import stored_job
from producer.batches import create_batch
from workers.reconciler import KOMBU_UNACKED_KEY, LOCK_KEY, Reconciler, job_arguments

QUEUE = "corral.small"
BODY = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture()
def app(redis_client: redis.Redis, redis_url: str) -> Iterator[Celery]:
    celery_app = create_app("corral-test", broker_url=redis_url)
    celery_app.conf.task_send_sent_event = False
    yield celery_app
    celery_app.close()


@pytest.fixture()
def config(write_config) -> CorralConfig:
    return load_config(write_config())


def stored_lines(client: redis.Redis, count: int) -> tuple[str, BatchKeys]:
    batch_id = create_batch(client, total=count, models=["small"], input_file="x")
    keys = BatchKeys(batch_id)
    client.hset(keys.bodies, mapping={
        f"l{i}": stored_job(tokens=10, model="small", default_max_tokens=8, body=BODY,
                            route=None, line=i) for i in range(count)})
    return batch_id, keys


def take_one(client: redis.Redis) -> None:
    """What a worker's consumer does with a message: from the queue into the unacked hash."""
    message = client.rpop(QUEUE)
    client.hset(KOMBU_UNACKED_KEY, "tag-1", json.dumps([json.loads(message), "", QUEUE]))


def sweep(reconciler: Reconciler, client: redis.Redis) -> int:
    client.delete(LOCK_KEY)  # the next interval's sweep, without waiting for it
    return reconciler.sweep()


def queued_ids(client: redis.Redis) -> list[str]:
    return [custom_id for _, custom_id in job_arguments(client.lrange(QUEUE, 0, -1))]


def test_only_lines_adrift_in_two_sweeps_are_sent_while_the_fleet_is_busy(
        redis_client: redis.Redis, app: Celery, config: CorralConfig) -> None:
    batch_id, keys = stored_lines(redis_client, 6)
    redis_client.hset(keys.outcomes, "l0", "{}")  # ended
    redis_client.set(keys.lease("l1"), "worker")  # running now
    send_jobs(app, batch_id, [("l2", QUEUE), ("l3", QUEUE)])  # queued ...
    take_one(redis_client)  # ... and l2 taken by a worker: the fleet's unacked hash is busy
    # l4 and l5 have no record, no lease and no message.
    reconciler = Reconciler(redis_client, app, config, interval_s=30, broker_is_redis=True)
    assert sweep(reconciler, redis_client) == 0  # a first sighting may be a line in transit
    assert redis_client.smembers(keys.suspects) == {"l4", "l5"}
    send_jobs(app, batch_id, [("l5", QUEUE)])  # l5 was only in transit: its message arrives
    assert sweep(reconciler, redis_client) == 1
    assert sorted(queued_ids(redis_client)) == ["l3", "l4", "l5"]
    assert sweep(reconciler, redis_client) == 0  # l4 has its message again
    assert redis_client.smembers(keys.suspects) == set()


def test_an_ended_batch_is_not_swept(redis_client: redis.Redis, app: Celery,
                                     config: CorralConfig) -> None:
    _, keys = stored_lines(redis_client, 2)
    redis_client.hset(keys.meta, "status", "cancelled")
    reconciler = Reconciler(redis_client, app, config, interval_s=30, broker_is_redis=True)
    assert sweep(reconciler, redis_client) == sweep(reconciler, redis_client) == 0
    assert redis_client.llen(QUEUE) == 0


def test_messages_that_are_not_corral_jobs_are_ignored() -> None:
    assert list(job_arguments(["not json", json.dumps({"headers": {"task": "other"}}),
                               json.dumps([{"headers": {"task": "corral.run_job"},
                                            "body": "!!"}, "", "q"])])) == []
