"""The record store: batches, input lines, terminal records and the cost ledger, in SQL."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import Engine

from corral.store.batch_rows import BatchRows, ReopenedLine
from corral.store.engine import default_store_url, store_engine
from corral.store.lines import LineStore, StoredLine
from corral.store.migrate import upgrade
from corral.store.provider_batches import ProviderBatches
from corral.store.records import LedgerRow, RecordRow, RecordStore, bulk_record


@dataclass(frozen=True)
class Store:
    """One database's parts, sharing its engine."""

    url: str
    engine: Engine
    records: RecordStore
    batches: BatchRows
    lines: LineStore
    provider_batches: ProviderBatches


_opened: dict[str, Store] = {}
_lock = threading.Lock()


def open_store(url: str | None = None) -> Store:
    """The store at `url` (default: CORRAL_STORE_URL, else a SQLite file in corral's data
    directory), its schema brought up to date once per process."""
    if url is None:
        from corral.settings import get_settings

        url = get_settings().store_url or default_store_url()
    with _lock:
        store = _opened.get(url)
        if store is None:
            engine = store_engine(url)
            upgrade(engine)
            store = _opened[url] = Store(url, engine, RecordStore(engine), BatchRows(engine),
                                         LineStore(engine), ProviderBatches(engine))
        return store


def forget_stores(*, close: bool = True) -> None:
    """Drop this process's engines (tests that swap databases), closing their connections;
    after a fork, `close=False` leaves the parent's connections alone."""
    with _lock:
        for store in _opened.values():
            store.engine.dispose(close=close)
        _opened.clear()


__all__ = ["BatchRows", "LedgerRow", "LineStore", "ProviderBatches", "RecordRow",
           "RecordStore", "ReopenedLine", "Store", "StoredLine", "bulk_record",
           "default_store_url", "forget_stores", "open_store", "store_engine", "upgrade"]
