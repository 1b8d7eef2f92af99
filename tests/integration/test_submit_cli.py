"""`corral submit` on bad input: every bad line named, nothing enqueued, or the rest run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.store import open_store
from producer.views import wait_for_batch
from tests.integration.helpers import record_count, request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BAD_LINES: list[dict | str] = [
    request("good-1", "small", "hello"),
    "{this is not json",
    {"method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "small", "messages": [{"role": "user", "content": "no id"}]}},
    request("good-1", "small", "again"),
    request("unknown", "gpt-9", "hello"),
    request("too-long", "small", "x" * 9000),
    {**request("wrong-url", "small", "hi"), "url": "/v1/embeddings"},
    request("streaming", "small", "hi", stream=True),
    request("good-2", "auto", "please summarize"),
]
EXPECTED_STDERR = [
    "line 2: malformed JSON",
    "line 3: missing custom_id",
    "line 4: duplicate custom_id 'good-1'",
    "line 5: unknown model 'gpt-9'",
    "line 6: prompt of about 2250 tokens exceeds the 2000-token context window of small",
    "line 7: url must be '/v1/chat/completions'",
    "line 8: body.stream = true is not supported",
    "line 10: invalid UTF-8",
]


def bad_file(tmp_path: Path) -> Path:
    path = write_jsonl(tmp_path / "bad.jsonl", BAD_LINES)
    with open(path, "ab") as handle:
        handle.write(b'{"custom_id": "latin1-\xe9"}\n')
    return path


def queued_messages(redis_client) -> int:
    return sum(redis_client.llen(q) for q in ("corral.small", "corral.big"))


def test_bad_lines_are_named_and_nothing_is_enqueued(tmp_path: Path, redis_client,
                                                     write_config, corral) -> None:
    config = write_config()
    result = corral("submit", str(bad_file(tmp_path)), config=config)
    assert result.returncode == 2
    assert result.stdout == ""
    for expected in EXPECTED_STDERR:
        assert expected in result.stderr, (expected, result.stderr)
    assert "line 1:" not in result.stderr and "line 9:" not in result.stderr
    assert "8 bad line(s)" in result.stderr
    assert redis_client.keys("corral:*") == [] and queued_messages(redis_client) == 0


def test_skip_invalid_runs_the_valid_lines_and_files_the_rest_as_errors(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    result = corral("submit", str(bad_file(tmp_path)), "--skip-invalid", "--json",
                    config=config)
    assert result.returncode == 0, result.stderr
    batch = json.loads(result.stdout)
    assert batch["request_counts"]["total"] == 10
    assert queued_messages(redis_client) == 2
    start_workers(config, ["corral.small", "corral.big"])
    batch = wait_for_batch(open_store(), batch["id"], show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 10, "completed": 2, "failed": 8}

    out = tmp_path / "res.jsonl"
    assert corral("results", batch["id"], "-o", str(out), "--order", "input",
                  config=config).returncode == 0
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == [
        "good-1", "good-2"]
    errors = [json.loads(x) for x in (tmp_path / "res.errors.jsonl").read_text().splitlines()]
    assert [e["custom_id"] for e in errors] == [
        "line-2", "line-3", "line-4", "unknown", "too-long", "wrong-url", "streaming",
        "line-10"]
    assert {e["error"]["code"] for e in errors} == {"invalid_request"}
    assert errors[2]["error"]["message"] == "line 4: duplicate custom_id 'good-1'"
    assert record_count(batch["id"]) == 10


def test_wait_exits_1_when_lines_failed(tmp_path: Path, redis_client, write_config,
                                        start_simulator, start_workers, corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    start_workers(config, ["corral.small"])
    batch_file = write_jsonl(tmp_path / "b.jsonl", [
        request("fine", "small", "hi"), request("nope", "small", "[[sim:fail=400,times=9]]")])
    result = corral("submit", str(batch_file), "--wait", config=config)
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip().startswith("batch_")


def test_exit_codes_for_missing_batch_unreachable_redis_and_missing_config(
        tmp_path: Path, redis_client, write_config, corral) -> None:
    config = write_config()
    assert corral("status", "batch_nope", config=config).returncode == 4
    empty = write_jsonl(tmp_path / "empty.jsonl", ["", "  "])
    assert corral("submit", str(empty), config=config).returncode == 2
    ok = write_jsonl(tmp_path / "ok.jsonl", [request("a", "small", "hi")])
    unreachable = corral("submit", str(ok), config=config, env_extra={
        "CORRAL_REDIS_URL": "redis://127.0.0.1:9/0"})
    assert unreachable.returncode == 3 and "not reachable" in unreachable.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = corral("submit", str(ok), env_extra={"CORRAL_CONFIG": ""}, cwd=elsewhere)
    assert missing.returncode == 2 and "no corral config found" in missing.stderr


def test_check_reports_config_redis_and_each_provider(tmp_path: Path, redis_client,
                                                      write_config, start_simulator,
                                                      corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    ok = corral("check", config=config)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].startswith("config: ok") and lines[1].startswith("redis: ok")
    assert lines[2].startswith("redis durability: ")  # ok or WARN, by the test Redis
    assert lines[3].startswith("provider sim: ok")
    bad_key = corral("check", config=config, env_extra={"CORRAL_TEST_SIM_KEY": "sk-nope"})
    assert bad_key.returncode == 3
    assert "provider sim: FAIL" in bad_key.stdout and "answered 401" in bad_key.stdout
    assert "sk-nope" not in bad_key.stdout + bad_key.stderr
    no_redis = corral("check", config=config,
                      env_extra={"CORRAL_REDIS_URL": "redis://127.0.0.1:9/0"})
    assert no_redis.returncode == 3 and "redis: FAIL" in no_redis.stdout
