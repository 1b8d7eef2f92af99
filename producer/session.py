"""What every CLI command shares: exit codes, the config, settings and a Redis client."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from functools import cached_property
from pathlib import Path

import click
import redis
from celery import Celery

from corral.config import CorralConfig, find_config_path, load_config
from corral.errors import BatchNotFoundError, ConfigError, RedisUnavailableError
from corral.records import OutcomeStore
from corral.redis_client import connect
from corral.settings import Settings, get_settings
from producer.batches import read_batch
from producer.submit import NothingToSubmitError, check_file, enqueue_file
from producer.validator import RejectedLine
from producer.views import wait_for_batch

EXIT_OK, EXIT_FAILED_LINES, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NO_BATCH = 0, 1, 2, 3, 4


def exit_code_for(err: Exception) -> int:
    """DESIGN §3's exit codes for an error that ends a command."""
    if isinstance(err, BatchNotFoundError):
        return EXIT_NO_BATCH
    if isinstance(err, RedisUnavailableError | redis.ConnectionError | redis.TimeoutError):
        return EXIT_UNREACHABLE
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
        import os

        os.environ["CORRAL_REDIS_URL"] = url
        get_settings.cache_clear()
        for cached in ("redis", "outcomes", "app"):
            self.__dict__.pop(cached, None)

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings.redis_url)

    @cached_property
    def outcomes(self) -> OutcomeStore:
        return OutcomeStore(self.redis, retention_s=self.settings.retention_s)

    @cached_property
    def app(self) -> Celery:
        from corral.celery_app import create_app

        return create_app(broker_url=self.settings.effective_broker_url)


def report_rejected(line: RejectedLine) -> None:
    """`line N: reason` on stderr."""
    click.echo(f"line {line.number}: {line.reason}", err=True)


def submit_batch(session: Session, file: Path, *, skip_invalid: bool,
                 completion_window: str = "24h", max_cost_usd: Decimal | None = None) -> str:
    """Validate all of `file`, then enqueue it; exits 2 with nothing enqueued on bad lines."""
    config = session.config
    check = check_file(file, config, report_rejected)
    if check.rejected and not skip_invalid:
        click.echo(f"corral: {check.rejected} bad line(s) in {file}; nothing enqueued "
                   "(--skip-invalid runs the valid lines)", err=True)
        raise SystemExit(EXIT_USAGE)
    batch_id = enqueue_file(file, config, check, session.redis, session.app,
                            completion_window=completion_window, max_cost_usd=max_cost_usd)
    by_model = ", ".join(f"{name} {count}" for name, count in
                         sorted(check.accepted_by_model.items()))
    click.echo(f"corral: batch {batch_id}: {check.accepted} lines enqueued ({by_model})"
               + (f", {check.rejected} rejected" if check.rejected else ""), err=True)
    return batch_id


def finish_submit(session: Session, batch_id: str, *, wait: bool, as_json: bool) -> None:
    """Print the answer of `submit`, waiting first if asked."""
    batch = read_batch(session.redis, batch_id)
    if wait:
        batch = wait_for_batch(session.redis, batch_id, show_progress=sys.stderr.isatty())
    click.echo(json.dumps(batch) if as_json else batch_id)
    if wait and batch["request_counts"]["failed"]:
        raise SystemExit(EXIT_FAILED_LINES)


