"""Token estimates without a network: what a request will be charged against a TPM limit."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache, partial
from typing import Any

from corral.errors import ConfigError
from corral.settings import TokenEstimator, get_settings
from corral.tiktoken_offline import TiktokenUnavailableError, load_o200k_counter

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
# Tokens OpenAI's chat format adds around each message (role, separators) and before the reply.
MESSAGE_OVERHEAD_TOKENS = 4
REPLY_PRIMING_TOKENS = 3
# The most an image part can cost: OpenAI bills a high-detail image as at most 8 tiles of 170
# tokens + 85 (a 2048×768 scale), Anthropic about 1,600 for the largest image it takes.
IMAGE_TOKENS_BOUND = 1_600
# Request fields the provider turns into prompt tokens besides the messages.
PROMPT_FIELDS = ("tools", "functions", "response_format", "tool_choice")

# Hundredths of a token per character, by script. A character's UTF-8 lead byte names its block
# of code points, so one bytes.translate prices a whole text; continuation bytes weigh nothing.
# Fitted to o200k_base counts of the system's translation catalogues (26 languages, 580k
# messages) and checked on Korean prose (bench/token_estimate.py): ASCII stays at 4 characters
# a token. Each weight is below its characters' UTF-8 length, so no estimate passes the bound.
ASCII_CENTITOKENS = 100 // CHARS_PER_TOKEN
SCRIPT_CENTITOKENS: tuple[tuple[range, int, str], ...] = (
    (range(0x00, 0x80), ASCII_CENTITOKENS, "ASCII"),
    (range(0xC2, 0xCA), 85, "U+0080-027F Latin-1, Latin Extended-A/B"),
    (range(0xCA, 0xD0), 40, "U+0280-03FF IPA, combining marks, Greek"),
    (range(0xD0, 0xD6), 33, "U+0400-057F Cyrillic, Armenian"),
    (range(0xD6, 0xD8), 50, "U+0580-05FF Hebrew"),
    (range(0xD8, 0xE0), 40, "U+0600-07FF Arabic, Syriac, Thaana"),
    (range(0xE0, 0xE2), 40, "U+0800-1FFF Indic, Thai, Georgian, Khmer, Latin Ext. Additional"),
    (range(0xE2, 0xE3), 100, "U+2000-2FFF punctuation, symbols"),
    (range(0xE3, 0xE4), 75, "U+3000-3FFF kana, CJK punctuation"),
    (range(0xE4, 0xEA), 100, "U+4000-9FFF CJK ideographs"),
    (range(0xEA, 0xEE), 80, "U+A000-D7FF Hangul syllables"),
    (range(0xEE, 0xF0), 100, "U+E000-FFFF compatibility and full-width forms"),
    (range(0xF0, 0xF5), 150, "U+10000- emoji, rare ideographs"),
)
_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))


def _centitokens_by_lead_byte() -> bytes:
    table = bytearray([100] * 256)  # C0, C1, F5-FF never lead a valid UTF-8 sequence
    for lead_bytes, centitokens, _ in SCRIPT_CENTITOKENS:
        for byte in lead_bytes:
            table[byte] = centitokens
    return bytes(table)


_CENTITOKENS_BY_LEAD_BYTE = _centitokens_by_lead_byte()


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


def text_centitokens(text: str) -> int:
    """Hundredths of a token `text` is estimated at: 25 per ASCII character, other characters
    by script (`SCRIPT_CENTITOKENS`)."""
    if text.isascii():
        return ASCII_CENTITOKENS * len(text)
    encoded = text.encode("utf-8", "surrogatepass")
    return sum(encoded.translate(_CENTITOKENS_BY_LEAD_BYTE, _CONTINUATION_BYTES))


def script_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens by script-aware character ratios: ceil(characters / 4) for ASCII text,
    about 1.25 Hangul syllables or one CJK ideograph a token (see `SCRIPT_CENTITOKENS`)."""
    centitokens = 0
    for text in iter_message_texts(body.get("messages") or ()):
        centitokens += text_centitokens(text)
    return -(-centitokens // 100)


def tiktoken_prompt_tokens(count: Callable[[str], int], body: dict[str, Any]) -> int:
    """Prompt tokens by a tokenizer's `count` of the message text, plus the chat format's
    overhead per message and before the reply."""
    messages = body.get("messages") or ()
    overhead = REPLY_PRIMING_TOKENS + MESSAGE_OVERHEAD_TOKENS * sum(1 for _ in messages)
    return overhead + sum(count(text) for text in iter_message_texts(messages))


def resolve_prompt_estimator(
        choice: TokenEstimator) -> tuple[Callable[[dict[str, Any]], int], str]:
    """The estimate `choice` names, and a description of it for the log.

    `auto` is tiktoken's o200k_base when tiktoken is installed and the encoding file is
    already in its cache, else the script-aware ratios; `tiktoken` refuses to fall back.

    Raises:
        ConfigError: `tiktoken` was asked for and cannot be had offline.
    """
    if choice == "script":
        return script_prompt_tokens, "script-aware character ratios (CORRAL_TOKEN_ESTIMATOR=script)"
    try:
        count, path = load_o200k_counter()
    except TiktokenUnavailableError as err:
        if choice == "tiktoken":
            raise ConfigError(f"CORRAL_TOKEN_ESTIMATOR=tiktoken: {err}") from None
        return script_prompt_tokens, f"script-aware character ratios ({err})"
    return partial(tiktoken_prompt_tokens, count), f"tiktoken o200k_base ({path})"


@lru_cache(maxsize=1)
def _process_estimator() -> Callable[[dict[str, Any]], int]:
    estimator, description = resolve_prompt_estimator(get_settings().token_estimator)
    log.info("prompt tokens estimated by %s", description)
    return estimator


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens of a request, by the process's CORRAL_TOKEN_ESTIMATOR: what
    reservations, context-window checks and budget ceilings count."""
    return _process_estimator()(body)


def prompt_tokens_bound(body: dict[str, Any]) -> int:
    """A bound no tokenizer exceeds on a request's prompt tokens: a BPE token is at least one
    byte, so UTF-8 bytes of every text the provider tokenizes, plus each message's overhead,
    plus the most an image part can cost. What prices a call nobody saw finish at its worst.

    Every estimate above stays at or below it. Audio and file parts are priced as images.
    """
    messages = body.get("messages") or ()
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS
        if not isinstance(message, dict):
            continue
        for field, value in message.items():
            if field == "content" and isinstance(value, list):
                total += sum(_part_bound(part) for part in value)
            elif field != "role":
                total += _utf8_bytes(value)
    return total + sum(_utf8_bytes(body[field]) for field in PROMPT_FIELDS if field in body)


def _part_bound(part: Any) -> int:
    """A content part's bound: a text part's text; any other typed part, an image's most (and
    its `text`, if it has one, which the estimate counts)."""
    if not isinstance(part, dict):
        return _utf8_bytes(part)
    text = part.get("text")
    text_bytes = _utf8_bytes(text) if isinstance(text, str) else 0
    return text_bytes if part.get("type") == "text" else IMAGE_TOKENS_BOUND + text_bytes


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
