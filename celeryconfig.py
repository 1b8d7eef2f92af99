"""Celery's settings module for corral; every value comes from corral's settings (environment)."""

# Underscored names: Celery's `inspect conf` (and Flower's worker page) lists every other name.
from corral.redis_client import tls_options_for as _tls_options_for
from corral.settings import get_settings as _get_settings

_settings = _get_settings()

broker_url = _settings.effective_broker_url
# A rediss:// broker verifies the server's certificate with corral's TLS settings (kombu alone
# would connect without verifying); ssl_* query parameters in the URL replace these.
broker_use_ssl = _tls_options_for(broker_url, _settings) or None
broker_connection_retry_on_startup = True
# A job lost with its worker comes back after the visibility timeout (see corral.settings for
# the check against the other timings); kombu looks for such jobs every restore interval
# (its default, 10 s x a throttle of 10, would add up to 100 s to every recovery).
broker_transport_options = {
    "visibility_timeout": _settings.visibility_timeout_s,
    "unacked_restore_interval": max(1, min(10, int(_settings.visibility_timeout_s / 10))),
    "unacked_restore_throttle": 1,
    "socket_timeout": 30,
    "socket_connect_timeout": 5,
    # max_connections is set per worker from its concurrency (workers/app.py).
}

task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"

# At-least-once: ack after the job ran, one prefetched message per slot, and a job whose
# worker process died goes back to the queue. corral's own write-once records make it complete.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Keep running jobs running when the broker connection drops: the threads pool cannot cancel
# them anyway (and trying leaves the consumer stalled after it reconnects). Their acks are
# lost with the connection, so the broker redelivers them after the visibility timeout, and
# the redelivery finds the line's record and does nothing.
worker_cancel_long_running_tasks_on_connection_loss = False

# corral keeps its own records: no result backend.
task_ignore_result = True
result_backend = None

# Broadcast remote control (`celery inspect`/`control`): Flower's worker pages, pool and queue
# buttons and revoke. Its second channel on the worker's broker connection is what let kombu
# crash a worker when Redis restarted; workers/kombu_lost_connection.py closes that gap.
# CORRAL_REMOTE_CONTROL=false turns it off (Flower then sees workers through events only).
worker_enable_remote_control = _settings.remote_control

# Task events feed Flower and `celery events`; the arguments are pointers only. Workers send
# received, started and succeeded (or retried); the producer sends task-sent, a thousand per
# message (corral/sent_events.py). CORRAL_TASK_EVENTS=false turns them all off: Flower then
# shows no tasks (and re-enables the workers' events every 5 s unless run with
# --enable_events=False). Worker heartbeats, which Flower's worker list needs, stay on.
worker_send_task_events = _settings.task_events
task_send_sent_event = _settings.task_events

task_default_queue = "corral.default"

# Warm shutdown (SIGTERM) lets running jobs finish; corral ends its waits for rate-limit
# capacity at once and hands those jobs back, so a stop takes at most one request deadline.
# A cold shutdown (SIGQUIT) first allows the same time, then requeues what still runs.
worker_soft_shutdown_timeout = _settings.request_deadline_s
