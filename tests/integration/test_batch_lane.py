"""The batch lane end to end: `submit --deadline` plans lines onto the simulator's Batch API,
workers submit, poll and file them at the batch price; a stalled provider batch is hedged live
before the deadline."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion

from corral.store import open_store
from producer.views import wait_for_batch
from tests.integration.helpers import ledger_rows, request, stored_records, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LANE_TIMINGS = {"CORRAL_BATCH_POLL_S": "0.5", "CORRAL_BATCH_TURNAROUND_S": "5"}


def batch_api_config(write_config, base_url: str, api: str = "openai") -> Path:
    config = write_config(f"{base_url}/v1")
    config.write_text(config.read_text().replace(
        "[providers.sim]", f'[providers.sim]\nbatch_api = "{api}"'))
    return config


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_loose_deadline_runs_every_line_on_the_batch_api_at_half_price(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral, api: str) -> None:
    sim = start_simulator("--batch-lines-per-s", "200")
    config = batch_api_config(write_config, sim.base_url, api)
    lines = [request(f"b{i}", "small" if i % 3 else "big", f"say {i}") for i in range(30)]
    batch_file = write_jsonl(tmp_path / "b.jsonl", lines)

    estimate = corral("estimate", str(batch_file), "--deadline", "1h", "--json",
                      config=config, env_extra=LANE_TIMINGS)
    assert estimate.returncode == 0, estimate.stderr
    plans = json.loads(estimate.stdout)["plans"]
    assert plans["plan"]["lines"] == {"live": 0, "batch": 30}
    assert Decimal(plans["plan"]["cost_usd"]) * 2 == Decimal(plans["live"]["cost_usd"])

    submitted = corral("submit", str(batch_file), "--deadline", "1h", config=config,
                       env_extra=LANE_TIMINGS)
    assert submitted.returncode == 0, submitted.stderr
    assert "30 go to the providers' Batch APIs" in submitted.stderr
    batch_id = submitted.stdout.strip()
    start_workers(config, ["corral.small", "corral.big"], env=LANE_TIMINGS)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 30, "completed": 30, "failed": 0}

    # One record per line, OpenAI-shaped, answered by the provider batches (two: one model
    # per provider batch), none live.
    records = stored_records(batch_id)
    assert sorted(records) == sorted(f"b{i}" for i in range(30))
    for record in records.values():
        ChatCompletion.model_validate(record["response"]["body"])
    stats = sim.stats()
    assert stats["by_lane"] == {"live": 0, "batch": 30}
    kept = open_store().provider_batches.of_batch(batch_id)
    assert sorted(row["model"] for row in kept) == ["big", "small"]
    assert all(row["collected"] and row["hedged_at"] is None for row in kept)

    # Every line's one call is on the ledger at the batch price: half the live price.
    rows = ledger_rows(batch_id)
    assert len(rows) == 30 and {row["lane"] for row in rows} == {"batch"}
    cost = corral("cost", batch_id, "--json", config=config)
    assert cost.returncode == 0, cost.stderr
    total = json.loads(cost.stdout)["total"]
    assert total["requests"] == 30
    assert Decimal(total["cost_usd"]) == sum(Decimal(row["cost_usd"]) for row in rows) > 0

    out = tmp_path / "out.jsonl"
    assert corral("results", batch_id, "-o", str(out), config=config).returncode == 0
    assert len(out.read_text().splitlines()) == 30


def test_a_stalled_provider_batch_is_hedged_live_before_the_deadline(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator("--batch-stall")
    config = batch_api_config(write_config, sim.base_url)
    lines = [request(f"h{i}", "small", f"say {i}") for i in range(20)]
    # Hedged at 7.5 s: the deadline, less a request deadline (3 s), two polls (0.5 s each)
    # and the live lane's time for 20 lines (none under these limits)
    submitted = corral("submit", str(write_jsonl(tmp_path / "h.jsonl", lines)),
                       "--deadline", "12s", config=config, env_extra=LANE_TIMINGS)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    start_workers(config, ["corral.small"], env=LANE_TIMINGS)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 20, "completed": 20, "failed": 0}

    store = open_store()
    [kept] = store.provider_batches.of_batch(batch_id)
    assert kept["hedged_at"] is not None
    deadline_at = json.loads(store.batches.get(batch_id)["options"])["deadline_at"]
    assert kept["hedged_at"] < deadline_at
    # Every line answered live, before the deadline; the stalled batch billed nothing.
    assert sim.stats()["by_lane"] == {"live": 20, "batch": 0}
    rows = ledger_rows(batch_id)
    assert {row["lane"] for row in rows} == {"live"} and len(rows) == 20
    with store.engine.connect() as connection:
        from sqlalchemy import func, select

        from corral.store.schema import records

        last = connection.execute(select(func.max(records.c.written_at)).where(
            records.c.batch_id == batch_id)).scalar_one()
    assert last <= deadline_at


def test_status_shows_the_provider_batches_and_cancel_cancels_them(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    from tests.integration.helpers import poll

    sim = start_simulator("--batch-stall")
    config = batch_api_config(write_config, sim.base_url)
    lines = [request(f"c{i}", "small", f"say {i}") for i in range(10)]
    submitted = corral("submit", str(write_jsonl(tmp_path / "c.jsonl", lines)),
                       "--deadline", "1h", config=config, env_extra=LANE_TIMINGS)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    start_workers(config, ["corral.small"], env=LANE_TIMINGS)
    store = open_store()
    [kept] = poll(lambda: store.provider_batches.of_batch(batch_id), timeout_s=30)

    status = corral("status", batch_id, "--json", config=config)
    assert status.returncode == 0, status.stderr
    [shown] = json.loads(status.stdout)["provider_batches"]
    assert (shown["id"], shown["model"], shown["total"], shown["done"]) == \
        (kept["id"], "small", 10, 0)
    table = corral("status", batch_id, config=config)
    assert f"Provider batches of {batch_id}" in table.stdout and kept["id"] in table.stdout

    cancelled = corral("cancel", batch_id, config=config)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "cancelled"
    # The provider batch is cancelled at the provider, then collected (nothing billed).
    poll(lambda: (row := store.provider_batches.get(kept["id"])) and row["collected"],
         timeout_s=30)
    assert store.provider_batches.get(kept["id"])["status"] == "cancelled"
    records = stored_records(batch_id)
    assert {record["error"]["code"] for record in records.values()} == {"batch_cancelled"}
    assert sim.stats()["by_lane"]["batch"] == 0


def run_hedged(tmp_path: Path, config: Path, start_workers, corral) -> str:
    """Submit 20 lines with a 10 s deadline; the workers run them; returns the batch id once
    every line has ended."""
    lines = [request(f"s{i}", "small", f"say {i}") for i in range(20)]
    submitted = corral("submit", str(write_jsonl(tmp_path / "s.jsonl", lines)),
                       "--deadline", "10s", config=config, env_extra=LANE_TIMINGS)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    start_workers(config, ["corral.small"], env=LANE_TIMINGS)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    return batch_id


def collected_provider_batch(batch_id: str) -> dict:
    from tests.integration.helpers import poll

    store = open_store()
    [kept] = poll(lambda: [row for row in store.provider_batches.of_batch(batch_id)
                           if row["collected"]], timeout_s=30)
    return kept


def test_a_slow_provider_batch_hedged_keeps_its_answers_and_runs_only_the_rest_live(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    # The provider answers 2 lines a second: by the hedge some are done there but not filed
    # (a provider batch is read once it ends). The hedge cancels it, files the answers of
    # its partial output, and runs only the rest live: no line is paid twice.
    sim = start_simulator("--batch-lines-per-s", "2")
    config = batch_api_config(write_config, sim.base_url)
    batch_id = run_hedged(tmp_path, config, start_workers, corral)

    kept = collected_provider_batch(batch_id)
    assert kept["hedged_at"] is not None and kept["status"] == "cancelled"
    by_lane = sim.stats()["by_lane"]
    assert 0 < by_lane["batch"] < 20 and by_lane["live"] + by_lane["batch"] == 20
    rows = ledger_rows(batch_id)
    assert len(rows) == 20 and all(row["productive"] for row in rows)
    assert sum(row["lane"] == "batch" for row in rows) == by_lane["batch"]


def test_a_provider_batch_slow_to_cancel_is_hedged_live_and_ledgers_both_calls(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    # The cancel takes 3 s, during which the provider goes on answering: after a poll the
    # hedge runs every unfinished line live. The provider's answers then find the live
    # records: kept out, their calls on the ledger as unproductive.
    sim = start_simulator("--batch-lines-per-s", "2", "--batch-cancel-s", "3")
    config = batch_api_config(write_config, sim.base_url)
    batch_id = run_hedged(tmp_path, config, start_workers, corral)

    kept = collected_provider_batch(batch_id)
    assert kept["hedged_at"] is not None and kept["status"] == "cancelled"
    answered_there = sim.stats()["by_lane"]["batch"]
    assert 0 < answered_there < 20
    rows = ledger_rows(batch_id)
    live = [row for row in rows if row["lane"] == "live"]
    there = [row for row in rows if row["lane"] == "batch"]
    assert len(live) == 20 and all(row["productive"] for row in live)
    assert len(there) == answered_there and not any(row["productive"] for row in there)
    report = json.loads(corral("cost", batch_id, "--json", config=config).stdout)["total"]
    assert report["requests"] == 20 + answered_there
    assert Decimal(report["unproductive_cost_usd"]) == sum(
        Decimal(row["cost_usd"]) for row in there) > 0


def test_the_models_enqueued_token_limit_sends_provider_batches_one_after_another(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator("--batch-lines-per-s", "100")
    config = batch_api_config(write_config, sim.base_url)
    config.write_text(config.read_text().replace(
        'aliases = ["cheap"]', 'aliases = ["cheap"]\nbatch_queue_tokens = 1000'))
    lines = [request(f"q{i}", "small", f"say {i}") for i in range(20)]  # ~133 tokens each
    submitted = corral("submit", str(write_jsonl(tmp_path / "q.jsonl", lines)),
                       "--deadline", "1h", config=config, env_extra=LANE_TIMINGS)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    start_workers(config, ["corral.small"], env=LANE_TIMINGS)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=90)
    assert batch["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    assert sim.stats()["by_lane"] == {"live": 0, "batch": 20}

    # In the order they ran: times are whole seconds, so of two created in one second the
    # one that ended first ran first.
    kept = sorted(open_store().provider_batches.of_batch(batch_id),
                  key=lambda row: (row["created_at"], row["ended_at"]))
    assert len(kept) >= 3 and sum(row["total"] for row in kept) == 20
    assert all(0 < row["tokens"] <= 1000 for row in kept)
    for earlier, later in itertools.pairwise(kept):  # never two open at once
        assert later["created_at"] >= earlier["ended_at"]


def test_a_deadline_sends_the_live_lines_of_a_flex_model_at_flex_prices(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")  # no batch_api: every line runs live
    config.write_text(config.read_text().replace(
        'aliases = ["cheap"]', 'aliases = ["cheap"]\nflex = true'))
    lines = [request(f"f{i}", "small", f"say {i}") for i in range(10)]
    batch_file = write_jsonl(tmp_path / "f.jsonl", lines)
    estimate = json.loads(corral("estimate", str(batch_file), "--deadline", "1h", "--json",
                                 config=config).stdout)
    assert estimate["plans"]["plan"]["lines"] == {"live": 10, "batch": 0}
    assert Decimal(estimate["plans"]["plan"]["cost_usd"]) * 2 == \
        Decimal(estimate["plans"]["live"]["cost_usd"])

    submitted = corral("submit", str(batch_file), "--deadline", "1h", config=config)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    start_workers(config, ["corral.small"])
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
    records = stored_records(batch_id)
    assert {r["response"]["body"]["service_tier"] for r in records.values()} == {"flex"}
    rows = ledger_rows(batch_id)
    assert {row["lane"] for row in rows} == {"flex"} and len(rows) == 10
    model_price = (Decimal("0.1"), Decimal("0.4"))  # small's live price per MTok, in/out
    for row in rows:
        full = (row["input_tokens"] * model_price[0] + row["output_tokens"] * model_price[1]) \
            / 1_000_000
        assert Decimal(row["cost_usd"]) == full / 2
    # Without a deadline the same model runs at the default tier, full price.
    plain = corral("submit", str(batch_file), config=config)
    plain_id = plain.stdout.strip()
    wait_for_batch(open_store(), plain_id, show_progress=False, timeout_s=60)
    assert {row["lane"] for row in ledger_rows(plain_id)} == {"live"}


def test_run_with_a_deadline_uses_the_batch_api_on_one_machine(
        tmp_path: Path, redis_client, write_config, start_simulator, corral) -> None:
    sim = start_simulator("--batch-lines-per-s", "200")
    config = batch_api_config(write_config, sim.base_url)
    batch_file = write_jsonl(tmp_path / "r.jsonl",
                             [request(f"r{i}", "small", f"say {i}") for i in range(12)])
    result = corral("run", str(batch_file), "--deadline", "1h", "--concurrency", "4",
                    config=config, env_extra=LANE_TIMINGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "12 go to the providers' Batch APIs" in result.stderr
    lines = (tmp_path / "r.results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(12))
    assert sim.stats()["by_lane"] == {"live": 0, "batch": 12}


def test_a_mixed_plan_runs_part_live_and_part_on_the_batch_api(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    # small admits 2,000 tokens a minute (lines reserve ~133): 15 at once, then one every
    # ~4 s. With 30 s to go and a 5 s turnaround, the live lane could still hedge about 19
    # lines after the turnaround, (30 - 5 - 2 polls - 3 s deadline) / 1.1 slack: those go to
    # the batch lane, the rest run live now.
    sim = start_simulator("--batch-lines-per-s", "200")
    config = write_config(f"{sim.base_url}/v1", small_tpm=2000)
    config.write_text(config.read_text().replace(
        "[providers.sim]", '[providers.sim]\nbatch_api = "openai"'))
    batch_file = write_jsonl(tmp_path / "m.jsonl",
                             [request(f"m{i}", "small", f"say {i}") for i in range(40)])
    estimate = corral("estimate", str(batch_file), "--deadline", "30s", "--json",
                      config=config, env_extra=LANE_TIMINGS)
    assert estimate.returncode == 0, estimate.stderr
    plans = json.loads(estimate.stdout)["plans"]
    live, batch = plans["plan"]["lines"]["live"], plans["plan"]["lines"]["batch"]
    assert live > 0 and batch > 0 and live + batch == 40
    assert Decimal(plans["batch"]["cost_usd"]) < Decimal(plans["plan"]["cost_usd"]) \
        < Decimal(plans["live"]["cost_usd"])

    submitted = corral("submit", str(batch_file), "--deadline", "30s", config=config,
                       env_extra=LANE_TIMINGS)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    start_workers(config, ["corral.small"], env=LANE_TIMINGS)
    done = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=90)
    assert done["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
    rows = ledger_rows(batch_id)
    lanes = {lane: sum(1 for row in rows if row["lane"] == lane) for lane in ("live", "batch")}
    assert lanes == {"live": live, "batch": batch}  # as planned: nothing needed a hedge
    out = tmp_path / "out.jsonl"
    assert corral("results", batch_id, "-o", str(out), "--order", "input",
                  config=config).returncode == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["custom_id"] for r in records] == [f"m{i}" for i in range(40)]
    for record in records:
        ChatCompletion.model_validate(record["response"]["body"])


def test_a_worker_killed_while_it_holds_the_poll_leaves_no_line_behind(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral) -> None:
    import signal

    from tests.integration.helpers import poll

    sim = start_simulator("--batch-lines-per-s", "2")  # 10 lines: about 5 s at the provider
    config = batch_api_config(write_config, sim.base_url)
    lines = [request(f"k{i}", "small", f"say {i}") for i in range(10)]
    submitted = corral("submit", str(write_jsonl(tmp_path / "k.jsonl", lines)),
                       "--deadline", "1h", config=config, env_extra=LANE_TIMINGS)
    batch_id = submitted.stdout.strip()
    [first] = start_workers(config, ["corral.small"], env=LANE_TIMINGS)
    store = open_store()
    # Polled once: the next poll's countdown message is then held by this, the only worker.
    poll(lambda: [row for row in store.provider_batches.of_batch(batch_id)
                  if row["polled_at"] is not None], timeout_s=30)
    first.process.send_signal(signal.SIGKILL)  # its poll's countdown message dies with it
    [second] = start_workers(config, ["corral.small"], env=LANE_TIMINGS)
    batch = wait_for_batch(store, batch_id, show_progress=False, timeout_s=60)
    # Sooner than the broker gives back the dead worker's message (a 30 s visibility
    # timeout here): the sweep found the provider batch not polled and polled it.
    assert "not polled for" in second.log_path.read_text()
    assert batch["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
    [kept] = store.provider_batches.of_batch(batch_id)
    assert kept["collected"] and kept["hedged_at"] is None
    rows = ledger_rows(batch_id)  # one billed call per line, none counted twice
    assert sorted(row["custom_id"] for row in rows) == sorted(f"k{i}" for i in range(10))
    assert {row["lane"] for row in rows} == {"batch"}
    assert sim.stats()["by_lane"]["batch"] == 10
