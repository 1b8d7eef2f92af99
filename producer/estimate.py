"""`estimate`: what a file will cost and how long it will take, before anything is spent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from corral.config import CorralConfig, RateScope
from corral.live_time import live_seconds
from corral.pricing import Usage, cost_and_list_cost
from corral.tokens import requested_output_tokens
from producer.costs import CostReport, summarize
from producer.lanes import lane_group
from producer.planner import ScopeLines, all_batch, all_live, plan_lanes
from producer.validator import AcceptedLine

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
        return live_seconds(self.requests, self.tokens, rpm=self.scope.rpm,
                            tpm=self.scope.tpm)


@dataclass
class Estimate:
    """Per-model tokens and money (output at the requested ceiling) and the time needed."""

    config: CorralConfig
    entries: list[dict[str, Any]] = field(default_factory=list)
    loads: dict[str, ScopeLoad] = field(default_factory=dict)
    # Per scope, and apart the lines that must stay live: the input of `--deadline` plans.
    lanes: dict[str, ScopeLines] = field(default_factory=dict)
    live_only: Counter[str] = field(default_factory=Counter)  # why lines must stay live

    def add(self, line: AcceptedLine) -> None:
        """Count one accepted line."""
        output = requested_output_tokens(line.body, line.model.default_max_tokens)
        usage = Usage(line.prompt_tokens, 0, output)
        cost, list_cost = cost_and_list_cost(usage, line.model)
        self.entries.append({"model": line.model.name, "input_tokens": line.prompt_tokens,
                             "cached_input_tokens": 0, "output_tokens": output,
                             "cost_usd": cost, "list_cost_usd": list_cost})
        scope = self.config.scope_of(line.model)
        load = self.loads.setdefault(scope.name, ScopeLoad(scope))
        load.requests += 1
        load.tokens += line.reservation_tokens
        key, refusal = lane_group(self.config, line.model, line.custom_id, lambda: line.body)
        if refusal is not None:
            self.live_only[refusal] += 1
        batchable = refusal is None
        lanes = self.lanes.setdefault(key, ScopeLines(scope, line.model.provider, batchable))
        flex = cost_and_list_cost(usage, line.model, "flex")[0] if line.model.flex else None
        lanes.add(line.reservation_tokens, cost,
                  cost_and_list_cost(usage, line.model, "batch")[0], flex)

    def plans(self, deadline_s: float, turnaround_s: Callable[[str], float],
              max_cost_usd: Decimal | None = None,
              hedge_margin_s: float = 0.0) -> dict[str, dict[str, Any]]:
        """The `plans` object of `estimate --deadline --json`: all live, all on the
        providers' Batch APIs, and the plan for this deadline (producer/planner.py)."""
        return {"live": all_live(self.lanes, turnaround_s).as_json(),
                "batch": all_batch(self.lanes, turnaround_s).as_json(),
                "plan": plan_lanes(self.lanes, deadline_s, turnaround_s, max_cost_usd,
                                   hedge_margin_s).as_json()}

    def live_only_reasons(self, most: int = 10) -> dict[str, int]:
        """Why lines cannot go to a Batch API, the most frequent first, with their counts."""
        return dict(self.live_only.most_common(most))

    @property
    def report(self) -> CostReport:
        return summarize(None, self.entries)

    @property
    def duration_s(self) -> float:
        """Scopes run side by side: the slowest one sets the pace (latency not included)."""
        return max((load.least_s for load in self.loads.values()), default=0.0)

    def as_json(self, monthly: int | None = None) -> dict[str, Any]:
        """The estimate JSON (docs/concepts.md): the duration, and a monthly projection if asked."""
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

