"""An evicting Redis fails `corral check` (exit 3) and stops workers unless overridden."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import redis

from corral.embedded_redis import EmbeddedRedis
from producer.local_stack import worker_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture()
def private_redis() -> Iterator[EmbeddedRedis]:
    """A private redis-server with AOF (everysec) and noeviction, as compose runs it."""
    with EmbeddedRedis(appendonly=True) as server:
        yield server


def make_evicting(server: EmbeddedRedis) -> None:
    # Only ever on the private server: the shared Redis's config is never changed.
    with redis.Redis.from_url(server.url) as client:
        client.config_set("maxmemory-policy", "allkeys-lru")


def test_check_passes_on_aof_with_noeviction_and_fails_with_exit_3_on_allkeys_lru(
        private_redis: EmbeddedRedis, write_config, start_simulator, corral) -> None:
    config = write_config(f"{start_simulator().base_url}/v1")
    env = {"CORRAL_REDIS_URL": private_redis.url}

    safe = corral("check", config=config, env_extra=env)
    assert safe.returncode == 0, safe.stdout + safe.stderr
    assert ("redis durability: ok (AOF on, appendfsync everysec; RDB snapshots off; maxmemory "
            "no limit, maxmemory-policy noeviction)") in safe.stdout.splitlines()

    make_evicting(private_redis)
    evicting = corral("check", config=config, env_extra=env)
    assert evicting.returncode == 3, evicting.stdout + evicting.stderr
    line = next(x for x in evicting.stdout.splitlines() if x.startswith("redis durability"))
    assert line.startswith("redis durability: FAIL (AOF on")
    assert "maxmemory-policy allkeys-lru lets Redis evict keys" in line
    assert "CORRAL_ALLOW_EVICTING_REDIS=true" in line
    # Everything else was fine: the durability line alone made it exit 3.
    others = [x for x in evicting.stdout.splitlines() if x != line]
    assert all(": ok (" in x for x in others), others


def test_check_warns_and_exits_0_when_redis_keeps_nothing(write_config, start_simulator,
                                                         corral) -> None:
    config = write_config(f"{start_simulator().base_url}/v1")
    with EmbeddedRedis() as server:  # what `corral run` starts: no AOF, no snapshots
        done = corral("check", config=config, env_extra={"CORRAL_REDIS_URL": server.url})
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("redis durability"))
    assert line.startswith("redis durability: WARN (AOF off; RDB snapshots off;")
    assert "a Redis crash or restart loses queued jobs" in line


def test_a_worker_refuses_an_evicting_redis_and_starts_with_the_override(
        private_redis: EmbeddedRedis, write_config, corral_env, start_workers) -> None:
    make_evicting(private_redis)
    config = write_config()
    env = {"CORRAL_REDIS_URL": private_redis.url}

    refused = subprocess.run(
        worker_command(queues=["corral.small"], concurrency=1, name="evicting"),
        env={**corral_env, **env, "CORRAL_CONFIG": str(config)}, capture_output=True,
        text=True, timeout=60, check=False)
    assert refused.returncode == 3, refused.stderr[-3000:]
    message = [x for x in refused.stderr.splitlines() if x.startswith("corral worker:")]
    assert len(message) == 1, refused.stderr[-3000:]
    assert "maxmemory-policy allkeys-lru lets Redis evict keys" in message[0]
    assert "set CORRAL_ALLOW_EVICTING_REDIS=true to start anyway" in message[0]
    assert "Traceback" not in refused.stderr

    [worker] = start_workers(config, ["corral.small"],
                             env={**env, "CORRAL_ALLOW_EVICTING_REDIS": "true"})
    log = worker.log_path.read_text()
    assert "WARNING" in log and "starting anyway because CORRAL_ALLOW_EVICTING_REDIS is set" in log
    assert log.count("durability: AOF on, appendfsync everysec") == 1
