"""The benchmark batch: seeded prompts of a length range, one model, as OpenAI Batch lines."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from simulator.completions import count_prompt_tokens

_WORDS = (
    "alpha", "bridge", "cloud", "delta", "engine", "forest", "garden", "harbor", "island",
    "jungle", "kettle", "letter", "market", "number", "orbit", "paper", "quiet", "river",
    "signal", "stone", "tower", "union", "valley", "window", "yellow", "zephyr",
)  # fmt: skip


def prompt_text(rng: random.Random, length_chars: int) -> str:
    """Random words cut to exactly ``length_chars`` characters."""
    words: list[str] = []
    size = -1
    while size < length_chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length_chars]


def iter_lines(
    requests: int, *, model: str, min_chars: int, max_chars: int, max_tokens: int, seed: int
) -> Iterator[dict[str, Any]]:
    """``requests`` batch lines with prompts of ``min_chars``..``max_chars`` characters, one
    at a time (a million-line file never sits in memory)."""
    rng = random.Random(seed)
    for index in range(requests):
        yield {
            "custom_id": f"req-{index:06d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "max_tokens": max_tokens,
                "messages": [
                    {"role": "user", "content": prompt_text(rng, rng.randint(min_chars, max_chars))}
                ],
            },
        }


def make_lines(
    requests: int, *, model: str, min_chars: int, max_chars: int, max_tokens: int, seed: int
) -> list[dict[str, Any]]:
    """``requests`` batch lines with prompts of ``min_chars``..``max_chars`` characters."""
    return list(iter_lines(requests, model=model, min_chars=min_chars, max_chars=max_chars,
                           max_tokens=max_tokens, seed=seed))


def charged_tokens(lines: list[dict[str, Any]]) -> list[int]:
    """What the simulator charges each line at admission: prompt estimate + max_tokens."""
    return [
        count_prompt_tokens(line["body"]["messages"]) + line["body"]["max_tokens"]
        for line in lines
    ]


def write_jsonl(lines: Iterable[dict[str, Any]], path: Path) -> Path:
    """Write ``lines`` as JSONL, streaming, and return ``path``."""
    with path.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line) + "\n")
    return path
