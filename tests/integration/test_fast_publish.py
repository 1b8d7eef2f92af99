"""Jobs pushed by the Redis fast path: pointers only on the broker, and real workers run them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from corral.store import open_store
from producer.views import wait_for_batch
from tests.integration.helpers import request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROMPT_MARK = "confidential-prompt-text"
QUEUES = ("corral.big", "corral.small")


def test_submitted_messages_carry_pointers_only_and_workers_complete_them(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator("--latency-ms", "2")
    config = write_config(f"{sim.base_url}/v1")
    lines = [request(f"line-{i}", "big" if i % 4 == 0 else "small",
                     f"{PROMPT_MARK} number {i}", max_tokens=16) for i in range(120)]
    submitted = corral("submit", str(write_jsonl(tmp_path / "batch.jsonl", [*lines])),
                       config=config)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()

    # Before any worker runs: one message per line, each only (batch_id, custom_id).
    raw_messages = [raw for queue in QUEUES for raw in redis_client.lrange(queue, 0, -1)]
    assert len(raw_messages) == 120
    seen = set()
    for raw in raw_messages:
        assert PROMPT_MARK not in raw
        message = json.loads(raw)
        args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        assert args == [batch_id, args[1]] and kwargs == {}
        assert message["headers"]["argsrepr"] == repr((batch_id, args[1]))
        assert message["headers"]["task"] == "corral.run_job"
        seen.add(args[1])
    assert seen == {line["custom_id"] for line in lines}

    start_workers(config, list(QUEUES), processes=1, concurrency=8)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=90)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 120, "completed": 120, "failed": 0}
    assert sim.stats()["served"] == 120
    assert all(redis_client.llen(queue) == 0 for queue in QUEUES)
