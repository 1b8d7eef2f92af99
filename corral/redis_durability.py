"""What a Redis keeps across a crash and whether it may evict corral's keys (INFO first)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from corral.errors import RedisUnavailableError
from corral.redis_client import connect, unavailable_message

# The setting that lets workers start on an evicting Redis anyway.
OVERRIDE = "CORRAL_ALLOW_EVICTING_REDIS"
SAFE_POLICY = "noeviction"
CONFIG_DISABLED = "unknown (CONFIG disabled)"
# Everything corral keeps in Redis: what is in flight (the records are in the record store).
HELD_IN_REDIS = ("queued jobs, in-flight leases, rate-limit bucket levels and live counters "
                 "(no finished line: the records are in the record store, and the lines in "
                 "flight are queued again from it, their running calls possibly made twice)")


@dataclass(frozen=True)
class Durability:
    """The verdict on one Redis.

    Attributes:
        summary: AOF and its fsync policy, the RDB snapshot schedule, maxmemory and its policy.
        warning: what a Redis crash would lose, when it keeps no log of every write.
        error: why its maxmemory policy is unsafe for corral (it may evict keys).
    """

    summary: str
    warning: str | None = None
    error: str | None = None


def judge(persistence: Mapping[str, Any], memory: Mapping[str, Any],
          config: Mapping[str, str | None]) -> Durability:
    """The verdict from INFO's persistence and memory sections and what CONFIG GET said.

    INFO shows whether AOF is on but neither its fsync policy nor the RDB `save` schedule;
    those come from CONFIG GET, which managed Redis often refuses.

    Args:
        persistence: INFO persistence (`aof_enabled`, `rdb_*`).
        memory: INFO memory (`maxmemory` in bytes, `maxmemory_policy`).
        config: CONFIG GET's value of `appendfsync` and `save`; None (or absent) where
            CONFIG was refused. An empty `save` means no snapshots.
    """
    aof = _as_int(persistence.get("aof_enabled")) == 1
    fsync, save = config.get("appendfsync"), config.get("save")
    policy = str(memory.get("maxmemory_policy", "unknown"))
    maxmemory_bytes = _as_int(memory.get("maxmemory"))
    limit = f"{maxmemory_bytes / 2**20:,.0f} MiB" if maxmemory_bytes else "no limit"
    rdb = ("RDB snapshots " + CONFIG_DISABLED if save is None
           else f"RDB snapshots (save {save})" if save.strip() else "RDB snapshots off")
    summary = (f"AOF {'on, appendfsync ' + (fsync or CONFIG_DISABLED) if aof else 'off'}; "
               f"{rdb}; maxmemory {limit}, maxmemory-policy {policy}")

    # With AOF every write is logged; the fsync policy in the summary says how often to disk.
    warning = None if aof else _lost_in_a_crash(save)
    error = None
    if policy.startswith(("allkeys-", "volatile-")):
        at = (f"now {limit}" if maxmemory_bytes
              else "none set now; setting one turns eviction on")
        error = (f"maxmemory-policy {policy} lets Redis evict keys when it reaches maxmemory "
                 f"({at}), silently dropping {HELD_IN_REDIS}; set maxmemory-policy "
                 f"{SAFE_POLICY}")
    return Durability(summary, warning, error)


def _lost_in_a_crash(save: str | None) -> str:
    """The warning for a Redis without AOF, given its RDB `save` schedule (None: unknown)."""
    if save is None:
        return (f"no AOF and the RDB schedule is unknown: a Redis crash loses every write since "
                f"its last snapshot, and with no snapshots everything: {HELD_IN_REDIS}")
    if save.strip():
        return (f"RDB snapshots only (no AOF): a Redis crash loses every write since the last "
                f"snapshot: {HELD_IN_REDIS} written since then")
    return (f"no persistence: a Redis crash or restart loses "
            f"{HELD_IN_REDIS}; turn on AOF (appendonly yes, appendfsync everysec)")


def read_durability(url: str) -> Durability:
    """Ask the Redis at `url` (INFO, and CONFIG GET where allowed) and judge what it said.

    Raises:
        RedisUnavailableError: the server does not answer or refuses the credentials.
    """
    client = connect(url)
    try:
        try:
            persistence, memory = client.info("persistence"), client.info("memory")
        except redis.ResponseError as err:  # e.g. an ACL user without INFO
            return Durability(f"unknown (INFO refused: {err})",
                              warning="cannot tell what a Redis crash would lose or whether "
                                      "Redis may evict keys: allow INFO for corral's user")
        config = {name: _config_get(client, name) for name in ("appendfsync", "save")}
    except redis.RedisError as err:
        raise RedisUnavailableError(unavailable_message(url, err)) from err
    finally:
        client.close()
    return judge(persistence, memory, config)


def _config_get(client: redis.Redis, name: str) -> str | None:
    try:
        value = client.config_get(name).get(name)
    except redis.ResponseError:  # CONFIG renamed away or not allowed
        return None
    return None if value is None else str(value)


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0

