"""Money: the exact cost of one provider call from its `usage`, in Decimal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from corral.config import ModelConfig, Price

MILLION = Decimal(1_000_000)
NANO_PER_USD = Decimal(10**9)


@dataclass(frozen=True)
class Usage:
    """Token counts as the provider reported them. `prompt_tokens` counts every input token:
    those read from the prompt cache (`cached_tokens`) and written to it (Anthropic's
    `cache_creation_input_tokens`, of which `cache_write_1h_tokens` went to the 1-hour cache)
    included."""

    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @classmethod
    def from_response(cls, usage: dict[str, Any] | None) -> Usage:
        """Read an OpenAI `usage` object (with Anthropic's cache-write figures when a
        translated answer carries them); missing parts count as zero."""
        usage = usage or {}
        details = usage.get("prompt_tokens_details") or {}
        creation = usage.get("cache_creation") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
            cache_write_1h_tokens=int(creation.get("ephemeral_1h_input_tokens") or 0)
            if isinstance(creation, dict) else 0,
        )


def price_call(usage: Usage, price: Price) -> Decimal:
    """((prompt − cached − written) × input + cached × cached_input + written (5 min) ×
    cache_write + written (1 h) × cache_write_1h + completion × output) / 10^6.

    Unrounded: totals are summed from these exact values.
    """
    written_1h = usage.cache_write_1h_tokens
    written_5m = usage.cache_write_tokens - written_1h
    plain = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
    return (plain * price.input + usage.cached_tokens * price.cached_input_per_mtok
            + written_5m * price.cache_write_per_mtok
            + written_1h * price.cache_write_1h_per_mtok
            + usage.completion_tokens * price.output) / MILLION


Lane = Literal["live", "batch", "flex"]


def cost_and_list_cost(usage: Usage, model: ModelConfig,
                       lane: Lane = "live") -> tuple[Decimal, Decimal]:
    """The call's cost at our price on its lane (live, a provider's Batch API, or live at
    the flex service tier) and at the model's list price."""
    price = {"live": model.price, "batch": model.effective_batch_price,
             "flex": model.effective_flex_price}[lane]
    return price_call(usage, price), price_call(usage, model.effective_list_price)


def answer_lane(model: ModelConfig, body: dict[str, Any]) -> Lane:
    """The lane a live answer is priced on: "flex" when the model has flex and the provider
    says it served the call at that tier, else "live"."""
    return "flex" if model.flex and body.get("service_tier") == "flex" else "live"


def answer_cost(model: ModelConfig, body: dict[str, Any]) -> tuple[Usage, Decimal, Decimal, Lane]:
    """A live answer's usage, cost, list cost and the lane it is priced on."""
    usage = Usage.from_response(body.get("usage"))
    lane = answer_lane(model, body)
    cost_usd, list_cost_usd = cost_and_list_cost(usage, model, lane)
    return usage, cost_usd, list_cost_usd, lane


def to_nano_usd(usd: Decimal) -> int:
    """Whole nano-dollars, rounded up so a reservation or a running total never falls short."""
    return math.ceil(usd * NANO_PER_USD)
