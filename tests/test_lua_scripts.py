"""ScriptPipeline: script calls share one round trip and survive a server that lost them."""

from __future__ import annotations

from corral.lua_scripts import ScriptPipeline


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


def test_a_chunk_fed_again_stores_and_sends_only_the_lines_that_have_not_ended(
        redis_client) -> None:
    from corral import lua_scripts

    store_bodies = lua_scripts.register(redis_client, "store_bodies")
    redis_client.hset("meta", "id", "batch_1")
    redis_client.hset("outcomes", "a", '{"custom_id": "a"}')  # ended before the re-feed
    stored = store_bodies(keys=["bodies", "outcomes", "meta"],
                          args=["a", "{1}", "b", "{2}", "c", "{3}"])
    assert stored == ["b", "c"]
    assert redis_client.hgetall("bodies") == {"b": "{2}", "c": "{3}"}


def test_a_feeder_never_stores_bodies_for_a_batch_redis_lost(redis_client) -> None:
    from corral import lua_scripts

    store_bodies = lua_scripts.register(redis_client, "store_bodies")
    feed_cursor = lua_scripts.register(redis_client, "feed_cursor")
    assert store_bodies(keys=["bodies", "outcomes", "meta"], args=["a", "{1}"]) is None
    assert feed_cursor(keys=["meta", "stats"], args=["small", 1, 10, 1]) == 0
    assert redis_client.dbsize() == 0
