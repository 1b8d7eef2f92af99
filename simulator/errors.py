"""OpenAI-style error bodies, one function per error the simulator answers."""

from __future__ import annotations

from .headers import format_go_duration
from .http_server import Response, json_response

_SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def error_response(
    status: int,
    message: str,
    error_type: str,
    code: str | None = None,
    param: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """A response with body ``{"error": {message, type, param, code}}``."""
    error = {"message": message, "type": error_type, "param": param, "code": code}
    return json_response(status, {"error": error}, headers)


def invalid_request(message: str, param: str | None = None) -> Response:
    """400 invalid_request_error."""
    return error_response(400, message, "invalid_request_error", "invalid_request_error", param)


def invalid_api_key() -> Response:
    """401 for a missing or wrong key; the key itself is never echoed."""
    return error_response(
        401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
    )


def model_not_found(model: str) -> Response:
    """404 for a model this simulator does not serve."""
    message = f"The model `{model}` does not exist or you do not have access to it."
    return error_response(404, message, "invalid_request_error", "model_not_found", "model")


def route_not_found(method: str, path: str) -> Response:
    """404 for an unknown endpoint."""
    return error_response(404, f"Invalid URL ({method} {path})", "invalid_request_error")


def context_length_exceeded(context_tokens: int, prompt_tokens: int) -> Response:
    """400 context_length_exceeded."""
    message = (
        f"This model's maximum context length is {context_tokens} tokens. "
        f"However, your messages resulted in {prompt_tokens} tokens."
    )
    return error_response(
        400, message, "invalid_request_error", "context_length_exceeded", "messages"
    )


def server_error(status: int) -> Response:
    """A 5xx with a server_error body."""
    return error_response(status, _SERVER_ERROR_MESSAGE, "server_error")


def request_timeout() -> Response:
    """408 as a provider's gateway sends it."""
    return error_response(408, "Request timed out.", "timeout")


def insufficient_quota() -> Response:
    """429 insufficient_quota: not retryable, unlike rate_limit_exceeded."""
    message = "You exceeded your current quota, please check your plan and billing details."
    return error_response(429, message, "insufficient_quota", "insufficient_quota")


def rate_limited(
    model: str, limited_by: str, limit: int | None, requested: int, wait_s: float
) -> Response:
    """429 rate_limit_exceeded from the limiter, worded like OpenAI's."""
    unit = "RPM" if limited_by == "requests" else "TPM"
    where = f"Rate limit reached for {model} on {limited_by} per min ({unit})"
    message = (
        f"{where}: Limit {limit}, Requested {requested}. "
        f"Please try again in {format_go_duration(wait_s)}."
    )
    return error_response(429, message, limited_by, "rate_limit_exceeded")


def request_too_large(model: str, limit: int | None, requested: int) -> Response:
    """429 for a call whose token charge exceeds the TPM limit itself, as OpenAI answers."""
    message = (
        f"Request too large for {model} on tokens per min (TPM): Limit {limit}, "
        f"Requested {requested}. The input or output tokens must be reduced in order to "
        "run successfully."
    )
    return error_response(429, message, "tokens", "rate_limit_exceeded")


def injected_rate_limit(model: str) -> Response:
    """429 rate_limit_exceeded from an injected fault or storm, not from the limiter."""
    message = f"Rate limit reached for {model} on requests per min (RPM). Please try again later."
    return error_response(429, message, "requests", "rate_limit_exceeded")
