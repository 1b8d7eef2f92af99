"""Redis with a password, an ACL user and TLS carries broker, buckets and records; no password
is ever printed."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from corral.embedded_redis import find_redis_server, free_port
from corral.redis_keys import bucket_key
from producer.local_stack import worker_command
from tests.integration.helpers import record_count, request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PASSWORD = "pw-7c1f9e2a4b6d8035"
ACL_USER, ACL_PASSWORD = "corral-app", "acl-pw-52e8a1c9d7f3"
START_TIMEOUT_S = 15.0


def make_certs(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI to make test certificates")
    paths = {name: directory / name for name in
             ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "san.cnf")}
    paths["san.cnf"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for args in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=corral test CA", "-keyout", paths["ca.key"], "-out", paths["ca.crt"]],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", paths["server.key"], "-out", paths["server.csr"]],
        ["x509", "-req", "-days", "1", "-in", paths["server.csr"], "-CA", paths["ca.crt"],
         "-CAkey", paths["ca.key"], "-CAcreateserial", "-extfile", paths["san.cnf"],
         "-out", paths["server.crt"]],
    ):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return paths


@pytest.fixture()
def start_redis(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Start a private redis-server with extra flags; returns its port. Stopped after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*flags: str, tls: bool = False) -> int:
        port = free_port()
        log = tmp_path / f"redis-{port}.log"
        listen = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
        startup = tmp_path / f"redis-{port}.out"  # config errors come before the log file
        with open(startup, "wb") as out:
            process = subprocess.Popen(
                [find_redis_server(), *listen, "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp_path), "--logfile", str(log), *flags],
                stdout=out, stderr=subprocess.STDOUT)
        processes.append(process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"Ready to accept connections" not in (log.read_bytes() if log.exists() else b""):
            if process.poll() is not None:
                output = startup.read_text(errors="replace")
                if tls and "Bad directive" in output:
                    pytest.skip("this redis-server was built without TLS support")
                pytest.fail(f"redis-server did not start:\n{output}")
            assert time.monotonic() < deadline, "redis-server did not get ready"
            time.sleep(0.05)
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def run_batch(tmp_path: Path, env: dict[str, str], write_config, start_simulator,
              start_workers, corral, count: int = 30) -> tuple[str, list[str]]:
    """Submit a batch, run it on a real worker to the end, export it.

    Returns the batch id and every output (CLI stdout and stderr, the worker's log).
    """
    sim = start_simulator("--latency-ms", "5")
    config = write_config(f"{sim.base_url}/v1")
    workers = start_workers(config, ["corral.small"], concurrency=4, env=env)
    batch_file = write_jsonl(tmp_path / "batch.jsonl", [
        request(f"s-{i}", "small", f"line {i}", max_tokens=16) for i in range(count)])
    outputs = []

    def cli(*args: str) -> str:
        done = corral(*args, config=config, env_extra=env)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr
        return done.stdout

    batch_id = cli("submit", str(batch_file), "--wait").strip()
    batch = json.loads(cli("status", batch_id, "--json"))
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": count, "completed": count, "failed": 0}
    cli("results", batch_id, "-o", str(tmp_path / "out.jsonl"))
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == count
    assert "redis: ok" in cli("check")
    for worker in workers:
        worker.stop()  # flush and close the log before it is read
        outputs.append(worker.log_path.read_text(errors="replace"))
    return batch_id, outputs


def assert_all_state_went_to(client: redis.Redis, batch_id: str, count: int,
                             default_redis: redis.Redis) -> None:
    """Records, buckets and the broker's queues used `client`'s server, not the default one."""
    assert record_count(batch_id) == count
    assert client.keys(bucket_key("*"))
    assert client.exists("_kombu.binding.corral.small")
    assert default_redis.dbsize() == 0


def test_a_batch_runs_over_tls_with_a_password_and_no_output_shows_it(
        tmp_path: Path, redis_client, start_redis, write_config, start_simulator,
        start_workers, corral) -> None:
    certs = make_certs(tmp_path)
    port = start_redis("--tls-cert-file", str(certs["server.crt"]),
                       "--tls-key-file", str(certs["server.key"]),
                       "--tls-ca-cert-file", str(certs["ca.crt"]),
                       "--tls-auth-clients", "no", "--requirepass", PASSWORD, tls=True)
    env = {"CORRAL_REDIS_URL": f"rediss://:{PASSWORD}@127.0.0.1:{port}/0",
           "CORRAL_REDIS_TLS_CA_FILE": str(certs["ca.crt"])}
    batch_id, outputs = run_batch(tmp_path, env, write_config, start_simulator, start_workers,
                                  corral)
    with redis.Redis(port=port, password=PASSWORD, ssl=True,
                     ssl_ca_certs=str(certs["ca.crt"])) as client:
        assert_all_state_went_to(client, batch_id, 30, redis_client)
    worker_log = outputs[-1]
    assert f"rediss://:**@127.0.0.1:{port}/0" in worker_log  # Celery's banner, masked
    for output in outputs:
        assert PASSWORD not in output


@pytest.mark.parametrize("user", ["", ACL_USER], ids=["requirepass", "acl-user"])
def test_a_batch_runs_on_redis_with_a_password(
        tmp_path: Path, redis_client, start_redis, write_config, start_simulator,
        start_workers, corral, user: str) -> None:
    port = start_redis("--requirepass", PASSWORD)
    password = PASSWORD
    if user:
        password = ACL_PASSWORD
        with redis.Redis(port=port, password=PASSWORD) as admin:
            # redis-py prefixes channel patterns with "&"; resetchannels first, since Redis
            # 6.2 (the embedded server) starts users with allchannels and refuses a pattern
            # after it.
            admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["~*"],
                              reset_channels=True, channels=["*"], commands=["+@all"])
    env = {"CORRAL_REDIS_URL": f"redis://{user}:{password}@127.0.0.1:{port}/0"}
    batch_id, outputs = run_batch(tmp_path, env, write_config, start_simulator, start_workers,
                                  corral, count=20)
    with redis.Redis(port=port, password=PASSWORD) as client:
        assert_all_state_went_to(client, batch_id, 20, redis_client)
    for output in outputs:
        assert password not in output


def test_a_wrong_password_is_exit_3_with_a_clear_message_and_no_password(
        tmp_path: Path, redis_client, start_redis, write_config, corral, corral_env) -> None:
    port = start_redis("--requirepass", PASSWORD)
    wrong = "wrong-pw-0d3b5f"
    env = {"CORRAL_REDIS_URL": f"redis://:{wrong}@127.0.0.1:{port}/0"}
    config = write_config()

    # Before it reads the file: nothing is taken in for a batch that could not run.
    status = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", [request("a", "small", "hi")])),
                    config=config, env_extra=env)
    assert status.returncode == 3
    assert status.stderr.startswith("corral: Redis at redis://:***@127.0.0.1")
    assert "refused the credentials" in status.stderr
    assert "Traceback" not in status.stderr

    check = corral("check", config=config, env_extra=env)
    assert check.returncode == 3
    assert "redis: FAIL" in check.stdout and "refused the credentials" in check.stdout

    worker = subprocess.run(
        worker_command(queues=["corral.small"], concurrency=1, name="wrong-pw"),
        env={**corral_env, **env, "CORRAL_CONFIG": str(config)}, capture_output=True,
        text=True, timeout=60, check=False)
    assert worker.returncode == 3
    assert "refused the credentials" in worker.stderr
    for output in (status.stdout, status.stderr, check.stdout, check.stderr, worker.stdout,
                   worker.stderr):
        assert wrong not in output and PASSWORD not in output
