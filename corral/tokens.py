"""Token estimates without a tokenizer: what a request will be charged against a TPM limit."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

CHARS_PER_TOKEN = 4
# Tokens OpenAI's chat format adds around each message (role, separators) and before the reply.
MESSAGE_OVERHEAD_TOKENS = 4
REPLY_PRIMING_TOKENS = 3
# The most an image part can cost: OpenAI bills a high-detail image as at most 8 tiles of 170
# tokens + 85 (a 2048×768 scale), Anthropic about 1,600 for the largest image it takes.
IMAGE_TOKENS_BOUND = 1_600
# Request fields the provider turns into prompt tokens besides the messages.
PROMPT_FIELDS = ("tools", "functions", "response_format", "tool_choice")


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


def prompt_tokens_bound(body: dict[str, Any]) -> int:
    """A bound no tokenizer exceeds on a request's prompt tokens: a BPE token is at least one
    byte, so UTF-8 bytes of every text the provider tokenizes, plus each message's overhead,
    plus the most an image part can cost. What prices a call nobody saw finish at its worst.
    """
    messages = body.get("messages") or ()
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS
        if not isinstance(message, dict):
            continue
        for field, value in message.items():
            if field == "content" and isinstance(value, list):
                for part in value:
                    is_image = isinstance(part, dict) and part.get("type") != "text"
                    total += IMAGE_TOKENS_BOUND if is_image else _utf8_bytes(part)
            elif field != "role":
                total += _utf8_bytes(value)
    return total + sum(_utf8_bytes(body[field]) for field in PROMPT_FIELDS if field in body)


def _utf8_bytes(value: Any) -> int:
    """UTF-8 bytes of a string, or of a JSON value's compact serialisation."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


def requested_output_tokens(body: dict[str, Any], default_max_tokens: int) -> int:
    """Completion tokens a request may use: max_(completion_)tokens or the default, × n."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    choices = body.get("n") or 1
    return int(limit) * int(choices)


def reservation_tokens(body: dict[str, Any], default_max_tokens: int) -> int:
    """Tokens an `openai`-accounting provider charges at admission: prompt + output ceiling."""
    return estimate_prompt_tokens(body) + requested_output_tokens(body, default_max_tokens)
