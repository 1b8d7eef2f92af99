"""kombu's Redis channel when its broker connection is lost: closed in full, no AttributeError.

When Redis goes away, Celery's consumer first collects its connection (closing each channel,
then detaching the transport from the connection: `transport.client = None`) and then closes
it again. kombu 5.7's Redis channel breaks that in two places:

- `Channel.close` first reads the reply of a BRPOP still outstanding; when that read fails
  with the connection, the close stops there and the channel stays open. A worker with remote
  control has a second channel (the broadcast one) whose close fails too, and that stops the
  transport from closing the rest, so the task channel is still open once the transport is
  detached.
- Closing it then, or acking on it a job that ended after the loss, needs a new connection
  pool, and the pool is built from `self.connection.client`: None by then. The
  AttributeError is not a connection error, so it escapes Celery's error handling and the
  worker dies ("Unrecoverable error: AttributeError: 'NoneType' object has no attribute
  'hostname'").

So a lost reply no longer stops a close, and a channel whose connection is gone raises
`BrokerConnectionGoneError`, a redis ConnectionError, which Celery handles as the lost
connection it is: the close goes on, a late ack is logged as not sent. Messages whose restore
or ack could not be sent stay in kombu's unacked hash (when Redis kept them) and come back
after the visibility timeout, where corral's write-once records make a second delivery harmless.
"""

from __future__ import annotations

from queue import Empty
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_PATCHED = "corral_survives_lost_connection"


class BrokerConnectionGoneError(redis.exceptions.ConnectionError):
    """A kombu Redis channel was used after its broker connection was closed."""


def install() -> None:
    """Patch kombu's Redis channel once per process (idempotent)."""
    channel = kombu_redis.Channel
    if getattr(channel.close, _PATCHED, False):
        return
    original_close = channel.close
    original_connparams = channel._connparams

    def close(self: Any) -> None:
        if self._in_poll:
            try:
                self._brpop_read()
            except (Empty, *self.connection_errors):
                pass  # the reply is lost with the connection; closing is what is left to do
        original_close(self)

    def connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            raise BrokerConnectionGoneError(
                "this kombu channel's broker connection is closed; a new one serves the worker")
        return original_connparams(self, asynchronous=asynchronous)  # type: ignore[no-any-return]

    setattr(close, _PATCHED, True)
    channel.close = close  # type: ignore[method-assign]
    channel._connparams = connparams  # type: ignore[method-assign]
