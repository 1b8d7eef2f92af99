"""The record store's tables (SQLAlchemy Core): one place for every column and key."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class DecimalText(TypeDecorator[Decimal]):
    """Money: a Decimal kept as its exact text. SQLite has no decimal type (its NUMERIC is a
    float), so the value never passes through one; PostgreSQL sums it cast to NUMERIC."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        return None if value is None else format(Decimal(value), "f")

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


MONEY = DecimalText()
ID = String(300)  # a custom_id is at most 256 characters (docs/concepts.md)

metadata = MetaData(naming_convention={
    "pk": "pk_%(table_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s"})

batches = Table(
    "batches", metadata,
    Column("id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    # What the batch ends as when its last line lands: completed (failed if no line
    # succeeded), or cancelled / expired once a cancel or its window set it.
    Column("end_status", String(16), nullable=False, default="completed"),
    Column("input_file", Text, nullable=False, default=""),
    Column("completion_window", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("completed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),  # seconds, as OpenAI's Batch object
    Column("expires_at", BigInteger, nullable=False),
    Column("cancelling_at", BigInteger),
    Column("ended_at", BigInteger),  # finalizing_at and <status>_at
    Column("last_error", Text),  # JSON {code, message}: why the batch fails fast
    # How many times Redis's part of the batch was rebuilt from here (its data lost): call
    # numbers of each rebuild start past the last one's, so no two calls share a ledger key.
    Column("rebuilds", Integer, nullable=False, default=0),
    Column("options", Text, nullable=False, default="{}"),  # JSON: models, caps, config source
    Index("ix_batches_status", "status"),
)

# The accepted input lines, in input order: what a feeder on any host sends.
lines = Table(
    "lines", metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("custom_id", ID, primary_key=True),
    Column("line_no", Integer, nullable=False),
    Column("model", String(200), nullable=False),
    Column("job", Text, nullable=False),  # the stored job (corral/stored_job.py)
    # "live" (fed to the model's queue) or "batch" (sent to the provider's Batch API by the
    # batch lane, workers/batch_lane.py); a hedge moves a line back to "live".
    Column("lane", String(8), nullable=False, server_default="live"),
    UniqueConstraint("batch_id", "line_no"),
    Index("ix_lines_batch_id_model_line_no", "batch_id", "model", "line_no"),  # feeding
)

# One terminal record per line, written once; `seq` gives completion order.
records = Table(
    "records", metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("batch_id", String(64), nullable=False),
    Column("custom_id", ID, nullable=False),
    # Its input line (`results --order input`); None only for a line with no stored line.
    Column("line_no", Integer),
    Column("error_code", String(64)),  # None for a result
    # The OpenAI batch output line (JSON); NULL for a line ended in bulk without a call
    # (batch_cancelled, batch_expired), whose record is made from its code when read.
    Column("record", Text),
    Column("written_at", BigInteger, nullable=False),
    UniqueConstraint("batch_id", "custom_id"),
    Index("ix_records_batch_id_seq", "batch_id", "seq"),  # a batch's completion order
    Index("ix_records_batch_id_line_no", "batch_id", "line_no"),  # its input order
)

# One row per provider call, billed or unsettled; a settled row replaces an unsettled one.
ledger = Table(
    "ledger", metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("custom_id", ID, primary_key=True),
    Column("attempt", Integer, primary_key=True),  # the line's call number
    Column("model", String(200), nullable=False),
    Column("unsettled", Boolean, nullable=False),
    Column("productive", Boolean, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_usd", MONEY, nullable=False),  # an unsettled row: 0 (its bound is in `row`)
    Column("list_cost_usd", MONEY, nullable=False),
    Column("client_request_id", String(64), nullable=False, default=""),
    Column("lane", String(16), nullable=False, default="live"),  # live, or a provider batch
    Column("written_at", BigInteger, nullable=False),
    Column("row", Text, nullable=False),  # the whole ledger row (JSON)
)

# The provider batches (OpenAI batches, Anthropic message batches) a batch's lines run in.
provider_batches = Table(
    "provider_batches", metadata,
    Column("id", String(200), primary_key=True),  # the provider's batch id
    Column("batch_id", String(64), nullable=False, index=True),
    Column("provider", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(32), nullable=False),  # the provider's word for it
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False, default=0),  # lines with an answer or error
    Column("tokens", BigInteger, nullable=False, default=0),  # its lines' reserved tokens
    Column("custom_ids", Text, nullable=False),  # JSON list: the lines it holds
    Column("created_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger),  # when the provider ended it (or it was given up)
    Column("hedged_at", BigInteger),  # when its unfinished lines were sent live
    Column("polled_at", BigInteger),  # its last poll: a stale one is polled again (sweep)
    Column("collected", Boolean, nullable=False, default=False),  # its results are filed
)

# Records replaced by `corral retry`, oldest first.
retry_history = Table(
    "retry_history", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("batch_id", String(64), nullable=False, index=True),
    Column("custom_id", ID, nullable=False),
    Column("record", Text, nullable=False),
    Column("replaced_at", BigInteger, nullable=False),
)
