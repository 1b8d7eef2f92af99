"""CORRAL_LOG_FORMAT=json: workers write parseable lines tagged with batch_id and custom_id, and
never a prompt."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from corral.store import open_store
from producer.views import wait_for_batch
from tests.integration.helpers import request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CANARY = "CANARY-prompt-5f1e0c7a9b"
JSON_LOGS = {"CORRAL_LOG_FORMAT": "json", "CORRAL_LOG_EACH_JOB": "true"}


def test_worker_logs_are_json_lines_with_the_job_and_never_the_prompt(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    # 5xx on a third of the calls: corral logs retries (and maybe failures) of batch lines.
    sim = start_simulator("--latency-ms", "5", "--error-rate", "0.3", "--seed", "7")
    config = write_config(f"{sim.base_url}/v1")
    workers = start_workers(config, ["corral.small"], concurrency=4, env=JSON_LOGS)
    count = 30
    batch_file = write_jsonl(tmp_path / "batch.jsonl", [
        request(f"c-{i}", "small", f"{CANARY} line {i}", max_tokens=16) for i in range(count)])
    submitted = corral("submit", str(batch_file), config=config, env_extra=JSON_LOGS)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=120)
    counts = batch["request_counts"]
    assert counts["completed"] + counts["failed"] == count
    workers[0].stop()  # flush and close the log before it is read
    log_text = workers[0].log_path.read_text(errors="replace")

    assert CANARY not in log_text
    assert CANARY not in submitted.stdout + submitted.stderr
    entries = []
    for line in log_text.splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    assert entries, log_text
    for entry in entries:
        assert {"ts", "level", "logger", "message"} <= entry.keys()
    assert any("ready" in entry["message"] for entry in entries)

    # corral's lines that name a line of the batch carry it as fields, as do Celery's own
    # lines about each job (e.g. "succeeded in"), which name only the task id.
    about_lines = [entry for entry in entries if f"{batch_id}/" in entry["message"]]
    assert about_lines, "no retry or failure was logged; raise the simulator's error rate"
    for entry in about_lines:
        named = re.search(rf"{re.escape(batch_id)}/(c-\d+)", entry["message"])
        assert named is not None
        assert (entry.get("batch_id"), entry.get("custom_id")) == (batch_id, named.group(1))
    succeeded = [entry for entry in entries if "succeeded in" in entry["message"]]
    assert succeeded
    for entry in succeeded:
        assert entry["batch_id"] == batch_id and re.fullmatch(r"c-\d+", entry["custom_id"])
