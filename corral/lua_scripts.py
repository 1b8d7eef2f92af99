"""Lua scripts shipped as package data, registered once per Redis client."""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script


@cache
def script_source(name: str, package: str = "corral") -> str:
    """The text of `<package>/lua/<name>.lua`."""
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text("utf-8")


def register(client: redis.Redis, name: str, package: str = "corral") -> Script:
    """A `Script` bound to `client`; calling it uses EVALSHA and reloads on NOSCRIPT."""
    return client.register_script(script_source(name, package))
