"""`--deadline` plans: the batch lane when the deadline leaves room to hedge, live otherwise,
and the budget moving lines to the batch lane."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from click.testing import CliRunner

from corral.config import RateScope
from producer.cli import cli
from producer.planner import ScopeLines, all_batch, all_live, plan_lanes

LIVE_USD, BATCH_USD = Decimal("0.002"), Decimal("0.001")  # per line


def lines(count: int, *, rpm: int = 60, batchable: bool = True,
          provider: str = "p") -> ScopeLines:
    """`count` lines on a scope that admits `rpm` requests a minute (tokens never limit)."""
    scope = ScopeLines(RateScope(name=f"{provider}:m", rpm=rpm, tpm=10**9), provider, batchable)
    for _ in range(count):
        scope.add(10, LIVE_USD, BATCH_USD)
    return scope


def turnaround(seconds: float):
    return lambda _provider: seconds


def test_a_loose_deadline_sends_every_line_to_the_batch_lane_at_half_price() -> None:
    scopes = {"a": lines(1000)}  # 1 line/s live after the first 60: 940 s
    plan = plan_lanes(scopes, deadline_s=7200, turnaround_s=turnaround(600))
    assert (plan.live_lines, plan.batch_lines) == (0, 1000)
    assert plan.cost_usd == 1000 * BATCH_USD
    assert plan.cost_usd == all_live(scopes, turnaround(600)).cost_usd / 2
    assert plan.finish_s == 600


def test_a_deadline_inside_the_turnaround_keeps_every_line_live() -> None:
    scopes = {"a": lines(1000)}
    plan = plan_lanes(scopes, deadline_s=500, turnaround_s=turnaround(600))
    assert (plan.live_lines, plan.batch_lines) == (1000, 0)
    assert plan.as_json() == all_live(scopes, turnaround(600)).as_json() | {}
    assert plan.finish_s == 940


def test_a_tight_deadline_batches_only_what_the_live_lane_could_still_hedge() -> None:
    # Stalled at the turnaround (600 s), 300 s remain, planned as 300 / 1.1 = 272.7 s (the
    # live lane's slack): the live lane runs 332 lines in them (60 at once, then 1 a
    # second). Those go to the batch lane, the rest run live now.
    scopes = {"a": lines(1000)}
    plan = plan_lanes(scopes, deadline_s=900, turnaround_s=turnaround(600))
    assert (plan.live_lines, plan.batch_lines) == (668, 332)
    assert plan.cost_usd == 668 * LIVE_USD + 332 * BATCH_USD
    assert plan.finish_s == 608  # the 668 live lines take 608 s


def test_the_hedge_margin_shortens_the_window_the_live_lane_can_hedge_in() -> None:
    # Two polls and a request deadline (100 s here) off the 300 s after the turnaround.
    plan = plan_lanes({"a": lines(1000)}, deadline_s=900, turnaround_s=turnaround(600),
                      hedge_margin_s=100)
    assert plan.batch_lines == 241  # 60 at once, then 1 a second for 200 / 1.1 s


def test_lines_the_live_lane_cannot_finish_in_time_go_to_the_batch_lane_anyway() -> None:
    scopes = {"a": lines(3000)}  # 2,940 s live, against a 1,000 s deadline
    plan = plan_lanes(scopes, deadline_s=1000, turnaround_s=turnaround(900))
    assert plan.batch_lines == 3000 - 1060  # live finishes 1,060 lines in 1,000 s


def test_a_provider_without_a_batch_api_stays_live() -> None:
    scopes = {"a": lines(100), "b": lines(100, batchable=False, provider="q")}
    plan = plan_lanes(scopes, deadline_s=86400, turnaround_s=turnaround(600))
    assert plan.splits["a"].batch == 100 and plan.splits["b"].batch == 0
    everything = all_batch(scopes, turnaround(600))
    assert (everything.live_lines, everything.batch_lines) == (100, 100)


def test_a_budget_under_the_plan_moves_lines_to_the_batch_lane() -> None:
    scopes = {"a": lines(1000)}
    free = plan_lanes(scopes, deadline_s=900, turnaround_s=turnaround(600))
    budget = Decimal("1.5")  # the deadline alone would cost 640 × 0.002 + 360 × 0.001 = 1.64
    assert free.cost_usd > budget
    capped = plan_lanes(scopes, deadline_s=900, turnaround_s=turnaround(600),
                        max_cost_usd=budget)
    assert capped.cost_usd <= budget
    assert capped.batch_lines == 500  # 140 more lines, each saving $0.001


def test_a_budget_between_two_lines_savings_rounds_up_to_stay_under_it() -> None:
    scopes = {"a": lines(1000)}
    budget = Decimal("1.4995")  # 140.5 lines' savings over the deadline-only plan
    capped = plan_lanes(scopes, deadline_s=900, turnaround_s=turnaround(600),
                        max_cost_usd=budget)
    assert capped.batch_lines == 501 and capped.cost_usd <= budget


def test_turnarounds_are_per_provider() -> None:
    scopes = {"a": lines(100, provider="fast"), "b": lines(100, provider="slow")}
    plan = plan_lanes(scopes, deadline_s=3600,
                      turnaround_s=lambda provider: 60 if provider == "fast" else 7200)
    assert plan.splits["a"].batch == 100 and plan.splits["b"].batch == 0


def test_estimate_prints_the_plan_beside_all_live_and_all_batch(tmp_path: Path,
                                                                write_config) -> None:
    config = write_config(small_tpm=1000)
    config.write_text(config.read_text().replace(
        '[providers.sim]', '[providers.sim]\nbatch_api = "openai"'))
    body = {"model": "small", "messages": [{"role": "user", "content": "abcdefgh"}]}
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"e{i}", "method": "POST",
                                        "url": "/v1/chat/completions", "body": body}) + "\n"
                            for i in range(100)))
    runner = CliRunner(env={"CORRAL_BATCH_TURNAROUND_S": "600"})
    result = runner.invoke(cli, ["--config", str(config), "estimate", str(path), "--json",
                                 "--deadline", "2h"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    plans = data["plans"]
    assert data["deadline_s"] == 7200
    assert plans["live"]["lines"] == {"live": 100, "batch": 0}
    assert plans["live"]["finish_s"] == data["duration_s"] == 720.0
    assert plans["batch"]["lines"] == {"live": 0, "batch": 100}
    assert plans["plan"] == plans["batch"]  # 2 h leaves room to hedge all of it
    assert Decimal(plans["plan"]["cost_usd"]) * 2 == Decimal(plans["live"]["cost_usd"]) \
        == Decimal(data["total"]["cost_usd"])
    assert plans["plan"]["finish_s"] == 600

    table = runner.invoke(cli, ["--config", str(config), "estimate", str(path),
                                "--deadline", "5m"])
    assert table.exit_code == 0, table.output
    assert "Lanes for a deadline of 5m" in table.stdout
    plan_row = next(line for line in table.stdout.splitlines() if line.startswith("│ plan"))
    assert "100" in plan_row.split("│")[2]  # 5 minutes is inside the turnaround: all live


def test_lines_the_batch_lane_cannot_take_are_named_with_the_reason(tmp_path: Path,
                                                                  write_config) -> None:
    from corral.config import load_config
    from producer.lanes import batch_lane_refusal

    path = write_config()
    config = load_config(path)
    small = config.models["small"]
    body = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}
    assert batch_lane_refusal(config, small, "x", lambda: body) == \
        "provider sim has no batch_api"
    path.write_text(path.read_text().replace(
        '[providers.sim]', '[providers.sim]\nbatch_api = "anthropic"'))
    config = load_config(path)
    small = config.models["small"]
    assert batch_lane_refusal(config, small, "ok_id-1", lambda: body) is None
    assert "custom_id not accepted" in str(batch_lane_refusal(config, small, "a.b",
                                                              lambda: body))
    assert "n: " in str(batch_lane_refusal(config, small, "ok", lambda: {**body, "n": 2}))

    lines = tmp_path / "l.jsonl"
    lines.write_text("".join(json.dumps({"custom_id": f"line.{i}", "method": "POST",
                                         "url": "/v1/chat/completions",
                                         "body": {**body, "model": "small"}}) + "\n"
                             for i in range(3)))
    result = CliRunner().invoke(cli, ["--config", str(path), "estimate", str(lines),
                                      "--deadline", "2h", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["plans"]["plan"]["lines"] == {"live": 3, "batch": 0}
    assert list(data["live_only"].values()) == [3]
    assert "custom_id not accepted" in next(iter(data["live_only"]))


def test_with_flex_as_cheap_as_the_batch_lane_the_plan_stays_live_at_flex() -> None:
    scope = ScopeLines(RateScope(name="p:m", rpm=60, tpm=10**9), "p", True)
    for _ in range(100):
        scope.add(10, LIVE_USD, BATCH_USD, flex_cost_usd=BATCH_USD)
    plan = plan_lanes({"a": scope}, deadline_s=7200, turnaround_s=turnaround(600))
    assert (plan.live_lines, plan.batch_lines) == (100, 0)  # no cheaper there, and slower
    assert plan.cost_usd == 100 * BATCH_USD
    assert all_live({"a": scope}, turnaround(600)).cost_usd == 100 * LIVE_USD
