"""What one delivery of a line came to: try again later, or an end Flower can show."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from corral.pricing import Usage


@dataclass(frozen=True)
class RetryLater:
    """The line should be tried again after `delay_s`."""

    delay_s: float
    reason: str


@dataclass(frozen=True)
class LineEnded:
    """This delivery is done with the line.

    Attributes:
        outcome: "completed" or "failed" (this delivery filed the line's record),
            "duplicate" (its call was billed, but the line already had a record), "rerouted"
            (sent to the model's fallback), or "skipped" (nothing to do: `detail` says why).
        model: the configured model the call went to (or the line was routed to), if known.
        usage: the tokens of the provider call this delivery made, if it got an answer.
        cost_usd: that call's cost at corral's price.
        detail: the error code of a failed line, the model a line was rerouted to, or why a
            delivery was skipped.
    """

    outcome: str
    model: str = ""
    usage: Usage | None = None
    cost_usd: Decimal = Decimal(0)
    detail: str = ""

    def summary(self) -> Summary:
        """What the line came to, with no prompt or key in it: the task's return value, which
        task events carry to Flower as the task's result."""
        summary: dict[str, Any] = {"line": self.outcome}
        if self.detail:
            summary["error" if self.outcome == "failed" else "detail"] = self.detail
        if self.model:
            summary["model"] = self.model
        if self.usage is not None:  # the cost first: Flower's Result column cuts long values
            summary.update(cost_usd=str(self.cost_usd), input_tokens=self.usage.prompt_tokens,
                           output_tokens=self.usage.completion_tokens)
        return Summary(summary)


class Summary:
    """A task's return value that shows as its dict: `{'line': 'completed', 'model': ...}`.

    Celery puts saferepr() of every task's return value in the task-succeeded event (Flower's
    Result column), even with no result backend. saferepr walks a dict item by item, about
    80 µs for these five on a slow core, a few percent of a worker at 0 ms, but takes an
    object's own repr as it is (5 µs).
    """

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __repr__(self) -> str:
        return repr(self.fields)
