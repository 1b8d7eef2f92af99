"""The `status --watch` frame and loop on real Redis and a record store, driven by a fake clock
and a fake sleep."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import redis
from rich.console import Console

from corral.config import load_config
from corral.errors import BatchNotFoundError
from corral.records import error_record, result_record
from corral.redis_keys import BatchKeys
from corral.stats import stat_field
from corral.store import RecordRow, RecordStore, Store
from producer.watch import (
    EXIT_FAILED_LINES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BatchWatch,
    period_label,
    poll,
    run_watch,
    scopes_by_model,
)
from tests.store_batches import numbered, open_test_batch

RUN_S = 7  # a batch's lines end this long after it was created


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False, color_system=None), out


def finish_lines(client: redis.Redis, store: Store, batch_id: str, model: str, count: int, *,
                 failed: bool = False) -> None:
    """What workers' line ends do for the next `count` lines of `model`, without a worker:
    their records into the store (which ends the batch with its last line, RUN_S after it
    was created) and the call's counters into Redis's live stats."""
    row = store.batches.get(batch_id)
    assert row is not None
    records = RecordStore(store.engine, clock=lambda: row["created_at"] + RUN_S)
    lines = store.lines.unended(batch_id, model, 0, count)
    assert len(lines) == count
    records.write([RecordRow(batch_id, line.custom_id, error_record(
        line.custom_id, code="server_error_exhausted", message="gave up") if failed else
        result_record(line.custom_id, request_id="r", body={}),
        "server_error_exhausted" if failed else None, line.line_no) for line in lines])
    outcome = "failed" if failed else "completed"
    for counter, amount in {outcome: count, "calls": count, "input_tokens": 100 * count,
                            "output_tokens": 20 * count, "cost_nusd": 1500 * count,
                            "latency_le_250": count}.items():
        client.hincrby(BatchKeys(batch_id).stats, stat_field(model, counter), amount)


def new_batch(client: redis.Redis, store: Store, models: dict[str, int],
              waiting: dict[str, int] | None = None) -> str:
    """A batch whose lines per model were all sent to the queues, but `waiting` of them
    (still only in the store)."""
    batch_id = open_test_batch(client, store, numbered(models))
    for model, count in models.items():
        fed = count - (waiting or {}).get(model, 0)
        client.hset(BatchKeys(batch_id).stats, stat_field(model, "enqueued"), fed)
        client.hset(BatchKeys(batch_id).meta, f"fed:{model}", fed)
    return batch_id


def stepping(clock: FakeClock, step: Callable[[], None]) -> Callable[[float], None]:
    """A sleep that advances the fake clock and lets the fleet make progress meanwhile."""

    def sleep(seconds: float) -> None:
        clock.now_s += seconds
        step()

    return sleep


def test_frame_shows_counts_rates_against_limits_spend_and_eta(redis_client, store: Store,
                                                               write_config) -> None:
    config = load_config(write_config())
    batch_id = new_batch(redis_client, store, {"big": 6, "small": 4}, waiting={"small": 2})
    clock = FakeClock()
    view = BatchWatch(scopes_by_model(config), period_s=60, clock=clock)
    out_console, out = console()
    out_console.print(view.frame(poll(redis_client, store, [batch_id])))
    first = out.getvalue()
    assert "done 0/10" in first and "ETA -" in first and "100,000" in first
    finish_lines(redis_client, store, batch_id, "big", 4)
    finish_lines(redis_client, store, batch_id, "small", 1, failed=True)
    clock.now_s = 10
    out_console, out = console()
    out_console.print(view.frame(poll(redis_client, store, [batch_id])))
    text = out.getvalue()
    assert "done 4/10  failed 1" in text
    assert "spent $0.000008" in text  # 5 lines × 1,500 nano-USD
    assert "ETA 10s" in text  # 5 lines in 10 s, 5 left
    big = next(line for line in text.splitlines() if line.lstrip().startswith("big"))
    # 4 calls in 10 s = 24/min against rpm 100,000; 480 tokens = 2,880/min against 10,000,000
    assert "24 / 100,000" in big and "2,880 / 10,000,000" in big
    assert "≤ 250 ms" in big and "$0.000006" in big
    small = next(line for line in text.splitlines() if line.lstrip().startswith("small"))
    cells = [cell.strip() for cell in small.split("│")]
    assert cells[1:5] == ["0", "1", "1", "2"]  # done, failed, queued, waiting


def test_frame_lists_the_provider_batches_its_batch_lane_lines_wait_on(redis_client,
                                                                      store: Store) -> None:
    on_lane = new_batch(redis_client, store, {"small": 4})
    live_only = new_batch(redis_client, store, {"small": 2})
    store.provider_batches.add("batch_prov_1", on_lane, "openai", "small", "in_progress",
                               ["small-1", "small-2", "small-3"], created_at=1_700_000_000)
    store.provider_batches.update("batch_prov_1", done=2)
    view = BatchWatch({}, period_s=60, clock=FakeClock())
    out_console, out = console()
    out_console.print(view.frame(poll(redis_client, store, [on_lane, live_only])))
    text = out.getvalue()
    row = next(line for line in text.splitlines() if "batch_prov_1" in line)
    cells = [cell.strip() for cell in row.split("│")]
    assert cells[1:7] == ["batch_prov_1", "openai", "small", "in_progress", "2", "3"]
    assert f"Provider batches of {on_lane}" in text
    assert f"Provider batches of {live_only}" not in text


def test_watch_ends_with_the_batch_and_exit_0(redis_client, store: Store,
                                              write_config) -> None:
    batch_id = new_batch(redis_client, store, {"big": 4})
    clock = FakeClock()
    out_console, out = console()
    view = BatchWatch(scopes_by_model(load_config(write_config())), period_s=60, clock=clock)
    sleep = stepping(clock, lambda: finish_lines(redis_client, store, batch_id, "big", 2))
    code = run_watch(redis_client, store, out_console, view, batch_id=batch_id, interval_s=1,
                     sleep=sleep)
    assert code == EXIT_OK
    assert clock.now_s == 2
    text = out.getvalue()
    assert "completed" in text and "done 4/4  failed 0" in text and "elapsed 7s" in text


def test_watch_exits_1_when_lines_failed(redis_client, store: Store) -> None:
    batch_id = new_batch(redis_client, store, {"big": 2})
    clock = FakeClock()
    out_console, _ = console()
    sleep = stepping(clock, lambda: finish_lines(redis_client, store, batch_id, "big", 1,
                                                 failed=True))
    code = run_watch(redis_client, store, out_console, BatchWatch({}, period_s=60, clock=clock),
                     batch_id=batch_id, interval_s=0.5, sleep=sleep)
    assert code == EXIT_FAILED_LINES
    assert clock.now_s == 1  # both lines: the batch ended (failed) with the second


def test_a_batch_deleted_while_watched_is_never_reported_as_finished(redis_client,
                                                                     store: Store) -> None:
    batch_id = new_batch(redis_client, store, {"big": 2})
    out_console, _ = console()

    def deleted(seconds: float) -> None:
        assert store.batches.delete(batch_id)

    with pytest.raises(BatchNotFoundError, match=f"batch {batch_id} was deleted while watched"):
        run_watch(redis_client, store, out_console, BatchWatch({}, period_s=60),
                  batch_id=batch_id, interval_s=1, sleep=deleted)


@pytest.mark.parametrize("left", ["nothing", "a late writer's counter"])
def test_a_batch_redis_lost_is_still_watched_from_the_store(redis_client, store: Store,
                                                            left: str) -> None:
    batch_id = new_batch(redis_client, store, {"big": 2})
    clock = FakeClock()
    out_console, out = console()

    def redis_loses_everything() -> None:
        redis_client.flushdb()
        if left != "nothing":  # what a call in flight wrote before scripts checked the batch
            redis_client.hincrby(BatchKeys(batch_id).meta, "completed", 2)
        (polled,) = poll(redis_client, store, [batch_id])
        assert polled.batch["status"] == "in_progress"
        assert polled.batch["request_counts"] == {"total": 2, "completed": 0, "failed": 0}

    steps = iter([redis_loses_everything,
                  lambda: finish_lines(redis_client, store, batch_id, "big", 2)])
    code = run_watch(redis_client, store, out_console, BatchWatch({}, period_s=60, clock=clock),
                     batch_id=batch_id, interval_s=1, sleep=stepping(clock, lambda: next(steps)()))
    assert code == EXIT_OK
    assert clock.now_s == 2  # it ended when its lines did, not when Redis lost them
    assert "done 2/2  failed 0" in out.getvalue()


def test_ctrl_c_leaves_the_batch_running_and_exits_130(redis_client, store: Store) -> None:
    batch_id = new_batch(redis_client, store, {"big": 2})
    out_console, _ = console()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    code = run_watch(redis_client, store, out_console, BatchWatch({}, period_s=60),
                     batch_id=batch_id, interval_s=1, sleep=interrupted)
    assert code == EXIT_INTERRUPTED
    assert redis_client.hget(BatchKeys(batch_id).meta, "status") == "in_progress"
    row = store.batches.get(batch_id)
    assert row is not None and row["status"] == "in_progress"


def test_without_a_batch_every_active_one_is_watched_until_all_end(redis_client,
                                                                   store: Store) -> None:
    first = new_batch(redis_client, store, {"big": 2})
    second = new_batch(redis_client, store, {"small": 1})
    ended = new_batch(redis_client, store, {"small": 1})
    finish_lines(redis_client, store, ended, "small", 1)
    clock = FakeClock()
    out_console, out = console()
    steps = iter([lambda: finish_lines(redis_client, store, first, "big", 2),
                  lambda: finish_lines(redis_client, store, second, "small", 1)])
    code = run_watch(redis_client, store, out_console, BatchWatch({}, period_s=60, clock=clock),
                     batch_id=None, interval_s=1, sleep=stepping(clock, lambda: next(steps)()))
    assert code == EXIT_OK
    assert clock.now_s == 2
    text = out.getvalue()
    assert first in text and second in text and ended not in text


def test_without_active_batches_it_says_so_and_exits_0(redis_client, store: Store) -> None:
    out_console, out = console()
    code = run_watch(redis_client, store, out_console, BatchWatch({}, period_s=60),
                     batch_id=None, interval_s=1,
                     sleep=lambda _: pytest.fail("no batch to wait for"))
    assert code == EXIT_OK and "no active batches" in out.getvalue()


@pytest.mark.parametrize(("period_s", "label"), [(60, "min"), (6, "6s"), (0.5, "0.5s")])
def test_rates_are_labelled_with_the_limits_period(period_s: float, label: str) -> None:
    assert period_label(period_s) == label
