"""The simulator's batch lanes: OpenAI Files + Batches and Anthropic Message Batches."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch
from openai.types.chat import ChatCompletion

from simulator.batch_input import validate_input_file

KEY = "sk-sim-batch"
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
ENDPOINT = "/v1/chat/completions"
FINAL = ("completed", "failed", "expired", "cancelled")

StartSimulator = Callable[..., str]


@pytest.fixture
def start_simulator(simulator_process: StartSimulator) -> StartSimulator:
    """Factory: start ``python -m simulator --port 0 --api-key KEY *flags``; returns its URL."""
    return lambda *flags: simulator_process("--api-key", KEY, *flags)


def poll(probe: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Call ``probe`` until it returns something truthy (returned); fail after ``timeout_s``."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        pause.wait(0.005)
    raise AssertionError(f"not reached within {timeout_s:g} s")


def hold(seconds: float, check: Callable[[], None]) -> None:
    """Run ``check`` over and over for ``seconds``: a state that must not change meanwhile."""
    pause = threading.Event()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        pause.wait(0.01)


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def input_line(custom_id: str, text: str, model: str = "m", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT,
            "body": {"model": model, "messages": messages(text), **body}}  # fmt: skip


def jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def openai_client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def submit(client: openai.OpenAI, lines: list[Any] | bytes) -> Batch:
    content = lines if isinstance(lines, bytes) else jsonl(lines)
    uploaded = client.files.create(file=("input.jsonl", content), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
    )


def wait_final(client: openai.OpenAI, batch_id: str) -> Batch:
    return poll(lambda: (b := client.batches.retrieve(batch_id)).status in FINAL and b)


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def without_ids(completion: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in completion.items() if key not in ("id", "created")}


# --- input file validation (pure) -----------------------------------------------------------


def test_validator_reports_each_bad_line_with_its_number() -> None:
    lines = [
        json.dumps(input_line("a", "x")).encode(),
        b"{not json",
        json.dumps({**input_line("b", "x"), "url": "/v1/embeddings"}).encode(),
        json.dumps(input_line("a", "x")).encode(),
        json.dumps({"method": "POST", "url": ENDPOINT, "body": {"model": "m"}}).encode(),
        json.dumps(input_line("c", "x", model="other")).encode(),
    ]
    accepted, problems = validate_input_file(b"\n".join(lines), ENDPOINT)
    assert accepted == []
    assert [(p.line, p.code) for p in problems] == [
        (2, "invalid_json_line"),
        (3, "invalid_url"),
        (4, "duplicate_custom_id"),
        (5, "missing_required_parameter"),
        (6, "mismatched_model"),
    ]


def test_validator_enforces_the_line_and_size_limits() -> None:
    content = jsonl([input_line(f"q{i}", "x") for i in range(3)])
    assert validate_input_file(content, ENDPOINT, max_lines=3)[1] == []
    (too_many,) = validate_input_file(content, ENDPOINT, max_lines=2)[1]
    assert too_many.code == "too_many_requests"
    (too_big,) = validate_input_file(content, ENDPOINT, max_bytes=len(content) - 1)[1]
    assert too_big.code == "file_too_large"
    (empty,) = validate_input_file(b"", ENDPOINT)[1]
    assert empty.code == "empty_file"


def test_validator_accepts_a_bom_and_crlf_line_ends() -> None:
    content = b"\xef\xbb\xbf" + jsonl([input_line("a", "x"), input_line("b", "y")]).replace(
        b"\n", b"\r\n"
    )
    accepted, problems = validate_input_file(content, ENDPOINT)
    assert problems == []
    assert [line.custom_id for line in accepted] == ["a", "b"]


# --- OpenAI Files + Batches over HTTP --------------------------------------------------------


@pytest.mark.timeout(30)
def test_batch_answers_equal_live_answers_and_count_as_batch_work(
    start_simulator: StartSimulator,
) -> None:
    url = start_simulator("--model", "m", "--batch-lines-per-s", "5000")
    texts = ["hello there", "what is a queue?", "count to three"]
    with openai_client(url) as client:
        batch = submit(client, [input_line(f"q{i}", t, max_tokens=50) for i, t in enumerate(texts)])
        assert (batch.status, batch.object, batch.id[:6]) == ("validating", "batch", "batch_")
        done = wait_final(client, batch.id)
        output = file_lines(client, done.output_file_id)
        stats_after_batch = httpx.get(f"{url}/_sim/stats").json()
        live = [
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": t}], max_tokens=50
            )
            for t in texts
        ]
    assert done.status == "completed"
    assert done.error_file_id is None
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (3, 3)
    assert done.in_progress_at is not None and done.completed_at is not None
    assert [line["custom_id"] for line in output] == ["q0", "q1", "q2"]
    for line, live_answer in zip(output, live, strict=True):
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["request_id"].startswith("req_")
        body = ChatCompletion.model_validate(line["response"]["body"])
        assert without_ids(body.model_dump()) == without_ids(live_answer.model_dump())
    tokens = [ChatCompletion.model_validate(line["response"]["body"]).usage for line in output]
    prompt = sum(usage.prompt_tokens for usage in tokens if usage)
    completion = sum(usage.completion_tokens for usage in tokens if usage)
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == (prompt, completion)
    assert stats_after_batch["requests"] == 0  # no live call yet
    assert stats_after_batch["by_lane"] == {"live": 0, "batch": 3}
    assert stats_after_batch["batch"]["models"]["m"] == {
        "served": 3, "rate_limited": 0, "prompt_tokens": prompt, "completion_tokens": completion,
    }  # fmt: skip


@pytest.mark.timeout(30)
def test_batch_lines_do_not_use_the_live_rate_limits(start_simulator: StartSimulator) -> None:
    url = start_simulator("--model", "m:rpm=2", "--batch-lines-per-s", "5000")
    with openai_client(url) as client:
        done = wait_final(client, submit(client, [input_line(f"q{i}", "x") for i in range(6)]).id)
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as http:
        body = {"model": "m", "messages": messages("x")}
        statuses = [http.post(ENDPOINT, json=body).status_code for _ in range(3)]
        stats = http.get("/_sim/stats").json()
    assert done.request_counts is not None and done.request_counts.completed == 6
    assert statuses == [200, 200, 429]
    assert stats["by_lane"] == {"live": 2, "batch": 6}


@pytest.mark.timeout(30)
def test_bad_input_file_fails_the_batch_with_line_errors(start_simulator: StartSimulator) -> None:
    url = start_simulator()
    content = jsonl([input_line("a", "x"), input_line("a", "y")]) + b"[1, 2\n"
    with openai_client(url) as client:
        done = wait_final(client, submit(client, content).id)
    assert done.status == "failed"
    assert done.failed_at is not None
    assert (done.output_file_id, done.error_file_id) == (None, None)
    assert done.errors is not None and done.errors.data is not None
    assert [(e.line, e.code) for e in done.errors.data] == [
        (2, "duplicate_custom_id"),
        (3, "invalid_json_line"),
    ]


@pytest.mark.timeout(30)
def test_a_line_past_the_context_window_goes_to_the_error_file(
    start_simulator: StartSimulator,
) -> None:
    url = start_simulator("--model", "small:ctx=10")
    lines = [input_line("fits", "short", "small"), input_line("long", "x" * 44, "small")]
    with openai_client(url) as client:
        done = wait_final(client, submit(client, lines).id)
        (error_line,) = file_lines(client, done.error_file_id)
        (output_line,) = file_lines(client, done.output_file_id)
    live = httpx.post(f"{url}{ENDPOINT}", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": "small", "messages": messages("x" * 44)})  # fmt: skip
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    assert output_line["custom_id"] == "fits"
    assert error_line["custom_id"] == "long"
    assert error_line["error"] is None
    assert error_line["response"]["status_code"] == 400
    assert error_line["response"]["body"] == live.json()
    assert live.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.timeout(30)
def test_cancel_mid_way_keeps_partial_output_and_errors_the_rest(
    start_simulator: StartSimulator,
) -> None:
    url = start_simulator("--batch-lines-per-s", "40")
    total = 200
    with openai_client(url) as client:
        batch = submit(client, [input_line(f"q{i}", str(i)) for i in range(total)])
        poll(lambda: (client.batches.retrieve(batch.id).request_counts or batch).completed >= 2)
        cancelling = client.batches.cancel(batch.id)
        done = wait_final(client, batch.id)
        output = file_lines(client, done.output_file_id)
        errors = file_lines(client, done.error_file_id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert 2 <= len(output) < total
    assert len(output) + len(errors) == total
    assert {line["custom_id"] for line in output + errors} == {f"q{i}" for i in range(total)}
    assert all(line["response"]["status_code"] == 200 for line in output)
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert all(line["response"] is None for line in errors)


@pytest.mark.timeout(30)
def test_a_cancelled_batch_goes_on_answering_for_its_cancelling_time(
    start_simulator: StartSimulator,
) -> None:
    url = start_simulator("--batch-lines-per-s", "40", "--batch-cancel-s", "1")
    total = 200
    with openai_client(url) as client:
        batch = submit(client, [input_line(f"q{i}", str(i)) for i in range(total)])
        poll(lambda: (client.batches.retrieve(batch.id).request_counts or batch).completed >= 2)
        client.batches.cancel(batch.id)
        at_cancel = (client.batches.retrieve(batch.id).request_counts or batch).completed
        # Still cancelling, and answering, well after the cancel.
        later = poll(lambda: (seen := client.batches.retrieve(batch.id)).request_counts
                     and seen.request_counts.completed >= at_cancel + 10 and seen)
        done = wait_final(client, batch.id)
        output = file_lines(client, done.output_file_id)
    assert later.status == "cancelling"
    assert done.status == "cancelled"
    assert at_cancel + 10 <= len(output) < total


@pytest.mark.timeout(30)
def test_batch_expires_after_its_scaled_window_with_partial_output(
    start_simulator: StartSimulator,
) -> None:
    url = start_simulator("--batch-window-s", "0.3", "--batch-lines-per-s", "20")
    total = 100
    with openai_client(url) as client:
        batch = submit(client, [input_line(f"q{i}", str(i)) for i in range(total)])
        done = wait_final(client, batch.id)
        output = file_lines(client, done.output_file_id)
        errors = file_lines(client, done.error_file_id)
    assert done.status == "expired"
    assert done.expired_at is not None and done.expires_at is not None
    assert done.expires_at - done.created_at <= 1
    assert 1 <= len(output) < total
    assert len(output) + len(errors) == total
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}


@pytest.mark.timeout(30)
def test_stall_fault_set_at_run_time_holds_a_batch_until_cancelled(
    start_simulator: StartSimulator,
) -> None:
    url = start_simulator("--batch-lines-per-s", "5000")
    with openai_client(url) as client:
        stall = httpx.post(f"{url}/_sim/faults", json={"batch_stall": True}).json()
        batch = submit(client, [input_line(f"q{i}", str(i)) for i in range(5)])

        def still_stalled() -> None:
            seen = client.batches.retrieve(batch.id)
            assert seen.status in ("validating", "in_progress")
            assert seen.request_counts is not None and seen.request_counts.completed == 0

        poll(lambda: client.batches.retrieve(batch.id).status == "in_progress")
        hold(0.3, still_stalled)
        client.batches.cancel(batch.id)
        cancelled = wait_final(client, batch.id)
        errors = file_lines(client, cancelled.error_file_id)
        unstall = httpx.post(f"{url}/_sim/faults", json={"batch_stall": False}).json()
        after = wait_final(client, submit(client, [input_line("z", "z")]).id)
    assert stall["batch_stall"] is True and unstall["batch_stall"] is False
    assert cancelled.status == "cancelled" and cancelled.output_file_id is None
    assert [line["error"]["code"] for line in errors] == ["batch_cancelled"] * 5
    assert after.status == "completed"


@pytest.mark.timeout(30)
def test_stall_fault_by_batch_id_and_bad_values(start_simulator: StartSimulator) -> None:
    url = start_simulator()
    with httpx.Client(base_url=url) as http:
        by_id = http.post("/_sim/faults", json={"batch_stall": ["batch_x", "msgbatch_y"]})
        bad = http.post("/_sim/faults", json={"batch_stall": 3})
    assert by_id.json()["batch_stall"] == ["batch_x", "msgbatch_y"]
    assert bad.status_code == 400


@pytest.mark.timeout(30)
def test_list_pages_newest_first(start_simulator: StartSimulator) -> None:
    url = start_simulator()
    with openai_client(url) as client:
        ids = [submit(client, [input_line("a", str(i))]).id for i in range(5)]
        first = client.batches.list(limit=2)
        second = client.batches.list(limit=2, after=first.data[-1].id)
        last = client.batches.list(limit=2, after=second.data[-1].id)
        everything = [batch.id for batch in client.batches.list(limit=2)]
        raw = httpx.get(f"{url}/v1/batches", params={"limit": 2},
                        headers={"authorization": f"Bearer {KEY}"}).json()  # fmt: skip
    newest_first = ids[::-1]
    assert [b.id for b in first.data] == newest_first[:2] and first.has_more
    assert [b.id for b in second.data] == newest_first[2:4] and second.has_more
    assert [b.id for b in last.data] == newest_first[4:] and not last.has_more
    assert everything == newest_first
    assert (raw["object"], raw["first_id"], raw["last_id"]) == ("list", *newest_first[:2])


@pytest.mark.timeout(30)
def test_openai_endpoints_check_the_api_key(start_simulator: StartSimulator) -> None:
    url = start_simulator()
    with openai_client(url, key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            client.files.create(file=("input.jsonl", b"{}"), purpose="batch")
        with pytest.raises(openai.AuthenticationError):
            client.batches.list()
    with openai_client(url) as client:
        uploaded = client.files.create(file=("input.jsonl", b"{}"), purpose="batch")
        with pytest.raises(openai.NotFoundError):
            client.batches.create(input_file_id="file-nope", endpoint=ENDPOINT,
                                  completion_window="24h")  # fmt: skip
        assert client.files.retrieve(uploaded.id).bytes == 2
        assert client.files.content(uploaded.id).content == b"{}"
    wrong = httpx.get(f"{url}/v1/files/{uploaded.id}/content",
                      headers={"authorization": "Bearer sk-wrong"})  # fmt: skip
    assert wrong.status_code == 401 and "sk-wrong" not in wrong.text


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
    start_simulator: StartSimulator,
) -> None:
    url = start_simulator("--model", "m:ctx=50", "--batch-lines-per-s", "5000")
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
    start_simulator: StartSimulator,
) -> None:
    url = start_simulator("--batch-stall")
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
    start_simulator: StartSimulator,
) -> None:
    url = start_simulator()
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
