"""A fresh record store per benchmark run: a SQLite file of its own, or corral's tables remade.

With no ``--store-url`` a run gets a new SQLite file in its directory. With one, corral's
tables there are dropped and created again (``metadata.drop_all``, the ``alembic_version``
table, then ``corral.store.upgrade``): point it only at a database the benchmarks may wipe.
A PostgreSQL URL may name a schema of its own with libpq's ``options``, e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dcorral_bench``
(the schema is created if missing), so a run shares the database but not the tables with
tests that wipe the default schema meanwhile.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from corral.redis_client import redact_url
from corral.store import Store, forget_stores, open_store, store_engine, upgrade
from corral.store.schema import metadata

_SEARCH_PATH = re.compile(r"search_path\s*=\s*([A-Za-z_][A-Za-z0-9_]*)")


def fresh_store(run_dir: Path, store_url: str | None = None) -> Store:
    """An empty, migrated store for one run, opened in this process.

    Args:
        run_dir: the run's directory: the default SQLite file goes in ``run_dir/store/``
            (any earlier one there is removed).
        store_url: a store to wipe and reuse instead (CORRAL_STORE_URL's form).
    """
    forget_stores()  # this process's engines on an earlier run's store
    if store_url is None:
        path = run_dir / "store" / "corral.db"
        for stale in path.parent.glob("corral.db*"):  # the file and its -wal, -shm
            stale.unlink()
        return open_store(f"sqlite:///{path}")
    engine = store_engine(store_url)
    try:
        schema = _own_schema(store_url)
        with engine.begin() as connection:
            if schema is not None:
                connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        metadata.drop_all(engine)
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        upgrade(engine)
    finally:
        engine.dispose()
    return open_store(store_url)


def _own_schema(store_url: str) -> str | None:
    """The schema a PostgreSQL URL puts first on its search_path (libpq ``options``)."""
    url = make_url(store_url)
    if url.get_backend_name() != "postgresql":
        return None
    options = url.query.get("options")
    found = _SEARCH_PATH.search(options if isinstance(options, str) else " ".join(options or ()))
    return found.group(1) if found else None


def describe(store_url: str | None) -> str:
    """What ``fresh_store`` gives for ``store_url``, its password masked, for a report."""
    if store_url is None:
        return "SQLite, a new file per run"
    return f"{make_url(store_url).get_backend_name()} at {redact_url(store_url)}, wiped per run"
