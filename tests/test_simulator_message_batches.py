"""The simulator's Anthropic Message Batches over HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.simulator_batches import (
    KEY,
    StartSimulator,
    hold,
    messages,
    poll,
)

ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
ENDPOINT = "/v1/chat/completions"


# --- Anthropic Message Batches ----------------------------------------------------------------


def anthropic_request(custom_id: str, text: str, **params: Any) -> dict[str, Any]:
    return {"custom_id": custom_id,
            "params": {"model": "m", "max_tokens": 1000, "messages": messages(text), **params}}


def retrieve_message_batch(http: httpx.Client, batch_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/messages/batches/{batch_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.timeout(30)
def test_message_batch_results_in_native_shape_match_live_answers(
    start_batch_simulator: StartSimulator,
) -> None:
    url = start_batch_simulator("--model", "m:ctx=50", "--batch-lines-per-s", "5000")
    requests = [
        anthropic_request("one", "hello", system="Be brief."),
        anthropic_request("two", "x" * 400),
        {"custom_id": "three", "params": {"model": "m", "messages": messages("no max_tokens")}},
    ]
    with httpx.Client(base_url=url, headers=ANTHROPIC_HEADERS) as http:
        created = http.post("/v1/messages/batches", json={"requests": requests}).json()
        ended = poll(lambda: (b := retrieve_message_batch(http, created["id"]))
                     ["processing_status"] == "ended" and b)  # fmt: skip
        results = [json.loads(line) for line in http.get(ended["results_url"]).text.splitlines()]
        live = http.post(ENDPOINT, headers={"authorization": f"Bearer {KEY}"}, json={
            "model": "m", "max_tokens": 1000,
            "messages": [{"role": "system", "content": "Be brief."}, *messages("hello")]}).json()
        listing = http.get("/v1/messages/batches").json()
    assert created["type"] == "message_batch" and created["id"].startswith("msgbatch_")
    assert created["processing_status"] == "in_progress" and created["results_url"] is None
    assert ended["request_counts"] == {
        "processing": 0, "succeeded": 1, "errored": 2, "canceled": 0, "expired": 0}
    assert ended["ended_at"] is not None and ended["created_at"].endswith("Z")
    assert ended["results_url"] == f"{url}/v1/messages/batches/{created['id']}/results"
    by_id = {line["custom_id"]: line["result"] for line in results}
    message = by_id["one"]["message"]
    assert by_id["one"]["type"] == "succeeded"
    assert (message["type"], message["role"], message["model"]) == ("message", "assistant", "m")
    live_text = live["choices"][0]["message"]["content"]
    assert message["content"] == [{"type": "text", "text": live_text}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {
        "input_tokens": live["usage"]["prompt_tokens"],
        "output_tokens": live["usage"]["completion_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert by_id["two"]["type"] == "errored"
    assert by_id["two"]["error"]["error"]["type"] == "invalid_request_error"
    assert "prompt is too long" in by_id["two"]["error"]["error"]["message"]
    assert by_id["three"]["error"]["error"]["message"].startswith("params.max_tokens")
    assert [batch["id"] for batch in listing["data"]] == [created["id"]]


@pytest.mark.timeout(30)
def test_stalled_message_batch_cancels_to_canceled_results(
    start_batch_simulator: StartSimulator,
) -> None:
    url = start_batch_simulator("--batch-stall")
    requests = [anthropic_request(f"r{i}", str(i)) for i in range(3)]
    with httpx.Client(base_url=url, headers=ANTHROPIC_HEADERS) as http:
        created = http.post("/v1/messages/batches", json={"requests": requests}).json()
        early = http.get(f"/v1/messages/batches/{created['id']}/results")

        def still_stalled() -> None:
            seen = retrieve_message_batch(http, created["id"])
            assert seen["processing_status"] == "in_progress"
            assert seen["request_counts"]["processing"] == 3

        hold(0.2, still_stalled)
        canceling = http.post(f"/v1/messages/batches/{created['id']}/cancel").json()
        ended = poll(lambda: (b := retrieve_message_batch(http, created["id"]))
                     ["processing_status"] == "ended" and b)  # fmt: skip
        results = [json.loads(line) for line in http.get(ended["results_url"]).text.splitlines()]
    assert early.status_code == 400
    assert canceling["processing_status"] in ("canceling", "ended")
    assert canceling["cancel_initiated_at"] is not None
    assert ended["request_counts"]["canceled"] == 3
    assert [line["result"] for line in results] == [{"type": "canceled"}] * 3


@pytest.mark.timeout(30)
def test_message_batches_check_key_version_and_request_shape(
    start_batch_simulator: StartSimulator,
) -> None:
    url = start_batch_simulator()
    body = {"requests": [anthropic_request("a", "x")]}
    with httpx.Client(base_url=url) as http:
        wrong_key = http.post("/v1/messages/batches", json=body,
                              headers={**ANTHROPIC_HEADERS, "x-api-key": "sk-wrong"})
        bearer_only = http.post("/v1/messages/batches", json=body, headers={
            "authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"})
        no_version = http.post("/v1/messages/batches", json=body, headers={"x-api-key": KEY})
        duplicate = http.post("/v1/messages/batches", headers=ANTHROPIC_HEADERS, json={
            "requests": [anthropic_request("a", "x"), anthropic_request("a", "y")]})
        unknown = http.get("/v1/messages/batches/msgbatch_nope", headers=ANTHROPIC_HEADERS)
    assert (wrong_key.status_code, bearer_only.status_code) == (401, 401)
    assert wrong_key.json() == {
        "type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    assert "sk-wrong" not in wrong_key.text
    assert no_version.status_code == 400
    assert duplicate.status_code == 400
    assert duplicate.json()["error"]["type"] == "invalid_request_error"
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
