"""Celery's settings module for corral; every value comes from corral's settings (environment)."""

from corral.settings import get_settings

_settings = get_settings()

broker_url = _settings.effective_broker_url
broker_connection_retry_on_startup = True
# A job lost with its worker comes back after this long; see corral.settings for the check.
broker_transport_options = {"visibility_timeout": _settings.visibility_timeout_s}

task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"

# At-least-once: ack after the job ran, one prefetched message per slot, and a job whose
# worker process died goes back to the queue. corral's own write-once records make it complete.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_cancel_long_running_tasks_on_connection_loss = True

# corral keeps its own records: no result backend.
task_ignore_result = True
result_backend = None

# Task events feed Flower and `celery events`; the arguments are pointers only.
worker_send_task_events = True
task_send_sent_event = True

task_default_queue = "corral.default"
