"""corral's threads pool grows and shrinks within its cap, and still runs jobs."""

from __future__ import annotations

import threading

import pytest

from workers.pools import SLOT_GROWTH
from workers.pools.thread import ThreadTaskPool


def test_grow_and_shrink_move_the_limit_within_the_cap() -> None:
    pool = ThreadTaskPool(limit=4)
    pool.grow(3)
    assert pool.limit == 7 and pool.info["max-concurrency"] == 7
    pool.shrink(6)
    assert pool.limit == 1
    with pytest.raises(ValueError, match="at least 1 task slot"):
        pool.shrink()
    pool.grow(4 * SLOT_GROWTH - 1)
    assert pool.limit == 4 * SLOT_GROWTH
    with pytest.raises(ValueError, match=f"at most {4 * SLOT_GROWTH} task slots"):
        pool.grow()
    assert pool.limit == 4 * SLOT_GROWTH


def test_a_grown_pool_runs_as_many_jobs_at_once_as_its_limit() -> None:
    pool = ThreadTaskPool(limit=2)
    pool.start()
    try:
        pool.grow(4)
        release = threading.Event()
        started = threading.Semaphore(0)

        def job() -> None:
            started.release()
            release.wait(timeout=30)

        for _ in range(6):
            pool.apply_async(job)
        for _ in range(6):  # all six start: the executor has threads for the grown limit
            assert started.acquire(timeout=30)
        release.set()
    finally:
        pool.stop()
