"""A cookbook-style parallel processor: one asyncio process, in-memory RPM/TPM buckets, retries.

Written after the design of the OpenAI cookbook's ``api_request_parallel_processor.py`` (our own
code): one loop takes the next request (a due retry first, else the next line of the file),
refills two in-memory buckets continuously, and starts one asyncio task per request once both
buckets hold its charge; a rate-limited answer pauses every dispatch for the server's
Retry-After. By default it does not sleep 1 ms after every dispatch as the cookbook does (that
alone caps it near 1,000 requests/s): it only waits when it is blocked. ``--loop-sleep-ms 1``
restores the cookbook's loop. It needs nothing but httpx, so it runs from any checkout::

    python -m bench.reference_client batch.jsonl --base-url http://127.0.0.1:8100/v1 \
        --api-key-env SIM_KEY --rpm 5000 --tpm 2000000 -o results.jsonl

Results are written as they arrive, in the OpenAI Batch output shape (results and errors in one
file); the exit code is 0 when every line succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

CHARS_PER_TOKEN = 4
DEFAULT_MAX_TOKENS = 1024
RETRYABLE_STATUSES = frozenset({408, 409, 429})
DEFAULT_RATE_LIMIT_PAUSE_S = 15.0  # the cookbook's pause when a 429 names no wait


def charge_tokens(body: dict[str, Any]) -> int:
    """What an OpenAI-style limiter charges at admission: ceil(chars / 4) + max_tokens × n."""
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(part.get("text", "")) for part in content if isinstance(part, dict))
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    return -(-chars // CHARS_PER_TOKEN) + int(limit) * int(body.get("n") or 1)


def backoff_s(attempt: int, retry_after_s: float | None, rng: random.Random, *,
              base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Full jitter: uniform(0, min(cap_s, base_s × 2^(attempt − 1))), at least Retry-After."""
    delay_s = rng.uniform(0.0, min(cap_s, base_s * 2.0 ** (attempt - 1)))
    return max(delay_s, retry_after_s or 0.0)


def retry_after_s(headers: httpx.Headers) -> float | None:
    """``retry-after-ms`` (ms) or ``retry-after`` (s); None when absent or unreadable."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, "nan")) / scale
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value
    return None


@dataclasses.dataclass
class Bucket:
    """Continuous refill up to ``capacity``, starting full; ``per_s`` units a second."""

    capacity: float
    per_s: float
    level: float = math.inf
    updated_s: float = 0.0

    def refill(self, now_s: float) -> None:
        """Add what accrued since the last refill."""
        self.level = min(self.capacity, self.level + (now_s - self.updated_s) * self.per_s)
        self.updated_s = now_s

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 when it is now)."""
        return max(0.0, (amount - self.level) / self.per_s)


@dataclasses.dataclass
class Pending:
    """One line on its way: its charge and the attempts it has used."""

    line: dict[str, Any]
    tokens: int
    attempts: int = 0


@dataclasses.dataclass
class Tracker:
    """Counts, and when dispatch may resume after a 429."""

    succeeded: int = 0
    failed: int = 0
    rate_limited: int = 0
    retried: int = 0
    in_flight: int = 0
    scheduled_retries: int = 0
    paused_until_s: float = 0.0


class Processor:
    """Runs every line of one file through ``client`` inside the two buckets."""

    def __init__(self, client: httpx.AsyncClient, out: IO[str], *, url: str, rpm: float,
                 tpm: float, max_attempts: int, max_in_flight: int,
                 loop_sleep_s: float = 0.0) -> None:
        self._client = client
        self._out = out
        self._url = url
        self._requests = Bucket(rpm, rpm / 60.0)
        self._tokens = Bucket(tpm, tpm / 60.0)
        self._max_attempts = max_attempts
        self._max_in_flight = max_in_flight
        self._loop_sleep_s = loop_sleep_s
        self._retries: collections.deque[Pending] = collections.deque()
        self._wake = asyncio.Event()
        self._rng = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self.tracker = Tracker()

    async def run(self, lines: Iterator[dict[str, Any]]) -> None:
        """Dispatch until the file is read and nothing is in flight or waiting to retry."""
        loop = asyncio.get_running_loop()
        following: Pending | None = None
        tracker = self.tracker
        while True:
            if following is None:
                following = self._next(lines)
            if following is None:
                if not tracker.in_flight and not tracker.scheduled_retries:
                    return
                await self._idle()
                continue
            if tracker.in_flight >= self._max_in_flight:
                await self._idle()
                continue
            now_s = loop.time()
            self._requests.refill(now_s)
            self._tokens.refill(now_s)
            wait_s = max(tracker.paused_until_s - now_s, self._requests.wait_s(1),
                         self._tokens.wait_s(following.tokens))
            if wait_s > 0:
                await asyncio.sleep(wait_s)
                continue
            self._requests.level -= 1
            self._tokens.level -= following.tokens
            following.attempts += 1
            tracker.in_flight += 1
            task = loop.create_task(self._call(following))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            following = None
            if self._loop_sleep_s:
                await asyncio.sleep(self._loop_sleep_s)  # the cookbook's pause per loop

    def _next(self, lines: Iterator[dict[str, Any]]) -> Pending | None:
        if self._retries:
            return self._retries.popleft()
        line = next(lines, None)
        return None if line is None else Pending(line, charge_tokens(line["body"]))

    async def _idle(self) -> None:
        # Every way out of a blocked state (a call ends, a retry falls due) sets the event.
        self._wake.clear()
        await self._wake.wait()

    async def _call(self, pending: Pending) -> None:
        try:
            response = await self._client.post(self._url, json=pending.line["body"])
        except httpx.HTTPError as err:
            self._retry_or_fail(pending, None, f"{type(err).__name__}: {err}")
        else:
            if response.status_code == 200:
                self.tracker.succeeded += 1
                self._write(pending, response, None)
            elif response.status_code in RETRYABLE_STATUSES or response.status_code >= 500:
                after_s = retry_after_s(response.headers)
                if response.status_code == 429:
                    self.tracker.rate_limited += 1
                    pause_s = DEFAULT_RATE_LIMIT_PAUSE_S if after_s is None else after_s
                    self.tracker.paused_until_s = max(self.tracker.paused_until_s,
                                                      asyncio.get_running_loop().time() + pause_s)
                self._retry_or_fail(pending, after_s, f"HTTP {response.status_code}",
                                    response)
            else:
                self._fail(pending, f"HTTP {response.status_code}", response)
        finally:
            self.tracker.in_flight -= 1
            self._wake.set()

    def _retry_or_fail(self, pending: Pending, after_s: float | None, reason: str,
                       response: httpx.Response | None = None) -> None:
        if pending.attempts >= self._max_attempts:
            self._fail(pending, f"gave up after {pending.attempts} attempts: {reason}", response)
            return
        self.tracker.retried += 1
        self.tracker.scheduled_retries += 1
        asyncio.get_running_loop().call_later(
            backoff_s(pending.attempts, after_s, self._rng), self._requeue, pending)

    def _requeue(self, pending: Pending) -> None:
        self.tracker.scheduled_retries -= 1
        self._retries.append(pending)
        self._wake.set()

    def _fail(self, pending: Pending, message: str, response: httpx.Response | None) -> None:
        self.tracker.failed += 1
        self._write(pending, response, {"code": "request_failed", "message": message})

    def _write(self, pending: Pending, response: httpx.Response | None,
               error: dict[str, str] | None) -> None:
        shown = None
        if response is not None:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            shown = {"status_code": response.status_code,
                     "request_id": response.headers.get("x-request-id", ""), "body": body}
        record = {"id": f"batch_req_{os.urandom(12).hex()}",
                  "custom_id": pending.line["custom_id"], "response": shown, "error": error}
        self._out.write(json.dumps(record, separators=(",", ":")) + "\n")


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The file's request lines, one at a time (blank lines skipped)."""
    with path.open(encoding="utf-8-sig") as lines:
        for raw in lines:
            if raw.strip():
                yield json.loads(raw)


async def process_file(path: Path, save_path: Path, *, base_url: str, api_key: str, rpm: float,
                       tpm: float, max_attempts: int, max_in_flight: int,
                       loop_sleep_s: float = 0.0) -> Tracker:
    """Run every line of ``path`` and write one output line each to ``save_path``."""
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(limits=limits, headers=headers,
                                 timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        with save_path.open("w", encoding="utf-8") as out:
            processor = Processor(client, out, url=f"{base_url.rstrip('/')}/chat/completions",
                                  rpm=rpm, tpm=tpm, max_attempts=max_attempts,
                                  max_in_flight=max_in_flight, loop_sleep_s=loop_sleep_s)
            await processor.run(read_lines(path))
    return processor.tracker


def build_parser() -> argparse.ArgumentParser:
    """The client's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.reference_client",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("requests_file", type=Path, help="OpenAI Batch JSONL")
    add("-o", "--save-file", type=Path, default=None,
        help="output JSONL (default: FILE.results.jsonl)")
    add("--base-url", required=True, help="the provider's /v1 base URL")
    add("--api-key-env", default="OPENAI_API_KEY", help="the NAME of the variable with the key")
    add("--rpm", type=float, default=5000.0, help="requests per minute")
    add("--tpm", type=float, default=2_000_000.0, help="tokens per minute")
    add("--max-attempts", type=int, default=5)
    add("--max-in-flight", type=int, default=128, help="concurrent requests at most")
    add("--loop-sleep-ms", type=float, default=0.0,
        help="sleep after each dispatch, as the cookbook's loop does (it sleeps 1 ms)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one file; print a one-line summary on stderr."""
    args = build_parser().parse_args(argv)
    save_path = args.save_file or args.requests_file.with_suffix(".results.jsonl")
    started_s = time.monotonic()
    tracker = asyncio.run(process_file(
        args.requests_file, save_path, base_url=args.base_url,
        api_key=os.environ.get(args.api_key_env, ""), rpm=args.rpm, tpm=args.tpm,
        max_attempts=args.max_attempts, max_in_flight=args.max_in_flight,
        loop_sleep_s=args.loop_sleep_ms / 1000))
    elapsed_s = time.monotonic() - started_s
    print(f"reference_client: {tracker.succeeded} succeeded, {tracker.failed} failed, "
          f"{tracker.rate_limited} rate limited, {tracker.retried} retried in {elapsed_s:.2f} s "
          f"-> {save_path}", file=sys.stderr)
    return 0 if tracker.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
