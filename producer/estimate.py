"""`estimate`: what a file will cost and how long it will take, before anything is spent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.config import CorralConfig, RateScope
from corral.pricing import Usage, cost_and_list_cost
from corral.tokens import requested_output_tokens
from producer.costs import CostReport, summarize
from producer.validator import AcceptedLine

PERIOD_S = 60.0  # providers' limits are per minute
MONTHS_PER_YEAR = 12


@dataclass
class ScopeLoad:
    """What the batch asks of one rate-limit scope."""

    scope: RateScope
    requests: int = 0
    tokens: int = 0

    @property
    def least_s(self) -> float:
        """Least time to admit it all: buckets start full, then refill at the limit."""
        over_requests = (self.requests - self.scope.rpm) / self.scope.rpm
        over_tokens = (self.tokens - self.scope.tpm) / self.scope.tpm
        return max(over_requests, over_tokens, 0.0) * PERIOD_S


@dataclass
class Estimate:
    """Per-model tokens and money (output at the requested ceiling) and the time needed."""

    config: CorralConfig
    entries: list[dict[str, Any]] = field(default_factory=list)
    loads: dict[str, ScopeLoad] = field(default_factory=dict)

    def add(self, line: AcceptedLine) -> None:
        """Count one accepted line."""
        output = requested_output_tokens(line.body, line.model.default_max_tokens)
        cost, list_cost = cost_and_list_cost(Usage(line.prompt_tokens, 0, output), line.model)
        self.entries.append({"model": line.model.name, "input_tokens": line.prompt_tokens,
                             "cached_input_tokens": 0, "output_tokens": output,
                             "cost_usd": cost, "list_cost_usd": list_cost})
        scope = self.config.scope_of(line.model)
        load = self.loads.setdefault(scope.name, ScopeLoad(scope))
        load.requests += 1
        load.tokens += line.reservation_tokens

    @property
    def report(self) -> CostReport:
        return summarize(None, self.entries)

    @property
    def duration_s(self) -> float:
        """Scopes run side by side: the slowest one sets the pace (latency not included)."""
        return max((load.least_s for load in self.loads.values()), default=0.0)

    def as_json(self, monthly: int | None = None) -> dict[str, Any]:
        """DESIGN §3's estimate JSON, with the duration and an optional monthly projection."""
        report = self.report
        data = report.as_json()
        data["duration_s"] = round(self.duration_s, 1)
        data["scopes"] = {name: {"requests": load.requests, "tokens": load.tokens,
                                 "least_s": round(load.least_s, 1)}
                          for name, load in sorted(self.loads.items())}
        if monthly is not None:
            per_month = report.total.cost_usd * monthly
            savings = report.total.savings_usd * monthly
            data["monthly"] = {"batches_per_month": monthly,
                               "cost_usd_per_month": format(per_month, "f"),
                               "cost_usd_per_year": format(per_month * MONTHS_PER_YEAR, "f"),
                               "savings_usd_per_month": format(savings, "f"),
                               "savings_usd_per_year": format(savings * MONTHS_PER_YEAR, "f")}
        return data

