"""`corral demo` and `corral run`: one command starts what is missing and cleans up after."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion

from corral.embedded_redis import free_port, is_reachable
from tests.integration.helpers import request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_demo_runs_the_packaged_batch_end_to_end(tmp_path: Path, redis_client, corral) -> None:
    result = corral("demo", "--out-dir", str(tmp_path / "demo"), "--latency-ms", "5",
                    timeout_s=200)
    assert result.returncode == 0, result.stderr[-3000:]
    results = (tmp_path / "demo" / "demo_batch.results.jsonl").read_text().splitlines()
    assert len(results) >= 1000
    ChatCompletion.model_validate(json.loads(results[0])["response"]["body"])
    assert (tmp_path / "demo" / "demo_batch.results.errors.jsonl").read_text() == ""
    for model in ("claude-opus-4.6", "gpt-5.4", "deepseek-v3.2"):
        assert model in result.stdout
    total_row = next(line for line in result.stdout.splitlines() if "total" in line)
    assert f"{len(results):,}" in total_row
    assert "completed" in result.stderr
    # the demo's key went to its workers only
    config_text = (tmp_path / "demo" / "corral.toml").read_text()
    assert "api_key_env" in config_text


def test_run_starts_a_private_redis_when_none_answers(tmp_path: Path, write_config,
                                                      start_simulator, corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    batch_file = write_jsonl(tmp_path / "small.jsonl",
                             [request(f"r{i}", "auto", f"summarize {i}") for i in range(20)])
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = corral("run", str(batch_file), "--concurrency", "4", config=config,
                    env_extra={"CORRAL_REDIS_URL": nowhere})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started a private one" in result.stderr
    lines = (tmp_path / "small.results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(20))
    total_row = next(line for line in result.stdout.splitlines() if "total" in line)
    assert "20" in total_row and Decimal(total_row.split("$")[1].split()[0]) > 0
    private_url = result.stderr.split("started a private one at ")[1].split()[0]
    assert not is_reachable(private_url)  # stopped what it started
