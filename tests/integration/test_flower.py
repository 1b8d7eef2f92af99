"""Flower on corral's broker, for real: finished tasks in its HTTP API, and no secret in it."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from corral.store import open_store
from producer.views import wait_for_batch
from tests.integration.helpers import ledger_rows, poll, request, stored_records, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CANARY_PROMPT = "canary-prompt-7f3a9c"
CANARY_KEY = "sk-canary-key-51d0e2"
QUEUES = ["corral.big", "corral.small"]


def run_job_tasks(flower: httpx.Client, state: str) -> dict[str, dict]:
    """Flower's `corral.run_job` tasks in one state, by task id."""
    response = flower.get("/api/tasks", params={"taskname": "corral.run_job", "state": state})
    response.raise_for_status()
    return response.json()


def submit(corral, config: Path, batch_file: Path, env: dict[str, str] | None = None) -> str:
    submitted = corral("submit", str(batch_file), config=config, env_extra=env)
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip()


def test_flower_shows_the_backlog_per_model_then_every_finished_task_with_pointer_args(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers, corral,
        start_flower) -> None:
    sim = start_simulator("--latency-ms", "5")
    config = write_config(f"{sim.base_url}/v1")
    flower = start_flower(config)
    assert httpx.get(f"{flower.base_url}/api/tasks").status_code == 401
    assert httpx.get(f"{flower.base_url}/api/tasks", auth=("corral", "wrong")).status_code == 401

    lines = [request(f"q-{i}", "big" if i % 4 == 0 else "small", f"Say hello #{i}")
             for i in range(20)]
    batch_id = submit(corral, config, write_jsonl(tmp_path / "batch.jsonl", lines))

    # No worker yet: the Broker page's queue list shows each model's backlog without one,
    # and the Tasks page lists every queued job (task-sent events from the fast publish path).
    backlog = {queue["name"]: queue["messages"]
               for queue in flower.get("/api/queues/length").json()["active_queues"]}
    assert backlog == {"corral.big": 5, "corral.small": 15, "corral.default": 0}
    broker_page = flower.get("/broker")
    assert broker_page.status_code == 200
    assert all(f'<td>{queue}</td>' in broker_page.text for queue in QUEUES)
    queued = poll(lambda: len(tasks := run_job_tasks(flower, "PENDING")) >= 20 and tasks)
    assert sorted(ast.literal_eval(task["args"])[1] for task in queued.values()) == \
        sorted(f"q-{i}" for i in range(20))
    assert {task["routing_key"] for task in queued.values()} == set(QUEUES)

    start_workers(config, QUEUES, concurrency=4)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 20, "completed": 20, "failed": 0}

    done = poll(lambda: len(tasks := run_job_tasks(flower, "SUCCESS")) >= 20 and tasks)
    assert set(done) == set(queued)  # the same tasks, now finished
    args = sorted(tuple(ast.literal_eval(task["args"])) for task in done.values())
    assert args == sorted((batch_id, f"q-{i}") for i in range(20))
    assert all(task["kwargs"] == "{}" and task["runtime"] > 0
               and task["worker"].startswith("test-0@") for task in done.values())
    # Each finished task's result says what its line came to: model, tokens, cost.
    for task in done.values():
        summary = ast.literal_eval(task["result"])
        model = "big" if int(ast.literal_eval(task["args"])[1][2:]) % 4 == 0 else "small"
        assert summary["line"] == "completed" and summary["model"] == model, summary
        assert summary["input_tokens"] > 0 and summary["output_tokens"] > 0
        assert Decimal(summary["cost_usd"]) > 0
    record_costs = sum(Decimal(entry["cost_usd"]) for entry in ledger_rows(batch_id))
    assert sum(Decimal(ast.literal_eval(task["result"])["cost_usd"])
               for task in done.values()) == record_costs
    assert all(queue["messages"] == 0
               for queue in flower.get("/api/queues/length").json()["active_queues"])


def test_no_prompt_or_key_appears_anywhere_in_flower(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers, corral,
        start_flower) -> None:
    key_env = {"CORRAL_TEST_SIM_KEY": CANARY_KEY}
    sim = start_simulator("--latency-ms", "5", "--api-key", CANARY_KEY)  # the last one wins
    config = write_config(f"{sim.base_url}/v1")
    flower = start_flower(config, env=key_env)  # like compose: Flower's env holds the key too
    lines = [{**request(f"c-{i}", "big" if i % 2 else "small", f"{CANARY_PROMPT} line {i}"),
              "metadata": {"note": CANARY_PROMPT}} for i in range(10)]
    batch_id = submit(corral, config, write_jsonl(tmp_path / "batch.jsonl", lines), key_env)
    start_workers(config, QUEUES, concurrency=4, env=key_env)
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    # Every call was served, so the workers did send the canary prompt with the canary key.
    assert batch["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
    done = poll(lambda: len(tasks := run_job_tasks(flower, "SUCCESS")) >= 10 and tasks)

    workers = flower.get("/workers", params={"json": 1}).json()["data"]
    assert len(workers) == 1 and workers[0]["task-succeeded"] == 10
    # Remote control answers: the worker API and the worker's page (its conf tab included).
    assert list(flower.get("/api/workers", params={"refresh": 1}).json()) == \
        [workers[0]["hostname"]]
    paths = ["/api/tasks", "/api/task/types", "/api/queues/length", "/api/workers",
             "/api/workers?refresh=1", "/", "/workers", "/workers?json=1", "/tasks",
             "/tasks/datatable?draw=1&start=0&length=100&search[value]=&order[0][column]=0"
             "&order[0][dir]=asc&columns[0][data]=name", "/broker", "/metrics",
             *(f"/api/task/info/{task_id}" for task_id in done),
             *(f"/task/{task_id}" for task_id in done),
             *(f"/worker/{worker['hostname']}" for worker in workers)]
    seen = []
    for path in paths:
        response = flower.get(path)
        assert response.status_code == 200, path
        seen.append(response.text)
    everything = "\n".join(seen)
    assert batch_id in everything and "c-9" in everything  # the pages did show these tasks
    assert CANARY_PROMPT not in everything
    assert CANARY_KEY not in everything
    log = (tmp_path / "flower.log").read_text(errors="replace")
    assert CANARY_PROMPT not in log and CANARY_KEY not in log


def test_corral_flower_refuses_to_start_without_basic_auth(write_config, corral) -> None:
    result = corral("flower", config=write_config(), env_extra={"FLOWER_BASIC_AUTH": ""})
    assert result.returncode == 2
    assert "FLOWER_BASIC_AUTH" in result.stderr


def worker_info(flower: httpx.Client, name: str) -> dict:
    """What Flower's worker API says of one worker, inspected afresh."""
    response = flower.get("/api/workers", params={"refresh": 1, "workername": name})
    response.raise_for_status()
    return response.json()[name]


def consumed_queues(flower: httpx.Client, name: str) -> set[str]:
    return {queue["name"] for queue in worker_info(flower, name)["active_queues"]}


def test_flower_lists_every_live_worker_and_controls_pools_queues_and_revokes(
        tmp_path: Path, redis_client, write_config, start_simulator, start_workers, corral,
        start_flower) -> None:
    sim = start_simulator("--latency-ms", "5")
    config = write_config(f"{sim.base_url}/v1")
    first = start_workers(config, ["corral.small"], concurrency=4)[0]
    flower = start_flower(config)
    name = poll(lambda: list(flower.get("/api/workers").json()))[0]
    assert name.startswith("test-0@")
    # A worker started after Flower is listed too, without anyone pressing refresh.
    start_workers(config, ["corral.small"], concurrency=4)
    listed = poll(lambda: len(names := flower.get("/api/workers").json()) == 2 and names)
    assert sorted(listed) == sorted([name, name.replace("test-0@", "test-1@")])

    page = flower.get(f"/worker/{name}")
    assert page.status_code == 200  # pool, queues, processed tasks, active and reserved jobs
    assert all(part in page.text for part in (
        "Max concurrency", "<td>corral.small</td>", "Processed tasks", "Active tasks",
        "Reserved tasks"))
    stats = worker_info(flower, name)["stats"]
    assert stats["pool"]["max-concurrency"] == 4 and "corral.run_job" in \
        worker_info(flower, name)["registered"]

    # Pool grow and shrink, within the worker's cap (4 x its starting slots).
    assert flower.post(f"/api/worker/pool/grow/{name}", params={"n": 3}).status_code == 200
    assert worker_info(flower, name)["stats"]["pool"]["max-concurrency"] == 7
    assert flower.post(f"/api/worker/pool/shrink/{name}", params={"n": 5}).status_code == 200
    assert worker_info(flower, name)["stats"]["pool"]["max-concurrency"] == 2
    refused = flower.post(f"/api/worker/pool/grow/{name}", params={"n": 100})
    assert refused.status_code == 403 and "at most 16 task slots" in refused.text

    # Queue add: the first worker takes on model "big", which no worker consumed.
    added = flower.post(f"/api/worker/queue/add-consumer/{name}", params={"queue": "corral.big"})
    assert added.status_code == 200
    assert poll(lambda: "corral.big" in consumed_queues(flower, name))
    batch_id = submit(corral, config, write_jsonl(tmp_path / "big.jsonl", [
        request(f"b-{i}", "big", f"Prove {i}") for i in range(6)]))
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    # Task events reach Flower up to a fifth of a second after the records (workers buffer).
    done = poll(lambda: len(tasks := [task for task in run_job_tasks(flower, "SUCCESS").values()
                                      if ast.literal_eval(task["args"])[0] == batch_id]) == 6
                and tasks)
    assert {task["worker"] for task in done} == {name}

    # Queue cancel, then a revoke from the Tasks page: the revoked job ends with a record.
    cancelled = flower.post(f"/api/worker/queue/cancel-consumer/{name}",
                            params={"queue": "corral.big"})
    assert cancelled.status_code == 200
    assert poll(lambda: "corral.big" not in consumed_queues(flower, name))
    batch_id = submit(corral, config, write_jsonl(tmp_path / "big2.jsonl", [
        request(f"r-{i}", "big", f"Prove {i}") for i in range(5)]))
    queued = poll(lambda: len(ids := {
        ast.literal_eval(task["args"])[1]: task_id
        for task_id, task in run_job_tasks(flower, "PENDING").items()
        if ast.literal_eval(task["args"])[0] == batch_id}) == 5 and ids)
    assert flower.post(f"/api/task/revoke/{queued['r-2']}").status_code == 200
    assert flower.post(f"/api/worker/queue/add-consumer/{name}",
                       params={"queue": "corral.big"}).status_code == 200
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 5, "completed": 4, "failed": 1}
    record = stored_records(batch_id)["r-2"]
    assert record["error"]["code"] == "revoked" and queued["r-2"] in record["error"]["message"]
    assert poll(lambda: run_job_tasks(flower, "REVOKED").get(queued["r-2"]))
    # The revoked line runs again with `corral retry`, like any failed line.
    retried = corral("retry", batch_id, "--codes", "revoked", config=config)
    assert retried.returncode == 0 and retried.stdout.strip() == "1"
    batch = wait_for_batch(open_store(), batch_id, show_progress=False, timeout_s=60)
    assert batch["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    assert first.process.poll() is None
