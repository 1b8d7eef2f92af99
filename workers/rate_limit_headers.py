"""Reads a provider's x-ratelimit-remaining-* headers; junk reads as absent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Remaining:
    """What the provider says is left in its buckets right now (None: not said)."""

    requests: int | None
    tokens: int | None


def _count(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def parse_remaining(headers: Mapping[str, str]) -> Remaining:
    """`x-ratelimit-remaining-requests` and `-tokens` as non-negative ints."""
    return Remaining(requests=_count(headers.get("x-ratelimit-remaining-requests")),
                     tokens=_count(headers.get("x-ratelimit-remaining-tokens")))
