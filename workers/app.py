"""The workers' Celery app: `python -m celery -A workers.app worker …` loads this module."""

import logging
import sys
from contextvars import Token
from typing import Any, NoReturn

from celery import concurrency
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_after_setup,
    celeryd_init,
    task_postrun,
    task_prerun,
    worker_init,
    worker_shutting_down,
)

from corral.celery_app import RUN_JOB_TASK, create_app
from corral.errors import ConfigError, CorralError
from corral.logs import bind_job, format_line, unbind_job, use_json
from corral.redis_client import redact_url
from corral.redis_durability import OVERRIDE, read_durability
from corral.settings import get_settings
from workers import kombu_client_reuse, kombu_lost_connection, kombu_restore_without_loop
from workers.event_buffer import BufferedTaskEvents
from workers.pools import SLOT_GROWTH

app = create_app("corral")
app.conf.include = ["workers.tasks"]
app.steps["consumer"].add(BufferedTaskEvents)
kombu_client_reuse.install()
kombu_lost_connection.install()
kombu_restore_without_loop.install()
# `--pool threads` and `--pool gevent` get corral's pools: Celery's, able to grow and shrink.
concurrency.ALIASES.update(threads="workers.pools.thread:ThreadTaskPool",
                           gevent="workers.pools.gevent:GeventTaskPool")


# Connections a worker's consumer needs besides one per task slot (its BRPOP, the restore of
# unacked messages, task events).
CONSUMER_CONNECTIONS = 10


@celeryd_init.connect
def _size_broker_pool(conf: Any, options: dict[str, Any], **_: object) -> None:
    # kombu's Redis transport files every delivery as unacked and every ack through one pool
    # of 10 connections (its default), and in a gevent pool each task slot acks on its own:
    # with more slots than that the pool runs dry under load (MaxConnectionsError: an ack
    # lost, so the message is redelivered after the visibility timeout). One per slot the
    # worker may grow to (redis-py opens them only when they are needed).
    slots = options.get("concurrency") or conf.worker_concurrency or 1
    conf.broker_transport_options = {
        **(conf.broker_transport_options or {}),
        "max_connections": slots * SLOT_GROWTH + CONSUMER_CONNECTIONS}


# What worker_init found and has to say once Celery has set up logging: (level, message).
_startup_lines: list[tuple[int, str]] = []


@worker_init.connect
def _fail_fast_on_bad_setup(**_: object) -> None:
    # Build the runner before consuming: a bad config, an unreachable Redis or one that may
    # evict keys stops the worker at start with one clear message instead of failing every
    # job. SystemExit, because Celery logs and swallows ordinary exceptions raised by signal
    # handlers.
    from workers.runtime import batch_lane_sweep, feeding_loop, job_runner, reconciler

    try:
        job_runner()
        settings = get_settings()
        where = f"Redis at {redact_url(settings.redis_url)}"
        durability = read_durability(settings.redis_url)
        if durability.error and not settings.allow_evicting_redis:
            _refuse_to_start(f"{where}: {durability.error}; refusing to start (set "
                             f"{OVERRIDE}=true to start anyway)", 3)
        reconciler().start()
        feeding_loop().start()
        batch_lane_sweep().start()
    except CorralError as err:
        _refuse_to_start(str(err), 2 if isinstance(err, ConfigError) else 3, err)
    level = logging.WARNING if durability.warning else logging.INFO
    _startup_lines.append((level, "; ".join(filter(None, (
        f"{where} durability: {durability.summary}", durability.warning)))))
    if durability.error:
        _startup_lines.append((logging.WARNING, f"{where}: {durability.error}; starting anyway "
                                                f"because {OVERRIDE} is set"))


def _refuse_to_start(message: str, exit_code: int, cause: BaseException | None = None) \
        -> NoReturn:
    # Celery has not set up logging yet: write the line in the chosen format ourselves.
    print(format_line(__name__, logging.CRITICAL, f"corral worker: {message}",
                      _log_settings()[0]),
          file=sys.stderr, flush=True)
    raise SystemExit(exit_code) from cause


@celeryd_after_setup.connect
def _log_startup_lines(**_: object) -> None:
    logger = logging.getLogger(__name__)
    for level, message in _startup_lines:
        logger.log(level, message)
    _startup_lines.clear()


def _log_settings() -> tuple[str, bool]:
    """CORRAL_LOG_FORMAT and CORRAL_LOG_EACH_JOB; the defaults when the settings themselves
    are what is wrong (that error is reported at worker_init)."""
    try:
        settings = get_settings()
    except ConfigError:
        return "text", False
    return settings.log_format, settings.log_each_job


# Loggers that write an INFO line for every job: Celery's two (received, succeeded) and
# httpx's (the provider request and its status).
PER_JOB_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "httpx")


@after_setup_logger.connect
@after_setup_task_logger.connect
def _use_log_format(logger: logging.Logger, **_: object) -> None:
    log_format, log_each_job = _log_settings()
    if log_format == "json":
        use_json(logger)
    if not log_each_job:
        for name in PER_JOB_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


# run_job tags corral's own lines with its line; these tag Celery's lines about the same job
# too, which it writes after the task function has returned (succeeded, retry, failed).
_job_tokens: dict[str, Token[tuple[str, str] | None]] = {}


@task_prerun.connect
def _tag_job_lines(task_id: str, task: Any, args: tuple[Any, ...] = (), **_: object) -> None:
    if task.name == RUN_JOB_TASK and len(args) == 2:
        _job_tokens[task_id] = bind_job(str(args[0]), str(args[1]))


@task_postrun.connect
def _untag_job_lines(task_id: str, **_: object) -> None:
    token = _job_tokens.pop(task_id, None)
    if token is not None:
        unbind_job(token)


@worker_shutting_down.connect
def _stop_waiting_for_capacity(**_: object) -> None:
    from workers.runtime import batch_lane_sweep, feeding_loop, job_runner, reconciler

    reconciler().stop()
    feeding_loop().stop()
    batch_lane_sweep().stop()
    job_runner().stop_waiting()
