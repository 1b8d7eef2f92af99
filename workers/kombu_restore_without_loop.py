"""kombu's Redis transport restores unacknowledged messages in gevent workers too, on time.

A job whose worker took it from the queue but never acked it (the worker died, or Redis
restarted between the delivery and the ack) waits in kombu's `unacked` hash until a consumer
restores it, once it is older than the visibility timeout. With an event loop (the threads
pool) kombu does that on a timer, every `unacked_restore_interval`. Without one (gevent, and
anything calling `drain_events`) kombu 5.7 restores only when a poll returns no event at all;
but an idle consumer's BRPOP answers empty every second, which is an event, so an idle gevent
fleet never restored such a job and its batch waited forever (seen in the Redis-restart fault
test: two lines left in `unacked`, both workers idle). This runs the same restore from the
polling path whenever the interval has passed, whatever the poll returned.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.transport import redis as kombu_redis

_PATCHED = "corral_restores_without_loop"


def install() -> None:
    """Patch kombu's Redis poller once per process (idempotent)."""
    poller = kombu_redis.MultiChannelPoller
    if getattr(poller.get, _PATCHED, False):
        return
    original_get = poller.get

    def get(self: Any, callback: Any, timeout: float | None = None) -> Any:
        try:
            return original_get(self, callback, timeout)
        finally:
            _restore_when_due(self)

    setattr(get, _PATCHED, True)
    poller.get = get  # type: ignore[method-assign]


def _restore_when_due(poller: Any) -> None:
    """Restore visible unacked messages when the channels' restore interval has passed."""
    channels = [channel for channel in poller._channels if channel.active_queues]
    if not channels:
        return
    now_s = time.monotonic()
    last_s = getattr(poller, "_corral_restored_at_s", None)
    if last_s is not None and now_s - last_s < channels[0].unacked_restore_interval:
        return
    poller._corral_restored_at_s = now_s
    poller.maybe_restore_messages()  # handles a broken connection itself
