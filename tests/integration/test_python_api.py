"""The Python API (`from corral import Client`) against real workers, Redis and the simulator,
and the documented notebook example run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion

from corral import Batch, Client, InvalidLinesError, Result
from corral.errors import BatchNotFoundError
from tests.integration.helpers import request, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "python_api.py"


def test_prompts_from_python_come_back_as_typed_completions_with_their_cost(
        redis_client, write_config, start_simulator, start_workers, corral) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    client = Client(config)
    prompts = [f"say {i}" for i in range(12)]
    batch = client.submit({"model": "small", "messages": [{"role": "user", "content": p}]}
                          for p in prompts)
    assert batch.submission is not None
    assert batch.submission.accepted_by_model == {"small": 12}
    assert batch.submission.rejected == 0
    assert batch.status()["input_file"] == "<python>"
    start_workers(config, ["corral.small"])

    final = batch.wait(timeout_s=60)
    assert final["status"] == "completed"
    assert final["request_counts"] == {"total": 12, "completed": 12, "failed": 0}
    results = list(batch.results(order="input"))
    assert [r.custom_id for r in results] == [f"request-{i}" for i in range(12)]
    assert all(r.ok and r.error is None for r in results)
    completion = results[3].completion
    assert isinstance(completion, ChatCompletion)
    assert completion.model == "sim-small" and completion.usage is not None
    assert results[3].text == completion.choices[0].message.content and results[3].text

    # The API's cost is the CLI's, figure for figure.
    cli_cost = corral("cost", batch.id, "--json", config=config)
    assert cli_cost.returncode == 0, cli_cost.stderr
    assert batch.cost() == json.loads(cli_cost.stdout)
    assert Decimal(batch.cost()["total"]["cost_usd"]) > 0
    assert sim.stats()["served"] == 12

    again = client.batch(batch.id)  # found by id, as another process would
    assert isinstance(again, Batch) and again.done()
    assert {r.custom_id for r in again.results()} == {r.custom_id for r in results}


def test_bad_lines_submit_nothing_and_are_named(tmp_path: Path, redis_client, write_config,
                                                store) -> None:
    client = Client(write_config())
    heard: list[int] = []
    lines = [request("ok", "small", "hi"), "{not json", request("ok", "small", "twice")]
    with pytest.raises(InvalidLinesError) as caught:
        client.submit(write_jsonl(tmp_path / "bad.jsonl", lines),
                      on_rejected=lambda line: heard.append(line.number))
    assert caught.value.count == 2 and heard == [2, 3]
    assert [line.number for line in caught.value.rejected] == [2, 3]
    assert "line 2: malformed JSON" in str(caught.value)
    assert client.batches() == []  # nothing stored
    assert redis_client.dbsize() == 0  # nothing queued

    with pytest.raises(ValueError, match="request 1 is not JSON"):
        client.submit([{"model": "small", "messages": []}, {"model": object()}])
    assert client.batches() == []


def test_a_batch_cancelled_from_python_ends_its_unstarted_lines(redis_client, write_config,
                                                                 store) -> None:
    client = Client(write_config())
    batch = client.submit([{"model": "small", "messages": [{"role": "user", "content": "x"}]}
                           for _ in range(5)])
    assert batch.cancel() == 5  # no worker runs: none had started
    assert batch.status()["status"] == "cancelled"
    errors = [r.error for r in batch.results()]
    assert [e and e["code"] for e in errors] == ["batch_cancelled"] * 5
    with pytest.raises(ValueError, match="has no answer"):
        _ = Result(next(batch.records())).completion


def test_failed_lines_retried_from_python_run_again(redis_client, write_config,
                                                    start_simulator, start_workers) -> None:
    sim = start_simulator("--model", "sim-small:ctx=50")
    config = write_config(f"{sim.base_url}/v1")
    client = Client(config)
    batch = client.submit([{"model": "small", "messages": [{"role": "user",
                                                            "content": "x" * 400}]}])
    start_workers(config, ["corral.small"])
    assert batch.wait(timeout_s=60)["request_counts"]["failed"] == 1
    [failed] = batch.results()
    assert failed.error is not None and failed.error["code"] == "context_length_exceeded"
    served = sim.stats()["by_status"]["400"]

    retried = batch.retry(["context_length_exceeded"])
    assert retried.enqueued == 1 and retried.not_stored == 0
    assert batch.wait(timeout_s=60)["request_counts"]["failed"] == 1
    assert sim.stats()["by_status"]["400"] == served + 1  # it was called again


def test_an_unknown_batch_is_named(redis_client, write_config, store) -> None:
    with pytest.raises(BatchNotFoundError, match="no batch 'batch_nope'"):
        Client(write_config()).batch("batch_nope")


def test_importing_corral_does_not_load_the_client_side() -> None:
    # Workers import corral's shared modules; the API loads only when asked for.
    probe = ("import sys, corral; assert 'producer' not in sys.modules; "
             "from corral import Client; assert 'producer.client' in sys.modules; "
             "print(Client.__module__)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "producer.client"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import corral

        _ = corral.Nope  # type: ignore[attr-defined]


def test_the_documented_notebook_example_runs(redis_client, write_config, start_simulator,
                                               start_workers, corral_env, tmp_path) -> None:
    sim = start_simulator()
    config = write_config(f"{sim.base_url}/v1")
    start_workers(config, ["corral.small", "corral.big"])
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                          env={**corral_env, "CORRAL_CONFIG": str(config)}, cwd=tmp_path,
                          timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("submitted batch_")
    assert out[1] == "completed: {'total': 3, 'completed': 3, 'failed': 0}"
    assert out[2].startswith("request-0 [sim-small, ")  # "summarize" routes to small
    assert out[3].startswith("request-1 [sim-big, ")  # "prove" routes to big
    assert out[4].startswith("request-2 [sim-small, ")
    assert out[5].startswith("total cost: $") and Decimal(out[5].split("$")[1]) > 0
