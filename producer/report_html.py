"""The `corral report` page: report data in, one self-contained HTML string out (inline SVG
charts, inline CSS; no script, font or image is fetched)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from itertools import accumulate
from typing import Any

from corral.store.timeline import Timeline, TopCall

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 70, 16, 14, 30
COLORS = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d")
COST_COLUMNS = (("requests", "requests"), ("input_tokens", "input tokens"),
                ("cached_input_tokens", "cached input"), ("output_tokens", "output tokens"),
                ("cost_usd", "cost $"), ("list_cost_usd", "list cost $"),
                ("savings_usd", "savings $"), ("unproductive_cost_usd", "unproductive $"),
                ("unsettled_calls", "unsettled calls"))


@dataclass
class ReportData:
    """What the page shows: the batch object, its cost report (`CostReport.as_json()`), its
    timeline, and each model's TPM from the config (empty when no config was loaded)."""

    batch: dict[str, Any]
    cost: dict[str, Any]
    timeline: Timeline
    tpm: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    """One line (or the bars) of a chart: a value per bucket."""

    name: str
    values: Sequence[float]


def render_report(data: ReportData) -> str:
    """The whole page; every string from the batch (ids, custom_ids, models) escaped."""
    batch, timeline = data.batch, data.timeline
    title = f"corral report: {batch['id']}"
    minutes = timeline.bucket_s / 60
    done = list(accumulate(c + f for c, f in zip(timeline.completed, timeline.failed,
                                                   strict=True)))
    failed = list(accumulate(timeline.failed))
    tokens = [Series(model, [t / minutes for t in values])
              for model, values in sorted(timeline.tokens.items())]
    limits = [(f"{model} TPM", data.tpm[model]) for model in sorted(timeline.tokens)
              if model in data.tpm]
    spend = list(accumulate(timeline.cost_usd, initial=Decimal(0)))[1:]
    width = _duration(timeline.bucket_s)
    charts = [
        chart("lines", "Lines done", [Series("lines ended", done), Series("of them failed",
                                                                            failed)], timeline,
              f"Lines with a terminal record (result or error), cumulative, by when the record "
              f"was written; {width} steps."),
        chart("tokens", "Tokens per minute", tokens, timeline,
              "Billed tokens (input + output, from each response's usage) per minute, by when "
              f"the call ended, averaged over {width}. Dashed: the model's TPM from the config"
              + ("" if limits else " (none loaded)")
              + ". The limiter charges a call's reservation (prompt estimate + max_tokens), so "
              "billed tokens sit below the TPM even when it binds.", limits=limits),
        chart("rate_limited", "429s", [Series("429s", timeline.rate_limited)], timeline,
              "429 answers (rate limited) that lines met before a billed call, counted in its "
              "ledger row and placed at that call's start. 429s of lines that never got a "
              "result are not in it (see rate_limit_exhausted errors); nor are those a line "
              f"met before Redis lost its data. {width} bars.", bars=True),
        chart("spend", "Spend", [Series("spent $", [float(s) for s in spend])], timeline,
              f"What the billed calls cost at corral's prices, cumulative, by when each call "
              f"ended; {width} steps. Total ${_money(data.cost['total']['cost_usd'])}.",
              money=True),
    ]
    counts = batch.get("request_counts") or {}
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>", f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        '<p class="facts">'
        f"status <b>{escape(str(batch.get('status')))}</b> · "
        f"{counts.get('total', 0)} lines, {counts.get('completed', 0)} completed, "
        f"{counts.get('failed', 0)} failed · models "
        f"{escape(', '.join(map(str, batch.get('models') or [])))} · created "
        f"{_time(batch.get('created_at'))} · ended {_time(_ended_at(batch))}</p>",
        '<section class="charts">', *charts, "</section>",
        "<h2>Cost</h2>", cost_table(data.cost),
        "<h2>Slowest lines</h2>",
        top_table("slowest", timeline.slowest, "Billed calls of the longest latency (one row "
                  "per call: a line called twice can appear twice)."),
        "<h2>Most expensive lines</h2>",
        top_table("costliest", timeline.costliest, "Billed calls of the highest cost."),
        "</body></html>", ""])


def chart(chart_id: str, title: str, series: Sequence[Series], timeline: Timeline,
          caption: str, *, limits: Sequence[tuple[str, float]] = (), bars: bool = False,
          money: bool = False) -> str:
    """One chart as a <figure> holding an inline SVG: a polyline with a point per bucket for
    each series (or a bar per non-empty bucket), dashed lines at `limits` (named at the top
    instead when over 4 times the highest value)."""
    n = timeline.buckets
    data_top = max([0.0, *(float(v) for s in series for v in s.values)])
    # A limit far above the data would flatten it: such a limit is named, not drawn.
    drawn = [(name, value) for name, value in limits if not data_top or value <= 4 * data_top]
    off_scale = [(name, value) for name, value in limits if (name, value) not in drawn]
    top = _nice_ceiling(max([data_top, *(value for _, value in drawn)])
                        or (0.01 if money else 1.0))
    if not money:
        top = max(top, 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: float) -> float:
        return LEFT + plot_w * (i + 0.5) / n

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    parts = [f'<svg class="chart" data-chart="{chart_id}" data-buckets="{n}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{escape(title)}">']
    for k in range(5):  # gridlines and the y axis's labels
        value = top * k / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}"/><text class="tick" x="{LEFT - 6}" '
                     f'y="{y(value) + 4:.1f}" text-anchor="end">{_label(value, money)}</text>')
    for k in range(6):  # the x axis: time since the batch was created
        i = (n - 1) * k / 5
        parts.append(f'<text class="tick" x="{x(i):.1f}" y="{HEIGHT - 10}" '
                     f'text-anchor="middle">+{_duration(round(i * timeline.bucket_s))}</text>')
    for s_index, s in enumerate(series):
        color = COLORS[s_index % len(COLORS)]
        if bars:
            bar_w = max(1.0, plot_w / n * 0.8)
            parts += [f'<rect class="bar" x="{x(i) - bar_w / 2:.1f}" y="{y(v):.1f}" '
                      f'width="{bar_w:.1f}" height="{y(0) - y(v):.1f}" fill="{color}">'
                      f'<title>{_label(v, money)}</title></rect>'
                      for i, v in enumerate(s.values) if v]
            continue
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))
        parts.append(f'<polyline class="series" data-series="{escape(s.name)}" '
                     f'data-points="{len(s.values)}" points="{points}" fill="none" '
                     f'stroke="{color}" stroke-width="2"/>')
    for l_index, (name, value) in enumerate(limits):
        color = COLORS[l_index % len(COLORS)]
        label = f"{escape(name)}: {value:,.0f}"
        if (name, value) in off_scale:
            row = off_scale.index((name, value))
            parts.append(f'<text class="limit off-scale" x="{WIDTH - RIGHT - 4}" '
                         f'y="{TOP + 12 + 14 * row}" text-anchor="end" fill="{color}">'
                         f"&#8593; {label} (above the scale)</text>")
            continue
        parts.append(f'<line class="limit" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}" stroke="{color}" stroke-dasharray="6 4">'
                     f'<title>{label}</title></line>')
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{COLORS[k % len(COLORS)]}"></i>'
                     f"{escape(s.name)}</span>" for k, s in enumerate(series))
    return (f'<figure id="chart-{chart_id}"><h2>{escape(title)}</h2>{"".join(parts)}'
            f'<div class="legend">{legend}</div><figcaption>{escape(caption)}</figcaption>'
            "</figure>")


def cost_table(cost: dict[str, Any]) -> str:
    """Per model and in total, as `corral cost` shows it."""
    head = "".join(f"<th>{label}</th>" for _, label in COST_COLUMNS)
    rows = [(escape(name), totals) for name, totals in cost["models"].items()]
    rows.append(("<b>total</b>", cost["total"]))
    body = "".join(
        f"<tr><td>{name}</td>" + "".join(
            f'<td class="num">{_cell(key, totals.get(key))}</td>' for key, _ in COST_COLUMNS)
        + "</tr>" for name, totals in rows)
    return (f'<table id="cost"><thead><tr><th>model</th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def top_table(table_id: str, calls: Sequence[TopCall], caption: str) -> str:
    """The slowest or costliest billed calls."""
    body = "".join(
        f"<tr><td>{escape(c.custom_id)}</td><td>{escape(c.model)}</td>"
        f'<td class="num">{"" if c.latency_s is None else f"{c.latency_s:.3f}"}</td>'
        f'<td class="num">{_money(c.cost_usd)}</td><td class="num">{c.input_tokens:,}</td>'
        f'<td class="num">{c.cached_input_tokens:,}</td>'
        f'<td class="num">{c.output_tokens:,}</td></tr>' for c in calls)
    if not calls:
        body = '<tr><td colspan="7">no billed calls</td></tr>'
    return (f'<table id="{table_id}"><caption>{escape(caption)}</caption><thead><tr>'
            "<th>custom_id</th><th>model</th><th>latency s</th><th>cost $</th>"
            "<th>input tokens</th><th>cached input</th><th>output tokens</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _cell(key: str, value: Any) -> str:
    if key.endswith("_usd"):
        return f'<span title="{escape(str(value))}">{_money(value)}</span>'
    return f"{int(value or 0):,}"


def _money(value: Any) -> str:
    """Dollars to 6 places for reading (the exact figure is in `corral cost --json`)."""
    return f"{Decimal(value or 0):,.6f}"


def _label(value: float, money: bool) -> str:
    if money:
        return f"${value:,.4f}" if value < 10 else f"${value:,.2f}"
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:,.2f}"


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above `value` (> 0)."""
    scale = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1
    while scale > value:
        scale /= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds % 60 else f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _time(epoch_s: Any) -> str:
    if not epoch_s:
        return "—"
    return datetime.fromtimestamp(int(epoch_s), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ended_at(batch: dict[str, Any]) -> Any:
    return batch.get(f"{batch.get('status')}_at") if batch.get("status") in (
        "completed", "failed", "expired", "cancelled") else None


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1600px;padding:0 16px;color:#111}
h1{font-size:20px}h2{font-size:16px;margin:18px 0 6px}
.facts{color:#444}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(780px,1fr));gap:8px 24px}
figure{margin:0}figcaption{color:#555;font-size:12px;max-width:760px}
svg.chart{display:block;max-width:100%;height:auto;background:#fff}
.grid{stroke:#e5e7eb}.tick{font-size:11px;fill:#555}.off-scale{font-size:11px}
.legend span{margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
table{border-collapse:collapse;margin:4px 0 12px}
caption{text-align:left;color:#555;font-size:12px;padding-bottom:4px}
th,td{border-bottom:1px solid #e5e7eb;padding:3px 10px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
"""
