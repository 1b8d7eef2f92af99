"""The Celery app Flower runs on: corral's broker, with every configured model's queue declared."""

from __future__ import annotations

from kombu import Queue

from corral.celery_app import create_app
from corral.config import find_config_path, load_config

app = create_app("corral")
# Flower's Broker page lists the queues that workers report over remote control, which corral
# leaves off (see celeryconfig); with no reports it lists `task_queues`. Declaring one queue per
# configured model shows every model's backlog, whether or not a worker consumes it. Only
# Flower's process sees this app: workers keep consuming exactly the queues they are given.
app.conf.task_queues = [Queue(queue) for queue in sorted(
    {model.queue for model in load_config(find_config_path()).models.values()})]
