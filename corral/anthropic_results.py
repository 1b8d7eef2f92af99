"""Anthropic Message Batches results as the OpenAI-shaped bodies corral writes: a succeeded
message as a chat.completion, an errored, canceled or expired one as an OpenAI-style error.

Pure functions, no network (the requests go out through corral/anthropic_messages.py).
"""

from __future__ import annotations

import json
from typing import Any

from corral.errors import InvalidResponseError

JSON = dict[str, Any]

_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                   "model_context_window_exceeded": "length", "tool_use": "tool_calls",
                   "refusal": "content_filter"}
# Thinking blocks come back only when thinking is asked for, which translation never does;
# should one appear, it is not part of the answer OpenAI would give.
_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def to_chat_completion(message: JSON, *, custom_id: str | None = None, created: int) -> JSON:
    """An Anthropic `message` (a succeeded batch result) as an OpenAI chat.completion body.

    `usage.prompt_tokens` counts every input token (uncached + cache writes + cache reads);
    `prompt_tokens_details.cached_tokens` is the cache reads, and the Anthropic figures
    `cache_creation_input_tokens`, `cache_read_input_tokens` (and `cache_creation`, its 5-minute
    and 1-hour split, when given) stay in `usage` so cache writes can be priced.

    Args:
        message: the `result.message` object of a succeeded result.
        custom_id: the line's id, named in errors.
        created: Unix seconds for `created` (Anthropic messages carry no timestamp).

    Raises:
        InvalidResponseError: a block or stop reason with no OpenAI equivalent, or no usage.
    """
    line = f" (line {custom_id})" if custom_id else ""
    texts: list[str] = []
    tool_calls: list[JSON] = []
    blocks = message.get("content")
    if not isinstance(blocks, list):
        raise InvalidResponseError(f"Anthropic message without content{line}", body=message)
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use" and isinstance(block.get("id"), str) \
                and isinstance(block.get("name"), str):
            tool_calls.append({"id": block["id"], "type": "function",
                               "function": {"name": block["name"],
                                            "arguments": json.dumps(block.get("input") or {},
                                                                    ensure_ascii=False)}})
        elif kind not in _SKIPPED_BLOCKS:
            raise InvalidResponseError(f"Anthropic content block {kind!r} has no OpenAI "
                                       f"equivalent{line}", body=message)
    stop_reason = message.get("stop_reason")
    if stop_reason not in _FINISH_REASONS:
        raise InvalidResponseError(f"Anthropic stop_reason {stop_reason!r} has no OpenAI "
                                   f"finish_reason{line}", body=message)
    reply: JSON = {"role": "assistant", "content": "".join(texts) if texts else None,
                   "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return {
        "id": message.get("id") or f"msg-{custom_id or 'unknown'}",
        "object": "chat.completion",
        "created": created,
        "model": str(message.get("model") or ""),
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": _FINISH_REASONS[stop_reason]}],
        "usage": _usage(message.get("usage"), line, message),
    }


def _usage(usage: Any, line: str, message: JSON) -> JSON:
    if not isinstance(usage, dict):
        raise InvalidResponseError(f"Anthropic message without usage{line}", body=message)
    fresh = int(usage.get("input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    read = int(usage.get("cache_read_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    prompt = fresh + written + read
    out: JSON = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": read},
                 "cache_creation_input_tokens": written, "cache_read_input_tokens": read}
    if isinstance(usage.get("cache_creation"), dict):
        out["cache_creation"] = dict(usage["cache_creation"])
    return out


# Anthropic error type → (HTTP status, corral error-record code). The statuses are Anthropic's
# own, so corral's classify_failure reads the pair as it would a live answer.
_ERRORS = {
    "invalid_request_error": (400, "invalid_request"),
    "authentication_error": (401, "authentication_error"),
    "billing_error": (402, "insufficient_quota"),
    "permission_error": (403, "authentication_error"),
    "not_found_error": (404, "invalid_request"),
    "request_too_large": (413, "invalid_request"),
    "rate_limit_error": (429, "rate_limit_exhausted"),
    "api_error": (500, "server_error_exhausted"),
    "timeout_error": (504, "timeout_exhausted"),
    "overloaded_error": (529, "server_error_exhausted"),
}
# No HTTP exchange happened for these lines; the statuses are conventions: 408 (the window
# passed first: worth running again, live) and 499 (nginx's "client closed request").
_NOT_RUN = {
    "expired": (408, "batch_expired", "The request was not run before the batch expired."),
    "canceled": (499, "batch_cancelled", "The request was not run: the batch was cancelled."),
}


def to_openai_error(result: JSON) -> tuple[int, JSON]:
    """An errored, canceled or expired batch result as (status, OpenAI-style error body).

    The body is `{"error": {"message", "type", "code"}}`: `type` is Anthropic's error type (or
    the result type for canceled/expired), `code` the error-record code corral writes:
    `context_length_exceeded` for a prompt too long, `batch_cancelled`, `batch_expired`, or per
    `_ERRORS`. An unknown error type is a server error (500).

    Args:
        result: the `result` object of one results line (the whole line is accepted too).

    Raises:
        ValueError: a succeeded result, which `to_chat_completion` translates.
        InvalidResponseError: a result type this module does not know.
    """
    if "type" not in result and isinstance(result.get("result"), dict):
        result = result["result"]
    kind = result.get("type")
    if kind in _NOT_RUN:
        status, code, message = _NOT_RUN[kind]
        return status, {"error": {"message": message, "type": kind, "code": code}}
    if kind == "succeeded":
        raise ValueError("a succeeded result is not an error: use to_chat_completion")
    if kind != "errored":
        raise InvalidResponseError(f"unknown Anthropic batch result type {kind!r}", body=result)
    error = result.get("error") or {}
    if isinstance(error.get("error"), dict):  # ErrorResponse {"type": "error", "error": {...}}
        error = error["error"]
    error_type = str(error.get("type") or "api_error")
    message = str(error.get("message") or error_type)
    status, code = _ERRORS.get(error_type, (500, "server_error_exhausted"))
    if error_type == "invalid_request_error" and "prompt is too long" in message.lower():
        code = "context_length_exceeded"
    return status, {"error": {"message": message, "type": error_type, "code": code}}
