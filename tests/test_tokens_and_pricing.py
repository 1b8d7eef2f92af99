"""Token estimates and exact Decimal prices."""

from __future__ import annotations

from decimal import Decimal

from corral.config import Price
from corral.pricing import Usage, price_call
from corral.tokens import estimate_prompt_tokens, reservation_tokens


def test_prompt_estimate_is_ceil_of_chars_over_four_across_parts() -> None:
    body = {"messages": [{"role": "system", "content": "abcde"},
                         {"role": "user", "content": [{"type": "text", "text": "xyz"},
                                                      {"type": "image_url", "image_url": {}}]}]}
    assert estimate_prompt_tokens(body) == 2  # 8 chars


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
