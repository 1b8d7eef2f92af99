"""Real processes for integration tests: the simulator, Celery workers, and the corral CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from producer.local_stack import SIM_READY, ChildProcess, worker_command

pytestmark = pytest.mark.integration

# Short timings so retries and deadlines play out in seconds (checked against each other by
# corral.settings at every start).
FAST_TIMINGS = {
    "CORRAL_RETRY_BASE_DELAY_S": "0.05",
    "CORRAL_MAX_RETRY_DELAY_S": "0.5",
    "CORRAL_REQUEST_DEADLINE_S": "3",
    "CORRAL_VISIBILITY_TIMEOUT_S": "30",
    "CORRAL_MAX_ATTEMPTS": "4",
    "CORRAL_MAX_CAPACITY_WAIT_S": "10",
    "CORRAL_RECONCILE_INTERVAL_S": "2",
    "CORRAL_FEED_LOOK_S": "0.5",
}
SIM_KEY = "sk-sim-test-key"
FLOWER_AUTH = ("corral", "flower-test-pass")
FLOWER_READY = re.compile(rb"Visit me at (http://[\d.]+:\d+)")
# Flower's event receiver subscribes after it listens; events sent before that are not seen.
FLOWER_LISTENING = re.compile(rb"Connected to redis")


@dataclass
class Simulator:
    base_url: str

    def stats(self) -> dict:
        return httpx.get(f"{self.base_url}/_sim/stats").json()


@pytest.fixture()
def corral_env(redis_client, redis_url: str, store_url: str) -> dict[str, str]:
    """The environment every corral process of the test gets (its Redis database and its
    own record store)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CORRAL_")}
    env.update(FAST_TIMINGS, CORRAL_REDIS_URL=redis_url, CORRAL_STORE_URL=store_url,
               CORRAL_TEST_SIM_KEY=SIM_KEY, PYTHONUNBUFFERED="1")
    return env


@pytest.fixture()
def start_simulator(tmp_path: Path, corral_env) -> Iterator[Callable[..., Simulator]]:
    """Start `python -m simulator` with the given flags; stopped after the test."""
    children: list[ChildProcess] = []

    def start(*args: str) -> Simulator:
        child = ChildProcess(f"simulator-{len(children)}", [
            sys.executable, "-m", "simulator", "--port", "0", "--api-key", SIM_KEY, *args],
            corral_env, tmp_path)
        children.append(child)
        return Simulator(child.wait_for(SIM_READY).group(1).decode())

    yield start
    for child in children:
        child.stop()


@pytest.fixture()
def start_workers(tmp_path: Path, corral_env) -> Iterator[Callable[..., list[ChildProcess]]]:
    """Start real worker processes (threads pool) and wait until each consumes."""
    children: list[ChildProcess] = []

    def start(config: Path, queues: list[str], *, processes: int = 1, concurrency: int = 8,
              env: dict[str, str] | None = None, pool: str = "threads") -> list[ChildProcess]:
        worker_env = {**corral_env, "CORRAL_CONFIG": str(config), **(env or {})}
        started = [ChildProcess(f"worker-{len(children) + i}", worker_command(
            queues=queues, concurrency=concurrency, name=f"test-{len(children) + i}",
            pool=pool),
            worker_env, tmp_path) for i in range(processes)]
        children.extend(started)
        for child in started:
            child.wait_for(re.compile(rb"\bready\b"))
        return started

    yield start
    for child in children:
        child.stop()


@pytest.fixture()
def corral(corral_env) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the `corral` CLI as a user would, in a subprocess."""

    def run(*args: str, config: Path | None = None, env_extra: dict[str, str] | None = None,
            cwd: Path | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        env = dict(corral_env)
        if config is not None:
            env["CORRAL_CONFIG"] = str(config)
        env.update(env_extra or {})
        return subprocess.run([sys.executable, "-m", "producer", *args], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout_s, check=False)

    return run


@pytest.fixture()
def start_flower(tmp_path: Path, corral_env) -> Iterator[Callable[..., httpx.Client]]:
    """Start `corral flower` on a free port (basic auth); yields an authenticated client."""
    children: list[ChildProcess] = []
    clients: list[httpx.Client] = []

    def start(config: Path, env: dict[str, str] | None = None) -> httpx.Client:
        flower_env = {**corral_env, "CORRAL_CONFIG": str(config),
                      "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH), **(env or {})}
        child = ChildProcess("flower", [sys.executable, "-m", "producer", "flower", "--port", "0",
                                        "--address", "127.0.0.1"], flower_env, tmp_path)
        children.append(child)
        base_url = child.wait_for(FLOWER_READY).group(1).decode()
        child.wait_for(FLOWER_LISTENING)
        client = httpx.Client(base_url=base_url, auth=FLOWER_AUTH, timeout=10.0)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for child in children:
        child.stop()
