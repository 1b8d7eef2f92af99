"""The batch lane's sweep: a provider batch whose poll message was lost is polled again; one
polled lately, or already collected, is not."""

from __future__ import annotations

import base64
import json

from corral.celery_app import BATCH_POLL_TASK, BATCH_QUEUE, create_app
from workers.batch_lane_sweep import BatchLaneSweep

NOW = 1_000_000


def test_only_provider_batches_not_polled_lately_are_polled_again(store, redis_client,
                                                                  redis_url) -> None:
    kept = store.provider_batches
    for pid, created_at in (("pb_lost", NOW - 100), ("pb_fresh", NOW - 100),
                            ("pb_new", NOW - 2), ("pb_done", NOW - 100)):
        kept.add(pid, "batch_1", "sim", "small", "in_progress", ["a", "b"], created_at)
    kept.update("pb_fresh", polled_at=NOW - 5)
    kept.update("pb_done", collected=True)
    app = create_app(broker_url=redis_url)
    sweep = BatchLaneSweep(store, app, poll_s=10, clock=lambda: NOW)

    assert sweep.tick() == ["pb_lost"]  # 30 s (3 polls) without a poll
    messages = [json.loads(raw) for raw in redis_client.lrange(BATCH_QUEUE, 0, -1)]
    assert [m["headers"]["task"] for m in messages] == [BATCH_POLL_TASK]
    args, _, _ = json.loads(base64.b64decode(messages[0]["body"]))
    assert args == ["pb_lost"]
