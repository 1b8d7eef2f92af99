"""Celery's gevent pool with corral's cap on growth (see workers/pools)."""

from __future__ import annotations

from typing import Any

from celery.concurrency import gevent

from workers.pools import GrowthCap


class GeventTaskPool(GrowthCap, gevent.TaskPool):  # type: ignore[misc]
    """Celery's gevent pool; grow and shrink stay within [1, SLOT_GROWTH x starting slots]."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap_growth()

    def grow(self, n: int = 1) -> None:
        """Add `n` task slots."""
        self.check_resize(n)
        super().grow(n)

    def shrink(self, n: int = 1) -> None:
        """Remove `n` task slots."""
        self.check_resize(-n)
        super().shrink(n)
