"""Anthropic Messages params to the simulator's chat input, and chat answers back to messages."""

from __future__ import annotations

import json
import os
from typing import Any

from .batch_runner import BatchLine, LineResult

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
# OpenAI error type/code -> the Anthropic error type a client branches on.
_ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 408: "timeout_error",
                429: "rate_limit_error", 500: "api_error", 502: "api_error",
                503: "overloaded_error"}  # fmt: skip


def line_from_params(custom_id: str, params: Any) -> BatchLine:
    """A batch line whose chat body carries ``params``' model, max_tokens, system and messages.

    Params the simulator cannot answer make the line ``invalid``: it errors without running.
    """
    if not isinstance(params, dict):
        return BatchLine(custom_id, b"", "params: Input should be an object")
    model, max_tokens = params.get("model"), params.get("max_tokens")
    messages, system = params.get("messages"), params.get("system")
    if not isinstance(model, str) or not model:
        return BatchLine(custom_id, b"", "params.model: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return BatchLine(custom_id, b"", "params.max_tokens: Input should be an integer >= 1")
    if not isinstance(messages, list) or not messages:
        return BatchLine(custom_id, b"", "params.messages: Input should be a non-empty list")
    if params.get("stream"):
        return BatchLine(custom_id, b"", "params.stream: streaming is not supported in batches")
    chat_messages: list[Any] = []
    if isinstance(system, str | list):
        # A list of text blocks reads like an OpenAI content-part list, so it passes as is.
        chat_messages.append({"role": "system", "content": system})
    elif system is not None:
        return BatchLine(custom_id, b"", "params.system: Input should be a string or a list")
    chat_messages.extend(messages)
    body = {"model": model, "messages": chat_messages, "max_tokens": max_tokens}
    return BatchLine(custom_id, json.dumps(body).encode())


def result_from_answer(result: LineResult) -> dict[str, Any]:
    """The ``result`` of one results line: a succeeded message or an errored error response."""
    if result.succeeded:
        return {"type": "succeeded", "message": _message(result.body)}
    error = result.body.get("error", {})
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    if isinstance(error, dict) and error.get("code") == "context_length_exceeded":
        message = f"prompt is too long: {message}"
    error_type = _ERROR_TYPES.get(result.status_code, "invalid_request_error")
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": result.request_id,
        },
    }


def _message(body: dict[str, Any]) -> dict[str, Any]:
    choice = body["choices"][0]
    usage = body["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return {
        "id": f"msg_{os.urandom(12).hex()}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": choice["message"]["content"]}],
        "stop_reason": _STOP_REASONS.get(choice["finish_reason"], "end_turn"),
        "stop_sequence": None,
        "usage": {
            # Anthropic's input_tokens leaves out the tokens read from the cache.
            "input_tokens": usage["prompt_tokens"] - cached,
            "output_tokens": usage["completion_tokens"],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
        },
    }
