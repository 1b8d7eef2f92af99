"""`cost`: totals of the cost ledger per model, in Decimal, shaped as docs/concepts.md says."""

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
from corral.store import Store


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

    def merge(self, other: CostTotals) -> None:
        """Add another set of sums (billed calls only) to these."""
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.list_cost_usd += other.list_cost_usd
        self.unproductive_cost_usd += other.unproductive_cost_usd

    def add_unsettled(self, max_cost_usd: Decimal) -> None:
        """Count a call with no known outcome (worker lost, or timed out) at its worst case."""
        self.unsettled_calls += 1
        self.unsettled_max_cost_usd += max_cost_usd

    @property
    def savings_usd(self) -> Decimal:
        """What the list price would have cost beyond what was paid."""
        return self.list_cost_usd - self.cost_usd

    def as_json(self) -> dict[str, Any]:
        """The contract's T object (docs/concepts.md); money as unrounded decimal strings."""
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


def summarize(batch_id: str | None, entries: Iterable[dict[str, Any]],
              config: CorralConfig | None = None) -> CostReport:
    """Per-model and total sums of ledger rows; with `config`, unsettled rows are priced at
    their worst case.

    An unsettled row (a call nobody saw finish) is dropped when the same call (custom_id,
    attempt) later settles: its worker was only slow, and its real cost is in the ledger.
    Such a late row always follows the unsettled one, so one pass keeps only the unsettled.
    """
    report = CostReport(batch_id, CostTotals(), {})
    unsettled: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in entries:
        call = (str(entry.get("custom_id")), int(entry.get("attempt") or 0))
        if entry.get("unsettled"):
            unsettled[call] = entry
            continue
        unsettled.pop(call, None)
        report.total.add(entry)
        report.models.setdefault(entry["model"], CostTotals()).add(entry)
    for mark in unsettled.values():
        add_unsettled(report, mark, config)
    return report


def add_unsettled(report: CostReport, mark: dict[str, Any], config: CorralConfig | None) -> None:
    """Count a call with no known outcome at its worst case: its bounds on input and output
    tokens at the model's price (0 when the config does not price the model)."""
    model = config.models.get(mark.get("model") or "") if config is not None else None
    worst = Usage(prompt_tokens=int(mark.get("input_tokens_max") or 0), cached_tokens=0,
                  completion_tokens=int(mark.get("output_tokens_max") or 0))
    cost = price_call(worst, model.price) if model is not None else Decimal(0)
    report.total.add_unsettled(cost)
    report.models.setdefault(str(mark.get("model") or "?"), CostTotals()).add_unsettled(cost)


def in_flight_calls(client: redis.Redis, batch_id: str) -> Iterator[dict[str, Any]]:
    """The calls still marked in flight in Redis (running now, or lost with a worker whose line
    has not ended yet), as unsettled rows."""
    for field, raw_mark in client.hscan_iter(BatchKeys(batch_id).inflight, count=1000):
        custom_id, _, call = str(field).rpartition("#")
        mark = json.loads(raw_mark)
        yield {**(mark if isinstance(mark, dict) else {}), "custom_id": custom_id,
               "attempt": int(call), "unsettled": True, "productive": False}


def batch_cost(store: Store, batch_id: str, config: CorralConfig | None = None,
               client: redis.Redis | None = None) -> CostReport:
    """The cost report of one batch from the store's ledger (summed in SQL), with `client`
    the calls in flight now; with `config`, unsettled calls at their worst case."""
    report = CostReport(batch_id, CostTotals(), {})
    for sums in store.records.ledger_totals(batch_id):
        totals = CostTotals(requests=int(sums["requests"]),
                            input_tokens=int(sums["input_tokens"] or 0),
                            cached_input_tokens=int(sums["cached_input_tokens"] or 0),
                            output_tokens=int(sums["output_tokens"] or 0),
                            cost_usd=Decimal(sums["cost_usd"] or 0),
                            list_cost_usd=Decimal(sums["list_cost_usd"] or 0))
        if not sums["productive"]:
            totals.unproductive_cost_usd = totals.cost_usd
        report.total.merge(totals)
        report.models.setdefault(sums["model"], CostTotals()).merge(totals)
    unsettled = {(str(row.get("custom_id")), int(row.get("attempt") or 0)): row
                 for row in store.records.unsettled_rows(batch_id)}
    if client is not None:
        for mark in in_flight_calls(client, batch_id):
            unsettled.setdefault((mark["custom_id"], mark["attempt"]), mark)
    for mark in unsettled.values():
        add_unsettled(report, mark, config)
    return report
