"""A batch over time, for `corral report`: its records and billed calls in time buckets, and
its slowest and costliest calls, read in one pass whatever the batch's size."""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import count
from typing import Any

from sqlalchemy import BigInteger, Engine, func, literal, select

from corral.store.records import RECORDS_PER_READ
from corral.store.schema import ledger, records

MAX_BUCKETS = 120
TOP_CALLS = 10
# Bucket widths a reader takes in at a glance, in seconds.
BUCKET_WIDTHS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
                   21600, 43200, 86400)


@dataclass(frozen=True)
class TopCall:
    """One billed call, as the report's tables list it."""

    custom_id: str
    model: str
    latency_s: float | None
    cost_usd: Decimal
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


@dataclass
class Timeline:
    """Per bucket `i` (the seconds [start_s + i × bucket_s, start_s + (i + 1) × bucket_s)):

    Attributes:
        completed, failed: lines whose record was written then (results; errors).
        calls: billed calls that ended then.
        tokens: model → input + output tokens of its billed calls that ended then.
        cost_usd: what those calls cost.
        rate_limited: 429s that lines met before a billed call, counted at that call's
            start (ledger rows without the count, from older workers, add none).
        slowest, costliest: the billed calls of longest latency and highest cost, most first.
    """

    start_s: int
    bucket_s: int
    buckets: int
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    tokens: dict[str, list[int]] = field(default_factory=dict)
    cost_usd: list[Decimal] = field(default_factory=list)
    rate_limited: list[int] = field(default_factory=list)
    slowest: list[TopCall] = field(default_factory=list)
    costliest: list[TopCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("completed", "failed", "calls", "rate_limited"):
            setattr(self, name, [0] * self.buckets)
        self.cost_usd = [Decimal(0)] * self.buckets

    def bucket(self, at_s: float) -> int:
        """The bucket of a moment, clamped to the timeline."""
        return min(self.buckets - 1, max(0, int((at_s - self.start_s) // self.bucket_s)))


def bucket_width_s(span_s: float) -> int:
    """The narrowest round width that cuts `span_s` into at most MAX_BUCKETS buckets."""
    for width in BUCKET_WIDTHS_S:
        if span_s <= width * MAX_BUCKETS:
            return width
    return math.ceil(span_s / MAX_BUCKETS)


def batch_timeline(engine: Engine, batch_id: str, start_s: int) -> Timeline:
    """The timeline of one batch from `start_s` (its creation) to its last record or call.

    Three statements: the span, the records counted per bucket in SQL, then the billed calls
    streamed once (their money is exact text, and their row JSON holds the latency and 429s).
    """
    with engine.connect() as connection:
        ends = [connection.execute(select(func.max(table.c.written_at)).where(
            table.c.batch_id == batch_id)).scalar() for table in (records, ledger)]
        end_s = max([start_s, *(int(end) for end in ends if end is not None)])
        width = bucket_width_s(end_s - start_s + 1)
        timeline = Timeline(start_s, width, (end_s - start_s) // width + 1)
        index = ((records.c.written_at - literal(start_s, BigInteger))
                 // literal(width, BigInteger)).label("i")
        for i, failed, lines in connection.execute(
                select(index, records.c.error_code.is_not(None), func.count())
                .where(records.c.batch_id == batch_id)
                .group_by(index, records.c.error_code.is_not(None))):
            i = min(timeline.buckets - 1, max(0, int(i)))
            (timeline.failed if failed else timeline.completed)[i] += int(lines)
        calls = connection.execution_options(yield_per=RECORDS_PER_READ).execute(
            select(ledger.c.custom_id, ledger.c.model, ledger.c.input_tokens,
                   ledger.c.cached_input_tokens, ledger.c.output_tokens, ledger.c.cost_usd,
                   ledger.c.written_at, ledger.c.row)
            .where(ledger.c.batch_id == batch_id, ledger.c.unsettled.is_(False)))
        _add_calls(timeline, calls)
    return timeline


def _add_calls(timeline: Timeline, calls: Any) -> None:
    slowest: list[tuple[float, int, TopCall]] = []
    costliest: list[tuple[Decimal, int, TopCall]] = []
    order = count()
    for call in calls:
        row = json.loads(call.row)
        ended_s = float(row.get("at") or call.written_at)
        latency_s = row.get("latency_s")
        i = timeline.bucket(ended_s)
        timeline.calls[i] += 1
        timeline.cost_usd[i] += call.cost_usd
        tokens = timeline.tokens.setdefault(call.model, [0] * timeline.buckets)
        tokens[i] += call.input_tokens + call.output_tokens
        rate_limited = int(row.get("rate_limited_before") or 0)
        if rate_limited:
            timeline.rate_limited[timeline.bucket(ended_s - float(latency_s or 0))] += \
                rate_limited
        top = TopCall(call.custom_id, call.model,
                      None if latency_s is None else float(latency_s), call.cost_usd,
                      call.input_tokens, call.cached_input_tokens, call.output_tokens)
        if top.latency_s is not None:
            _keep(slowest, (top.latency_s, -next(order), top))
        _keep(costliest, (top.cost_usd, -next(order), top))
    timeline.slowest = [top for *_, top in sorted(slowest, reverse=True)]
    timeline.costliest = [top for *_, top in sorted(costliest, reverse=True)]


def _keep(heap: list[Any], item: tuple[Any, int, TopCall]) -> None:
    """Keep the TOP_CALLS largest items (ties: the earlier read first)."""
    if len(heap) < TOP_CALLS:
        heapq.heappush(heap, item)
    elif item[:2] > heap[0][:2]:
        heapq.heapreplace(heap, item)
