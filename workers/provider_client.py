"""Calls a provider's OpenAI-compatible chat completions over a shared httpx.Client."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from corral.api_keys import read_api_key
from corral.config import ProviderConfig
from corral.errors import (
    AuthenticationError,
    ConnectionLostError,
    ContextLengthExceededError,
    InsufficientQuotaError,
    InvalidRequestError,
    InvalidResponseError,
    ProviderError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
)
from workers.backoff import parse_retry_after_s

# OpenAI logs this header with the request (ASCII, at most 512 characters): the id corral's
# ledger keeps for each call, to match it with the provider's usage export.
CLIENT_REQUEST_ID_HEADER = "X-Client-Request-Id"


@dataclass(frozen=True)
class Completion:
    """A 2xx answer: the chat.completion body and the provider's request id."""

    body: dict[str, Any]
    request_id: str
    headers: Mapping[str, str]


def classify_failure(status_code: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
    """The one place an HTTP failure becomes an exception class (status *and* error code).

    OpenAI sends `insufficient_quota` as a 429, and it is permanent, so the body's code is read
    before the status decides.
    """
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code") or error.get("type")
    message = str(error.get("message") or f"HTTP {status_code}")
    facts: dict[str, Any] = {"status_code": status_code, "body": body,
                             "request_id": headers.get("x-request-id")}
    if code == "insufficient_quota":
        return InsufficientQuotaError(message, **facts)
    if code == "context_length_exceeded":
        return ContextLengthExceededError(message, **facts)
    if status_code == 429:
        return RateLimitedError(message, retry_after_s=parse_retry_after_s(headers), **facts)
    if status_code in (408, 409) or status_code >= 500:
        return ServerError(message, retry_after_s=parse_retry_after_s(headers), **facts)
    if status_code in (401, 403):
        return AuthenticationError(message, **facts)
    return InvalidRequestError(message, **facts)


class HttpClients:
    """httpx clients for a worker's slots: one shared, or a free list of one per running call.

    A threads pool shares one client (its connection pool is thread-safe). Under gevent a
    shared client's pool contends and collapses (docs/concepts.md), so each running call checks a
    client out of a free list and returns it, and clients are made only as slots need them.
    """

    def __init__(self, make: Callable[[], httpx.Client], *, shared: bool) -> None:
        self._make = make
        self._shared = make() if shared else None
        self._free: list[httpx.Client] = []

    @contextlib.contextmanager
    def checkout(self) -> Iterator[httpx.Client]:
        """A client for one call."""
        if self._shared is not None:
            yield self._shared
            return
        client = self._free.pop() if self._free else self._make()
        try:
            yield client
        finally:
            self._free.append(client)


class ProviderClient:
    """Sends one chat completion with a total deadline; raises corral's ProviderError tree.

    httpx timeouts are per phase (a server trickling bytes never trips the read timeout), so
    the body is read in chunks against one wall-clock deadline for the whole call.
    """

    def __init__(self, http: HttpClients, *, deadline_s: float, connect_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._http = http
        self._deadline_s = deadline_s
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock

    def complete(self, provider: ProviderConfig, body: dict[str, Any],
                 client_request_id: str = "") -> Completion:
        """POST `body` to the provider's /chat/completions, with `client_request_id` (when
        given) as its X-Client-Request-Id, so the call can be found in the provider's logs.

        Raises:
            RetryableError: rate limits, 5xx, 408/409, timeouts, connection failures.
            PermanentError: other 4xx, a missing key, or a response that is not a completion.
        """
        headers = {**provider.headers, "Content-Type": "application/json"}
        if client_request_id:
            headers[CLIENT_REQUEST_ID_HEADER] = client_request_id
        key = read_api_key(provider)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        deadline = self._clock() + self._deadline_s
        timeout = httpx.Timeout(self._deadline_s, connect=self._connect_timeout_s)
        payload = json.dumps(body, separators=(",", ":")).encode()
        try:
            with self._http.checkout() as http, http.stream(
                    "POST", f"{provider.base_url}/chat/completions", content=payload,
                    headers=headers, timeout=timeout) as response:
                raw = self._read_before(response, deadline)
        except httpx.TimeoutException as err:
            raise RequestTimeoutError(f"no answer within the deadline ({type(err).__name__})") \
                from err
        except (httpx.ConnectError, httpx.LocalProtocolError, httpx.UnsupportedProtocol) as err:
            # Nothing reached the provider.
            raise ServerError(f"connection to {provider.name} failed: {type(err).__name__}") \
                from err
        except httpx.TransportError as err:
            raise ConnectionLostError(f"connection to {provider.name} lost after the request "
                                      f"was sent: {type(err).__name__}") from err
        return _completion(response.status_code, raw, response.headers)

    def _read_before(self, response: httpx.Response, deadline: float) -> bytes:
        chunks = []
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            if self._clock() > deadline:
                raise RequestTimeoutError(
                    f"response not complete within the {self._deadline_s:g} s deadline")
        return b"".join(chunks)


def _completion(status_code: int, raw: bytes, headers: Mapping[str, str]) -> Completion:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if not 200 <= status_code < 300:
        raise classify_failure(status_code, body, headers)
    request_id = headers.get("x-request-id") or ""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise InvalidResponseError(f"HTTP {status_code} but the body is not a chat completion",
                                   status_code=status_code, request_id=request_id)
    return Completion(body, request_id or str(body.get("id", "")), headers)
