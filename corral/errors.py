"""corral's exception tree, branched by what the caller must do.

    CorralError
    ├── ConfigError                 bad corral.toml or settings: fix the config (exit 2)
    ├── RedisUnavailableError       Redis cannot be reached (exit 3)
    ├── BatchNotFoundError          no such batch (exit 4)
    └── ProviderError               one provider call went wrong
        ├── RetryableError          try again later: 408, 409, 429 rate limits, 5xx, timeouts
        │   ├── RateLimitedError    429 rate_limit_exceeded (carries retry_after_s)
        │   ├── ServerError         5xx, 408, 409, connection failures
        │   └── RequestTimeoutError the call's total deadline or an httpx timeout passed
        └── PermanentError          retrying cannot help: write an error record
            ├── AuthenticationError        401/403 or a missing key
            ├── InsufficientQuotaError     429 with code insufficient_quota
            ├── ContextLengthExceededError 400 context_length_exceeded
            ├── InvalidRequestError        any other 4xx
            └── InvalidResponseError       a 2xx that is not a chat completion

Each ProviderError carries the error-record `code` it ends as: a permanent error's own code, a
retryable error's code once its attempts are exhausted.
"""

from __future__ import annotations

from typing import Any


class CorralError(Exception):
    """Root of every error corral raises on purpose."""


class ConfigError(CorralError):
    """The configuration or the settings are unusable."""


class RedisUnavailableError(CorralError):
    """Redis did not answer."""


class BatchNotFoundError(CorralError):
    """No batch with that id exists (or it has expired)."""


class ProviderError(CorralError):
    """One call to a provider failed.

    Attributes:
        code: the error record code this failure ends as.
        status_code: the HTTP status, or None when no response arrived.
        body: the provider's decoded error body, if any (never contains our key).
        request_id: the provider's x-request-id, if any.
        maybe_served: no answer arrived, but the request may have reached the provider, which
            may have served and billed it; the call stays unsettled (counted at worst case).
    """

    code = "server_error_exhausted"
    maybe_served = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body = body
        self.request_id = request_id


class RetryableError(ProviderError):
    """Worth another attempt after a delay."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class RateLimitedError(RetryableError):
    code = "rate_limit_exhausted"


class ServerError(RetryableError):
    code = "server_error_exhausted"


class ConnectionLostError(ServerError):
    """The connection broke after the request was sent (read error, protocol error)."""

    maybe_served = True


class RequestTimeoutError(RetryableError):
    code = "timeout_exhausted"
    maybe_served = True


class PermanentError(ProviderError):
    """Another attempt would fail the same way."""

    code = "invalid_request"


class AuthenticationError(PermanentError):
    code = "authentication_error"


class InsufficientQuotaError(PermanentError):
    code = "insufficient_quota"


class ContextLengthExceededError(PermanentError):
    code = "context_length_exceeded"


class InvalidRequestError(PermanentError):
    code = "invalid_request"


class InvalidResponseError(PermanentError):
    code = "invalid_response"
