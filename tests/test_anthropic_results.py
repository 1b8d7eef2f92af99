"""corral.anthropic_results: Anthropic results back to OpenAI chat completions and errors,
priced alike; and a request and its result both ways."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageFunctionToolCall

from corral.anthropic_results import to_chat_completion, to_openai_error
from corral.config import Price
from corral.errors import (
    ContextLengthExceededError,
    InsufficientQuotaError,
    InvalidRequestError,
    InvalidResponseError,
    RateLimitedError,
    ServerError,
)
from corral.pricing import Usage, price_call
from tests.anthropic_shapes import MODEL, anthropic_message, chat, params, text, user
from workers.provider_client import classify_failure

# ---- results ---------------------------------------------------------------------------------

def test_text_result_becomes_a_chat_completion_the_openai_sdk_accepts() -> None:
    message = anthropic_message([text("Bonjour"), text(" le monde")])
    body = to_chat_completion(message, custom_id="q-1", created=1_700_000_000)
    completion = ChatCompletion.model_validate(body)
    assert completion.id == "msg_01XYZ"
    assert completion.object == "chat.completion"
    assert completion.created == 1_700_000_000
    assert completion.model == MODEL
    assert completion.choices[0].message.content == "Bonjour le monde"
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.total_tokens) == (12, 7, 19)


def test_tool_use_blocks_become_tool_calls_with_json_string_arguments() -> None:
    message = anthropic_message([
        text("Let me check."),
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
         "input": {"city": "Zürich"}},
    ], stop_reason="tool_use")
    completion = ChatCompletion.model_validate(to_chat_completion(message, created=1))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert (call.id, call.type, call.function.name) == ("toolu_1", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Zürich"}


def test_a_result_with_only_tool_use_has_null_content() -> None:
    message = anthropic_message([{"type": "tool_use", "id": "t", "name": "now", "input": {}}],
                                stop_reason="tool_use")
    body = to_chat_completion(message, created=1)
    assert body["choices"][0]["message"]["content"] is None
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"),
    ("model_context_window_exceeded", "length"),
])
def test_stop_reason_maps_to_finish_reason(stop_reason: str, finish_reason: str) -> None:
    body = to_chat_completion(anthropic_message([text("x")], stop_reason), created=1)
    assert ChatCompletion.model_validate(body).choices[0].finish_reason == finish_reason


def test_usage_counts_cache_writes_and_reads_in_the_prompt_and_keeps_them_apart() -> None:
    message = anthropic_message([text("x")], cache_creation_input_tokens=2_000,
                                cache_read_input_tokens=30_000,
                                cache_creation={"ephemeral_5m_input_tokens": 1_500,
                                                "ephemeral_1h_input_tokens": 500})
    body = to_chat_completion(message, created=1)
    assert body["usage"] == {
        "prompt_tokens": 32_012, "completion_tokens": 7, "total_tokens": 32_019,
        "prompt_tokens_details": {"cached_tokens": 30_000},
        "cache_creation_input_tokens": 2_000, "cache_read_input_tokens": 30_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_500,
                           "ephemeral_1h_input_tokens": 500},
    }
    usage = ChatCompletion.model_validate(body).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 30_000


def test_translated_usage_prices_cache_reads_and_writes_at_their_own_prices() -> None:
    message = anthropic_message([text("x")], input_tokens=1_000,
                                cache_creation_input_tokens=2_000,
                                cache_read_input_tokens=10_000, output_tokens=500)
    usage = Usage.from_response(to_chat_completion(message, created=1)["usage"])
    assert usage == Usage(prompt_tokens=13_000, cached_tokens=10_000, completion_tokens=500,
                          cache_write_tokens=2_000)
    price = Price(input=Decimal(3), output=Decimal(15), cached_input=Decimal("0.3"),
                  cache_write=Decimal("3.75"))
    # (1,000 × 3 + 10,000 × 0.3 + 2,000 × 3.75 + 500 × 15) / 10^6
    assert price_call(usage, price) == Decimal("0.021")
    # Without a cache_write price, writes cost the input price (OpenAI-style providers).
    assert price_call(usage, Price(input=Decimal(3), output=Decimal(15),
                                   cached_input=Decimal("0.3"))) == Decimal("0.0195")


def test_one_hour_cache_writes_have_their_own_price() -> None:
    message = anthropic_message([text("x")], input_tokens=0, cache_creation_input_tokens=2_000,
                                cache_read_input_tokens=0, output_tokens=0)
    message["usage"]["cache_creation"] = {"ephemeral_5m_input_tokens": 1_500,
                                          "ephemeral_1h_input_tokens": 500}
    usage = Usage.from_response(to_chat_completion(message, created=1)["usage"])
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (2_000, 500)
    price = Price(input=Decimal(5), output=Decimal(25), cache_write=Decimal("6.25"),
                  cache_write_1h=Decimal(10))
    assert price_call(usage, price) == (1_500 * Decimal("6.25") + 500 * 10) / 1_000_000


def test_missing_cache_figures_count_as_zero() -> None:
    usage = to_chat_completion(anthropic_message([text("x")]), created=1)["usage"]
    assert (usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"],
            usage["cache_creation_input_tokens"]) == (12, 0, 0)
    assert "cache_creation" not in usage


def test_an_empty_answer_has_null_content() -> None:
    body = to_chat_completion(anthropic_message([], stop_reason="max_tokens"), created=1)
    completion = ChatCompletion.model_validate(body)
    assert (completion.choices[0].message.content, completion.choices[0].finish_reason) \
        == (None, "length")


def test_thinking_blocks_are_left_out_of_the_answer() -> None:
    message = anthropic_message([{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                 text("42")])
    assert to_chat_completion(message, created=1)["choices"][0]["message"]["content"] == "42"


@pytest.mark.parametrize("message", [
    anthropic_message([{"type": "server_tool_use", "id": "s", "name": "web_search",
                        "input": {}}]),
    anthropic_message([text("x")], stop_reason="pause_turn"),
    anthropic_message([{"type": "text"}]),
    anthropic_message([{"type": "tool_use", "name": "f", "input": {}}], stop_reason="tool_use"),
    {**anthropic_message([text("x")]), "content": None},
    {**anthropic_message([text("x")]), "usage": None},
])
def test_results_without_an_openai_equivalent_are_invalid_responses(
        message: dict[str, Any]) -> None:
    with pytest.raises(InvalidResponseError, match="q-9"):
        to_chat_completion(message, custom_id="q-9", created=1)


# ---- errors ----------------------------------------------------------------------------------

def errored(error_type: str, message: str = "boom") -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "request_id": "req_1",
                                         "error": {"type": error_type, "message": message}}}


@pytest.mark.parametrize(("error_type", "status", "code", "raised_as"), [
    ("invalid_request_error", 400, "invalid_request", InvalidRequestError),
    ("billing_error", 402, "insufficient_quota", InsufficientQuotaError),
    ("rate_limit_error", 429, "rate_limit_exhausted", RateLimitedError),
    ("api_error", 500, "server_error_exhausted", ServerError),
    ("overloaded_error", 529, "server_error_exhausted", ServerError),
    ("something_new_error", 500, "server_error_exhausted", ServerError),
])
def test_errored_results_become_openai_errors_corral_classifies_alike(
        error_type: str, status: int, code: str, raised_as: type[Exception]) -> None:
    got_status, body = to_openai_error(errored(error_type, "it broke"))
    assert (got_status, body) == (status, {"error": {"message": "it broke", "type": error_type,
                                                     "code": code}})
    assert type(classify_failure(got_status, body, {})) is raised_as


def test_a_prompt_too_long_is_context_length_exceeded() -> None:
    status, body = to_openai_error(errored("invalid_request_error",
                                           "prompt is too long: 208310 tokens > 200000 maximum"))
    assert (status, body["error"]["code"]) == (400, "context_length_exceeded")
    assert isinstance(classify_failure(status, body, {}), ContextLengthExceededError)


@pytest.mark.parametrize(("kind", "status", "code"), [("canceled", 499, "batch_cancelled"),
                                                      ("expired", 408, "batch_expired")])
def test_canceled_and_expired_results_carry_the_batch_codes(kind: str, status: int,
                                                             code: str) -> None:
    got_status, body = to_openai_error({"type": kind})
    assert got_status == status
    assert (body["error"]["code"], body["error"]["type"]) == (code, kind)
    assert body["error"]["message"]


def test_a_whole_results_line_is_accepted() -> None:
    line = {"custom_id": "q-1", "result": errored("authentication_error")}
    assert to_openai_error(line) == (401, {"error": {"message": "boom",
                                                     "type": "authentication_error",
                                                     "code": "authentication_error"}})


def test_a_succeeded_or_unknown_result_is_not_an_error_to_translate() -> None:
    with pytest.raises(ValueError, match="to_chat_completion"):
        to_openai_error({"type": "succeeded", "message": anthropic_message([text("x")])})
    with pytest.raises(InvalidResponseError):
        to_openai_error({"type": "vanished"})


# ---- both ways -------------------------------------------------------------------------------

def test_round_trip_request_then_result_keeps_the_openai_contract() -> None:
    request = params(chat({"role": "system", "content": "You are terse."},
                          user("2+2?"), max_completion_tokens=16, temperature=0, stop="\n\nQ:"))
    assert request == {"model": MODEL, "max_tokens": 16, "system": [text("You are terse.")],
                       "messages": [{"role": "user", "content": [text("2+2?")]}],
                       "temperature": 0, "stop_sequences": ["\n\nQ:"]}
    result = anthropic_message([text("4")], stop_reason="stop_sequence")
    completion = ChatCompletion.model_validate(to_chat_completion(result, custom_id="q-1",
                                                                  created=5))
    assert (completion.choices[0].message.content, completion.choices[0].finish_reason) \
        == ("4", "stop")
