"""GroupCommit: callers that come during a round trip share the next; each gets its own answer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from corral.group_commit import GroupCommit

INCR_SOURCE = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL_SOURCE = "return redis.error_reply('refused: ' .. ARGV[1])"
PAUSE_MS = 60_000


@pytest.fixture()
def client(redis_url: str, redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """A client that does not retry, so a killed connection fails its round trip."""
    single_try = redis.Redis.from_url(redis_url, decode_responses=True,
                                      retry=Retry(NoBackoff(), 0))
    yield single_try
    redis_client.execute_command("CLIENT", "UNPAUSE")
    single_try.close()


def wait_for(state: Callable[[], bool]) -> None:
    """Wait until `state()` holds: another thread reaches a point, no timing assumed."""
    reached = threading.Event()
    for _ in range(10_000):
        if state():
            return
        reached.wait(0.001)
    raise AssertionError("state not reached in 10 s")


class Callers:
    """Threads that each run one caller's calls, keeping what each got."""

    def __init__(self, group: GroupCommit) -> None:
        self._group = group
        self.threads: list[threading.Thread] = []
        self.outcomes: dict[str, Any] = {}

    def start(self, name: str, calls: list[Any]) -> None:
        def run() -> None:
            try:
                self.outcomes[name] = self._group.run(calls)
            except Exception as err:
                self.outcomes[name] = err

        thread = threading.Thread(target=run, name=name)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=10)
            assert not thread.is_alive(), f"{thread.name} still waits"


def blocked_clients(admin: redis.Redis) -> int:
    """Connections of this test's database whose command the server holds back (CLIENT
    PAUSE); other users' blocking reads (a worker's BRPOP) are on their own databases."""
    db = str(admin.connection_pool.connection_kwargs.get("db", 0))
    return sum("b" in entry["flags"] and entry["db"] == db for entry in admin.client_list())


def test_a_lone_caller_gets_its_results_in_order(client: redis.Redis) -> None:
    incr = client.register_script(INCR_SOURCE)
    group = GroupCommit(client)

    assert group.run([(incr, ["n"], [2]), (incr, ["n"], [3]), (incr, ["m"], [1])]) == [2, 5, 1]
    assert group.round_trips == 1


def test_a_failed_call_fails_only_its_caller(client: redis.Redis) -> None:
    incr = client.register_script(INCR_SOURCE)
    fail = client.register_script(FAIL_SOURCE)
    group = GroupCommit(client)

    with pytest.raises(redis.ResponseError, match="refused: mine"):
        group.run([(incr, ["n"], [1]), (fail, [], ["mine"])])

    assert client.get("n") == "1"  # the calls before it ran
    assert group.run([(incr, ["n"], [1])]) == [2]


def test_callers_during_a_round_trip_share_the_next(client: redis.Redis,
                                                    redis_client: redis.Redis) -> None:
    incr = client.register_script(INCR_SOURCE)
    fail = client.register_script(FAIL_SOURCE)
    group = GroupCommit(client)
    callers = Callers(group)
    redis_client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")

    callers.start("first", [(incr, ["first"], [1])])
    wait_for(lambda: blocked_clients(redis_client) == 1)
    for name in ("a", "b", "c"):
        callers.start(name, [(incr, [name], [10]), (incr, [name], [5])])
    callers.start("bad", [(incr, ["bad"], [1]), (fail, [], ["bad"])])
    wait_for(lambda: group.waiting == 4)
    redis_client.execute_command("CLIENT", "UNPAUSE")
    callers.join()

    assert callers.outcomes["first"] == [1]
    assert {name: callers.outcomes[name] for name in "abc"} == {
        "a": [10, 15], "b": [10, 15], "c": [10, 15]}
    assert isinstance(callers.outcomes["bad"], redis.ResponseError)
    assert str(callers.outcomes["bad"]) == "refused: bad"
    assert group.round_trips == 2  # the first caller's, then one for the four that waited
    assert group.waiting == 0


def test_a_failed_round_trip_fails_each_of_its_callers_and_not_the_next(
        client: redis.Redis, redis_client: redis.Redis) -> None:
    incr = client.register_script(INCR_SOURCE)
    client.set("warm", 1)  # the script is loaded and a connection is open before the pause
    incr(keys=["warm"], args=[1])
    group = GroupCommit(client)
    callers = Callers(group)
    redis_client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")

    callers.start("first", [(incr, ["first"], [1])])
    wait_for(lambda: blocked_clients(redis_client) == 1)
    callers.start("second", [(incr, ["second"], [1])])
    callers.start("third", [(incr, ["third"], [1])])
    wait_for(lambda: group.waiting == 2)
    redis_client.client_kill_filter(_type="normal", skipme=True)  # the round trip in flight
    wait_for(lambda: group.waiting == 0 and blocked_clients(redis_client) == 1)
    redis_client.client_kill_filter(_type="normal", skipme=True)  # and the next one
    wait_for(lambda: len(callers.outcomes) == 3)
    redis_client.execute_command("CLIENT", "UNPAUSE")
    callers.join()

    assert all(isinstance(outcome, redis.ConnectionError)
               for outcome in callers.outcomes.values()), callers.outcomes
    assert callers.outcomes["second"] is not callers.outcomes["third"]
    assert group.run([(incr, ["after"], [7])]) == [7]  # the group goes on
    assert redis_client.mget("first", "second", "third") == [None, None, None]


class ExpectedCallers(Callers):
    """Callers that each mark themselves expected, then call when told (or leave without)."""

    def __init__(self, group: GroupCommit) -> None:
        super().__init__(group)
        self.go: dict[str, threading.Event] = {}
        self._group = group

    def expect(self, name: str, calls: list[Any] | None) -> None:
        go = self.go[name] = threading.Event()
        inside = threading.Event()

        def run() -> None:
            with self._group.expecting():
                inside.set()
                go.wait(10)
                if calls is not None:
                    self.outcomes[name] = self._group.run(calls)

        thread = threading.Thread(target=run, name=name)
        thread.start()
        self.threads.append(thread)
        inside.wait(10)


# A delay no test reaches: a round trip that waited it out would fail the test's 10 s joins.
LONG_DELAY_S = 600.0


def test_a_delayed_round_trip_waits_for_every_expected_caller(client: redis.Redis) -> None:
    incr = client.register_script(INCR_SOURCE)
    group = GroupCommit(client, delay_s=LONG_DELAY_S)
    callers = ExpectedCallers(group)
    for name in ("a", "b", "c"):
        callers.expect(name, [(incr, ["n"], [1])])

    callers.go["a"].set()
    wait_for(lambda: group.waiting == 1)
    callers.go["b"].set()
    wait_for(lambda: group.waiting == 2)
    assert group.round_trips == 0 and "a" not in callers.outcomes  # still waiting for c
    callers.go["c"].set()
    callers.join()

    assert group.round_trips == 1
    assert sorted(callers.outcomes.values()) == [[1], [2], [3]]


def test_a_delayed_round_trip_goes_when_an_expected_caller_leaves_without_calling(
        client: redis.Redis) -> None:
    incr = client.register_script(INCR_SOURCE)
    group = GroupCommit(client, delay_s=LONG_DELAY_S)
    callers = ExpectedCallers(group)
    callers.expect("caller", [(incr, ["n"], [1])])
    callers.expect("leaver", None)

    callers.go["caller"].set()
    wait_for(lambda: group.waiting == 1)
    assert group.round_trips == 0
    callers.go["leaver"].set()
    callers.join()

    assert callers.outcomes == {"caller": [1]}
    assert group.round_trips == 1


def test_a_caller_nobody_expects_never_waits_for_the_delay(client: redis.Redis) -> None:
    incr = client.register_script(INCR_SOURCE)
    group = GroupCommit(client, delay_s=LONG_DELAY_S)
    callers = Callers(group)

    callers.start("alone", [(incr, ["n"], [1])])
    callers.join()

    assert callers.outcomes == {"alone": [1]}
    with group.expecting():  # expected, but the only one: nobody else to wait for
        assert group.run([(incr, ["n"], [1])]) == [2]
