"""Line validation: every refusal names its reason; valid lines are routed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.config import load_config
from producer.reader import RawLine
from producer.router import Router
from producer.seen_ids import SeenIds
from producer.validator import AcceptedLine, LineValidator, RejectedLine


@pytest.fixture()
def validator(write_config, tmp_path: Path) -> LineValidator:
    source = tmp_path / "input.jsonl"
    source.touch()
    return LineValidator(Router(load_config(write_config(small_ctx=50, small_tpm=500))),
                         SeenIds(source))


def line(custom_id: object = "q-1", **overrides: object) -> bytes:
    data = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}}
    data.update(overrides)
    if custom_id is None:
        del data["custom_id"]
    return json.dumps(data, ensure_ascii=False).encode()


def check(validator: LineValidator, data: bytes, number: int = 1):
    """Append the line to the validator's input file (duplicates are confirmed from it)."""
    source = validator._seen_ids.path
    with open(source, "ab") as handle:
        offset = handle.tell()
        handle.write(data + b"\n")
    return validator.check(RawLine(number, data, offset))


def test_valid_line_is_routed_and_gets_the_upstream_model(validator: LineValidator) -> None:
    accepted = check(validator, line())
    assert isinstance(accepted, AcceptedLine)
    assert accepted.model.name == "small" and accepted.body["model"] == "sim-small"
    assert accepted.reservation_tokens == 1 + 128
    assert json.loads(accepted.job())["route"]["rule"] == "default"


@pytest.mark.parametrize(("data", "reason"), [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"custom_id": "\xff\xfe"}', "invalid UTF-8"),
    (line(None), "missing custom_id"),
    (line(""), "custom_id must be a non-empty string"),
    (line(7), "custom_id must be a non-empty string"),
    (line("x" * 257), "longer than 256"),
    (line("a\nb"), "control characters"),
    (line(method="GET"), "method must be \"POST\""),
    (line(url="/v1/completions"), "url must be '/v1/chat/completions'"),
    (line(body=[]), "body must be a JSON object"),
    (line(body={"messages": [{"role": "user", "content": "x"}]}), "body.model is missing"),
    (line(body={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
     "unknown model 'gpt-9'"),
    (line(body={"model": "small", "stream": True,
                "messages": [{"role": "user", "content": "x"}]}), "stream = true"),
    (line(body={"model": "small", "messages": []}), "non-empty list"),
    (line(body={"model": "small", "messages": ["hi"]}), "must be an object with a role"),
    (line(body={"model": "small", "max_tokens": 0,
                "messages": [{"role": "user", "content": "x"}]}), "positive integer"),
    (line(metadata=["x"]), "metadata must be a JSON object"),
    (line(body={"model": "small", "messages": [{"role": "user", "content": "x" * 400}]}),
     "exceeds the 50-token context window of small"),
    (line(body={"model": "small", "max_tokens": 600,
                "messages": [{"role": "user", "content": "x"}]}),
     "allows only 500 tokens per minute"),
    (b'{"custom_id": "q", "body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "nested too deeply (more than 64 levels)"),
    (line(metadata=json.loads("[" * 70 + "]" * 70)), "nested too deeply"),
    (line(body={"model": "small", "messages": [{"role": "user", "content": "SURROGATE"}]})
     .replace(b"SURROGATE", b"\\ud800"), "lone UTF-16 surrogate"),
    (line(body={"model": "small", "messages": [{"role": "user", "content": None}]}),
     "body.messages[0] (user) has no content"),
    (line(body={"model": "small", "messages": [{"role": "system"}]}),
     "body.messages[0] (system) has no content"),
    (b'{"custom_id": "q", "custom_id": "r", "method": "POST"}',
     "duplicate key 'custom_id' in one JSON object"),
    (line(body={"model": "small", "messages": [{"role": "user", "content": "x"}]})
     .replace(b'"model": "small"', b'"model": "small", "model": "big"'),
     "duplicate key 'model'"),
])
def test_bad_lines_are_rejected_with_their_reason(validator: LineValidator, data: bytes,
                                                  reason: str) -> None:
    rejected = check(validator, data, number=7)
    assert isinstance(rejected, RejectedLine), rejected
    assert rejected.number == 7 and reason in rejected.reason


def test_paired_surrogate_escapes_and_tool_call_messages_are_accepted(
        validator: LineValidator) -> None:
    messages = [{"role": "user", "content": "😀 ok"},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c1", "type": "function",
                                 "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "done"}]
    data = json.dumps({"custom_id": "q", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "small", "messages": messages}}).encode()
    assert b"\\ud83d\\ude00" in data  # json.dumps escapes the emoji as a surrogate pair
    accepted = check(validator, data)
    assert isinstance(accepted, AcceptedLine)
    assert accepted.body["messages"][0]["content"] == "😀 ok"


def test_a_repeated_custom_id_is_the_bad_line_not_the_first(validator: LineValidator) -> None:
    assert isinstance(check(validator, line("dup"), 1), AcceptedLine)
    repeat = check(validator, line("dup"), 2)
    assert isinstance(repeat, RejectedLine) and "duplicate custom_id 'dup'" in repeat.reason
    assert repeat.record_id == "line-2"


def test_a_rejected_line_keeps_its_custom_id_for_its_error_record(
        validator: LineValidator) -> None:
    rejected = check(validator, line("q-9", url="/x"), 3)
    assert rejected.record_id == "q-9"
    assert check(validator, b"{oops", 4).record_id == "line-4"
