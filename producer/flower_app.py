"""The Celery app Flower runs on: corral's broker, every model's queue, a worker list kept live."""

from __future__ import annotations

from typing import Any

from flower.app import Flower
from kombu import Queue
from tornado.ioloop import PeriodicCallback

from corral.celery_app import create_app
from corral.config import find_config_path, load_config
from corral.settings import get_settings

app = create_app("corral")
# Flower's Broker page lists the queues that live workers consume, else `task_queues`.
# Declaring one queue per configured model shows every model's backlog, whether or not a
# worker consumes it. Only Flower's process sees this app: workers keep consuming exactly the
# queues they are given.
app.conf.task_queues = [Queue(queue) for queue in sorted(
    {model.queue for model in load_config(find_config_path()).models.values()})]


def refresh_workers(flower: Flower) -> None:
    """Keep `/api/workers` (and the control buttons, which act only on workers listed there)
    to the live fleet.

    Flower inspects the workers once at its start and then only when asked, and never
    forgets one: a worker started later was missing, and a dead one stayed listed. This
    forgets the workers that Flower's events show offline (no heartbeat for a few seconds)
    and inspects again; a worker that comes back is listed at the next refresh. The worker
    API's `timestamp` of each worker tells when it last answered.
    """
    state = flower.events.state
    for name in list(flower.inspector.workers):
        worker = state.workers.get(name)
        if worker is not None and not worker.alive:
            del flower.inspector.workers[name]
    flower.update_workers()


_start = Flower.start


def _start_with_refresh(self: Flower, *args: Any, **kwargs: Any) -> None:
    # Every CORRAL_FLOWER_REFRESH_S: `celery inspect` stats, queues, registered and conf.
    PeriodicCallback(lambda: refresh_workers(self),
                     get_settings().flower_refresh_s * 1000).start()
    _start(self, *args, **kwargs)


# `celery flower` builds and starts its Flower object itself, after loading this module.
Flower.start = _start_with_refresh  # type: ignore[method-assign]
