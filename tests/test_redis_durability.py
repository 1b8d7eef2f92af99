"""The durability verdict from INFO (and CONFIG GET where allowed), from a table of servers."""

from __future__ import annotations

import pytest

from corral.redis_durability import HELD_IN_REDIS, judge, read_durability

AOF_ON = {"aof_enabled": 1, "rdb_changes_since_last_save": 12, "rdb_last_bgsave_status": "ok"}
AOF_OFF = {"aof_enabled": 0, "rdb_changes_since_last_save": 12, "rdb_last_bgsave_status": "ok"}
NO_LIMIT = {"maxmemory": 0, "maxmemory_policy": "noeviction"}
EVERYSEC_NO_SNAPSHOTS = {"appendfsync": "everysec", "save": ""}
SNAPSHOTS = {"appendfsync": "everysec", "save": "3600 1 300 100 60 10000"}
CONFIG_DISABLED: dict[str, str | None] = {"appendfsync": None, "save": None}


@pytest.mark.parametrize(("persistence", "memory", "config", "summary", "warning", "error"), [
    pytest.param(AOF_ON, NO_LIMIT, EVERYSEC_NO_SNAPSHOTS,
                 "AOF on, appendfsync everysec; RDB snapshots off; maxmemory no limit, "
                 "maxmemory-policy noeviction", None, None, id="aof-everysec"),
    pytest.param(AOF_ON, NO_LIMIT, {"appendfsync": "always", "save": "3600 1"},
                 "AOF on, appendfsync always; RDB snapshots (save 3600 1)", None, None,
                 id="aof-always-and-rdb"),
    pytest.param(AOF_OFF, NO_LIMIT, SNAPSHOTS,
                 "AOF off; RDB snapshots (save 3600 1 300 100 60 10000)",
                 "RDB snapshots only (no AOF): a Redis crash loses every write since the last "
                 "snapshot", None, id="rdb-only"),
    pytest.param(AOF_OFF, NO_LIMIT, EVERYSEC_NO_SNAPSHOTS,
                 "AOF off; RDB snapshots off", "no persistence: a "
                 "Redis crash or restart loses queued jobs, in-flight leases", None,
                 id="nothing"),
    pytest.param(AOF_ON, {"maxmemory": 512 * 2**20, "maxmemory_policy": "allkeys-lru"},
                 EVERYSEC_NO_SNAPSHOTS, "maxmemory 512 MiB, maxmemory-policy allkeys-lru", None,
                 "maxmemory-policy allkeys-lru lets Redis evict keys", id="allkeys-lru"),
    pytest.param(AOF_OFF, {"maxmemory": 2**30, "maxmemory_policy": "volatile-ttl"},
                 EVERYSEC_NO_SNAPSHOTS, "maxmemory 1,024 MiB, maxmemory-policy volatile-ttl",
                 "no persistence", "maxmemory-policy volatile-ttl lets Redis evict keys",
                 id="volatile-ttl-and-nothing"),
    pytest.param(AOF_ON, {"maxmemory": 2**30, "maxmemory_policy": "noeviction"},
                 EVERYSEC_NO_SNAPSHOTS, "maxmemory 1,024 MiB, maxmemory-policy noeviction",
                 None, None, id="noeviction-with-a-limit"),
    pytest.param(AOF_ON, NO_LIMIT, CONFIG_DISABLED,
                 "AOF on, appendfsync unknown (CONFIG disabled); RDB snapshots unknown (CONFIG "
                 "disabled)", None, None, id="config-disabled-aof-on"),
    pytest.param(AOF_OFF, NO_LIMIT, {},
                 "AOF off; RDB snapshots unknown (CONFIG disabled)",
                 "no AOF and the RDB schedule is unknown: a Redis crash loses every write since "
                 "its last snapshot, and with no snapshots everything", None,
                 id="config-disabled-aof-off"),
    # INFO as text (another client's parsing) and fields a proxy left out.
    pytest.param({"aof_enabled": "1"}, {"maxmemory": "junk", "maxmemory_policy": "noeviction"},
                 EVERYSEC_NO_SNAPSHOTS, "AOF on, appendfsync everysec", None, None,
                 id="strings-and-junk"),
    pytest.param({}, {}, EVERYSEC_NO_SNAPSHOTS, "AOF off; RDB snapshots off; maxmemory no "
                 "limit, maxmemory-policy unknown", "no persistence", None, id="empty-info"),
])
def test_the_verdict_follows_aof_snapshots_and_the_eviction_policy(
        persistence: dict, memory: dict, config: dict, summary: str, warning: str | None,
        error: str | None) -> None:
    durability = judge(persistence, memory, config)
    assert summary in durability.summary
    if warning is None:
        assert durability.warning is None
    else:
        assert durability.warning is not None and warning in durability.warning
    if error is None:
        assert durability.error is None
    else:
        assert durability.error is not None and error in durability.error
        assert "set maxmemory-policy noeviction" in durability.error


def test_the_no_persistence_warning_names_everything_a_crash_loses() -> None:
    warning = judge(AOF_OFF, NO_LIMIT, EVERYSEC_NO_SNAPSHOTS).warning
    assert warning is not None and HELD_IN_REDIS in warning
    for lost in ("queued jobs", "in-flight leases", "bucket levels", "counters"):
        assert lost in warning
    # ... and that it loses no finished line: those are in the record store.
    assert "no finished line" in warning and "record store" in warning


def test_a_real_server_is_read_with_info(redis_url: str, redis_client) -> None:
    aof = redis_client.info("persistence")["aof_enabled"]
    policy = redis_client.info("memory")["maxmemory_policy"]
    durability = read_durability(redis_url)
    assert durability.summary.startswith("AOF on" if aof else "AOF off")
    assert durability.summary.endswith(f"maxmemory-policy {policy}")
