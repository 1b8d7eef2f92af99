"""The store's engine per dialect: SQLite's pragmas (WAL, busy timeout) or PostgreSQL's pool."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_POOL_SIZE = 5


def default_store_url() -> str:
    """A SQLite file in corral's data directory ($XDG_DATA_HOME/corral, else
    ~/.local/share/corral): the embedded default for one machine."""
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return f"sqlite:///{Path(data) / 'corral' / 'corral.db'}"


def store_engine(url: str) -> Engine:
    """An engine for `url` (``sqlite:///FILE`` or ``postgresql+psycopg://…``).

    SQLite: the file's directory is created; each connection runs in WAL mode (readers never
    block the writer), waits up to 30 s for a lock instead of failing, and syncs NORMAL (safe
    with WAL). PostgreSQL: a small pool whose connections are checked before use (a database
    restart must cost a retry, not a worker).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POSTGRES_POOL_SIZE)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def upsert_insert(engine: Engine, table: Table) -> Any:
    """The dialect's INSERT that takes ON CONFLICT clauses (PostgreSQL's and SQLite's share
    the same API): the one place the store's SQL differs by dialect."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
