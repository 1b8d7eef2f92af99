"""Spending caps (`submit --max-cost`, a model's `max_cost`) held across the whole fleet."""

from __future__ import annotations

from decimal import Decimal

import redis

from corral import lua_scripts
from corral.config import ModelConfig
from corral.pricing import Usage, price_call, to_nano_usd
from corral.redis_keys import BatchKeys


class BudgetExceededError(Exception):
    """The call's worst case would pass a cap: the line ends as budget_exceeded."""


class Budget:
    """Reserves a call's worst-case cost before it, settles the actual cost after."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = lua_scripts.register(client, "budget", package="workers")

    def reserve(self, batch_id: str, model: ModelConfig, usage_ceiling: Usage) -> int:
        """Reserve the worst case (no cached discount); returns the amount, in nano-dollars.

        Raises:
            BudgetExceededError: the batch's or the model's cap would be passed.
        """
        amount = to_nano_usd(price_call(usage_ceiling, model.price))
        model_cap = "" if model.max_cost is None else to_nano_usd(model.max_cost)
        reserved = self._script(keys=[BatchKeys(batch_id).meta],
                                args=["reserve", model.name, amount, model_cap])
        if reserved == -1:
            raise BudgetExceededError("the batch is gone: nothing can be spent on it")
        if not reserved:
            raise BudgetExceededError(f"the spending cap of this batch or of {model.name} "
                                      "would be passed by this request's worst-case cost")
        return amount

    def settle(self, batch_id: str, model: ModelConfig, reserved_nusd: int,
               spent_usd: Decimal) -> None:
        """Release the reservation and count what the call really cost."""
        self._script(keys=[BatchKeys(batch_id).meta],
                     args=["settle", model.name, reserved_nusd, "",
                           to_nano_usd(spent_usd)])
