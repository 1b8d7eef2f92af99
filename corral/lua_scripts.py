"""Lua scripts shipped as package data, registered once per Redis client."""

from __future__ import annotations

import re
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


class ScriptPipeline:
    """Several script calls in one round trip, without redis-py's per-execute SCRIPT EXISTS.

    redis-py checks every script of a pipeline with SCRIPT EXISTS before each execute, an
    extra round trip; here each call is a plain EVALSHA, and a call the server refuses with
    NOSCRIPT (after a restart or SCRIPT FLUSH) loads its script and runs again on its own.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._pipe = client.pipeline(transaction=False)
        self._calls: list[tuple[Script, list[Any], list[Any]]] = []

    def call(self, script: Script, keys: list[Any], args: list[Any]) -> None:
        """Queue one call of `script`."""
        self._pipe.evalsha(script.sha, len(keys), *keys, *args)
        self._calls.append((script, keys, args))

    def execute(self) -> list[Any]:
        """Send every queued call; returns their results in order."""
        results = self._pipe.execute(raise_on_error=False)
        for index, result in enumerate(results):
            if isinstance(result, NoScriptError):
                script, keys, args = self._calls[index]
                results[index] = script(keys=keys, args=args)  # loads it, then runs it
            elif isinstance(result, Exception):
                raise result
        return results
