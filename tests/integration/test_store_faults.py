"""The record store under a fleet: PostgreSQL end to end, a database restart mid-batch, and a
submit killed mid-intake, with real workers, a real database and real signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select

from corral.store import open_store
from corral.store.schema import batches, ledger, lines, records
from producer.views import wait_for_batch
from tests.integration.helpers import (
    assert_complete,
    poll,
    record_count,
    request,
    write_jsonl,
)
from tests.postgres_server import PrivatePostgres, libpq_url

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def many(count: int, model: str = "small") -> list[dict]:
    return [request(f"l{i}", model, f"line {i} " + "words " * 20, max_tokens=16)
            for i in range(count)]


def row_counts(url: str) -> dict[str, int]:
    """Rows in each of the store's tables, over a connection of its own."""
    engine = open_store(url).engine
    with engine.connect() as connection:
        return {table.name: int(connection.execute(
            select(func.count()).select_from(table)).scalar_one())
            for table in (batches, lines, records, ledger)}


@pytest.fixture()
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of the test's own, so it can be restarted."""
    with PrivatePostgres() as server:
        yield server


def test_a_fleet_on_postgresql_ends_every_line_once(
        tmp_path: Path, redis_client, corral_env, postgres_store_url: str, write_config,
        start_simulator, start_workers, corral) -> None:
    store_env = {"CORRAL_STORE_URL": postgres_store_url}
    sim = start_simulator("--latency-ms", "5")
    config = write_config(f"{sim.base_url}/v1")
    submitted = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", many(300))),
                       config=config, env_extra=store_env)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    start_workers(config, ["corral.small"], processes=2, concurrency=8, env=store_env)
    batch = wait_for_batch(open_store(postgres_store_url), batch_id, show_progress=False,
                           timeout_s=120)
    assert batch["request_counts"] == {"total": 300, "completed": 300, "failed": 0}
    assert sim.stats()["served"] == 300
    assert record_count(batch_id, postgres_store_url) == 300
    cost = json.loads(corral("cost", batch_id, "--json", config=config,
                             env_extra=store_env).stdout)
    assert cost["total"]["requests"] == 300
    out = tmp_path / "out.jsonl"
    written = corral("results", batch_id, "-o", str(out), "--order", "input", config=config,
                     env_extra=store_env)
    assert written.returncode == 0, written.stderr
    assert [json.loads(line)["custom_id"] for line in out.read_text().splitlines()] == \
        [f"l{i}" for i in range(300)]
    # The test's own SQLite store saw nothing: the fleet used the one it was pointed at.
    assert open_store().batches.get(batch_id) is None


def test_a_database_restart_mid_batch_loses_nothing(
        tmp_path: Path, redis_client, private_postgres: PrivatePostgres, write_config,
        start_simulator, start_workers, corral) -> None:
    url = private_postgres.url
    store_env = {"CORRAL_STORE_URL": url}
    sim = start_simulator("--latency-ms", "20")
    config = write_config(f"{sim.base_url}/v1")
    total = 2000
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", many(total))),
                      config=config, env_extra=store_env).stdout.strip()
    workers = start_workers(config, ["corral.small"], processes=2, concurrency=16,
                            env=store_env)
    poll(lambda: record_count(batch_id, url) >= 300, timeout_s=60.0, interval_s=0.05)
    private_postgres.shut_down()  # every connection cut, writes refused
    # The workers' writes fail, and are retried (the jobs stay unacked meanwhile).
    poll(lambda: any("record store write failed" in worker.log_path.read_text()
                     for worker in workers), timeout_s=60.0)
    private_postgres.start_again()
    batch = wait_for_batch(open_store(url), batch_id, show_progress=False, timeout_s=180)
    assert batch["request_counts"] == {"total": total, "completed": total, "failed": 0}
    served = sim.stats()["served"]
    # Each line has one record, none was lost or run twice: the writes waiting for the
    # database went through once it was back.
    assert served == total
    assert_complete(redis_client, batch_id, total, served, store_url=url)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_submit_killed_mid_intake_leaves_no_rows_no_files_and_no_keys(
        tmp_path: Path, redis_client, corral_env, write_config, dialect: str,
        request: pytest.FixtureRequest) -> None:
    url = (request.getfixturevalue("postgres_store_url") if dialect == "postgresql"
           else f"sqlite:///{tmp_path / 'killed' / 'corral.db'}")
    big = write_jsonl(tmp_path / "big.jsonl", many(300_000))
    config = write_config()
    before = sorted(path.name for path in tmp_path.iterdir())
    submit = subprocess.Popen(
        [sys.executable, "-m", "producer", "submit", str(big)],
        env={**corral_env, "CORRAL_STORE_URL": url, "CORRAL_CONFIG": str(config)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: intake_under_way(url), timeout_s=60.0, interval_s=0.02)
        submit.send_signal(signal.SIGKILL)
        submit.wait(timeout=10)
    finally:
        if submit.poll() is None:
            submit.kill()
    assert submit.returncode == -signal.SIGKILL
    assert row_counts(url) == {"batches": 0, "lines": 0, "records": 0, "ledger": 0}
    assert redis_client.dbsize() == 0
    # No file of the batch is left either (the SQLite store's own directory aside).
    after = sorted(path.name for path in tmp_path.iterdir())
    assert [name for name in after if name not in before] == ([] if dialect == "postgresql"
                                                               else ["killed"])


def intake_under_way(url: str) -> bool:
    """Whether a submit has sent lines to the database that are not committed yet."""
    if url.startswith("sqlite"):
        wal = Path(url.removeprefix("sqlite:///") + "-wal")
        return wal.exists() and wal.stat().st_size > 4_000_000
    with psycopg.connect(libpq_url(url)) as conn:
        # A backend with a transaction id has written in a transaction not yet committed.
        writing = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                               "current_database() AND backend_xid IS NOT NULL").fetchone()
        return bool(writing and writing[0])
