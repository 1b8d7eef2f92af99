"""Counters for /_sim/stats and the admission log behind /_sim/admissions."""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from typing import Any

# Enough for long benchmarks; older admissions drop off first.
MAX_ADMISSIONS_PER_MODEL = 1_000_000


@dataclasses.dataclass
class ModelCounters:
    """Per-model totals."""

    served: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Stats:
    """Every chat call's status, per-model totals, and each admission's time and charge.

    ``first_request_ms`` and ``last_response_ms`` are wall-clock (``wall_clock_s() * 1000``) so
    a benchmark can time a batch end to end at the server.
    """

    def __init__(self, wall_clock_s: Callable[[], float] = time.time) -> None:
        self._wall_clock_s = wall_clock_s
        self.first_request_ms: float | None = None
        self.last_response_ms: float | None = None
        self.arrived = 0
        self.requests = 0
        self.hung = 0
        self.by_status: collections.Counter[str] = collections.Counter()
        self.models: dict[str, ModelCounters] = {}
        self._admissions: dict[str, collections.deque[tuple[float, int]]] = {}
        self._calls: dict[str, collections.deque[tuple[float, int]]] = {}
        # Batch-lane lines, kept apart from the live counters above.
        self.batch_lines = 0
        self.batch_by_status: collections.Counter[str] = collections.Counter()
        self.batch_models: dict[str, ModelCounters] = {}

    def _model(self, name: str) -> ModelCounters:
        counters = self.models.get(name)
        if counters is None:
            counters = self.models[name] = ModelCounters()
        return counters

    def record_arrival(self) -> float:
        """Note that a chat call arrived; returns its wall-clock time in ms."""
        self.arrived += 1
        arrived_ms = self._wall_clock_s() * 1000
        if self.first_request_ms is None:
            self.first_request_ms = arrived_ms
        return arrived_ms

    def record_call(self, status: int | None, model: str | None,
                    arrived_ms: float | None = None) -> None:
        """Count one chat call as it is answered; ``status`` None means it hung."""
        self.requests += 1
        if model is not None and arrived_ms is not None:
            log = self._calls.get(model)
            if log is None:
                log = self._calls[model] = collections.deque(maxlen=MAX_ADMISSIONS_PER_MODEL)
            log.append((arrived_ms, 0 if status is None else status))
        if status is None:
            self.hung += 1
            return
        self.last_response_ms = self._wall_clock_s() * 1000
        self.by_status[str(status)] += 1
        if model is not None and status == 429:
            self._model(model).rate_limited += 1

    def record_served(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one 2xx answer and its usage."""
        counters = self._model(model)
        counters.served += 1
        counters.prompt_tokens += prompt_tokens
        counters.completion_tokens += completion_tokens

    def record_batch_line(
        self, status: int, model: str | None, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Count one batch line as it is answered, and its usage when it succeeded."""
        self.batch_lines += 1
        self.batch_by_status[str(status)] += 1
        if model is None:
            return
        counters = self.batch_models.get(model)
        if counters is None:
            counters = self.batch_models[model] = ModelCounters()
        if 200 <= status < 300:
            counters.served += 1
            counters.prompt_tokens += prompt_tokens
            counters.completion_tokens += completion_tokens

    def record_admission(self, model: str, at_ms: float, tokens: int) -> None:
        """Log that the limiter admitted a call charging ``tokens`` at ``at_ms``."""
        log = self._admissions.get(model)
        if log is None:
            log = self._admissions[model] = collections.deque(maxlen=MAX_ADMISSIONS_PER_MODEL)
        log.append((at_ms, tokens))

    def calls(self, model: str) -> list[list[float]]:
        """``[[arrived_ms, status], ...]`` of every chat call on ``model`` (status 0: hung)."""
        return [[at_ms, status] for at_ms, status in self._calls.get(model, ())]

    def admissions(self, model: str) -> list[list[float]]:
        """``[[at_ms, tokens], ...]`` for ``model``, oldest first."""
        return [[at_ms, tokens] for at_ms, tokens in self._admissions.get(model, ())]

    def to_json(self) -> dict[str, Any]:
        """The /_sim/stats body; ``requests``, ``served`` and ``models`` are the live lane's."""
        served = sum(count for status, count in self.by_status.items() if status.startswith("2"))
        batch_served = sum(
            count for status, count in self.batch_by_status.items() if status.startswith("2")
        )
        return {
            "requests": self.requests,
            "in_flight": self.arrived - self.requests,
            "served": served,
            "hung": self.hung,
            "by_status": dict(self.by_status),
            "first_request_ms": self.first_request_ms,
            "last_response_ms": self.last_response_ms,
            "models": {name: dataclasses.asdict(c) for name, c in self.models.items()},
            "by_lane": {"live": served, "batch": batch_served},
            "batch": {
                "lines": self.batch_lines,
                "served": batch_served,
                "by_status": dict(self.batch_by_status),
                "models": {name: dataclasses.asdict(c) for name, c in self.batch_models.items()},
            },
        }
