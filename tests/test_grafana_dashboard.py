"""docs/grafana/corral-dashboard.json: valid, importable anywhere, and asking only for what
`corral exporter` exposes (the names come from a real scrape, not from a list)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from corral.config import load_config
from corral.redis_keys import FLEET_STATS
from corral.stats import stat_field
from producer.exporter import CorralCollector
from tests.store_batches import numbered, open_test_batch

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "corral-dashboard.json"
PROVISIONING = ROOT / "docker" / "grafana" / "provisioning"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*(\w+)\s*\)")
IDENTIFIER = re.compile(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def expressions(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched) for each `name{...}` in a PromQL expression."""
    return [(name, set(MATCHER_LABEL.findall(STRING.sub('""', body))))
            for name, body in SELECTOR.findall(expr)]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label matchers,
    label lists, range durations, numbers, function calls and keywords are taken out."""
    bare = STRING.sub('""', expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    bare = LABEL_LIST.sub(" ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    return {name for name in IDENTIFIER.findall(bare) if name not in KEYWORDS}


@pytest.fixture()
def exposed(redis_client, store, write_config) -> dict[str, set[str]]:
    """Every sample name a scrape of the real collector reports, with its label names: with
    stats for a model (an error code and latencies among them), and a batch in progress."""
    counts = {"completed": 5, "failed": 1, "failed:rate_limit_exhausted": 1, "calls": 9,
              "rate_limited": 2, "retries": 3, "input_tokens": 400, "cached_tokens": 50,
              "output_tokens": 120, "cost_nusd": 2_000_000, "latency_ms_sum": 900,
              "latency_le_250": 6, "latency_le_inf": 1}
    redis_client.hset(FLEET_STATS, mapping={stat_field("big", k): v for k, v in counts.items()})
    open_test_batch(redis_client, store, numbered({"big": 3}))
    collector = CorralCollector(redis_client, load_config(write_config()), period_s=60,
                                broker=redis_client)
    registry = CollectorRegistry()
    registry.register(collector)
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_the_extraction_finds_names_and_skips_functions_labels_and_variables() -> None:
    expr = ('sum by (scope) (rate(corral_tokens_total{kind!="cached"}[$__rate_interval]) '
            '* on (model) group_left (scope) corral_model_info{scope=~"$scope"}) * 60 '
            '/ scalar(corral_rate_period_seconds)')
    assert metric_names(expr) == {"corral_tokens_total", "corral_model_info",
                                  "corral_rate_period_seconds"}
    assert selectors(expr) == [("corral_tokens_total", {"kind"}),
                               ("corral_model_info", {"scope"})]


def test_every_metric_and_label_the_dashboard_reads_is_one_the_exporter_exposes(
        exposed) -> None:
    board = dashboard()
    used: set[str] = set()
    for expr in expressions(board):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        used |= names
        for name, labels in selectors(expr):
            assert labels <= exposed.get(name, set()), f"{name}: {labels} in {expr!r}"
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            name, label = LABEL_VALUES.fullmatch(variable["query"]["query"]).groups()
            used.add(name)
            assert label in exposed.get(name, set())
    assert used - exposed.keys() == set()
    # The panels the dashboard is for: lines, errors, both limits, spend, latency, 429s, Redis.
    assert {"corral_requests_total", "corral_request_errors_total", "corral_tokens_total",
            "corral_bucket_capacity_tokens", "corral_provider_calls_total",
            "corral_bucket_capacity_requests", "corral_cost_usd_total",
            "corral_request_latency_seconds_bucket", "corral_rate_limited_total",
            "corral_bucket_cooldown_seconds", "corral_redis_up"} <= used


def test_dashboard_imports_anywhere_with_a_datasource_and_title_on_every_panel() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 38  # Grafana 10
    assert board["uid"] and board["title"]
    assert [(i["name"], i["type"], i["pluginId"]) for i in board["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")]
    # A datasource variable of the same name resolves ${DS_PROMETHEUS} when the file is
    # provisioned rather than imported (Grafana substitutes __inputs only on import).
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["title"].strip(), panel
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip() and target["refId"]


def test_provisioning_points_grafana_at_prometheus_and_the_dashboard_folder() -> None:
    yaml = pytest.importorskip("yaml")
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http://")
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "corral.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
