"""What the CLI shows people: tables on stdout, progress on stderr."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from corral.store import Store
from corral.store.writer import StoreUnavailableError
from producer.batches import is_terminal, read_batch
from producer.costs import CostReport, CostTotals

POLL_INTERVAL_S = 0.25
STORE_OUTAGE_S = 60.0  # how long `submit --wait` waits out a store that does not answer


WIDE_COLUMNS = 160


def stdout_console() -> Console:
    """Where a command's answer goes; wide when piped, so tables are not cut at 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=WIDE_COLUMNS)


def stderr_console() -> Console:
    """Where progress and messages go."""
    return Console(stderr=True)


def _usd(value: Decimal) -> str:
    return f"${value:,.6f}"


def cost_table(report: CostReport, title: str = "Cost") -> Table:
    """Per-model rows and a total row; calls nobody saw finish get two more columns."""
    table = Table(title=title)
    unsettled = report.total.unsettled_calls > 0
    headers = ["model", "requests", "input tok", "cached tok", "output tok", "cost",
               "list-price cost", "savings", "unproductive"]
    if unsettled:
        headers += ["unsettled calls", "unsettled ≤"]
        table.caption = ("unsettled: calls running now, or that nobody saw finish (worker "
                         "lost, timed out) which the provider may have billed: between $0 "
                         f"and {_usd(report.total.unsettled_max_cost_usd)} in all")
    for header in headers:
        table.add_column(header, justify="left" if header == "model" else "right")

    def row(name: str, totals: CostTotals, style: str | None = None) -> None:
        cells = [name, f"{totals.requests:,}", f"{totals.input_tokens:,}",
                 f"{totals.cached_input_tokens:,}", f"{totals.output_tokens:,}",
                 _usd(totals.cost_usd), _usd(totals.list_cost_usd), _usd(totals.savings_usd),
                 _usd(totals.unproductive_cost_usd)]
        if unsettled:
            cells += [f"{totals.unsettled_calls:,}", _usd(totals.unsettled_max_cost_usd)]
        table.add_row(*cells, style=style)

    for name, totals in sorted(report.models.items()):
        row(name, totals)
    row("total", report.total, style="bold")
    return table


def provider_batches_table(batch: dict[str, Any]) -> Table:
    """The provider batches of a batch's batch lane, with their state and progress."""
    table = Table(title=f"Provider batches of {batch['id']}")
    for header in ("provider batch", "provider", "model", "status", "done", "total",
                   "created (UTC)", "hedged (UTC)"):
        table.add_column(header)
    for row in batch.get("provider_batches", []):
        table.add_row(row["id"], row["provider"], row["model"], row["status"],
                      str(row["done"]), str(row["total"]), _when(row["created_at"]),
                      _when(row["hedged_at"]))
    return table


PLAN_NAMES = {"live": "all live", "batch": "all batch", "plan": "plan"}


def plans_table(plans: dict[str, dict[str, Any]], title: str) -> Table:
    """`estimate --deadline`: each plan's lines per lane, cost and expected finish."""
    table = Table(title=title)
    for header in ("plan", "live lines", "batch lines", "cost", "finish"):
        table.add_column(header, justify="left" if header == "plan" else "right")
    for name, plan in plans.items():
        table.add_row(PLAN_NAMES.get(name, name), f"{plan['lines']['live']:,}",
                      f"{plan['lines']['batch']:,}", _usd(Decimal(plan["cost_usd"])),
                      f"{plan['finish_s']:,.0f} s", style="bold" if name == "plan" else None)
    table.caption = ("finish: expected, from the rate limits and the providers' batch "
                     "turnaround (CORRAL_BATCH_TURNAROUND_S until batches have been seen)")
    return table


def _when(timestamp: int | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def batches_table(batches: list[dict[str, Any]]) -> Table:
    """One row per batch."""
    table = Table(title="Batches")
    for header in ("id", "status", "total", "completed", "failed", "models", "created (UTC)"):
        table.add_column(header)
    for batch in batches:
        counts = batch["request_counts"]
        table.add_row(batch["id"], batch["status"], str(counts["total"]),
                      str(counts["completed"]), str(counts["failed"]),
                      ", ".join(batch["models"]), _when(batch["created_at"]))
    return table


def wait_for_batch(store: Store, batch_id: str, *, show_progress: bool = True,
                   timeout_s: float | None = None,
                   outage_s: float = STORE_OUTAGE_S) -> dict[str, Any]:
    """Poll the record store until the batch ends, with a progress bar on stderr; returns the
    final batch. Redis may come and go meanwhile (its loss costs no record); a store that
    stops answering is waited out for up to `outage_s` (a restart).

    Raises:
        BatchNotFoundError: the batch vanished while waited for (deleted).
        StoreUnavailableError: the store did not answer for `outage_s`.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn(),
                        console=stderr_console(), disable=not show_progress, transient=False)
    with progress:
        batch = read_batch(store, batch_id)
        task = progress.add_task(batch_id, total=batch["request_counts"]["total"], failed=0)
        silent_since: float | None = None
        while True:
            counts = batch["request_counts"]
            progress.update(task, completed=counts["completed"] + counts["failed"],
                            failed=counts["failed"], description=batch["status"])
            if is_terminal(batch) or (deadline is not None and time.monotonic() > deadline):
                return batch
            time.sleep(POLL_INTERVAL_S)
            try:
                batch = read_batch(store, batch_id)
                silent_since = None
            except DBAPIError as err:
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > outage_s:
                    raise StoreUnavailableError(
                        f"the record store did not answer for {outage_s:g} s while waiting "
                        f"for batch {batch_id} ({type(err.orig).__name__}); if it comes back, "
                        f"follow the batch with `corral status {batch_id} --watch`") from None
