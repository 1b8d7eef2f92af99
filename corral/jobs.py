"""Sending jobs: one pointer-only `corral.run_job` message per line, by task name."""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery

from corral.celery_app import RUN_JOB_TASK


def send_jobs(app: Celery, batch_id: str, jobs: Iterable[tuple[str, str]]) -> int:
    """Send one message per (custom_id, queue) over one producer connection; returns the count."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for custom_id, queue in jobs:
            app.send_task(RUN_JOB_TASK, args=(batch_id, custom_id), queue=queue,
                          producer=producer)
            sent += 1
    return sent
