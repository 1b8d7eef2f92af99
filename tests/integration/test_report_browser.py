"""`corral report` of a real batch, opened in headless Chromium: the charts render, and the
page fetches nothing and logs no error.

Needs playwright's Python package (the `screenshots` extra) and the system's chromium
(`apt-get install chromium`; playwright never downloads a browser here); skipped without them.
With CORRAL_REPORT_SCREENSHOT=PATH it also saves a screenshot of the page there
(docs/images/report.png).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.store import open_store
from corral.store.timeline import batch_timeline
from producer.views import wait_for_batch
from tests.integration.helpers import ledger_rows, request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CHARTS = ("lines", "tokens", "rate_limited", "spend")
VIEWPORT = {"width": 1680, "height": 1050}


@pytest.fixture()
def browser_page() -> Iterator[Any]:
    """A fresh page in headless system Chromium; skips when playwright or chromium is absent."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e "
        "'.[screenshots]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser.new_context(viewport=VIEWPORT, device_scale_factor=1).new_page()
        finally:
            browser.close()


def batch_lines() -> list[dict | str]:
    """Two models, a spread of output lengths, one line answered 429 twice first."""
    lines: list[dict | str] = [
        request(f"q-{i}", "big" if i % 3 == 0 else "small", f"Say hello #{i}",
                max_tokens=10 + i % 40) for i in range(80)]
    lines.append(request("limited", "small",
                         "twice limited [[sim:fail=429,times=2,retry_ms=200]]"))
    lines.append(request("<b>bold</b>", "small", "an id with markup"))
    return lines


def test_the_report_of_a_real_batch_renders_in_a_browser(
        tmp_path: Path, write_config, start_simulator, start_workers, corral,
        browser_page) -> None:
    sim = start_simulator("--latency-ms", "150")
    config = write_config(f"{sim.base_url}/v1")
    batch_id = corral("submit", str(write_jsonl(tmp_path / "b.jsonl", batch_lines())),
                      config=config).stdout.strip()
    start_workers(config, ["corral.big", "corral.small"], concurrency=4)
    store = open_store()
    batch = wait_for_batch(store, batch_id, show_progress=False, timeout_s=120)
    assert batch["request_counts"] == {"total": 82, "completed": 82, "failed": 0}
    # The ledger row of the 429'd line's billed call says what it met first.
    rows = {row["custom_id"]: row for row in ledger_rows(batch_id)}
    assert rows["limited"]["rate_limited_before"] == 2
    assert rows["q-1"]["rate_limited_before"] == 0 and rows["q-1"]["latency_s"] >= 0.1

    out = tmp_path / "report.html"
    done = corral("report", batch_id, "-o", str(out), config=config)
    assert done.stderr.strip().endswith(f"corral: wrote report of {batch_id} to {out}")
    timeline = batch_timeline(store.engine, batch_id, int(batch["created_at"]))

    page = browser_page
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(out.as_uri())
    page.wait_for_load_state("load")
    assert requests == [out.as_uri()]  # the page itself, nothing else
    assert errors == []

    drawn = page.evaluate("""() => Object.fromEntries(
        [...document.querySelectorAll('svg.chart')].map(svg => {
            const box = svg.getBoundingClientRect();
            return [svg.dataset.chart, {
                buckets: Number(svg.dataset.buckets), width: box.width, height: box.height,
                series: [...svg.querySelectorAll('polyline.series')].map(line => {
                    const b = line.getBBox();
                    return {points: line.points.numberOfItems, width: b.width,
                            height: b.height};
                }),
                bars: [...svg.querySelectorAll('rect.bar')].map(bar => bar.getBBox().height),
                limits: svg.querySelectorAll('.limit').length,
            }];
        }))""")
    assert sorted(drawn) == sorted(CHARTS)
    for name, chart in drawn.items():
        assert chart["width"] > 300 and chart["height"] > 100, name
        assert chart["buckets"] == timeline.buckets, name
        for series in chart["series"]:
            assert series["points"] == timeline.buckets, name
            assert series["width"] > 0, name
    assert drawn["lines"]["series"][0]["height"] > 0  # it climbs to 82
    assert drawn["spend"]["series"][0]["height"] > 0
    assert len(drawn["tokens"]["series"]) == 2 and drawn["tokens"]["limits"] == 2
    assert len(drawn["rate_limited"]["bars"]) == sum(1 for n in timeline.rate_limited if n)
    assert sum(timeline.rate_limited) == 2
    assert all(height > 0 for height in drawn["rate_limited"]["bars"])

    # The tables: the ids are text, not markup; the cost table has both models and a total.
    assert page.locator("table#slowest tbody tr").count() == 10
    assert page.locator("table#cost tbody tr").count() == 3
    assert page.locator("b", has_text="bold").count() == 0
    costliest = page.locator("table#costliest tbody tr td:first-child").all_inner_texts()
    assert len(costliest) == 10
    if (shot := os.environ.get("CORRAL_REPORT_SCREENSHOT")):
        page.screenshot(path=shot, full_page=True)
