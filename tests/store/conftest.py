"""The record store's tests run each on SQLite and on PostgreSQL (the `engine` fixture), with
a clock they move."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from corral.store import BatchRows, RecordStore
from tests.store.rows import FakeClock


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def store(engine: Engine, clock: FakeClock) -> RecordStore:
    return RecordStore(engine, clock=clock)


@pytest.fixture()
def batch_rows(engine: Engine, clock: FakeClock) -> BatchRows:
    return BatchRows(engine, clock=clock)
