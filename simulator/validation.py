"""Parse and validate a chat completion request body into a small typed value."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

MAX_CHOICES = 128


class InvalidRequest(Exception):
    """The body is not a chat completion request this simulator accepts (answered 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


SERVICE_TIERS = frozenset({"auto", "default", "flex", "priority"})  # OpenAI's


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """The fields of a chat completion request the simulator uses."""

    model: str
    messages: list[dict[str, Any]]
    n: int
    max_tokens: int | None  # max_completion_tokens, else max_tokens, else None
    service_tier: str = "default"  # the tier that serves it, echoed in the answer


def _positive_int(payload: dict[str, Any], name: str, upper: int | None = None) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"Invalid '{name}': expected an integer >= 1.", name)
    if upper is not None and value > upper:
        raise InvalidRequest(f"Invalid '{name}': expected at most {upper}.", name)
    return value


def parse_chat_request(body: bytes) -> ChatRequest:
    """Parse a POST /v1/chat/completions body.

    Args:
        body: The raw request body.

    Returns:
        The validated request.

    Raises:
        InvalidRequest: On bad JSON, a missing model or messages, a malformed message,
            ``stream: true``, or a bad ``n``/``max_tokens``/``max_completion_tokens``.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", "model")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"Invalid 'messages[{index}]': expected an object with a role.",
                f"messages[{index}]",
            )
    if payload.get("stream"):
        raise InvalidRequest("The simulator does not support stream: true.", "stream")
    n = _positive_int(payload, "n", MAX_CHOICES) or 1
    max_tokens = _positive_int(payload, "max_tokens")
    max_completion_tokens = _positive_int(payload, "max_completion_tokens")
    tier = payload.get("service_tier") or "auto"
    if tier not in SERVICE_TIERS:
        raise InvalidRequest(f"Invalid 'service_tier': expected one of "
                             f"{', '.join(sorted(SERVICE_TIERS))}.", "service_tier")
    return ChatRequest(model, messages, n, max_completion_tokens or max_tokens,
                       "default" if tier == "auto" else tier)
