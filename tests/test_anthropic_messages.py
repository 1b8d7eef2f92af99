"""corral.anthropic_messages: OpenAI chat bodies to Anthropic Messages params, or a clear
refusal."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from corral.anthropic_messages import UntranslatableRequest
from corral.errors import (
    CorralError,
)
from tests.anthropic_shapes import MODEL, PNG_B64, chat, params, text, user

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
