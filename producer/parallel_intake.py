"""Intake on every CPU: a big file's spans validated and routed in worker processes, while
this process refuses repeated custom_ids and stores the lines, in input order."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import NamedTuple

from corral.config import CorralConfig
from producer.reader import Span, read_lines, spans
from producer.router import Router
from producer.seen_ids import SeenIds
from producer.validator import AcceptedLine, LineValidator, RejectedLine, check_line, duplicate

# Below this a file is checked in this process: starting workers costs more than it saves.
PARALLEL_FROM_BYTES = 16 << 20
SPAN_BYTES = 1 << 19  # about 2,000 lines of a few hundred bytes: one task for a worker
SPANS_IN_FLIGHT_PER_WORKER = 2


class CheckedJob(NamedTuple):
    """An accepted line as the store keeps it: its stored job, routed to `model` (a tuple:
    a million of them cross from the workers)."""

    number: int
    custom_id: str
    model: str
    job: str


def checked_jobs(path: Path, config: CorralConfig,
                 processes: int = 0) -> Iterator[CheckedJob | RejectedLine]:
    """Every line of `path` validated and routed, repeats refused, in input order.

    `processes`: worker processes that validate (0: one per CPU for a file of 16 MB or more,
    else none; 1: none, all in this one). The results are the same either way.
    """
    if processes == 0:
        processes = (os.cpu_count() or 1) if path.stat().st_size >= PARALLEL_FROM_BYTES else 1
    if processes <= 1:
        for checked in checked_lines(path, config):
            yield _job(checked) if isinstance(checked, AcceptedLine) else checked
        return
    seen = SeenIds(path)
    # spawn, not fork: this process may hold an open database transaction and Redis
    # connections that a forked child must not touch.
    context = multiprocessing.get_context("spawn")
    with _main_module_hidden():
        pool = context.Pool(processes, initializer=_start_worker, initargs=(config,))
    with pool:
        # A few spans in flight per worker, not the whole file: the workers validate faster
        # than this process stores, and their results would pile up here.
        todo = ((path, span) for span in spans(path, SPAN_BYTES))
        pending = deque(pool.apply_async(_check_span, (task,))
                        for task in islice(todo, SPANS_IN_FLIGHT_PER_WORKER * processes))
        while pending:
            checked_span = pending.popleft().get()
            pending.extend(pool.apply_async(_check_span, (task,)) for task in islice(todo, 1))
            for offset, line in checked_span:
                if isinstance(line, CheckedJob) and not seen.add(line.custom_id, offset):
                    yield duplicate(line.number, line.custom_id)
                else:
                    yield line


def checked_lines(path: Path, config: CorralConfig) -> Iterator[AcceptedLine | RejectedLine]:
    """Every line of `path`, validated and routed, repeats refused, in order, in this
    process (the lines themselves, for callers that read their bodies: `corral check`)."""
    validator = LineValidator(Router(config), SeenIds(path))
    for raw in read_lines(path):
        yield validator.check(raw)


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start processes that do not import this program's main module: a spawned child runs
    it again (for `corral`, the whole CLI: 40 MB more per worker) unless it has neither a
    spec nor a file. The workers need only this module, which they import by name."""
    main = sys.modules["__main__"]
    spec, path = getattr(main, "__spec__", None), getattr(main, "__file__", None)
    main.__spec__ = None
    if path is not None:
        del main.__file__
    try:
        yield
    finally:
        main.__spec__ = spec
        if path is not None:
            main.__file__ = path


def _job(accepted: AcceptedLine) -> CheckedJob:
    return CheckedJob(accepted.number, accepted.custom_id, accepted.model.name, accepted.job())


_router: Router | None = None


def _start_worker(config: CorralConfig) -> None:
    global _router
    _router = Router(config)


def _check_span(task: tuple[Path, Span]) -> list[tuple[int, CheckedJob | RejectedLine]]:
    """A worker's part: each line of one span checked on its own, with its byte offset."""
    assert _router is not None, "the pool's initializer sets the router"
    path, span = task
    checked_span: list[tuple[int, CheckedJob | RejectedLine]] = []
    for raw in read_lines(path, span):
        checked = check_line(_router, raw)
        checked_span.append((raw.offset, _job(checked) if isinstance(checked, AcceptedLine)
                             else checked))
    return checked_span
