"""A submitted file's lines taken into the store in one transaction: all of them, or none."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, RootTransaction, insert
from sqlalchemy.exc import DBAPIError, IntegrityError

from corral.errors import CorralError
from corral.records import error_record
from corral.store.records import finish_batches
from corral.store.schema import batches, lines, records

# Rows held in memory before they go to the database (still uncommitted): about 2 MB of
# ~400-byte lines, so memory stays flat however long the file.
ROWS_PER_FLUSH = 5_000
LINE_COLUMNS = ("batch_id", "custom_id", "line_no", "model", "job", "lane")
RECORD_COLUMNS = ("batch_id", "custom_id", "line_no", "error_code", "record", "written_at")
REJECTED_CODE = "invalid_request"


class IntakeRefusedError(CorralError):
    """The database refused the file's rows (a custom_id or line number repeated in the
    batch, or a batch id already taken); nothing of the file was stored."""

    def __init__(self, batch_id: str, detail: str) -> None:
        super().__init__(f"batch {batch_id}: the store refused the file: {detail}")
        self.batch_id = batch_id


class LineIntake:
    """Stores one file's accepted lines, its refused lines' error records and then its batch
    row, in one transaction that commits only in `finish`.

    Leaving the `with` block without `finish` (an exception, a refused file) rolls everything
    back; a process killed mid-intake never commits. Rows go out in chunks of ROWS_PER_FLUSH:
    PostgreSQL by COPY, SQLite by executemany inside BEGIN IMMEDIATE (which holds SQLite's one
    write lock until the intake ends). A refused row raises IntakeRefusedError from the call
    that sends its chunk, not necessarily the one that added it.
    """

    def __init__(self, engine: Engine, batch_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._batch_id = batch_id
        self._clock = clock
        self._connection: Connection | None = None
        self._transaction: RootTransaction | None = None
        self._cursor: Any = None
        self._lines: list[tuple[Any, ...]] = []
        self._records: list[tuple[Any, ...]] = []
        self._accepted = 0
        self._rejected = 0
        self._stored = 0

    @property
    def stored(self) -> int:
        """Rows sent to the database so far (uncommitted until `finish`)."""
        return self._stored

    def __enter__(self) -> LineIntake:
        connection = self._engine.connect()
        try:
            self._transaction = connection.begin()
            self._cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            if self._engine.dialect.name == "sqlite":
                # Take the write lock now (waiting out the busy timeout), not at the first chunk.
                self._cursor.execute("BEGIN IMMEDIATE")
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return self

    def accept(self, custom_id: str, line_no: int, model: str, job: str,
               lane: str = "live") -> None:
        """An accepted line (its stored job, JSON) for the feeders (`lane` "live") or the
        batch lane ("batch")."""
        self._open()
        self._lines.append((self._batch_id, custom_id, line_no, model, job, lane))
        self._accepted += 1
        if len(self._lines) >= ROWS_PER_FLUSH:
            self._flush()

    def reject(self, record_id: str, line_no: int, reason: str) -> None:
        """A refused line's terminal record: an `invalid_request` error naming its line."""
        self._open()
        record = error_record(record_id, code=REJECTED_CODE, message=f"line {line_no}: {reason}")
        self._records.append((self._batch_id, record_id, line_no, REJECTED_CODE,
                              json.dumps(record, separators=(",", ":")), int(self._clock())))
        self._rejected += 1
        if len(self._records) >= ROWS_PER_FLUSH:
            self._flush()

    def finish(self, *, total: int, completion_window: str, expires_at: int, input_file: str,
               options: dict[str, Any]) -> None:
        """Add the batch row (in progress; its refused lines counted failed) and commit.

        A batch whose every line was refused ends at once, as failed, like any batch whose
        last line gets its record.

        Raises:
            ValueError: `total` is not the number of lines accepted and refused (nothing is
                stored).
            IntakeRefusedError: the database refused a row (nothing is stored).
        """
        connection, transaction = self._open()
        if total != self._accepted + self._rejected:
            self._abandon()
            raise ValueError(f"batch {self._batch_id}: total {total} but "
                             f"{self._accepted + self._rejected} lines were taken in")
        self._flush()
        now = int(self._clock())
        try:
            connection.execute(insert(batches).values(
                id=self._batch_id, status="in_progress", end_status="completed",
                input_file=input_file, completion_window=completion_window, total=total,
                completed=0, failed=self._rejected, created_at=now, expires_at=expires_at,
                rebuilds=0, options=json.dumps(options, separators=(",", ":"))))
            finish_batches(connection, [self._batch_id], now)
            transaction.commit()
        except IntegrityError as err:
            raise IntakeRefusedError(self._batch_id, str(err.orig)) from err
        finally:
            self._abandon()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._abandon()  # after finish: nothing left to roll back

    def _open(self) -> tuple[Connection, RootTransaction]:
        if self._connection is None or self._transaction is None:
            raise RuntimeError(f"batch {self._batch_id}: the intake is not open "
                               "(outside its `with` block, finished, or refused)")
        return self._connection, self._transaction

    def _flush(self) -> None:
        """Send the buffered rows, inside the transaction."""
        for table, columns, rows in ((lines.name, LINE_COLUMNS, self._lines),
                                     (records.name, RECORD_COLUMNS, self._records)):
            if rows:
                self._write(table, columns, rows)
                self._stored += len(rows)
                rows.clear()

    def _write(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        dbapi = self._engine.dialect.loaded_dbapi
        names = ", ".join(columns)
        copying = self._engine.dialect.name == "postgresql"
        statement = (f"COPY {table} ({names}) FROM STDIN" if copying else
                     f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})")
        try:
            if copying:
                with self._cursor.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                self._cursor.executemany(statement, rows)
        except dbapi.Error as err:
            # Driver errors leave here as the rest of the store's do: SQLAlchemy's.
            self._abandon()
            if isinstance(err, dbapi.IntegrityError):
                raise IntakeRefusedError(self._batch_id, str(err)) from err
            raise DBAPIError.instance(statement, None, err, dbapi.Error) from err

    def _abandon(self) -> None:
        """Drop the connection, rolling back whatever was not committed."""
        connection, self._connection, self._transaction = self._connection, None, None
        self._lines.clear()
        self._records.clear()
        if connection is not None:
            try:
                self._cursor.close()
            finally:
                self._cursor = None
                connection.close()
