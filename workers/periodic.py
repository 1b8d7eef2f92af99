"""A task a worker process repeats in a daemon thread until it stops (feeding, reconciling)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Periodic:
    """Runs `tick()` every `interval_s` in a daemon thread; its errors are logged, never
    fatal."""

    name = "corral-periodic"

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()

    def tick(self) -> object:
        """One round of the work."""
        raise NotImplementedError

    def run_forever(self) -> None:
        """Tick every interval until `stop()`."""
        while not self._stop.wait(self._interval_s):
            try:
                self.tick()
            except Exception:
                log.exception("%s failed", self.name)

    def start(self) -> None:
        """Run in a daemon thread."""
        threading.Thread(target=self.run_forever, name=self.name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
