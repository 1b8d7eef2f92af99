"""Retry timing as small pure functions: parse Retry-After, compute the next delay."""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping


def parse_retry_after_s(headers: Mapping[str, str], *, now_s: float | None = None) -> float | None:
    """The server's requested wait in seconds, or None when it gave none we can read.

    `retry-after-ms` (milliseconds, OpenAI) wins over `retry-after` (seconds or an HTTP date).
    Junk, negative, NaN or infinite values count as absent.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value_ms = float(raw_ms)
        except ValueError:
            value_ms = math.nan
        if math.isfinite(value_ms) and value_ms >= 0:
            return value_ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value_s = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        now_s = time.time() if now_s is None else now_s
        value_s = email.utils.mktime_tz(parsed) - now_s
        return max(value_s, 0.0)
    return value_s if math.isfinite(value_s) and value_s >= 0 else None


def backoff_delay_s(attempt: int, *, base_s: float, cap_s: float,
                    retry_after_s: float | None = None,
                    rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.

    Full jitter: uniform(0, min(cap_s, base_s × 2^(attempt − 1))), then raised to the server's
    Retry-After when it asked for longer; the result never exceeds cap_s (a server asking for
    more than the cap is also held back by the shared cooldown of its scope).
    """
    rng = rng or random.Random()
    ceiling_s = min(cap_s, base_s * 2.0 ** max(attempt - 1, 0))
    delay_s = rng.uniform(0.0, ceiling_s)
    if retry_after_s is not None:
        delay_s = max(delay_s, retry_after_s)
    return min(delay_s, cap_s)
