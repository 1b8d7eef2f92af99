"""Files what a line came to: its result or error record, its calls' ledger rows, counters."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from corral import lua_scripts
from corral.config import ModelConfig
from corral.errors import PermanentError, ProviderError
from corral.lua_scripts import ScriptCalls
from corral.pricing import answer_cost, to_nano_usd
from corral.records import LineEnds, Written, error_record, result_record
from corral.redis_keys import FLEET_STATS, BatchKeys
from corral.stats import CallStats
from corral.store.records import LedgerRow
from workers.delivery import LineEnded
from workers.provider_client import Completion

log = logging.getLogger(__name__)

# Settles a completed call's rate-limit admission on the pipeline that files its record.
Settle = Callable[[ScriptCalls], None]


@dataclass(frozen=True)
class Call:
    """One provider call of a line, as start_job.lua marked it in flight.

    Attributes:
        mark: its field in the batch's `inflight` hash.
        number: the line's call number, counted on across reruns (its ledger `attempt`).
        client_request_id: the X-Client-Request-Id it is sent with.
        others: whether an earlier call of the line was still marked in flight at its start.
    """

    mark: str
    number: int
    client_request_id: str
    others: bool = True


class LineRecords:
    """Writes each line's end (corral.records.LineEnds); says when its batch is gone."""

    def __init__(self, client: redis.Redis, ends: LineEnds, price_version: str) -> None:
        self._ends = ends
        self._price_version = price_version
        self._count_calls = lua_scripts.register(client, "count_calls", package="workers")

    def succeed(self, batch_id: str, custom_id: str, model: ModelConfig,
                completion: Completion, route: dict[str, Any] | None, call: Call,
                stats: CallStats, settle: Settle, line_no: int | None = None,
                rate_limited_before: int = 0) -> LineEnded:
        """File the line's result and its call's ledger row (a duplicate's row too).

        The row keeps the call's `latency_s` and `rate_limited_before`: the 429 answers the
        line met since its last billed call (or its start), which `corral report` charts.
        """
        usage, cost_usd, list_cost_usd, lane = answer_cost(model, completion.body)
        stats.usage, stats.cost_nusd = usage, to_nano_usd(cost_usd)
        entry = {"custom_id": custom_id, "model": model.name, "attempt": call.number,
                 "request_id": completion.request_id,
                 "client_request_id": call.client_request_id,
                 "input_tokens": usage.prompt_tokens, "cached_input_tokens": usage.cached_tokens,
                 "output_tokens": usage.completion_tokens, "cost_usd": str(cost_usd),
                 "list_cost_usd": str(list_cost_usd), "price_version": self._price_version,
                 "route": route, "at": round(time.time(), 3),
                 "latency_s": round(stats.latency_s or 0.0, 3),
                 "rate_limited_before": rate_limited_before, "lane": lane}
        record = result_record(custom_id, request_id=completion.request_id,
                               body=completion.body, route=route)
        billed = LedgerRow(batch_id, custom_id, call.number, model.name, unsettled=False,
                           productive=True, input_tokens=usage.prompt_tokens,
                           cached_input_tokens=usage.cached_tokens,
                           output_tokens=usage.completion_tokens, cost_usd=cost_usd,
                           list_cost_usd=list_cost_usd,
                           client_request_id=call.client_request_id, row=entry, lane=lane)
        written = self._ends.end(batch_id, record, line_no=line_no, call=billed,
                                 settled_call=call.mark, others=call.others, model=model.name,
                                 call_counts=stats.increments(), along=settle)
        if written is Written.GONE:
            return _gone(batch_id, custom_id, model.name,
                         f"its call ({call.client_request_id}, ${cost_usd}) is in no ledger")
        if written is Written.DUPLICATE:
            log.info("duplicate result for %s/%s kept out; its cost is in the ledger",
                     batch_id, custom_id)
            return LineEnded("duplicate", model.name, usage, cost_usd)
        return LineEnded("completed", model.name, usage, cost_usd)

    def fail_with(self, batch_id: str, custom_id: str, err: ProviderError,
                  route: dict[str, Any] | None, attempt: int, settled_call: str,
                  model: ModelConfig, stats: CallStats,
                  meta_fields: dict[str, str] | None = None,
                  line_no: int | None = None) -> LineEnded:
        """File the error record of a provider failure (its 4xx answer when there was one)."""
        message = err.message if isinstance(err, PermanentError) \
            else f"gave up after {attempt} attempts: {err.message}"
        response = None
        if err.status_code is not None and 400 <= err.status_code < 500 and err.body is not None:
            response = {"status_code": err.status_code, "request_id": err.request_id or "",
                        "body": err.body}
        return self.fail(batch_id, custom_id, err.code, message, route, response,
                         settled_call=settled_call, model=model.name,
                         call_counts=stats.increments(), meta_fields=meta_fields,
                         line_no=line_no)

    def fail(self, batch_id: str, custom_id: str, code: str, message: str,
             route: dict[str, Any] | None, response: dict[str, Any] | None = None, *,
             settled_call: str = "", model: str = "", call_counts: dict[str, int] | None = None,
             meta_fields: dict[str, str] | None = None,
             line_no: int | None = None) -> LineEnded:
        """File an error record with `code` (docs/concepts.md)."""
        log.info("line %s/%s failed: %s", batch_id, custom_id, code)
        model = model or str((route or {}).get("model") or "")
        written = self._ends.end(
            batch_id, error_record(custom_id, code=code, message=message, response=response,
                                   route=route),
            line_no=line_no, settled_call=settled_call, model=model, call_counts=call_counts,
            meta_fields=meta_fields)
        if written is Written.GONE:
            return _gone(batch_id, custom_id, model, f"its error {code} is not filed")
        return LineEnded("failed" if written else "duplicate", model, detail=code)

    def count(self, pipe: redis.client.Pipeline, keys: BatchKeys, model: str,
              stats: CallStats) -> None:
        """Add a call that ends in no record (a retry, a fallback) to the live counters, in
        `pipe`'s round trip; nothing when the batch is gone."""
        counts = json.dumps(stats.increments(), separators=(",", ":"))
        self._count_calls(keys=[keys.meta, keys.stats, FLEET_STATS], args=[model, counts],
                          client=pipe)


def _gone(batch_id: str, custom_id: str, model: str, lost: str) -> LineEnded:
    """The batch vanished while its line ran (deleted, past retention, or lost with Redis's
    data): nothing is written for it; say so once per line, loudly."""
    log.warning("batch %s is gone (deleted, or Redis lost its data): line %s ended, but %s",
                batch_id, custom_id, lost)
    return LineEnded("skipped", model, detail="batch gone")
