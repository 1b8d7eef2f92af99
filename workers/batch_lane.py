"""The batch lane: a batch's `--deadline` lines sent to their providers' Batch APIs at the
batch price, polled, hedged live near the deadline, and filed as the live lane files them.

- `submit` splits the batch-lane lines of each model into provider batches within the
  provider's limits, and records each one in the store before polling it.
- `poll` follows one provider batch. Once it has ended, its answers become the lines'
  records and ledger rows (lane "batch", priced at `batch_price`), write-once like a live
  answer; lines it did not answer (expired, cancelled, a transient error) go live.
- Near the deadline (the deadline, less the live time the unfinished lines need, less a
  poll interval), the provider batch is cancelled and its unfinished lines go live: the hedge.
  A line answered by both keeps the record that landed first; the other call's cost is in
  the ledger, unproductive.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from corral import lua_scripts
from corral.config import CorralConfig, ModelConfig
from corral.errors import PermanentError
from corral.live_time import hedge_seconds
from corral.pricing import Usage, cost_and_list_cost, to_nano_usd
from corral.records import LineEnd, LineEnds, Written, error_record, result_record
from corral.redis_keys import PREFIX, BatchKeys
from corral.store import Store
from corral.store.lines import StoredLine
from corral.store.records import LedgerRow
from workers.batch_api import BatchApi, BatchApiError, BatchLine, LineResult
from workers.provider_client import classify_failure

log = logging.getLogger(__name__)

SUBMIT_LOCK_MS = 120_000  # one process submits a batch's lines at a time
BATCH_CALL = 0  # a batch-lane call's number in the ledger (live calls count from 1)
# The providers' limits on one batch: OpenAI 50,000 requests or 200 MB, Anthropic 100,000
# requests or 256 MB; corral keeps a margin under the sizes.
LIMITS = {"openai": (50_000, 190 * 2**20), "anthropic": (100_000, 240 * 2**20)}
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
FILING_CHUNK = 1000  # a provider batch's answers filed per store transaction
# Answers one worker files per second, with room to spare (about 5,000 with SQLite on 2 cores:
# docs/benchmarks.md, Batch lane).
FILING_LINES_PER_S = 2000


@dataclass(frozen=True)
class Polled:
    """What one poll found: whether to poll again, and what it did."""

    again: bool
    filed: int = 0
    sent_live: int = 0
    hedged: bool = False
    room_freed: bool = False  # it ended: lines waiting for the model's queue room may go


class BatchLane:
    """Runs a batch's batch-lane lines through its providers' Batch APIs."""

    def __init__(self, *, config: CorralConfig, client: redis.Redis, store: Store,
                 ends: LineEnds, api_for: Callable[[ModelConfig], BatchApi],
                 send_jobs: Callable[[str, list[tuple[str, str]]], int],
                 poll_s: float, turnaround_s: Callable[[str], float], call_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._client = client
        self._store = store
        self._ends = ends
        self._api_for = api_for
        self._send_jobs = send_jobs
        self.poll_s = poll_s
        self._turnaround_s = turnaround_s
        self._call_s = call_s  # the longest a live call may take (its request deadline)
        self._clock = clock
        self._store_bodies = lua_scripts.register(client, "store_bodies")

    def submit(self, batch_id: str) -> list[str] | None:
        """Send the batch's batch-lane lines not yet in a provider batch, within each
        provider's limits and the model's enqueued-token limit (the rest when earlier
        provider batches end); returns the ids of the provider batches created, or None when
        another process is submitting this batch (try again later)."""
        lock = f"{PREFIX}:batch_lane_submit:{batch_id}"
        if not self._client.set(lock, 1, nx=True, px=SUBMIT_LOCK_MS):
            return None
        try:
            return self._submit(batch_id, lock)
        finally:
            self._client.delete(lock)

    def _submit(self, batch_id: str, lock: str) -> list[str]:
        row = self._store.batches.get(batch_id)
        if row is None or row["status"] != "in_progress":
            return []
        created = []
        for name in self._store.lines.batch_lane_models(batch_id):
            model = self._config.models[name]
            provider = self._config.provider_of(model)
            lines = self._waiting(batch_id, name)
            quota = model.batch_queue_tokens
            room = None if quota is None else \
                quota - self._store.provider_batches.open_tokens(provider.name, name)
            too_big = [line for line in lines if quota is not None and _tokens(line) > quota]
            if too_big:  # never fits the provider's queue: the live lane runs it
                self._send_live(batch_id, model, [line.custom_id for line in too_big])
            max_lines, max_bytes = LIMITS[provider.batch_api or "openai"]
            for chunk in _chunks([line for line in lines if line not in too_big], max_lines,
                                 max_bytes, quota):
                tokens = sum(_tokens(line) for line in chunk)
                if room is not None and tokens > room:
                    break  # the rest goes when an open provider batch of the model ends
                batch_lines = [BatchLine(line.custom_id, json.loads(line.job)["body"])
                               for line in chunk]
                try:
                    provider_batch_id, status = self._api_for(model).create(
                        model, batch_lines, {"corral_batch": batch_id})
                except BatchApiError as err:
                    if not err.permanent:
                        raise  # the task tries again a poll interval later
                    sent = self._send_live(batch_id, model,
                                           [line.custom_id for line in chunk])
                    log.warning("batch %s: %d lines of %s run live: the Batch API refused "
                                "them (%s)", batch_id, sent, name, err)
                    continue
                self._client.pexpire(lock, SUBMIT_LOCK_MS)  # still submitting
                self._store.provider_batches.add(
                    provider_batch_id, batch_id, provider.name, name, status,
                    [line.custom_id for line in chunk], int(self._clock()), tokens)
                if room is not None:
                    room -= tokens
                log.info("batch %s: %d lines of %s sent to %s as %s", batch_id, len(chunk),
                         name, provider.name, provider_batch_id)
                created.append(provider_batch_id)
        return created

    def batches_waiting(self, provider_batch_id: str) -> list[str]:
        """The open batches with lines of this provider batch's model on the batch lane that
        no provider batch holds yet (kept back by the model's enqueued-token limit)."""
        kept = self._store.provider_batches.get(provider_batch_id)
        if kept is None:
            return []
        return [batch_id for batch_id in
                self._store.lines.batches_on_batch_lane(kept["model"])
                if self.waiting(batch_id)]

    def waiting(self, batch_id: str) -> bool:
        """Whether the batch still has batch-lane lines in no provider batch."""
        return any(self._waiting(batch_id, name)
                   for name in self._store.lines.batch_lane_models(batch_id))

    def poll(self, provider_batch_id: str) -> Polled:
        """Look at one provider batch: file its answers once it ends, hedge it near the
        deadline, cancel it when the corral batch has ended."""
        kept = self._store.provider_batches.get(provider_batch_id)
        if kept is None or kept["collected"]:
            return Polled(again=False)
        # One chain of polls per provider batch: a poll the sweep sent for a chain that was
        # only late (not lost) finds the claim of the chain's last poll, and ends here.
        if not self._client.set(poll_claim_key(provider_batch_id), 1, nx=True,
                                px=max(1, int(self.poll_s * 800))):
            return Polled(again=False)
        model = self._config.models[kept["model"]]
        api = self._api_for(model)
        state = api.state(provider_batch_id)
        self._store.provider_batches.update(provider_batch_id, status=state.status,
                                            done=state.done, polled_at=int(self._clock()))
        if state.ended:
            filed, sent = self._collect(kept, model, api)
            self._store.provider_batches.update(provider_batch_id, collected=True,
                                                ended_at=int(self._clock()))
            return Polled(again=False, filed=filed, sent_live=sent, room_freed=True)
        batch = self._store.batches.get(kept["batch_id"])
        if batch is None or batch["status"] in TERMINAL or batch["status"] == "cancelling":
            api.cancel(provider_batch_id)  # its billed answers are still collected
            return Polled(again=True)
        unfinished = self._unfinished(batch["id"], kept["custom_ids"])
        # The provider's own count says how many lines it has still to answer: those are
        # what a hedge would run live (the rest come with the cancelled batch's output).
        pending = min(len(unfinished), max(kept["total"] - state.done, 0))
        if kept["hedged_at"] is not None:
            if unfinished:  # hedged, and the cancel did not end it within a poll: go live
                sent = self._send_live(batch["id"], model,
                                       [line.custom_id for line in unfinished])
                return Polled(again=True, sent_live=sent)
        elif self._hedge_due(batch, model, unfinished, pending, kept["created_at"]):
            api.cancel(provider_batch_id)
            self._store.provider_batches.update(provider_batch_id,
                                                hedged_at=int(self._clock()))
            # Nothing answered yet: nothing to wait for. Else its answers are filed and the
            # rest sent live once the cancel ends it (the next poll, or the one after).
            sent = self._send_live(batch["id"], model,
                                   [line.custom_id for line in unfinished]) \
                if state.done == 0 else 0
            log.warning("batch %s: provider batch %s hedged near the deadline: %d of %d "
                        "unfinished lines unanswered there, %d sent live now",
                        kept["batch_id"], provider_batch_id, pending, len(unfinished), sent)
            return Polled(again=True, sent_live=sent, hedged=True)
        # Lines still waiting for the model's enqueued-token room have the same deadline.
        waiting = self._waiting(batch["id"], model.name)
        if waiting and self._hedge_due(batch, model, waiting, len(waiting), None):
            sent = self._send_live(batch["id"], model, [line.custom_id for line in waiting])
            log.warning("batch %s: %d lines of %s still waiting for the provider's batch "
                        "queue sent live near the deadline", batch["id"], sent, model.name)
            return Polled(again=True, sent_live=sent)
        return Polled(again=True)

    def _hedge_due(self, batch: dict[str, Any], model: ModelConfig,
                   unfinished: Sequence[StoredLine], pending: int,
                   created_at: int | None) -> bool:
        """Whether these unfinished lines, `pending` of them not yet answered by the provider,
        must be hedged now to make the deadline. The hedge needs: the live time for the
        pending lines and the batch's other live lines of the scope still to run (with
        slack), the time to file the answered ones, two poll intervals (the hedge is seen up
        to one late, and the cancel takes up to one more) and a request deadline (the last
        call may take that long). Never before the provider batch's expected turnaround:
        hedging sooner only takes the live lane's room from lines that have no other way."""
        options = json.loads(batch.get("options") or "{}")
        deadline_at = options.get("deadline_at")
        if deadline_at is None or not unfinished:
            return False
        now = self._clock()
        provider = self._config.provider_of(model).name
        if created_at is not None and now < created_at + self._turnaround_s(provider):
            return False
        scope = self._config.scope_of(model)
        tokens_per_line = sum(_tokens(line) for line in unfinished) / len(unfinished)
        live = pending + self._store.lines.unended_live(batch["id"], model.name)
        needed_s = (hedge_seconds(live, tokens_per_line * live, rpm=scope.rpm, tpm=scope.tpm)
                    + (len(unfinished) - pending) / FILING_LINES_PER_S)
        return now >= float(deadline_at) - needed_s - 2 * self.poll_s - self._call_s

    def _waiting(self, batch_id: str, model: str) -> list[StoredLine]:
        """The model's batch-lane lines of the batch that no provider batch holds yet."""
        taken = {custom_id for kept in self._store.provider_batches.of_batch(batch_id)
                 for custom_id in kept["custom_ids"]}
        return [line for line in self._store.lines.on_batch_lane(batch_id, model)
                if line.custom_id not in taken]

    def _unfinished(self, batch_id: str, custom_ids: Sequence[str]) -> list[StoredLine]:
        """These lines still on the batch lane without a record."""
        ended = self._store.records.has_records(batch_id, list(custom_ids))
        jobs = self._store.lines.jobs(batch_id, [c for c in custom_ids if c not in ended],
                                      lane="batch")
        return [StoredLine(0, custom_id, job) for custom_id, job in jobs.items()]

    def _collect(self, kept: dict[str, Any], model: ModelConfig,
                 api: BatchApi) -> tuple[int, int]:
        """File every answer of an ended provider batch, a chunk per store transaction and
        Redis round trip; send the lines it left live."""
        batch_id = kept["batch_id"]
        jobs = self._store.lines.jobs(batch_id, kept["custom_ids"])
        answered: set[str] = set()
        chunk: list[LineEnd] = []

        def file_chunk() -> None:
            written = self._ends.end_all(batch_id, chunk)
            answered.update(end.record["custom_id"] for end, was in zip(chunk, written,
                                                                       strict=True)
                            if was is not Written.GONE)
            chunk.clear()

        for result in api.results(kept["id"]):
            job = jobs.get(result.custom_id)
            if job is None:
                continue  # not a line of this batch
            end = self._line_end(batch_id, model, result, json.loads(job))
            if end is not None:
                chunk.append(end)
            if len(chunk) >= FILING_CHUNK:
                file_chunk()
        if chunk:
            file_chunk()
        left = [custom_id for custom_id in kept["custom_ids"] if custom_id not in answered]
        batch = self._store.batches.get(batch_id)
        if not left or batch is None or batch["status"] != "in_progress":
            return len(answered), 0
        return len(answered), self._send_live(batch_id, model, left)

    def _line_end(self, batch_id: str, model: ModelConfig, result: LineResult,
                  job: dict[str, Any]) -> LineEnd | None:
        """One line's end from the provider batch; None when it must go live."""
        route, line_no = job.get("route"), job.get("line")
        stats_model = f"{model.name}@batch"
        if result.status_code == 200 and result.body is not None:
            usage = Usage.from_response(result.body.get("usage"))
            cost_usd, list_cost_usd = cost_and_list_cost(usage, model, "batch")
            entry = {"custom_id": result.custom_id, "model": model.name,
                     "attempt": BATCH_CALL, "request_id": result.request_id, "lane": "batch",
                     "input_tokens": usage.prompt_tokens,
                     "cached_input_tokens": usage.cached_tokens,
                     "output_tokens": usage.completion_tokens, "cost_usd": str(cost_usd),
                     "list_cost_usd": str(list_cost_usd), "route": route,
                     "at": round(self._clock(), 3)}
            call = LedgerRow(batch_id, result.custom_id, BATCH_CALL, model.name,
                             unsettled=False, productive=True,
                             input_tokens=usage.prompt_tokens,
                             cached_input_tokens=usage.cached_tokens,
                             output_tokens=usage.completion_tokens, cost_usd=cost_usd,
                             list_cost_usd=list_cost_usd, row=entry, lane="batch")
            counts = {"calls": 1, "input_tokens": usage.prompt_tokens,
                      "cached_tokens": usage.cached_tokens,
                      "output_tokens": usage.completion_tokens,
                      "cost_nusd": to_nano_usd(cost_usd)}
            record = result_record(result.custom_id, request_id=result.request_id,
                                   body=result.body, route=route)
            return LineEnd(record, line_no, call, stats_model,
                           {k: v for k, v in counts.items() if v})
        if result.status_code is not None and result.body is not None:
            failure = classify_failure(result.status_code, result.body, {})
            if not isinstance(failure, PermanentError):
                return None  # a transient failure: the live lane retries it
            record = error_record(result.custom_id, code=failure.code,
                                  message=failure.message, route=route,
                                  response={"status_code": result.status_code,
                                            "request_id": result.request_id,
                                            "body": result.body})
            return LineEnd(record, line_no, model=stats_model)
        return None  # no answer (expired, cancelled): the live lane runs it

    def _send_live(self, batch_id: str, model: ModelConfig,
                   custom_ids: Sequence[str]) -> int:
        """Move these lines (those without a record) to the live lane and queue them now."""
        lines = self._unfinished(batch_id, custom_ids)
        if not lines:
            return 0
        ids = [line.custom_id for line in lines]
        self._store.lines.to_live_lane(batch_id, ids)
        keys = BatchKeys(batch_id)
        stored = self._store_bodies(keys=[keys.bodies, keys.meta],
                                    args=[part for line in lines
                                          for part in (line.custom_id, line.job)])
        if stored is None:
            return 0  # Redis lost the batch: its rebuild feeds every live line from the store
        pipe = self._client.pipeline()
        pipe.hincrby(keys.meta, f"lines:{model.name}", len(ids))
        pipe.hincrby(keys.meta, f"fed:{model.name}", len(ids))
        pipe.hincrby(keys.meta, "enqueued", len(ids))
        pipe.hincrby(keys.stats, f"{model.name}|enqueued", len(ids))
        pipe.execute()
        return self._send_jobs(batch_id, [(custom_id, model.queue) for custom_id in ids])


def poll_claim_key(provider_batch_id: str) -> str:
    """The key a poll of this provider batch holds for most of a poll interval."""
    return f"{PREFIX}:batch_poll:{provider_batch_id}"


def _tokens(line: StoredLine) -> int:
    """The line's reserved tokens (prompt estimate + output ceiling), from its stored job."""
    return int(json.loads(line.job)["tokens"])


def _chunks(lines: Sequence[StoredLine], max_lines: int, max_bytes: int,
            max_tokens: int | None = None) -> Iterator[list[StoredLine]]:
    """Runs of lines within a provider batch's line, size and token limits."""
    chunk: list[StoredLine] = []
    size = tokens = 0
    for line in lines:
        length = len(line.job.encode()) + 100  # the batch line's wrapping
        needed = _tokens(line) if max_tokens is not None else 0
        if chunk and (len(chunk) >= max_lines or size + length > max_bytes
                      or (max_tokens is not None and tokens + needed > max_tokens)):
            yield chunk
            chunk, size, tokens = [], 0, 0
        chunk.append(line)
        size += length
        tokens += needed
    if chunk:
        yield chunk
