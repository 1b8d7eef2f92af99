"""What bench.batch_lane's runs came to: one row per mode and scenario, the table, the targets."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.report import table

COST_TARGET = Decimal("0.55")


@dataclasses.dataclass
class Row:
    """What one mode in one scenario did."""

    mode: str
    scenario: str
    lines: int = 0
    cost_usd: Decimal | None = None
    unproductive_usd: Decimal | None = None
    planned: tuple[int, int] = (0, 0)  # live, batch
    answered: tuple[int, int] = (0, 0)
    past_deadline: int = 0
    unfinished: int = 0
    wall_s: float | None = None
    last_vs_deadline_s: int | None = None  # the last record's written_at - the deadline
    sim_calls: tuple[int, int] = (0, 0)  # live, batch lines the simulator answered
    hedged_after_s: float | None = None
    expected: dict[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""


def format_rows(rows: Sequence[Row]) -> str:
    """The results table."""
    base = next((row.cost_usd for row in rows
                 if row.mode == "all-live" and row.scenario == "healthy"), None)
    header = ("scenario", "mode", "lines", "cost $", "÷ live", "unprod $",
              "planned live/batch", "answered live/batch", "sim live/batch", "past 2h",
              "last-2h s", "wall s", "hedge")
    body = []
    for row in rows:
        ratio = "-" if not base or row.cost_usd is None else f"{row.cost_usd / base:.3f}"
        body.append((row.scenario, row.mode, f"{row.lines:,}",
                     "-" if row.cost_usd is None else f"{row.cost_usd:.4f}", ratio,
                     "-" if row.unproductive_usd is None else f"{row.unproductive_usd:.4f}",
                     f"{row.planned[0]:,}/{row.planned[1]:,}",
                     f"{row.answered[0]:,}/{row.answered[1]:,}",
                     f"{row.sim_calls[0]:,}/{row.sim_calls[1]:,}", f"{row.past_deadline:,}",
                     "-" if row.last_vs_deadline_s is None else f"{row.last_vs_deadline_s:+d}",
                     "-" if row.wall_s is None else f"{row.wall_s:.0f}",
                     "no" if row.hedged_after_s is None else
                     f"yes, {row.hedged_after_s:.0f} s"))
    return table(header, body)


def targets(rows: Sequence[Row]) -> list[str]:
    """The two targets, PASS/FAIL with the measured numbers."""
    found = {(row.mode, row.scenario): row for row in rows}
    lines = []
    live, plan = found.get(("all-live", "healthy")), found.get(("plan", "healthy"))
    if live and plan and live.cost_usd and plan.cost_usd is not None:
        ratio = plan.cost_usd / live.cost_usd
        lines.append(f"target 1, plan cost <= {COST_TARGET} x all-live with a healthy batch: "
                     f"{'PASS' if ratio <= COST_TARGET else 'FAIL'} ({ratio:.3f}: "
                     f"${plan.cost_usd:.4f} / ${live.cost_usd:.4f})")
    stalled = found.get(("plan", "stalled"))
    if stalled:
        lines.append(f"target 2, 0 lines past the deadline with a stalled batch (plan): "
                     f"{'PASS' if stalled.past_deadline == 0 else 'FAIL'} "
                     f"({stalled.past_deadline:,} of {stalled.lines:,} past)")
    return lines


def format_table_expected(rows: Sequence[Row]) -> str:
    """What ``corral estimate --deadline --json`` expected of each deadline mode."""
    seen = {}
    for row in rows:
        if row.expected and row.mode not in seen:
            plan = row.expected
            seen[row.mode] = (f"estimate for {row.mode}: ${Decimal(plan['cost_usd']):.4f}, "
                              f"live/batch {plan['lines']['live']:,}/"
                              f"{plan['lines']['batch']:,}, finish {plan['finish_s']} s")
    return "\n".join(seen.values())


def code_commit() -> str:
    """The commit of the code under test: CORRAL_BENCH_COMMIT (a snapshot of a commit, run
    while others edit the checkout), else this checkout's HEAD, marked when it has changes."""
    if os.environ.get("CORRAL_BENCH_COMMIT"):
        return os.environ["CORRAL_BENCH_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "corral", "producer", "workers", "simulator"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' with uncommitted changes' if dirty else ''}"
