"""What a chat completion answers, shared by the live endpoint and the batch lanes."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

from . import errors
from .completions import (
    chat_completion_body,
    count_prompt_tokens,
    make_choices,
    message_texts,
    messages_digest,
)
from .config import ModelSpec
from .faults import SCRIPT_PREFIX, Fault
from .http_server import Response
from .validation import ChatRequest, InvalidRequest, parse_chat_request

if TYPE_CHECKING:
    from .state import SimState


@dataclasses.dataclass(frozen=True)
class AdmittedChat:
    """A chat request that parsed, names a served model and fits its context window."""

    chat: ChatRequest
    spec: ModelSpec
    prompt_tokens: int
    digest: bytes


@dataclasses.dataclass(frozen=True)
class Refused:
    """A chat request answered with an error before any completion was made."""

    response: Response
    model: str | None  # the served model's name, None if the call never got that far


@dataclasses.dataclass(frozen=True)
class ChatAnswer:
    """One complete answer: HTTP status, JSON body, and the usage it bills."""

    status_code: int
    body: dict[str, Any]
    model: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def admit_chat(state: SimState, body: bytes) -> AdmittedChat | Refused:
    """Parse ``body``, resolve its model and check the prompt against the context window."""
    try:
        chat = parse_chat_request(body)
    except InvalidRequest as err:
        return Refused(errors.invalid_request(err.message, err.param), None)
    spec = state.resolve_model(chat.model)
    if spec is None:
        return Refused(errors.model_not_found(chat.model), None)
    prompt_tokens = count_prompt_tokens(chat.messages)
    if prompt_tokens > spec.context_tokens:
        refusal = errors.context_length_exceeded(spec.context_tokens, prompt_tokens)
        return Refused(refusal, spec.name)
    return AdmittedChat(chat, spec, prompt_tokens, messages_digest(chat.messages))


def scripted_fault(state: SimState, body: bytes, admitted: AdmittedChat) -> Fault | None:
    """The fault a ``[[sim:…]]`` marker in the messages asks for, if any."""
    # The byte check skips joining message text on the hot path; markers survive JSON as-is.
    if SCRIPT_PREFIX.encode() not in body:
        return None
    text = "\n".join(message_texts(admitted.chat.messages))
    return state.scripted.check(text, admitted.digest)


def fault_error(fault: Fault, spec: ModelSpec) -> Response:
    """The error response for a non-hang fault, without rate-limit headers."""
    if fault.kind == "rate_limit":
        return errors.injected_rate_limit(spec.name)
    if fault.kind == "quota":
        return errors.insufficient_quota()
    if fault.kind == "timeout":
        return errors.request_timeout()
    if fault.kind == "bad_request":
        return errors.invalid_request("Scripted invalid request.")
    if fault.kind == "auth":
        return errors.invalid_api_key()
    return errors.server_error(fault.status)


def complete(state: SimState, admitted: AdmittedChat) -> ChatAnswer:
    """Make the completion: deterministic choices, cached prompt tokens, the 200 body."""
    chat = admitted.chat
    choices = make_choices(admitted.digest, chat.n, chat.max_tokens)
    completion_tokens = sum(choice.completion_tokens for choice in choices)
    cached_tokens = state.prompt_cache.cached_tokens(chat.messages)
    body = chat_completion_body(chat.model, choices, admitted.prompt_tokens, cached_tokens,
                                chat.service_tier)
    return ChatAnswer(200, body, admitted.spec.name, admitted.prompt_tokens, completion_tokens)


def answer_offline(state: SimState, body: bytes) -> ChatAnswer:
    """Answer a chat body for a batch lane: the live checks and completion, no limits.

    Batch lines skip the live rate limiter, random faults, storms and latency (a provider
    queues them apart), but keep validation, context windows and scripted markers; a
    scripted hang is answered as a 500, since a batch line cannot hang a connection.
    """
    admitted = admit_chat(state, body)
    if isinstance(admitted, Refused):
        return _error_answer(admitted.response, admitted.model)
    fault = scripted_fault(state, body, admitted)
    if fault is not None:
        hang = fault.kind == "hang"
        response = errors.server_error(500) if hang else fault_error(fault, admitted.spec)
        return _error_answer(response, admitted.spec.name)
    return complete(state, admitted)


def _error_answer(response: Response, model: str | None) -> ChatAnswer:
    return ChatAnswer(response.status, json.loads(response.body), model)


def new_request_id() -> str:
    """A request id shaped like OpenAI's ``x-request-id``."""
    return f"req_{os.urandom(16).hex()}"
