"""The job service: run one batch line — start it, call the provider, file its records."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import redis

from corral import lua_scripts
from corral.config import CorralConfig, ModelConfig
from corral.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    InsufficientQuotaError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from corral.lua_scripts import ScriptCalls
from corral.pricing import Usage, answer_cost
from corral.records import LineEnds
from corral.redis_keys import BatchKeys
from corral.settings import Settings
from corral.stats import CallStats, stat_field
from corral.store import BatchRows
from corral.stored_job import stored_job
from corral.tokens import estimate_prompt_tokens, requested_output_tokens, reservation_tokens
from workers.backoff import backoff_delay_s
from workers.buckets import Admission
from workers.budget import Budget, BudgetExceededError
from workers.circuit import CircuitBreaker
from workers.delivery import LineEnded, RetryLater
from workers.line_records import Call, LineRecords, Settle
from workers.provider_client import Completion, ProviderClient
from workers.rate_limiter import NoCallMadeError, RateLimiter, ShuttingDownError

log = logging.getLogger(__name__)

LEASE_MARGIN_S = 5.0


def rate_limited_field(custom_id: str) -> str:
    """The field of the batch's `attempts` hash counting the line's 429s until its next
    billed call, whose ledger row keeps them (for `corral report`); deleted when the line
    ends. NUL never occurs in a custom_id, so it never meets a line's own field."""
    return f"{custom_id}\0rate_limited"


# Capacity start_job.lua took for the call: its tokens and its admission.
Admitted = tuple[int, Admission]


class JobRunner:
    """Runs lines of any batch; one per worker process, shared by its task slots."""

    def __init__(self, *, config: CorralConfig, client: redis.Redis, ends: LineEnds,
                 batches: BatchRows, provider_client: ProviderClient, limiter: RateLimiter,
                 circuit: CircuitBreaker, settings: Settings,
                 send_jobs: Callable[[str, list[tuple[str, str]]], int],
                 rng: random.Random | None = None) -> None:
        self._config = config
        self._client = client
        self._records = LineRecords(client, ends, config.price_version)
        self._batches = batches
        self._fail = self._records.fail
        self._provider_client = provider_client
        self._limiter = limiter
        self._circuit = circuit
        self._settings = settings
        self._send_jobs = send_jobs
        self._rng = rng or random.Random()
        self._start_job = lua_scripts.register(client, "start_job", package="workers")
        # Lines that start while another slot's round trip is in flight start in the next one,
        # with the records of lines that end meanwhile: one group for both.
        self._group_commit = ends.group_commit
        self._ends = ends
        self._budget = Budget(client)
        self._holder = f"{socket.gethostname()}:{os.getpid()}"
        self._lease_ms = int((settings.job_s + LEASE_MARGIN_S) * 1000)
        self._models_by_queue = {model.queue: model for model in config.models.values()}

    def run(self, batch_id: str, custom_id: str, queue: str | None = None) \
            -> RetryLater | LineEnded:
        """One delivery of a line from `queue` (when known): what it came to."""
        with self._ends.expecting():  # its record may share a store transaction
            return self._run(batch_id, custom_id, queue)

    def _run(self, batch_id: str, custom_id: str, queue: str | None) -> RetryLater | LineEnded:
        keys = BatchKeys(batch_id)
        script_keys = [keys.meta, keys.bodies, keys.attempts, keys.lease(custom_id),
                       keys.inflight, keys.reruns]
        # Sent upstream with the call and kept in its mark and ledger row.
        client_request_id = f"corral-{uuid.uuid4().hex}"
        args: list[str | int] = [custom_id, self._lease_ms, self._holder, client_request_id,
                                 self._config.price_version]
        inline = self._inline_acquire(queue)
        if inline is not None:
            script_keys.append(inline[0])
            args.extend(inline[1])
        verdict, attempt, raw_job, *ran = self._group_commit.run(
            [(self._start_job, script_keys, args)])[0]
        if verdict in ("cancelled", "expired"):  # rare: lines waiting to retry, mostly
            self._client.hdel(keys.attempts, rate_limited_field(custom_id))
        if verdict == "cancelled":
            return self._fail(batch_id, custom_id, "batch_cancelled", "the batch was cancelled",
                              None)
        if verdict == "expired":
            self._batches.expire(batch_id)
            return self._fail(batch_id, custom_id, "batch_expired",
                              "the batch's completion window ended before this line ran", None,
                              meta_fields={"end_status": "expired"})
        if verdict == "leased":
            # Another worker runs the line now. If it finishes, this message finds the record;
            # if it dies, its lease runs out and this message runs the line.
            return RetryLater(min(int(attempt) / 1000, self._settings.max_retry_delay_s),
                              "another worker holds the line's lease")
        if verdict == "run":
            budgeted, call_number, others, *admission = ran
            admitted = (int(admission[0]), Admission(*map(int, admission[1:]))) \
                if admission else None
            call = Call(keys.call_id(custom_id, int(call_number)), int(call_number),
                        client_request_id, others=others == 1)
            try:
                ended = self._attempt(batch_id, custom_id, int(attempt), json.loads(raw_job),
                                      call, budgeted=budgeted == 1, admitted=admitted)
            except NoCallMadeError as err:
                # No provider call was made: take the attempt back, and let the job return
                # (after the wait the limiter expects, or at once when the worker stops).
                self._undo_attempt(keys, custom_id, call.mark)
                if isinstance(err, ShuttingDownError):
                    raise
                return RetryLater(min(err.retry_after_s, self._settings.max_retry_delay_s),
                                  str(err))
            except BaseException:
                # The message goes back (requeue or redelivery): let it run at once.
                self._client.delete(keys.lease(custom_id))
                raise
            if isinstance(ended, LineEnded) and ended.outcome in ("failed", "skipped") \
                    and int(attempt) > 1:
                # Its 429 count ends with it (a result's ledger row took it already).
                self._client.hdel(keys.attempts, rate_limited_field(custom_id))
            return ended
        log.info("skip %s/%s: %s", batch_id, custom_id, verdict)
        return LineEnded("skipped", detail=str(verdict))

    def _queue_model(self, queue: str | None) -> str:
        """The configured model whose queue this is, or "" when unknown."""
        model = self._models_by_queue.get(queue or "")
        return model.name if model is not None else ""

    def _inline_acquire(self, queue: str | None) -> tuple[str, list[str | int]] | None:
        """start_job.lua's bucket key and arguments to take the call's capacity with, when the
        queue is a configured model's whose calls may go ahead now; None otherwise (the call
        then waits for capacity in `_call_within_limits`)."""
        model = self._models_by_queue.get(queue or "")
        if model is None or model.max_cost is not None or self._circuit.check(model.provider):
            return None
        inline = self._limiter.inline_args(self._config.scope_of(model))
        if inline is None:
            return None
        key, limits = inline
        return key, [model.name, *limits, self._settings.max_attempts]

    def _attempt(self, batch_id: str, custom_id: str, attempt: int, job: dict[str, Any],
                 this_call: Call, *, budgeted: bool,
                 admitted: Admitted | None) -> RetryLater | LineEnded:
        keys = BatchKeys(batch_id)
        call = this_call.mark
        route = job.get("route")
        line_no = job.get("line")
        model = self._config.models.get(job["model"])
        if model is None:
            return self._fail(batch_id, custom_id, "invalid_request",
                              f"model {job['model']!r} is no longer configured on this worker",
                              route, settled_call=call, model=job["model"])
        if attempt > self._settings.max_attempts:
            # Earlier attempts started but never ended: their workers died mid-call.
            return self._fail(batch_id, custom_id, "attempts_exhausted",
                              f"started {attempt - 1} times without finishing (workers lost?)",
                              route, settled_call=call, model=model.name)
        circuit = self._circuit.check(model.provider)
        if circuit is not None:
            return self._fail(batch_id, custom_id, circuit.code, circuit.message, route,
                              settled_call=call, model=model.name)
        stats = CallStats()
        try:
            completion, settle = self._call(batch_id, model, job["body"], this_call,
                                            budgeted=budgeted, stats=stats, admitted=admitted)
        except BudgetExceededError as err:
            return self._fail(batch_id, custom_id, "budget_exceeded", str(err), route,
                              settled_call=call, model=model.name)
        except PermanentError as err:
            fallback = self._fall_back(batch_id, custom_id, call, model, job, err, stats)
            if fallback is not None:
                return LineEnded("rerouted", model=model.name, detail=fallback)
            meta_fields = None
            if isinstance(err, AuthenticationError | InsufficientQuotaError):
                circuit = self._circuit.open(model.provider, err)
                # One clear message on the batch itself, shown by `corral status`.
                last_error = {"code": circuit.code, "message": circuit.message}
                self._batches.set_last_error(batch_id, last_error)
                meta_fields = {"last_error": json.dumps(last_error)}
            return self._records.fail_with(batch_id, custom_id, err, route, attempt, call,
                                           model, stats, meta_fields, line_no=line_no)
        except RetryableError as err:
            # A call that timed out or lost its connection may still have been served and
            # billed: it stays in flight, counted at its worst case.
            settled = "" if err.maybe_served else call
            if attempt >= self._settings.max_attempts:
                return self._records.fail_with(batch_id, custom_id, err, route, attempt,
                                               settled, model, stats, line_no=line_no)
            stats.retried = True
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(keys.lease(custom_id))
            if isinstance(err, RateLimitedError):
                pipe.hincrby(keys.attempts, rate_limited_field(custom_id), 1)
            if settled:
                pipe.hdel(keys.inflight, settled)
            self._records.count(pipe, keys, model.name, stats)
            pipe.execute()
            delay_s = backoff_delay_s(attempt, base_s=self._settings.retry_base_delay_s,
                                      cap_s=self._settings.max_retry_delay_s,
                                      retry_after_s=err.retry_after_s, rng=self._rng)
            return RetryLater(delay_s, f"{type(err).__name__}: {err.message}")
        return self._records.succeed(batch_id, custom_id, model, completion, route, this_call,
                                     stats, settle, line_no=line_no,
                                     rate_limited_before=self._take_rate_limited(
                                         keys, custom_id, attempt))

    def _take_rate_limited(self, keys: BatchKeys, custom_id: str, attempt: int) -> int:
        """The 429s the line met since its last billed call, counted in Redis as it met
        them, and reset; a first attempt met none, and costs no round trip."""
        if attempt <= 1:
            return 0
        field = rate_limited_field(custom_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.hget(keys.attempts, field)
        pipe.hdel(keys.attempts, field)
        count, _ = pipe.execute()
        return int(count or 0)

    def _fall_back(self, batch_id: str, custom_id: str, call: str, model: ModelConfig,
                   job: dict[str, Any], err: PermanentError, stats: CallStats) -> str | None:
        """Re-route a line once to the model's fallback when the model cannot serve it;
        returns the fallback's name, or None when the line stays."""
        error = err.body.get("error") if isinstance(err.body, dict) else None
        unknown_upstream = isinstance(error, dict) and error.get("code") == "model_not_found"
        route = job.get("route") or {}
        if model.fallback is None or route.get("fallback_from") or not (
                isinstance(err, ContextLengthExceededError) or unknown_upstream):
            return None
        fallback = self._config.models[model.fallback]
        body = {**job["body"], "model": fallback.upstream}
        reason = (f"{route.get('reason', '')}; fallback from {model.name} after "
                  f"{'model_not_found' if unknown_upstream else err.code}")
        rerouted = stored_job(
            tokens=reservation_tokens(body, fallback.default_max_tokens), model=fallback.name,
            default_max_tokens=fallback.default_max_tokens, body=body, line=job.get("line"),
            route={**route, "model": fallback.name, "fallback_from": model.name,
                   "reason": reason})
        keys = BatchKeys(batch_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(keys.bodies, custom_id, rerouted)
        pipe.delete(keys.lease(custom_id))
        pipe.hdel(keys.inflight, call)
        self._records.count(pipe, keys, model.name, stats)
        # The line is now in flight on the fallback's queue, no longer on this model's.
        pipe.hincrby(keys.stats, stat_field(model.name, "rerouted"), -1)
        pipe.hincrby(keys.stats, stat_field(fallback.name, "rerouted"), 1)
        pipe.execute()
        self._send_jobs(batch_id, [(custom_id, fallback.queue)])
        log.info("line %s/%s re-routed from %s to %s", batch_id, custom_id, model.name,
                 fallback.name)
        return fallback.name

    def _call(self, batch_id: str, model: ModelConfig, body: dict[str, Any], call: Call, *,
              budgeted: bool, stats: CallStats,
              admitted: Admitted | None) -> tuple[Completion, Settle]:
        """One provider call inside the spending caps and the scope's shared limits; returns
        the completion and what settles its rate-limit admission (see `_call_within_limits`).
        """
        reserved_nusd = None
        if budgeted or model.max_cost is not None:
            # Reserved before capacity is taken (start_job.lua takes none for these lines).
            ceiling = Usage(estimate_prompt_tokens(body), 0,
                            requested_output_tokens(body, model.default_max_tokens))
            reserved_nusd = self._budget.reserve(batch_id, model, ceiling)
        completion: Completion | None = None
        try:
            completion, settle = self._call_within_limits(model, body, call, stats, admitted)
            return completion, settle
        finally:
            if reserved_nusd is not None:
                spent_usd = Decimal(0) if completion is None else \
                    answer_cost(model, completion.body)[1]
                self._budget.settle(batch_id, model, reserved_nusd, spent_usd)

    def _call_within_limits(self, model: ModelConfig, body: dict[str, Any], call: Call,
                            stats: CallStats,
                            admitted: Admitted | None) -> tuple[Completion, Settle]:
        """One provider call inside the scope's shared limits: with the capacity start_job.lua
        `admitted`, else after waiting for the request's charge.

        A failed call is settled here; a completed one returns its settle, which its record
        sends in the same round trip.
        """
        scope = self._config.scope_of(model)
        if admitted is None:
            tokens = reservation_tokens(body, model.default_max_tokens)
            admission = self._limiter.acquire(scope, tokens)
        else:
            tokens, admission = admitted
        started = time.monotonic()
        try:
            completion = self._provider_client.complete(self._config.provider_of(model), body,
                                                        call.client_request_id)
        except RateLimitedError as err:
            stats.latency_s, stats.rate_limited = time.monotonic() - started, True
            self._limiter.settle(scope, tokens, admission, headers={}, rate_limited=True,
                                 retry_after_s=err.retry_after_s)
            raise
        except BaseException:
            stats.latency_s = time.monotonic() - started
            self._limiter.settle(scope, tokens, admission, headers={})
            raise
        stats.latency_s = time.monotonic() - started

        def settle(pipe: ScriptCalls) -> None:
            self._limiter.settle(scope, tokens, admission, headers=completion.headers,
                                 pipe=pipe)

        return completion, settle

    def _undo_attempt(self, keys: BatchKeys, custom_id: str, mark: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(keys.lease(custom_id))
        pipe.hdel(keys.inflight, mark)
        pipe.hincrby(keys.attempts, custom_id, -1)
        pipe.execute()

    def stop_waiting(self) -> None:
        """The worker is stopping: jobs waiting for capacity give their messages back."""
        self._limiter.stop_waiting()

    def fail_internal(self, batch_id: str, custom_id: str, err: Exception) -> LineEnded:
        """End a line that hit a bug in corral with an `internal_error` record."""
        return self._fail(batch_id, custom_id, "internal_error",
                          f"corral worker error: {type(err).__name__}: {err}", None)

    def end_revoked(self, batch_id: str, custom_id: str, queue: str | None,
                    task_id: str) -> LineEnded:
        """End a line whose job was revoked before it ran (Flower, `celery control revoke`)
        with a `revoked` record, so it does not vanish; `corral retry` can run it again."""
        return self._fail(batch_id, custom_id, "revoked",
                          f"its job (task {task_id}) was revoked before it ran", None,
                          model=self._queue_model(queue))
