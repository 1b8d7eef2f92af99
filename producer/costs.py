"""`cost`: totals of the cost ledger per model, in Decimal, shaped as DESIGN §3 says."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis

from corral.config import CorralConfig
from corral.pricing import Usage, price_call
from corral.redis_keys import BatchKeys
from corral.tokens import estimate_prompt_tokens, requested_output_tokens
from producer.redis_lists import iter_chunks


@dataclass
class CostTotals:
    """Sums over cost records; money stays unrounded."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    list_cost_usd: Decimal = Decimal(0)
    unproductive_cost_usd: Decimal = Decimal(0)
    unsettled_calls: int = 0
    unsettled_max_cost_usd: Decimal = Decimal(0)

    def add(self, entry: dict[str, Any]) -> None:
        """Count one cost record."""
        cost = Decimal(entry["cost_usd"])
        self.requests += 1
        self.input_tokens += int(entry["input_tokens"])
        self.cached_input_tokens += int(entry["cached_input_tokens"])
        self.output_tokens += int(entry["output_tokens"])
        self.cost_usd += cost
        self.list_cost_usd += Decimal(entry["list_cost_usd"])
        if not entry.get("productive", True):
            self.unproductive_cost_usd += cost

    def add_unsettled(self, max_cost_usd: Decimal) -> None:
        """Count a call with no known outcome (worker lost, or timed out) at its worst case."""
        self.unsettled_calls += 1
        self.unsettled_max_cost_usd += max_cost_usd

    @property
    def savings_usd(self) -> Decimal:
        """What the list price would have cost beyond what was paid."""
        return self.list_cost_usd - self.cost_usd

    def as_json(self) -> dict[str, Any]:
        """DESIGN §3's T object; money as unrounded decimal strings."""
        return {"requests": self.requests, "input_tokens": self.input_tokens,
                "cached_input_tokens": self.cached_input_tokens,
                "output_tokens": self.output_tokens, "cost_usd": _money(self.cost_usd),
                "list_cost_usd": _money(self.list_cost_usd),
                "savings_usd": _money(self.savings_usd),
                "unproductive_cost_usd": _money(self.unproductive_cost_usd),
                "unsettled_calls": self.unsettled_calls,
                "unsettled_max_cost_usd": _money(self.unsettled_max_cost_usd)}


@dataclass
class CostReport:
    batch_id: str | None
    total: CostTotals
    models: dict[str, CostTotals]

    def as_json(self) -> dict[str, Any]:
        """`{"batch_id", "total": T, "models": {name: T}}`."""
        return {"batch_id": self.batch_id, "total": self.total.as_json(),
                "models": {name: t.as_json() for name, t in sorted(self.models.items())}}


def _money(value: Decimal) -> str:
    # Fixed-point notation, never exponent: "0.00012345", not "1.2345E-4".
    return format(value, "f")


def summarize(batch_id: str | None, entries: Iterable[dict[str, Any]]) -> CostReport:
    """Per-model and total sums of cost records."""
    report = CostReport(batch_id, CostTotals(), {})
    for entry in entries:
        report.total.add(entry)
        report.models.setdefault(entry["model"], CostTotals()).add(entry)
    return report


def iter_ledger(client: redis.Redis, batch_id: str) -> Iterator[dict[str, Any]]:
    """The batch's cost records, chunk by chunk."""
    for _, raw in iter_chunks(client, BatchKeys(batch_id).ledger):
        yield from (json.loads(item) for item in raw)


def batch_cost(client: redis.Redis, batch_id: str,
               config: CorralConfig | None = None) -> CostReport:
    """The cost report of one batch; with `config`, unsettled calls at their worst case."""
    report = summarize(batch_id, iter_ledger(client, batch_id))
    if config is not None:
        add_unsettled(client, batch_id, config, report)
    return report


def add_unsettled(client: redis.Redis, batch_id: str, config: CorralConfig,
                  report: CostReport) -> None:
    """Count calls still marked in flight: running now, or lost with their worker."""
    keys = BatchKeys(batch_id)
    for call_id in client.hkeys(keys.inflight):
        raw_job = client.hget(keys.bodies, str(call_id).rsplit("#", 1)[0])
        model = config.models.get(json.loads(raw_job)["model"]) if raw_job else None
        if model is None:
            continue
        body = json.loads(raw_job)["body"]  # type: ignore[arg-type]
        worst = Usage(prompt_tokens=estimate_prompt_tokens(body), cached_tokens=0,
                      completion_tokens=requested_output_tokens(body, model.default_max_tokens))
        cost = price_call(worst, model.price)
        report.total.add_unsettled(cost)
        report.models.setdefault(model.name, CostTotals()).add_unsettled(cost)
