"""A bare Celery app for comparison: one task makes corral's provider POST and stores nothing.

Started as ``python -m celery -A bench.bare_task worker --pool threads|gevent …`` with the
simulator's base URL and key in the environment (``BENCH_BARE_*`` below). Its tasks are sent
in-process (``enqueue``) or, the way a hand-written batch script would, by ``python -m
bench.bare_task BATCH.jsonl``: one task per line of a file whose bodies already name the
upstream model. How a process gets its httpx clients follows the pool, each in the set-up
docs/concepts.md measured as its best:

- ``shared``: one ``httpx.Client`` per process, shared by every thread of a threads pool;
- ``free-list``: under gevent, one client checked out per running task and put back after
  (a shared client contends under gevent; a new client per task is far slower).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
from celery import Celery
from celery.signals import worker_ready

from workers.provider_client import HttpClients

TASK_NAME = "bench.bare_call"
QUEUE = "bench.bare"
BROKER_ENV = "BENCH_BARE_BROKER_URL"
BASE_URL_ENV = "BENCH_BARE_BASE_URL"  # the simulator's /v1 base URL
KEY_ENV = "BENCH_BARE_API_KEY"
CLIENTS_ENV = "BENCH_BARE_CLIENTS"  # "shared" or "free-list"
CLIENT_SETUPS = ("shared", "free-list")
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/9"
READY_LINE = "bare worker ready"

app = Celery("bench_bare", broker=os.environ.get(BROKER_ENV, DEFAULT_BROKER_URL))
app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                result_backend=None, task_default_queue=QUEUE, worker_send_task_events=False,
                worker_enable_remote_control=False, broker_connection_retry_on_startup=True)


@worker_ready.connect
def _say_ready(**_: object) -> None:
    # Celery's own "ready" line is an INFO log, which this worker does not print.
    print(f"{READY_LINE} pid {os.getpid()}", file=sys.stderr, flush=True)


def _new_client() -> httpx.Client:
    return httpx.Client(
        base_url=os.environ[BASE_URL_ENV],
        headers={"Authorization": f"Bearer {os.environ.get(KEY_ENV, '')}"},
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        timeout=httpx.Timeout(120.0, connect=10.0))


@functools.cache
def _clients() -> HttpClients:
    """This worker's httpx clients in the set-up ``CLIENTS_ENV`` names (corral's workers
    choose between the same two); made at the first task, not where tasks are only sent."""
    setup = os.environ.get(CLIENTS_ENV, "shared")
    if setup not in CLIENT_SETUPS:
        raise ValueError(f"{CLIENTS_ENV} must be one of {CLIENT_SETUPS}, not {setup!r}")
    return HttpClients(_new_client, shared=setup == "shared")


@app.task(name=TASK_NAME)
def bare_call(body: dict[str, Any]) -> None:
    """POST ``body`` to the chat completions endpoint; fail on a non-2xx; keep nothing."""
    with _clients().checkout() as client:
        client.post("/chat/completions", json=body).raise_for_status()


def enqueue(bodies: Iterable[dict[str, Any]]) -> int:
    """Send one task per body over one producer connection; returns the count."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for body in bodies:
            app.send_task(TASK_NAME, args=(body,), queue=QUEUE, producer=producer)
            sent += 1
    return sent


def enqueue_file(path: Path) -> int:
    """Send one task per line of an OpenAI Batch file (its body, as it is), streaming."""
    with path.open(encoding="utf-8") as lines:
        return enqueue(json.loads(raw)["body"] for raw in lines if raw.strip())


def worker_command(*, pool: str, concurrency: int, name: str) -> list[str]:
    """The command line of one bare worker process (it logs warnings only: no line per task)."""
    return [sys.executable, "-m", "celery", "-A", "bench.bare_task", "worker", "--pool", pool,
            "--concurrency", str(concurrency), "--queues", QUEUE, "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--hostname", f"{name}@%h"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.bare_task BATCH.jsonl``: send its lines as bare tasks."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_task",
                                     description=main.__doc__)
    parser.add_argument("batch", type=Path, help="OpenAI Batch JSONL whose bodies name the "
                                                 "upstream model")
    sent = enqueue_file(parser.parse_args(argv).batch)
    print(f"sent {sent} bare tasks", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
