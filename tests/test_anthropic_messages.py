"""corral.anthropic_messages: OpenAI bodies to Anthropic params, Anthropic results back."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageFunctionToolCall

from corral.anthropic_messages import UntranslatableRequest, to_messages_params
from corral.anthropic_results import to_chat_completion, to_openai_error
from corral.config import Price
from corral.errors import (
    ContextLengthExceededError,
    CorralError,
    InsufficientQuotaError,
    InvalidRequestError,
    InvalidResponseError,
    RateLimitedError,
    ServerError,
)
from corral.pricing import Usage, price_call
from workers.provider_client import classify_failure

MODEL = "claude-opus-4-6"
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
           "AAAABJRU5ErkJggg==")


def params(body: dict[str, Any], default_max_tokens: int = 1024) -> dict[str, Any]:
    return to_messages_params(body, model=MODEL, default_max_tokens=default_max_tokens)


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-opus-4.6", "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def anthropic_message(content: list[dict[str, Any]], stop_reason: str = "end_turn",
                      **usage: Any) -> dict[str, Any]:
    return {"id": "msg_01XYZ", "type": "message", "role": "assistant", "model": MODEL,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 7, **usage}}


# ---- requests --------------------------------------------------------------------------------

def test_plain_text_request_becomes_one_user_turn_with_the_default_max_tokens() -> None:
    assert params(chat(user("Hello")), default_max_tokens=777) == {
        "model": MODEL, "max_tokens": 777,
        "messages": [{"role": "user", "content": [text("Hello")]}],
    }


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert params(chat(user("x"), max_tokens=50))["max_tokens"] == 50
    assert params(chat(user("x"), max_tokens=50, max_completion_tokens=60))["max_tokens"] == 60


@pytest.mark.parametrize("value", [0, -3, 1.5, "100", True])
def test_max_tokens_that_is_not_a_positive_integer_is_refused(value: Any) -> None:
    with pytest.raises(UntranslatableRequest) as caught:
        params(chat(user("x"), max_tokens=value))
    assert caught.value.parameter == "max_tokens"


def test_system_and_developer_messages_are_hoisted_in_order_and_same_role_turns_merged() -> None:
    body = chat(
        {"role": "system", "content": "Be brief."},
        user("first"),
        user([text("second"), text("")]),
        {"role": "developer", "content": [text("Answer in French.")]},
        {"role": "assistant", "content": "un"},
        {"role": "assistant", "content": "deux"},
        user("third"),
    )
    out = params(body)
    assert out["system"] == [text("Be brief."), text("Answer in French.")]
    assert out["messages"] == [
        {"role": "user", "content": [text("first"), text("second")]},
        {"role": "assistant", "content": [text("un"), text("deux")]},
        {"role": "user", "content": [text("third")]},
    ]


def test_translation_does_not_change_the_body() -> None:
    body = chat({"role": "system", "content": "s"}, user("a"), user("b"), stop="END")
    before = copy.deepcopy(body)
    params(body)
    assert body == before


def test_images_become_base64_or_url_sources_and_cache_control_passes_through() -> None:
    body = chat(user([
        text("What is in these?"),
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}",
                                            "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"},
         "cache_control": {"type": "ephemeral"}},
    ]))
    assert params(body)["messages"][0]["content"] == [
        text("What is in these?"),
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"},
         "cache_control": {"type": "ephemeral"}},
    ]


@pytest.mark.parametrize("url", ["data:image/tiff;base64,AAAA", "data:image/png,rawbytes",
                                 "ftp://example.com/a.png"])
def test_images_anthropic_cannot_take_are_refused(url: str) -> None:
    body = chat(user([{"type": "image_url", "image_url": {"url": url}}]))
    with pytest.raises(UntranslatableRequest) as caught:
        params(body)
    assert caught.value.parameter == "messages[0].content[0].image_url"


def test_an_image_in_a_system_message_is_refused() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with pytest.raises(UntranslatableRequest) as caught:
        params(chat({"role": "system", "content": [image]}, user("hi")))
    assert caught.value.parameter == "messages[0].content[0].type"


WEATHER_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def test_function_tools_become_anthropic_tools_with_input_schema() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    out = params(chat(user("weather?"), tools=[WEATHER_TOOL, bare]))
    assert out["tools"] == [
        {"name": "get_weather", "description": "Weather for a city",
         "input_schema": WEATHER_TOOL["function"]["parameters"]},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("required", {"type": "any"}),
    ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"type": "tool", "name": "get_weather"}),
])
def test_tool_choice_maps_to_anthropic(choice: Any, expected: dict[str, Any]) -> None:
    assert params(chat(user("x"), tools=[WEATHER_TOOL], tool_choice=choice))["tool_choice"] \
        == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    out = params(chat(user("x"), tools=[WEATHER_TOOL], parallel_tool_calls=False))
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    out = params(chat(user("x"), tools=[WEATHER_TOOL], tool_choice="required",
                      parallel_tool_calls=False))
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(("extra", "parameter"), [
    ({"tools": [{**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "strict": True}}]},
     "tools[0].function.strict"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_tool_settings_that_do_not_translate_are_refused(extra: dict[str, Any],
                                                         parameter: str) -> None:
    with pytest.raises(UntranslatableRequest) as caught:
        params(chat(user("x"), **extra))
    assert caught.value.parameter == parameter


def test_tool_calls_and_tool_results_become_tool_use_and_tool_result_blocks() -> None:
    body = chat(
        user("Weather in Paris and Rome?"),
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [text("21°C")]},
        user("Which is warmer?"),
        tools=[WEATHER_TOOL],
    )
    assert params(body)["messages"] == [
        {"role": "user", "content": [text("Weather in Paris and Rome?")]},
        {"role": "assistant", "content": [
            text("Checking."),
            {"type": "tool_use", "id": "call_1", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather",
             "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [text("21°C")]},
            text("Which is warmer?"),
        ]},
    ]


def test_tool_call_arguments_that_are_not_a_json_object_are_refused() -> None:
    body = chat(user("x"), {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "ok"})
    with pytest.raises(UntranslatableRequest) as caught:
        params(body)
    assert caught.value.parameter == "messages[1].tool_calls[0].function.arguments"


def test_stop_string_or_list_becomes_stop_sequences() -> None:
    assert params(chat(user("x"), stop="END"))["stop_sequences"] == ["END"]
    assert params(chat(user("x"), stop=["A", "B"]))["stop_sequences"] == ["A", "B"]
    assert "stop_sequences" not in params(chat(user("x"), stop=[]))


@pytest.mark.parametrize("stop", ["\n", ["END", "  "], [""]])
def test_whitespace_only_stop_sequences_are_refused(stop: Any) -> None:
    with pytest.raises(UntranslatableRequest, match="whitespace") as caught:
        params(chat(user("x"), stop=stop))
    assert caught.value.parameter == "stop"


@pytest.mark.parametrize(("given", "sent"), [(0, 0), (0.7, 0.7), (1, 1), (1.3, 1), (2, 1)])
def test_temperature_is_clamped_to_anthropics_range(given: float, sent: float) -> None:
    assert params(chat(user("x"), temperature=given))["temperature"] == sent


def test_temperature_with_top_p_is_refused_but_top_p_one_is_dropped() -> None:
    with pytest.raises(UntranslatableRequest) as caught:
        params(chat(user("x"), temperature=0.5, top_p=0.9))
    assert caught.value.parameter == "top_p"
    out = params(chat(user("x"), temperature=0.5, top_p=1))
    assert (out["temperature"], "top_p" in out) == (0.5, False)
    assert params(chat(user("x"), top_p=0.9))["top_p"] == 0.9


def test_user_becomes_metadata_user_id() -> None:
    assert params(chat(user("x"), user="u-42"))["metadata"] == {"user_id": "u-42"}


@pytest.mark.parametrize(("parameter", "value"), [
    ("n", 2), ("logprobs", True), ("top_logprobs", 3), ("logit_bias", {"50256": -100}),
    ("presence_penalty", 0.5), ("frequency_penalty", -1), ("seed", 7),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    ("response_format", {"type": "json_object"}), ("audio", {"voice": "alloy"}),
    ("modalities", ["text", "audio"]), ("reasoning_effort", "high"), ("stream", True),
    ("functions", [{"name": "f"}]), ("some_future_parameter", 1),
])
def test_untranslatable_parameters_are_refused_naming_the_parameter(parameter: str,
                                                                    value: Any) -> None:
    with pytest.raises(UntranslatableRequest) as caught:
        params(chat(user("x"), **{parameter: value}))
    assert caught.value.parameter == parameter
    assert str(caught.value).startswith(f"{parameter}: ")
    assert caught.value.reason
    assert isinstance(caught.value, CorralError)


def test_harmless_parameters_are_dropped() -> None:
    out = params(chat(user("x"), n=1, logprobs=False, stream=False, presence_penalty=0,
                      frequency_penalty=0.0, logit_bias={}, response_format={"type": "text"},
                      store=True, metadata={"team": "eval"}, service_tier="flex",
                      seed=None, parallel_tool_calls=True, stream_options=None))
    assert out == {"model": MODEL, "max_tokens": 1024,
                   "messages": [{"role": "user", "content": [text("x")]}]}


@pytest.mark.parametrize(("messages", "parameter"), [
    ([{"role": "assistant", "content": "Hi"}, user("x")], "messages"),
    ([user("x"), {"role": "assistant", "content": "The answer is"}], "messages"),
    ([{"role": "system", "content": "only a system prompt"}], "messages"),
    ([user("x"), {"role": "assistant", "content": "a"}, user("")], "messages[2].content"),
    ([{"role": "user", "content": "x", "name": "alice"}], "messages[0].name"),
    ([user([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}])],
     "messages[0].content[0].type"),
    ([{"role": "function", "name": None, "content": "x"}], "messages[0].role"),
    ([user("x"), {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "c", "content": "ok"}], "messages[1].tool_calls[0]"),
    ([user("x"), {"role": "assistant", "content": "a"},
      {"role": "tool", "tool_call_id": None, "content": "ok"}], "messages[2].tool_call_id"),
])
def test_conversations_anthropic_would_read_differently_are_refused(
        messages: list[dict[str, Any]], parameter: str) -> None:
    with pytest.raises(UntranslatableRequest) as caught:
        params(chat(*messages))
    assert caught.value.parameter == parameter


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
