"""Task events from workers of both pools reach subscribers, many to a message."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from corral.store import open_store
from producer.views import wait_for_batch
from tests.integration.helpers import poll, request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_every_job_s_events_arrive_grouped_into_few_messages(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers, corral,
        pool: str) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    start_workers(config, ["corral.small"], concurrency=16, pool=pool)
    pubsub = redis_client.pubsub()
    pubsub.psubscribe(
        f"/{redis_client.connection_pool.connection_kwargs.get('db', 0)}.celeryev/task.*")
    assert pubsub.get_message(timeout=5.0)["type"] == "psubscribe"
    lines = [request(f"e-{i}", "small", f"hello {i}") for i in range(200)]
    submitted = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", lines)), config=config)
    batch_id = submitted.stdout.strip()
    wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)

    events: dict[str, list[dict]] = {}
    messages = {"task.multi": 0, "other": 0}

    def collected() -> bool:
        while (message := pubsub.get_message(timeout=0.1)) is not None:
            if message["type"] != "pmessage":
                continue
            body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
            multi = isinstance(body, list)
            messages["task.multi" if multi else "other"] += 1
            for event in body if multi else [body]:
                events.setdefault(event["type"], []).append(event)
        return all(len(events.get(kind, [])) >= 200 for kind in (
            "task-sent", "task-received", "task-started", "task-succeeded"))

    poll(collected, timeout_s=30)
    pubsub.close()
    succeeded = events["task-succeeded"]
    assert sorted(json.loads(event["result"].replace("'", '"'))["line"]
                  for event in succeeded) == ["completed"] * 200
    # 800 events; one message each would be 800.
    assert messages["task.multi"] + messages["other"] < 200, messages
