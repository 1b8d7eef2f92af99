"""`corral status --watch`: a live view per batch and per model that ends when the batches do.

The view goes to stdout: on a terminal it redraws in place every interval; piped, only the
last frame is printed (the command's answer), so `status --watch > file` still follows §3.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from corral.batch_end import expire_if_due
from corral.config import CorralConfig, RateScope
from corral.errors import BatchNotFoundError, ConfigError
from corral.feeder import feed_state
from corral.redis_keys import BatchKeys
from corral.stats import by_model, lines_in_flight
from corral.store import Store
from producer.batches import batch_object, is_terminal, list_batches, with_provider_batches
from producer.rates import Counters, RateTracker, format_duration_s, latency_quantile_ms
from producer.session import Session
from producer.views import provider_batches_table, stdout_console

EXIT_OK, EXIT_FAILED_LINES, EXIT_INTERRUPTED = 0, 1, 130
END_FIELDS = ("completed_at", "failed_at", "expired_at", "cancelled_at")


@dataclass(frozen=True)
class Polled:
    """One batch as read at one refresh."""

    batch: dict[str, Any]
    counters: Counters
    waiting: dict[str, int]  # model → accepted lines the feeder has not sent yet
    redis_now_s: float


def scopes_by_model(config: CorralConfig | None) -> dict[str, RateScope]:
    """The shared limits each configured model runs under (empty without a config)."""
    if config is None:
        return {}
    return {name: config.scope_of(model) for name, model in config.models.items()}


def poll(client: redis.Redis, store: Store, batch_ids: Iterable[str]) -> list[Polled]:
    """Each batch's row from the record store, with its live counters and feed cursors from
    Redis and the Redis clock (one round trip).

    Raises:
        BatchNotFoundError: a batch is gone (deleted while watched): never shown as finished.
    """
    batch_ids = list(batch_ids)
    pipe = client.pipeline(transaction=False)
    for batch_id in batch_ids:
        pipe.hgetall(BatchKeys(batch_id).meta)
        pipe.hgetall(BatchKeys(batch_id).stats)
    pipe.time()
    replies = pipe.execute()
    seconds, micros = replies[-1]
    now_s = int(seconds) + int(micros) / 1e6
    polled = []
    for batch_id, meta, stats in zip(batch_ids, replies[0:-1:2], replies[1:-1:2], strict=True):
        row = store.batches.get(batch_id)
        if row is None:
            raise BatchNotFoundError(f"batch {batch_id} was deleted while watched")
        batch = with_provider_batches(store, batch_object(row, int(meta.get("spent_nusd") or 0)))
        polled.append(Polled(batch, by_model(stats), unsent_lines(meta), now_s))
    return polled


def unsent_lines(meta: Mapping[str, str]) -> dict[str, int]:
    """Per model, accepted lines waiting in the record store for the feeder."""
    return {c.model: c.lines - c.fed for c in feed_state(meta).cursors}


def _usd(nusd: int) -> str:
    return f"${Decimal(nusd) / 10**9:,.6f}"


def _per_period(rate_per_s: float | None, period_s: float) -> str:
    return "-" if rate_per_s is None else f"{rate_per_s * period_s:,.0f}"


def _against(rate: str, limit: int | None) -> str:
    return rate if limit is None else f"{rate} / {limit:,}"


def _latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    return "> 60 s" if ms == float("inf") else f"≤ {ms:,.0f} ms"


def period_label(period_s: float) -> str:
    """`min` for the providers' usual minute, else the configured period (`6s`)."""
    return "min" if period_s == 60 else f"{period_s:g}s"


class BatchWatch:
    """Samples kept per batch between refreshes, and the frame drawn from them."""

    def __init__(self, scopes: Mapping[str, RateScope], *, period_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._scopes = scopes
        self._period_s = period_s
        self._clock = clock
        self._trackers: dict[str, RateTracker] = {}

    def _tracker(self, batch_id: str) -> RateTracker:
        if batch_id not in self._trackers:
            # Rates over the last period: the window the limits are stated for.
            self._trackers[batch_id] = RateTracker(self._period_s, self._clock)
        return self._trackers[batch_id]

    def frame(self, polled: list[Polled]) -> RenderableType:
        """Record the new samples and draw every batch."""
        if not polled:
            return Text("no active batches")
        frames = [self._batch(item) for item in polled]
        spaced = [part for frame in frames for part in (frame, Text())][:-1]
        return Group(*spaced)

    def _batch(self, item: Polled) -> RenderableType:
        batch, counters = item.batch, item.counters
        counts = batch["request_counts"]
        tracker = self._tracker(batch["id"])
        tracker.add(counts["completed"] + counts["failed"], counters)
        ended_at = next((batch[field] for field in END_FIELDS if batch.get(field)), None)
        elapsed_s = (ended_at or item.redis_now_s) - (batch["created_at"] or item.redis_now_s)
        eta = "-" if is_terminal(batch) else format_duration_s(tracker.eta_s(counts["total"]))
        spent = sum(model.get("cost_nusd", 0) for model in counters.values())
        header = Text.assemble(
            (batch["id"], "bold"), "  ", (batch["status"], "bold cyan"),
            f"  done {counts['completed']:,}/{counts['total']:,}  failed {counts['failed']:,}"
            f"  spent {_usd(spent)}  elapsed {format_duration_s(elapsed_s)}  ETA {eta}")
        parts: list[RenderableType] = [
            header, self._models_table(batch, counters, item.waiting, tracker)]
        if batch.get("provider_batches"):
            # Lines on the batch lane wait on these, not on the queues or the limits.
            parts.append(provider_batches_table(batch))
        return Group(*parts)

    def _models_table(self, batch: dict[str, Any], counters: Counters,
                      waiting: Mapping[str, int], tracker: RateTracker) -> Table:
        per = period_label(self._period_s)
        table = Table(show_edge=False, pad_edge=False)
        for column in ("model", "done", "failed", "queued", "waiting", f"req/{per} / limit",
                       f"tok/{per} / limit", "429s", "retries", "spend", "p50 latency"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for model in sorted(set(batch["models"]) | set(counters) | set(waiting)):
            values = counters.get(model, {})
            scope = self._scopes.get(model)
            done, failed = values.get("completed", 0), values.get("failed", 0)
            # Sent to the queue and not ended: waiting in the broker, running, or waiting to
            # retry. Lines `corral retry` sends again could make it dip below zero.
            queued = max(lines_in_flight(values), 0)
            requests = _per_period(tracker.rate_per_s(model, "calls"), self._period_s)
            tokens = _per_period(tracker.rate_per_s(model, "input_tokens", "output_tokens"),
                                 self._period_s)
            table.add_row(
                model, f"{done:,}", f"{failed:,}", f"{queued:,}", f"{waiting.get(model, 0):,}",
                _against(requests, scope.rpm if scope else None),
                _against(tokens, scope.tpm if scope else None),
                f"{values.get('rate_limited', 0):,}", f"{values.get('retries', 0):,}",
                _usd(values.get("cost_nusd", 0)), _latency(latency_quantile_ms(values, 0.5)))
        return table


def active_batch_ids(store: Store) -> list[str]:
    """Batches that have not ended, newest first."""
    return [batch["id"] for batch in list_batches(store) if not is_terminal(batch)]


def run_watch(client: redis.Redis, store: Store, console: Console, view: BatchWatch, *,
              batch_id: str | None, interval_s: float,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """Redraw every `interval_s` until the watched batches end.

    With `batch_id` None, every active batch is watched, and batches that start meanwhile
    join. Returns 0 when every watched batch ended without failed lines, 1 when some lines
    failed, 130 on Ctrl-C (nothing is stopped: the batches run on).
    """
    watched: list[str] = [batch_id] if batch_id else []
    with Live(console=console, auto_refresh=False, transient=False) as live:
        try:
            while True:
                if batch_id is None:
                    watched += [new for new in active_batch_ids(store) if new not in watched]
                polled = poll(client, store, watched)
                live.update(view.frame(polled), refresh=True)
                if all(is_terminal(item.batch) for item in polled):
                    failed = any(item.batch["request_counts"]["failed"] for item in polled)
                    return EXIT_FAILED_LINES if failed else EXIT_OK
                sleep(interval_s)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED


def watch_batches(session: Session, batch_id: str | None, interval_s: float) -> int:
    """`status [BATCH] --watch`: the live view on stdout; returns the exit code.

    Raises:
        BatchNotFoundError: `batch_id` names no batch.
    """
    if batch_id is not None:
        expire_if_due(session.redis, session.store, session.feeder(batch_id),
                                batch_id)
    try:
        config: CorralConfig | None = session.config
    except ConfigError:
        config = None  # everything but the limits can be shown without a config
    view = BatchWatch(scopes_by_model(config), period_s=session.settings.rate_period_s)
    return run_watch(session.redis, session.store, stdout_console(), view, batch_id=batch_id,
                     interval_s=interval_s)
