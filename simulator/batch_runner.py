"""Runs a batch's lines in the background at a set speed, honouring cancel, expiry and stalls."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .chat_core import answer_offline, new_request_id

if TYPE_CHECKING:
    from .state import SimState

# Lines answered before the runner yields to the event loop, so HTTP calls stay served.
LINES_PER_SLICE = 200
# Longest sleep while stalled or waiting for a line, so a fault change is seen promptly.
MAX_NAP_S = 0.05


@dataclasses.dataclass(frozen=True)
class BatchLine:
    """One request of a batch, as a chat completion body; ``invalid`` refuses it unrun."""

    custom_id: str
    body: bytes
    invalid: str | None = None


@dataclasses.dataclass(frozen=True)
class LineResult:
    """How one line was answered: the same status and body a live call would have had."""

    custom_id: str
    status_code: int
    body: dict[str, Any]
    request_id: str
    line_id: str  # batch_req_…, the output line's id

    @property
    def succeeded(self) -> bool:
        """Whether the line got a 2xx answer."""
        return 200 <= self.status_code < 300


class BatchRun:
    """One batch's lines, the results so far, and how it ended (None while it runs)."""

    def __init__(
        self,
        batch_id: str,
        lines: list[BatchLine],
        expires_at_s: float,
        on_end: Callable[[BatchRun], None],
    ) -> None:
        self.batch_id = batch_id
        self.lines = lines
        self.expires_at_s = expires_at_s  # on SimState.now_s()'s scale
        self.on_end = on_end
        self.results: list[LineResult] = []
        self.cancel_requested = False
        self.cancel_at_s: float | None = None  # when the cancel was asked, on now_s()'s scale
        self.ended: str | None = None  # "completed", "cancelled" or "expired"
        self.wake = asyncio.Event()

    def unrun(self) -> list[BatchLine]:
        """Lines not answered (yet, or ever once the batch ended early)."""
        return self.lines[len(self.results) :]

    def cancel(self) -> None:
        """Ask the runner to stop; it ends the batch as cancelled at its next step."""
        self.cancel_requested = True
        self.wake.set()

    def end(self, how: str) -> None:
        """Mark the batch ended and let its provider write its results."""
        if self.ended is None:
            self.ended = how
            self.on_end(self)


class BatchStall:
    """The stalled-batch fault: every batch, or batches by id, make no progress while set."""

    def __init__(self, stall_all: bool = False) -> None:
        self.stall_all = stall_all
        self.batch_ids: set[str] = set()

    def stalls(self, batch_id: str) -> bool:
        """Whether ``batch_id`` must not progress now."""
        return self.stall_all or batch_id in self.batch_ids

    def update(self, value: object) -> None:
        """Apply a /_sim/faults ``batch_stall`` value: true, false, or a list of batch ids.

        Raises:
            ValueError: On any other value.
        """
        if isinstance(value, bool):
            self.stall_all = value
            if not value:
                self.batch_ids.clear()
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            self.batch_ids.update(value)
        else:
            raise ValueError("batch_stall must be true, false or a list of batch ids")

    def describe(self) -> bool | list[str]:
        """The value as /_sim/faults reports it: true, a sorted list of ids, or false."""
        if self.stall_all:
            return True
        return sorted(self.batch_ids) if self.batch_ids else False


def answer_line(state: SimState, line: BatchLine) -> LineResult:
    """Answer one line with the live chat code path and count it as batch-lane work."""
    line_id = f"batch_req_{os.urandom(12).hex()}"
    if line.invalid is not None:
        error = {"message": line.invalid, "type": "invalid_request_error", "param": None,
                 "code": None}  # fmt: skip
        state.stats.record_batch_line(400, None, 0, 0)
        return LineResult(line.custom_id, 400, {"error": error}, new_request_id(), line_id)
    answer = answer_offline(state, line.body)
    state.stats.record_batch_line(
        answer.status_code, answer.model, answer.prompt_tokens, answer.completion_tokens
    )
    return LineResult(line.custom_id, answer.status_code, answer.body, new_request_id(), line_id)


async def run_batch(state: SimState, run: BatchRun) -> None:
    """Answer ``run``'s lines at ``state.config.batch_lines_per_s`` until done, cancelled,
    or expired; a stalled batch keeps its place and earns no progress while stalled."""
    lines_per_s = state.config.batch_lines_per_s
    allowance = 0.0  # lines earned but not yet answered
    last_s = state.now_s()
    while run.ended is None:
        now_s = state.now_s()
        if run.cancel_requested:
            if run.cancel_at_s is None:
                run.cancel_at_s = now_s
            if now_s >= run.cancel_at_s + state.config.batch_cancel_s:
                run.end("cancelled")
                return
        if not run.unrun():
            run.end("completed")
            return
        if now_s >= run.expires_at_s:
            run.end("expired")
            return
        if state.batch_stall.stalls(run.batch_id):
            allowance, last_s = 0.0, now_s
            await _nap(run, min(MAX_NAP_S, run.expires_at_s - now_s, _cancel_left_s(state, run)))
            continue
        allowance += (now_s - last_s) * lines_per_s
        last_s = now_s
        count = min(int(allowance), len(run.unrun()), LINES_PER_SLICE)
        if count == 0:
            wait_s = (1 - allowance) / lines_per_s
            await _nap(run, min(wait_s, MAX_NAP_S, run.expires_at_s - now_s,
                                _cancel_left_s(state, run)))
            continue
        allowance -= count
        start = len(run.results)
        run.results.extend(answer_line(state, line) for line in run.lines[start : start + count])
        await asyncio.sleep(0)


def _cancel_left_s(state: SimState, run: BatchRun) -> float:
    """How long a cancelling batch goes on before it ends cancelled (inf: not cancelling)."""
    if run.cancel_at_s is None:
        return float("inf")
    return run.cancel_at_s + state.config.batch_cancel_s - state.now_s()


async def _nap(run: BatchRun, wait_s: float) -> None:
    """Sleep up to ``wait_s``, waking early when the batch is cancelled."""
    run.wake.clear()
    if run.cancel_requested and run.cancel_at_s is None:
        return  # the runner starts the cancel now
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.wake.wait(), max(0.0, wait_s))


def spawn(state: SimState, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` as a background task the state holds (and can cancel) until it ends."""
    task = asyncio.get_running_loop().create_task(work)
    state.batch_tasks.add(task)
    task.add_done_callback(state.batch_tasks.discard)
