"""Live counters per model, per batch and fleet-wide, for `status --watch` and the exporter.

Workers move them in the same round trip that files a line's record or schedules its retry,
so watching costs the hot path nothing extra. Fields are `<model>|<counter>` in two hashes:
the batch's `stats` key and the fleet's `FLEET_STATS` (since that key was created).

Per call (duplicates included, like the cost ledger): `calls` (provider answers of any kind),
`rate_limited` (429s), `retries` (retries scheduled), `input_tokens`, `cached_tokens`,
`output_tokens`, `cost_nusd` (nano-USD at our price), `latency_ms_sum`, and `latency_le_<ms>`
(calls no slower than that bucket and slower than the one below; they add up to `calls`, so
no separate count is kept).
Per line, moved only by its first terminal record: `completed`, `failed`, `failed:<code>`.
Per line, moved by the producer: `enqueued`; by a fallback, in the batch's hash only:
`rerouted` (+1 on the model the line went to, -1 on the one it left): see `lines_in_flight`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from corral.pricing import Usage

LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, math.inf)


def stat_field(model: str, counter: str) -> str:
    """The hash field of one model's counter."""
    return f"{model}|{counter}"


def latency_bucket(latency_ms: float) -> str:
    """The `latency_le_<ms>` counter a call of this latency falls in."""
    for bound in LATENCY_BUCKETS_MS:
        if latency_ms <= bound:
            return f"latency_le_{'inf' if bound == math.inf else int(bound)}"
    raise AssertionError("unreachable: the last bucket is +inf")


@dataclass
class CallStats:
    """What one provider call adds to the counters, filled in as the call goes."""

    latency_s: float | None = None
    rate_limited: bool = False
    retried: bool = False
    usage: Usage | None = None
    cost_nusd: int = 0

    def increments(self) -> dict[str, int]:
        """Counter → amount (no model prefix); empty when no call was made."""
        if self.latency_s is None:
            return {}
        latency_ms = self.latency_s * 1000
        counts = {"calls": 1, "latency_ms_sum": round(latency_ms), latency_bucket(latency_ms): 1}
        if self.rate_limited:
            counts["rate_limited"] = 1
        if self.retried:
            counts["retries"] = 1
        if self.usage is not None:
            counts.update(input_tokens=self.usage.prompt_tokens,
                          cached_tokens=self.usage.cached_tokens,
                          output_tokens=self.usage.completion_tokens, cost_nusd=self.cost_nusd)
        return {name: amount for name, amount in counts.items() if amount}


def lines_in_flight(counts: Mapping[str, int], sent: int | None = None) -> int:
    """A model's lines sent and not ended (queued, running or waiting to retry): `sent`
    (default: its `enqueued` counter) plus the lines fallbacks moved to it, minus those that
    ended under it."""
    sent = counts.get("enqueued", 0) if sent is None else sent
    return (sent + counts.get("rerouted", 0) - counts.get("completed", 0)
            - counts.get("failed", 0))


def by_model(raw: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """A stats hash as model → counter → value."""
    models: dict[str, dict[str, int]] = defaultdict(dict)
    for name, value in raw.items():
        model, _, counter = name.rpartition("|")
        if model:
            models[model][counter] = int(value)
    return dict(models)
