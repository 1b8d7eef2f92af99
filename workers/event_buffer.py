"""Task events sent a hundred to a message, in every pool, at most a fifth of a second late.

A worker sends three task events per job (received, started, succeeded). With an event loop
(the threads pool) Celery buffers them but sends each loop turn's as one message, a few events
each; without one (gevent) it sends each event as a message of its own, holding the
dispatcher's lock through the Redis round trip, so 64 greenlets queue up behind it. This
consumer step makes every pool buffer task events and send them as one `task.multi` message
(which Flower and `celery events` unpack) once `EVENTS_PER_MESSAGE` have gathered, or every
`FLUSH_INTERVAL_S`. Each event keeps the time it was made. Heartbeats (the worker group) are
never held back.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.2
EVENTS_PER_MESSAGE = 100


class BufferedTaskEvents(bootsteps.StartStopStep):
    """Buffers the consumer's task events and sends them from a thread of its own."""

    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self._stopped: threading.Event | None = None
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        dispatcher = c.event_dispatcher
        if dispatcher is None:
            return
        dispatcher.buffer_group = frozenset({"task"})
        dispatcher.buffer_limit = EVENTS_PER_MESSAGE
        dispatcher.on_send_buffered = None  # not every event loop turn: the thread flushes
        self._stopped = threading.Event()
        threading.Thread(target=_flush_every, args=(dispatcher, self._stopped),
                         name="corral-task-events", daemon=True).start()

    def stop(self, c: Any) -> None:
        if self._stopped is not None:
            self._stopped.set()
            self._stopped = None
            if c.event_dispatcher is not None:
                _flush(c.event_dispatcher)

    def shutdown(self, c: Any) -> None:
        self.stop(c)


def _flush_every(dispatcher: Any, stopped: threading.Event) -> None:
    while not stopped.wait(FLUSH_INTERVAL_S):
        _flush(dispatcher)


def _flush(dispatcher: Any) -> None:
    # A failed publish keeps the events in the dispatcher's offline buffer, which the
    # consumer sends once it has reconnected.
    try:
        dispatcher.flush(errors=False, groups=True)
    except Exception as err:  # a monitoring event must never stop a worker
        log.debug("task events not sent now: %s", err)
