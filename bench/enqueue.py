"""Enqueue speed: messages/s into a Redis queue for Celery, kombu and corral's `send_jobs`.

Every variant publishes ``--lines`` ``corral.run_job`` messages with the same arguments
(one batch id, custom ids ``req-000000``…) onto one queue of a Redis broker:

- ``celery``: ``app.send_task`` per message over one pooled producer (corral's old
  `send_jobs`; corral's celeryconfig, so each message also publishes a ``task-sent`` event);
- ``kombu``: one kombu connection, ``Producer.publish`` per message of Celery's envelope
  (headers built once, ids and arguments per message): how docs/concepts.md measured "kombu's
  batched producer";
- ``kombu-batch``: the same inside kombu's own ``Producer.batch()`` (pipelines of 1,000);
- ``corral``: ``corral.jobs.send_jobs``, called once per ``--chunk`` lines like a submit,
  with its ``task-sent`` events (a thousand per event message, for Flower);
- ``corral-quiet``: the same with ``task_send_sent_event`` off: what those events cost.

Each run of a variant gets a fresh app and connection (made before the clock starts) and an
empty Redis database 10 (only that one is ever flushed); rounds interleave the variants so
a busy machine slows them alike. A run counts only if the queue then holds exactly
``--lines`` messages. The table shows the median, min and max over the runs that counted,
and the ratio of corral to each kombu variant against the target (≥ 2×).

Run it from the repository root with Redis at 127.0.0.1:6379::

    python -m bench.enqueue --lines 20000 --runs 5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import redis
from celery import Celery
from kombu import Producer

from corral.celery_app import RUN_JOB_TASK, create_app
from corral.jobs import send_jobs

REDIS_URL = "redis://127.0.0.1:6379/10"
QUEUE = "corral.bench"
BATCH_ID = "batch_bench0123456789abcdef"
TARGET_RATIO = 2.0
KOMBU_BATCH_SIZE = 1000

Publish = Callable[[list[str]], None]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to enqueue: ``prepare`` connects (untimed) and returns the timed publish."""

    name: str
    label: str
    prepare: Callable[[Celery, ExitStack, argparse.Namespace], Publish]


def prepare_celery(app: Celery, stack: ExitStack, _: argparse.Namespace) -> Publish:
    """``send_task`` per message over one producer from the app's pool."""
    producer = stack.enter_context(app.producer_or_acquire())
    _ = producer.channel  # connects before the clock starts

    def publish(custom_ids: list[str]) -> None:
        for custom_id in custom_ids:
            app.send_task(RUN_JOB_TASK, args=(BATCH_ID, custom_id), queue=QUEUE,
                          producer=producer)
    return publish


def _prepare_kombu(app: Celery, stack: ExitStack, *, batched: bool) -> Publish:
    connection = stack.enter_context(app.connection_for_write())
    producer = Producer(connection, serializer="json")
    if batched and not producer.supports_batch_publish:
        raise RuntimeError("kombu says this Redis connection cannot batch publishes")
    headers, properties, body, _ = app.amqp.create_task_message(
        "template-id", RUN_JOB_TASK, (BATCH_ID, "template"), None, reply_to=app.thread_oid)
    embed, reply_to = body[2], properties["reply_to"]

    def publish(custom_ids: list[str]) -> None:
        with ExitStack() as batch:
            if batched:
                batch.enter_context(producer.batch(max_size=KOMBU_BATCH_SIZE))
            for custom_id in custom_ids:
                task_id = str(uuid.uuid4())
                producer.publish(
                    ((BATCH_ID, custom_id), {}, embed), routing_key=QUEUE, delivery_mode=2,
                    headers={**headers, "id": task_id, "root_id": task_id,
                             "argsrepr": repr((BATCH_ID, custom_id))},
                    correlation_id=task_id, reply_to=reply_to)
    return publish


def prepare_kombu(app: Celery, stack: ExitStack, _: argparse.Namespace) -> Publish:
    """kombu ``Producer.publish`` per message, one connection."""
    return _prepare_kombu(app, stack, batched=False)


def prepare_kombu_batch(app: Celery, stack: ExitStack, _: argparse.Namespace) -> Publish:
    """The same inside kombu's ``Producer.batch()``."""
    return _prepare_kombu(app, stack, batched=True)


def prepare_corral(app: Celery, stack: ExitStack, args: argparse.Namespace) -> Publish:
    """``send_jobs`` once per chunk of lines."""
    return _prepare_corral(app, args)


def prepare_corral_quiet(app: Celery, stack: ExitStack, args: argparse.Namespace) -> Publish:
    """``send_jobs`` once per chunk of lines, no ``task-sent`` events."""
    app.conf.task_send_sent_event = False
    return _prepare_corral(app, args)


def _prepare_corral(app: Celery, args: argparse.Namespace) -> Publish:
    with app.producer_or_acquire() as producer:
        _ = producer.channel  # fills the pool's connection before the clock starts

    def publish(custom_ids: list[str]) -> None:
        for start in range(0, len(custom_ids), args.chunk):
            send_jobs(app, BATCH_ID, [(custom_id, QUEUE) for custom_id
                                      in custom_ids[start:start + args.chunk]])
    return publish


VARIANTS = (
    Variant("celery", "(a) Celery send_task loop", prepare_celery),
    Variant("kombu", "(b) kombu Producer.publish loop", prepare_kombu),
    Variant("kombu-batch", "(b') kombu Producer.batch()", prepare_kombu_batch),
    Variant("corral", "(c) corral send_jobs", prepare_corral),
    Variant("corral-quiet", "(c') the same, no task-sent events", prepare_corral_quiet),
)


def run_once(variant: Variant, client: redis.Redis, args: argparse.Namespace,
             custom_ids: list[str]) -> float | None:
    """Messages/s of one run, or None when the queue does not hold every message after it."""
    client.flushdb()  # only the benchmark's database
    app = create_app("corral-bench", broker_url=args.redis_url)
    with ExitStack() as stack:
        stack.callback(app.close)
        publish = variant.prepare(app, stack, args)
        started_s = time.perf_counter()
        publish(custom_ids)
        elapsed_s = time.perf_counter() - started_s
    queued = client.llen(QUEUE)
    if queued != len(custom_ids):
        print(f"bench: {variant.name}: {queued} of {len(custom_ids)} messages queued; "
              "run not counted", file=sys.stderr)
        return None
    return len(custom_ids) / elapsed_s


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.enqueue",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--lines", type=int, default=20_000, help="messages per run")
    add("--runs", type=int, default=5, help="runs per variant (the table shows the median)")
    add("--chunk", type=int, default=500, help="lines per send_jobs call (corral)")
    add("--variants", default=",".join(v.name for v in VARIANTS),
        help="comma list of " + ", ".join(v.name for v in VARIANTS))
    add("--redis-url", default=REDIS_URL, help="the broker; its database is flushed")
    return parser


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def format_table(labels: dict[str, str], rates: dict[str, list[float]], runs: int) -> str:
    """One line per variant: median, min and max messages/s, and the runs that counted."""
    header = f"{'variant':<34}{'median msg/s':>14}{'min':>10}{'max':>10}{'runs ok':>9}"
    lines = [header, "-" * len(header)]
    for name, label in labels.items():
        counted = rates[name]
        median = statistics.median(counted) if counted else None
        lines.append(f"{label:<34}{_rate(median):>14}{_rate(min(counted, default=None)):>10}"
                     f"{_rate(max(counted, default=None)):>10}{len(counted):>5}/{runs:<3}")
    return "\n".join(lines)


def format_ratios(rates: dict[str, list[float]]) -> str:
    """corral's median over each kombu variant's, against the target."""
    lines = []
    for base in ("kombu", "kombu-batch"):
        if rates.get("corral") and rates.get(base):
            ratio = statistics.median(rates["corral"]) / statistics.median(rates[base])
            verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
            lines.append(f"corral / {base}: {ratio:.2f}x  (target >= {TARGET_RATIO:g}x: "
                         f"{verdict})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every variant ``--runs`` times, interleaved, and print the table and ratios."""
    args = build_parser().parse_args(argv)
    chosen = [name.strip() for name in args.variants.split(",") if name.strip()]
    variants = [v for v in VARIANTS if v.name in chosen]
    if not variants or len(variants) != len(chosen) or args.lines < 1 or args.runs < 1 \
            or args.chunk < 1:
        build_parser().error("need known --variants and positive --lines, --runs, --chunk")
    custom_ids = [f"req-{index:06d}" for index in range(args.lines)]
    client = redis.Redis.from_url(args.redis_url)
    rates: dict[str, list[float]] = {v.name: [] for v in variants}
    print(f"bench: {args.lines:,} messages per run, {args.runs} runs, queue {QUEUE} on "
          f"{args.redis_url}", file=sys.stderr)
    try:
        for round_index in range(args.runs):
            for variant in variants:
                rate = run_once(variant, client, args, custom_ids)
                print(f"bench: run {round_index + 1} {variant.name}: {_rate(rate)} msg/s",
                      file=sys.stderr, flush=True)
                if rate is not None:
                    rates[variant.name].append(rate)
    finally:
        client.flushdb()
        client.close()
    print(format_table({v.name: v.label for v in variants}, rates, args.runs))
    ratios = format_ratios(rates)
    if ratios:
        print(f"\n{ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
