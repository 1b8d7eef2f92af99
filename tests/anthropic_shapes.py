"""OpenAI chat bodies and Anthropic messages as the translation tests write them."""

from __future__ import annotations

from typing import Any

from corral.anthropic_messages import to_messages_params

MODEL = "claude-opus-4-6"
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
           "AAAABJRU5ErkJggg==")


def params(body: dict[str, Any], default_max_tokens: int = 1024) -> dict[str, Any]:
    return to_messages_params(body, model=MODEL, default_max_tokens=default_max_tokens)


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-opus-4.6", "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def anthropic_message(content: list[dict[str, Any]], stop_reason: str = "end_turn",
                      **usage: Any) -> dict[str, Any]:
    return {"id": "msg_01XYZ", "type": "message", "role": "assistant", "model": MODEL,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 7, **usage}}
