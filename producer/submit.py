"""`submit`: validate and route every line in one streaming pass, spool it, open the batch.

Memory stays flat however long the file: lines go to the spool as they pass, custom_ids are
remembered as hashes (SeenIds), and only the input order goes to Redis during the pass (under
a TTL, so a refused or interrupted submit leaves nothing that lasts).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import redis

from corral.config import CorralConfig
from corral.records import OutcomeStore, error_record
from corral.redis_keys import BatchKeys
from producer.batches import create_batch, new_batch_id
from producer.reader import read_lines
from producer.router import Router
from producer.seen_ids import SeenIds
from producer.spool import SpoolWriter, read_rejected, spool_root
from producer.validator import AcceptedLine, LineValidator, RejectedLine

ORDER_CHUNK = 1000


@dataclass
class FileCheck:
    """What validating a file found."""

    accepted_by_model: Counter[str] = field(default_factory=Counter)
    rejected: int = 0

    @property
    def accepted(self) -> int:
        """Lines that will run."""
        return sum(self.accepted_by_model.values())

    @property
    def total(self) -> int:
        """Lines that will each end in one terminal record."""
        return self.accepted + self.rejected


class NothingToSubmitError(ValueError):
    """The file has no request lines."""


def checked_lines(path: Path, config: CorralConfig) -> Iterator[AcceptedLine | RejectedLine]:
    """Every line of `path`, validated and routed, in order."""
    validator = LineValidator(Router(config), SeenIds(path))
    for raw in read_lines(path):
        yield validator.check(raw)


def check_file(path: Path, config: CorralConfig,
               on_reject: Callable[[RejectedLine], None],
               on_accept: Callable[[AcceptedLine], None] | None = None) -> FileCheck:
    """Validate and route every line of `path`; report each bad one through `on_reject`."""
    result = FileCheck()
    for checked in checked_lines(path, config):
        if isinstance(checked, AcceptedLine):
            result.accepted_by_model[checked.model.name] += 1
            if on_accept is not None:
                on_accept(checked)
        else:
            result.rejected += 1
            on_reject(checked)
    if result.total == 0:
        raise NothingToSubmitError(f"{path}: no request lines")
    return result


@dataclass
class Intake:
    """A file taken in: its check, the batch id it was stored under, and its spool."""

    check: FileCheck
    batch_id: str
    spool: SpoolWriter


def take_in(path: Path, config: CorralConfig, client: redis.Redis,
            on_reject: Callable[[RejectedLine], None], *, retention_s: int) -> Intake:
    """One pass over `path`: validate, route, spool each line, and store the input order.

    Call `open_batch` to make the batch real, or `discard` to drop what was taken in.
    """
    batch_id = new_batch_id()
    spool = SpoolWriter(spool_root() / batch_id)
    order_key = BatchKeys(batch_id).order
    check = FileCheck()
    order: list[str] = []

    def store_order() -> None:
        pipe = client.pipeline(transaction=False)
        pipe.rpush(order_key, *order)
        pipe.expire(order_key, retention_s)
        pipe.execute()
        order.clear()

    try:
        for checked in checked_lines(path, config):
            if isinstance(checked, AcceptedLine):
                check.accepted_by_model[checked.model.name] += 1
                spool.accept(checked.model.name, checked.custom_id, checked.job())
                order.append(checked.custom_id)
            else:
                check.rejected += 1
                spool.reject(checked.record_id, checked.number, checked.reason)
                on_reject(checked)
                order.append(checked.record_id)
            if len(order) >= ORDER_CHUNK:
                store_order()
        if order:
            store_order()
        spool.close()
    except BaseException:
        discard(client, Intake(check, batch_id, spool))
        raise
    if check.total == 0:
        discard(client, Intake(check, batch_id, spool))
        raise NothingToSubmitError(f"{path}: no request lines")
    return Intake(check, batch_id, spool)


def discard(client: redis.Redis, intake: Intake) -> None:
    """Forget a file that will not run: its spool and its stored order."""
    intake.spool.discard()
    client.delete(BatchKeys(intake.batch_id).order)


def open_batch(client: redis.Redis, outcomes: OutcomeStore, path: Path, config: CorralConfig,
               intake: Intake, *, completion_window: str,
               max_cost_usd: Decimal | None = None) -> str:
    """Create the batch for a file taken in, and file its refused lines as error records.

    Its accepted lines wait in the spool; the feeder sends them (`producer/feeder.py`).
    """
    models = sorted(intake.check.accepted_by_model)
    extra: dict[str, str | int] = {"spool": str(intake.spool.directory),
                                   "spool_host": socket.gethostname()}
    for model, count in intake.check.accepted_by_model.items():
        extra.update({f"lines:{model}": count, f"fed:{model}": 0, f"fed_offset:{model}": 0})
    batch_id = create_batch(client, total=intake.check.total, models=models,
                            input_file=str(path.resolve()), completion_window=completion_window,
                            config_source=config.source, max_cost_usd=max_cost_usd,
                            batch_id=intake.batch_id, extra=extra)
    for record_id, number, reason in read_rejected(intake.spool.directory):
        outcomes.record(batch_id, error_record(record_id, code="invalid_request",
                                               message=f"line {number}: {reason}"))
    return batch_id
