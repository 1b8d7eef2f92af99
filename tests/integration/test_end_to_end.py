"""The whole path, for real: CLI → Redis → Celery worker processes → simulator → records."""

from __future__ import annotations

import hashlib
import json
import threading
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest
import redis
from openai.types.chat import ChatCompletion

from corral.config import load_config
from corral.lua_scripts import script_source
from corral.pricing import Usage, cost_and_list_cost
from corral.redis_keys import FLEET_STATS, BatchKeys
from corral.stats import by_model
from corral.store import open_store
from producer.views import wait_for_batch
from tests.integration.helpers import request, settled_live_counts, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SYSTEM = "You are a meticulous assistant. " * 40  # long enough for the simulator's cache


def mixed_lines(count: int) -> list[dict]:
    """Explicit models, aliases and `auto` (English and Korean keywords)."""
    texts = ["Compute the integral of x^2", "이 정리를 증명하세요", "Please summarize this text",
             "다음 글을 요약해 주세요", "Say hello", "Name three colours"]
    models = ["auto", "auto", "big", "small", "reasoner", "cheap"]
    lines = []
    for i in range(count):
        line = request(f"q-{i}", models[i % len(models)], f"{texts[i % len(texts)]} #{i}",
                       max_tokens=20 + i % 30)
        if i % 3 == 0:
            line["body"]["messages"].insert(0, {"role": "system", "content": SYSTEM})
        lines.append(line)
    return lines


class CorralScriptCalls:
    """Counts the EVALSHA calls of corral's own Lua scripts on the test database, read from
    MONITOR: the server-wide INFO count also holds kombu's, which a gevent worker makes on a
    clock (its restore of unacknowledged jobs, workers/kombu_restore_without_loop.py), not
    per line."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._db = client.connection_pool.connection_kwargs.get("db", 0)
        self._shas = {hashlib.sha1(script_source(name, package).encode()).hexdigest()
                      for package in ("corral", "workers")
                      for name in (path.stem for path in resources.files(package)
                                   .joinpath("lua").iterdir() if path.name.endswith(".lua"))}
        self.calls = 0
        self._marker = f"corral-script-calls-end-{id(self)}"
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> CorralScriptCalls:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        # MONITOR streams commands in the order Redis ran them: the loop counts every one
        # before this marker, however far behind its reading is, then stops.
        self._client.echo(self._marker)
        assert self._stopped.wait(10), "MONITOR never showed the end marker"
        self._thread.join(10)

    def _watch(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            for command in monitor.listen():
                words = command["command"].split()
                if words[0].upper() == "ECHO" and words[-1] == self._marker:
                    self._stopped.set()
                    return
                if (int(command["db"]) == self._db and words[0].upper() == "EVALSHA"
                        and words[1] in self._shas):
                    self.calls += 1


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_every_line_ends_once_with_parseable_results_and_exact_cost(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers,
        corral, pool: str) -> None:
    sim = start_simulator("--latency-ms", "5")
    config = write_config(f"{sim.base_url}/v1")
    batch_file = write_jsonl(tmp_path / "batch.jsonl", mixed_lines(240))

    submitted = corral("submit", str(batch_file), config=config)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip().splitlines()[-1]
    assert submitted.stdout.strip() == batch_id  # stdout holds the batch id alone

    with CorralScriptCalls(redis_client) as scripts:
        workers = start_workers(config, ["corral.big", "corral.small"], processes=2,
                                concurrency=8, pool=pool)
        batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=120)
        # A line's record commits before its end reaches Redis: count once every end has.
        live = settled_live_counts(redis_client, batch_id, 240)
    assert batch["status"] == "completed"
    # Two script calls a line: its start, which took its rate-limit capacity too (a separate
    # acquire would make three), and its record (with the settle, when there is one).
    assert 2 * 240 <= scripts.calls <= 2 * 240 + 24
    assert batch["request_counts"] == {"total": 240, "completed": 240, "failed": 0}
    banner_pool = {"threads": "(thread)", "gevent": "(gevent)"}[pool]
    assert all(f"concurrency: 8 {banner_pool}" in w.log_path.read_text() for w in workers)
    # No log line per job by default (CORRAL_LOG_EACH_JOB): neither Celery's nor httpx's.
    for worker in workers:
        log_text = worker.log_path.read_text()
        assert "succeeded in" not in log_text and "HTTP Request" not in log_text
    assert sorted(batch["models"]) == ["big", "small"]

    out = tmp_path / "out.jsonl"
    written = corral("results", batch_id, "-o", str(out), "--order", "input", config=config)
    assert written.returncode == 0, written.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["custom_id"] for r in records] == [f"q-{i}" for i in range(240)]
    assert (tmp_path / "out.errors.jsonl").read_text() == ""
    assert len({r["id"] for r in records}) == 240
    # The records are in the store; Redis keeps nothing of the lines, only the batch's meta
    # and live counters (and the reconciler's suspects, if a sweep saw a line in transit),
    # each until its retention ends.
    assert open_store().records.count_records(batch_id) == 240
    left = set(redis_client.scan_iter(f"corral:batch:{{{batch_id}}}*"))
    keys = BatchKeys(batch_id)
    assert {keys.meta, keys.stats} <= left <= {keys.meta, keys.stats, keys.suspects}
    assert all(redis_client.ttl(key) > 0 for key in left)

    models = load_config(config).models
    expected_cost = expected_list = Decimal(0)
    cached = 0
    for record in records:
        completion = ChatCompletion.model_validate(record["response"]["body"])
        assert record["response"]["status_code"] == 200 and record["error"] is None
        assert "route" not in record
        usage = Usage.from_response(record["response"]["body"]["usage"])
        cached += usage.cached_tokens
        model = {"sim-big": models["big"], "sim-small": models["small"]}[completion.model]
        cost, list_cost = cost_and_list_cost(usage, model)
        expected_cost += cost
        expected_list += list_cost
    assert cached > 0  # the cached-input price was exercised

    report = corral("cost", batch_id, "--json", config=config)
    assert report.returncode == 0, report.stderr
    totals = json.loads(report.stdout)
    assert totals["batch_id"] == batch_id
    assert Decimal(totals["total"]["cost_usd"]) == expected_cost
    assert Decimal(totals["total"]["list_cost_usd"]) == expected_list
    assert Decimal(totals["total"]["savings_usd"]) == expected_list - expected_cost
    assert totals["total"]["requests"] == 240
    assert sum(m["requests"] for m in totals["models"].values()) == 240
    assert sim.stats()["served"] == 240  # no line was called twice

    # The live counters (status --watch, the exporter) agree with the records and the ledger.
    fleet = by_model(redis_client.hgetall(FLEET_STATS))
    assert {name: {k: v for k, v in counts.items() if k != "enqueued"}
            for name, counts in live.items()} == fleet
    for name, counts in live.items():
        lines = totals["models"][name]
        assert counts["enqueued"] == counts["completed"] == counts["calls"] == lines["requests"]
        assert counts["input_tokens"] == lines["input_tokens"]
        assert counts["output_tokens"] == lines["output_tokens"]
        assert counts["calls"] == sum(
            value for counter, value in counts.items() if counter.startswith("latency_le_"))
    assert sum(counts["completed"] for counts in live.values()) == 240


def test_routes_are_kept_and_exported_on_request(tmp_path: Path, redis_client, write_config,
                                                 start_simulator, start_workers,
                                                 corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    batch_file = write_jsonl(tmp_path / "b.jsonl", [
        request("math", "auto", "prove it"), request("named", "cheap", "hello")])
    batch_id = corral("submit", str(batch_file), config=config).stdout.strip()
    start_workers(config, ["corral.big", "corral.small"])
    wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    out = tmp_path / "routes.jsonl"
    assert corral("results", batch_id, "-o", str(out), "--with-route",
                  config=config).returncode == 0
    routes = {r["custom_id"]: r["route"] for r in map(json.loads, out.read_text().splitlines())}
    assert routes["math"] == {"model": "big", "rule": "math", "reason": "keyword 'prove'"}
    assert routes["named"]["rule"] == "explicit" and routes["named"]["model"] == "small"
