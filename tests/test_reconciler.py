"""The reconciler on a real Redis and record store: mid-batch, with a busy fleet, it sends
again only lines that two sweeps in a row found in flight with no record, no lease and no
message."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from corral.celery_app import create_app
from corral.config import CorralConfig, load_config
from corral.jobs import send_jobs
from corral.records import result_record
from corral.redis_keys import BatchKeys
from corral.store import RecordRow, Store
from tests.store_batches import feed, numbered, open_test_batch
from workers.reconciler import KOMBU_UNACKED_KEY, LOCK_KEY, Reconciler, job_arguments

QUEUE = "corral.small"


@pytest.fixture()
def app(redis_client: redis.Redis, redis_url: str) -> Iterator[Celery]:
    celery_app = create_app("corral-test", broker_url=redis_url)
    celery_app.conf.task_send_sent_event = False
    yield celery_app
    celery_app.close()


@pytest.fixture()
def config(write_config) -> CorralConfig:
    return load_config(write_config())


def fed_lines(client: redis.Redis, store: Store, count: int) -> tuple[str, BatchKeys]:
    """A batch of `count` lines of "small" (small-0, small-1, ...), every one fed: its
    request in Redis."""
    batch_id = open_test_batch(client, store, numbered({"small": count}))
    feed(client, store, batch_id)
    return batch_id, BatchKeys(batch_id)


def take_one(client: redis.Redis) -> None:
    """What a worker's consumer does with a message: from the queue into the unacked hash."""
    message = client.rpop(QUEUE)
    assert isinstance(message, str)
    client.hset(KOMBU_UNACKED_KEY, "tag-1", json.dumps([json.loads(message), "", QUEUE]))


def sweep(reconciler: Reconciler, client: redis.Redis) -> int:
    client.delete(LOCK_KEY)  # the next interval's sweep, without waiting for it
    return reconciler.sweep()


def queued_ids(client: redis.Redis) -> list[str]:
    messages = [str(message) for message in client.lrange(QUEUE, 0, -1)]
    return [custom_id for _, custom_id in job_arguments(messages)]


def test_only_lines_adrift_in_two_sweeps_are_sent_while_the_fleet_is_busy(
        redis_client: redis.Redis, store: Store, app: Celery, config: CorralConfig) -> None:
    batch_id, keys = fed_lines(redis_client, store, 6)
    # small-0 has its record, but its worker died before Redis dropped its request.
    store.records.write([RecordRow(batch_id, "small-0",
                                   result_record("small-0", request_id="r", body={}))])
    redis_client.set(keys.lease("small-1"), "worker")  # running now
    send_jobs(app, batch_id, [("small-2", QUEUE), ("small-3", QUEUE)])  # queued ...
    take_one(redis_client)  # ... and small-2 taken by a worker: the unacked hash is busy
    # small-4 and small-5 have no record, no lease and no message.
    reconciler = Reconciler(redis_client, store, app, config, interval_s=30,
                            broker_is_redis=True)
    assert sweep(reconciler, redis_client) == 0  # a first sighting may be a line in transit
    assert redis_client.smembers(keys.suspects) == {"small-4", "small-5"}
    assert not redis_client.hexists(keys.bodies, "small-0")  # let go of, never suspected
    # ... and counted as it would have been: the batch's live counts agree with the store.
    assert redis_client.hget(keys.meta, "completed") == "1"
    assert redis_client.hget(keys.stats, "small|completed") == "1"
    send_jobs(app, batch_id, [("small-5", QUEUE)])  # small-5 was in transit: it arrives
    assert sweep(reconciler, redis_client) == 1
    assert sorted(queued_ids(redis_client)) == ["small-3", "small-4", "small-5"]
    assert sweep(reconciler, redis_client) == 0  # small-4 has its message again
    assert redis_client.smembers(keys.suspects) == set()
    assert redis_client.hlen(keys.bodies) == 5  # only the ended line's request was dropped


def test_an_ended_batch_is_not_swept(redis_client: redis.Redis, store: Store, app: Celery,
                                     config: CorralConfig) -> None:
    batch_id, keys = fed_lines(redis_client, store, 2)
    store.records.write([RecordRow(batch_id, custom_id,
                                   result_record(custom_id, request_id="r", body={}))
                         for custom_id in ("small-0", "small-1")])  # it ends in the store
    row = store.batches.get(batch_id)
    assert row is not None and row["status"] == "completed"
    reconciler = Reconciler(redis_client, store, app, config, interval_s=30,
                            broker_is_redis=True)
    assert sweep(reconciler, redis_client) == sweep(reconciler, redis_client) == 0
    assert redis_client.llen(QUEUE) == 0
    assert not redis_client.exists(keys.suspects)
    assert redis_client.hlen(keys.bodies) == 2  # left to the batch's own end in Redis


def test_a_line_adrift_is_sent_again_even_when_redis_counts_ran_ahead(
        redis_client: redis.Redis, store: Store, app: Celery, config: CorralConfig) -> None:
    # A count sent twice (a reply lost to a Redis restart) ended the batch in Redis early;
    # the store, which counts each record once, still has it open with small-0 unfinished.
    _, keys = fed_lines(redis_client, store, 1)
    redis_client.hset(keys.meta, mapping={"status": "completed", "completed": "1"})
    reconciler = Reconciler(redis_client, store, app, config, interval_s=30,
                            broker_is_redis=True)
    assert sweep(reconciler, redis_client) == 0
    assert sweep(reconciler, redis_client) == 1
    assert queued_ids(redis_client) == ["small-0"]


def test_messages_that_are_not_corral_jobs_are_ignored() -> None:
    assert list(job_arguments(["not json", json.dumps({"headers": {"task": "other"}}),
                               json.dumps([{"headers": {"task": "corral.run_job"},
                                            "body": "!!"}, "", "q"])])) == []
