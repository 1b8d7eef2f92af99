"""What every CLI command shares: exit codes, the config, settings, Redis and the store."""

from __future__ import annotations

import json
import os
import sys
import threading
from decimal import Decimal
from functools import cached_property
from pathlib import Path

import click
import redis
from celery import Celery
from sqlalchemy.exc import DBAPIError

from corral.config import CorralConfig, find_config_path, load_config
from corral.errors import BatchNotFoundError, ConfigError, CorralError, RedisUnavailableError
from corral.feeder import Feeder, FeederBusyError
from corral.redis_client import connect
from corral.settings import Settings, get_settings
from corral.store import Store, open_store
from corral.store.intake import LineIntake
from corral.store.writer import StoreUnavailableError
from producer.batches import new_batch_id, read_batch
from producer.submit import NothingToSubmitError, open_batch, take_in
from producer.validator import RejectedLine
from producer.views import wait_for_batch

EXIT_OK, EXIT_FAILED_LINES, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NO_BATCH = 0, 1, 2, 3, 4
EXIT_BUG = 70  # sysexits' EX_SOFTWARE: corral itself failed


def exit_code_for(err: Exception) -> int:
    """DESIGN §3's exit codes for an error that ends a command."""
    if isinstance(err, BatchNotFoundError):
        return EXIT_NO_BATCH
    if isinstance(err, RedisUnavailableError | redis.RedisError | DBAPIError
                  | StoreUnavailableError):
        return EXIT_UNREACHABLE  # unreachable, or refusing writes (out of memory, read-only)
    if isinstance(err, ConfigError | NothingToSubmitError | ValueError):
        return EXIT_USAGE
    return EXIT_FAILED_LINES


class Session:
    """What commands share: the config path, settings, and lazily a Redis client."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path

    @cached_property
    def config(self) -> CorralConfig:
        return load_config(find_config_path(self.config_path))

    @property
    def settings(self) -> Settings:
        return get_settings()

    def use_config(self, path: str) -> None:
        """Use the config at `path` from now on."""
        self.config_path = path
        self.__dict__.pop("config", None)

    def use_redis(self, url: str) -> None:
        """Point this process (and its settings) at another Redis, e.g. a private one."""
        os.environ["CORRAL_REDIS_URL"] = url
        get_settings.cache_clear()
        for cached in ("redis", "app"):
            self.__dict__.pop(cached, None)

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings.redis_url)

    @property
    def store(self) -> Store:
        """The record store (CORRAL_STORE_URL, else the default SQLite file)."""
        return open_store()

    def feeder(self, batch_id: str) -> Feeder:
        """A feeder for one batch, with this session's clients and queue depth."""
        return Feeder(self.redis, self.store, self.app, self.config, batch_id,
                      depth=self.settings.queue_depth)

    @cached_property
    def app(self) -> Celery:
        from corral.celery_app import create_app

        return create_app(broker_url=self.settings.effective_broker_url)


def report_rejected(line: RejectedLine) -> None:
    """`line N: reason` on stderr."""
    click.echo(f"line {line.number}: {line.reason}", err=True)


def submit_batch(session: Session, file: Path, *, skip_invalid: bool,
                 completion_window: str = "24h", max_cost_usd: Decimal | None = None) -> str:
    """Validate all of `file` into the store, open the batch and fill the queues' first share.

    Exits 2 with nothing stored when a line is bad (unless `skip_invalid`). The rest of the
    lines wait in the store for a feeder: `feed_in_thread`, or any worker's feeding loop.
    """
    config = session.config
    client = session.redis  # unreachable: exit 3 before reading the file
    created_at, _ = client.time()  # the Redis clock, which the workers' checks also use
    store = session.store
    batch_id = new_batch_id()
    with LineIntake(store.engine, batch_id, clock=lambda: created_at) as intake:
        check = take_in(file, config, intake, report_rejected)
        if check.rejected and not skip_invalid:
            click.echo(f"corral: {check.rejected} bad line(s) in {file}; nothing enqueued "
                       "(--skip-invalid runs the valid lines)", err=True)
            raise SystemExit(EXIT_USAGE)  # leaving the block rolls the intake back
        open_batch(client, store, file, config, batch_id, intake, check, created_at,
                   completion_window=completion_window, max_cost_usd=max_cost_usd)
    feeder = session.feeder(batch_id)
    queued = 0
    with feeder.holding_lock():  # a worker's feeding loop may look at the new batch meanwhile
        while sent := feeder.feed_once():
            queued += sent
    by_model = ", ".join(f"{name} {count}" for name, count in
                         sorted(check.accepted_by_model.items()))
    click.echo(f"corral: batch {batch_id}: {check.accepted} lines accepted ({by_model})"
               + (f", {check.rejected} rejected" if check.rejected else "")
               + f"; {queued} queued now, {check.accepted - queued} wait in the record store",
               err=True)
    return batch_id


def feed_in_thread(session: Session, batch_id: str) -> Feeder:
    """Feed the rest of the batch from a thread of this process (stopped with the batch);
    workers take over if this process dies."""
    feeder = session.feeder(batch_id)
    if feeder.state().unfed:
        threading.Thread(target=_feed_quietly, args=(feeder, batch_id), name="corral-feeder",
                         daemon=True).start()
    return feeder


def _feed_quietly(feeder: Feeder, batch_id: str) -> None:
    """Run a feeder thread whose errors end in one line: the workers' feeding loops go on
    with the batch."""
    try:
        feeder.run()
    except FeederBusyError:
        pass  # a worker's feeding loop has the batch: it feeds the rest
    except (CorralError, redis.RedisError) as err:
        click.echo(f"corral: batch {batch_id}: this process stopped feeding ({err}); the "
                   "workers feed the rest", err=True)


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
        feeder = feed_in_thread(session, batch_id)
        try:
            batch = wait_for_batch(session.store, batch_id, show_progress=sys.stderr.isatty())
        finally:
            feeder.stop()
    click.echo(json.dumps(batch) if as_json else batch_id)
    if wait and batch["request_counts"]["failed"]:
        raise SystemExit(EXIT_FAILED_LINES)


