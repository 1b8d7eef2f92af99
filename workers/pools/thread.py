"""Celery's threads pool with grow and shrink, within corral's cap (see workers/pools)."""

from __future__ import annotations

from typing import Any

from celery.concurrency import thread

from workers.pools import GrowthCap


class ThreadTaskPool(GrowthCap, thread.TaskPool):
    """Celery's threads pool with grow and shrink.

    The consumer's prefetch count (slots x prefetch multiplier, which Celery's pool_grow and
    pool_shrink move with the limit) bounds the jobs running at once. The executor keeps as
    many threads as the most slots the pool has had: ThreadPoolExecutor has no public resize,
    and reads `_max_workers` at each submit, so growing raises it. (An executor sized for the
    cap from the start would also work, but it starts a spare thread whenever a job is handed
    over before the last one's thread reports idle, and would drift up to the cap.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap_growth()

    def grow(self, n: int = 1) -> None:
        """Add `n` task slots."""
        self.check_resize(n)
        self.limit += n
        self.executor._max_workers = max(self.executor._max_workers, self.limit)

    def shrink(self, n: int = 1) -> None:
        """Remove `n` task slots (running jobs finish; fewer are fetched after them)."""
        self.check_resize(-n)
        self.limit -= n
