"""Group-committed writes to the record store, retried through a database restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from sqlalchemy.exc import DBAPIError, OperationalError

from corral.errors import CorralError
from corral.group_commit import Grouped
from corral.store.records import LedgerRow, RecordRow, RecordStore

log = logging.getLogger(__name__)

RETRY_BASE_S = 0.2
RETRY_CAP_S = 5.0


class StoreUnavailableError(CorralError):
    """The record store refused writes for longer than the writer waits."""


class Write(NamedTuple):
    """One caller's records and ledger rows (rows of calls whose line has no new record)."""

    records: Sequence[RecordRow]
    calls: Sequence[LedgerRow] = ()


def is_transient(err: BaseException) -> bool:
    """A database error a retry may get past: the server restarting, a dropped connection,
    a lock held too long."""
    return isinstance(err, OperationalError) or (
        isinstance(err, DBAPIError) and err.connection_invalidated)


class StoreWriter(Grouped[Write, list[bool | None]]):
    """Writes each caller's records in one transaction shared with the callers that came while
    the last was committing; answers, per record, whether it was the line's first.

    A transaction that fails on a transient error is retried (with backoff, from scratch: it
    never committed) for up to `deadline_s`; then every caller in it gets
    StoreUnavailableError, and its job goes back unacked.
    """

    def __init__(self, records: RecordStore, *, deadline_s: float, delay_s: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(delay_s=delay_s)
        self._records = records
        self._deadline_s = deadline_s
        self._sleep = sleep
        self._clock = clock

    def write(self, records: Sequence[RecordRow],
              calls: Sequence[LedgerRow] = ()) -> list[bool | None]:
        """Commit `records` and `calls` (grouped with other callers'); returns, per record,
        whether it was new (None: its batch is gone)."""
        return self.run([Write(records, calls)])[0]

    def _send_all(self, requests: list[Write]) -> list[list[bool | None]]:
        records = [record for request in requests for record in request.records]
        calls = [call for request in requests for call in request.calls]
        flags = self._commit(records, calls)
        answers, start = [], 0
        for request in requests:
            answers.append(flags[start:start + len(request.records)])
            start += len(request.records)
        return answers

    def _commit(self, records: list[RecordRow],
                calls: list[LedgerRow]) -> list[bool | None]:
        give_up_at = self._clock() + self._deadline_s
        delay_s = RETRY_BASE_S
        while True:
            try:
                return self._records.write(records, calls)
            except DBAPIError as err:
                if not is_transient(err):
                    raise
                if self._clock() + delay_s > give_up_at:
                    raise StoreUnavailableError(
                        f"the record store refused writes for {self._deadline_s:g} s: "
                        f"{type(err.orig).__name__}: {str(err.orig).strip()[:200]}") from err
                log.warning("record store write failed (%s); retrying in %.1f s",
                            type(err.orig).__name__, delay_s)
                self._sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_CAP_S)
