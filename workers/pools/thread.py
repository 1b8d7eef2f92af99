"""Celery's threads pool with grow and shrink, within corral's cap (see workers/pools)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery.concurrency import thread

from workers.pools import GrowthCap


class ThreadTaskPool(GrowthCap, thread.TaskPool):
    """Celery's threads pool with grow and shrink.

    Its executor may start up to `max_limit` threads, made only when jobs need them: the
    consumer's prefetch count (slots x prefetch multiplier, which Celery's pool_grow and
    pool_shrink move with the limit) is what bounds the jobs running at once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap_growth()
        self.executor = ThreadPoolExecutor(max_workers=self.max_limit)

    def grow(self, n: int = 1) -> None:
        """Add `n` task slots."""
        self.check_resize(n)
        self.limit += n

    def shrink(self, n: int = 1) -> None:
        """Remove `n` task slots (running jobs finish; fewer are fetched after them)."""
        self.check_resize(-n)
        self.limit -= n
