"""Starts what a single-machine run is missing — Redis, workers, the simulator — and stops it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from corral.celery_app import BATCH_QUEUE
from corral.embedded_redis import EmbeddedRedis, is_reachable
from corral.errors import CorralError
from corral.redis_client import connect

READY_TIMEOUT_S = 60.0
SIM_READY = re.compile(rb"simulator ready on (http://\S+)")


class ProcessFailedError(CorralError):
    """A child process exited before it became ready."""


class ChildProcess:
    """A child whose stderr goes to a log file that is watched for a readiness pattern."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, env=env, stdout=self._log, stderr=self._log,
                                        stdin=subprocess.DEVNULL, cwd=cwd)

    def wait_for(self, pattern: re.Pattern[bytes], timeout_s: float = READY_TIMEOUT_S) \
            -> re.Match[bytes]:
        """Block until the log matches `pattern`; raise if the child dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            match = pattern.search(self.log_path.read_bytes())
            if match:
                return match
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise ProcessFailedError(f"{self.name} did not start:\n{tail}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (a worker's warm shutdown), then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def stop_all(children: Sequence[ChildProcess]) -> None:
    """SIGTERM every child first so their warm shutdowns overlap, then reap each."""
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    for child in children:
        child.stop()


def worker_command(*, queues: list[str], concurrency: int, name: str,
                   pool: str = "threads") -> list[str]:
    """The command line of one corral worker process (threads by default: see README), on
    `queues` and the batch lane's."""
    queues = [*queues, *([] if BATCH_QUEUE in queues else [BATCH_QUEUE])]
    return [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", pool,
            "--concurrency", str(concurrency), "--queues", ",".join(queues), "--loglevel",
            "INFO", "--without-gossip", "--without-mingle",
            "--hostname", f"{name}@%h"]


def _is_secured(url: str) -> bool:
    before_query = url.partition("?")[0]
    return url.startswith("rediss://") or "@" in before_query or "password=" in url


class LocalStack(ExitStack):
    """Everything a one-machine run needs, stopped in reverse order on exit.

    The environment this stack's children get (and that the caller should use) is `env`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.env = dict(os.environ)
        self.log_dir = Path(tempfile.mkdtemp(prefix="corral-run-"))

    def ensure_redis(self, url: str) -> str:
        """Use Redis at `url` if it answers, else start a private one; returns the URL in use.

        A URL with a password or TLS names a server the user set up on purpose: when it does
        not answer, that is an error to report, not a reason to run elsewhere.
        """
        if _is_secured(url):
            connect(url).close()  # raises RedisUnavailableError saying why (password masked)
        elif not is_reachable(url):
            server = self.enter_context(EmbeddedRedis())
            url = server.url
            # A private Redis carries the broker too.
            self.env.pop("CORRAL_BROKER_URL", None)
            print(f"corral: no Redis answered; started a private one at {url}",
                  file=sys.stderr)
        self.env["CORRAL_REDIS_URL"] = url
        return url

    def start_simulator(self, args: list[str]) -> str:
        """Start `python -m simulator --port 0 …`; returns its base URL."""
        child = self._start("simulator", [sys.executable, "-m", "simulator", "--port", "0",
                                          *args])
        return child.wait_for(SIM_READY).group(1).decode()

    def start_workers(self, *, queues: list[str], processes: int, concurrency: int) -> None:
        """Start worker processes and wait until each consumes."""
        children = [self._start(f"worker-{i + 1}", worker_command(
            queues=queues, concurrency=concurrency, name=f"corral-{os.getpid()}-{i + 1}"))
            for i in range(processes)]
        for child in children:
            child.wait_for(re.compile(rb"\bready\b"))

    def _start(self, name: str, args: list[str]) -> ChildProcess:
        child = ChildProcess(name, args, self.env, self.log_dir)
        self.callback(child.stop)
        return child
