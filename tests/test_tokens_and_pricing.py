"""Token estimates, the prompt-token bound and exact Decimal prices."""

from __future__ import annotations

import random
import sys
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from corral.config import Price
from corral.errors import ConfigError
from corral.pricing import Usage, price_call
from corral.settings import Settings
from corral.tokens import (
    IMAGE_TOKENS_BOUND,
    estimate_prompt_tokens,
    prompt_tokens_bound,
    reservation_tokens,
    resolve_prompt_estimator,
    script_prompt_tokens,
    text_centitokens,
    tiktoken_prompt_tokens,
)


def user(content: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


def test_ascii_prompt_estimate_is_ceil_of_chars_over_four_across_parts() -> None:
    body = {"messages": [{"role": "system", "content": "abcde"},
                         {"role": "user", "content": [{"type": "text", "text": "xyz"},
                                                      {"type": "image_url", "image_url": {}}]}]}
    assert estimate_prompt_tokens(body) == script_prompt_tokens(body) == 2  # 8 chars


@pytest.mark.parametrize(("char", "centitokens"), [
    ("a", 25), (" ", 25), ("é", 85), ("Ω", 40), ("Ж", 33), ("ש", 50), ("ع", 40), ("क", 40),
    ("ก", 40), ("—", 100), ("’", 100), ("あ", 75), ("。", 75), ("中", 100), ("한", 80),
    ("，", 100), ("😀", 150), ("\ud800", 80),  # a lone surrogate, as JSON allows
])
def test_each_script_has_its_own_ratio(char: str, centitokens: int) -> None:
    assert text_centitokens(char) == centitokens
    assert text_centitokens(char * 3 + "ab") == 3 * centitokens + 50


def test_korean_and_cjk_are_not_counted_at_four_characters_a_token() -> None:
    # The example config routes on 적분 and 증명: o200k_base gives such text about 0.8 tokens
    # a syllable, where ceil(characters / 4) gave a quarter.
    assert script_prompt_tokens(user("적분을 계산하고 증명하세요")) == 11  # 12 syllables, 2 spaces
    assert script_prompt_tokens(user("今天天气很好")) == 6
    assert script_prompt_tokens(user("ありがとう")) == 4  # 5 kana at 0.75
    assert script_prompt_tokens(user("Привет, мир")) == 4  # 9 Cyrillic at 0.33, 2 ASCII
    mixed = user([{"type": "text", "text": "Translate: "}, {"type": "text", "text": "안녕"}])
    assert script_prompt_tokens(mixed) == 5  # 11 ASCII + 2 syllables = 435 centitokens


def test_tiktoken_estimate_is_the_count_plus_the_chat_overhead() -> None:
    body = {"messages": [{"role": "system", "content": "ab"},
                         {"role": "user", "content": [{"type": "text", "text": "cde"}]}]}
    assert tiktoken_prompt_tokens(len, body) == 5 + 2 * 4 + 3


def _random_text(rng: random.Random) -> str:
    pools = ("abc xyz 123,.", "éøßñ", "Ωλ", "Жщы", "שלום", "مرحبا", "नमस्ते", "สวัสดี", "“”—…",
             "ひらカタ。", "中文字", "한국어", "，！", "😀🚀", "\ud800")
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randrange(0, 60)))


def _random_body(rng: random.Random) -> dict[str, Any]:
    messages: list[Any] = []
    for _ in range(rng.randrange(0, 4)):
        if rng.random() < 0.5:
            content: Any = _random_text(rng)
        else:
            content = [rng.choice([{"type": "text", "text": _random_text(rng)},
                                   {"type": "image_url", "image_url": {"url": "x"}},
                                   {"text": _random_text(rng)}, _random_text(rng)])
                       for _ in range(rng.randrange(0, 3))]
        messages.append(rng.choice([{"role": "user", "content": content},
                                    {"role": "assistant", "content": content, "name": "n"},
                                    "not a message"]))
    body: dict[str, Any] = {"messages": messages}
    if rng.random() < 0.3:
        body["tools"] = [{"type": "function", "function": {"name": _random_text(rng)}}]
    return body


def _one_token_per_byte(text: str) -> int:
    """The most tokens a byte-level BPE can make of a text."""
    return len(text.encode("utf-8", "surrogatepass"))


def test_no_estimate_exceeds_the_bound() -> None:
    rng = random.Random(18)
    for _ in range(2_000):
        body = _random_body(rng)
        bound = prompt_tokens_bound(body)
        assert script_prompt_tokens(body) <= bound, body
        assert tiktoken_prompt_tokens(_one_token_per_byte, body) <= bound, body


def test_bound_counts_bytes_overhead_images_and_tools() -> None:
    assert prompt_tokens_bound({"messages": []}) == 3
    assert prompt_tokens_bound(user("한국어")) == 3 + 4 + 9
    text_part = {"type": "text", "text": "abcd", "cache_control": {"type": "ephemeral"}}
    assert prompt_tokens_bound(user([text_part])) == 3 + 4 + 4  # the text alone
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 9000}}
    assert prompt_tokens_bound(user([text_part, image])) == 3 + 4 + 4 + IMAGE_TOKENS_BOUND
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert prompt_tokens_bound({**user("x"), "tools": tools}) == 3 + 4 + 1 + len(
        '[{"type":"function","function":{"name":"f"}}]')
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}
    assert prompt_tokens_bound({"messages": [call]}) == 3 + 4 + len("null") + len('[{"id":"c"}]')


def test_auto_falls_back_to_script_ratios_without_tiktoken(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # not importable
    estimator, description = resolve_prompt_estimator("auto")
    assert estimator is script_prompt_tokens
    assert "tiktoken is not installed" in description
    assert resolve_prompt_estimator("script")[0] is script_prompt_tokens
    with pytest.raises(ConfigError, match="CORRAL_TOKEN_ESTIMATOR=tiktoken: tiktoken is not"):
        resolve_prompt_estimator("tiktoken")


def test_settings_refuse_tiktoken_estimator_that_cannot_load_offline(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    assert Settings(token_estimator="auto").token_estimator == "auto"
    with pytest.raises(ValidationError, match="CORRAL_TOKEN_ESTIMATOR=tiktoken"):
        Settings(token_estimator="tiktoken")


def test_reservation_uses_max_completion_tokens_then_max_tokens_then_default_times_n() -> None:
    messages = [{"role": "user", "content": "a" * 40}]  # 10 tokens
    assert reservation_tokens({"messages": messages}, 100) == 110
    assert reservation_tokens({"messages": messages, "max_tokens": 7, "n": 3}, 100) == 31
    assert reservation_tokens({"messages": messages, "max_tokens": 7,
                               "max_completion_tokens": 5}, 100) == 15


def test_price_splits_cached_input_and_stays_exact() -> None:
    price = Price(input="3", output="15", cached_input="0.3")
    usage = Usage(prompt_tokens=1000, cached_tokens=256, completion_tokens=77)
    assert price_call(usage, price) == (Decimal(744) * 3 + Decimal(256) * Decimal("0.3")
                                        + Decimal(77) * 15) / Decimal(1_000_000)
    assert str(price_call(Usage(1, 0, 0), Price(input="0.1", output="0.4"))) == "1E-7"


def test_usage_reads_cached_tokens_and_tolerates_missing_parts() -> None:
    usage = Usage.from_response({"prompt_tokens": 10, "completion_tokens": 3,
                                 "prompt_tokens_details": {"cached_tokens": 4}})
    assert usage == Usage(10, 4, 3)
    assert Usage.from_response(None) == Usage(0, 0, 0)


def test_a_batch_lane_call_costs_the_batch_price_and_saves_against_the_list_price(
        write_config) -> None:
    from corral.config import load_config
    from corral.pricing import cost_and_list_cost

    model = load_config(write_config()).models["big"]  # $3 in, $15 out, $0.3 cached; list 5/25
    usage = Usage(prompt_tokens=1000, cached_tokens=200, completion_tokens=100)
    live, listed = cost_and_list_cost(usage, model)
    batch, batch_listed = cost_and_list_cost(usage, model, "batch")
    assert live == (800 * 3 + 200 * Decimal("0.3") + 100 * 15) / Decimal(1_000_000)
    assert batch == live / 2 and batch_listed == listed


def test_cache_writes_default_to_the_input_price() -> None:
    usage = Usage(prompt_tokens=1000, cached_tokens=0, completion_tokens=0,
                  cache_write_tokens=400)
    assert price_call(usage, Price(input="2", output="8")) == Decimal(2000) / 1_000_000
    assert price_call(usage, Price(input="2", output="8", cache_write="2.5")) == \
        (600 * 2 + 400 * Decimal("2.5")) / Decimal(1_000_000)
