"""Several real worker processes share one scope's limits, seen from the provider's side."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from corral.store import open_store
from producer.views import wait_for_batch
from tests.integration.helpers import request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PERIOD_S = 2.0
RPM = 40  # per 2 s period: 20 requests/s
TPM = 1800  # per 2 s period: 900 tokens/s
MAX_TOKENS = 20
LINES = 150


def busiest_window(admitted: list[list[float]], period_ms: float, start_ms: float,
                   column: int | None) -> float:
    """The most admitted (requests, or tokens in `column`) in any one-period window that lies
    wholly after `start_ms`."""
    later = [a for a in admitted if a[0] >= start_ms]
    times = [a[0] for a in later]
    amounts = [1.0 if column is None else a[column] for a in later]
    busiest, left, in_window = 0.0, 0, 0.0
    for right, t_ms in enumerate(times):
        in_window += amounts[right]
        while times[left] <= t_ms - period_ms:
            in_window -= amounts[left]
            left += 1
        busiest = max(busiest, in_window)
    return busiest


def test_three_workers_stay_inside_one_shared_limit(tmp_path: Path, redis_client, write_config,
                                                    start_simulator, start_workers,
                                                    corral) -> None:
    # The provider side counts every arrival but limits none, so any overshoot would show.
    sim = start_simulator("--model", "sim-small", "--model", "sim-big", "--period-s",
                          str(PERIOD_S), "--latency-ms", "50")
    config = write_config(f"{sim.base_url}/v1", small_tpm=TPM)
    text = config.read_text().replace("rpm = 100000\ntpm = 1800", f"rpm = {RPM}\ntpm = {TPM}")
    config.write_text(text)
    lines = [request(f"r{i}", "small", "x" * (20 + 4 * (i % 10)), max_tokens=MAX_TOKENS)
             for i in range(LINES)]
    batch_file = write_jsonl(tmp_path / "limited.jsonl", lines)
    start_workers(config, ["corral.small"], processes=3, concurrency=8,
                  env={"CORRAL_RATE_PERIOD_S": str(PERIOD_S)})

    batch_id = corral("submit", str(batch_file), config=config).stdout.strip()
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=90)
    assert batch["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}

    admitted = httpx.get(f"{sim.base_url}/_sim/admissions",
                         params={"model": "sim-small"}).json()["admitted"]
    assert len(admitted) == LINES  # each line called once: nothing lost, nothing doubled
    admitted.sort()
    first_ms, last_ms = admitted[0][0], admitted[-1][0]
    period_ms = PERIOD_S * 1000
    # A bucket starting full may admit up to twice the limit in the first period; after that
    # every window of one period stays within the limit (one request of slack for the
    # network's reordering between corral's admission and the simulator's clock).
    assert busiest_window(admitted, period_ms, first_ms + period_ms, None) <= RPM + 1
    max_request_tokens = max(a[1] for a in admitted)
    assert busiest_window(admitted, period_ms, first_ms + period_ms, 1) \
        <= TPM + max_request_tokens
    # ...and the limit is used, not wasted: the batch took about what the limits require.
    tokens = sum(a[1] for a in admitted)
    least_s = max((LINES - RPM) / (RPM / PERIOD_S), (tokens - TPM) / (TPM / PERIOD_S))
    assert (last_ms - first_ms) / 1000 <= least_s * 1.3 + 0.5
    assert sim.stats()["by_status"].get("429", 0) == 0
