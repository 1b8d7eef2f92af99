"""What every CLI command shares: exit codes, the config, settings, Redis and the store."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

import click
import redis
from sqlalchemy.exc import DBAPIError

from corral.errors import BatchNotFoundError, ConfigError, RedisUnavailableError
from corral.feeder import FeederBusyError
from corral.store.intake import IntakeRefusedError
from corral.store.writer import StoreUnavailableError
from producer.batches import read_batch
from producer.client import Client, InvalidLinesError
from producer.local_stack import ProcessFailedError
from producer.submit import NothingToSubmitError
from producer.validator import RejectedLine

EXIT_OK, EXIT_FAILED_LINES, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NO_BATCH = 0, 1, 2, 3, 4
EXIT_BUG = 70  # sysexits' EX_SOFTWARE: corral itself failed


def exit_code_for(err: Exception) -> int:
    """The exit code (docs/concepts.md) of an error that ends a command."""
    if isinstance(err, BatchNotFoundError):
        return EXIT_NO_BATCH
    if isinstance(err, RedisUnavailableError | redis.RedisError | DBAPIError
                  | StoreUnavailableError):
        return EXIT_UNREACHABLE  # unreachable, or refusing writes (out of memory, read-only)
    if isinstance(err, ProcessFailedError):
        return EXIT_UNREACHABLE  # `run`/`demo` could not start Redis, a worker, the simulator
    if isinstance(err, ConfigError | NothingToSubmitError | ValueError | IntakeRefusedError):
        return EXIT_USAGE  # (the store refused the file: a repeated custom_id or line)
    # Exit 1 is only for a batch that ended with failed lines; any other explained error is
    # a usage error.
    return EXIT_USAGE


Session = Client  # what every command is handed: the Python API's client


def report_rejected(line: RejectedLine) -> None:
    """`line N: reason` on stderr."""
    click.echo(f"line {line.number}: {line.reason}", err=True)


def submit_batch(session: Session, file: Path, *, skip_invalid: bool,
                 completion_window: str = "24h", max_cost_usd: Decimal | None = None,
                 deadline: str | None = None) -> str:
    """Validate all of `file` into the store, open the batch and fill the queues' first share.

    Exits 2 with nothing stored when a line is bad (unless `skip_invalid`). The rest of the
    lines wait in the store for a feeder: `Client.feed_in_thread`, or any worker's feeding
    loop.
    """
    try:
        batch = session.submit(file, skip_invalid=skip_invalid,
                               completion_window=completion_window, max_cost_usd=max_cost_usd,
                               deadline=deadline, on_rejected=report_rejected)
    except InvalidLinesError as err:
        click.echo(f"corral: {err.count} bad line(s) in {file}; nothing enqueued "
                   "(--skip-invalid runs the valid lines)", err=True)
        raise SystemExit(EXIT_USAGE) from None
    done = batch.submission
    assert done is not None, "a batch this process submitted"
    by_model = ", ".join(f"{name} {count}" for name, count in
                         sorted(done.accepted_by_model.items()))
    click.echo(f"corral: batch {batch.id}: {done.accepted} lines accepted ({by_model})"
               + (f", {done.rejected} rejected" if done.rejected else "")
               + f"; {done.queued} queued now, "
               f"{done.accepted - done.queued - done.on_batch_lane} wait in the record store"
               + (f", {done.on_batch_lane} go to the providers' Batch APIs" if done.plan
                  else ""), err=True)
    if done.plan is not None:
        click.echo(f"corral: batch {batch.id}: plan for the deadline: "
                   f"${done.plan.cost_usd:.6f}, finishing in about {done.plan.finish_s:,.0f} s",
                   err=True)
    return batch.id


def run_feeder(session: Session, batch_id: str) -> int:
    """Feed the batch from this process until every line is sent; returns the lines sent."""
    feeder = session.feeder(batch_id)
    unfed = feeder.state().unfed
    if not unfed:
        return 0
    click.echo(f"corral: batch {batch_id}: feeding {unfed} lines from the record store",
               err=True)
    try:
        sent = feeder.run()
    except FeederBusyError:
        click.echo(f"corral: batch {batch_id} is already being fed by another process",
                   err=True)
        return 0
    click.echo(f"corral: batch {batch_id}: {sent} lines fed, {feeder.state().unfed} left", err=True)
    return sent


def finish_submit(session: Session, batch_id: str, *, wait: bool, as_json: bool) -> None:
    """Print the answer of `submit`, waiting first if asked."""
    batch = read_batch(session.store, batch_id)
    if wait:
        batch = session.batch(batch_id).wait(progress=sys.stderr.isatty())
    click.echo(json.dumps(batch) if as_json else batch_id)
    if wait and batch["request_counts"]["failed"]:
        raise SystemExit(EXIT_FAILED_LINES)


