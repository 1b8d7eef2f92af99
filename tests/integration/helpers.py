"""Small builders for integration tests' input files, and what they check and wait for."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from producer.local_stack import ChildProcess, stop_all


def write_jsonl(path: Path, lines: list[dict | str]) -> Path:
    """Write request lines (dicts as JSON, strings as they are)."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line,
                             ensure_ascii=False)) + "\n" for line in lines), encoding="utf-8")
    return path


def request(custom_id: str, model: str, text: str, **body: object) -> dict:
    """One batch input line."""
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], **body}}


def assert_complete(client, batch_id: str, total: int, served: int,
                    store_url: str | None = None) -> dict:
    """Every accepted line has exactly one terminal record in the store, no provider call that
    the simulator served is missing from the cost report (billed + unsettled calls), and Redis
    holds nothing of the ended lines (no request, attempt count or call mark)."""
    from corral.redis_keys import BatchKeys
    from corral.store import open_store
    from producer.batches import read_batch
    from producer.costs import batch_cost

    store = open_store(store_url)
    keys = BatchKeys(batch_id)
    batch = read_batch(store, batch_id)
    counts = batch["request_counts"]
    assert counts["total"] == total
    assert counts["completed"] + counts["failed"] == total, counts
    exported = [record["custom_id"] for record in store.records.iter_records(batch_id)]
    assert len(exported) == len(set(exported)) == total  # no line twice
    assert client.hlen(keys.inflight) == 0
    assert client.hlen(keys.bodies) == 0
    assert client.hlen(keys.attempts) == 0
    cost = batch_cost(store, batch_id).total
    assert cost.requests + cost.unsettled_calls >= served, (cost, served)
    return batch


def assert_each_line_called_once(client, batch_id: str, lines: int, served: int) -> None:
    """The provider served each line once, apart from calls whose outcome corral could not
    know (a timeout or a connection lost after sending), which it keeps as unsettled."""
    from corral.store import open_store
    from producer.costs import batch_cost

    unsettled = batch_cost(open_store(), batch_id, client=client).total.unsettled_calls
    assert lines <= served <= lines + unsettled, (lines, served, unsettled)


def poll(probe: Callable[[], Any], *, timeout_s: float = 30.0, interval_s: float = 0.2) -> Any:
    """Call `probe` until it returns something truthy (returned), or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        assert time.monotonic() < deadline, f"not reached within {timeout_s:g} s"
        time.sleep(interval_s)


def settled_live_counts(redis_client: Any, batch_id: str, lines: int) -> dict[str, dict]:
    """The batch's live counts by model once all `lines` have ended there: a line's record
    commits before Redis counts it, so the last counts can land just after the store reads the
    batch done."""
    from corral.redis_keys import BatchKeys
    from corral.stats import by_model

    def settled() -> dict[str, dict] | None:
        live = by_model(redis_client.hgetall(BatchKeys(batch_id).stats))
        ended = sum(c.get("completed", 0) + c.get("failed", 0) for c in live.values())
        return live if ended == lines else None

    return poll(settled, timeout_s=10)


def stored_records(batch_id: str, url: str | None = None) -> dict[str, dict]:
    """custom_id → the line's terminal record, from the test's record store."""
    from corral.store import open_store

    return {record["custom_id"]: record
            for record in open_store(url).records.iter_records(batch_id)}


def completion_order(batch_id: str, url: str | None = None) -> list[str]:
    """custom_ids in the order their records were written."""
    from corral.store import open_store

    return [record["custom_id"] for record in open_store(url).records.iter_records(batch_id)]


def record_count(batch_id: str, url: str | None = None) -> int:
    """How many lines of the batch have their record in the test's store."""
    from corral.store import open_store

    return open_store(url).records.count_records(batch_id)


def ledger_rows(batch_id: str, url: str | None = None) -> list[dict]:
    """The batch's ledger rows (billed and unsettled), from the test's store."""
    from corral.store import open_store

    return list(open_store(url).records.ledger_rows(batch_id))


def retry_history(batch_id: str, url: str | None = None) -> list[dict]:
    """The records `corral retry` replaced, oldest first, from the test's store."""
    from sqlalchemy import select

    from corral.store import open_store
    from corral.store.schema import retry_history as history

    with open_store(url).engine.connect() as connection:
        return [json.loads(record) for record in connection.execute(
            select(history.c.record).where(history.c.batch_id == batch_id)
            .order_by(history.c.id)).scalars()]


def stall_report(client: Any, batch_id: str, queues: tuple[str, ...] = ("corral.small",),
                 url: str | None = None, logs: Sequence[Path] = ()) -> str:
    """What a batch that did not end is waiting for, for an assertion's message: the store's
    counts and the lines without a record, the Redis state that should be moving them
    (broker queues, kombu's unacked messages, in-flight lines, leases, the feeder lease), and
    the last warnings of the processes' `logs`."""
    from sqlalchemy import select

    from corral.redis_keys import BATCH_INDEX, BatchKeys
    from corral.store import open_store
    from corral.store.schema import lines, records

    store = open_store(url)
    with store.engine.connect() as conn:
        ended = select(records.c.custom_id).where(records.c.batch_id == batch_id)
        waiting = conn.execute(select(lines.c.custom_id).where(
            lines.c.batch_id == batch_id, lines.c.custom_id.not_in(ended))).scalars().all()
    keys = BatchKeys(batch_id)
    try:
        redis_state = {
            "queues": {queue: client.llen(queue) for queue in queues},
            "unacked": client.hlen("unacked"), "unacked_index": client.zcard("unacked_index"),
            "inflight": client.hgetall(keys.inflight), "bodies": client.hlen(keys.bodies),
            "leases": sorted(client.scan_iter(keys.lease_pattern, count=1000))[:10],
            "feeder": client.get(keys.feeder),
            "meta": client.hmget(keys.meta, "status", "completed", "failed", "enqueued"),
            "indexed": client.zscore(BATCH_INDEX, batch_id) is not None,
            "suspects": client.smembers(keys.suspects),
            "brpop_clients": [(entry.get("name"), entry.get("addr"))
                              for entry in client.client_list()
                              if entry.get("cmd") in ("brpop", "blpop")]}
    except Exception as err:  # a report, not a check: say what failed
        redis_state = {"error": repr(err)}
    warnings = [line for path in logs
                for line in path.read_text(errors="replace").splitlines()
                if "WARNING" in line and "MainProcess]  " not in line][-20:]
    return (f"{len(waiting)} lines without a record: {waiting[:10]}; redis: {redis_state}"
            + "".join(f"\n  {line[:300]}" for line in warnings))


def stop_before_their_redis(children: Sequence[ChildProcess]) -> None:
    """Stop workers (or Flower) while the private Redis they use still answers: after it, a
    worker's warm shutdown waits out its reconnect attempts until the fixture kills it."""
    stop_all(children)
