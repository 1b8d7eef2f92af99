"""Celery tasks, thin as a web view: arguments are pointers, the job service does the work."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.backends.base import DisabledBackend
from celery.exceptions import Reject, Retry
from celery.signals import task_revoked
from redis import RedisError
from sqlalchemy.exc import DBAPIError

from corral.celery_app import BATCH_POLL_TASK, BATCH_QUEUE, BATCH_SUBMIT_TASK, RUN_JOB_TASK
from corral.errors import CorralError
from corral.logs import job_context
from corral.store.writer import StoreUnavailableError
from workers.app import app
from workers.delivery import RetryLater, Summary
from workers.rate_limiter import ShuttingDownError
from workers.runtime import batch_lane, job_runner

log = logging.getLogger(__name__)


# max_retries=None: corral counts attempts itself (CORRAL_MAX_ATTEMPTS) and ends every line
# with a record; Celery's own cap (3 by default) would drop a line without one.
# backend: corral stores no task results. Celery's default keeps one result backend per thread,
# and a gevent pool runs each task on a new greenlet, so it would build one for every job (about
# a tenth of a gevent worker's time); this one stateless backend serves them all.
@app.task(name=RUN_JOB_TASK, bind=True, max_retries=None, backend=DisabledBackend(app))
def run_job(self: Task, batch_id: str, custom_id: str) -> Summary:
    """Run one line of a batch; a retryable failure comes back later as a new message.

    Returns what the line came to (outcome, model, tokens, cost: no prompt, no key), which
    the task-succeeded event carries to Flower as the task's result.
    """
    with job_context(batch_id, custom_id):  # every log line of the job names its line
        return _run_line(self, batch_id, custom_id)


def _run_line(task: Task, batch_id: str, custom_id: str) -> Summary:
    runner = job_runner()
    try:
        # The queue names the line's model: its capacity is taken as the line starts.
        delivery = runner.run(batch_id, custom_id, _queue_of(task.request))
    except ShuttingDownError as err:
        raise Reject("worker stopping before the call", requeue=True) from err
    except RedisError as err:
        # corral's records live in Redis: without it the line cannot end, so the message goes
        # back (or stays unacked until the visibility timeout) rather than being dropped.
        log.warning("Redis error on %s/%s, requeueing: %s", batch_id, custom_id, err)
        raise Reject(f"Redis error: {type(err).__name__}", requeue=True) from err
    except (StoreUnavailableError, DBAPIError) as err:
        # Nothing is acked before its record is committed: the message goes back.
        log.warning("record store error on %s/%s, requeueing: %s", batch_id, custom_id, err)
        raise Reject(f"record store error: {type(err).__name__}", requeue=True) from err
    except Exception as err:
        # A bug must not silently drop a line: it ends with a record that says what broke.
        log.exception("unexpected error on %s/%s", batch_id, custom_id)
        return runner.fail_internal(batch_id, custom_id, err).summary()
    if not isinstance(delivery, RetryLater):
        return delivery.summary()
    log.info("retry %s/%s in %.2f s: %s", batch_id, custom_id, delivery.delay_s,
             delivery.reason)
    try:
        raise task.retry(countdown=delivery.delay_s)
    except Retry:
        raise
    except Exception as err:
        # The retry message could not be sent: put this one back rather than ack it.
        log.warning("could not schedule the retry of %s/%s: %s", batch_id, custom_id, err)
        raise Reject(f"retry not sent: {type(err).__name__}", requeue=True) from err


@task_revoked.connect(sender=run_job)
def _end_revoked_line(request: Any, terminated: bool = False, **_: object) -> None:
    """A job revoked before it ran (Flower's revoke button, `celery control revoke`) is acked
    and dropped by Celery: end its line with a `revoked` record, so it never vanishes."""
    if terminated:
        return  # it was running: its own outcome ends the line
    batch_id, custom_id = request.args
    try:
        job_runner().end_revoked(batch_id, custom_id, _queue_of(request), request.id)
    except RedisError as err:
        # The message is gone; the reconciler sends the line again (it has no record).
        log.warning("could not record the revoke of %s/%s: %s", batch_id, custom_id, err)


def _queue_of(request: Any) -> str | None:
    """The queue a task's message came from (corral.<model>), when Celery says."""
    return (request.delivery_info or {}).get("routing_key")


# The batch lane: ids in, ids out; a failure (the provider, Redis or the store unreachable)
# tries again a poll interval later, never drops the provider batch.
@app.task(name=BATCH_SUBMIT_TASK, bind=True, max_retries=None, backend=DisabledBackend(app))
def submit_to_batch_lane(self: Task, batch_id: str) -> list[str]:
    """Send a batch's batch-lane lines to their providers' Batch APIs, then poll each."""
    lane = batch_lane()
    try:
        created = lane.submit(batch_id)
    except (CorralError, RedisError, DBAPIError) as err:
        log.warning("batch %s: the batch lane could not submit yet: %s", batch_id, err)
        raise self.retry(countdown=lane.poll_s) from None
    if created is None:  # another process is submitting the batch's lines: look again
        raise self.retry(countdown=lane.poll_s)
    for provider_batch_id in created:
        poll_batch_lane.apply_async((provider_batch_id,), countdown=lane.poll_s,
                                    queue=BATCH_QUEUE)
    return created


@app.task(name=BATCH_POLL_TASK, bind=True, max_retries=None, backend=DisabledBackend(app))
def poll_batch_lane(self: Task, provider_batch_id: str) -> dict[str, Any]:
    """Look at one provider batch (file, hedge or cancel it); again later until collected."""
    lane = batch_lane()
    try:
        polled = lane.poll(provider_batch_id)
    except (CorralError, RedisError, DBAPIError) as err:
        log.warning("provider batch %s: poll failed, again in %g s: %s", provider_batch_id,
                    lane.poll_s, err)
        raise self.retry(countdown=lane.poll_s) from None
    if polled.again:
        poll_batch_lane.apply_async((provider_batch_id,), countdown=lane.poll_s,
                                    queue=BATCH_QUEUE)
    if polled.room_freed:
        # Lines held back by the model's enqueued-token limit may fit now, in any batch.
        for batch_id in lane.batches_waiting(provider_batch_id):
            submit_to_batch_lane.apply_async((batch_id,), queue=BATCH_QUEUE)
    return {"filed": polled.filed, "sent_live": polled.sent_live, "hedged": polled.hedged}
