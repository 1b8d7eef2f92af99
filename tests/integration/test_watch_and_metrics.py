"""`corral exporter` scraped during and after a real batch, and `status --watch` on a pty."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.store import open_store
from producer.batches import is_terminal, read_batch
from producer.local_stack import ChildProcess
from producer.views import wait_for_batch
from tests.integration.helpers import request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EXPORTER_READY = re.compile(rb"exporter ready on (http://\S+)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
TOTAL = 200


def two_model_lines(count: int, *, forced_429: bool) -> list[dict]:
    """Half on "big", half on "small"; optionally one "big" line that is 429'd once."""
    lines = [request(f"q-{i}", "big" if i % 2 else "small", f"Name a colour #{i}",
                     max_tokens=16) for i in range(count)]
    if forced_429:
        lines[1]["body"]["messages"][0]["content"] += " [[sim:fail=429,times=1]]"
    return lines


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def counters(samples: Samples) -> dict:
    """The samples that may only grow."""
    return {key: number for key, number in samples.items()
            if key[0].endswith(("_total", "_count", "_bucket", "_sum"))}


def test_exporter_counters_follow_a_batch_and_match_its_records_and_ledger(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers, corral,
        corral_env) -> None:
    sim = start_simulator("--latency-ms", "150")
    config = write_config(f"{sim.base_url}/v1")
    exporter = ChildProcess("exporter", [sys.executable, "-m", "producer", "exporter",
                                         "--port", "0", "--host", "127.0.0.1"],
                            {**corral_env, "CORRAL_CONFIG": str(config)}, tmp_path)
    try:
        url = exporter.wait_for(EXPORTER_READY).group(1).decode()
        idle = scrape(url)
        assert value(idle, "corral_redis_up") == 1
        assert value(idle, "corral_requests_total", model="big", outcome="completed") == 0
        assert value(idle, "corral_bucket_headroom_requests", scope="sim:sim-big") == 100000

        batch_file = write_jsonl(tmp_path / "batch.jsonl", two_model_lines(TOTAL,
                                                                           forced_429=True))
        submitted = corral("submit", str(batch_file), config=config)
        assert submitted.returncode == 0, submitted.stderr
        batch_id = submitted.stdout.strip()
        queued = scrape(url)
        assert value(queued, "corral_queue_depth", queue="corral.big") == TOTAL // 2
        assert value(queued, "corral_queue_depth", queue="corral.small") == TOTAL // 2
        assert value(queued, "corral_lines_remaining", batch=batch_id) == TOTAL

        start_workers(config, ["corral.big", "corral.small"], concurrency=8)
        scrapes, mid_run = [], 0
        while not is_terminal(read_batch(open_store(), batch_id)):
            samples = scrape(url)
            scrapes.append(samples)
            done = sum(value(samples, "corral_requests_total", model=model, outcome=outcome)
                       for model in ("big", "small") for outcome in ("completed", "failed"))
            assert 0 <= done <= TOTAL
            assert ("corral_queue_depth", (("queue", "corral.big"),)) in samples
            mid_run += 0 < done < TOTAL
            time.sleep(0.2)
        scrapes.append(final := scrape(url))
        assert mid_run >= 2, "the batch ended before the exporter saw it run"
        for before, after in itertools.pairwise(scrapes):
            grown = counters(after)
            assert all(grown[key] >= number for key, number in counters(before).items())
    finally:
        exporter.stop()

    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=10)
    assert batch["request_counts"] == {"total": TOTAL, "completed": TOTAL, "failed": 0}
    out = tmp_path / "out.jsonl"
    assert corral("results", batch_id, "-o", str(out), config=config).returncode == 0
    served_by = Counter({"sim-big": "big", "sim-small": "small"}[
        json.loads(line)["response"]["body"]["model"]] for line in out.read_text().splitlines())
    report = corral("cost", batch_id, "--json", config=config)
    assert report.returncode == 0, report.stderr
    ledger = json.loads(report.stdout)["models"]
    for model in ("big", "small"):
        assert value(final, "corral_requests_total", model=model,
                     outcome="completed") == served_by[model] == TOTAL // 2
        assert value(final, "corral_requests_total", model=model, outcome="failed") == 0
        for kind, field in (("input", "input_tokens"), ("cached", "cached_input_tokens"),
                            ("output", "output_tokens")):
            assert value(final, "corral_tokens_total", model=model,
                         kind=kind) == ledger[model][field]
        assert value(final, "corral_cost_usd_total", model=model) == pytest.approx(
            float(ledger[model]["cost_usd"]), rel=1e-9)
        calls = value(final, "corral_provider_calls_total", model=model)
        assert value(final, "corral_request_latency_seconds_count", model=model) == calls
        # Every served call took the simulator's 150 ms; only a 429 may come back sooner.
        assert value(final, "corral_request_latency_seconds_bucket", model=model,
                     le="0.1") <= value(final, "corral_rate_limited_total", model=model)
    # The scripted 429: one extra call on "big", counted as rate-limited and retried.
    assert value(final, "corral_provider_calls_total", model="big") == TOTAL // 2 + 1
    assert value(final, "corral_provider_calls_total", model="small") == TOTAL // 2
    assert value(final, "corral_rate_limited_total", model="big") >= 1
    assert value(final, "corral_retries_total", model="big") >= 1
    assert value(final, "corral_rate_limited_total", model="small") == 0
    assert value(final, "corral_queue_depth", queue="corral.big") == 0
    assert ("corral_lines_remaining", (("batch", batch_id),)) not in final
    assert value(final, "corral_batches", status="completed") == 1


def run_on_pty(args: list[str], env: dict[str, str], *, timeout_s: float,
               columns: int = 180, rows: int = 50) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as its stdout and stderr; returns (exit code,
    everything it wrote, escape sequences and all)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(args, env=env, stdin=slave, stdout=slave, stderr=slave,
                               close_fds=True)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        else:
            pytest.fail(f"{args} still running after {timeout_s} s:\n{output.decode()[-3000:]}")
        return process.wait(timeout=10), output.decode("utf-8", errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


def test_status_watch_on_a_terminal_follows_the_batch_to_its_end(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers, corral,
        corral_env) -> None:
    sim = start_simulator("--latency-ms", "100")
    config = write_config(f"{sim.base_url}/v1")
    batch_file = write_jsonl(tmp_path / "batch.jsonl", two_model_lines(TOTAL,
                                                                       forced_429=False))
    submitted = corral("submit", str(batch_file), config=config)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    env = {**corral_env, "CORRAL_CONFIG": str(config), "TERM": "xterm-256color"}
    for name in ("NO_COLOR", "COLUMNS", "LINES", "FORCE_COLOR"):
        env.pop(name, None)
    start_workers(config, ["corral.big", "corral.small"], concurrency=8)
    code, raw = run_on_pty([sys.executable, "-m", "producer", "status", batch_id, "--watch",
                            "--interval", "0.2"], env, timeout_s=90)
    screen = ANSI.sub("", raw)
    assert code == 0, screen[-3000:]
    assert raw.count(batch_id) >= 2, "the view never redrew"  # a live view, not one print
    last = screen[screen.rindex(batch_id):]
    assert "completed" in last and f"done {TOTAL}/{TOTAL}  failed 0" in last
    rows = {line.split("│")[0].strip(): [cell.strip() for cell in line.split("│")]
            for line in last.splitlines() if "│" in line}
    assert set(rows) == {"big", "small"}
    for model in ("big", "small"):
        # done, failed, queued, spooled
        assert rows[model][1:5] == [f"{TOTAL // 2}", "0", "0", "0"]
    assert rows["big"][5].endswith("/ 100,000") and rows["big"][6].endswith("/ 10,000,000")
    assert rows["small"][6].endswith("/ 1,000,000")
    (tmp_path / "watch-screen.txt").write_text(last)

    # Piped, the view prints its last frame alone (the answer), and ends at once here.
    piped = corral("status", batch_id, "--watch", config=config)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.count(batch_id) == 1 and "\x1b" not in piped.stdout
    assert f"done {TOTAL}/{TOTAL}" in piped.stdout
    assert corral("status", "batch_nope", "--watch", config=config).returncode == 4
