"""The Celery app factory shared by the producer (sends by name) and the workers (run tasks)."""

from __future__ import annotations

from celery import Celery

from corral.redis_client import tls_options_for

RUN_JOB_TASK = "corral.run_job"
# The batch lane (workers/batch_lane.py): its tasks travel on their own queue, which every
# worker consumes; their arguments are ids only.
BATCH_QUEUE = "corral.batch"
BATCH_SUBMIT_TASK = "corral.batch_lane.submit"
BATCH_POLL_TASK = "corral.batch_lane.poll"


def create_app(main: str = "corral", *, broker_url: str | None = None) -> Celery:
    """A Celery app configured from the `celeryconfig` module (values from the environment).

    Args:
        main: the app's name.
        broker_url: overrides the broker (a process that changed its environment after
            `celeryconfig` was first imported passes the URL it resolved).
    """
    app = Celery(main)
    app.config_from_object("celeryconfig")
    if broker_url:
        app.conf.broker_url = broker_url
        app.conf.broker_use_ssl = tls_options_for(broker_url) or None
    return app

