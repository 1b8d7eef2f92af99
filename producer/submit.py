"""`submit`: validate and route every line in one streaming pass into the record store, and
open the batch.

Memory stays flat however long the file: lines go to the store as they pass (one
transaction: a refused or interrupted submit leaves nothing), and custom_ids are remembered
as hashes (SeenIds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import redis

from corral.batch_state import batch_meta, put_batch_state
from corral.config import CorralConfig
from corral.store import Store
from corral.store.intake import LineIntake
from producer.batches import batch_options, expires_at
from producer.parallel_intake import CheckedJob, checked_jobs, checked_lines
from producer.validator import AcceptedLine, RejectedLine


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


def take_in(path: Path, config: CorralConfig, intake: LineIntake,
            on_reject: Callable[[RejectedLine], None], *, processes: int = 0,
            lane_of: Callable[[str, str, str], tuple[str, str]] | None = None) -> FileCheck:
    """One pass over `path`: validate and route each line into `intake` (the store's open
    transaction: nothing of it lasts unless the caller finishes it), a big file's lines
    validated in `processes` worker processes (0: one per CPU; `checked_jobs`). `lane_of`
    (custom_id, model, job) puts each accepted line on its lane, with the job to store
    (default: live, as validated)."""
    check = FileCheck()
    for checked in checked_jobs(path, config, processes):
        if isinstance(checked, CheckedJob):
            check.accepted_by_model[checked.model] += 1
            lane, job = lane_of(checked.custom_id, checked.model, checked.job) if lane_of \
                else ("live", checked.job)
            intake.accept(checked.custom_id, checked.number, checked.model, job, lane)
        else:
            check.rejected += 1
            intake.reject(checked.record_id, checked.number, checked.reason)
            on_reject(checked)
    if check.total == 0:
        raise NothingToSubmitError(f"{path}: no request lines")
    return check


def open_batch(client: redis.Redis, store: Store, path: Path, config: CorralConfig,
               batch_id: str, intake: LineIntake, check: FileCheck, created_at: int, *,
               completion_window: str, max_cost_usd: Decimal | None = None,
               input_file: str | None = None, deadline_at: int | None = None,
               batch_lane_by_model: dict[str, int] | None = None) -> str:
    """Commit a file taken in as a batch created at `created_at` (s, the Redis clock, as the
    intake's), with its lines and refused lines' records, then give it its state in Redis;
    the feeder sends its lines from the store (`corral/feeder.py`). `input_file` names the
    source in the batch object (default: the file's absolute path); lines on the batch lane
    (`batch_lane_by_model`) are the batch lane's to send, by `deadline_at`."""
    intake.finish(total=check.total, completion_window=completion_window,
                  expires_at=expires_at(created_at, completion_window),
                  input_file=input_file or str(path.resolve()),
                  options=batch_options(sorted(check.accepted_by_model), config.source or "",
                                        max_cost_usd, deadline_at))
    row = store.batches.get(batch_id)
    assert row is not None, "a batch just committed"
    on_batch_lane = batch_lane_by_model or {}
    put_batch_state(client, batch_meta(row, {model: count - on_batch_lane.get(model, 0)
                                             for model, count in
                                             check.accepted_by_model.items()}))
    return batch_id
