"""The record store: batches, input lines, terminal records and the cost ledger, in SQL."""

from corral.store.engine import default_store_url, store_engine
from corral.store.migrate import upgrade
from corral.store.records import LedgerRow, RecordRow, RecordStore

__all__ = ["LedgerRow", "RecordRow", "RecordStore", "default_store_url", "store_engine",
           "upgrade"]
