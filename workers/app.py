"""The workers' Celery app: `python -m celery -A workers.app worker …` loads this module."""

import sys

from celery.signals import worker_init, worker_shutting_down

from corral.celery_app import create_app
from corral.errors import ConfigError, CorralError

app = create_app("corral")
app.conf.include = ["workers.tasks"]


@worker_init.connect
def _fail_fast_on_bad_setup(**_: object) -> None:
    # Build the runner before consuming: a bad config or unreachable Redis stops the worker at
    # start with one clear message instead of failing every job. SystemExit, because Celery
    # logs and swallows ordinary exceptions raised by signal handlers.
    from workers.runtime import job_runner, reconciler

    try:
        job_runner()
        reconciler().start()
    except CorralError as err:
        print(f"corral worker: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2 if isinstance(err, ConfigError) else 3) from err


@worker_shutting_down.connect
def _stop_waiting_for_capacity(**_: object) -> None:
    from workers.runtime import job_runner, reconciler

    reconciler().stop()
    job_runner().stop_waiting()
