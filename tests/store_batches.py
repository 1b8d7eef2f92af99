"""Batches for unit tests, made as submit makes them: lines and a row in the record store,
then the batch's state in Redis; and lines fed, as the feeder stores their requests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import redis

from corral.batch_state import batch_meta, put_batch_state
from corral.redis_keys import BatchKeys
from corral.store import Store
from corral.store.intake import LineIntake
from corral.stored_job import stored_job
from producer.batches import batch_options, expires_at, new_batch_id

BODY = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}
DEFAULT_MAX_TOKENS = 8
WINDOW = "24h"


def line_job(model: str, line_no: int) -> str:
    """The stored job of one accepted line routed to `model`."""
    return stored_job(tokens=10, model=model, default_max_tokens=DEFAULT_MAX_TOKENS, body=BODY,
                      route=None, line=line_no)


def numbered(lines_by_model: Mapping[str, int]) -> dict[str, str]:
    """custom_id → model for `count` lines of each model (`<model>-<i>`), in that order."""
    return {f"{model}-{i}": model for model, count in lines_by_model.items()
            for i in range(count)}


def open_test_batch(client: redis.Redis, store: Store, lines: Mapping[str, str], *,
                    created_at_s: int | None = None) -> str:
    """A batch of `lines` (custom_id → model, in input order from line 1), in progress: its
    lines and row committed to the store, then its meta (nothing fed yet) put in Redis.

    Args:
        client: the test's Redis.
        store: the test's record store.
        lines: the accepted lines.
        created_at_s: its creation time (default: the Redis clock's now).
    """
    batch_id = new_batch_id()
    now_s = int(client.time()[0]) if created_at_s is None else created_at_s
    by_model = Counter(lines.values())
    with LineIntake(store.engine, batch_id, clock=lambda: now_s) as intake:
        for line_no, (custom_id, model) in enumerate(lines.items(), start=1):
            intake.accept(custom_id, line_no, model, line_job(model, line_no))
        intake.finish(total=len(lines), completion_window=WINDOW,
                      expires_at=expires_at(now_s, WINDOW), input_file="in.jsonl",
                      options=batch_options(sorted(by_model), "", None))
    row = store.batches.get(batch_id)
    assert row is not None
    put_batch_state(client, batch_meta(row, dict(by_model)))
    return batch_id


def feed(client: redis.Redis, store: Store, batch_id: str,
         custom_ids: Iterable[str] | None = None) -> dict[str, str]:
    """Store the requests of these lines (default: every line) in Redis, as the feeder does
    before it sends them; returns custom_id → stored job."""
    if custom_ids is None:
        row = store.batches.get(batch_id)
        assert row is not None
        custom_ids = [line.custom_id for model in batch_models(store, batch_id)
                      for line in store.lines.unended(batch_id, model, 0, int(row["total"]))]
    jobs = store.lines.jobs(batch_id, list(custom_ids))
    if jobs:
        client.hset(BatchKeys(batch_id).bodies, mapping=jobs)  # type: ignore[arg-type]
    return jobs


def batch_models(store: Store, batch_id: str) -> list[str]:
    """The models the batch's lines are routed to."""
    return [model for model, _, _, _ in store.batches.lines_by_model(batch_id)]
