"""The Python API (`from corral import Client`): submit batches, then wait for, read, cost,
cancel and retry them; the `corral` CLI runs on it."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import redis
from celery import Celery

from corral.celery_app import BATCH_POLL_TASK, BATCH_QUEUE, BATCH_SUBMIT_TASK
from corral.config import CorralConfig, find_config_path, load_config
from corral.errors import ConfigError, CorralError
from corral.feeder import Feeder, FeederBusyError
from corral.redis_client import connect
from corral.settings import Settings, get_settings
from corral.store import Store, open_store
from corral.store.intake import LineIntake
from producer import lifecycle
from producer.batches import is_terminal, list_batches, new_batch_id, read_batch
from producer.costs import CostReport, batch_cost
from producer.durations import parse_duration_s
from producer.estimate import Estimate
from producer.lanes import LanePicker
from producer.planner import Plan, plan_lanes
from producer.result import Result
from producer.submit import FileCheck, check_file, open_batch, take_in
from producer.validator import RejectedLine
from producer.views import wait_for_batch

__all__ = ["Batch", "Client", "InvalidLinesError", "Result", "Submission"]

CHAT_COMPLETIONS_URL = "/v1/chat/completions"
REJECTED_KEPT = 100  # bad lines an InvalidLinesError carries (it counts them all)

log = logging.getLogger(__name__)


class InvalidLinesError(ValueError):
    """Lines of a submitted file are bad, so nothing was submitted."""

    def __init__(self, source: str, rejected: list[RejectedLine], count: int) -> None:
        first = "; ".join(f"line {line.number}: {line.reason}" for line in rejected[:3])
        super().__init__(f"{count} bad line(s) in {source}; nothing submitted "
                         f"(skip_invalid=True runs the valid lines). {first}")
        self.source = source
        self.rejected = rejected  # the first REJECTED_KEPT of them
        self.count = count


@dataclass(frozen=True)
class Submission:
    """What submitting found: accepted lines by model, refused lines, lines queued at once
    (the rest wait in the record store for a feeder)."""

    accepted_by_model: dict[str, int]
    rejected: int
    queued: int
    on_batch_lane: int = 0  # lines sent to the providers' Batch APIs (`deadline`)
    plan: Plan | None = None  # the lane plan, with a deadline

    @property
    def accepted(self) -> int:
        """Lines that will run."""
        return sum(self.accepted_by_model.values())


class Batch:
    """A submitted batch: its state, results and cost, read from the record store."""

    def __init__(self, client: Client, batch_id: str,
                 submission: Submission | None = None) -> None:
        self.client = client
        self.id = batch_id
        self.submission = submission  # set when this process submitted it

    def __repr__(self) -> str:
        return f"Batch({self.id!r})"

    def status(self) -> dict[str, Any]:
        """The batch object (OpenAI's Batch shape with corral's fields), as `status --json`.

        Raises:
            BatchNotFoundError: no such batch.
        """
        return read_batch(self.client.store, self.id, self.client.redis)

    def wait(self, progress: bool = False, timeout_s: float | None = None) -> dict[str, Any]:
        """Block until the batch ends (or `timeout_s` passes); returns the batch object.

        This process feeds the batch's queues meanwhile (the workers' feeding loops take over
        if it stops); `progress` shows a bar on stderr.
        """
        feeder = self.client.feed_in_thread(self.id)
        try:
            return wait_for_batch(self.client.store, self.id, show_progress=progress,
                                  timeout_s=timeout_s)
        finally:
            feeder.stop()

    def done(self) -> bool:
        """Whether the batch has ended."""
        return is_terminal(read_batch(self.client.store, self.id))

    def records(self, order: Literal["completion", "input"] = "completion"
                ) -> Iterator[dict[str, Any]]:
        """The finished lines' records as dicts (the output files' lines), so far."""
        read_batch(self.client.store, self.id)
        return self.client.store.records.iter_records(self.id, input_order=order == "input")

    def results(self, order: Literal["completion", "input"] = "completion") -> Iterator[Result]:
        """The finished lines so far, answers and errors, in completion (or input) order."""
        return (Result(record) for record in self.records(order))

    def cost(self) -> dict[str, Any]:
        """Tokens and money per model and in total (the `cost --json` object)."""
        return self.cost_report().as_json()

    def cost_report(self) -> CostReport:
        """`cost` as objects, with Decimal amounts."""
        read_batch(self.client.store, self.id)
        try:
            config: CorralConfig | None = self.client.config
        except ConfigError:
            config = None  # the ledger needs none; only unsettled calls go unpriced then
        return batch_cost(self.client.store, self.id, config, self.client.redis)

    def cancel(self) -> int:
        """Stop the batch: unstarted lines end as batch_cancelled, and its provider batches
        are cancelled (their answers so far still filed); returns the lines ended now."""
        ended = lifecycle.cancel(self.client.redis, self.client.store,
                                 self.client.feeder(self.id), self.id)
        for kept in self.client.store.provider_batches.of_batch(self.id):
            if not kept["collected"]:  # its next poll cancels it: poll it now
                self.client.app.send_task(BATCH_POLL_TASK, args=[kept["id"]],
                                          queue=BATCH_QUEUE)
        return ended

    def retry(self, codes: Iterable[str] | None = None) -> lifecycle.Retried:
        """Run failed lines again (those with these error codes, default every failed line
        with a stored request); their old records go to the store's retry history."""
        wanted = set(codes) if codes is not None else None
        return lifecycle.retry(self.client.redis, self.client.store, self.client.app,
                               self.client.config, self.id, wanted)


class Client:
    """Finds the config, Redis and the record store as the CLI does: `config` (a
    corral.toml path) or $CORRAL_CONFIG or ./corral.toml; CORRAL_REDIS_URL; CORRAL_STORE_URL."""

    def __init__(self, config: str | os.PathLike[str] | None = None) -> None:
        self.config_path = None if config is None else os.fspath(config)

    @cached_property
    def config(self) -> CorralConfig:
        """The loaded corral.toml."""
        return load_config(find_config_path(self.config_path))

    @property
    def settings(self) -> Settings:
        """The environment's settings (CORRAL_*)."""
        return get_settings()

    def use_config(self, path: str) -> None:
        """Use the config at `path` from now on."""
        self.config_path = path
        self.__dict__.pop("config", None)

    def use_redis(self, url: str) -> None:
        """Point this process (and its settings) at another Redis, e.g. a private one."""
        os.environ["CORRAL_REDIS_URL"] = url
        get_settings.cache_clear()
        for cached in ("redis", "app"):
            self.__dict__.pop(cached, None)

    @cached_property
    def redis(self) -> redis.Redis:
        """A client of the hot-state Redis."""
        return connect(self.settings.redis_url)

    @property
    def store(self) -> Store:
        """The record store (CORRAL_STORE_URL, else the default SQLite file)."""
        return open_store()

    @cached_property
    def app(self) -> Celery:
        """The Celery app that sends jobs to the broker."""
        from corral.celery_app import create_app

        return create_app(broker_url=self.settings.effective_broker_url)

    def feeder(self, batch_id: str) -> Feeder:
        """A feeder for one batch, with this client's connections and queue depth."""
        return Feeder(self.redis, self.store, self.app, self.config, batch_id,
                      depth=self.settings.queue_depth)

    def batch(self, batch_id: str) -> Batch:
        """A batch by id.

        Raises:
            BatchNotFoundError: no such batch.
        """
        read_batch(self.store, batch_id)
        return Batch(self, batch_id)

    def batches(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest batch objects first."""
        return list_batches(self.store, limit)

    def submit(self, requests: str | os.PathLike[str] | Iterable[Mapping[str, Any]], *,
               skip_invalid: bool = False, completion_window: str = "24h",
               max_cost_usd: Decimal | str | None = None, deadline: str | None = None,
               on_rejected: Callable[[RejectedLine], None] | None = None) -> Batch:
        """Validate and route every request, store them, and queue the first share.

        `requests` is a JSONL file in the OpenAI Batch format, or an iterable of its lines as
        dicts; a dict without `body` is taken as the body itself, with custom_id
        `request-<index>` (0-based). Nothing is submitted when a line is bad, unless
        `skip_invalid` (then bad lines end as invalid_request errors); `on_rejected` hears
        of each bad line. With a `deadline` ("6h"), lines whose provider has a Batch API
        may run there at its batch price, as planned by producer/planner.py.

        Raises:
            InvalidLinesError: bad lines, and not `skip_invalid`.
            NothingToSubmitError: no request lines.
            ConfigError, RedisUnavailableError: the config or Redis is unusable.
        """
        parse_duration_s(completion_window)
        deadline_s = None if deadline is None else parse_duration_s(deadline)
        cap = None if max_cost_usd is None else Decimal(str(max_cost_usd))
        if cap is not None and (not cap.is_finite() or cap <= 0):
            raise ValueError(f"max_cost_usd {max_cost_usd!r} is not a positive amount")
        if isinstance(requests, str | os.PathLike):
            path = Path(requests)
            return self._submit_file(path, str(path.resolve()), skip_invalid=skip_invalid,
                                     completion_window=completion_window, max_cost_usd=cap,
                                     deadline_s=deadline_s, on_rejected=on_rejected)
        with _spooled(requests) as path:
            return self._submit_file(path, "<python>", skip_invalid=skip_invalid,
                                     completion_window=completion_window, max_cost_usd=cap,
                                     deadline_s=deadline_s, on_rejected=on_rejected)

    def _submit_file(self, path: Path, source: str, *, skip_invalid: bool,
                     completion_window: str, max_cost_usd: Decimal | None,
                     deadline_s: float | None,
                     on_rejected: Callable[[RejectedLine], None] | None) -> Batch:
        config = self.config
        client = self.redis  # unreachable: fails before the file is read
        created_at, _ = client.time()  # the Redis clock, which the workers' checks also use
        batch_id = new_batch_id()
        plan = picker = None
        if deadline_s is not None:
            plan = self._plan(path, deadline_s, max_cost_usd)
            picker = LanePicker(config, plan)
        rejected: list[RejectedLine] = []

        def reject(line: RejectedLine) -> None:
            if len(rejected) < REJECTED_KEPT:
                rejected.append(line)
            if on_rejected is not None:
                on_rejected(line)

        with LineIntake(self.store.engine, batch_id, clock=lambda: created_at) as intake:
            check: FileCheck = take_in(path, config, intake, reject,
                                       processes=self.settings.intake_processes,
                                       lane_of=picker)
            if check.rejected and not skip_invalid:
                raise InvalidLinesError(source, rejected, check.rejected)  # rolls back
            on_batch_lane = dict(picker.batch_by_model) if picker else {}
            open_batch(client, self.store, path, config, batch_id, intake, check, created_at,
                       completion_window=completion_window, max_cost_usd=max_cost_usd,
                       input_file=source,
                       deadline_at=None if deadline_s is None else
                       int(created_at) + math.ceil(deadline_s),
                       batch_lane_by_model=on_batch_lane)
        if on_batch_lane:
            self.app.send_task(BATCH_SUBMIT_TASK, args=[batch_id], queue=BATCH_QUEUE)
        feeder = self.feeder(batch_id)
        queued = 0
        with feeder.holding_lock():  # a worker's feeding loop may look at the new batch
            while sent := feeder.feed_once():
                queued += sent
        return Batch(self, batch_id, Submission(dict(check.accepted_by_model), check.rejected,
                                                queued, sum(on_batch_lane.values()), plan))

    def plan_turnaround_s(self, provider: str) -> float:
        """The turnaround plans assume for a provider's Batch API: the median of its last
        finished batches, else CORRAL_BATCH_TURNAROUND_S."""
        seen = self.store.provider_batches.turnaround_s(provider)
        return self.settings.batch_turnaround_s if seen is None else seen

    def _plan(self, path: Path, deadline_s: float, max_cost_usd: Decimal | None) -> Plan:
        """The lanes for a file's lines (one more validation pass, counting only)."""
        estimate = Estimate(self.config)
        check_file(path, self.config, lambda _line: None, estimate.add)
        return plan_lanes(estimate.lanes, deadline_s, self.plan_turnaround_s, max_cost_usd,
                          self.hedge_margin_s)

    @property
    def hedge_margin_s(self) -> float:
        """How early a hedge must start beyond the live time its lines need: two poll
        intervals (it is seen up to one late, and its cancel may take one more) and a request
        deadline (its last call may take that)."""
        return 2 * self.settings.batch_poll_s + self.settings.request_deadline_s

    def feed_in_thread(self, batch_id: str) -> Feeder:
        """Feed the rest of the batch from a daemon thread (stop it with the returned
        feeder's `stop`); workers take over if this process dies."""
        feeder = self.feeder(batch_id)
        if feeder.state().unfed:
            threading.Thread(target=_feed_quietly, args=(feeder,), name="corral-feeder",
                             daemon=True).start()
        return feeder


def _feed_quietly(feeder: Feeder) -> None:
    """Feed until done; errors end this thread only: the workers' feeding loops go on."""
    try:
        feeder.run()
    except FeederBusyError:
        pass  # a worker's feeding loop has the batch: it feeds the rest
    except (CorralError, redis.RedisError) as err:
        log.warning(
            "this process stopped feeding (%s); the workers feed the rest", err)


@contextmanager
def _spooled(requests: Iterable[Mapping[str, Any]]) -> Iterator[Path]:
    """Write an iterable of request dicts to a private JSONL file, removed afterwards."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, removed at the end)
        "w", encoding="utf-8", suffix=".jsonl", prefix="corral-", delete=False)
    path = Path(handle.name)
    try:
        with handle:
            for index, item in enumerate(requests):
                try:
                    line = json.dumps(_as_line(item, index), ensure_ascii=False,
                                      separators=(",", ":"))
                except (TypeError, ValueError) as err:
                    raise ValueError(f"request {index} is not JSON: {err}") from None
                handle.write(line + "\n")
        yield path
    finally:
        path.unlink(missing_ok=True)


def _as_line(item: Mapping[str, Any], index: int) -> Any:
    """A batch line from a dict: as it is when it has a body, else the dict is the body."""
    if not isinstance(item, Mapping):
        return item  # the validator names the line and what is wrong with it
    if "body" in item:
        return dict(item)
    return {"custom_id": f"request-{index}", "method": "POST", "url": CHAT_COMPLETIONS_URL,
            "body": dict(item)}
