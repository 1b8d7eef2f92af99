"""Token estimates without a tokenizer: what a request will be charged against a TPM limit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

CHARS_PER_TOKEN = 4


def iter_message_texts(messages: Iterable[Any]) -> Iterator[str]:
    """Every piece of message text: string contents and the `text` of text parts."""
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]


def message_text_chars(messages: Iterable[Any]) -> int:
    """Characters of all message text."""
    return sum(len(text) for text in iter_message_texts(messages))


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """ceil(characters of all message text / 4), the estimate providers' limiters are close to."""
    chars = message_text_chars(body.get("messages") or ())
    return -(-chars // CHARS_PER_TOKEN)


def requested_output_tokens(body: dict[str, Any], default_max_tokens: int) -> int:
    """Completion tokens a request may use: max_(completion_)tokens or the default, × n."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    choices = body.get("n") or 1
    return int(limit) * int(choices)


def reservation_tokens(body: dict[str, Any], default_max_tokens: int) -> int:
    """Tokens an `openai`-accounting provider charges at admission: prompt + output ceiling."""
    return estimate_prompt_tokens(body) + requested_output_tokens(body, default_max_tokens)
