"""Response headers a real provider sends: Go-style durations, x-ratelimit-*, retry-after."""

from __future__ import annotations

import math

from .limiters import Snapshot


def format_go_duration(seconds: float) -> str:
    """Format a duration like Go's ``time.Duration.String``, as OpenAI's reset headers do.

    Precision is whole milliseconds, rounded up so a client that waits this long is never
    early: ``0.02`` -> ``"20ms"``, ``1`` -> ``"1s"``, ``90.5`` -> ``"1m30.5s"``,
    ``360`` -> ``"6m0s"``, ``3600`` -> ``"1h0m0s"``. Negative values format as ``"0s"``.

    Args:
        seconds: The duration in seconds.

    Returns:
        The formatted duration.
    """
    # round() first so float noise such as 0.1 * 3 does not round 300ms up to 301ms.
    total_ms = max(0, math.ceil(round(seconds * 1000, 6)))
    if total_ms == 0:
        return "0s"
    if total_ms < 1000:
        return f"{total_ms}ms"
    hours, rest_ms = divmod(total_ms, 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    whole_s, frac_ms = divmod(rest_ms, 1000)
    seconds_text = f"{whole_s}.{frac_ms:03d}".rstrip("0") if frac_ms else str(whole_s)
    if hours:
        return f"{hours}h{minutes}m{seconds_text}s"
    if minutes:
        return f"{minutes}m{seconds_text}s"
    return f"{seconds_text}s"


def retry_after_headers(wait_ms: int) -> list[tuple[str, str]]:
    """``retry-after`` in whole seconds (rounded up, at least 1) and exact ``retry-after-ms``."""
    retry_after_s = max(1, math.ceil(wait_ms / 1000))
    return [("retry-after", str(retry_after_s)), ("retry-after-ms", str(wait_ms))]


def rate_limit_headers(snapshot: Snapshot) -> list[tuple[str, str]]:
    """The ``x-ratelimit-*`` headers for each limited dimension of a model."""
    headers: list[tuple[str, str]] = []
    s = snapshot
    dimensions = (
        ("requests", s.limit_requests, s.remaining_requests, s.reset_requests_s),
        ("tokens", s.limit_tokens, s.remaining_tokens, s.reset_tokens_s),
    )
    for name, limit, remaining, reset_s in dimensions:
        if limit is None or remaining is None or reset_s is None:
            continue
        headers.append((f"x-ratelimit-limit-{name}", str(limit)))
        headers.append((f"x-ratelimit-remaining-{name}", str(remaining)))
        headers.append((f"x-ratelimit-reset-{name}", format_go_duration(reset_s)))
    return headers
