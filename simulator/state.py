"""The simulator's mutable state: models, limiters, faults, stats, and the clock."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

from .anthropic_batches import MessageBatch
from .batch_runner import BatchStall
from .completions import PromptCache
from .config import ModelSpec, SimConfig
from .faults import FaultSettings, RandomFaults, ScriptedFaults, Storms
from .files import FileStore
from .limiters import RateLimiter, make_limiter
from .openai_batches import OpenAIBatch
from .stats import Stats


class SimState:
    """Everything handlers share; one instance per server, used from one event loop only."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._start_s = clock()
        self._models = {spec.name: spec for spec in config.models}
        self._expected_auth = (
            f"Bearer {config.api_key}".encode() if config.api_key is not None else None
        )
        self.faults: FaultSettings = config.faults
        self.random_faults = RandomFaults(config.seed)
        self.scripted = ScriptedFaults()
        self.storms = Storms()
        self.stats = Stats()
        self.prompt_cache = PromptCache()
        self._limiters: dict[str, RateLimiter] = {}
        self.files = FileStore()
        self.openai_batches: dict[str, OpenAIBatch] = {}  # in creation order
        self.message_batches: dict[str, MessageBatch] = {}  # in creation order
        self.batch_stall = BatchStall(config.batch_stall)
        self.batch_tasks: set[asyncio.Task[Any]] = set()

    def now_s(self) -> float:
        """Seconds since the server started, on the injected monotonic clock."""
        return self._clock() - self._start_s

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """Whether the Authorization header carries the configured key (any, if none is set)."""
        if self._expected_auth is None:
            return True
        supplied = headers.get("authorization", "").encode()
        return hmac.compare_digest(supplied, self._expected_auth)

    @property
    def open_models(self) -> bool:
        """True when no --model flags were given, so every model name is served."""
        return not self._models

    def served_models(self) -> list[str]:
        """Configured model names, or the names seen so far when any name is served."""
        return list(self._models) if self._models else list(self.stats.models)

    def resolve_model(self, name: str) -> ModelSpec | None:
        """The spec serving ``name``, or None when it is not served."""
        spec = self._models.get(name)
        if spec is None and self.open_models:
            return ModelSpec(name=name)
        return spec

    def limiter(self, spec: ModelSpec) -> RateLimiter | None:
        """The model's limiter, created on first use; None for an unlimited model."""
        if not spec.limited:
            return None
        limiter = self._limiters.get(spec.name)
        if limiter is None:
            limiter = make_limiter(self.config.limiter, spec.rpm, spec.tpm, self.config.period_s)
            self._limiters[spec.name] = limiter
        return limiter

    def reset(self) -> None:
        """Clear counters, admissions, fault memory, storms, the prompt cache, limiters, and
        every file and batch (running batches stop).

        Fault settings (the batch stall too) stay; the random sequence restarts from the seed
        so runs after a reset replay.
        """
        self.stats = Stats()
        self.scripted.reset()
        self.storms.reset()
        self.prompt_cache.clear()
        self._limiters.clear()
        self.random_faults.reseed(self.config.seed)
        for task in self.batch_tasks:
            task.cancel()
        self.files.clear()
        self.openai_batches.clear()
        self.message_batches.clear()
