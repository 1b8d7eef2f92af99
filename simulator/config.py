"""Simulator settings: the served models, their limits, the limiter kind and the faults."""

from __future__ import annotations

import dataclasses

from .faults import FaultSettings

DEFAULT_CONTEXT_TOKENS = 128_000
# What a request is charged for output when it sets neither max_tokens nor max_completion_tokens.
DEFAULT_MAX_OUTPUT_TOKENS = 1024
LIMITER_KINDS = ("bucket", "window")

# Spec keys as typed on the command line -> ModelSpec field names.
_SPEC_KEYS = {
    "rpm": "rpm",
    "tpm": "tpm",
    "ctx": "context_tokens",
    "max_tokens": "default_max_tokens",
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One served model; rpm/tpm None means that dimension is unlimited."""

    name: str
    rpm: int | None = None
    tpm: int | None = None
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    default_max_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS

    @property
    def limited(self) -> bool:
        """Whether any rate limit applies to this model."""
        return self.rpm is not None or self.tpm is not None


def parse_model_spec(text: str) -> ModelSpec:
    """Parse ``NAME[:rpm=R,tpm=T,ctx=C,max_tokens=M]`` into a ModelSpec.

    Model names may contain colons (fine-tuned ids do), so only a last ``:``-suffix holding
    ``key=value`` pairs is read as options.

    Args:
        text: The ``--model`` flag value.

    Returns:
        The parsed spec.

    Raises:
        ValueError: On an empty name, an unknown key, or a value that is not a positive int.
    """
    name, sep, options = text.rpartition(":")
    if not sep or "=" not in options:
        name, options = text, ""
    if not name:
        raise ValueError(f"model spec {text!r} has no model name")
    values: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, eq, raw = item.partition("=")
        field_name = _SPEC_KEYS.get(key.strip())
        if field_name is None or not eq:
            raise ValueError(f"unknown model option {item!r}; use rpm=, tpm=, ctx=, max_tokens=")
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"model option {item!r} needs an integer") from None
        if value < 1:
            raise ValueError(f"model option {item!r} must be at least 1")
        values[field_name] = value
    return ModelSpec(name=name, **values)


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Everything the command line decides; frozen, the run-time faults live in SimState."""

    models: tuple[ModelSpec, ...] = ()
    limiter: str = "bucket"
    period_s: float = 60.0
    faults: FaultSettings = dataclasses.field(default_factory=FaultSettings)
    # repr=False keeps the key out of any debug print of the config.
    api_key: str | None = dataclasses.field(default=None, repr=False)
    seed: int = 0
    port: int = 8100
    host: str = "127.0.0.1"  # 0.0.0.0 only inside a container (docker-compose)
    # Batch lanes: lines answered per second per batch, the window a batch may run before it
    # expires (None: its completion window, 24 h), whether every batch starts stalled, and
    # how long a cancelled batch goes on answering before it ends (its "cancelling" time).
    batch_lines_per_s: float = 1000.0
    batch_window_s: float | None = None
    batch_stall: bool = False
    batch_cancel_s: float = 0.0

    def __post_init__(self) -> None:
        if self.limiter not in LIMITER_KINDS:
            raise ValueError(f"limiter must be one of {LIMITER_KINDS}, not {self.limiter!r}")
        if not self.period_s > 0:
            raise ValueError("period_s must be positive")
        if not 0 < self.batch_lines_per_s < float("inf"):
            raise ValueError("batch_lines_per_s must be a positive number")
        if self.batch_window_s is not None and not 0 < self.batch_window_s < float("inf"):
            raise ValueError("batch_window_s must be a positive number")
        if not 0 <= self.batch_cancel_s < float("inf"):
            raise ValueError("batch_cancel_s must be zero or a positive number")
