"""`corral report`: the timeline read from the store, and the page built from it."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import Engine, insert

from corral.errors import ConfigError
from corral.store import (
    BatchRows,
    LedgerRow,
    LineStore,
    ProviderBatches,
    RecordRow,
    RecordStore,
    Store,
)
from corral.store.schema import batches
from corral.store.timeline import MAX_BUCKETS, batch_timeline, bucket_width_s
from producer.cli import cli
from producer.report import gather, report
from producer.report_html import render_report

NOW_S = 1_700_000_000
EVIL = '<script>alert("x")</script>'


class Clock:
    def __init__(self) -> None:
        self.now_s = float(NOW_S)

    def __call__(self) -> float:
        return self.now_s


def add_batch(engine: Engine, batch_id: str = "batch_r", total: int = 12) -> None:
    with engine.begin() as connection:
        connection.execute(insert(batches).values(
            id=batch_id, status="in_progress", completion_window="24h", total=total,
            created_at=NOW_S, expires_at=NOW_S + 86_400,
            options='{"models": ["big", "small"]}'))


def billed(custom_id: str, model: str, *, at_s: float, latency_s: float, cost: str,
           tokens: tuple[int, int] = (100, 10), rate_limited: int = 0,
           batch_id: str = "batch_r") -> LedgerRow:
    row: dict[str, Any] = {"custom_id": custom_id, "at": at_s, "latency_s": latency_s,
                           "rate_limited_before": rate_limited}
    return LedgerRow(batch_id, custom_id, 1, model, unsettled=False, productive=True,
                     input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=Decimal(cost),
                     list_cost_usd=Decimal(cost) * 2, row=row)


def result(custom_id: str, call: LedgerRow | None = None,
           code: str | None = None) -> RecordRow:
    record: dict[str, Any] = {"custom_id": custom_id,
                              "error": {"code": code} if code else None}
    return RecordRow("batch_r", custom_id, record, code, call=call)


@pytest.fixture()
def made(engine: Engine) -> tuple[Store, dict[str, LedgerRow]]:
    """A batch of 12 lines over 90 s: 10 results (one slow, one costly, one 429'd twice, one
    whose custom_id is a script tag), then 2 errors."""
    clock = Clock()
    store = Store(str(engine.url), engine, RecordStore(engine, clock=clock), BatchRows(engine),
                  LineStore(engine), ProviderBatches(engine))
    add_batch(engine)
    calls: dict[str, LedgerRow] = {}
    for i in range(10):
        custom_id = EVIL if i == 3 else f"q{i}"
        at_s = NOW_S + 5 + i * 8
        clock.now_s = at_s
        calls[custom_id] = billed(
            custom_id, "big" if i % 2 else "small", at_s=at_s,
            latency_s=9.5 if i == 7 else 0.2 + i / 100,
            cost="0.25" if i == 4 else f"0.00{i + 1}", tokens=(100 + i, 10 * i),
            rate_limited=2 if i == 5 else 0)
        store.records.write([result(custom_id, calls[custom_id])])
    clock.now_s = NOW_S + 90
    store.records.write([result("e1", code="rate_limit_exhausted"),
                         result("e2", code="server_error_exhausted")])
    return store, calls


def test_buckets_are_round_and_at_most_max_buckets() -> None:
    assert bucket_width_s(30) == 1
    assert bucket_width_s(121) == 2
    assert bucket_width_s(3600) == 30
    for span_s in (1, 59, 600, 86_400, 10 * 86_400):
        assert span_s / bucket_width_s(span_s) <= MAX_BUCKETS


def test_timeline_totals_equal_the_ledger(made: tuple[Store, dict[str, LedgerRow]]) -> None:
    store, calls = made
    timeline = batch_timeline(store.engine, "batch_r", NOW_S)
    assert timeline.bucket_s == 1 and timeline.buckets == 91
    assert sum(timeline.completed) == 10 and sum(timeline.failed) == 2
    assert timeline.failed[90] == 2
    assert sum(timeline.calls) == 10
    assert sum(timeline.cost_usd) == sum(c.cost_usd for c in calls.values())
    assert sum(map(sum, timeline.tokens.values())) == sum(
        c.input_tokens + c.output_tokens for c in calls.values())
    assert set(timeline.tokens) == {"big", "small"}
    # Line q5's two 429s, placed at its billed call's start (45 s − 0.25 s latency).
    assert sum(timeline.rate_limited) == 2 and timeline.rate_limited[44] == 2


def test_the_slowest_and_costliest_lines_come_first(
        made: tuple[Store, dict[str, LedgerRow]]) -> None:
    store, _ = made
    timeline = batch_timeline(store.engine, "batch_r", NOW_S)
    assert timeline.slowest[0].custom_id == "q7" and timeline.slowest[0].latency_s == 9.5
    assert timeline.costliest[0].custom_id == "q4"
    assert timeline.costliest[0].cost_usd == Decimal("0.25")
    assert len(timeline.slowest) == len(timeline.costliest) == 10
    latencies = [c.latency_s or 0 for c in timeline.slowest]
    assert latencies == sorted(latencies, reverse=True)


def test_a_batch_with_nothing_done_has_one_empty_bucket(engine: Engine) -> None:
    add_batch(engine, "batch_empty")
    timeline = batch_timeline(engine, "batch_empty", NOW_S)
    assert timeline.buckets == 1 and timeline.completed == [0] and timeline.slowest == []
    store = Store(str(engine.url), engine, RecordStore(engine), BatchRows(engine),
                  LineStore(engine), ProviderBatches(engine))
    assert "no billed calls" in render_report(gather(store, "batch_empty"))


def test_the_page_is_self_contained_escaped_and_shows_the_costs(
        made: tuple[Store, dict[str, LedgerRow]]) -> None:
    store, calls = made
    data = gather(store, "batch_r")
    assert data.cost["total"]["requests"] == 10
    assert Decimal(data.cost["total"]["cost_usd"]) == sum(c.cost_usd for c in calls.values())
    page = render_report(data)
    assert EVIL not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<script" not in page  # no script of ours either
    assert not re.search(r'(?:src|href)=|url\(|@import', page)  # nothing to fetch
    assert page.count('<svg class="chart"') == 4
    assert re.search(r'<svg class="chart" data-chart="tokens".*?</svg>', page, re.S)
    # Without a config the TPM lines are missing, and the caption says so.
    assert 'class="limit"' not in page and "(none loaded)" in page


def test_the_tpm_of_each_charted_model_is_a_dashed_line(
        made: tuple[Store, dict[str, LedgerRow]]) -> None:
    store, _ = made
    data = gather(store, "batch_r")
    data.tpm = {"big": 30_000, "small": 20_000, "unused": 1}
    page = render_report(data)
    assert page.count('class="limit"') == 2 and "big TPM: 30,000" in page
    # A limit far above the data is named at the top, not drawn (it would flatten the line).
    data.tpm = {"big": 50_000_000, "small": 20_000}
    page = render_report(data)
    assert page.count('class="limit"') == 1
    assert "big TPM: 50,000,000 (above the scale)" in page


def test_the_command_writes_the_page(made: tuple[Store, dict[str, LedgerRow]],
                                     tmp_path: Path) -> None:
    store, _ = made

    class Session:
        """What the command reads: the store; no config, no Redis."""

        redis = None

        def __init__(self) -> None:
            self.store = store

        @property
        def config(self) -> Any:
            raise ConfigError("no config")

    out = tmp_path / "report.html"
    done = CliRunner().invoke(report, ["batch_r", "-o", str(out)], obj=Session())
    assert done.exit_code == 0, done.output
    assert done.stderr == f"corral: wrote report of batch_r to {out}\n"
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_an_unknown_batch_exits_4(redis_client: redis.Redis, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CORRAL_CONFIG", raising=False)
    done = CliRunner().invoke(cli, ["report", "batch_nope", "-o", str(tmp_path / "r.html")])
    assert done.exit_code == 4, done.output
    assert "no batch 'batch_nope'" in done.stderr
    assert not (tmp_path / "r.html").exists()
