"""The simulator's OpenAI batch lane: input file validation, then Files + Batches over HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch
from openai.types.chat import ChatCompletion

from simulator.batch_input import validate_input_file
from tests.simulator_batches import (
    KEY,
    StartSimulator,
    hold,
    jsonl,
    messages,
    poll,
)

ENDPOINT = "/v1/chat/completions"
FINAL = ("completed", "failed", "expired", "cancelled")


def input_line(custom_id: str, text: str, model: str = "m", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT,
            "body": {"model": model, "messages": messages(text), **body}}  # fmt: skip


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
    start_batch_simulator: StartSimulator,
) -> None:
    url = start_batch_simulator("--model", "m", "--batch-lines-per-s", "5000")
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
def test_batch_lines_do_not_use_the_live_rate_limits(start_batch_simulator: StartSimulator) -> None:
    url = start_batch_simulator("--model", "m:rpm=2", "--batch-lines-per-s", "5000")
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
def test_bad_input_file_fails_the_batch_with_line_errors(
        start_batch_simulator: StartSimulator) -> None:
    url = start_batch_simulator()
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
    start_batch_simulator: StartSimulator,
) -> None:
    url = start_batch_simulator("--model", "small:ctx=10")
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
    start_batch_simulator: StartSimulator,
) -> None:
    url = start_batch_simulator("--batch-lines-per-s", "40")
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
    start_batch_simulator: StartSimulator,
) -> None:
    url = start_batch_simulator("--batch-lines-per-s", "40", "--batch-cancel-s", "1")
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
    start_batch_simulator: StartSimulator,
) -> None:
    url = start_batch_simulator("--batch-window-s", "0.3", "--batch-lines-per-s", "20")
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
    start_batch_simulator: StartSimulator,
) -> None:
    url = start_batch_simulator("--batch-lines-per-s", "5000")
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
def test_stall_fault_by_batch_id_and_bad_values(start_batch_simulator: StartSimulator) -> None:
    url = start_batch_simulator()
    with httpx.Client(base_url=url) as http:
        by_id = http.post("/_sim/faults", json={"batch_stall": ["batch_x", "msgbatch_y"]})
        bad = http.post("/_sim/faults", json={"batch_stall": 3})
    assert by_id.json()["batch_stall"] == ["batch_x", "msgbatch_y"]
    assert bad.status_code == 400


@pytest.mark.timeout(30)
def test_list_pages_newest_first(start_batch_simulator: StartSimulator) -> None:
    url = start_batch_simulator()
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
def test_openai_endpoints_check_the_api_key(start_batch_simulator: StartSimulator) -> None:
    url = start_batch_simulator()
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
