"""POST /v1/chat/completions: validate, inject faults, rate-limit, delay, answer."""

from __future__ import annotations

import asyncio
import math

from . import errors
from .chat_core import (
    AdmittedChat,
    Refused,
    admit_chat,
    complete,
    fault_error,
    new_request_id,
    scripted_fault,
)
from .config import ModelSpec
from .faults import Fault
from .headers import rate_limit_headers, retry_after_headers
from .http_server import Request, Response, json_response
from .limiters import RateLimiter
from .state import SimState


async def handle_chat(state: SimState, request: Request) -> Response:
    """Answer one chat completion call and count it in the stats."""
    arrived_ms = state.stats.record_arrival()
    response, model = await _answer(state, request)
    response.headers.append(("x-request-id", new_request_id()))
    state.stats.record_call(None if response.hang else response.status, model, arrived_ms)
    return response


async def _answer(state: SimState, request: Request) -> tuple[Response, str | None]:
    """The response and the served model's name (None if the call never got that far)."""
    if not state.authorized(request.headers):
        return errors.invalid_api_key(), None
    admitted = admit_chat(state, request.body)
    if isinstance(admitted, Refused):
        return admitted.response, admitted.model
    chat, spec = admitted.chat, admitted.spec
    now_s = state.now_s()
    limiter = state.limiter(spec)
    fault = _pick_fault(state, request, admitted, now_s)
    if fault is not None:
        return _fault_response(fault, spec, limiter, now_s), spec.name
    charged_tokens = admitted.prompt_tokens + (chat.max_tokens or spec.default_max_tokens) * chat.n
    headers: list[tuple[str, str]] = []
    if limiter is not None:
        decision = limiter.try_acquire(1, charged_tokens, now_s)
        headers = rate_limit_headers(limiter.snapshot(now_s))
        if not decision.allowed:
            return _limited_response(
                state, spec, limiter, decision.limited_by, decision.wait_s, charged_tokens, headers
            ), spec.name
    state.stats.record_admission(spec.name, now_s * 1000, charged_tokens)
    answer = complete(state, admitted)
    delay_s = state.random_faults.latency_s(state.faults, answer.completion_tokens)
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    state.stats.record_served(spec.name, answer.prompt_tokens, answer.completion_tokens)
    return json_response(200, answer.body, headers), spec.name


def _pick_fault(
    state: SimState, request: Request, admitted: AdmittedChat, now_s: float
) -> Fault | None:
    """Scripted markers first, then a storm on the model, then the random draw."""
    fault = scripted_fault(state, request.body, admitted)
    if fault is not None:
        return fault
    fault = state.storms.check(admitted.chat.model, now_s)
    if fault is not None:
        return fault
    return state.random_faults.draw(state.faults)


def _fault_response(
    fault: Fault, spec: ModelSpec, limiter: RateLimiter | None, now_s: float
) -> Response:
    if fault.kind == "hang":
        return Response(status=0, hang=True)
    headers = rate_limit_headers(limiter.snapshot(now_s)) if limiter is not None else []
    if fault.kind == "rate_limit":
        headers.extend(retry_after_headers(fault.retry_after_ms))
    response = fault_error(fault, spec)
    response.headers.extend(headers)
    return response


def _limited_response(
    state: SimState,
    spec: ModelSpec,
    limiter: RateLimiter,
    limited_by: str | None,
    wait_s: float,
    charged_tokens: int,
    headers: list[tuple[str, str]],
) -> Response:
    if math.isinf(wait_s):
        # Too large for the TPM limit ever to admit: hint a full period, like a provider would.
        limit = limiter.tokens.limit if limiter.tokens else None
        response = errors.request_too_large(spec.name, limit, charged_tokens)
        wait_ms = math.ceil(state.config.period_s * 1000)
    else:
        meter = limiter.requests if limited_by == "requests" else limiter.tokens
        requested = 1 if limited_by == "requests" else charged_tokens
        limit = meter.limit if meter else None
        response = errors.rate_limited(
            spec.name, limited_by or "requests", limit, requested, wait_s
        )
        # Rounded up so a client that waits exactly this long finds room.
        wait_ms = max(1, math.ceil(round(wait_s * 1000, 6)))
    response.headers.extend(headers)
    response.headers.extend(retry_after_headers(wait_ms))
    return response
