"""start_job.lua: a line starts and takes its call's rate-limit capacity in one round trip."""

from __future__ import annotations

import json
from typing import cast

import pytest
import redis

from corral import lua_scripts
from corral.config import RateScope
from corral.redis_keys import BatchKeys
from corral.stored_job import stored_job
from corral.tokens import prompt_tokens_bound
from workers.buckets import RedisBucketStore

SCOPE = RateScope(name="p:m", rpm=60, tpm=6000)
PERIOD_S = 60.0
BODY = {"model": "up-m", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 90}
TOKENS = 100  # 40 characters / 4 + 90
MAX_ATTEMPTS = 3


@pytest.fixture
def keys(redis_client: redis.Redis) -> BatchKeys:
    keys = BatchKeys("batch_1")
    redis_client.hset(keys.meta, mapping={"id": "batch_1", "status": "in_progress"})
    for custom_id in ("a", "b"):
        redis_client.hset(keys.bodies, custom_id, stored_job(
            tokens=TOKENS, model="m", default_max_tokens=50, body=BODY, route=None, line=1))
    return keys


def start(client: redis.Redis, keys: BatchKeys, custom_id: str, *,
          model: str | None = "m") -> list:
    """One start of `custom_id`, asking for the capacity of `model`'s scope (None: not)."""
    script = lua_scripts.register(client, "start_job", package="workers")
    script_keys = [keys.meta, keys.bodies, keys.attempts, keys.lease(custom_id), keys.inflight,
                   keys.reruns]
    args: list = [custom_id, 60_000, "test", f"req-{custom_id}", "v1"]
    if model is not None:
        key, limits = RedisBucketStore(client, period_s=PERIOD_S).inline_args(SCOPE)
        script_keys.append(key)
        args += [model, *limits, MAX_ATTEMPTS]
    return script(keys=script_keys, args=args)  # type: ignore[no-any-return]


def bucket(client: redis.Redis) -> dict[str, str]:
    key, _ = RedisBucketStore(client, period_s=PERIOD_S).inline_args(SCOPE)
    return cast(dict[str, str], client.hgetall(key))


def test_the_stored_job_starts_with_its_charge_model_and_bounds() -> None:
    text = stored_job(tokens=TOKENS, model="m", default_max_tokens=50, body=BODY,
                      route={"rule": "r"}, line=7)
    bound = prompt_tokens_bound(BODY)
    assert text.startswith(f'{{"tokens":100,"model":"m","input_max":{bound},"output_max":90,')
    assert json.loads(text) == {"tokens": 100, "model": "m", "input_max": bound,
                                "output_max": 90, "line": 7, "route": {"rule": "r"},
                                "body": BODY}


def test_a_start_marks_its_call_in_flight_with_what_prices_it(
        redis_client: redis.Redis, keys: BatchKeys) -> None:
    result = start(redis_client, keys, "a", model=None)
    assert result[:2] == ["run", 1] and result[4] == 1  # attempt 1, the line's call 1
    assert result[5] == 0  # no other call of the line in flight
    raw_mark = redis_client.hget(keys.inflight, "a#1")
    assert isinstance(raw_mark, str)
    mark = json.loads(raw_mark)
    assert mark.pop("started_ms") > 1_700_000_000_000
    assert mark == {"model": "m", "price_version": "v1", "client_request_id": "req-a",
                    "input_tokens_max": prompt_tokens_bound(BODY), "output_tokens_max": 90}


def test_after_a_rerun_attempts_count_from_one_and_call_numbers_go_on(
        redis_client: redis.Redis, keys: BatchKeys) -> None:
    redis_client.hset(keys.attempts, "a", 3)
    redis_client.hset(keys.reruns, "a", 3)  # `corral retry` after three calls
    result = start(redis_client, keys, "a", model=None)
    assert (result[1], result[4]) == (1, 4)
    assert redis_client.hexists(keys.inflight, "a#4")


def test_a_start_takes_one_request_and_the_lines_tokens_as_acquire_does(
        redis_client: redis.Redis, keys: BatchKeys) -> None:
    (verdict, attempt, raw_job, budgeted, _, _, tokens, requests_total, tokens_total, at_ms,
     requests_left, tokens_left) = start(redis_client, keys, "a")
    assert (verdict, attempt, budgeted, tokens) == ("run", 1, 0, TOKENS)
    assert json.loads(raw_job)["body"] == BODY
    assert (requests_total, tokens_total) == (1, TOKENS) and at_ms > 0
    assert (requests_left, tokens_left) == (59, 6000 - TOKENS)  # the levels it left
    # The same hash bucket.lua keeps: its own acquire counts on from there.
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    admission = store.acquire(SCOPE, 10).admission
    assert admission is not None
    assert (admission.requests_total, admission.tokens_total) == (2, TOKENS + 10)
    assert float(bucket(redis_client)["t"]) == pytest.approx(6000 - TOKENS - 10, abs=1)


def test_without_capacity_the_line_still_starts_and_nothing_is_taken(
        redis_client: redis.Redis, keys: BatchKeys) -> None:
    store = RedisBucketStore(redis_client, period_s=PERIOD_S)
    while store.acquire(SCOPE, 1).allowed:  # drain the request bucket
        pass
    before = bucket(redis_client)
    result = start(redis_client, keys, "a")
    assert result[:2] == ["run", 1] and len(result) == 6  # no admission: the worker waits
    assert redis_client.exists(keys.lease("a")) == 1
    assert bucket(redis_client)["nr"] == before["nr"] == "60"


@pytest.mark.parametrize("case", ["other model", "budgeted", "attempts used up",
                                  "job without its charge", "not asked"])
def test_no_capacity_is_taken_when_the_worker_must_decide_first(
        redis_client: redis.Redis, keys: BatchKeys, case: str) -> None:
    model: str | None = "m"
    if case == "other model":
        model = "n"  # the queue's model is not the job's (it was re-routed)
    elif case == "budgeted":
        redis_client.hset(keys.meta, "max_cost_nusd", 10**9)  # reserve the budget first
    elif case == "attempts used up":
        redis_client.hset(keys.attempts, "a", MAX_ATTEMPTS)
    elif case == "job without its charge":
        redis_client.hset(keys.bodies, "a", json.dumps({"model": "m", "body": BODY}))
    else:
        model = None
    result = start(redis_client, keys, "a", model=model)
    assert result[0] == "run" and len(result) == 6
    assert bucket(redis_client) == {}  # the scope's buckets were not touched


def test_a_start_says_when_an_earlier_call_of_the_line_is_still_marked(
        redis_client: redis.Redis, keys: BatchKeys) -> None:
    assert start(redis_client, keys, "a", model=None)[4:6] == [1, 0]
    redis_client.delete(keys.lease("a"))  # its worker died: call 1 stays marked in flight
    assert start(redis_client, keys, "a", model=None)[4:6] == [2, 1]
    redis_client.delete(keys.lease("a"))
    redis_client.hdel(keys.inflight, "a#1", "a#2")  # both settled
    assert start(redis_client, keys, "a", model=None)[4:6] == [3, 0]
    assert start(redis_client, keys, "b", model=None)[4:6] == [1, 0]  # only its own calls


def test_call_numbers_start_past_the_call_offset_of_a_rebuilt_batch(
        redis_client: redis.Redis, keys: BatchKeys) -> None:
    # Redis's part of the batch was rebuilt from the store once: its calls before the rebuild
    # are in the ledger as calls 1, 2, ..., so this Redis numbers its calls past them.
    redis_client.hset(keys.meta, "call_offset", 10_000)
    result = start(redis_client, keys, "a", model=None)
    assert (result[0], result[1], result[4], result[5]) == ("run", 1, 10_001, 0)
    assert redis_client.hkeys(keys.inflight) == ["a#10001"]
    assert redis_client.hget(keys.attempts, "a") == "1"
    redis_client.delete(keys.lease("a"))
    assert start(redis_client, keys, "a", model=None)[4:6] == [10_002, 1]


def test_a_line_without_its_request_takes_nothing(redis_client: redis.Redis,
                                                  keys: BatchKeys) -> None:
    # A line that ended has its record in the store and no request in Redis (end_line.lua
    # dropped it): a redelivered message finds nothing to run.
    redis_client.hdel(keys.bodies, "a")
    assert start(redis_client, keys, "a")[:2] == ["missing", 0]
    assert redis_client.exists(keys.lease("a")) == 0
    assert redis_client.hgetall(keys.attempts) == {}
    assert redis_client.hgetall(keys.inflight) == {}
    assert bucket(redis_client) == {}
    assert start(redis_client, keys, "b")[:2] == ["run", 1]  # its neighbour still runs


def test_a_batch_gone_from_redis_takes_nothing(redis_client: redis.Redis,
                                               keys: BatchKeys) -> None:
    redis_client.delete(keys.meta)  # deleted, or lost with Redis's data
    assert start(redis_client, keys, "a")[0] == "missing"
    assert redis_client.exists(keys.lease("a"), keys.attempts, keys.inflight) == 0
    assert bucket(redis_client) == {}
