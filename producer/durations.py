"""Durations as people write them: `24h`, `90m`, `1d`, `45s`."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_s(text: str) -> float:
    """Seconds in `text` (a number and one unit of s, m, h, d).

    Raises:
        ValueError: naming the accepted form.
    """
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration like 24h, 90m, 1d or 45s")
    return float(match.group(1)) * _UNIT_S[match.group(2)]
