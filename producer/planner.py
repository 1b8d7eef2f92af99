"""`--deadline` plans: which lines go to a provider's Batch API (half price, hours) and which
run live (full price, as fast as the rate limits allow), per rate-limit scope.

The plan keeps every line hedgeable: a line goes to the batch lane only if, should the
provider batch stall, the live lane can still run it between the provider's expected
turnaround and the deadline. So with a loose deadline everything goes to the batch lane;
as the deadline tightens, lines move to the live lane; past the turnaround, all run live.
A budget below the plan's cost moves more lines to the batch lane, trading the guarantee for
money.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from corral.config import RateScope
from corral.live_time import LIVE_SLACK, live_seconds


@dataclass
class ScopeLines:
    """What a batch asks of one rate-limit scope: lines, and their cost on each lane."""

    scope: RateScope
    provider: str
    batchable: bool  # the provider has a Batch API (and these lines translate to it)
    lines: int = 0
    tokens: int = 0  # reserved tokens (prompt + output ceiling), for the live time
    live_cost_usd: Decimal = Decimal(0)
    batch_cost_usd: Decimal = Decimal(0)
    # Its live lines under a deadline: at the flex service tier where the model has it.
    flex_cost_usd: Decimal = Decimal(0)

    def add(self, tokens: int, live_cost_usd: Decimal, batch_cost_usd: Decimal,
            flex_cost_usd: Decimal | None = None) -> None:
        """Count one line (`flex_cost_usd`: its live cost under a deadline, if not
        `live_cost_usd`)."""
        self.lines += 1
        self.tokens += tokens
        self.live_cost_usd += live_cost_usd
        self.batch_cost_usd += batch_cost_usd
        self.flex_cost_usd += live_cost_usd if flex_cost_usd is None else flex_cost_usd

    def live_s(self, lines: int) -> float:
        """Least time for `lines` of these lines on the live lane: the buckets start full,
        then refill at the limit (latency not included)."""
        if self.lines == 0:
            return 0.0
        return live_seconds(lines, self.tokens * lines / self.lines, rpm=self.scope.rpm,
                            tpm=self.scope.tpm)

    def most_live_within(self, seconds: float) -> int:
        """The most of these lines the live lane finishes within `seconds`."""
        low, high = 0, self.lines
        while low < high:  # live_s grows with the lines
            middle = (low + high + 1) // 2
            if self.live_s(middle) <= seconds:
                low = middle
            else:
                high = middle - 1
        return low

    def cost_usd(self, batch_lines: int, *, deadline: bool = True) -> Decimal:
        """The cost with `batch_lines` of these lines on the batch lane (at the average), the
        rest live: at flex where the model has it under a `deadline`, else full price."""
        if self.lines == 0:
            return Decimal(0)
        share = Decimal(batch_lines) / self.lines
        live = self.flex_cost_usd if deadline else self.live_cost_usd
        return self.batch_cost_usd * share + live * (1 - share)


@dataclass(frozen=True)
class LaneSplit:
    """One scope's lines on each lane."""

    live: int
    batch: int


@dataclass
class Plan:
    """Lines per lane, per scope, with the plan's cost and expected finish."""

    name: str
    splits: dict[str, LaneSplit] = field(default_factory=dict)
    cost_usd: Decimal = Decimal(0)
    finish_s: float = 0.0

    @property
    def live_lines(self) -> int:
        return sum(split.live for split in self.splits.values())

    @property
    def batch_lines(self) -> int:
        return sum(split.batch for split in self.splits.values())

    def as_json(self) -> dict[str, Any]:
        """`{"cost_usd", "lines": {"live", "batch"}, "finish_s"}` (the contract's shape)."""
        return {"cost_usd": format(self.cost_usd, "f"),
                "lines": {"live": self.live_lines, "batch": self.batch_lines},
                "finish_s": round(self.finish_s, 1)}


def _plan(name: str, scopes: dict[str, ScopeLines], batch_lines: dict[str, int],
          turnaround_s: Callable[[str], float], *, deadline: bool = True) -> Plan:
    plan = Plan(name)
    for key, lines in scopes.items():
        batch = batch_lines.get(key, 0)
        plan.splits[key] = LaneSplit(lines.lines - batch, batch)
        plan.cost_usd += lines.cost_usd(batch, deadline=deadline)
        plan.finish_s = max(plan.finish_s, lines.live_s(lines.lines - batch),
                            turnaround_s(lines.provider) if batch else 0.0)
    return plan


def all_live(scopes: dict[str, ScopeLines], turnaround_s: Callable[[str], float]) -> Plan:
    """Every line live at full price: today's behaviour, without a deadline."""
    return _plan("live", scopes, {}, turnaround_s, deadline=False)


def all_batch(scopes: dict[str, ScopeLines], turnaround_s: Callable[[str], float]) -> Plan:
    """Every line that can go to a Batch API goes there."""
    return _plan("batch", scopes, {key: lines.lines for key, lines in scopes.items()
                                   if lines.batchable}, turnaround_s)


def plan_lanes(scopes: dict[str, ScopeLines], deadline_s: float,
               turnaround_s: Callable[[str], float],
               max_cost_usd: Decimal | None = None, hedge_margin_s: float = 0.0) -> Plan:
    """The cheapest split that finishes by `deadline_s` even if provider batches stall
    (module docstring), within `max_cost_usd` when the deadline leaves room for it. A hedge
    is planned with the batch lane's slack on live time (`LIVE_SLACK`), to end
    `hedge_margin_s` early (two poll intervals, and a request deadline for the last live
    call)."""
    batch: dict[str, int] = {}
    for key, lines in scopes.items():
        turnaround = turnaround_s(lines.provider)
        if not lines.batchable or turnaround >= deadline_s:
            continue
        hedgeable = lines.most_live_within(
            (deadline_s - turnaround - hedge_margin_s) / LIVE_SLACK)
        # Lines the live lane cannot finish by the deadline anyway go to the batch lane too.
        beyond_live = lines.lines - lines.most_live_within(deadline_s)
        if lines.batch_cost_usd >= lines.flex_cost_usd:
            hedgeable = 0  # no cheaper there (flex costs what the batch lane does): live
        batch[key] = min(lines.lines, max(hedgeable, beyond_live))
    plan = _plan("plan", scopes, batch, turnaround_s)
    if max_cost_usd is None or plan.cost_usd <= max_cost_usd:
        return plan
    # Over budget: move the dearest live lines to the batch lane first, as far as needed.
    for key, lines in sorted(scopes.items(), key=lambda item: -item[1].flex_cost_usd):
        if not lines.batchable or turnaround_s(lines.provider) >= deadline_s:
            continue
        saving_per_line = (lines.flex_cost_usd - lines.batch_cost_usd) / max(lines.lines, 1)
        over = plan.cost_usd - max_cost_usd
        if over <= 0 or saving_per_line <= 0:
            break
        needed = (over / saving_per_line).to_integral_value(rounding=ROUND_CEILING)
        more = min(lines.lines - batch.get(key, 0), int(needed))
        batch[key] = batch.get(key, 0) + more
        plan = _plan("plan", scopes, batch, turnaround_s)
    return plan
