"""ScriptPipeline (script calls share one round trip and survive a server that lost them),
and the feeder's scripts."""

from __future__ import annotations

import redis

from corral import lua_scripts
from corral.celery_app import create_app
from corral.config import load_config
from corral.feeder import Feeder
from corral.lua_scripts import ScriptPipeline
from corral.redis_keys import BatchKeys
from corral.store import RecordRow, Store
from tests.store_batches import open_test_batch
from workers.reconciler import job_arguments

QUEUE = "corral.small"


def test_calls_run_in_order_and_reload_after_a_script_flush(redis_client) -> None:
    incr = redis_client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    echo = redis_client.register_script("return ARGV[1]")
    assert incr(keys=["n"], args=[1]) == 1  # loaded once, as workers do
    redis_client.script_flush()  # a Redis restart forgets every script

    pipe = ScriptPipeline(redis_client)
    pipe.call(incr, ["n"], [5])
    pipe.call(echo, [], ["done"])
    assert pipe.execute() == [6, "done"]
    assert redis_client.get("n") == "6"  # each call ran exactly once

    pipe = ScriptPipeline(redis_client)
    pipe.call(incr, ["n"], [1])
    assert pipe.execute() == [7]


def test_store_bodies_stores_each_request_of_a_chunk_and_says_how_many(redis_client) -> None:
    store_bodies = lua_scripts.register(redis_client, "store_bodies")
    redis_client.hset("meta", "id", "batch_1")
    redis_client.hset("bodies", "a", "{1}")  # fed before: a chunk fed again stores it again
    assert store_bodies(keys=["bodies", "meta"], args=["a", "{1}", "b", "{2}", "c", "{3}"]) == 3
    assert redis_client.hgetall("bodies") == {"a": "{1}", "b": "{2}", "c": "{3}"}


def test_a_feeder_never_stores_bodies_for_a_batch_redis_lost(redis_client) -> None:
    store_bodies = lua_scripts.register(redis_client, "store_bodies")
    feed_cursor = lua_scripts.register(redis_client, "feed_cursor")
    assert store_bodies(keys=["bodies", "meta"], args=["a", "{1}"]) is None
    assert feed_cursor(keys=["meta", "stats"], args=["small", 1, 10, 1]) == 0
    assert redis_client.dbsize() == 0


def test_a_chunk_fed_again_stores_and_sends_only_the_lines_that_have_not_ended(
        redis_client: redis.Redis, redis_url: str, store: Store, write_config) -> None:
    app = create_app("corral-test", broker_url=redis_url)
    app.conf.task_send_sent_event = False
    batch_id = open_test_batch(redis_client, store, {"a": "small", "b": "small", "c": "small"})
    keys = BatchKeys(batch_id)

    def feeder() -> Feeder:
        return Feeder(redis_client, store, app, load_config(write_config()), batch_id,
                      depth=100)

    try:
        assert feeder().feed_once() == 3
        # "a" ends: its record is in the store, and its request left Redis with its end.
        store.records.write([RecordRow(batch_id, "a", {"custom_id": "a"})])
        redis_client.hdel(keys.bodies, "a")
        # A feeder that took over before the cursor moved sends the chunk again.
        redis_client.hset(keys.meta, mapping={"fed:small": 0, "fed_line:small": 0})
        assert feeder().feed_once() == 2
    finally:
        app.close()
    assert sorted(redis_client.hkeys(keys.bodies)) == ["b", "c"]
    messages = [str(message) for message in redis_client.lrange(QUEUE, 0, -1)]
    queued = [custom_id for _, custom_id in job_arguments(messages)]
    # b and c get a second message: their lease, or their end, makes it a no-op.
    assert sorted(queued) == ["a", "b", "b", "c", "c"]
    assert redis_client.hget(keys.meta, "fed_line:small") == "3"
