"""`submit`: validate the whole file first, then create the batch and enqueue it, streaming."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import redis
from celery import Celery

from corral.config import CorralConfig
from producer.batches import create_batch
from producer.enqueue import Enqueuer
from producer.reader import read_lines
from producer.router import Router
from producer.validator import AcceptedLine, LineValidator, RejectedLine


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


def check_file(path: Path, config: CorralConfig,
               on_reject: Callable[[RejectedLine], None],
               on_accept: Callable[[AcceptedLine], None] | None = None) -> FileCheck:
    """Validate and route every line of `path`; report each bad one through `on_reject`."""
    result = FileCheck()
    validator = LineValidator(Router(config))
    for raw in read_lines(path):
        checked = validator.check(raw)
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


def enqueue_file(path: Path, config: CorralConfig, check: FileCheck, client: redis.Redis,
                 app: Celery, *, completion_window: str,
                 max_cost_usd: Decimal | None = None) -> str:
    """Create the batch and enqueue every accepted line (rejected ones become error records).

    The file is read a second time rather than held in memory; validation is deterministic,
    so the second pass sees exactly what `check_file` saw.
    """
    batch_id = create_batch(client, total=check.total, models=sorted(check.accepted_by_model),
                            input_file=str(path.resolve()), completion_window=completion_window,
                            config_source=config.source, max_cost_usd=max_cost_usd)
    enqueue_lines(path, config, client, app, batch_id)
    return batch_id


def enqueue_lines(path: Path, config: CorralConfig, client: redis.Redis, app: Celery,
                  batch_id: str, *, skip_lines: int = 0) -> int:
    """Validate `path` again and enqueue its lines after the first `skip_lines` checked ones.

    Returns:
        How many jobs were sent.
    """
    enqueuer = Enqueuer(client, app, batch_id)
    validator = LineValidator(Router(config))
    for index, raw in enumerate(read_lines(path)):
        checked = validator.check(raw)  # also for skipped lines: duplicates are found the same
        if index >= skip_lines:
            enqueuer.add(checked)
    enqueuer.flush()
    return enqueuer.enqueued
