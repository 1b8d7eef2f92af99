"""Money: the exact cost of one provider call from its `usage`, in Decimal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from corral.config import ModelConfig, Price

MILLION = Decimal(1_000_000)
NANO_PER_USD = Decimal(10**9)


@dataclass(frozen=True)
class Usage:
    """Token counts as the provider reported them."""

    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int

    @classmethod
    def from_response(cls, usage: dict[str, Any] | None) -> Usage:
        """Read an OpenAI `usage` object; missing parts count as zero."""
        usage = usage or {}
        details = usage.get("prompt_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )


def price_call(usage: Usage, price: Price) -> Decimal:
    """((prompt − cached) × input + cached × cached_input + completion × output) / 10^6.

    Unrounded: totals are summed from these exact values.
    """
    uncached = usage.prompt_tokens - usage.cached_tokens
    return (uncached * price.input + usage.cached_tokens * price.cached_input_per_mtok
            + usage.completion_tokens * price.output) / MILLION


def cost_and_list_cost(usage: Usage, model: ModelConfig) -> tuple[Decimal, Decimal]:
    """The call's cost at our price and at the model's list price."""
    return price_call(usage, model.price), price_call(usage, model.effective_list_price)


def to_nano_usd(usd: Decimal) -> int:
    """Whole nano-dollars, rounded up so a reservation or a running total never falls short."""
    return math.ceil(usd * NANO_PER_USD)
