"""Lua scripts shipped as package data, registered once per Redis client."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

# A line `-- include: <name>` stands for the text of `<name>.lua` of the same package: Redis
# runs each script on its own, so scripts share code by inlining it.
_INCLUDE = re.compile(r"^-- include: (\w+)$", re.MULTILINE)


@cache
def script_source(name: str, package: str = "corral") -> str:
    """The text of `<package>/lua/<name>.lua`, with its includes inlined."""
    text = resources.files(package).joinpath("lua", f"{name}.lua").read_text("utf-8")
    return _INCLUDE.sub(lambda match: script_source(match.group(1), package), text)


def register(client: redis.Redis, name: str, package: str = "corral") -> Script:
    """A `Script` bound to `client`; calling it uses EVALSHA and reloads on NOSCRIPT."""
    return client.register_script(script_source(name, package))


# One call of a script: the `Script`, its keys and its arguments.
ScriptCall = tuple[Script, Sequence[Any], Sequence[Any]]


class ScriptCalls:
    """Script calls gathered to go to Redis together, in order, in one round trip."""

    def __init__(self) -> None:
        self.calls: list[ScriptCall] = []

    def call(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue one call of `script`."""
        self.calls.append((script, keys, args))


class ScriptPipeline(ScriptCalls):
    """Several script calls in one round trip, without redis-py's per-execute SCRIPT EXISTS.

    redis-py checks every script of a pipeline with SCRIPT EXISTS before each execute, an
    extra round trip; here each call is a plain EVALSHA, and a call the server refuses with
    NOSCRIPT (after a restart or SCRIPT FLUSH) loads its script and runs again on its own.
    """

    def __init__(self, client: redis.Redis) -> None:
        super().__init__()
        self._client = client

    def execute(self) -> list[Any]:
        """Send every queued call; returns their results in order, a call's error in its place
        (its caller decides what to raise). A lost connection raises."""
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args in self.calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = pipe.execute(raise_on_error=False)
        for index, result in enumerate(results):
            if isinstance(result, NoScriptError):
                script, keys, args = self.calls[index]
                try:
                    results[index] = script(keys=keys, args=args)  # loads it, then runs it
                except redis.ResponseError as err:
                    results[index] = err
        return results
