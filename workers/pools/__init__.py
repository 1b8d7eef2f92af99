"""corral's task pools: Celery's, able to grow and shrink (Flower's pool buttons) within a cap.

A worker sizes what its slots share (kombu's broker connection pool, see workers/app.py) for
`SLOT_GROWTH` times the slots it starts with, so growing stops there with a clear refusal
instead of running that pool dry. `--pool threads` and `--pool gevent` name the classes in
`thread` and `gevent` (workers/app.py points Celery's aliases there; the worker's banner
shows the module's name, as for Celery's own pools).
"""

from __future__ import annotations

# A worker can grow to this many times the slots it started with.
SLOT_GROWTH = 4


class GrowthCap:
    """Checks a pool's grow and shrink against [1, SLOT_GROWTH x its starting slots]."""

    limit: int
    max_limit: int

    def cap_growth(self) -> None:
        """Fix the most slots this pool may grow to (call once its limit is set)."""
        self.max_limit = self.limit * SLOT_GROWTH

    def check_resize(self, n: int) -> None:
        """Raise ValueError when changing the slots by `n` leaves [1, max_limit]."""
        wanted = self.limit + n
        if wanted > self.max_limit:
            raise ValueError(f"this worker can have at most {self.max_limit} task slots "
                             f"({SLOT_GROWTH} x the --concurrency it started with)")
        if wanted < 1:
            raise ValueError("a worker keeps at least 1 task slot")
