"""Token estimates, deterministic completions and the chat.completion response body."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

CHARS_PER_TOKEN = 4
MIN_COMPLETION_TOKENS = 5
MAX_COMPLETION_TOKENS = 200
CACHE_MIN_CHARS = 1024
CACHE_BLOCK_TOKENS = 128
SYSTEM_FINGERPRINT = "fp_corral_sim"
_WORDS = (
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on",
    "be", "by", "at", "this", "from", "or", "an", "are", "which", "batch", "queue", "worker",
    "token", "model", "prompt", "reply", "limit", "window", "bucket", "retry", "answer",
    "simple", "quick", "steady", "careful", "bright", "quiet", "river", "mountain", "forest",
    "cloud", "stone", "paper", "light", "sound", "number", "letter", "story", "garden",
    "market", "bridge", "engine", "signal",
)  # fmt: skip


def message_texts(messages: Iterable[Any]) -> Iterable[str]:
    """Every piece of message text: string contents and the ``text`` of text parts."""
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    text = part.get("text")
                    if isinstance(text, str):
                        yield text


def count_prompt_tokens(messages: Iterable[Any]) -> int:
    """ceil(characters of all message text / 4): the same estimate corral's clients make."""
    chars = sum(len(text) for text in message_texts(messages))
    return -(-chars // CHARS_PER_TOKEN)


def messages_digest(messages: Any) -> bytes:
    """A 16-byte blake2b hash of the canonical JSON of ``messages``."""
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(canonical.encode(), digest_size=16).digest()


@dataclasses.dataclass(frozen=True)
class Choice:
    """One generated choice."""

    content: str
    completion_tokens: int
    finish_reason: str


def completion_text(seed: bytes, tokens: int) -> str:
    """Exactly ``tokens * 4`` characters of words chosen by ``seed``, so estimates match."""
    target_chars = tokens * CHARS_PER_TOKEN
    rng = random.Random(seed)
    # Words average over 3 characters with their space, so target/3 words always overshoot.
    words = " ".join(rng.choices(_WORDS, k=target_chars // 3 + 2))[: target_chars - 1]
    if words.endswith(" "):
        # Keep the exact length without leaving " ." at the end.
        words = words[:-1] + "s"
    return words + "."


def make_choices(digest: bytes, n: int, max_tokens: int | None) -> list[Choice]:
    """``n`` deterministic choices for messages hashing to ``digest``.

    Each choice's natural length is 5..200 tokens from its own hash; ``max_tokens`` caps it
    and makes its finish_reason "length".
    """
    choices = []
    for index in range(n):
        seed = digest if index == 0 else hashlib.blake2b(digest + index.to_bytes(4, "big")).digest()
        span = MAX_COMPLETION_TOKENS - MIN_COMPLETION_TOKENS + 1
        natural = MIN_COMPLETION_TOKENS + int.from_bytes(seed[:4], "big") % span
        capped = max_tokens is not None and max_tokens < natural
        tokens = max_tokens if capped and max_tokens is not None else natural
        finish_reason = "length" if capped else "stop"
        choices.append(Choice(completion_text(seed, tokens), tokens, finish_reason))
    return choices


def chat_completion_body(
    model: str, choices: Sequence[Choice], prompt_tokens: int, cached_tokens: int,
    service_tier: str = "default",
) -> dict[str, Any]:
    """A response body shaped exactly like OpenAI's ``chat.completion`` object (which says
    the ``service_tier`` that served it)."""
    completion_tokens = sum(choice.completion_tokens for choice in choices)
    return {
        "id": f"chatcmpl-{os.urandom(12).hex()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": choice.content, "refusal": None},
                "finish_reason": choice.finish_reason,
                "logprobs": None,
            }
            for index, choice in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": service_tier,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


class PromptCache:
    """Remembers long system prompts, like a provider's prompt cache, in bounded memory."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._seen: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def clear(self) -> None:
        """Forget every remembered prompt."""
        self._seen.clear()

    def cached_tokens(self, messages: Sequence[Any]) -> int:
        """Cached prompt tokens for this call, remembering its system prompt for the next.

        A first ``system`` message of at least 1024 characters seen before is cached, in
        whole blocks of 128 tokens; anything else caches 0.
        """
        first = messages[0] if messages else None
        if not isinstance(first, dict) or first.get("role") != "system":
            return 0
        text = "".join(message_texts([first]))
        if len(text) < CACHE_MIN_CHARS:
            return 0
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if key not in self._seen:
            self._seen[key] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return 0
        self._seen.move_to_end(key)
        tokens = -(-len(text) // CHARS_PER_TOKEN)
        return tokens // CACHE_BLOCK_TOKENS * CACHE_BLOCK_TOKENS
