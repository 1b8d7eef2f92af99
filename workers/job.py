"""The job service: run one batch line — load it, call the provider, file its records."""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import redis

from corral.config import CorralConfig, ModelConfig
from corral.errors import PermanentError, ProviderError, RateLimitedError, RetryableError
from corral.pricing import Usage, cost_and_list_cost
from corral.records import OutcomeStore, error_record, result_record
from corral.redis_keys import BatchKeys
from corral.settings import Settings
from corral.tokens import reservation_tokens
from workers.backoff import backoff_delay_s
from workers.provider_client import Completion, ProviderClient
from workers.rate_limiter import RateLimiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryLater:
    """The line should be tried again after `delay_s`."""

    delay_s: float
    reason: str


class JobRunner:
    """Runs lines of any batch; one per worker process, shared by its task slots."""

    def __init__(self, *, config: CorralConfig, client: redis.Redis, outcomes: OutcomeStore,
                 provider_client: ProviderClient, limiter: RateLimiter, settings: Settings,
                 rng: random.Random | None = None) -> None:
        self._config = config
        self._limiter = limiter
        self._client = client
        self._outcomes = outcomes
        self._provider_client = provider_client
        self._settings = settings
        self._rng = rng or random.Random()

    def run(self, batch_id: str, custom_id: str, attempt: int) -> RetryLater | None:
        """Attempt `attempt` (1-based) of one line; None once the line has its terminal record."""
        if self._outcomes.has_outcome(batch_id, custom_id):
            log.info("skip %s/%s: already has its record (redelivery)", batch_id, custom_id)
            return None
        raw_job = self._client.hget(BatchKeys(batch_id).bodies, custom_id)
        if raw_job is None:
            log.warning("skip %s/%s: no stored request (batch deleted?)", batch_id, custom_id)
            return None
        job = json.loads(raw_job)
        route = job.get("route")
        model = self._config.models.get(job["model"])
        if model is None:
            self._fail(batch_id, custom_id, "invalid_request",
                       f"model {job['model']!r} is no longer configured on this worker", route)
            return None
        try:
            completion = self._call(model, job["body"])
        except PermanentError as err:
            self._fail_with(batch_id, custom_id, err, route, attempt)
            return None
        except RetryableError as err:
            if attempt >= self._settings.max_attempts:
                self._fail_with(batch_id, custom_id, err, route, attempt)
                return None
            delay_s = backoff_delay_s(attempt, base_s=self._settings.retry_base_delay_s,
                                      cap_s=self._settings.max_retry_delay_s,
                                      retry_after_s=err.retry_after_s, rng=self._rng)
            return RetryLater(delay_s, f"{type(err).__name__}: {err.message}")
        self._succeed(batch_id, custom_id, model, completion, route, attempt)
        return None

    def _call(self, model: ModelConfig, body: dict[str, Any]) -> Completion:
        """One provider call inside the scope's shared limits."""
        scope = self._config.scope_of(model)
        tokens = reservation_tokens(body, model.default_max_tokens)
        self._limiter.acquire(scope, tokens)
        try:
            completion = self._provider_client.complete(self._config.provider_of(model), body)
        except RateLimitedError as err:
            self._limiter.rejected(scope, tokens, err.retry_after_s)
            raise
        self._limiter.admitted(scope, completion.headers)
        return completion

    def fail_internal(self, batch_id: str, custom_id: str, err: Exception) -> None:
        """End a line that hit a bug in corral with an `internal_error` record."""
        self._fail(batch_id, custom_id, "internal_error",
                   f"corral worker error: {type(err).__name__}: {err}", None)

    def _succeed(self, batch_id: str, custom_id: str, model: ModelConfig,
                 completion: Completion, route: dict[str, Any] | None, attempt: int) -> None:
        usage = Usage.from_response(completion.body.get("usage"))
        cost_usd, list_cost_usd = cost_and_list_cost(usage, model)
        entry = {"custom_id": custom_id, "model": model.name, "attempt": attempt,
                 "request_id": completion.request_id, "input_tokens": usage.prompt_tokens,
                 "cached_input_tokens": usage.cached_tokens,
                 "output_tokens": usage.completion_tokens, "cost_usd": str(cost_usd),
                 "list_cost_usd": str(list_cost_usd), "price_version": self._config.price_version,
                 "route": route, "at": round(time.time(), 3)}
        record = result_record(custom_id, request_id=completion.request_id,
                               body=completion.body, route=route)
        if not self._outcomes.record(batch_id, record, ledger_entry=entry):
            log.info("duplicate result for %s/%s kept out; its cost is in the ledger",
                     batch_id, custom_id)

    def _fail_with(self, batch_id: str, custom_id: str, err: ProviderError,
                   route: dict[str, Any] | None, attempt: int) -> None:
        message = err.message if isinstance(err, PermanentError) \
            else f"gave up after {attempt} attempts: {err.message}"
        response = None
        if err.status_code is not None and 400 <= err.status_code < 500 and err.body is not None:
            response = {"status_code": err.status_code, "request_id": err.request_id or "",
                        "body": err.body}
        self._fail(batch_id, custom_id, err.code, message, route, response)

    def _fail(self, batch_id: str, custom_id: str, code: str, message: str,
              route: dict[str, Any] | None, response: dict[str, Any] | None = None) -> None:
        log.info("line %s/%s failed: %s", batch_id, custom_id, code)
        self._outcomes.record(batch_id, error_record(custom_id, code=code, message=message,
                                                     response=response, route=route))
