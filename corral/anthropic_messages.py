"""OpenAI chat-completion bodies to Anthropic Messages params (results come back through
corral/anthropic_results.py).

Pure functions, no network: the lane that sends lines to Anthropic's Message Batches uses them
to build each request's `params`. It lives in `corral/` because both sides need it: the
producer, to know at planning time which lines can go to the batch lane at all, and the
workers, to send them.

Translated: system/developer messages (to top-level `system` text blocks, in order, wherever
they stood), user/assistant turns (consecutive same-role turns merged), text and image parts
(`data:` URLs to base64 sources, http(s) URLs to url sources), `max_completion_tokens` /
`max_tokens` (else the model's default), `temperature` (clamped to Anthropic's 0–1: values up to
1 mean the same in both APIs, 1 being the unmodified distribution; 1–2 become 1), `top_p`,
`stop`, tools and `tool_choice`, `parallel_tool_calls: false`, assistant `tool_calls`, `tool`
messages (to `tool_result` blocks in a user turn), `user` / `safety_identifier` (to
`metadata.user_id`), and `cache_control` on text and image parts (passed through).

Dropped because dropping is harmless: `model` (replaced by the routed model), `store`,
`metadata` and `prompt_cache_key` (OpenAI-side storage and routing), `service_tier` (the batch
lane is its own tier), `stream_options`, an image part's `detail`, a tool's `strict: false`,
`top_p: 1`, and parameters at their no-op value: `n: 1`, `stream: false`, `logprobs: false`,
`presence_penalty: 0`, `frequency_penalty: 0`, `logit_bias: {}`, `response_format: text`,
`modalities: ["text"]`, `parallel_tool_calls: true`. A null value is an absent parameter.

Refused (UntranslatableRequest; the line stays on the live lane): any other value of those, and
`seed`, `top_logprobs`, `reasoning_effort`, `verbosity`, `audio`, `prediction`,
`web_search_options`, `functions` / `function_call`, `response_format` json_object/json_schema,
`strict: true` tools, non-function tools, `allowed_tools` tool choice, a message `name`, audio
and file parts, images outside user turns, whitespace-only stop sequences (Anthropic rejects
them), `temperature` together with `top_p` (recent Claude models accept only one), a
conversation that does not open with a user turn or that ends with an assistant turn (Anthropic
would continue it as a prefill), and any parameter this module does not know.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from corral.errors import CorralError

JSON = dict[str, Any]

# Anthropic accepts these image types as base64 sources.
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.+)$", re.DOTALL)


class UntranslatableRequest(CorralError):
    """A request the Messages API cannot express faithfully: keep the line on the live lane.

    Attributes:
        parameter: where in the body, e.g. `logprobs` or `messages[2].content[0].type`.
        reason: why it cannot be translated.
    """

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


# Parameters dropped whatever their value, and those dropped only at their no-op value.
_ALWAYS_DROPPED = frozenset({"model", "store", "metadata", "prompt_cache_key", "service_tier",
                             "stream_options"})
_NO_OP: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v == 1,
    "stream": lambda v: v is False,
    "logprobs": lambda v: v is False,
    "presence_penalty": lambda v: v == 0,
    "frequency_penalty": lambda v: v == 0,
    "logit_bias": lambda v: v == {},
    "response_format": lambda v: v == {"type": "text"},
    "modalities": lambda v: v == ["text"],
}
_HANDLED = frozenset({"messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                      "stop", "tools", "tool_choice", "parallel_tool_calls", "user",
                      "safety_identifier"})
_REASONS = {
    "n": "Anthropic returns one choice per request",
    "logprobs": "Anthropic returns no log probabilities",
    "top_logprobs": "Anthropic returns no log probabilities",
    "logit_bias": "Anthropic has no logit bias",
    "presence_penalty": "Anthropic has no presence penalty",
    "frequency_penalty": "Anthropic has no frequency penalty",
    "seed": "Anthropic has no seed",
    "response_format": "only text output translates (no JSON mode or schema)",
    "stream": "a batch line cannot stream",
    "modalities": "only text output translates",
}


def to_messages_params(body: JSON, *, model: str, default_max_tokens: int) -> JSON:
    """An OpenAI chat-completion body as Anthropic Messages `params`.

    Args:
        body: the line's `body`, as the user wrote it.
        model: the Anthropic model id to send (the routed model's `upstream`).
        default_max_tokens: `max_tokens` when the body sets none (Anthropic requires one).

    Returns:
        The params of one Message Batches request (a fresh dict; `body` is not changed).

    Raises:
        UntranslatableRequest: a parameter Anthropic cannot honour (see the module docstring).
    """
    for key, value in body.items():
        if value is None or key in _ALWAYS_DROPPED or key in _HANDLED:
            continue
        if key in _NO_OP and _NO_OP[key](value):
            continue
        raise UntranslatableRequest(key, _REASONS.get(key, "not supported by the Messages API"))
    system, messages = _conversation(body.get("messages"))
    params: JSON = {"model": model, "max_tokens": _max_tokens(body, default_max_tokens)}
    if system:
        params["system"] = system
    params["messages"] = messages
    params.update(_sampling(body))
    params.update(_tools(body))
    user_id = body.get("safety_identifier") or body.get("user")
    if user_id is not None:
        params["metadata"] = {"user_id": str(user_id)}
    return params


def _max_tokens(body: JSON, default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UntranslatableRequest(key, "must be a positive integer")
        return value
    return default


def _sampling(body: JSON) -> JSON:
    out: JSON = {}
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if top_p == 1:
        top_p = None  # no-op nucleus: dropping it lets temperature stand alone
    if temperature is not None and top_p is not None:
        raise UntranslatableRequest("top_p", "recent Claude models accept temperature or top_p, "
                                             "not both")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) \
                or not 0 <= temperature <= 2:
            raise UntranslatableRequest("temperature", "must be a number from 0 to 2")
        out["temperature"] = min(temperature, 1)
    if top_p is not None:
        out["top_p"] = top_p
    stop = body.get("stop")
    if stop is not None:
        sequences = [stop] if isinstance(stop, str) else stop
        if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
            raise UntranslatableRequest("stop", "must be a string or a list of strings")
        if any(not s.strip() for s in sequences):
            raise UntranslatableRequest("stop", "Anthropic rejects empty or whitespace-only "
                                                "stop sequences")
        if sequences:
            out["stop_sequences"] = sequences
    return out


def _tools(body: JSON) -> JSON:
    tools, choice = body.get("tools"), body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise UntranslatableRequest("tool_choice", "names a tool choice but the request "
                                                       "has no tools")
        return {}
    if not isinstance(tools, list):
        raise UntranslatableRequest("tools", "must be a list")
    out: JSON = {"tools": [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]}
    if choice is not None:
        out["tool_choice"] = _tool_choice(choice)
    if parallel is False and out.get("tool_choice", {}).get("type") != "none":
        out["tool_choice"] = {**out.get("tool_choice", {"type": "auto"}),
                              "disable_parallel_tool_use": True}
    return out


def _tool(tool: Any, where: str) -> JSON:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise UntranslatableRequest(f"{where}.type", "only function tools translate")
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise UntranslatableRequest(f"{where}.function", "needs a name")
    if function.get("strict"):
        raise UntranslatableRequest(f"{where}.function.strict",
                                    "schema-guaranteed arguments do not translate")
    out: JSON = {"name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: Any) -> JSON:
    named = {"none": "none", "auto": "auto", "required": "any"}
    if isinstance(choice, str) and choice in named:
        return {"type": named[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str):
            return {"type": "tool", "name": name}
    raise UntranslatableRequest("tool_choice", "only none, auto, required or one named "
                                               "function translate")


def _conversation(raw: Any) -> tuple[list[JSON], list[JSON]]:
    """(system text blocks, user/assistant turns with same-role neighbours merged)."""
    if not isinstance(raw, list) or not raw:
        raise UntranslatableRequest("messages", "must be a non-empty list")
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise UntranslatableRequest(where, "must be an object")
        if message.get("name") is not None:
            raise UntranslatableRequest(f"{where}.name", "Anthropic messages have no name")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(message.get("content"), f"{where}.content", images=False))
        elif role == "user":
            _append(turns, "user", _parts(message.get("content"), f"{where}.content",
                                          images=True), where)
        elif role == "assistant":
            _append(turns, "assistant", _assistant(message, where), where)
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, where)], where)
        else:
            raise UntranslatableRequest(f"{where}.role", f"role {role!r} does not translate")
    if not turns or turns[0]["role"] != "user":
        raise UntranslatableRequest("messages", "Anthropic's conversation opens with a user "
                                                "turn")
    if turns[-1]["role"] != "user":
        raise UntranslatableRequest("messages", "ends with an assistant turn, which Anthropic "
                                                "would continue rather than answer")
    return system, turns


def _append(turns: list[JSON], role: str, blocks: list[JSON], where: str) -> None:
    if not blocks:
        raise UntranslatableRequest(f"{where}.content", "is empty")
    if turns and turns[-1]["role"] == role:
        previous = turns[-1]["content"]
        # Anthropic wants a user turn's tool results before any other content.
        if blocks[0]["type"] == "tool_result" and previous[-1]["type"] != "tool_result":
            raise UntranslatableRequest(where, "a tool result follows user content")
        previous.extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _parts(content: Any, where: str, *, images: bool) -> list[JSON]:
    """Text (and, where allowed, image) blocks from a string or a list of content parts."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise UntranslatableRequest(where, "must be a string or a list of parts")
    blocks = []
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if not part["text"]:
                continue  # Anthropic rejects empty text blocks; an empty part says nothing
            block: JSON = {"type": "text", "text": part["text"]}
        elif kind == "image_url" and images:
            block = {"type": "image", "source": _image_source(part.get("image_url"), here)}
        else:
            raise UntranslatableRequest(f"{here}.type", f"a {kind!r} part does not translate "
                                                        "here")
        if part.get("cache_control") is not None:
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _image_source(image_url: Any, where: str) -> JSON:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise UntranslatableRequest(f"{where}.image_url", "needs a url")
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    match = _DATA_URL.match(url)
    if match is None:
        raise UntranslatableRequest(f"{where}.image_url", "only http(s) and base64 data: URLs "
                                                          "translate")
    if match["media"] not in IMAGE_MEDIA_TYPES:
        raise UntranslatableRequest(f"{where}.image_url",
                                    f"Anthropic does not take {match['media']} images")
    return {"type": "base64", "media_type": match["media"], "data": match["data"]}


def _assistant(message: JSON, where: str) -> list[JSON]:
    for key in ("function_call", "audio", "refusal"):
        if message.get(key) is not None:
            raise UntranslatableRequest(f"{where}.{key}", "does not translate")
    content = message.get("content")
    blocks = [] if content is None else _parts(content, f"{where}.content", images=False)
    for k, call in enumerate(message.get("tool_calls") or []):
        here = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise UntranslatableRequest(here, "only function calls translate")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            arguments = None
        if not isinstance(arguments, dict):
            raise UntranslatableRequest(f"{here}.function.arguments", "must be a JSON object")
        if not isinstance(call.get("id"), str) or not isinstance(function.get("name"), str):
            raise UntranslatableRequest(here, "needs an id and a function name")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"],
                       "input": arguments})
    return blocks


def _tool_result(message: JSON, where: str) -> JSON:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str):
        raise UntranslatableRequest(f"{where}.tool_call_id", "is required")
    block: JSON = {"type": "tool_result", "tool_use_id": tool_call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = _parts(content, f"{where}.content", images=False)
        if parts:
            block["content"] = parts
    return block
