"""Checks one line against the input rules (docs/concepts.md) and routes it; refusals say why."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from corral.config import ModelConfig
from corral.stored_job import stored_job
from corral.tokens import estimate_prompt_tokens, requested_output_tokens
from producer.reader import RawLine
from producer.router import RouteDecision, Router, UnknownModelError
from producer.seen_ids import SeenIds

CHAT_COMPLETIONS_URL = "/v1/chat/completions"
MAX_CUSTOM_ID_CHARS = 256
# Deeper JSON is refused: no request needs it (a response_format schema is a few dozen levels),
# and everything after the parse (routing, storing, sending) walks the body recursively.
MAX_NESTING = 64
# Roles whose message must have content; an assistant message may carry only tool_calls.
CONTENT_REQUIRED_ROLES = frozenset({"system", "developer", "user", "tool"})


@dataclass(frozen=True)
class AcceptedLine:
    """A valid line, routed: `body.model` already holds the upstream id."""

    number: int
    custom_id: str
    model: ModelConfig
    route: RouteDecision
    body: dict[str, Any]
    prompt_tokens: int
    reservation_tokens: int

    def job(self) -> str:
        """What a worker needs to run the line (stored in Redis, never in a task message)."""
        return stored_job(tokens=self.reservation_tokens, model=self.model.name,
                          default_max_tokens=self.model.default_max_tokens, body=self.body,
                          route=self.route.as_dict(), line=self.number)


@dataclass(frozen=True)
class RejectedLine:
    """An invalid line: where, why, and its custom_id when it had a usable one."""

    number: int
    reason: str
    custom_id: str | None = None

    @property
    def record_id(self) -> str:
        """The id its error record is filed under: its custom_id, else `line-N`."""
        return self.custom_id or f"line-{self.number}"


class LineRejected(Exception):
    """Raised inside validation; becomes a RejectedLine."""


class LineValidator:
    """Validates the lines of one file in order; remembers custom_ids to refuse repeats."""

    def __init__(self, router: Router, seen_ids: SeenIds) -> None:
        self._router = router
        self._seen_ids = seen_ids

    def check(self, raw: RawLine) -> AcceptedLine | RejectedLine:
        """Validate and route one line."""
        checked = check_line(self._router, raw)
        if isinstance(checked, AcceptedLine) and not self._seen_ids.add(checked.custom_id,
                                                                         raw.offset):
            return duplicate(raw.number, checked.custom_id)
        return checked


def check_line(router: Router, raw: RawLine) -> AcceptedLine | RejectedLine:
    """Validate and route one line on its own (whether its custom_id came before is the
    caller's to ask: `SeenIds`)."""
    custom_id: str | None = None
    try:
        line = _parse_object(raw.data)
        custom_id = _check_custom_id(line.get("custom_id"))
        return _check_request(router, raw.number, custom_id, line)
    except LineRejected as err:
        return RejectedLine(raw.number, str(err), custom_id)


def duplicate(number: int, custom_id: str) -> RejectedLine:
    """The refusal of a line whose custom_id an earlier line has: the repeat is the bad line,
    so it is filed under its line number (its record must not collide with the first's)."""
    return RejectedLine(number, f"duplicate custom_id {custom_id!r}")


def _check_request(router: Router, number: int, custom_id: str,
                   line: dict[str, Any]) -> AcceptedLine:
    if line.get("method") != "POST":
        raise LineRejected(f"method must be \"POST\", got {line.get('method')!r}")
    url = line.get("url")
    if url != CHAT_COMPLETIONS_URL:
        raise LineRejected(f"url must be {CHAT_COMPLETIONS_URL!r}, got {url!r}")
    body = line.get("body")
    if not isinstance(body, dict):
        raise LineRejected("body must be a JSON object")
    _check_body(body)
    metadata = line.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise LineRejected("metadata must be a JSON object")
    try:
        model, route = router.route(body, metadata)
    except UnknownModelError as err:
        raise LineRejected(str(err)) from None
    prompt_tokens = estimate_prompt_tokens(body)
    if prompt_tokens > model.context_window:
        raise LineRejected(
            f"prompt of about {prompt_tokens} tokens exceeds the {model.context_window}-token "
            f"context window of {model.name}")
    # reservation_tokens(body, …), without estimating the prompt a second time.
    reservation = prompt_tokens + requested_output_tokens(body, model.default_max_tokens)
    if reservation > model.tpm:
        raise LineRejected(
            f"request needs {reservation} tokens (prompt + max_tokens × n) but {model.name} "
            f"allows only {model.tpm} tokens per minute: it could never run")
    return AcceptedLine(number, custom_id, model, route, {**body, "model": model.upstream},
                        prompt_tokens, reservation)


def _parse_object(data: bytes) -> dict[str, Any]:
    """One line's JSON object, strictly: valid UTF-8, no key twice in one object, no lone
    surrogate escape, at most MAX_NESTING levels deep."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LineRejected(f"invalid UTF-8 at byte {err.start}") from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise LineRejected(f"malformed JSON: {err.msg} at column {err.colno}") from None
    except RecursionError:
        raise LineRejected(f"nested too deeply (more than {MAX_NESTING} levels)") from None
    if not isinstance(value, dict):
        raise LineRejected(f"expected a JSON object, got {type(value).__name__}")
    # Cheap tests first: deep nesting needs that many brackets, a lone surrogate a \ud escape.
    if text.count("{") + text.count("[") > MAX_NESTING and _depth(value) > MAX_NESTING:
        raise LineRejected(f"nested too deeply (more than {MAX_NESTING} levels)")
    if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(value):
        raise LineRejected("a string holds a lone UTF-16 surrogate (an unpaired \\ud800-"
                           "\\udfff escape), which is not Unicode text and no provider "
                           "accepts")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: the object, refusing a key given twice (which value counts would
    be a guess: Python keeps the last, some parsers the first)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise LineRejected(f"duplicate key {key!r} in one JSON object")
            seen.add(key)
    return value


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value`, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string in `value` (keys included) holds an unpaired UTF-16 surrogate."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_custom_id(value: Any) -> str:
    if value is None:
        raise LineRejected("missing custom_id")
    if not isinstance(value, str) or not value:
        raise LineRejected("custom_id must be a non-empty string")
    if len(value) > MAX_CUSTOM_ID_CHARS:
        raise LineRejected(f"custom_id is longer than {MAX_CUSTOM_ID_CHARS} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise LineRejected("custom_id contains control characters")
    return value


def _check_body(body: dict[str, Any]) -> None:
    if "model" not in body:
        raise LineRejected("body.model is missing (a configured model, an alias, or \"auto\")")
    if body.get("stream") is True:
        raise LineRejected("body.stream = true is not supported in a batch")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise LineRejected("body.messages must be a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise LineRejected(f"body.messages[{index}] must be an object with a role")
        if message.get("content") is None and message["role"] in CONTENT_REQUIRED_ROLES:
            raise LineRejected(f"body.messages[{index}] ({message['role']}) has no content "
                               "(null or missing); only an assistant message with tool_calls "
                               "may omit it")
    for field in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise LineRejected(f"body.{field} must be a positive integer")
