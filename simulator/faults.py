"""Fault injection: seeded random errors and hangs, scripted prompt markers, and 429 storms."""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Mapping

SERVER_ERROR_STATUSES = (500, 502, 503)
SCRIPTED_RETRY_AFTER_MS = 200
SCRIPT_PREFIX = "[[sim:"
_SCRIPTED_KINDS = {
    429: "rate_limit",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    408: "timeout",
    400: "bad_request",
    401: "auth",
}
_MARKER = re.compile(
    r"\[\[sim:(?:fail=(?P<status>\d{3}),times=(?P<times>\d+)(?:,retry_ms=(?P<retry_ms>\d+))?"
    r"|(?P<word>hang|quota))\]\]"
)


@dataclasses.dataclass(frozen=True)
class Fault:
    """A call that must not be answered normally.

    ``kind`` is one of rate_limit, quota, server_error, timeout, bad_request, auth, hang.
    """

    status: int
    kind: str
    retry_after_ms: int = 0


HANG = Fault(status=0, kind="hang")
QUOTA = Fault(status=429, kind="quota")


@dataclasses.dataclass(frozen=True)
class FaultSettings:
    """Fault shares (0..1 of calls) and latency; changeable at run time via /_sim/faults."""

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    hang_rate: float = 0.0
    latency_ms: float = 0.0
    latency_per_token_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    retry_after_s: float = 1.0

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        rates = (self.error_rate, self.rate_limit_rate, self.hang_rate)
        # Rates are slices of one roll, so they must fit in [0, 1] together.
        if sum(rates) > 1:
            raise ValueError("error_rate + rate_limit_rate + hang_rate must be at most 1")

    def updated(self, changes: Mapping[str, object]) -> FaultSettings:
        """A copy with ``changes`` applied.

        Raises:
            ValueError: On an unknown name or a value that is not a valid number.
        """
        known = {field.name for field in dataclasses.fields(self)}
        values: dict[str, float] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault setting {name!r}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            values[name] = float(value)
        return dataclasses.replace(self, **values)


class RandomFaults:
    """Seeded choices of random faults and latency, so a run replays given the same calls."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random sequence from ``seed``."""
        self._rng.seed(seed)

    def draw(self, settings: FaultSettings) -> Fault | None:
        """Pick a hang, a 5xx, a 429 or nothing, by one roll against the settings' shares."""
        if not (settings.hang_rate or settings.error_rate or settings.rate_limit_rate):
            return None
        roll = self._rng.random()
        if roll < settings.hang_rate:
            return HANG
        roll -= settings.hang_rate
        if roll < settings.error_rate:
            return Fault(self._rng.choice(SERVER_ERROR_STATUSES), "server_error")
        roll -= settings.error_rate
        if roll < settings.rate_limit_rate:
            return Fault(429, "rate_limit", round(settings.retry_after_s * 1000))
        return None

    def latency_s(self, settings: FaultSettings, completion_tokens: int) -> float:
        """Seconds to delay an admitted call: fixed + per token + uniform ± jitter, at least 0."""
        latency_ms = settings.latency_ms + settings.latency_per_token_ms * completion_tokens
        if settings.latency_jitter_ms:
            jitter_ms = settings.latency_jitter_ms
            latency_ms += self._rng.uniform(-jitter_ms, jitter_ms)
        return max(0.0, latency_ms) / 1000


class ScriptedFaults:
    """Markers in message text: ``[[sim:fail=CODE,times=K(,retry_ms=MS)]]``, hang, quota.

    A fail marker answers CODE to the first K calls whose messages hash alike, then lets
    calls through, so a test can script "fail twice, then succeed" for one prompt.
    """

    def __init__(self) -> None:
        self._attempts: dict[bytes, int] = {}

    def reset(self) -> None:
        """Forget every attempt count."""
        self._attempts.clear()

    def check(self, text: str, digest: bytes) -> Fault | None:
        """The scripted fault for this call, if its ``text`` carries a marker.

        Args:
            text: All message text of the call.
            digest: The hash of the call's messages, which keys the attempt count.

        Returns:
            The fault to answer with, or None to answer normally.
        """
        match = _MARKER.search(text)
        if match is None:
            return None
        if match["word"] == "hang":
            return HANG
        if match["word"] == "quota":
            return QUOTA
        status = int(match["status"])
        kind = _SCRIPTED_KINDS.get(status)
        if kind is None:
            return None
        attempt = self._attempts.get(digest, 0) + 1
        self._attempts[digest] = attempt
        if attempt > int(match["times"]):
            return None
        if status != 429:
            return Fault(status, kind)
        retry_ms = match["retry_ms"]
        return Fault(429, kind, int(retry_ms) if retry_ms else SCRIPTED_RETRY_AFTER_MS)


class Storms:
    """Per-model spells during which every call answers 429."""

    def __init__(self) -> None:
        self._storms: dict[str, tuple[float, float]] = {}  # model -> (until_s, retry_after_s)

    def reset(self) -> None:
        """End every storm."""
        self._storms.clear()

    def start(self, spec: Mapping[str, object], now_s: float) -> None:
        """Start a storm from ``{"model", "duration_s", "retry_after_s"}``.

        Raises:
            ValueError: If the model is not a string or a duration is not a number >= 0.
        """
        model = spec.get("model")
        duration_s = spec.get("duration_s")
        retry_after_s = spec.get("retry_after_s", 1)
        if not isinstance(model, str):
            raise ValueError("storm.model must be a string")
        for name, value in (("duration_s", duration_s), ("retry_after_s", retry_after_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"storm.{name} must be a number >= 0")
        assert isinstance(duration_s, int | float) and isinstance(retry_after_s, int | float)
        self._storms[model] = (now_s + duration_s, float(retry_after_s))

    def check(self, model: str, now_s: float) -> Fault | None:
        """A 429 fault if ``model`` is in a storm at ``now_s``."""
        storm = self._storms.get(model)
        if storm is None or now_s >= storm[0]:
            return None
        return Fault(429, "rate_limit", round(storm[1] * 1000))

    def describe(self, now_s: float) -> dict[str, dict[str, float]]:
        """Running storms with their remaining seconds, for the /_sim/faults reply."""
        return {
            model: {"remaining_s": round(until_s - now_s, 3), "retry_after_s": retry_after_s}
            for model, (until_s, retry_after_s) in self._storms.items()
            if until_s > now_s
        }
