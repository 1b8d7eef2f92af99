"""Each kind of provider answer ends as it should, through real workers and the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion

from corral.store import open_store
from producer.views import wait_for_batch
from tests.integration.helpers import ledger_rows, request, stored_records, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def outcomes(redis_client, batch_id: str) -> dict[str, dict]:
    return stored_records(batch_id)


def ledger(redis_client, batch_id: str) -> list[dict]:
    return ledger_rows(batch_id)


def test_retryable_failures_recover_and_permanent_ones_become_error_records(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator("--model", "sim-big:ctx=60", "--model", "sim-small")
    config = write_config(f"{sim.base_url}/v1")
    batch_file = write_jsonl(tmp_path / "faults.jsonl", [
        request("ok", "small", "plain"),
        request("r429", "small", "once limited [[sim:fail=429,times=1,retry_ms=300]]"),
        request("r500", "small", "twice broken [[sim:fail=500,times=2]]"),
        request("r503", "small", "always broken [[sim:fail=503,times=99]]"),
        request("long", "big", "x" * 400),  # fits corral's window, not the provider's
        request("bad", "small", "refused [[sim:fail=400,times=99]]"),
    ])
    batch_id = corral("submit", str(batch_file), config=config).stdout.strip()
    start_workers(config, ["corral.big", "corral.small"], concurrency=4)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=90)
    assert batch["request_counts"] == {"total": 6, "completed": 3, "failed": 3}

    records = outcomes(redis_client, batch_id)
    for custom_id in ("ok", "r429", "r500"):
        ChatCompletion.model_validate(records[custom_id]["response"]["body"])
    attempts = {e["custom_id"]: e["attempt"] for e in ledger(redis_client, batch_id)}
    assert attempts == {"ok": 1, "r429": 2, "r500": 3}

    errors = {cid: r["error"]["code"] for cid, r in records.items() if r["error"]}
    assert errors == {"r503": "server_error_exhausted", "long": "context_length_exceeded",
                      "bad": "invalid_request"}
    assert "after 4 attempts" in records["r503"]["error"]["message"]
    assert records["r503"]["response"] is None  # a 5xx is not a provider 4xx to pass on
    long_response = records["long"]["response"]
    assert long_response["status_code"] == 400
    assert long_response["body"]["error"]["code"] == "context_length_exceeded"
    assert sim.stats()["by_status"]["503"] == 4  # bounded attempts, then an error record


def test_a_wrong_key_fails_every_line_as_authentication_error_and_never_leaks(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    batch_file = write_jsonl(tmp_path / "b.jsonl",
                             [request(f"k{i}", "small", "hello") for i in range(40)])
    wrong_key = "sk-wrong-canary-123"
    batch_id = corral("submit", str(batch_file), config=config).stdout.strip()
    workers = start_workers(config, ["corral.small"], env={"CORRAL_TEST_SIM_KEY": wrong_key})
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"]["failed"] == 40
    assert batch["status"] == "failed"
    records = outcomes(redis_client, batch_id)
    assert {r["error"]["code"] for r in records.values()} == {"authentication_error"}
    # The circuit opened on the first 401: at most the calls already started reached the
    # provider (8 slots), the rest failed fast, and the log says it once.
    assert sim.stats()["by_status"]["401"] <= 8
    log_text = workers[0].log_path.read_text()
    assert log_text.count("refused corral") == 1
    for key in redis_client.scan_iter("*"):
        assert wrong_key not in str(redis_client.dump(key))
    assert wrong_key not in log_text


def test_a_missing_key_variable_is_named_in_the_error(tmp_path: Path, redis_client,
                                                     write_config, start_simulator,
                                                     start_workers, corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    batch_file = write_jsonl(tmp_path / "b.jsonl", [request("a", "small", "hi")])
    batch_id = corral("submit", str(batch_file), config=config).stdout.strip()
    start_workers(config, ["corral.small"], env={"CORRAL_TEST_SIM_KEY": ""})
    wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    error = outcomes(redis_client, batch_id)["a"]["error"]
    assert error["code"] == "authentication_error"
    assert "CORRAL_TEST_SIM_KEY is not set" in error["message"]


def test_a_line_may_use_every_configured_attempt(tmp_path: Path, redis_client, write_config,
                                                 start_simulator, start_workers,
                                                 corral) -> None:
    """Celery caps retries at 3 unless told otherwise; corral's own cap must be the one."""
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    batch_file = write_jsonl(tmp_path / "b.jsonl", [
        request("five-failures", "small", "[[sim:fail=500,times=5]]"),
        request("seven-failures", "small", "[[sim:fail=502,times=7]]")])
    batch_id = corral("submit", str(batch_file), config=config).stdout.strip()
    start_workers(config, ["corral.small"], env={"CORRAL_MAX_ATTEMPTS": "6"})
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    records = outcomes(redis_client, batch_id)
    assert records["five-failures"]["error"] is None
    assert ledger(redis_client, batch_id)[0]["attempt"] == 6
    assert records["seven-failures"]["error"]["code"] == "server_error_exhausted"
    assert sim.stats()["by_status"]["502"] == 6


def test_insufficient_quota_opens_the_circuit_for_the_whole_provider(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    lines = [request("broke", "small", "[[sim:quota]]")]
    lines += [request(f"later-{i}", "small", "hello") for i in range(30)]
    batch_id = corral("submit", str(write_jsonl(tmp_path / "q.jsonl", lines)),
                      config=config).stdout.strip()
    start_workers(config, ["corral.small"], concurrency=1)
    wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    records = outcomes(redis_client, batch_id)
    assert {r["error"]["code"] for r in records.values()} == {"insufficient_quota"}
    assert sim.stats()["requests"] == 1  # one slot: the first answer stopped every later call
    assert "provider 'sim' refused corral" in records["later-7"]["error"]["message"]
